#!/usr/bin/env bash
# Fan-out: Holdfast (release build) vs nginx+Nchan with 1 and 2 workers, one channel, 100 B
# payloads, `holdfast bench fanout` as the client. Every measurement gets a fresh server;
# repetitions are interleaved across servers so drift hits them alike; the summary gives medians.
#
# Workloads (WORKLOADS, in this order by default):
#   sse-paced  10,000 SSE subscribers, 100 messages at 20/s
#   sse-burst  10,000 SSE subscribers, 100 messages as fast as the publisher gets answers
#   sse-1k      1,000 SSE subscribers, 1,000 messages at 200/s
#   sse-1k-burst  1,000 SSE subscribers, 1,000 messages in a burst (at 200/s every server keeps
#               up, so deliveries/s is the offered 200k/s: this shows the capacity behind it)
#   ws-paced   10,000 WebSocket subscribers, 100 messages at 20/s
#   ws-burst   10,000 WebSocket subscribers, 100 messages in a burst
#   lp          1,000 long-poll subscribers, 200 messages at 20/s (Holdfast: `?cursor=` from each
#               answer; Nchan: If-Modified-Since / If-None-Match from Last-Modified / Etag, one
#               message per answer)
#
# The client is one process with one thread, on the same 2 cores as the server: it takes CPU from
# the server, and a saturated client caps what can be measured (its CPU time is reported).
# Per run: deliveries/s (first publish to last delivery), latency p50/p99/max (publish to read),
# lost, pub/s (the rate the publisher kept: Nchan answers a publish only after fanning it out, so
# its publisher can fall below the offered rate, and its latencies then leave out that queueing),
# the server's CPU seconds (nginx: master + workers) and the client's, over the whole client
# run (subscribing included), and `other`: the rest of the machine's busy CPU time meanwhile
# (kernel softirq work not charged to a process, and any other load). A run during which another
# benchmark (bench/keepalive.sh, idle.sh, allocators.sh, wrk) was running is marked `*`.
#
# Environment (all optional):
#   WORKLOADS="sse-paced sse-burst sse-1k sse-1k-burst ws-paced ws-burst lp"
#   SERVERS="holdfast nchan1 nchan2"   (nchanW = nginx+Nchan with W worker processes; holdfast-ptN =
#                        this tree with --push-threads N; `baseline` = another Holdfast binary, see
#                        baseline_bin in lib.sh, for regression checks)
#   REPS=3
#   SUBSCRIBERS=N        every workload with N subscribers (a smoke test, not a measurement)
#   HOLDFAST_ARGS=""     extra `holdfast serve` flags for this tree's servers (not the baseline)
#   CHECK=0              K > 0: in the sse-paced runs of the first CHECK_REPS (1) repetitions, K of the
#                        subscribers are bench/fanout_check.py's (an independent Python reader,
#                        opened over CHECK_SPREAD = 2 s (may be fractional; best near the client's
#                        subscribe_seconds) while the Rust client opens the others;
#                        the publisher waits CHECK_SPREAD + 2 s): its own p50/p99/max and loss are
#                        printed under the run (the run's cli_cpu then includes the Python reader's)
#   THREAD_LOG=file      append Holdfast's CPU seconds per thread for each run
#   HOLDFAST_BIN=path    use this binary instead of building
#   BASELINE_BIN=path    the `baseline` server's binary (default: BASELINE_COMMIT built, see lib.sh)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/nchan.conf.sh"
trap cleanup EXIT

WORKLOADS=${WORKLOADS:-"sse-paced sse-burst sse-1k sse-1k-burst ws-paced ws-burst lp"}
SERVERS=${SERVERS:-"holdfast nchan1 nchan2"}
REPS=${REPS:-3}
THREAD_LOG=${THREAD_LOG:-}
HOLDFAST_ARGS=${HOLDFAST_ARGS:-}
CHECK=${CHECK:-0}
CHECK_REPS=${CHECK_REPS:-1}
CHECK_SPREAD=${CHECK_SPREAD:-2}
SIZE=100

