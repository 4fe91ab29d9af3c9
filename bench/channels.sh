#!/usr/bin/env bash
# Server memory on the publish side (Holdfast only): channels that hold nothing must go, and
# publishing must not grow bookkeeping beyond what the history bounds keep.
#
# 1. Many channels: a fresh server with `history_seconds = 2`; RSS before; one message to each of
#    CHANNELS channels (`holdfast bench publish`, CONNECTIONS pipelined keep-alive connections),
#    RSS sampled every 0.2 s for the peak; then wait until /admin/stats shows no channel left, let
#    jemalloc's decay return the pages (SETTLE s), RSS after. Goal: after - before <= 20 MiB.
#    Publishing a million channels takes longer than 2 s on a small machine, so the first ones
#    expire while the last are published; HISTORY_SECONDS=60 keeps them all at once at the peak.
# 2. One channel behind an old message: a fresh server (history_seconds = 3600); one message to
#    `old`, held for the whole run; a warm-up of WARMUP messages to `hot0` (fills its history of
#    1,000 and the allocator's caches); RSS before; MESSAGES more to `hot0`; RSS after (SETTLE s
#    later). Goal: after - before < 1 MiB.
#
# Environment (all optional):
#   CHANNELS=1000000      channels of part 1
#   HISTORY_SECONDS=2     history_seconds of part 1
#   MESSAGES=2000000      messages to one channel in part 2
#   WARMUP=20000          warm-up messages of part 2
#   CONNECTIONS=8         publishing connections
#   SETTLE=10             seconds allowed for the allocator to give pages back
#   HOLDFAST_BIN=path     use this binary instead of building
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT

CHANNELS=${CHANNELS:-1000000}
HISTORY_SECONDS=${HISTORY_SECONDS:-2}
MESSAGES=${MESSAGES:-2000000}
WARMUP=${WARMUP:-20000}
CONNECTIONS=${CONNECTIONS:-8}
SETTLE=${SETTLE:-10}
# Every request of the run on its connection: the server must not close them midway.
KEEPALIVE=(--keepalive-requests 4000000000)

need curl curl
need jq jq
need ss iproute2
BIN=$(holdfast_bin)
log "load average: $(cut -d" " -f1-3 /proc/loadavg)"

stats() { curl -fs "http://127.0.0.1:$1/admin/stats"; }
mib() { awk -v kb="$1" 'BEGIN { printf "%.1f", kb / 1024 }'; }

# Runs `holdfast bench publish` (arguments after the port) while sampling the server's RSS;
# sets PEAK_KB to the highest sample.
publish_sampling() {
    local port=$1
    shift
    "$BIN" bench publish --json --server "127.0.0.1:$port" --connections "$CONNECTIONS" "$@" >"$WORK/publish.json" &
    local client=$!
    STARTED_PIDS+=("$client")
    PEAK_KB=$(rss_kb "$SERVER_PID")
    while kill -0 "$client" 2>/dev/null; do
        local now
        now=$(rss_kb "$SERVER_PID")
        [ "$now" -le "$PEAK_KB" ] || PEAK_KB=$now
        sleep 0.2
    done
    wait "$client" || die "bench publish failed: $(cat "$WORK/publish.json")"
    log "  client: $(cat "$WORK/publish.json")"
}

# --- 1. many channels, expired ---
port=$(free_port)
start_holdfast "$BIN" "$port" --history-seconds "$HISTORY_SECONDS" "${KEEPALIVE[@]}"
sleep 1
before=$(rss_kb "$SERVER_PID")
log "part 1: $CHANNELS channels, history_seconds = $HISTORY_SECONDS; RSS before $(mib "$before") MiB"
publish_sampling "$port" --channels "$CHANNELS" --prefix c
full=$(stats "$port")
log "  just after: channels $(jq .channels <<<"$full"), channel_bytes $(jq .channel_bytes <<<"$full"), history_bytes $(jq .history_bytes <<<"$full")"
deadline=$((SECONDS + HISTORY_SECONDS + 60))
until [ "$(stats "$port" | jq .channels)" = 0 ]; do
    [ "$SECONDS" -lt "$deadline" ] || die "channels still there 60 s after they expired: $(stats "$port")"
    sleep 0.2
done
sleep "$SETTLE"
after=$(rss_kb "$SERVER_PID")
empty=$(stats "$port")
log "  all gone; $SETTLE s later: channel_bytes $(jq .channel_bytes <<<"$empty"), RSS $(mib "$after") MiB"
p1_at_end=$(jq .channels <<<"$full") p1_before=$before p1_peak=$PEAK_KB p1_after=$after p1_channel_bytes=$(jq .channel_bytes <<<"$empty")
p1_rate=$(jq .per_second "$WORK/publish.json")
stop_pid "$SERVER_PID"

# --- 2. one channel behind an old message ---
port=$(free_port)
start_holdfast "$BIN" "$port" "${KEEPALIVE[@]}"
curl -fs -o /dev/null -X POST --data-binary 'held all along' "http://127.0.0.1:$port/pub/old"
"$BIN" bench publish --json --server "127.0.0.1:$port" --connections "$CONNECTIONS" --channels 1 --prefix hot \
    --messages "$WARMUP" >/dev/null
sleep 2
before=$(rss_kb "$SERVER_PID")
log "part 2: $MESSAGES messages to one channel behind one old message; RSS before $(mib "$before") MiB"
publish_sampling "$port" --channels 1 --prefix hot --messages "$MESSAGES"
sleep "$SETTLE"
after=$(rss_kb "$SERVER_PID")
held=$(stats "$port")
[ "$(curl -fs "http://127.0.0.1:$port/pub/old" | jq .messages)" = 1 ] || die "the old message is gone"
log "  after: channel_bytes $(jq .channel_bytes <<<"$held"), history_bytes $(jq .history_bytes <<<"$held"), RSS $(mib "$after") MiB"
p2_before=$before p2_peak=$PEAK_KB p2_after=$after p2_rate=$(jq .per_second "$WORK/publish.json")
stop_pid "$SERVER_PID"

log "load average: $(cut -d" " -f1-3 /proc/loadavg)"
p1_growth=$((p1_after - p1_before))
p2_growth=$((p2_after - p2_before))
verdict() { if [ "$1" -le "$2" ]; then echo met; else echo MISSED; fi; }
cat <<EOF

| run | RSS before | peak | after | after - before | goal | verdict | publishes/s |
|---|---:|---:|---:|---:|---|---|---:|
| $CHANNELS channels, 1 message each, history_seconds = $HISTORY_SECONDS ($p1_at_end left when the last was published) | $(mib "$p1_before") MiB | $(mib "$p1_peak") MiB | $(mib "$p1_after") MiB | $(mib "$p1_growth") MiB | <= 20 MiB | $(verdict "$p1_growth" 20480) | $p1_rate |
| $MESSAGES messages to 1 channel, 1 old message held | $(mib "$p2_before") MiB | $(mib "$p2_peak") MiB | $(mib "$p2_after") MiB | $p2_growth KiB | < 1 MiB | $(verdict "$p2_growth" 1023) | $p2_rate |

channel_bytes once all channels had gone: $p1_channel_bytes
EOF
