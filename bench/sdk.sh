#!/usr/bin/env bash
# The Rust client SDK (crates/holdfast-client) against release Holdfast servers:
#
# 1. memory: one `holdfast bench sdk-memory` process holds N SDK subscriptions (SSE, then
#    WebSocket) to a fresh server; its RSS delta / N, with one HTTP client per subscriber (the
#    default) and with one shared HttpPool. Goal: <= 16 KB per subscription.
# 2. publisher: `holdfast bench publisher`, 50 concurrent publishes over the Publisher's keep-alive
#    pool, then with a new connection per publish (max_idle_connections(0)); publishes/s and the
#    ratio, same process, same server. Goal: >= 3x.
# 3. failover: `holdfast bench failover` starts two servers (heartbeat_interval 1 s) and a
#    Subscriber (k = 2, first backoff window 1 s: the SDK default) on both, and stops the one it is
#    on KILLS times: SIGKILL (the kernel closes the sockets) and SIGSTOP (silence: only the
#    heartbeat watch can tell). Time from the stop to the first message from the other server;
#    median and p90. Goal: <= heartbeat x k + first backoff window = 3 s.
#
# Environment (all optional):
#   PARTS="memory publisher failover"
#   N=10000                 subscriptions held (the client holds one descriptor each, two with
#                           per-subscriber clients on WebSocket: see RESULTS.md)
#   TRANSPORTS="sse ws"     memory: transports
#   POOLS="per_subscriber shared"
#   REPS=3                  memory and publisher repetitions (medians)
#   SECONDS_EACH=3          publisher: seconds per mode
#   KILLS=20                failover rounds per mode
#   MODES="kill stop"       failover modes
#   FAILOVER_TRANSPORTS=ws  failover: the subscriber's transports
#   HOLDFAST_BIN=path       use this binary instead of building
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT

PARTS=${PARTS:-"memory publisher failover"}
N=${N:-10000}
TRANSPORTS=${TRANSPORTS:-"sse ws"}
POOLS=${POOLS:-"per_subscriber shared"}
REPS=${REPS:-3}
SECONDS_EACH=${SECONDS_EACH:-3}
KILLS=${KILLS:-20}
MODES=${MODES:-"kill stop"}
FAILOVER_TRANSPORTS=${FAILOVER_TRANSPORTS:-ws}

need curl curl
need jq jq
need ss iproute2
BIN=$(holdfast_bin)
# Both the client and the server hold one descriptor per subscription.
ulimit -n 20000
log "load: $(uptime)"
SUMMARY=()

memory() {
    local transport pool rep port out flag per values fds
    for transport in $TRANSPORTS; do
        for pool in $POOLS; do
            values=() fds=""
            flag=""
            [ "$pool" = shared ] && flag=--shared-pool
            for rep in $(seq "$REPS"); do
                port=$(free_port)
                start_holdfast "$BIN" "$port" --keepalive-timeout 300s
                out="$WORK/mem-$transport-$pool-$rep.out"
                if "$BIN" bench sdk-memory --server "http://127.0.0.1:$port" --subscribers "$N" \
                    --transport "$transport" $flag --json >"$out" 2>"$out.err"; then
                    per=$(jq -r .bytes_per_subscription "$out")
                    fds=$(jq -r .fds "$out")
                    if [ "$(jq -r .reconnects "$out")" = 0 ]; then
                        values+=("$per")
                        log "memory $transport $pool #$rep: $per B per subscription ($(jq -c . "$out"))"
                    else
                        # Connections were lost and remade (descriptor limit, server capacity):
                        # N were not all held at once; not counted.
                        log "memory $transport $pool #$rep: NOT COUNTED (reconnections): $(jq -c . "$out")"
                    fi
                else
                    log "memory $transport $pool #$rep: FAILED: $(tail -c 300 "$out.err")"
                fi
                stop_pid "$SERVER_PID"
            done
            if [ "${#values[@]}" -gt 0 ]; then
                per=$(median "${values[@]}")
                eval "MEM_${transport}_${pool}=$per"
                SUMMARY+=("memory $transport $pool: median $per B per subscription (N=$N, runs: ${values[*]}, client fds $fds)")
            else
                SUMMARY+=("memory $transport $pool: no valid run (N=$N; see the log above)")
            fi
        done
        local before="MEM_${transport}_per_subscriber" after="MEM_${transport}_shared"
        if [ -n "${!before:-}" ] && [ -n "${!after:-}" ]; then
            SUMMARY+=("memory $transport: per-subscriber / shared = $(ratio "${!before}" "${!after}")")
        fi
    done
}

publisher() {
    local port rep out pools=() news=() ratios=()
    port=$(free_port)
    start_holdfast "$BIN" "$port"
    for rep in $(seq "$REPS"); do
        out="$WORK/pub-$rep.out"
        "$BIN" bench publisher --server "http://127.0.0.1:$port" --concurrency 50 --seconds "$SECONDS_EACH" \
            --json >"$out" 2>"$out.err" || die "bench publisher failed: $(cat "$out" "$out.err")"
        pools+=("$(jq -r 'select(.phase == "ratio") | .pool_per_second' "$out")")
        news+=("$(jq -r 'select(.phase == "ratio") | .new_per_second' "$out")")
        ratios+=("$(jq -r 'select(.phase == "ratio") | .ratio' "$out")")
        log "publisher #$rep: $(jq -c 'select(.phase == "ratio")' "$out")"
    done
    stop_pid "$SERVER_PID"
    SUMMARY+=("publisher (50 concurrent): pool $(median "${pools[@]}")/s, new connection each $(median "${news[@]}")/s, ratio $(median "${ratios[@]}") (runs: ${ratios[*]})")
}

failover() {
    local mode transport out
    for transport in $FAILOVER_TRANSPORTS; do
        for mode in $MODES; do
            out="$WORK/failover-$mode-$transport.out"
            "$BIN" bench failover --kills "$KILLS" --mode "$mode" --transport "$transport" \
                --heartbeat 1 --k 2 --backoff-base 1 --json >"$out" 2>"$out.err" ||
                die "bench failover failed: $(tail -5 "$out") $(cat "$out.err")"
            log "failover $mode $transport: $(jq -c 'select(.phase == "failover")' "$out")"
            SUMMARY+=("failover $mode $transport ($KILLS kills, heartbeat 1 s, k 2, backoff base 1 s): $(jq -r 'select(.phase == "failover") | "median \(.median_ms) ms, p90 \(.p90_ms) ms, max \(.max_ms) ms, goal <= \(.bound_ms) ms"' "$out")")
        done
    done
}

for part in $PARTS; do
    case $part in
        memory) memory ;;
        publisher) publisher ;;
        failover) failover ;;
        *) die "unknown part $part" ;;
    esac
done

log "load: $(uptime)"
printf '%s\n' "${SUMMARY[@]}"
