#!/usr/bin/env bash
# Server memory per idle subscriber: Holdfast (release build) vs nginx+Nchan (1 worker), SSE,
# WebSocket and long poll, one channel.
#
# For each N, repetition, transport and server: start a fresh server on a free port, read its RSS
# (/proc/PID/smaps_rollup; nginx: master + worker), open N subscribers to one channel with
# `holdfast bench idle --path /sub/bench?transport=sse` (SSE, Accept: text/event-stream),
# `--websocket --path /sub/bench` or `--longpoll --path /sub/bench` (a plain GET, held by the
# server until a message or its long-poll timeout: Holdfast gets `--longpoll-timeout 300s`, Nchan
# has `nchan_subscriber_timeout 0`) (several client processes if one would need more than
# MAX_PER_CLIENT descriptors), wait until the server counts all N as subscribers (Holdfast:
# /admin/stats `subscribers.sse` / `.websocket` / `.longpoll`; Nchan: nchan_stub_status), let it
# settle 1 s, read RSS again, and report (after - before) / N. Nothing is published meanwhile, so
# the clients never read again.
#
# Environment (all optional):
#   NS="1000 10000 18000"   subscriber counts
#   REPS=3                  repetitions of each (server, transport, N); the summary gives medians
#   TRANSPORTS="sse ws"     (also `longpoll`)
#   SERVERS="holdfast nchan" (also `baseline`: another Holdfast binary, see baseline_bin in lib.sh,
#                           for regression checks)
#   HOLDFAST_ARGS=""        extra `holdfast serve` flags for this tree's server (not the baseline)
#   LONGPOLL_TIMEOUT=300s   Holdfast's --longpoll-timeout (both binaries), longer than any hold here
#   MAX_PER_CLIENT=19000    subscribers per client process (20,000 descriptors each at most)
#   SETTLE=1                seconds between "all N counted" and the second RSS reading
#   HOLDFAST_BIN=path       use this binary instead of building
#   BASELINE_BIN=path       the `baseline` server's binary (default: BASELINE_COMMIT built, see lib.sh)
#   WARMUP=1                1 (default): before the "before" reading, open 1 subscriber of the same transport,
#                           wait until the server counts it, close it, wait until the count is 0 and
#                           settle SETTLE s, so one-time costs (code paging, first-use allocations)
#                           are not charged to the N subscribers
#   DUMP_DIR=dir            keep /proc/PID/smaps and /proc/PID/status of the server before and after
#                           (and after the warm-up) there, one file per run
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/nchan.conf.sh"
trap cleanup EXIT

NS=${NS:-"1000 10000 18000"}
REPS=${REPS:-3}
TRANSPORTS=${TRANSPORTS:-"sse ws"}
SERVERS=${SERVERS:-"holdfast nchan"}
MAX_PER_CLIENT=${MAX_PER_CLIENT:-19000}
SETTLE=${SETTLE:-1}
WARMUP=${WARMUP:-1}
HOLDFAST_ARGS=${HOLDFAST_ARGS:-}
LONGPOLL_TIMEOUT=${LONGPOLL_TIMEOUT:-300s}
DUMP_DIR=${DUMP_DIR:-}
[ -z "$DUMP_DIR" ] || mkdir -p "$DUMP_DIR"

need curl curl
need jq jq
need ss iproute2
case " $SERVERS " in *" nchan "*) need_nchan ;; esac
BIN=$(holdfast_bin)
case " $SERVERS " in *" baseline "*) BASE_BIN=$(baseline_bin) ;; esac
log "load average: $(cut -d" " -f1-3 /proc/loadavg)"


# Subscribers of transport $3 the server on port $2 holds now.
subscriber_count() {
    case $1 in
        holdfast | baseline)
            local key=$3
            [ "$key" = ws ] && key=websocket # sse and longpoll are their own keys
            curl -fs "http://127.0.0.1:$2/admin/stats" | jq -r ".subscribers.$key"
            ;;
        nchan) nchan_subscribers "$2" ;;
    esac
}

