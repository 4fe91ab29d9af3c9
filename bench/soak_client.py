#!/usr/bin/env python3
"""The clients of bench/soak.sh: subscribers with churn, the publisher, and the report.

Plain asyncio streams (no HTTP or WebSocket library; no code shared with Holdfast), so it checks
the server from the outside:

  soak_client.py sub --server H:P --first I --count N --channels C --churn-per-min PCT --out FILE
      N subscribers (ids I..I+N-1): subscriber i is on channel `soak<i % C>` with transport
      TRANSPORTS[(i // C) % 4] (sse, ws, longpoll, stream), so every channel has every transport.
      Each one checks the publisher's sequence numbers (`{"ch":c,"n":n,"a":attempt}`): every
      message of its channel exactly once and in order from the first it saw. A jump forward after
      a `holdfast.gap` notice (or a poll answer's `gap`) is *told*; one without is a *silent loss*.
      Every minute PCT % of the subscribers (spread over the minute, at random) close and
      reconnect after 0.2-3 s with their last cursor (SSE: `Last-Event-ID`, the others
      `?cursor=`); any connection the server ends (the restart's drain) reconnects the same way.
      Prints `ready` once every subscriber has connected once; SIGUSR1 stops the churn;
      SIGTERM writes the per-subscriber tallies to FILE (JSON) and exits.
  soak_client.py pub --server H:P --channels C --rate R --seconds S --out FILE
      R messages/s in all, round robin over the channels, on 4 keep-alive connections (channel c
      on connection c % 4, so each channel's messages go out in order). A publish that fails
      (server restarting) is retried until it is answered 200; one whose request went out without
      an answer may have been stored, and its retry then comes twice with another `a` (counted as
      `republished`, not as a duplicate). Writes the last `n` per channel to FILE.
  soak_client.py report --dir WORK --seconds S --plot PNG
      The table of bench/soak.sh (markdown) from the samples, the events, the publisher's and the
      subscribers' files, and the plot of RSS and descriptors over time.
"""
import argparse
import asyncio
import base64
import json
import os
import random
import signal
import struct
import sys
import time

TRANSPORTS = ["sse", "ws", "longpoll", "stream"]


class Closed(Exception):
    """The server ended the connection (or answered something other than a subscription)."""

    def __init__(self, why, headers=None):
        super().__init__(why)
        self.retry = None  # Retry-After of a refusal (503 while draining), seconds
        if headers and headers.get("retry-after", "").isdigit():
            self.retry = int(headers["retry-after"])


# ---------------------------------------------------------------------------------------------
# Subscribers


