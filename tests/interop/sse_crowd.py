"""Many SSE subscribers in one process (asyncio, raw sockets), for tests that need more
connections than the test process can hold beside the server (crates/holdfast-server/tests/shards.rs).

Usage: python3 sse_crowd.py HOST PORT CHANNEL COUNT
Opens COUNT SSE subscriptions to /sub/CHANNEL and prints {"ready": COUNT} once every response head
is in. Then reads each until the server ends it, and prints one report:
  closed:  subscriptions whose last event was a holdfast.closed notice followed by a clean end
           (the last chunk) and EOF
  reasons: {reason: count} from those notices
  other:   subscriptions that ended any other way
Every wait is bounded (60 s in all).
"""

import asyncio
import json
import resource
import sys

# Up to the hard limit: COUNT sockets need COUNT descriptors.
_, HARD = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (HARD, HARD))

HOST, PORT, CHANNEL, COUNT = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
REQUEST = (f"GET /sub/{CHANNEL} HTTP/1.1\r\nHost: {HOST}\r\nAccept: text/event-stream\r\n\r\n").encode()


async def open_one():
    reader, writer = await asyncio.open_connection(HOST, PORT, limit=1 << 16)
    writer.write(REQUEST)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head[:80])
    return reader, writer


async def finish(reader, writer):
    data = await reader.read()  # to EOF
    writer.close()
    text = data.decode(errors="replace")
    if "event: holdfast.closed" in text and data.endswith(b"0\r\n\r\n"):
        line = [l for l in text.split("\n") if l.startswith("data: {")][-1]
        return json.loads(line[len("data: "):])["reason"]
    return None


async def main():
    conns = []
    for start in range(0, COUNT, 500):
        conns += await asyncio.gather(*(open_one() for _ in range(min(500, COUNT - start))))
    print(json.dumps({"ready": len(conns)}), flush=True)
    results = await asyncio.wait_for(asyncio.gather(*(finish(r, w) for r, w in conns)), 60)
    reasons = {}
    for reason in results:
        if reason:
            reasons[reason] = reasons.get(reason, 0) + 1
    print(json.dumps({"closed": sum(reasons.values()), "reasons": reasons,
                      "other": sum(1 for r in results if not r)}), flush=True)


asyncio.run(main())
