#!/usr/bin/env python3
"""Idle TLS (or plain) connections for bench/tls_idle.sh: an independent client (Python asyncio +
ssl, no code shared with `holdfast bench`).

Opens N connections to one server (CONCURRENCY handshakes in flight at most, so the server's
accept backlog never overflows), on each completes the TLS handshake and one request, then holds
them idle until SIGTERM/SIGINT:

  --mode keepalive  `GET PATH HTTP/1.1` (keep-alive), reads the whole answer (Content-Length or
                    chunked), which must be 200; afterwards the server should send nothing.
  --mode sse        `GET PATH HTTP/1.1` with `Accept: text/event-stream`, reads the answer's head,
                    which must be a 200 of type text/event-stream; what follows (retry:,
                    heartbeats) is read and counted, never answered.

The connections stay in the event loop, so bytes the server sends later are read (TLS 1.3
session tickets inside the TLS layer; heartbeats as stream bytes) and a close by the server is
seen at once.

Output, one JSON line each (stdout):
  {"phase":"open","requested":N,"open":K,"failed":F,"first_error":…,"seconds":…,"tls":…,…}
      when all N have been tried;
  {"phase":"held","open":K2,"closed_by_server":C,"unexpected_bytes":U,"stream_bytes":S,…}
      on SIGTERM/SIGINT (or after --hold seconds), then exits.

Raises its own RLIMIT_NOFILE soft limit to the hard limit; run several processes for more
connections than one may hold (bench/tls_idle.sh does).
"""

import argparse
import asyncio
import json
import resource
import signal
import ssl
import sys
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", required=True, help="HOST:PORT")
    p.add_argument("--connections", type=int, required=True)
    p.add_argument("--mode", choices=["keepalive", "sse"], default="keepalive")
    p.add_argument("--path", default="/healthz")
    p.add_argument("--plain", action="store_true", help="no TLS (plain TCP)")
    p.add_argument("--cafile", help="PEM certificate(s) to verify the server with (default: no verification)")
    p.add_argument("--sni", default="localhost", help="server name sent and checked (with --cafile)")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds for one connection to open")
    p.add_argument("--hold", type=float, default=0.0, help="seconds to hold (0: until SIGTERM/SIGINT)")
    return p.parse_args()


class Conn(asyncio.Protocol):
    """One connection: the request, its answer, then idle reading."""

    def __init__(self, client):
        self.client = client
        self.transport = None
        self.buf = bytearray()
        self.ready = asyncio.get_running_loop().create_future()
        self.opened = False  # the answer (keepalive) or the stream's head (sse) was read
        self.closed = False
        self.extra = 0  # bytes after the answer / the head

    def connection_made(self, transport):
        self.transport = transport
        c = self.client
        head = f"GET {c.path} HTTP/1.1\r\nHost: {c.host_header}\r\nUser-Agent: tls_idle_client.py\r\n"
        if c.mode == "sse":
            head += "Accept: text/event-stream\r\nCache-Control: no-cache\r\n"
        transport.write((head + "\r\n").encode())

    def data_received(self, data):
        if self.opened:
            self.extra += len(data)
            return
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > 65536:
                self.fail("answer head over 64 KiB")
            return
        head = self.buf[:end].decode("latin-1")
        lines = head.split("\r\n")
        status = lines[0].split(" ", 2)
        if len(status) < 2 or status[1] != "200":
            return self.fail(f"status line {lines[0]!r}")
        fields = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            fields[k.strip().lower()] = v.strip()
        rest = len(self.buf) - end - 4
        if self.client.mode == "sse":
            if not fields.get("content-type", "").startswith("text/event-stream"):
                return self.fail(f"not an event stream: {fields.get('content-type')!r}")
            self.done(rest)
            return
        if "content-length" in fields:
            want = int(fields["content-length"])
            if rest >= want:
                self.done(rest - want)
            return  # wait for the rest of the body
        if fields.get("transfer-encoding", "").lower() == "chunked":
            if self.buf.endswith(b"0\r\n\r\n"):
                self.done(0)
            return
        self.fail("answer without Content-Length")

    def done(self, extra):
        self.opened = True
        self.extra = extra
        self.buf = bytearray()
        if not self.ready.done():
            self.ready.set_result(None)

    def fail(self, why):
        if not self.ready.done():
            self.ready.set_exception(RuntimeError(why))
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc):
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(RuntimeError(f"closed before the answer: {exc!r}"))


class Client:
    def __init__(self, args):
        host, _, port = args.server.rpartition(":")
        self.host, self.port = host, int(port)
        self.host_header = args.server
        self.mode, self.path = args.mode, args.path
        self.args = args
        self.conns = []
        self.failed = 0
        self.first_error = None
        if args.plain:
            self.ctx = None
        else:
            if args.cafile:
                self.ctx = ssl.create_default_context(cafile=args.cafile)
            else:
                self.ctx = ssl.create_default_context()
                self.ctx.check_hostname = False
                self.ctx.verify_mode = ssl.CERT_NONE
            # No session reuse: every connection a full handshake (nothing to resume anyway).
            self.ctx.options |= ssl.OP_NO_TICKET

    async def open_one(self, sem):
        async with sem:
            kw = {}
            if self.ctx is not None:
                kw = {"ssl": self.ctx, "server_hostname": self.args.sni, "ssl_handshake_timeout": self.args.timeout}
            conn = None
            try:
                _, conn = await asyncio.wait_for(
                    asyncio.get_running_loop().create_connection(lambda: Conn(self), self.host, self.port, **kw),
                    self.args.timeout,
                )
                await asyncio.wait_for(conn.ready, self.args.timeout)
                self.conns.append(conn)
            except Exception as e:  # noqa: BLE001 - every failure is counted and the first reported
                self.failed += 1
                if self.first_error is None:
                    self.first_error = f"{type(e).__name__}: {e}"
                if conn is not None and conn.transport is not None:
                    conn.transport.abort()

    async def run(self):
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        t0 = time.monotonic()
        sem = asyncio.Semaphore(self.args.concurrency)
        await asyncio.gather(*(self.open_one(sem) for _ in range(self.args.connections)))
        info = {}
        if self.conns and self.ctx is not None:
            obj = self.conns[0].transport.get_extra_info("ssl_object")
            info = {"tls": obj.version(), "cipher": obj.cipher()[0]}
        emit(
            phase="open",
            server=self.args.server,
            requested=self.args.connections,
            open=len(self.conns),
            failed=self.failed,
            first_error=self.first_error,
            seconds=round(time.monotonic() - t0, 3),
            **info,
        )
        t1 = time.monotonic()
        if self.args.hold > 0:
            try:
                await asyncio.wait_for(stop.wait(), self.args.hold)
            except asyncio.TimeoutError:
                pass
        else:
            await stop.wait()
        still = [c for c in self.conns if not c.closed]
        extra = sum(c.extra for c in self.conns)
        emit(
            phase="held",
            server=self.args.server,
            held_seconds=round(time.monotonic() - t1, 1),
            open=len(still),
            closed_by_server=len(self.conns) - len(still),
            unexpected_bytes=0 if self.mode == "sse" else extra,
            stream_bytes=extra if self.mode == "sse" else 0,
        )
        for c in self.conns:
            c.transport.abort()


def emit(**fields):
    sys.stdout.write(json.dumps(fields, sort_keys=True, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def main():
    args = parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.connections + 64 > hard:
        sys.exit(f"{args.connections} connections need more than the {hard} descriptors one process may hold")
    asyncio.run(Client(args).run())


if __name__ == "__main__":
    main()
