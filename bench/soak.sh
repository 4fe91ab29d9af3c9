#!/usr/bin/env bash
# Soak: one long run of Holdfast with the disk history store under steady load, churn and one
# restart, to show that memory and descriptors stay flat and that no message is lost silently.
#
#   bench/soak.sh                                        # 1 hour, 10,000 subscribers (~62 min)
#   SOAK_SECONDS=120 SUBSCRIBERS=500 OUT=/tmp/soak bench/soak.sh      # a smoke test (~3 min)
#
# - Server: this tree's release `holdfast serve --history-store disk --data-dir <fresh dir>
#   --durability batch --history-messages 100 --drain-seconds 5 --shutdown-timeout 10` on a free
#   port of 127.0.0.1. At 0.5 messages/s per channel, 100 messages are the last 200 s of a channel:
#   40 times the restart's ~6 s and the churn's pauses (<= 3 s), and full after ~3.3 min, before
#   the first window compared, so what the history holds is flat from then on (a history larger
#   than the run would grow all hour, by design, and hide a leak in that growth).
# - Subscribers: SUBSCRIBERS over CHANNELS channels (`soak0`…), a quarter each on SSE
#   (`Accept: text/event-stream`, resumes with `Last-Event-ID`), WebSocket, long poll and NDJSON
#   stream (`?cursor=`), every channel with all four; bench/soak_client.py `sub` (Python asyncio,
#   no HTTP or WebSocket library, so nothing shared with the server) in CLIENTS processes (each
#   process here may hold at most 20,000 descriptors; the server holds the subscribers' sockets).
#   Churn: CHURN_PER_MIN % of the subscribers a minute, spread over it, close and reconnect after
#   0.2-3 s with their last cursor. Every subscriber checks the publisher's sequence numbers: each
#   message of its channel once, in order, from the first it saw; a jump after a `holdfast.gap`
#   notice is "told", one without is a silent loss.
# - Publisher: RATE messages/s in all (`{"ch":c,"n":n,"a":attempt}`, JSON), round robin over the
#   channels, for SOAK_SECONDS; publishes that fail while the server restarts are retried in order.
# - Restart at SOAK_SECONDS / 2: SIGTERM (graceful drain: every streaming subscriber gets its
#   `shutdown` notice, long polls are answered), wait for the process to exit, start it again on the
#   same port and data directory. Every subscriber reconnects with its cursor.
# - Every 10 s: the server's VmRSS with its RssAnon and RssFile parts (/proc/PID/status), open
#   descriptors (/proc/PID/fd), `connections_open`, `store.disk_bytes` and `history_bytes` of
#   /admin/stats, into samples.csv.
# - At the end (SETTLE s after the last publish, churn stopped): the table (markdown) of RSS and
#   descriptor medians over minutes 5-10, 25-30 and 50-60 of the hour (the same fractions of a
#   shorter run) and their growth against the < 5 % goal, and per transport: messages expected,
#   delivered, duplicates, out of order, told, silent losses, missing at the end; the plot of RSS and
#   descriptors over time with the restart marked (OUT/soak.png) and the samples (OUT/soak-samples.csv;
#   cpu_ticks: the server's user + system time so far, in clock ticks).
#
# Environment (all optional):
#   SOAK_SECONDS=3600 SUBSCRIBERS=10000 RATE=50 CHURN_PER_MIN=5 CHANNELS=100 CLIENTS=4
#   HISTORY_MESSAGES=100  SETTLE=20  SAMPLE_EVERY=10
#   RESTART=1             0: no restart (the same windows, one process: what age alone does)
#   OUT=bench             where soak.png, soak-samples.csv and soak-report.md go
#   KEEP=dir              keep the work directory's files there (server log, client logs, tallies)
#   SOAK_VENV=/tmp/holdfast-soak-venv   the venv with matplotlib (created on first use)
#   HOLDFAST_BIN=path     use this binary instead of building
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap 'keep_work; cleanup' EXIT

SOAK_SECONDS=${SOAK_SECONDS:-3600}
SUBSCRIBERS=${SUBSCRIBERS:-10000}
RATE=${RATE:-50}
CHURN_PER_MIN=${CHURN_PER_MIN:-5}
CHANNELS=${CHANNELS:-100}
CLIENTS=${CLIENTS:-4}
HISTORY_MESSAGES=${HISTORY_MESSAGES:-100}
SETTLE=${SETTLE:-20}
RESTART=${RESTART:-1}
SAMPLE_EVERY=${SAMPLE_EVERY:-10}
OUT=${OUT:-$ROOT/bench}
KEEP=${KEEP:-}
SOAK_VENV=${SOAK_VENV:-/tmp/holdfast-soak-venv}
CLIENT="$ROOT/bench/soak_client.py"

