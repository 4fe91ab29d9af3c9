#!/usr/bin/env python3
"""An independent check of `holdfast bench hostile`'s SSE delivery delay.

Subscribes to the probe channel with `requests` (SSE), and for every probe payload
`hfp:<seq>:<ns>:<unix µs>:` prints `seq delay_ms`, the delay computed from the wall clock in the
payload (the publisher's clock just before its POST) to this reader's wall clock at the line's
arrival. Run it beside the bench client (same machine, same clock) and compare with the client's
`--delays-file`:

    python3 bench/sse_check.py 127.0.0.1:PORT probe SECONDS > py.txt &
    holdfast bench hostile ... --delays-file rust.txt
"""
import sys
import time

import requests


def main():
    server, channel, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    end = time.time() + seconds
    url = f"http://{server}/sub/{channel}?transport=sse"
    with requests.get(url, headers={"Accept": "text/event-stream"}, stream=True, timeout=(5, 5)) as answer:
        answer.raise_for_status()
        try:
            for line in answer.iter_lines(chunk_size=1):
                now_us = time.time() * 1e6
                if time.time() > end:
                    break
                at = line.find(b"hfp:")
                if at < 0:
                    continue
                fields = line[at + 4:].split(b":")
                seq, sent_us = int(fields[0]), int(fields[2])
                print(f"{seq} {(now_us - sent_us) / 1000:.3f}", flush=True)
        except requests.exceptions.ConnectionError:
            pass


if __name__ == "__main__":
    main()
