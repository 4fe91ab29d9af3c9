#!/usr/bin/env bash
# Server memory per idle keep-alive connection: Holdfast (release build) and nginx-light.
#
# For each server, N and repetition: start a fresh server on a free port, read its RSS
# (/proc/PID/smaps_rollup; nginx: master + worker), open N keep-alive connections with one
# `GET /healthz` each (`holdfast bench idle`), wait until they are all idle (Holdfast: parked, per
# /admin/stats; nginx: "Waiting" in stub_status), read RSS again, and report (after - before) / N.
#
# Environment (all optional):
#   NS="10000 18000"      connection counts (each process may hold at most 20,000 descriptors)
#   REPS=3                repetitions of each (server, N); the summary gives medians
#   SERVERS="holdfast nginx"
#   HOLDFAST_BIN=path     use this binary instead of building (allocators.sh)
#   HOLDFAST_ENV="K=V"    extra environment for the Holdfast server only
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT

NS=${NS:-"10000 18000"}
REPS=${REPS:-3}
SERVERS=${SERVERS:-"holdfast nginx"}
# What nginx gets for idle connections (and Holdfast the same keep-alive timeout).
NGINX_IDLE="keepalive_timeout 300; keepalive_requests 100000;"

need curl curl
need jq jq
need ss iproute2
case " $SERVERS " in *" nginx "*) need nginx nginx-light ;; esac
BIN=$(holdfast_bin)
log "load average: $(cut -d" " -f1-3 /proc/loadavg)"


# How many connections the server holds idle now.
idle_count() {
    case $1 in
        holdfast) curl -fs "http://127.0.0.1:$2/admin/stats" | sed -n 's/.*"connections_parked":\([0-9]*\).*/\1/p' ;;
        nginx) curl -fs "http://127.0.0.1:$2/nginx_status" | sed -n 's/.*Waiting: \([0-9]*\).*/\1/p' ;;
    esac
}

# run_once SERVER N: sets R_BEFORE and R_AFTER (KiB) and R_PER (bytes per connection). Runs in
# this shell (not a subshell) so the EXIT trap knows every process it starts.
run_once() {
    local server=$1 n=$2 port before after client deadline out
    port=$(free_port)
    case $server in
        holdfast) start_holdfast "$BIN" "$port" --keepalive-timeout 300s ;;
        nginx) start_nginx "$port" "$NGINX_IDLE" ;;
    esac
    sleep 0.5
    before=$(tree_rss_kb "$SERVER_PID")

    # A file per run: polling a reused one could read the previous client's lines.
    out="$WORK/client-$server-$n-$RANDOM.out"
    "$BIN" bench idle --json --server "127.0.0.1:$port" --connections "$n" >"$out" 2>"$out.err" &
    client=$!
    STARTED_PIDS+=("$client")
    deadline=$((SECONDS + 120))
    until grep -qs '"phase":"open"' "$out"; do
        kill -0 "$client" 2>/dev/null || die "client exited: $(cat "$out" "$out.err")"
        [ "$SECONDS" -lt "$deadline" ] || die "client did not finish opening"
        sleep 0.2
    done
    [ "$(jq -r 'select(.phase == "open") | .open' "$out")" = "$n" ] ||
        die "not all connections opened: $(cat "$out")"

    # Holdfast parks a connection after park_after (1 s); poll until all are, 15 s at most.
    deadline=$((SECONDS + 15))
    until [ "$(idle_count "$server" "$port")" = "$n" ]; do
        [ "$SECONDS" -lt "$deadline" ] || die "$server: only $(idle_count "$server" "$port") of $n idle"
        sleep 0.2
    done
    sleep 1 # let anything freed on the way settle
    after=$(tree_rss_kb "$SERVER_PID")

    stop_pid "$client"
    [ "$(jq -r 'select(.phase == "held") | .open' "$out")" = "$n" ] ||
        die "$server closed connections during the hold: $(tail -1 "$out")"
    stop_pid "$SERVER_PID"
    R_BEFORE=$before R_AFTER=$after
    R_PER=$(awk -v b="$before" -v a="$after" -v n="$n" 'BEGIN { printf "%.0f\n", (a - b) * 1024 / n }')
}

declare -A PER_CONN BEFORE AFTER
printf '%-9s %6s %4s %10s %10s %8s\n' server N rep before_KiB after_KiB B/conn
for n in $NS; do
    for rep in $(seq "$REPS"); do
        for server in $SERVERS; do
            run_once "$server" "$n"
            printf '%-9s %6s %4s %10s %10s %8s\n' "$server" "$n" "$rep" "$R_BEFORE" "$R_AFTER" "$R_PER"
            PER_CONN[$server.$n]+="$R_PER "
            BEFORE[$server.$n]+="$R_BEFORE "
            AFTER[$server.$n]+="$R_AFTER "
        done
    done
done

echo
echo "summary (medians of $REPS; bytes of server RSS per idle keep-alive connection)"
printf '%-9s %6s %12s %12s %8s\n' server N before_KiB after_KiB B/conn
for n in $NS; do
    for server in $SERVERS; do
        # shellcheck disable=SC2086 # word lists
        printf '%-9s %6s %12s %12s %8s\n' "$server" "$n" \
            "$(median ${BEFORE[$server.$n]})" "$(median ${AFTER[$server.$n]})" "$(median ${PER_CONN[$server.$n]})"
    done
done
if [ -n "${PER_CONN[holdfast.18000]:-}" ]; then
    # shellcheck disable=SC2086
    h=$(median ${PER_CONN[holdfast.18000]})
    verdict=$([ "$h" -le 512 ] && echo met || echo MISSED)
    echo "goal <= 512 B per idle connection at 18000: $verdict ($h B)"
fi
echo "load average at the end: $(cut -d" " -f1-3 /proc/loadavg)"
