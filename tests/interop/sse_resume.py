"""An SSE client nobody here wrote (sseclient-py over requests) against Holdfast, for
crates/holdfast-server/tests/push_interop.rs.

Usage: python3 sse_resume.py BASE_URL CHANNEL
Publishes with POST /pub, reads with GET /sub (Accept: text/event-stream), then resumes with
Last-Event-ID. Checks nothing itself: prints one JSON report for the Rust test to assert on:
  published: the ids from the publish responses, in order
  first:     the 3 events of the first connection (id, event, data)
  resumed:   the events of the second connection, up to and including the sentinel
  heartbeats: heartbeat comment lines (":") seen on the wire during the first connection
"""

import json
import sys
import time

import requests
import sseclient

BASE, CHANNEL = sys.argv[1], sys.argv[2]
TIMEOUT = (5, 5)  # connect, read: bounded waits everywhere
session = requests.Session()
published = []
heartbeats = 0


def publish(data, event=None):
    params = {"event": event} if event else {}
    r = session.post(f"{BASE}/pub/{CHANNEL}", params=params, data=data.encode(), timeout=TIMEOUT)
    r.raise_for_status()
    published.append(r.json()["id"])


def subscribe(last_event_id=None):
    headers = {"Accept": "text/event-stream"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    # A fresh connection per subscription, so closing it is a real disconnect.
    r = requests.get(f"{BASE}/sub/{CHANNEL}", headers=headers, stream=True, timeout=TIMEOUT)
    r.raise_for_status()
    return r


def wire(response):
    """The body's bytes as they arrive (one piece per HTTP chunk), counting heartbeat lines."""
    global heartbeats
    for piece in response.iter_content(chunk_size=None):
        heartbeats += sum(1 for line in piece.split(b"\n") if line == b":")
        yield piece


def take(events, n):
    return [{"id": e.id, "event": e.event, "data": e.data} for _, e in zip(range(n), events)]


# First connection: the head is back, so the subscription exists; give heartbeats time to flow.
first = subscribe()
events = sseclient.SSEClient(wire(first)).events()
time.sleep(0.5)
publish("a\nb\r\nc")
time.sleep(0.3)
publish("second", event="tick")
publish("third")
got_first = take(events, 3)
first.close()

# Missed while away: k = 5.
for i in range(5):
    publish(f"missed {i}")

second = subscribe(last_event_id=got_first[-1]["id"])
events = sseclient.SSEClient(second.iter_content(chunk_size=None)).events()
resumed = take(events, 5)
# A sentinel published now must be the very next event: nothing repeated, nothing extra.
publish("sentinel")
resumed += take(events, 1)
second.close()

print(json.dumps({"published": published, "first": got_first, "resumed": resumed, "heartbeats": heartbeats}))
