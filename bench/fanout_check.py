#!/usr/bin/env python3
"""An independent check of `holdfast bench fanout`'s latency figures (SSE).

Opens K SSE subscribers (plain asyncio sockets, nothing shared with the Rust client), spread over
SPREAD seconds so that they land among the Rust client's subscribers in the server's delivery
order rather than all at its start or end, and reads them until each has seen every message
(or TIMEOUT). Each payload `hfb:<seq>:<ns>:<Unix µs>:` carries the publisher's wall clock read
just before its POST; the delay is this reader's wall clock when the bytes arrive minus that
(same machine, same clock). Prints one JSON line: deliveries, lost and duplicated (per subscriber
and sequence number), latency p50/p99/max in ms, when the subscribers were opened, and the
publish rate seen (distinct messages over the span of their first arrivals).

    python3 bench/fanout_check.py --server 127.0.0.1:PORT --path '/sub/bench?transport=sse' \\
        --subscribers 100 --messages 100 --spread 2 --timeout 60

`bench/fanout.sh` runs it beside the Rust client when CHECK=K is set.
"""
import argparse
import asyncio
import json
import re
import time

MARKER = re.compile(rb"hfb:(\d+):(\d+):(\d+):")
KEEP = 64  # bytes kept after the last complete marker: the start of an incomplete one


async def subscriber(args, host, port, record):
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        f"GET {args.path} HTTP/1.1\r\nHost: {args.server}\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"answer: {head[:120]!r}")
    record["opened"].append(time.time())
    seen = set()
    buf = b""
    try:
        while len(seen) < args.messages:
            chunk = await reader.read(65536)
            now = time.time()
            if not chunk:
                break
            buf += chunk
            end = 0
            for m in MARKER.finditer(buf):
                seq, sent_us = int(m.group(1)), int(m.group(3))
                record["latencies"].append(now * 1e3 - sent_us / 1e3)
                if seq in seen:
                    record["dup"] += 1
                seen.add(seq)
                first = record["first_arrival"]
                if seq not in first or now < first[seq]:
                    first[seq] = now
                end = m.end()
            buf = buf[max(end, len(buf) - KEEP):]
    finally:
        record["unique"] += len(seen)
        writer.close()


async def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", required=True, help="host:port")
    parser.add_argument("--path", default="/sub/bench?transport=sse")
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--spread", type=float, default=2.0, help="seconds over which to open them")
    parser.add_argument("--timeout", type=float, default=60.0)
    args = parser.parse_args()
    host, port = args.server.rsplit(":", 1)
    record = {"latencies": [], "dup": 0, "unique": 0, "first_arrival": {}, "opened": []}
    started = time.time()
    tasks = []
    for _ in range(args.subscribers):
        tasks.append(asyncio.create_task(subscriber(args, host, int(port), record)))
        await asyncio.sleep(args.spread / args.subscribers)
    done, pending = await asyncio.wait(tasks, timeout=args.timeout)
    for task in pending:
        task.cancel()
    errors = [str(t.exception()) for t in done if t.exception() is not None]
    lat = sorted(record["latencies"])

    def pct(p):
        return round(lat[min(int(len(lat) * p), len(lat) - 1)], 3) if lat else None

    first = sorted(record["first_arrival"].values())
    span = first[-1] - first[0] if len(first) > 1 else 0.0
    expected = args.subscribers * args.messages
    print(json.dumps({
        "subscribers": args.subscribers,
        "opened": len(record["opened"]),
        "opened_from_s": round(min(record["opened"]) - started, 3) if record["opened"] else None,
        "opened_until_s": round(max(record["opened"]) - started, 3) if record["opened"] else None,
        "deliveries": len(lat),
        "expected": expected,
        "lost": expected - record["unique"],
        "dup": record["dup"],
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": round(lat[-1], 3) if lat else None,
        "messages_seen": len(first),
        "published_per_s_seen": round((len(first) - 1) / span, 2) if span > 0 else None,
        "errors": errors[:3],
    }), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
