#!/usr/bin/env bash
# The same fan-out workload over each Holdfast transport, side by side: `holdfast bench
# transports` against a fresh Holdfast (release build) per repetition. For each transport (its own
# channel): SUBSCRIBERS subscribers, MESSAGES messages of SIZE bytes published in a burst (or at
# RATE per second); deliveries/s, latency p50/p99/max, bytes read by the subscribers per delivery
# (framing, envelopes, poll answers' heads), and the server's CPU seconds over the phase (from
# /proc/PID/stat; the script passes --server-pid) and per delivery. The summary gives medians.
#
# `poll` is a short poll every POLL_INTERVAL_MS: its latency is about half the interval by design,
# and its bytes per message include an answer's head per poll.
#
# Environment (all optional):
#   REPS=3  SUBSCRIBERS=1000  MESSAGES=100  RATE=0 (a burst)  SIZE=100  POLL_INTERVAL_MS=100
#   TRANSPORTS="sse,ws,ws-raw,stream,iframe,longpoll,poll"
#   PROCS=1              client processes (--procs) for the subscribers
#   HOLDFAST_ARGS=""     extra `holdfast serve` flags
#   HOLDFAST_BIN=path    use this binary instead of building
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT

REPS=${REPS:-3}
SUBSCRIBERS=${SUBSCRIBERS:-1000}
MESSAGES=${MESSAGES:-100}
RATE=${RATE:-0}
SIZE=${SIZE:-100}
POLL_INTERVAL_MS=${POLL_INTERVAL_MS:-100}
TRANSPORTS=${TRANSPORTS:-"sse,ws,ws-raw,stream,iframe,longpoll,poll"}
PROCS=${PROCS:-1}
HOLDFAST_ARGS=${HOLDFAST_ARGS:-}

need curl curl
need jq jq
need ss iproute2
BIN=$(holdfast_bin)
log "load average: $(cut -d" " -f1-3 /proc/loadavg)"

declare -A DPS P50 P99 MAX BPM CPU CPD LOST
FMT='%-9s %4s %6s %10s %9s %9s %9s %6s %8s %8s %6s\n'
# shellcheck disable=SC2059 # the format is ours
printf "$FMT" transport rep subs deliv/s p50_ms p99_ms max_ms B/msg srv_cpu us/deliv lost
for rep in $(seq "$REPS"); do
    port=$(free_port)
    # shellcheck disable=SC2086 # HOLDFAST_ARGS is a list of flags
    start_holdfast "$BIN" "$port" $HOLDFAST_ARGS
    out=$(timeout 900 "$BIN" bench transports --json --server "127.0.0.1:$port" --server-pid "$SERVER_PID" \
        --transports "$TRANSPORTS" --subscribers "$SUBSCRIBERS" --messages "$MESSAGES" --rate "$RATE" --size "$SIZE" \
        --poll-interval-ms "$POLL_INTERVAL_MS" --procs "$PROCS" 2>&1) || log "rep $rep: the client reported a failure (loss?)"
    stop_pid "$SERVER_PID"
    lines=$(grep '"phase":"transport"' <<<"$out") || die "rep $rep: no result: $out"
    while read -r line; do
        t=$(jq -r .transport <<<"$line")
        read -r subs dps p50 p99 max bpm cpu cpd lost < <(jq -r \
            '[.subscribers, (.deliveries_per_s | floor), .p50_ms, .p99_ms, .max_ms, .bytes_per_delivery,
              .server_cpu_s, .server_cpu_us_per_delivery, (.lost + .extra)] | map(. // "nan") | join(" ")' <<<"$line")
        # shellcheck disable=SC2059
        printf "$FMT" "$t" "$rep" "$subs" "$dps" "$p50" "$p99" "$max" "$bpm" "$cpu" "$cpd" "$lost"
        DPS[$t]+="$dps " P50[$t]+="$p50 " P99[$t]+="$p99 " MAX[$t]+="$max " BPM[$t]+="$bpm " CPU[$t]+="$cpu "
        CPD[$t]+="$cpd " LOST[$t]+="$lost "
    done <<<"$lines"
done

echo
echo "summary (medians of $REPS; $SUBSCRIBERS subscribers, $MESSAGES messages of $SIZE B at $([ "$RATE" = 0 ] && echo 'full speed' || echo "$RATE/s"); lost = the largest)"
# shellcheck disable=SC2059
printf "$FMT" transport reps subs deliv/s p50_ms p99_ms max_ms B/msg srv_cpu us/deliv lost
for t in ${TRANSPORTS//,/ }; do
    [ -n "${DPS[$t]:-}" ] || continue
    # shellcheck disable=SC2059,SC2086 # word lists
    printf "$FMT" "$t" "$REPS" "$SUBSCRIBERS" "$(median ${DPS[$t]})" "$(median ${P50[$t]})" "$(median ${P99[$t]})" \
        "$(median ${MAX[$t]})" "$(median ${BPM[$t]})" "$(median ${CPU[$t]})" "$(median ${CPD[$t]})" \
        "$(printf '%s\n' ${LOST[$t]} | sort -g | tail -1)"
done
echo "load average at the end: $(cut -d" " -f1-3 /proc/loadavg)"