# Sum of one /proc/PID/smaps_rollup field (KiB) over a process and its children: Anonymous, or
# File (= Rss - Anonymous: page cache pages, i.e. the binary's and libraries' code and data;
# there is no shared memory). Same exact page-table walk as Rss (/proc/PID/status RssAnon and
# RssFile come from counters instead).
tree_rollup_kb() {
    local total=0 pid
    for pid in "$1" $(pgrep -P "$1" || true); do
        total=$((total + $(awk -v k="$2" '$1 == "Rss:" { rss = $2 } $1 == "Anonymous:" { anon = $2 }
            END { print (k == "File" ? rss - anon : anon) }' "/proc/$pid/smaps_rollup")))
    done
    printf '%s\n' "$total"
}

# Copies smaps and status of the server tree to $DUMP_DIR/$1.{smaps,status} (if DUMP_DIR is set).
dump_proc() {
    [ -n "$DUMP_DIR" ] || return 0
    local pid
    : >"$DUMP_DIR/$1.smaps"
    : >"$DUMP_DIR/$1.status"
    for pid in "$SERVER_PID" $(pgrep -P "$SERVER_PID" || true); do
        cat "/proc/$pid/smaps" >>"$DUMP_DIR/$1.smaps"
        cat "/proc/$pid/status" >>"$DUMP_DIR/$1.status"
    done
}

# Opens one subscriber with client args $3..., waits until server $1 on port $2 counts it, closes
# it, waits until the count is back to 0 and lets the server settle.
warm_up() {
    local server=$1 port=$2 transport=$3 out client deadline
    shift 3
    out="$WORK/warmup-$server-$transport-$RANDOM.out"
    "$BIN" bench idle --json --server "127.0.0.1:$port" --connections 1 "$@" >"$out" 2>"$out.err" &
    client=$!
    STARTED_PIDS+=("$client")
    deadline=$((SECONDS + 15))
    until [ "$(subscriber_count "$server" "$port" "$transport")" = 1 ]; do
        [ "$SECONDS" -lt "$deadline" ] || die "$server: warm-up subscriber not counted"
        sleep 0.1
    done
    stop_pid "$client"
    until [ "$(subscriber_count "$server" "$port" "$transport")" = 0 ]; do
        [ "$SECONDS" -lt "$deadline" ] || die "$server: warm-up subscriber not closed"
        sleep 0.1
    done
    sleep "$SETTLE"
}

# run_once SERVER TRANSPORT N: sets R_BEFORE, R_AFTER (RSS KiB) and R_PER (bytes per subscriber).
# Runs in this shell (not a subshell) so the EXIT trap knows every process it starts. (PSS is no
# use here: Holdfast's clients run the same binary, so its shared pages would count half.)
run_once() {
    local server=$1 transport=$2 n=$3 port before after deadline
    local clients=() outs=() left=$n take out client opened=0 args=()
    port=$(free_port)
    # shellcheck disable=SC2086 # HOLDFAST_ARGS is a list of flags
    case $server in
        holdfast) start_holdfast "$BIN" "$port" --longpoll-timeout "$LONGPOLL_TIMEOUT" $HOLDFAST_ARGS ;;
        baseline) start_holdfast "$BASE_BIN" "$port" --longpoll-timeout "$LONGPOLL_TIMEOUT" ;;
        nchan) start_nchan "$port" 1 ;;
    esac
    case $transport in
        sse) args=(--path "/sub/bench?transport=sse") ;;
        ws) args=(--websocket --path /sub/bench) ;;
        longpoll) args=(--longpoll --path /sub/bench) ;;
        *) die "unknown transport $transport" ;;
    esac
    sleep 0.5
    local tag="$server-$transport-$n-w$WARMUP-$RANDOM"
    if [ "$WARMUP" = 1 ]; then
        dump_proc "$tag.0start"
        warm_up "$server" "$port" "$transport" "${args[@]}"
    fi
    dump_proc "$tag.1before"
    before=$(tree_rss_kb "$SERVER_PID")
    local anon_before file_before
    anon_before=$(tree_rollup_kb "$SERVER_PID" Anonymous)
    file_before=$(tree_rollup_kb "$SERVER_PID" File)

    # Split N over as few clients as the descriptor limit allows, in equal parts.
    local parts=$(((n + MAX_PER_CLIENT - 1) / MAX_PER_CLIENT)) i
    for i in $(seq "$parts"); do
        take=$((left / (parts - i + 1)))
        left=$((left - take))
        # A file per client and run: polling a reused one could read an earlier client's lines.
        out="$WORK/client-$server-$transport-$n-$i-$RANDOM.out"
        "$BIN" bench idle --json --server "127.0.0.1:$port" --connections "$take" "${args[@]}" >"$out" 2>"$out.err" &
        client=$!
        STARTED_PIDS+=("$client")
        clients+=("$client")
        outs+=("$out")
    done
    deadline=$((SECONDS + 120))
    for i in "${!clients[@]}"; do
        wait_client_open "${clients[$i]}" "${outs[$i]}" "$deadline"
        opened=$((opened + $(jq -r 'select(.phase == "open") | .open' "${outs[$i]}")))
    done
    [ "$opened" = "$n" ] || die "$server $transport: only $opened of $n subscribers opened: $(cat "${outs[@]}")"

    deadline=$((SECONDS + 15))
    until [ "$(subscriber_count "$server" "$port" "$transport")" = "$n" ]; do
        [ "$SECONDS" -lt "$deadline" ] ||
            die "$server: only $(subscriber_count "$server" "$port" "$transport") of $n $transport subscribers"
        sleep 0.2
    done
    sleep "$SETTLE" # let anything freed on the way settle
    after=$(tree_rss_kb "$SERVER_PID")
    R_ANON=$(($(tree_rollup_kb "$SERVER_PID" Anonymous) - anon_before))
    R_FILE=$(($(tree_rollup_kb "$SERVER_PID" File) - file_before))
    dump_proc "$tag.2after"

    local held=0
    for i in "${!clients[@]}"; do
        stop_pid "${clients[$i]}"
        held=$((held + $(jq -r 'select(.phase == "held") | .open' "${outs[$i]}")))
    done
    [ "$held" = "$n" ] || die "$server closed $transport subscribers during the hold: $(tail -qn1 "${outs[@]}")"
    stop_pid "$SERVER_PID"
    R_BEFORE=$before R_AFTER=$after
    R_PER=$(awk -v b="$before" -v a="$after" -v n="$n" 'BEGIN { printf "%.0f\n", (a - b) * 1024 / n }')
}

