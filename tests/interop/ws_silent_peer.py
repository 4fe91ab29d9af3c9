"""A minimal raw-socket WebSocket client (RFC 6455, stdlib only) that never answers pings, for
crates/holdfast-server/tests/ws_interop.rs: the server must cut it after heartbeat_timeout.

Usage: python3 ws_silent_peer.py HOST:PORT CHANNEL DEADLINE_SECONDS
Opens /sub/CHANNEL, then only reads until the server closes (or DEADLINE_SECONDS pass). Checks
nothing itself: prints one JSON report for the Rust test to assert on:
  status:  the handshake's status code; accept_ok: whether Sec-WebSocket-Accept was right
  pings:   seconds after the handshake at which each ping arrived
  texts:   the text frames (holdfast.closed notice)
  close:   {"code","reason","after"} of the close frame (after: seconds after the handshake)
  eof_after_close: whether the TCP connection ended right after the close frame
"""

import base64
import hashlib
import json
import os
import socket
import sys
import time

HOST_PORT, CHANNEL, DEADLINE = sys.argv[1], sys.argv[2], float(sys.argv[3])
host, port = HOST_PORT.rsplit(":", 1)
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

sock = socket.create_connection((host, int(port)), timeout=5)
key = base64.b64encode(os.urandom(16))
sock.sendall(
    f"GET /sub/{CHANNEL} HTTP/1.1\r\nHost: {HOST_PORT}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    f"Sec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
)
buf = b""
while b"\r\n\r\n" not in buf:
    piece = sock.recv(4096)
    if not piece:
        break
    buf += piece
head, _, buf = buf.partition(b"\r\n\r\n")
opened = time.monotonic()
lines = head.decode("latin-1").split("\r\n")
status = int(lines[0].split()[1])
headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
expected_accept = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
report = {"status": status, "accept_ok": headers.get("sec-websocket-accept") == expected_accept, "pings": [],
          "texts": [], "close": None, "eof_after_close": None}


def read(n):
    """Exactly n bytes, or None at EOF / past the deadline."""
    global buf
    while len(buf) < n:
        left = opened + DEADLINE - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            piece = sock.recv(65536)
        except (socket.timeout, ConnectionResetError):
            return None
        if not piece:
            return None
        buf += piece
    out, buf = buf[:n], buf[n:]
    return out


while status == 101:
    first = read(2)
    if first is None:
        break
    opcode, length = first[0] & 0x0F, first[1] & 0x7F
    if length == 126:
        length = int.from_bytes(read(2), "big")
    elif length == 127:
        length = int.from_bytes(read(8), "big")
    payload = read(length) if length else b""
    if payload is None:
        break
    after = round(time.monotonic() - opened, 3)
    if opcode == 0x9:
        report["pings"].append(after)  # and never a pong
    elif opcode == 0x1:
        report["texts"].append(payload.decode())
    elif opcode == 0x8:
        code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
        report["close"] = {"code": code, "reason": payload[2:].decode(), "after": after}
        report["eof_after_close"] = read(1) is None and time.monotonic() < opened + DEADLINE
        break

sock.close()
print(json.dumps(report), flush=True)
