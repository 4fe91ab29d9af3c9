#!/usr/bin/env bash
# Hostile WebSocket clients: N connections that never read, flooding pings and/or compressed
# messages that inflate a thousandfold, against this tree's Holdfast ("new") and the commit
# before the per-connection bounds ("old", BASELINE_COMMIT), with `holdfast bench hostile` as
# the client. Every measurement gets a fresh server (`--ws-deflate true`, otherwise defaults);
# repetitions are interleaved across attacks and binaries; the summary gives medians.
#
# Per run (see `holdfast bench hostile` in bench/README.md): server RSS (VmRSS) at the start,
# peak and end of the attack; an SSE subscriber's delivery delay (a message published every
# 50 ms) and GET /healthz latency (every 100 ms), p50/p99/max; hostile connections the server
# cut. The goal (issue 9): peak RSS under N x (max_pending_bytes + 64 KiB read budget), SSE delay
# under 100 ms, /healthz under 50 ms. SSE max counts a message never delivered (lost) with its age
# at the end of the run, so it is a lower bound when lost > 0.
#
# Protection: the old code has no bound (one deflate-bombing client took it to 3.9 GB). Every
# server runs under `prlimit --as=AS_LIMIT` (an allocation past it aborts the server, not the
# machine), and the client stops the attack and resets its sockets once the server's RSS passes
# RSS_LIMIT_MB. Both are reported per run (`stop`: rss = stopped at the limit, died = the server
# exited).
#
# Environment (all optional):
#   ATTACKS="ping deflate mixed"   (also: none, the connections held without sending)
#   BINS="new old"                 N=1000  S=10  REPS=3
#   HOLDFAST_BIN=path              the new binary (default: a release build of this tree)
#   BASELINE_BIN=path              the old binary (default: BASELINE_COMMIT built in BASELINE_DIR)
#   BASELINE_COMMIT=a8894f4        BASELINE_DIR=/tmp/hf-base (a git worktree, built once, cached)
#   RSS_LIMIT_MB=6144              AS_LIMIT=8G
#   MAX_PENDING_BYTES=1048576      passed to both servers; the RSS bound uses it
#   CLIENT_ARGS="..."              extra arguments for the client (e.g. --reconnect, --bomb raw)
#   KEEP_LOG=file                  append every run's JSON line to this file
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT

ATTACKS=${ATTACKS:-"ping deflate mixed"}
BINS=${BINS:-"new old"}
N=${N:-1000}
S=${S:-10}
REPS=${REPS:-3}
RSS_LIMIT_MB=${RSS_LIMIT_MB:-6144}
AS_LIMIT=${AS_LIMIT:-8G}
MAX_PENDING_BYTES=${MAX_PENDING_BYTES:-1048576}
CLIENT_ARGS=${CLIENT_ARGS:-}
KEEP_LOG=${KEEP_LOG:-}
READ_BUDGET=65536
# prlimit takes bytes ("8G" would be read as 8 bytes).
AS_BYTES=$(numfmt --from=iec "$AS_LIMIT") || die "AS_LIMIT=$AS_LIMIT is not a size"

need curl curl
need jq jq
need ss iproute2
need prlimit util-linux

declare -A BIN
for b in $BINS; do
    case $b in
        new) BIN[new]=$(holdfast_bin) ;;
        old) BIN[old]=$(baseline_bin) ;;
        *) die "unknown binary $b (new, old)" ;;
    esac
done
CLIENT=$(holdfast_bin) # only this tree has `bench hostile`
for a in $ATTACKS; do
    case $a in ping | deflate | mixed | none) ;; *) die "unknown attack $a" ;; esac
done
log "binaries: $(for b in $BINS; do printf '%s=%s ' "$b" "${BIN[$b]}"; done)"
log "load average: $(cut -d" " -f1-3 /proc/loadavg)"

# Starts `holdfast serve` ($1) on port $2 under the address-space limit; sets SERVER_PID (prlimit
# and env exec the server, so the PID is the server's).
start_server() {
    local bin=$1 port=$2
    env RUST_LOG=warn prlimit --as="$AS_BYTES" -- "$bin" serve --listen "127.0.0.1:$port" --ws-deflate true \
        --max-pending-bytes "$MAX_PENDING_BYTES" >>"$WORK/server-$port.log" 2>&1 &
    SERVER_PID=$!
    STARTED_PIDS+=("$SERVER_PID")
    wait_healthy "$port"
}