# min-max of the numbers given as arguments.
range() { printf '%s\n' "$@" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo "-" hi }'; }

declare -A PER BEFORE AFTER ANON FILE
printf '%-9s %-8s %6s %4s %10s %10s %9s %9s %8s\n' server tr N rep before_KiB after_KiB dAnon_KiB dFile_KiB B/sub
for n in $NS; do
    for rep in $(seq "$REPS"); do
        for transport in $TRANSPORTS; do
            for server in $SERVERS; do
                run_once "$server" "$transport" "$n"
                printf '%-9s %-8s %6s %4s %10s %10s %9s %9s %8s\n' \
                    "$server" "$transport" "$n" "$rep" "$R_BEFORE" "$R_AFTER" "$R_ANON" "$R_FILE" "$R_PER"
                key=$server.$transport.$n
                ANON[$key]+="$R_ANON "
                FILE[$key]+="$R_FILE "
                PER[$key]+="$R_PER "
                BEFORE[$key]+="$R_BEFORE "
                AFTER[$key]+="$R_AFTER "
            done
        done
    done
done

echo
echo "summary (medians of $REPS; bytes of server RSS per idle subscriber, one channel; settle ${SETTLE}s; warm-up $WARMUP)"
printf '%-9s %-8s %6s %12s %12s %9s %9s %8s %12s\n' server tr N before_KiB after_KiB dAnon_KiB dFile_KiB B/sub B/sub_range
for n in $NS; do
    for transport in $TRANSPORTS; do
        for server in $SERVERS; do
            key=$server.$transport.$n
            # shellcheck disable=SC2086 # word lists
            printf '%-9s %-8s %6s %12s %12s %9s %9s %8s %12s\n' "$server" "$transport" "$n" \
                "$(median ${BEFORE[$key]})" "$(median ${AFTER[$key]})" "$(median ${ANON[$key]})" \
                "$(median ${FILE[$key]})" "$(median ${PER[$key]})" "$(range ${PER[$key]})"
        done
    done
done
if [[ " $SERVERS " == *" holdfast "* ]]; then
    echo
    for n in $NS; do
        for transport in $TRANSPORTS; do
            # shellcheck disable=SC2086
            h=$(median ${PER[holdfast.$transport.$n]})
            goal=512
            [ "$transport" = longpoll ] && goal=256
            line="holdfast $transport at $n: $h B/subscriber, goal <= $goal B: $([ "$h" -le "$goal" ] && echo met || echo MISSED)"
            if [[ " $SERVERS " == *" nchan "* ]]; then
                # shellcheck disable=SC2086
                c=$(median ${PER[nchan.$transport.$n]})
                line+="; nchan $c B ($(ratio "$c" "$h")x holdfast)"
            fi
            if [[ " $SERVERS " == *" baseline "* ]]; then
                # shellcheck disable=SC2086
                c=$(median ${PER[baseline.$transport.$n]})
                line+="; baseline $c B (holdfast/baseline $(ratio "$h" "$c")x)"
            fi
            echo "$line"
        done
    done
fi
echo "load average at the end: $(cut -d" " -f1-3 /proc/loadavg)"