# Per workload: subscribers messages rate transport.
declare -A PLAN=(
    [sse-paced]="10000 100 20 sse"
    [sse-burst]="10000 100 0 sse"
    [sse-1k]="1000 1000 200 sse"
    [sse-1k-burst]="1000 1000 0 sse"
    [ws-paced]="10000 100 20 ws"
    [ws-burst]="10000 100 0 ws"
    [lp]="1000 200 20 longpoll"
)
for w in $WORKLOADS; do [ -n "${PLAN[$w]:-}" ] || die "unknown workload $w"; done
# SUBSCRIBERS=N: every workload with N subscribers instead (a quick look, not a measurement).
if [ -n "${SUBSCRIBERS:-}" ]; then
    for w in "${!PLAN[@]}"; do PLAN[$w]="$SUBSCRIBERS ${PLAN[$w]#* }"; done
fi

need curl curl
need jq jq
need ss iproute2
[ "$CHECK" = 0 ] || need python3 python3
case " $SERVERS " in *" nchan"*) need_nchan ;; esac
for server in $SERVERS; do
    case $server in holdfast | holdfast-pt[0-9]* | baseline | nchan[0-9]*) ;; *) die "unknown server $server" ;; esac
done
BIN=$(holdfast_bin)
case " $SERVERS " in *" baseline "*) BASE_BIN=$(baseline_bin) ;; esac
TICK=$(getconf CLK_TCK)
log "load average: $(cut -d" " -f1-3 /proc/loadavg)"

# CPU ticks (user + system) used so far by a process (all its threads) and its children.
cpu_ticks() {
    local total=0 pid
    for pid in "$1" $(pgrep -P "$1" || true); do
        total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
    done
    printf '%s\n' "$total"
}