BOUND=$((N * (MAX_PENDING_BYTES + READ_BUDGET))) # bytes
PER_CONN_BOUND=$((MAX_PENDING_BYTES + READ_BUDGET))

# run_once BIN ATTACK: sets the R_* figures.
run_once() {
    local bin=$1 attack=$2 port out deflate=()
    port=$(free_port)
    start_server "${BIN[$bin]}" "$port"
    [ "$attack" = ping ] || [ "$attack" = none ] || deflate=(--deflate)
    # shellcheck disable=SC2086 # CLIENT_ARGS is a list of words
    out=$(timeout $((S + 90)) "$CLIENT" bench hostile --json --server "127.0.0.1:$port" --attack "$attack" "${deflate[@]}" \
        --connections "$N" --seconds "$S" --server-pid "$SERVER_PID" --rss-limit-mb "$RSS_LIMIT_MB" \
        $CLIENT_ARGS 2>"$WORK/client.err") || die "$bin $attack: client failed: $(cat "$WORK/client.err")"
    sed 's/^/    /' "$WORK/client.err" >&2
    [ -z "$KEEP_LOG" ] || jq -c --arg bin "$bin" --arg rep "$rep" '. + {bin: $bin, rep: ($rep | tonumber)}' <<<"$out" >>"$KEEP_LOG"
    R_STOP=-
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        R_STOP=died
        log "    the $bin server exited during the run; its log ends with:"
        tail -3 "$WORK/server-$port.log" | sed 's/^/      /' >&2
    fi
    [ "$(jq -r .rss_limit_hit <<<"$out")" = true ] && R_STOP=rss
    stop_pid "$SERVER_PID"
    R_PEAK=$(jq -r '(.rss_peak_kb // 0) / 1024 | floor' <<<"$out")
    R_START=$(jq -r '(.rss_start_kb // 0) / 1024 | floor' <<<"$out")
    R_PER=$(jq -r 'if .open > 0 then ((.rss_peak_kb - .rss_start_kb) * 1024 / .open | floor) else 0 end' <<<"$out")
    R_OPEN=$(jq -r .open <<<"$out")
    R_CUT=$(jq -r .cut <<<"$out")
    R_SENT=$(jq -r '.hostile_bytes_sent / 1000000 | floor' <<<"$out")
    local k
    for k in sse_p50_ms sse_p99_ms healthz_p50_ms healthz_p99_ms healthz_max_ms; do
        printf -v "R_${k^^}" '%s' "$(jq -r ".$k // \"nan\"" <<<"$out")"
    done
    # With messages never delivered, the largest delay is at least their age at the end.
    R_SSE_MAX_MS=$(jq -r '.sse_max_at_least_ms // .sse_max_ms // "nan"' <<<"$out")
    R_LOST=$(jq -r '.sse_lost' <<<"$out")
    R_HFAIL=$(jq -r '.healthz_failed' <<<"$out")
    R_CPU=$(jq -r '.server_cpu_s // "nan"' <<<"$out")
}

declare -A PEAK PER CUT SSE50 SSE99 SSEMAX H50 H99 HMAX STOPS LOST HFAIL CPU SENT
FMT='%-4s %-8s %4s %5s %8s %8s %6s %5s %8s %8s %8s %8s %8s %8s %5s %5s %6s %5s\n'
# shellcheck disable=SC2059 # the format is ours
printf "$FMT" bin attack rep open start_MB peak_MB B/conn cut sse_p50 sse_p99 sse_max hz_p50 hz_p99 hz_max lost hzerr srvcpu stop
for rep in $(seq "$REPS"); do
    for attack in $ATTACKS; do
        for bin in $BINS; do
            run_once "$bin" "$attack"
            # shellcheck disable=SC2059
            printf "$FMT" "$bin" "$attack" "$rep" "$R_OPEN" "$R_START" "$R_PEAK" "$R_PER" "$R_CUT" \
                "$R_SSE_P50_MS" "$R_SSE_P99_MS" "$R_SSE_MAX_MS" "$R_HEALTHZ_P50_MS" "$R_HEALTHZ_P99_MS" \
                "$R_HEALTHZ_MAX_MS" "$R_LOST" "$R_HFAIL" "$R_CPU" "$R_STOP"
            key=$bin.$attack
            PEAK[$key]+="$R_PEAK " PER[$key]+="$R_PER " CUT[$key]+="$R_CUT " SENT[$key]+="$R_SENT "
            SSE50[$key]+="$R_SSE_P50_MS " SSE99[$key]+="$R_SSE_P99_MS " SSEMAX[$key]+="$R_SSE_MAX_MS "
            H50[$key]+="$R_HEALTHZ_P50_MS " H99[$key]+="$R_HEALTHZ_P99_MS " HMAX[$key]+="$R_HEALTHZ_MAX_MS "
            LOST[$key]+="$R_LOST " HFAIL[$key]+="$R_HFAIL " CPU[$key]+="$R_CPU "
            [ "$R_STOP" = - ] || STOPS[$key]+="$R_STOP "
        done
    done