keep_work() {
    if [ -n "$KEEP" ] && [ -d "$WORK" ]; then
        mkdir -p "$KEEP" && cp -r "$WORK"/. "$KEEP"/ 2>/dev/null || true
        rm -rf "$KEEP/data"
    fi
}

need curl curl
need jq jq
need ss iproute2
need python3 python3
BIN=$(holdfast_bin)
if [ ! -x "$SOAK_VENV/bin/python" ] || ! "$SOAK_VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
    log "creating $SOAK_VENV (matplotlib, for the plot)"
    python3 -m venv "$SOAK_VENV" && "$SOAK_VENV/bin/pip" install -q matplotlib >&2 || die "pip install matplotlib failed"
fi
PY="$SOAK_VENV/bin/python"
mkdir -p "$OUT"
log "load average: $(cut -d" " -f1-3 /proc/loadavg)"
log "soak: ${SOAK_SECONDS}s, $SUBSCRIBERS subscribers on $CHANNELS channels in $CLIENTS processes, $RATE msg/s, churn $CHURN_PER_MIN %/min"

PORT=$(free_port)
DATA="$WORK/data"
HOLDFAST_ENV="RUST_LOG=info"
serve() {
    start_holdfast "$BIN" "$PORT" --history-store disk --data-dir "$DATA" --durability batch \
        --history-messages "$HISTORY_MESSAGES" --drain-seconds 5 --shutdown-timeout 10
    echo "$SERVER_PID" >"$WORK/server.pid"
}
serve
event() { echo "$1 $EPOCHREALTIME" >>"$WORK/events"; }

# Samples every SAMPLE_EVERY s; follows the server across the restart (server.pid).
echo "t,pid,rss_kb,fds,cpu_ticks,connections_open,disk_bytes,history_bytes,anon_kb,file_kb" >"$WORK/samples.csv"
sampler() {
    local pid rss fds cpu stats t
    while :; do
        t=$EPOCHREALTIME
        pid=$(cat "$WORK/server.pid")
        # VmRSS, and its anonymous and file-backed parts (the binary's pages are ~10 MiB of it).
        rss=$(awk '/^VmRSS:/ { r = $2 } /^RssAnon:/ { a = $2 } /^RssFile:/ { f = $2 } END { print r "," a "," f }' \
            "/proc/$pid/status" 2>/dev/null || true)
        fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l || true)
        cpu=$(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || true)
        stats=$(curl -s -m 3 "http://127.0.0.1:$PORT/admin/stats" |
            jq -r '[.connections_open, .store.disk_bytes, .history_bytes] | @csv' 2>/dev/null || echo ",,")
        echo "$t,$pid,${rss%%,*},$fds,$cpu,$stats,${rss#*,}" >>"$WORK/samples.csv"
        sleep "$SAMPLE_EVERY"
    done
}
sampler &
STARTED_PIDS+=("$!")

# Subscribers: CLIENTS processes, ids split evenly.
SUB_PIDS=()
per=$(((SUBSCRIBERS + CLIENTS - 1) / CLIENTS))
for k in $(seq 0 $((CLIENTS - 1))); do
    first=$((k * per))
    count=$((SUBSCRIBERS - first < per ? SUBSCRIBERS - first : per))
    [ "$count" -gt 0 ] || break
    "$PY" "$CLIENT" sub --server "127.0.0.1:$PORT" --first "$first" --count "$count" --channels "$CHANNELS" \
        --churn-per-min "$CHURN_PER_MIN" --out "$WORK/subs-$k.json" >"$WORK/sub-$k.out" 2>"$WORK/sub-$k.log" &
    SUB_PIDS+=("$!")
    STARTED_PIDS+=("$!")
done
deadline=$((SECONDS + 300))
for k in "${!SUB_PIDS[@]}"; do
    until grep -qs '^ready' "$WORK/sub-$k.out"; do
        kill -0 "${SUB_PIDS[$k]}" 2>/dev/null || die "subscriber process $k exited: $(cat "$WORK/sub-$k.log")"
        [ "$SECONDS" -lt "$deadline" ] || die "subscribers did not all connect"
        sleep 0.5
    done
