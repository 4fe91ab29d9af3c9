#!/usr/bin/env bash
# Mass close: N SSE subscribers of one channel, then `DELETE /pub/ch` (mode `delete`) or
# `POST /admin/disconnect?channel=ch` (mode `disconnect`); how long the server takes to close them
# all, and how long until every client has seen its end of stream.
#
# For each repetition, mode and server: a fresh server (RUST_LOG=info, JSON log lines); N
# subscribers opened with `holdfast bench idle --path '/sub/ch?transport=sse' --until-closed`
# (CLIENTS processes, N split evenly; each reads its connections until the server closes them);
# once the server counts N SSE subscribers and SETTLE s have passed, the request is written on a
# connection opened beforehand (bash /dev/tcp, the clock read with $EPOCHREALTIME just before the
# write, so no process start is timed). Then:
#   server ms   from the shards' log lines `… subscribers closed channel=ch shard=S closed=C
#               took_ms=T` (one per shard that held subscribers): the sum of T over shards (CPU
#               time on the push threads) and the largest T (the shards run in parallel, so this
#               is the server's wall time). The baseline binary logs no such line (n/a).
#   cpu_ms      the sum over shards of `cpu_ms` (the push threads' own CPU time on the close:
#               wall time minus what other processes, such as the clients, took of the core).
#   answer ms   t0 to the first line of the request's answer (200).
#   EOF ms      t0 to the first, median (one client) and last end of stream seen by the clients
#               (their wall clock, the same machine's).
#   notices     connections that got a `holdfast.closed` event before their end of stream.
# One `GET /healthz` (curl) is sent right after the request: its time shows whether the server
# answers other requests while it closes (time_total, ms).
#
# Servers (SERVERS): `pt1`, `pt2`, … this tree with `--push-threads 1`, `2`, …; `holdfast` this
# tree with its defaults; `baseline` another Holdfast binary (baseline_bin in lib.sh; a8894f4: one
# push shard, no log line).
#
# Environment (all optional):
#   N=10000  REPS=3  MODES="delete disconnect"  SERVERS="pt1 pt2 baseline"
#   CLIENTS=1            client processes (each holds N/CLIENTS; at most MAX_PER_CLIENT each)
#   MAX_PER_CLIENT=19000 SETTLE=1
#   HOLDFAST_BIN=path    BASELINE_BIN=path   KEEP_LOGS=dir (each run's server log and client lines)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT

N=${N:-10000}
REPS=${REPS:-3}
MODES=${MODES:-"delete disconnect"}
SERVERS=${SERVERS:-"pt1 pt2 baseline"}
CLIENTS=${CLIENTS:-1}
MAX_PER_CLIENT=${MAX_PER_CLIENT:-19000}
SETTLE=${SETTLE:-1}
KEEP_LOGS=${KEEP_LOGS:-}
CHANNEL=ch
[ -z "$KEEP_LOGS" ] || mkdir -p "$KEEP_LOGS"
[ $(((N + CLIENTS - 1) / CLIENTS)) -le "$MAX_PER_CLIENT" ] ||
    CLIENTS=$(((N + MAX_PER_CLIENT - 1) / MAX_PER_CLIENT))

need curl curl
need jq jq
need ss iproute2
BIN=$(holdfast_bin)
case " $SERVERS " in *" baseline "*) BASE_BIN=$(baseline_bin) ;; esac
log "load average: $(cut -d" " -f1-3 /proc/loadavg)"

sse_count() { curl -fs "http://127.0.0.1:$1/admin/stats" | jq -r '.subscribers.sse'; }

# Milliseconds between two $EPOCHREALTIME-style readings (Unix seconds with a fraction).
ms_between() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == "null") print "nan"; else printf "%.1f\n", (b - a) * 1000 }'; }