done

echo
echo "summary (medians of $REPS; N = $N hostile connections for $S s; bound = N x (max_pending_bytes + 64 KiB)" \
    "= $((BOUND / 1048576)) MiB, $PER_CONN_BOUND B per connection)"
FMT2='%-4s %-8s %8s %8s %7s %5s %8s %8s %8s %8s %8s %8s %5s %5s %6s %6s  %s\n'
# shellcheck disable=SC2059
printf "$FMT2" bin attack peak_MB B/conn vs_bnd cut sse_p50 sse_p99 sse_max hz_p50 hz_p99 hz_max lost hzerr srvcpu sentMB stops
declare -A M
for attack in $ATTACKS; do
    for bin in $BINS; do
        key=$bin.$attack
        # shellcheck disable=SC2086 # word lists
        {
            M[$key.peak]=$(median ${PEAK[$key]}) M[$key.per]=$(median ${PER[$key]})
            M[$key.sse99]=$(median ${SSE99[$key]}) M[$key.ssemax]=$(median ${SSEMAX[$key]})
            M[$key.h99]=$(median ${H99[$key]}) M[$key.hmax]=$(median ${HMAX[$key]})
            M[$key.sse50]=$(median ${SSE50[$key]}) M[$key.h50]=$(median ${H50[$key]})
        }
        # shellcheck disable=SC2059,SC2086
        printf "$FMT2" "$bin" "$attack" "${M[$key.peak]}" "${M[$key.per]}" "$(ratio "${M[$key.per]}" "$PER_CONN_BOUND")" \
            "$(median ${CUT[$key]})" "${M[$key.sse50]}" "${M[$key.sse99]}" "${M[$key.ssemax]}" \
            "${M[$key.h50]}" "${M[$key.h99]}" "${M[$key.hmax]}" \
            "$(printf '%s\n' ${LOST[$key]} | sort -g | tail -1)" "$(printf '%s\n' ${HFAIL[$key]} | sort -g | tail -1)" \
            "$(median ${CPU[$key]})" "$(median ${SENT[$key]})" "${STOPS[$key]:--}"
    done
done

echo
verdict() { awk -v c="$1" 'BEGIN { print (c ? "met" : "MISSED") }'; }
for attack in $ATTACKS; do
    for bin in $BINS; do
        key=$bin.$attack
        line="$bin $attack: peak RSS ${M[$key.peak]} MB vs bound $((BOUND / 1048576)) MiB:"
        line+=" $(verdict "$(awk -v p="${M[$key.peak]}" -v b="$BOUND" 'BEGIN { print (p * 1048576 < b) }')")"
        line+="; SSE delay max ${M[$key.ssemax]} ms (p99 ${M[$key.sse99]}) < 100 ms:"
        line+=" $(verdict "$(awk -v m="${M[$key.ssemax]}" 'BEGIN { print (m != "nan" && m < 100) }')")"
        line+="; /healthz max ${M[$key.hmax]} ms (p99 ${M[$key.h99]}) < 50 ms:"
        line+=" $(verdict "$(awk -v m="${M[$key.hmax]}" 'BEGIN { print (m != "nan" && m < 50) }')")"
        [ -z "${STOPS[$key]:-}" ] || line+="; runs stopped: ${STOPS[$key]}"
        echo "$line"
    done
    if [[ " $BINS " == *" new "* && " $BINS " == *" old "* ]]; then
        echo "$attack new/old: peak RSS $(ratio "${M[new.$attack.peak]}" "${M[old.$attack.peak]}")x," \
            "SSE max $(ratio "${M[new.$attack.ssemax]}" "${M[old.$attack.ssemax]}")x," \
            "/healthz max $(ratio "${M[new.$attack.hmax]}" "${M[old.$attack.hmax]}")x"
    fi
done
echo "load average at the end: $(cut -d" " -f1-3 /proc/loadavg)"
