#!/usr/bin/env bash
# Requests per second on GET /healthz with wrk: keep-alive vs `Connection: close`, Holdfast
# (release build) vs nginx-light, in one run, repetitions interleaved so drift hits both alike.
#
# Both servers get the same per-connection request cap (KEEPALIVE_REQUESTS) and keep-alive
# timeout (75 s, both defaults); nginx runs `worker_processes 1`, `access_log off`,
# `return 200 "ok\n"`. Holdfast runs with its defaults otherwise (a tokio runtime with one worker
# thread per core). Per run, the server's CPU (/proc/PID/stat, % of one core) is printed, and
# "other%": CPU used by anything but the server and wrk (/proc/stat), i.e. other load on the
# machine that skews that run.
#
# Environment (all optional):
#   REPS=3  DURATION=10s  CONNS=50  THREADS=1  KEEPALIVE_REQUESTS=1000000
#   MODES="keepalive close"  SERVERS="holdfast nginx" (also: holdfast-1w, one tokio worker; baseline,
#                         another Holdfast binary, see baseline_bin in lib.sh, for regression checks)
#   HOLDFAST_BIN=path     use this binary instead of building (allocators.sh)
#   BASELINE_BIN=path     the `baseline` server's binary (default: BASELINE_COMMIT built, see lib.sh)
#   HOLDFAST_ENV="K=V"    extra environment for the Holdfast server only
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT

REPS=${REPS:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-50}
THREADS=${THREADS:-1}
KEEPALIVE_REQUESTS=${KEEPALIVE_REQUESTS:-1000000}
MODES=${MODES:-"keepalive close"}
SERVERS=${SERVERS:-"holdfast nginx"}

need curl curl
need ss iproute2
need wrk wrk
case " $SERVERS " in *" nginx "*) need nginx nginx-light ;; esac
BIN=$(holdfast_bin)
case " $SERVERS " in *" baseline "*) BASE_BIN=$(baseline_bin) ;; esac
log "load average: $(cut -d" " -f1-3 /proc/loadavg)"
TICK=$(getconf CLK_TCK)

declare -A PORT PID
for server in $SERVERS; do
    PORT[$server]=$(free_port)
    case $server in
        holdfast) start_holdfast "$BIN" "${PORT[$server]}" --keepalive-requests "$KEEPALIVE_REQUESTS" ;;
        baseline) start_holdfast "$BASE_BIN" "${PORT[$server]}" --keepalive-requests "$KEEPALIVE_REQUESTS" ;;
        # Diagnostic, not in the default set: the same binary on a one-thread tokio runtime
        # (tokio reads TOKIO_WORKER_THREADS), to see what two workers cost on two shared cores.
        holdfast-1w)
            HOLDFAST_ENV="${HOLDFAST_ENV:-} TOKIO_WORKER_THREADS=1" \
                start_holdfast "$BIN" "${PORT[$server]}" --keepalive-requests "$KEEPALIVE_REQUESTS"
            ;;
        nginx) start_nginx "${PORT[$server]}" "keepalive_requests $KEEPALIVE_REQUESTS;" ;;
    esac
    PID[$server]=$SERVER_PID
done

# CPU seconds (user + system) used so far by a process and its children's threads (nginx's worker).
cpu_ticks() {
    local total=0 pid
    for pid in "$1" $(pgrep -P "$1" || true); do
        total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
    done
    printf '%s\n' "$total"
}

# Busy CPU ticks of the whole machine so far (all cores; idle and iowait excluded).
machine_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }

# run_wrk SERVER MODE DURATION: sets R_RPS, R_CPU (server CPU, % of one core), R_OTHER (CPU
# used by everything but the server and wrk: other load skewing the run) and R_ERRORS.
run_wrk() {
    local server=$1 mode=$2 duration=$3 header=() t0 t1 m0 m1 wrk_cpu
    [ "$mode" = close ] && header=(-H 'Connection: close')
    t0=$(cpu_ticks "${PID[$server]}")
    m0=$(machine_ticks)
    local TIMEFORMAT='%3U %3S'
    { time wrk -t"$THREADS" -c"$CONNS" -d"$duration" "${header[@]}" \
        "http://127.0.0.1:${PORT[$server]}/healthz" >"$WORK/wrk.out"; } 2>"$WORK/wrk.time"
    m1=$(machine_ticks)
    t1=$(cpu_ticks "${PID[$server]}")
    wrk_cpu=$(awk '{ print $1 + $2 }' "$WORK/wrk.time")
    R_RPS=$(awk '/^Requests\/sec:/ { printf "%.0f\n", $2 }' "$WORK/wrk.out")
    R_CPU=$(awk -v d="${duration%s}" -v t=$((t1 - t0)) -v hz="$TICK" 'BEGIN { printf "%.0f\n", 100 * t / hz / d }')
    R_OTHER=$(awk -v d="${duration%s}" -v m=$((m1 - m0)) -v t=$((t1 - t0)) -v w="$wrk_cpu" -v hz="$TICK" \
        'BEGIN { o = 100 * ((m - t) / hz - w) / d; printf "%.0f\n", (o < 0 ? 0 : o) }')
    R_ERRORS=$(awk '/Socket errors|Non-2xx/ { sub(/^ +/, ""); printf "%s; ", $0 }' "$WORK/wrk.out")
}

for server in $SERVERS; do run_wrk "$server" keepalive 2s; done # warm-up, not counted

declare -A RPS CPU
printf '%-11s %-9s %4s %10s %8s %8s  %s\n' server mode rep req/s cpu% other% errors
for rep in $(seq "$REPS"); do
    for mode in $MODES; do
        for server in $SERVERS; do
            run_wrk "$server" "$mode" "$DURATION"
            printf '%-11s %-9s %4s %10s %8s %8s  %s\n' "$server" "$mode" "$rep" "$R_RPS" "$R_CPU" "$R_OTHER" "${R_ERRORS:--}"
            RPS[$server.$mode]+="$R_RPS "
            CPU[$server.$mode]+="$R_CPU "
        done
    done
done

echo
echo "summary (medians of $REPS; wrk -t$THREADS -c$CONNS -d$DURATION; keepalive_requests $KEEPALIVE_REQUESTS on both)"
printf '%-11s %-9s %10s %8s\n' server mode req/s cpu%
declare -A MED
for mode in $MODES; do
    for server in $SERVERS; do
        # shellcheck disable=SC2086 # word lists
        MED[$server.$mode]=$(median ${RPS[$server.$mode]})
        # shellcheck disable=SC2086
        printf '%-11s %-9s %10s %8s\n' "$server" "$mode" "${MED[$server.$mode]}" "$(median ${CPU[$server.$mode]})"
    done
done
if [ -n "${MED[holdfast.keepalive]:-}" ] && [ -n "${MED[nginx.keepalive]:-}" ]; then
    echo
    for mode in $MODES; do
        echo "holdfast/nginx $mode: $(ratio "${MED[holdfast.$mode]}" "${MED[nginx.$mode]}")"
    done
    r=$(ratio "${MED[holdfast.keepalive]}" "${MED[nginx.keepalive]}")
    echo "goal keep-alive >= 1.0x nginx: $(awk -v r="$r" 'BEGIN { print (r >= 1.0 ? "met" : "MISSED") }') (${r}x)"
fi
if [ -n "${MED[holdfast.keepalive]:-}" ] && [ -n "${MED[baseline.keepalive]:-}" ]; then
    for mode in $MODES; do
        echo "holdfast/baseline $mode: $(ratio "${MED[holdfast.$mode]}" "${MED[baseline.$mode]}") (regression check)"
    done
fi
if [[ " $MODES " == *" keepalive "* && " $MODES " == *" close "* ]]; then
    for server in $SERVERS; do
        echo "$server keep-alive/close: $(ratio "${MED[$server.keepalive]}" "${MED[$server.close]}")"
    done
fi
echo "load average at the end: $(cut -d" " -f1-3 /proc/loadavg)"
