"""A WebSocket client nobody here wrote (Python `websockets`, asyncio API) against Holdfast, for
crates/holdfast-server/tests/ws_interop.rs.

Usage: python3 ws_client.py CASE ARGS...
  envelopes BASE_URL CHANNEL: JSON envelopes of 3 messages published over HTTP
  raw BASE_URL CHANNEL:       ?format=raw, a UTF-8 and a non-UTF-8 payload
  resume BASE_URL CHANNEL:    read 2, close, 4 published while away, reconnect with ?cursor=
  ops OPEN_URL CLOSED_URL CHANNEL: ping, subscribe, unsubscribe, publish, bad ops (OPEN_URL's
                              server has ws_client_publish on, CLOSED_URL's off)
  heartbeat BASE_URL CHANNEL SECONDS: a client that never pings stays quiet for SECONDS, counting
                              the server's pings (the library answers them by itself)
  deflate BASE_URL CHANNEL:   permessage-deflate (the library offers it by default): the agreed
                              parameters, a long and a short message with each frame's RSV1 bit,
                              and a publish op the library sends compressed
Publishes with POST /pub (urllib). Checks nothing itself: prints one JSON report for the Rust test
to assert on. Every wait is bounded (WAIT seconds).
"""

import asyncio
import json
import sys
import time
import urllib.request

from websockets.asyncio.client import ClientConnection, connect
from websockets.frames import Opcode

WAIT = 5


def publish(base, channel, data, event=None):
    """POST /pub/CHANNEL; the publish response's id."""
    url = f"{base}/pub/{channel}" + (f"?event={event}" if event else "")
    body = data if isinstance(data, bytes) else data.encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=body, method="POST"), timeout=WAIT) as r:
        return json.load(r)["id"]


def ws_url(base, path):
    return "ws" + base[len("http"):] + path


def frame(message):
    """What a received message was: a text frame (str) or a binary frame (bytes)."""
    if isinstance(message, str):
        return {"kind": "text", "text": message}
    return {"kind": "binary", "hex": message.hex()}


async def recv(ws):
    return await asyncio.wait_for(ws.recv(), WAIT)


async def recv_json(ws):
    return json.loads(await recv(ws))


async def nothing_within(ws, seconds):
    """What arrived within `seconds` (normally nothing): a list of frames."""
    try:
        return [frame(await asyncio.wait_for(ws.recv(), seconds))]
    except asyncio.TimeoutError:
        return []


async def envelopes(base, channel):
    async with connect(ws_url(base, f"/sub/{channel}"), open_timeout=WAIT) as ws:
        published = [
            publish(base, channel, "plain"),
            publish(base, channel, "line one\nline two\r\nline three"),
            publish(base, channel, "typed", event="chat"),
        ]
        frames = [frame(await recv(ws)) for _ in published]
    return {"published": published, "frames": frames}


async def raw(base, channel):
    async with connect(ws_url(base, f"/sub/{channel}?format=raw"), open_timeout=WAIT) as ws:
        published = [publish(base, channel, "h\u00e9llo \u2713 \U0001f600"), publish(base, channel, b"\xff\x00")]
        frames = [frame(await recv(ws)) for _ in published]
    return {"published": published, "frames": frames}


async def resume(base, channel):
    async with connect(ws_url(base, f"/sub/{channel}"), open_timeout=WAIT) as ws:
        published = [publish(base, channel, f"before {i}") for i in range(2)]
        first = [await recv_json(ws) for _ in range(2)]
    published += [publish(base, channel, f"missed {i}") for i in range(4)]
    cursor = first[-1]["id"]
    async with connect(ws_url(base, f"/sub/{channel}?cursor={cursor}"), open_timeout=WAIT) as ws:
        resumed = [await recv_json(ws) for _ in range(4)]
        # A sentinel published now must be the very next message: nothing repeated or extra.
        published.append(publish(base, channel, "sentinel"))
        resumed.append(await recv_json(ws))
    return {"published": published, "first": first, "resumed": resumed}