# run_once SERVER MODE: sets R_SUM R_MAX R_SHARDS R_LOGGED R_ANSWER R_FIRST R_P50 R_LAST R_NOTICES R_HEALTH.
run_once() {
    local server=$1 mode=$2 port bin flags=() clients=() outs=() i take left=$N out deadline fd
    local request t0 t1 status
    port=$(free_port)
    case $server in
        baseline) bin=$BASE_BIN ;;
        holdfast) bin=$BIN ;;
        pt*) bin=$BIN flags=(--push-threads "${server#pt}") ;;
        *) die "unknown server $server" ;;
    esac
    local log_file="$WORK/server-$server-$mode-$rep.log"
    # HOLDFAST_LOG_FORMAT: read by this tree only (the baseline has no JSON logs and ignores it).
    env RUST_LOG=info HOLDFAST_LOG_FORMAT=json "$bin" serve --listen "127.0.0.1:$port" "${flags[@]}" \
        >"$log_file" 2>&1 &
    SERVER_PID=$!
    STARTED_PIDS+=("$SERVER_PID")
    wait_healthy "$port"

    for i in $(seq "$CLIENTS"); do
        take=$((left / (CLIENTS - i + 1)))
        left=$((left - take))
        out="$WORK/client-$server-$mode-$rep-$i.out"
        "$BIN" bench idle --json --server "127.0.0.1:$port" --connections "$take" --path "/sub/$CHANNEL?transport=sse" \
            --until-closed --hold 120 >"$out" 2>"$out.err" &
        clients+=("$!")
        STARTED_PIDS+=("$!")
        outs+=("$out")
    done
    deadline=$((SECONDS + 120))
    for i in "${!clients[@]}"; do
        wait_client_open "${clients[$i]}" "${outs[$i]}" "$deadline"
        [ "$(jq -r 'select(.phase == "open") | .failed' "${outs[$i]}")" = 0 ] ||
            die "$server: subscribers failed to open: $(cat "${outs[$i]}")"
    done
    until [ "$(sse_count "$port")" = "$N" ]; do
        [ "$SECONDS" -lt "$deadline" ] || die "$server: only $(sse_count "$port") of $N SSE subscribers"
        sleep 0.2
    done
    sleep "$SETTLE"

    case $mode in
        delete) request="DELETE /pub/$CHANNEL HTTP/1.1" ;;
        disconnect) request="POST /admin/disconnect?channel=$CHANNEL HTTP/1.1" ;;
        *) die "unknown mode $mode" ;;
    esac
    exec {fd}<>"/dev/tcp/127.0.0.1/$port"
    t0=$EPOCHREALTIME
    printf '%s\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n' "$request" >&"$fd"
    read -r -t 30 -u "$fd" status || die "$server $mode: no answer to $request"
    t1=$EPOCHREALTIME
    R_HEALTH=$(curl -fs -o /dev/null -w '%{time_total}' "http://127.0.0.1:$port/healthz" |
        awk '{ printf "%.1f\n", $1 * 1000 }') || R_HEALTH=failed
    timeout 10 cat <&"$fd" >"$WORK/answer" || true
    exec {fd}>&-
    case $status in "HTTP/1.1 200"*) ;; *) die "$server $mode: answered $status $(cat "$WORK/answer")" ;; esac

    for i in "${!clients[@]}"; do
        # Each client exits once all its connections have ended (or after its --hold).
        for _ in $(seq 600); do kill -0 "${clients[$i]}" 2>/dev/null || break; sleep 0.1; done
        stop_pid "${clients[$i]}"
        grep -qs '"phase":"closed"' "${outs[$i]}" || die "$server $mode: client $i reported nothing: $(cat "${outs[$i]}.err")"
    done
    # Let the shards write their lines before the server goes.
    sleep 0.5
    stop_pid "$SERVER_PID"

    local closed lines
    closed=$(jq -s '[.[] | select(.phase == "closed")] | (map(.closed) | add)' "${outs[@]}")
    [ "$closed" = "$N" ] ||
        die "$server $mode: only $closed of $N subscribers saw their end: $(jq -c 'select(.phase == "closed")' "${outs[@]}")"
    R_NOTICES=$(jq -s '[.[] | select(.phase == "closed")] | (map(.notices) | add)' "${outs[@]}")
    R_FIRST=$(ms_between "$t0" "$(jq -s '[.[] | select(.phase == "closed") | .first_eof_unix] | min' "${outs[@]}")")
    R_LAST=$(ms_between "$t0" "$(jq -s '[.[] | select(.phase == "closed") | .last_eof_unix] | max' "${outs[@]}")")
    # The median over all connections is exact with one client; with several, the largest of theirs.
    R_P50=$(ms_between "$t0" "$(jq -s '[.[] | select(.phase == "closed") | .p50_eof_unix] | max' "${outs[@]}")")
    R_ANSWER=$(ms_between "$t0" "$t1")
    lines=$(grep -F 'subscribers closed' "$log_file" | grep -F "\"channel\":\"$CHANNEL\"" || true)
    if [ -n "$lines" ]; then
        R_SUM=$(jq -s 'map(.took_ms) | add | . * 10 | round / 10' <<<"$lines")
        R_MAX=$(jq -s 'map(.took_ms) | max | . * 10 | round / 10' <<<"$lines")
        R_CPU=$(jq -s 'map(.cpu_ms // "n/a") | if all(type == "number") then add | . * 10 | round / 10 else "n/a" end' -r <<<"$lines")
        R_SHARDS=$(jq -s 'length' <<<"$lines")
        R_LOGGED=$(jq -s 'map(.closed) | add' <<<"$lines")
    else
        R_SUM=n/a R_MAX=n/a R_CPU=n/a R_SHARDS=0 R_LOGGED=n/a
    fi
    if [ -n "$KEEP_LOGS" ]; then
        cp "$log_file" "$KEEP_LOGS/"
        cat "${outs[@]}" >"$KEEP_LOGS/clients-$server-$mode-$rep.out"
        echo "t0 $t0 answer $t1" >>"$KEEP_LOGS/clients-$server-$mode-$rep.out"
    fi
}

