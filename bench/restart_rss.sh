#!/usr/bin/env bash
# Server RSS before and after a restart over the disk store (bench/RESULTS.md, "Soak rerun"): the
# soak's restarted process settled higher than the first, and this isolates why, in ~1 minute.
#
# One data dir; START times: start `holdfast serve --history-store disk --durability batch
# --history-messages 100` on it, wait until the store is read back, publish PUBLISHES messages of
# 40 B over 100 channels (`holdfast bench publish`, 4 connections: the soak's channels and sizes,
# faster), sleep 2 s, print the RSS (VmRSS at the start and after; anon_kib and file_kib: its
# anonymous and file-backed parts) with /admin/stats' `history_bytes` and `channel_bytes`, then
# SIGTERM. DELETE=1: delete every channel before each stop, so the next start has nothing to
# read back. HOLDFAST_ENV="_RJEM_MALLOC_CONF=narenas:1" and the like reach the server.
#
#   bench/restart_rss.sh                      # START=3 PUBLISHES=60000 DELETE=0
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT
START=${START:-3}
PUBLISHES=${PUBLISHES:-60000}
DELETE=${DELETE:-0}
need curl curl
need jq jq
need ss iproute2
BIN=$(holdfast_bin)
PORT=$(free_port)
log "load average: $(cut -d" " -f1-3 /proc/loadavg)"
printf '%-6s %10s %10s %10s %10s %14s %14s\n' start rss_kib after_kib anon_kib file_kib history_bytes channel_bytes
for n in $(seq "$START"); do
    start_holdfast "$BIN" "$PORT" --history-store disk --data-dir "$WORK/data" --durability batch \
        --history-messages 100 --keepalive-requests 1000000 --drain-seconds 0
    until curl -s "http://127.0.0.1:$PORT/admin/stats" | jq -e .store.recovered.read_back >/dev/null; do sleep 0.1; done
    started=$(awk '/^VmRSS:/ { print $2 }' "/proc/$SERVER_PID/status")
    "$BIN" bench publish --json --server "127.0.0.1:$PORT" --channels 100 --prefix soak \
        --messages "$PUBLISHES" --connections 4 --size 40 >/dev/null
    sleep 2
    stats=$(curl -s "http://127.0.0.1:$PORT/admin/stats")
    status=/proc/$SERVER_PID/status
    printf '%-6s %10s %10s %10s %10s %14s %14s\n' "$n" "$started" "$(awk '/^VmRSS:/ { print $2 }' "$status")" \
        "$(awk '/^RssAnon:/ { print $2 }' "$status")" "$(awk '/^RssFile:/ { print $2 }' "$status")" \
        "$(jq .history_bytes <<<"$stats")" "$(jq .channel_bytes <<<"$stats")"
    if [ "$DELETE" = 1 ]; then
        for c in $(seq 0 99); do curl -s -o /dev/null -X DELETE "http://127.0.0.1:$PORT/pub/soak$c"; done
    fi
    stop_pid "$SERVER_PID"
done
echo "load average at the end: $(cut -d" " -f1-3 /proc/loadavg)"