class Sub:
    __slots__ = (
        "i", "ch", "transport", "cursor", "expect", "first_n", "last_a", "msgs", "dups", "ooo",
        "republished", "told", "told_unknown", "gap_notices", "pending_gap", "silent", "missing",
        "connects", "churns", "closes", "failures", "connected", "churn_req", "task", "silent_events",
    )

    def __init__(self, i, channels):
        self.i = i
        self.ch = i % channels
        # Every channel gets all four (a quarter each), and so does a run with fewer subscribers.
        self.transport = TRANSPORTS[(i % channels + i // channels) % len(TRANSPORTS)]
        self.cursor = None
        self.expect = None
        self.first_n = None
        self.last_a = None
        self.msgs = 0
        self.dups = 0
        self.ooo = 0
        self.republished = 0
        self.told = 0
        self.told_unknown = 0
        self.gap_notices = 0
        self.pending_gap = False
        self.silent = 0
        self.missing = set()
        self.connects = 0
        self.churns = 0
        self.closes = {}
        self.failures = 0
        self.connected = False
        self.churn_req = None
        self.task = None
        self.silent_events = []

    def message(self, payload):
        n, a = payload["n"], payload.get("a", 0)
        if payload.get("ch") != self.ch:
            self.dups += 1  # a message of another channel: never expected
            return
        if self.expect is None:
            self.first_n = n
        elif n < self.expect:
            if n in self.missing:
                self.missing.discard(n)
                self.silent -= 1
                self.ooo += 1
            elif n == self.expect - 1 and a != self.last_a:
                self.republished += 1
            else:
                self.dups += 1
            return
        elif n > self.expect:
            jump = n - self.expect
            if self.pending_gap:
                self.told += jump
            else:
                self.silent += jump
                if len(self.missing) < 10000:
                    self.missing.update(range(self.expect, n))
                if len(self.silent_events) < 20:
                    self.silent_events.append({"t": round(time.time(), 1), "from": self.expect, "to": n - 1,
                                               "connects": self.connects})
        self.pending_gap = False
        self.expect = n + 1
        self.last_a = a
        self.msgs += 1

    def gap(self, g):
        self.gap_notices += 1
        self.pending_gap = True
        if g.get("lost") is None:
            self.told_unknown += 1

    def envelope(self, env):
        ev = env.get("event", "message")
        if ev == "holdfast.gap":
            self.gap(env.get("json") or {})
        elif ev == "holdfast.closed":
            reason = (env.get("json") or {}).get("reason", "?")
            self.closes[reason] = self.closes.get(reason, 0) + 1
        else:
            self.message(env["json"])
        if env.get("id"):
            self.cursor = env["id"]

    def tally(self):
        return {
            "i": self.i, "ch": self.ch, "transport": self.transport, "first_n": self.first_n,
            "last_n": None if self.expect is None else self.expect - 1, "msgs": self.msgs, "dups": self.dups,
            "ooo": self.ooo, "republished": self.republished, "told": self.told,
            "told_unknown": self.told_unknown, "gap_notices": self.gap_notices, "silent": self.silent,
            "connects": self.connects, "churns": self.churns, "closes": self.closes, "failures": self.failures,
            "connected": self.connected, "silent_events": self.silent_events,
        }


async def read_head(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return status, headers


async def read_body(reader, headers):
    """A whole (non-streaming) body: Content-Length or chunked."""
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower().endswith("chunked"):
        parts = []
        async for chunk in chunks(reader):
            parts.append(chunk)
        return b"".join(parts)
    return await reader.read()


async def chunks(reader):
    """The chunks of a chunked body, until the last chunk."""
    while True:
        line = await reader.readuntil(b"\r\n")
        size = int(line.split(b";", 1)[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return
        data = await reader.readexactly(size + 2)
        yield data[:-2]


def request(path, host, extra=""):
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


async def sse(sub, reader, writer, host, path):
    extra = "Accept: text/event-stream\r\n"
    if sub.cursor:
        extra += f"Last-Event-ID: {sub.cursor}\r\n"
    writer.write(request(path, host, extra))
    status, headers = await read_head(reader)
    if status != 200:
        await read_body(reader, headers)
        raise Closed(f"http_{status}", headers)
    if sub.cursor is None and "holdfast-cursor" in headers:
        sub.cursor = headers["holdfast-cursor"]
    sub.connected = True
    sub.connects += 1
    buf = b""
    ev_id, ev_type, data = None, "message", []
    async for chunk in chunks(reader):
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for raw in lines:
            line = raw.decode()
            if line == "":
                if data:
                    text = "\n".join(data)
                    if ev_type == "message":
                        sub.message(json.loads(text))
                    elif ev_type == "holdfast.gap":
                        sub.gap(json.loads(text))
                    elif ev_type == "holdfast.closed":
                        reason = json.loads(text).get("reason", "?")
                        sub.closes[reason] = sub.closes.get(reason, 0) + 1
                    if ev_id is not None:
                        sub.cursor = ev_id
                ev_id, ev_type, data = None, "message", []
            elif line.startswith(":"):
                continue
            else:
                field, _, value = line.partition(":")
                if value.startswith(" "):
                    value = value[1:]
                if field == "id":
                    ev_id = value
                elif field == "event":
                    ev_type = value
                elif field == "data":
                    data.append(value)
    raise Closed("eof")


async def stream(sub, reader, writer, host, path):
    writer.write(request(path + "?transport=stream" + ("&cursor=" + sub.cursor if sub.cursor else ""), host))
    status, headers = await read_head(reader)
    if status != 200:
        await read_body(reader, headers)
        raise Closed(f"http_{status}", headers)
    if sub.cursor is None and "holdfast-cursor" in headers:
        sub.cursor = headers["holdfast-cursor"]
    sub.connected = True
    sub.connects += 1
    buf = b""
    async for chunk in chunks(reader):
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for raw in lines:
            if raw.strip():
                sub.envelope(json.loads(raw))
    raise Closed("eof")


async def longpoll(sub, reader, writer, host, path):
    first = True
    while True:
        p = path + "?transport=longpoll"
        if sub.cursor:
            p += "&cursor=" + sub.cursor
        writer.write(request(p, host))
        sub.connected = True  # held (counted as connected while the server holds the poll)
        status, headers = await read_head(reader)
        body = await read_body(reader, headers)
        if status != 200:
            if first:
                sub.connected = False
            raise Closed(f"http_{status}", headers)
        if first:
            sub.connects += 1
            first = False
        answer = json.loads(body)
        for g in answer.get("gap") or []:
            sub.gap(g)
        for env in answer.get("messages", []):
            sub.envelope(env)
        if answer.get("cursor"):
            sub.cursor = answer["cursor"]
        if headers.get("connection", "").lower() == "close":
            raise Closed("lp_close")


def ws_frame(opcode, payload):
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    masked = bytes(b ^ mask[k % 4] for k, b in enumerate(payload))
    return head + mask + masked


async def ws(sub, reader, writer, host, path):
    key = base64.b64encode(os.urandom(16)).decode()
    extra = (f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
             "Sec-WebSocket-Version: 13\r\n")
    writer.write(request(path + ("?cursor=" + sub.cursor if sub.cursor else ""), host, extra))
    status, headers = await read_head(reader)
    if status != 101:
        await read_body(reader, headers)
        raise Closed(f"http_{status}", headers)
    if sub.cursor is None and "holdfast-cursor" in headers:
        sub.cursor = headers["holdfast-cursor"]
    sub.connected = True
    sub.connects += 1
    frag = b""
    while True:
        b0, b1 = await reader.readexactly(2)
        opcode, n = b0 & 0x0F, b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", await reader.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", await reader.readexactly(8))[0]
        if b1 & 0x80:
            m = await reader.readexactly(4)
            payload = bytes(b ^ m[k % 4] for k, b in enumerate(await reader.readexactly(n)))
        else:
            payload = await reader.readexactly(n)
        if opcode == 0x9:
            writer.write(ws_frame(0xA, payload))
        elif opcode == 0x8:
            code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 0
            try:
                writer.write(ws_frame(0x8, payload[:2]))
                await writer.drain()
            except OSError:
                pass
            raise Closed(f"ws_{code}")
        elif opcode in (0x1, 0x0):
            frag += payload
            if b0 & 0x80:
                sub.envelope(json.loads(frag))
                frag = b""


HANDLERS = {"sse": sse, "stream": stream, "longpoll": longpoll, "ws": ws}


async def connection(sub, host, port):
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    try:
        await HANDLERS[sub.transport](sub, reader, writer, f"{host}:{port}", f"/sub/soak{sub.ch}")
    finally:
        writer.close()


async def run_sub(sub, host, port, state):
    delay = 0.0
    while True:
        if delay:
            await asyncio.sleep(delay)
        sub.churn_req = asyncio.get_running_loop().create_future()
        conn = asyncio.ensure_future(connection(sub, host, port))
        done, _ = await asyncio.wait({conn, sub.churn_req}, return_when=asyncio.FIRST_COMPLETED)
        was_connected = sub.connected
        sub.connected = False
        if conn in done:
            exc = conn.exception()
            why = str(exc) if isinstance(exc, Closed) else type(exc).__name__
            if not was_connected:
                sub.failures += 1
                state["fail_reasons"][why] = state["fail_reasons"].get(why, 0) + 1
                if isinstance(exc, Closed) and exc.retry is not None:
                    delay = min(exc.retry, 5) * random.uniform(0.5, 1.0)
                else:
                    delay = min(2.0, max(0.3, delay * 2)) * random.uniform(0.5, 1.5)
            else:
                state["end_reasons"][why] = state["end_reasons"].get(why, 0) + 1
                delay = random.uniform(0.05, 1.0)
        else:
            conn.cancel()
            try:
                await conn
            except (asyncio.CancelledError, Exception):
                pass
            sub.churns += 1
            delay = random.uniform(0.2, 3.0)


async def sub_main(args):
    host, port = args.server.rsplit(":", 1)
    port = int(port)
    subs = [Sub(i, args.channels) for i in range(args.first, args.first + args.count)]
    state = {"fail_reasons": {}, "end_reasons": {}, "churn": True}
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, lambda: stop.done() or stop.set_result(None))
    loop.add_signal_handler(signal.SIGUSR1, lambda: state.update(churn=False))
    # Open at most args.open_rate subscriptions a second.
    for k, sub in enumerate(subs):
        sub.task = asyncio.ensure_future(run_sub(sub, host, port, state))
        if k % 50 == 49:
            await asyncio.sleep(50 / args.open_rate)
    t0 = time.monotonic()
    while sum(1 for s in subs if s.connected or s.connects) < len(subs):
        if time.monotonic() - t0 > 120:
            print(json.dumps({"error": "not all subscribers connected", "connected": sum(1 for s in subs if s.connects)}), flush=True)
            break
        await asyncio.sleep(0.2)
    print("ready", flush=True)
    # Churn: each second, args.churn_per_min / 60 % of the subscribers, chosen at random.
    per_s = len(subs) * args.churn_per_min / 100 / 60
    owed = 0.0
    last_report = time.monotonic()
    while not stop.done():
        await asyncio.wait({stop}, timeout=1.0)
        if state["churn"] and not stop.done():
            owed += per_s
            while owed >= 1:
                owed -= 1
                for _ in range(10):  # a connected one, chosen at random
                    s = random.choice(subs)
                    if s.connected and s.churn_req is not None and not s.churn_req.done():
                        s.churn_req.set_result(None)
                        break
        if time.monotonic() - last_report >= 60:
            last_report = time.monotonic()
            progress(subs, state)
    progress(subs, state)
    tallies = [s.tally() for s in subs]
    for s in subs:
        s.task.cancel()
    with open(args.out, "w") as f:
        json.dump({"subs": tallies, "fail_reasons": state["fail_reasons"], "end_reasons": state["end_reasons"]}, f)


def progress(subs, state):
    by = {}
    for s in subs:
        d = by.setdefault(s.transport, {"conn": 0, "msgs": 0, "silent": 0, "dups": 0, "told": 0, "churns": 0})
        d["conn"] += s.connected
        d["msgs"] += s.msgs
        d["silent"] += s.silent
        d["dups"] += s.dups
        d["told"] += s.told
        d["churns"] += s.churns
    print(json.dumps({"t": round(time.time(), 1), "by": by, "fail": state["fail_reasons"], "end": state["end_reasons"]}),
          file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Publisher


async def pub_worker(host, port, queue, stats):
    reader = writer = None
    while True:
        item = await queue.get()
        if item is None:
            return
        ch, n = item
        attempt = 0
        while True:
            sent = False
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                body = json.dumps({"ch": ch, "n": n, "a": attempt}, separators=(",", ":")).encode()
                writer.write(f"POST /pub/soak{ch} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                             f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
                await writer.drain()
                sent = True
                status, headers = await asyncio.wait_for(read_head(reader), 10)
                await read_body(reader, headers)
                if headers.get("connection", "").lower() == "close":
                    writer.close()
                    writer = None
                if status == 200:
                    stats["last"][ch] = n
                    stats["published"] += 1
                    stats["attempts"] += attempt
                    break
                stats["refused"][str(status)] = stats["refused"].get(str(status), 0) + 1
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError, IndexError):
                if sent:
                    stats["ambiguous"] += 1
                stats["errors"] += 1
                if writer is not None:
                    writer.close()
                writer = None
            attempt += 1
            await asyncio.sleep(random.uniform(0.1, 0.3))


async def pub_main(args):
    host, port = args.server.rsplit(":", 1)
    port = int(port)
    workers = 4
    queues = [asyncio.Queue() for _ in range(workers)]
    stats = {"last": [0] * args.channels, "published": 0, "attempts": 0, "ambiguous": 0, "errors": 0,
             "refused": {}, "offered": 0}
    tasks = [asyncio.ensure_future(pub_worker(host, port, q, stats)) for q in queues]
    nxt = [0] * args.channels
    t0 = time.monotonic()
    total = int(args.seconds * args.rate)
    for k in range(total):
        delay = t0 + k / args.rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        ch = k % args.channels
        nxt[ch] += 1
        queues[ch % workers].put_nowait((ch, nxt[ch]))
        stats["offered"] += 1
        if k % (args.rate * 60) == 0 and k:
            print(json.dumps({"t": round(time.time(), 1), "published": stats["published"], "queued": sum(q.qsize() for q in queues),
                              "errors": stats["errors"]}), file=sys.stderr, flush=True)
    for q in queues:
        q.put_nowait(None)
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
    except asyncio.TimeoutError:
        stats["unfinished"] = True
    stats["seconds"] = round(time.monotonic() - t0, 1)
    with open(args.out, "w") as f:
        json.dump(stats, f)


# ---------------------------------------------------------------------------------------------
# Report


def median(xs):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    m = len(xs) // 2
    return xs[m] if len(xs) % 2 else (xs[m - 1] + xs[m]) / 2


def report(args):
    import csv
    d = args.dir
    rows = list(csv.DictReader(open(os.path.join(d, "samples.csv"))))
    events = {}
    for line in open(os.path.join(d, "events")):
        k, v = line.split()
        events[k] = float(v)
    t0 = events["start"]
    S = args.seconds
    samples = [(float(r["t"]) - t0, int(r["rss_kb"]), int(r["fds"]), int(r["connections_open"] or 0),
                int(r["anon_kb"]) if r.get("anon_kb") else None) for r in rows if r["rss_kb"]]
    # The server's CPU (% of one core) between consecutive samples of the same process.
    hz = os.sysconf("SC_CLK_TCK")
    cpu = []
    for a, b in zip(rows, rows[1:]):
        if a["pid"] == b["pid"] and a.get("cpu_ticks") and b.get("cpu_ticks"):
            dt = float(b["t"]) - float(a["t"])
            cpu.append((float(b["t"]) - t0, (int(b["cpu_ticks"]) - int(a["cpu_ticks"])) / hz / dt * 100))
    # Windows as fractions of the run: minutes 5-10, 25-30 and 50-60 of an hour.
    windows = {"5-10": (5 / 60, 10 / 60), "25-30": (25 / 60, 30 / 60), "50-60": (50 / 60, 1.0)}
    med = {}
    for name, (a, b) in windows.items():
        sel = [s for s in samples if a * S <= s[0] < b * S]
        med[name] = (median([s[1] for s in sel]), median([s[2] for s in sel]), len(sel),
                     median([c for t, c in cpu if a * S <= t < b * S]),
                     median([s[4] for s in sel if s[4] is not None]))
    out = []
    # RssAnon is the part the server's own allocations make; the rest is mostly the binary's pages.
    out.append("| window (min of the run) | samples | RSS MiB (median) | of it anonymous | open fds (median) | RSS growth "
               "| anonymous growth | fds growth | server CPU % (median) |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    base = med["5-10"]

    def growth(name, k):
        return "—" if name == "5-10" else f"{(med[name][k] - base[k]) / base[k] * 100:+.1f} %"
    for name in windows:
        rss, fds, cnt, c, anon = med[name]
        lo, hi = windows[name]
        out.append(f"| {lo * S / 60:.1f}–{hi * S / 60:.1f} | {cnt} | {rss / 1024:.1f} | {anon / 1024:.1f} | {fds:.0f} | "
                   f"{growth(name, 0)} | {growth(name, 4)} | {growth(name, 1)} | {c:.1f} |")
    goal = all(abs((med[w][k] - base[k]) / base[k]) < 0.05 for w in ("25-30", "50-60") for k in (0, 1))
    out.append("")
    out.append(f"Growth goal (< 5 % after warm-up, both windows, RSS and fds): {'met' if goal else 'MISSED'}")
    peak = max(samples, key=lambda s: s[1])
    out.append(f"Peak RSS {peak[1] / 1024:.1f} MiB at {peak[0] / 60:.1f} min; fds range {min(s[2] for s in samples)}–"
               f"{max(s[2] for s in samples)}")

    pub = json.load(open(os.path.join(d, "pub.json")))
    last = pub["last"]
    out.append("")
    out.append(f"Publisher: offered {pub['offered']}, published {pub['published']} (answered 200) in {pub['seconds']} s; "
               f"retries {pub['attempts']}, failed attempts {pub['errors']} (request sent, no answer: {pub['ambiguous']}), "
               f"refused {pub['refused'] or 'none'}")
    subs = []
    fails, ends = {}, {}
    for name in sorted(os.listdir(d)):
        if name.startswith("subs-") and name.endswith(".json"):
            doc = json.load(open(os.path.join(d, name)))
            subs.extend(doc["subs"])
            for k, v in doc["fail_reasons"].items():
                fails[k] = fails.get(k, 0) + v
            for k, v in doc["end_reasons"].items():
                ends[k] = ends.get(k, 0) + v
    agg = {}
    evidence = []
    for s in subs:
        a = agg.setdefault(s["transport"], {k: 0 for k in (
            "subs", "expected", "msgs", "dups", "ooo", "republished", "told", "told_unknown", "silent", "tail",
            "connects", "churns", "shutdown", "not_connected")})
        final = last[s["ch"]]
        a["subs"] += 1
        if s["first_n"] is not None:
            a["expected"] += final - s["first_n"] + 1
        for k in ("msgs", "dups", "ooo", "republished", "told", "told_unknown", "silent", "connects", "churns"):
            a[k] += s[k]
        a["shutdown"] += s["closes"].get("shutdown", 0)
        a["not_connected"] += not s["connected"]
        tail = final - (s["last_n"] if s["last_n"] is not None else 0)
        if tail > 0:
            a["tail"] += tail
        if s["silent"] or tail > 0 or s["dups"]:
            evidence.append(s)
    out.append("")
    out.append("| transport | subscribers | expected | delivered | duplicates | out of order | told (gap notices) | "
               "silent losses | missing at the end | connects | churned | shutdown notices |")
    out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    tot = {}
    for t in TRANSPORTS + ["all"]:
        if t == "all":
            a = tot
        else:
            a = agg.get(t)
            if not a:
                continue
            for k, v in a.items():
                tot[k] = tot.get(k, 0) + v
        told = f"{a['told']}" + (f" (+{a['told_unknown']} unknown)" if a["told_unknown"] else "")
        out.append(f"| {t} | {a['subs']} | {a['expected']} | {a['msgs']} | {a['dups']} | {a['ooo']} | {told} | "
                   f"{a['silent']} | {a['tail']} | {a['connects']} | {a['churns']} | {a['shutdown']} |")
    out.append("")
    out.append(f"Subscribers not connected at the end: {tot.get('not_connected', 0)}; republished (a retried publish "
               f"stored twice): {tot.get('republished', 0)}")
    out.append(f"Connection attempts refused or failed (reason: count): {fails or 'none'}; "
               f"connections ended by the server: {ends or 'none'}")
    if evidence:
        out.append("")
        out.append(f"Subscribers with a loss, a duplicate or a missing tail: {len(evidence)}; the first 10:")
        for s in evidence[:10]:
            out.append(f"- sub {s['i']} {s['transport']} ch {s['ch']} first {s['first_n']} last {s['last_n']} of "
                       f"{last[s['ch']]}, silent {s['silent']} dups {s['dups']} connects {s['connects']} "
                       f"events {[dict(e, t=round(e['t'] - t0)) for e in s['silent_events'][:3]]}")
    print("\n".join(out))
    plot(samples, events, t0, args.plot, args.title, [(a * S / 60, b * S / 60) for a, b in windows.values()])


def plot(samples, events, t0, path, title, spans):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    t = [s[0] / 60 for s in samples]
    fig, ax1 = plt.subplots(figsize=(8, 3.6), dpi=90)
    ax1.plot(t, [s[1] / 1024 for s in samples], color="tab:blue", lw=1.2, label="RSS (MiB)")
    anon = [(m, s[4] / 1024) for m, s in zip(t, samples) if s[4] is not None]
    if anon:
        ax1.plot([m for m, _ in anon], [v for _, v in anon], color="tab:purple", lw=0.8, label="of it anonymous")
    ax1.set_xlabel("minutes since the publisher started")
    ax1.set_ylabel("server RSS (MiB)", color="tab:blue")
    ax1.set_ylim(bottom=0)
    ax2 = ax1.twinx()
    ax2.plot(t, [s[2] for s in samples], color="tab:orange", lw=1.2, label="open fds")
    ax2.plot(t, [s[3] for s in samples], color="tab:green", lw=0.8, ls=":", label="connections_open")
    ax2.set_ylabel("open descriptors / connections", color="tab:orange")
    ax2.set_ylim(bottom=0)
    if "term" in events:
        ax1.axvline((events["term"] - t0) / 60, color="red", lw=1, ls="--")
        ax1.text((events["term"] - t0) / 60, 1, " restart", color="red", fontsize=8)
    lines = ax1.get_lines()[:2 if anon else 1] + ax2.get_lines()
    ax1.legend(lines, [l.get_label() for l in lines], loc="lower right", fontsize=8)
    for a, b in spans:  # the windows whose medians the table compares
        ax1.axvspan(a, b, color="grey", alpha=0.12, lw=0)
    ax1.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def main():
    p = argparse.ArgumentParser()
    sp = p.add_subparsers(dest="cmd", required=True)
    s = sp.add_parser("sub")
    s.add_argument("--server", required=True)
    s.add_argument("--first", type=int, default=0)
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--channels", type=int, default=100)
    s.add_argument("--churn-per-min", type=float, default=5)
    s.add_argument("--open-rate", type=float, default=500)
    s.add_argument("--out", required=True)
    s = sp.add_parser("pub")
    s.add_argument("--server", required=True)
    s.add_argument("--channels", type=int, default=100)
    s.add_argument("--rate", type=int, default=50)
    s.add_argument("--seconds", type=float, required=True)
    s.add_argument("--out", required=True)
    s = sp.add_parser("report")
    s.add_argument("--dir", required=True)
    s.add_argument("--seconds", type=float, required=True)
    s.add_argument("--plot", required=True)
    s.add_argument("--title", default="Holdfast soak")
    args = p.parse_args()
    if args.cmd == "sub":
        asyncio.run(sub_main(args))
    elif args.cmd == "pub":
        asyncio.run(pub_main(args))
    else:
        report(args)


if __name__ == "__main__":
    main()