# CPU ticks per thread of a process: "name ticks" lines (threads of a name summed).
thread_ticks() {
    local f
    for f in /proc/"$1"/task/*/stat; do
        # The name is in parentheses and may hold spaces: take the fields after the last ')'.
        sed 's/^[0-9]* (\(.*\)) \(.*\)$/\1|\2/' "$f" | awk -F'|' '{ split($2, v, " "); n = $1; gsub(/ /, "_", n); print n, v[12] + v[13] }'
    done | awk '{ t[$1] += $2 } END { for (n in t) print n, t[n] }' | sort
}

# CPU seconds this shell's reaped children have used (user + system), from `times`: sets R_CHILD.
# (Not in a $(...) subshell, which has reaped no children of its own.)
children_cpu() {
    times >"$WORK/times"
    R_CHILD=$(awk 'NR == 2 { s = 0; for (i = 1; i <= 2; i++) { split($i, p, /[ms]/); s += p[1] * 60 + p[2] } printf "%.2f\n", s }' "$WORK/times")
}

# Busy CPU ticks of the whole machine so far (/proc/stat: all but idle and iowait).
machine_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }

# "*" if another benchmark is running now (its load would skew this one).
foreign() { pgrep -f 'bench/(keepalive|idle|allocators|hostile|subscribers|mass_close|channels)\.sh|^wrk ' >/dev/null && echo '*' || true; }

# run_once SERVER WORKLOAD: sets R_DPS R_P50 R_P99 R_MAX R_LOST R_PUB R_SRV R_CLI R_OTHER R_SUBS
# R_FOREIGN, and R_CHECK (fanout_check.py's JSON line, or empty).
run_once() {
    local server=$1 workload=$2 port subs msgs rate transport path args=() t0 t1 c0 c1 m0 m1 out threads0
    local check_pid="" check_out="$WORK/check.json"
    read -r subs msgs rate transport <<<"${PLAN[$workload]}"
    port=$(free_port)
    # shellcheck disable=SC2086 # HOLDFAST_ARGS is a list of flags
    case $server in
        holdfast) start_holdfast "$BIN" "$port" $HOLDFAST_ARGS ;;
        holdfast-pt*) start_holdfast "$BIN" "$port" --push-threads "${server#holdfast-pt}" $HOLDFAST_ARGS ;;
        baseline) start_holdfast "$BASE_BIN" "$port" ;;
        nchan*) start_nchan "$port" "${server#nchan}" ;;
    esac
    case $transport.$server in
        sse.holdfast* | sse.baseline) path="/sub/bench?transport=sse" ;;
        sse.*) path=/sub/bench ;; # Nchan: SSE by the client's Accept: text/event-stream
        ws.*) path=/sub/bench args=(--websocket) ;;
        longpoll.holdfast* | longpoll.baseline) path=/sub/bench args=(--longpoll) ;;
        longpoll.nchan*) path=/sub/bench args=(--longpoll --longpoll-cursor headers) ;;
        *) die "$server does not run $workload" ;;
    esac
    R_CHECK=""
    if [ "$CHECK" != 0 ] && [ "$workload" = sse-paced ] && [ "$rep" -le "$CHECK_REPS" ]; then
        # K of the subscribers are the independent reader's, opened while the client opens its own.
        python3 "$ROOT/bench/fanout_check.py" --server "127.0.0.1:$port" --path "$path" --subscribers "$CHECK" \
            --messages "$msgs" --spread "$CHECK_SPREAD" \
            --timeout "$(awk -v m="$msgs" -v r="$rate" -v s="$CHECK_SPREAD" 'BEGIN { print int(m / r + s + 40) }')" \
            >"$check_out" 2>"$check_out.err" &
        check_pid=$!
        STARTED_PIDS+=("$check_pid")
        subs=$((subs - CHECK))
        args+=(--settle-ms "$(awk -v s="$CHECK_SPREAD" 'BEGIN { printf "%d\n", (s + 2) * 1000 }')")
    fi
    threads0=""
    if [ -n "$THREAD_LOG" ] && [[ $server == holdfast* || $server == baseline ]]; then
        threads0=$(thread_ticks "$SERVER_PID")
    fi
    R_FOREIGN=$(foreign)
    m0=$(machine_ticks)
    t0=$(cpu_ticks "$SERVER_PID")
    children_cpu
    c0=$R_CHILD
    out=$(timeout 300 "$BIN" bench fanout --json --server "127.0.0.1:$port" --subscribe "$path" --publish /pub/bench \
        "${args[@]}" --subscribers "$subs" --messages "$msgs" --rate "$rate" --size "$SIZE" 2>&1) ||
        die "$server $workload: client failed: $out"
    children_cpu
    c1=$R_CHILD
    t1=$(cpu_ticks "$SERVER_PID")
    m1=$(machine_ticks)
    R_FOREIGN+=$(foreign)
    if [ -n "$check_pid" ]; then
        for _ in $(seq 600); do kill -0 "$check_pid" 2>/dev/null || break; sleep 0.1; done
        stop_pid "$check_pid"
        R_CHECK=$(tail -1 "$check_out")
        [ -n "$R_CHECK" ] || die "$server $workload: fanout_check.py printed nothing: $(cat "$check_out.err")"
    fi
    if [ -n "$threads0" ]; then
        {
            echo "# $server $workload rep $rep: CPU seconds per thread"
            join -a2 -e0 -o 0,1.2,2.2 <(printf '%s\n' "$threads0") <(thread_ticks "$SERVER_PID") |
                awk -v hz="$TICK" '{ d = ($3 - $2) / hz; if (d > 0) printf "  %-24s %6.2f\n", $1, d }'
        } >>"$THREAD_LOG"
    fi
    stop_pid "$SERVER_PID"
    out=$(grep '"phase"' <<<"$out" | tail -1) || die "$server $workload: no result line"
    R_DPS=$(jq -r '.deliveries_per_s | floor' <<<"$out")
    R_P50=$(jq -r '.p50_ms // "nan"' <<<"$out")
    R_P99=$(jq -r '.p99_ms // "nan"' <<<"$out")
    R_MAX=$(jq -r '.max_ms // "nan"' <<<"$out")
    R_LOST=$(jq -r '.lost + .extra' <<<"$out")
    R_PUB=$(jq -r '.published_per_s // 0 | . * 10 | round / 10' <<<"$out")
    R_SUBS=$(jq -r '.subscribers' <<<"$out")
    R_SUBSCRIBE_S=$(jq -r '.subscribe_seconds // "nan"' <<<"$out")
    R_SRV=$(awk -v t=$((t1 - t0)) -v hz="$TICK" 'BEGIN { printf "%.2f\n", t / hz }')
    R_CLI=$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.2f\n", b - a }')
    R_OTHER=$(awk -v m=$((m1 - m0)) -v hz="$TICK" -v s="$R_SRV" -v c="$R_CLI" 'BEGIN { printf "%.2f\n", m / hz - s - c }')
}

declare -A DPS P50 P99 MAX LOST PUB SRV CLI OTHER CHECKS
FMT='%-12s %-12s %4s %6s %10s %9s %9s %9s %6s %7s %7s %7s %7s\n'
# shellcheck disable=SC2059 # the format is ours
printf "$FMT" workload server rep subs deliv/s p50_ms p99_ms max_ms lost pub/s srv_cpu cli_cpu other
FOREIGN_RUNS=0
for rep in $(seq "$REPS"); do
    for workload in $WORKLOADS; do
        for server in $SERVERS; do
            run_once "$server" "$workload"
            # shellcheck disable=SC2059
            printf "$FMT" "$workload" "$server" "$rep${R_FOREIGN:0:1}" "$R_SUBS" "$R_DPS" "$R_P50" "$R_P99" "$R_MAX" \
                "$R_LOST" "$R_PUB" "$R_SRV" "$R_CLI" "$R_OTHER"
            if [ -n "$R_CHECK" ]; then
                echo "  check: $(jq -r '"fanout_check.py, \(.subscribers) subscribers opened at \(.opened_from_s)-\(.opened_until_s) s (the client'"'"'s: 0-'"$R_SUBSCRIBE_S"' s): p50 \(.p50_ms) p99 \(.p99_ms) max \(.max_ms) ms, lost \(.lost), dup \(.dup), pub/s seen \(.published_per_s_seen)"' <<<"$R_CHECK")"
                CHECKS[$workload.$server]+="$(jq -r '"\(.p50_ms)/\(.p99_ms)/\(.max_ms) ms lost \(.lost) (client: '"$R_P50/$R_P99/$R_MAX"' ms)"' <<<"$R_CHECK");"
            fi
            [ -n "$R_FOREIGN" ] && FOREIGN_RUNS=$((FOREIGN_RUNS + 1))
            key=$workload.$server
            DPS[$key]+="$R_DPS " P50[$key]+="$R_P50 " P99[$key]+="$R_P99 " MAX[$key]+="$R_MAX " PUB[$key]+="$R_PUB "
            LOST[$key]+="$R_LOST " SRV[$key]+="$R_SRV " CLI[$key]+="$R_CLI " OTHER[$key]+="$R_OTHER "
        done
    done
done

echo
echo "summary (medians of $REPS; lost = the largest of the runs; CPU in seconds over the whole client run)"
# shellcheck disable=SC2059
printf "$FMT" workload server reps - deliv/s p50_ms p99_ms max_ms lost pub/s srv_cpu cli_cpu other
declare -A M99 MDPS MPUB WORST
for workload in $WORKLOADS; do
    for server in $SERVERS; do
        key=$workload.$server
        [ -n "${DPS[$key]:-}" ] || continue
        # shellcheck disable=SC2086 # word lists
        MDPS[$key]=$(median ${DPS[$key]}) M99[$key]=$(median ${P99[$key]}) MPUB[$key]=$(median ${PUB[$key]})
        # shellcheck disable=SC2086
        WORST[$key]=$(printf '%s\n' ${LOST[$key]} | sort -g | tail -1)
        # shellcheck disable=SC2059,SC2086
        printf "$FMT" "$workload" "$server" "$REPS" - "${MDPS[$key]}" "$(median ${P50[$key]})" "${M99[$key]}" \
            "$(median ${MAX[$key]})" "${WORST[$key]}" "${MPUB[$key]}" \
            "$(median ${SRV[$key]})" "$(median ${CLI[$key]})" "$(median ${OTHER[$key]})"
    done
done
if [ -n "${CHECKS[*]:-}" ]; then
    echo
    for key in "${!CHECKS[@]}"; do echo "independent check $key: ${CHECKS[$key]}"; done
fi

# Each Holdfast of this tree against each other server: deliveries/s ratio and p99 side by side,
# and the goals.
echo
verdict() { awk -v c="$1" 'BEGIN { print (c ? "met" : "MISSED") }'; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN { print (a < b) }'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { print (a <= b) }'; }
HOLDFASTS="" NCHANS=""
for s in $SERVERS; do
    case $s in holdfast*) HOLDFASTS+="$s " ;; nchan*) NCHANS+="$s " ;; esac
done
for workload in $WORKLOADS; do
    read -r subs msgs rate _ <<<"${PLAN[$workload]}"
    for hf in $HOLDFASTS; do
        h=$workload.$hf
        [ -n "${MDPS[$h]:-}" ] || continue
        for server in $SERVERS; do
            [ "$server" = "$hf" ] && continue
            [[ $server == holdfast* ]] && continue
            n=$workload.$server
            [ -n "${MDPS[$n]:-}" ] || continue
            r=$(ratio "${MDPS[$h]}" "${MDPS[$n]}")
            line="$workload $hf/$server: deliveries/s ${r}x, p99 ${M99[$h]} vs ${M99[$n]} ms"
            if [ "$server" = baseline ]; then
                echo "$line (regression check: this tree vs the baseline binary)"
                continue
            fi
            case $workload in
                sse-burst | sse-1k | sse-1k-burst) line+="; goal >= 4x: $(verdict "$(awk -v r="$r" 'BEGIN { print (r >= 4) }')")" ;;
                lp) [ "$server" = nchan1 ] && line+="; goal p99 <= nchan1's: $(verdict "$(le "${M99[$h]}" "${M99[$n]}")")" ;;
            esac
            echo "$line"
        done
        case $workload in
            *-paced)
                # p99 below the best Nchan of the run, while delivering the full offered rate:
                # nothing lost and the publisher kept (within 1 %) the rate asked for.
                best="" best_name=""
                for nc in $NCHANS; do
                    [ -n "${M99[$workload.$nc]:-}" ] || continue
                    if [ -z "$best" ] || [ "$(lt "${M99[$workload.$nc]}" "$best")" = 1 ]; then
                        best=${M99[$workload.$nc]} best_name=$nc
                    fi
                done
                full=$(awk -v p="${MPUB[$h]}" -v r="$rate" -v l="${WORST[$h]}" 'BEGIN { print (p >= 0.99 * r && l == 0) }')
                line="$workload $hf: p99 ${M99[$h]} ms, pub/s ${MPUB[$h]} of $rate, lost ${WORST[$h]}"
                if [ -n "$best" ]; then
                    line+="; goal p99 < the best Nchan's ($best_name ${best} ms, pub/s ${MPUB[$workload.$best_name]}) at the full offered rate: $(verdict "$(( $(lt "${M99[$h]}" "$best") && full ))")"
                fi
                echo "$line"
                ;;
        esac
    done
done
for hf in $HOLDFASTS; do
    if [ -n "${M99[sse-1k.$hf]:-}" ]; then
        echo "sse-1k $hf p99 ${M99[sse-1k.$hf]} ms, goal <= 20 ms: $(verdict "$(le "${M99[sse-1k.$hf]}" 20)")"
    fi
done
for workload in ws-paced ws-burst lp; do
    for server in $SERVERS; do
        [ -n "${WORST[$workload.$server]:-}" ] || continue
        if [[ $server == holdfast* ]]; then
            echo "$workload $server lost (worst run) ${WORST[$workload.$server]}, goal 0: $(verdict "$([ "${WORST[$workload.$server]}" = 0 ] && echo 1 || echo 0)")"
        else
            echo "$workload $server lost (worst run) ${WORST[$workload.$server]}"
        fi
    done
done
[ "$FOREIGN_RUNS" = 0 ] || echo "WARNING: $FOREIGN_RUNS runs overlapped another benchmark (marked *)"
echo "load average at the end: $(cut -d" " -f1-3 /proc/loadavg)"