done
log "subscribers connected: $(curl -s "http://127.0.0.1:$PORT/admin/stats" | jq -c .subscribers)"

# The publisher, and the restart at the half.
event start
"$PY" "$CLIENT" pub --server "127.0.0.1:$PORT" --channels "$CHANNELS" --rate "$RATE" --seconds "$SOAK_SECONDS" \
    --out "$WORK/pub.json" 2>"$WORK/pub.log" &
PUB_PID=$!
STARTED_PIDS+=("$PUB_PID")
HALF=$((SOAK_SECONDS / 2))
if [ "$RESTART" = 1 ]; then
    while [ "$(awk -v s="$(awk '$1 == "start" { print $2 }' "$WORK/events")" -v n="$EPOCHREALTIME" 'BEGIN { print (n - s >= '"$HALF"') }')" = 0 ]; do
        kill -0 "$PUB_PID" 2>/dev/null || die "the publisher exited: $(cat "$WORK/pub.log")"
        sleep 1
    done
    OLD_PID=$SERVER_PID
    log "restart: SIGTERM to $OLD_PID (subscribers: $(curl -s "http://127.0.0.1:$PORT/admin/stats" | jq -c .subscribers))"
    event term
    kill -TERM "$OLD_PID"
    for _ in $(seq 300); do kill -0 "$OLD_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$OLD_PID" 2>/dev/null; then
        log "WARNING: the server had not exited 30 s after SIGTERM: SIGKILL"
        kill -KILL "$OLD_PID"
fi
wait "$OLD_PID" 2>/dev/null && RC=0 || RC=$?
event exit
keep=()
for p in "${STARTED_PIDS[@]}"; do [ "$p" = "$OLD_PID" ] || keep+=("$p"); done
STARTED_PIDS=("${keep[@]}")
serve
event up
log "restarted as $SERVER_PID after $(awk '$1 == "term" { a = $2 } $1 == "up" { b = $2 } END { printf "%.1f", b - a }' "$WORK/events") s (old exit status $RC)"
log "store: $(curl -s "http://127.0.0.1:$PORT/admin/stats" | jq -c .store.recovered)"
fi

wait "$PUB_PID" || die "the publisher failed: $(cat "$WORK/pub.log")"
event end
log "publisher done: $(jq -c '{offered, published, errors, ambiguous, seconds}' "$WORK/pub.json"); settling ${SETTLE}s"
for p in "${SUB_PIDS[@]}"; do kill -USR1 "$p"; done
sleep "$SETTLE"
for p in "${SUB_PIDS[@]}"; do kill -TERM "$p"; done
for p in "${SUB_PIDS[@]}"; do
    for _ in $(seq 600); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    wait "$p" || log "WARNING: subscriber process $p: exit status $?"
done
for k in "${!SUB_PIDS[@]}"; do [ -s "$WORK/subs-$k.json" ] || die "subscriber process $k wrote no tallies: $(tail -5 "$WORK/sub-$k.log")"; done
grep -h 'history store\|recovered\|ERROR\|WARN' "$WORK/holdfast.log" | head -20 >&2 || true

echo
WHEN=$([ "$RESTART" = 1 ] && echo "restart at ${HALF}s" || echo "no restart")
echo "## soak: ${SOAK_SECONDS}s, $SUBSCRIBERS subscribers, $RATE msg/s, churn $CHURN_PER_MIN %/min, $WHEN"
echo
"$PY" "$CLIENT" report --dir "$WORK" --seconds "$SOAK_SECONDS" --plot "$OUT/soak.png" \
    --title "Holdfast soak: $SUBSCRIBERS subscribers, $RATE msg/s, churn $CHURN_PER_MIN %/min, ${WHEN/%s/ s} (grey: compared windows)" | tee "$OUT/soak-report.md"
cp "$WORK/samples.csv" "$OUT/soak-samples.csv"
echo
[ "$RESTART" = 1 ] && echo "restart: $(awk '$1 == "term" { a = $2 } $1 == "exit" { b = $2 } $1 == "up" { c = $2 } END { printf "SIGTERM to exit %.1f s, to serving again %.1f s", b - a, c - a }' "$WORK/events")"
echo "plot: $OUT/soak.png, samples: $OUT/soak-samples.csv"
echo "load average at the end: $(cut -d" " -f1-3 /proc/loadavg)"