async def ops(base, closed_base, channel):
    report = {}
    second, talk = f"{channel}-second", f"{channel}-talk"
    async with connect(ws_url(base, f"/sub/{channel}"), open_timeout=WAIT) as a:

        async def op(value):
            await a.send(value if isinstance(value, str) else json.dumps(value))
            return await recv_json(a)

        report["pong"] = await op({"op": "ping"})
        report["subscribed"] = await op({"op": "subscribe", "channels": [second]})
        report["second_id"] = publish(base, second, "on the second channel")
        report["from_second"] = await recv_json(a)
        report["unsubscribed"] = await op({"op": "unsubscribe", "channels": [second]})
        publish(base, second, "after unsubscribe")
        report["room_id"] = publish(base, channel, "on the first channel")
        report["after_unsubscribe"] = await recv_json(a)
        report["after_unsubscribe_extra"] = await nothing_within(a, 0.3)

        async with connect(ws_url(base, f"/sub/{talk}"), open_timeout=WAIT) as b:
            report["published"] = await op({"op": "publish", "channel": talk, "event": "chat", "data": "from a"})
            report["b_received"] = await recv_json(b)

        report["bad_op"] = await op({"op": "nope"})
        report["bad_json"] = await op("not json")
        report["no_op"] = await op({"channels": [channel]})
        report["alive_id"] = publish(base, channel, "still here")
        report["alive"] = await recv_json(a)

    async with connect(ws_url(closed_base, f"/sub/{channel}"), open_timeout=WAIT) as c:
        await c.send(json.dumps({"op": "publish", "channel": channel, "data": "not allowed"}))
        report["forbidden"] = await recv_json(c)
        report["forbidden_alive_id"] = publish(closed_base, channel, "after forbidden")
        report["forbidden_alive"] = await recv_json(c)
    return report


class CountingConnection(ClientConnection):
    """Counts the server's pings as frames come in (the library answers them by itself)."""

    pings = []

    def process_event(self, event):
        if getattr(event, "opcode", None) is Opcode.PING:
            CountingConnection.pings.append(time.monotonic())
        super().process_event(event)


async def heartbeat(base, channel, quiet):
    url = ws_url(base, f"/sub/{channel}")
    async with connect(url, open_timeout=WAIT, ping_interval=None, create_connection=CountingConnection) as ws:
        opened = time.monotonic()
        received = await nothing_within(ws, quiet)
        open_after_quiet = ws.state.name
        pings = [round(t - opened, 3) for t in CountingConnection.pings]
        published = publish(base, channel, "after the quiet")
        after = await recv_json(ws)
    return {"received_while_quiet": received, "state": open_after_quiet, "pings": pings, "published": published,
            "after": after}


async def deflate(base, channel):
    report = {"received": [], "sent_rsv1": []}
    async with connect(ws_url(base, f"/sub/{channel}"), open_timeout=WAIT) as ws:
        extensions = ws.protocol.extensions
        report["extensions"] = [e.name for e in extensions]
        if not extensions:
            return report
        ext = extensions[0]
        report["agreed"] = {"server_no_context_takeover": ext.remote_no_context_takeover,
                            "client_no_context_takeover": ext.local_no_context_takeover}
        decode, encode = ext.decode, ext.encode
        received_rsv1 = []

        def watched_decode(frame, *, max_size=None):
            if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
                received_rsv1.append(frame.rsv1)
            return decode(frame, max_size=max_size)

        def watched_encode(frame):
            frame = encode(frame)
            if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
                report["sent_rsv1"].append(frame.rsv1)
            return frame

        ext.decode, ext.encode = watched_decode, watched_encode
        long = ",".join(f'{{"sym":"XYZ","px":{100 + i % 9}.5,"n":{i}}}' for i in range(80))
        for data in (long, "short"):
            report.setdefault("published", []).append(publish(base, channel, data))
            envelope = await recv_json(ws)
            report["received"].append({"id": envelope["id"], "data_ok": envelope["data"] == data,
                                       "rsv1": received_rsv1[-1]})
        await ws.send(json.dumps({"op": "publish", "channel": channel, "data": long}))
        report["answer"] = await recv_json(ws)
        report["echoed_ok"] = (await recv_json(ws))["data"] == long
    return report


async def main():
    case, args = sys.argv[1], sys.argv[2:]
    if case == "heartbeat":
        report = await heartbeat(args[0], args[1], float(args[2]))
    else:
        report = await {"envelopes": envelopes, "raw": raw, "resume": resume, "ops": ops,
                              "deflate": deflate}[case](*args)
    print(json.dumps(report), flush=True)


asyncio.run(main())
