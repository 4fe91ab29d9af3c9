#!/usr/bin/env bash
# Publishing while a restarted disk store is still reading its history back (bench/RESULTS.md,
# "Restart with the background read-back"): the server answers within ~0.5 s of starting, but a
# request for a channel not read yet waits for that channel.
#
# One server (`--durability none --history-messages 1000 --history-max-bytes 2GiB`) filled with
# 1,000 channels x 1,000 messages of 200 B (64 pipelined connections), then ROUNDS times: SIGTERM,
# start it again, and the moment `/healthz` answers, `holdfast bench publish` of MESSAGES messages
# from 50 connections round robin over the 1,000 channels (so it touches every channel at once,
# the worst case: clients reconnecting to all of them); then, once /admin/stats says everything is
# read back, the same again. Prints each run's publishes/s, p50 and p99.
#
#   bench/readback_latency.sh                 # ROUNDS=3 MESSAGES=20000
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT
ROUNDS=${ROUNDS:-3}
MESSAGES=${MESSAGES:-20000}
need curl curl
need jq jq
need ss iproute2
BIN=$(holdfast_bin)
PORT=$(free_port)
ARGS=(--history-store disk --data-dir "$WORK/data" --durability none --history-messages 1000
    --history-max-bytes 2GiB --history-seconds 720h --keepalive-requests 4000000000)
publish() {
    "$BIN" bench publish --json --server "127.0.0.1:$PORT" --connections 50 --channels 1000 \
        --messages "$MESSAGES" --size 200 --prefix r- | jq -c "{round: $1, while_reading_back: $2, per_second, p50_ms, p99_ms}"
}
log "load average: $(cut -d" " -f1-3 /proc/loadavg)"
start_holdfast "$BIN" "$PORT" "${ARGS[@]}"
"$BIN" bench publish --json --server "127.0.0.1:$PORT" --connections 64 --pipeline 32 --channels 1000 \
    --messages 1000000 --size 200 --prefix r- | jq -c '{filled_per_second: .per_second}'
for round in $(seq "$ROUNDS"); do
    stop_pid "$SERVER_PID"
    start_holdfast "$BIN" "$PORT" "${ARGS[@]}"
    publish "$round" true
    until curl -s "http://127.0.0.1:$PORT/admin/stats" | jq -e .store.recovered.read_back >/dev/null; do sleep 0.1; done
    curl -s "http://127.0.0.1:$PORT/admin/stats" | jq -c '.store.recovered | {read_back_millis, messages}'
    sleep 1
    publish "$round" false
done
echo "load average at the end: $(cut -d" " -f1-3 /proc/loadavg)"