declare -A SUM MAX CPU ANSWER FIRST P50 LAST HEALTH NOTICES
FMT='%-10s %-9s %4s %6s %7s %8s %8s %8s %8s %8s %8s %8s %9s %8s\n'
# shellcheck disable=SC2059 # the format is ours
printf "$FMT" mode server rep shards closed sum_ms max_ms cpu_ms answer first_ms p50_ms last_ms notices healthz
for rep in $(seq "$REPS"); do
    for mode in $MODES; do
        for server in $SERVERS; do
            run_once "$server" "$mode"
            # shellcheck disable=SC2059
            printf "$FMT" "$mode" "$server" "$rep" "$R_SHARDS" "$R_LOGGED" "$R_SUM" "$R_MAX" "$R_CPU" "$R_ANSWER" "$R_FIRST" \
                "$R_P50" "$R_LAST" "$R_NOTICES" "$R_HEALTH"
            key=$mode.$server
            SUM[$key]+="$R_SUM " MAX[$key]+="$R_MAX " CPU[$key]+="$R_CPU " ANSWER[$key]+="$R_ANSWER " FIRST[$key]+="$R_FIRST "
            P50[$key]+="$R_P50 " LAST[$key]+="$R_LAST " HEALTH[$key]+="$R_HEALTH " NOTICES[$key]+="$R_NOTICES "
        done
    done
done

# Median of a list that may hold n/a (then n/a).
med() { case " $* " in *" n/a "*) echo n/a ;; *) median "$@" ;; esac; }

echo
echo "summary (medians of $REPS; N = $N SSE subscribers of one channel; ms from the request's write)"
# shellcheck disable=SC2059
printf "$FMT" mode server reps - - sum_ms max_ms cpu_ms answer first_ms p50_ms last_ms notices healthz
for mode in $MODES; do
    for server in $SERVERS; do
        key=$mode.$server
        # shellcheck disable=SC2059,SC2086
        printf "$FMT" "$mode" "$server" "$REPS" - - "$(med ${SUM[$key]})" "$(med ${MAX[$key]})" "$(med ${CPU[$key]})" \
            "$(median ${ANSWER[$key]})" "$(median ${FIRST[$key]})" "$(median ${P50[$key]})" \
            "$(median ${LAST[$key]})" "$(median ${NOTICES[$key]})" "$(median ${HEALTH[$key]})"
    done
done
echo
for mode in $MODES; do
    for server in $SERVERS; do
        [ "$server" = baseline ] && continue
        key=$mode.$server
        # shellcheck disable=SC2086
        s=$(med ${SUM[$key]}) m=$(med ${MAX[$key]}) c=$(med ${CPU[$key]}) l=$(median ${LAST[$key]})
        line="$mode $server: server time $s ms (sum over shards; longest shard $m ms; CPU $c ms), all EOF after $l ms"
        if [ "$s" != n/a ]; then
            line+="; goal < 100 ms of server time: $(awk -v s="$s" 'BEGIN { print (s < 100 ? "met" : "MISSED") }')"
        fi
        if [[ " $SERVERS " == *" baseline "* ]]; then
            # shellcheck disable=SC2086
            b=$(median ${LAST[$mode.baseline]})
            line+="; baseline all EOF after $b ms ($(ratio "$b" "$l")x)"
        fi
        echo "$line"
    done
done
echo "load average at the end: $(cut -d" " -f1-3 /proc/loadavg)"
