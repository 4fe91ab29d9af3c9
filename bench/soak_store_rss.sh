#!/usr/bin/env bash
# Where the soak's RSS growth comes from (bench/soak.sh, RESULTS.md "Soak"): server RSS against
# messages published, with no subscriber, for `history_store` memory and disk (`--durability
# batch`), everything else as in the soak (100 channels, `--history-messages 100`, ~40-byte JSON
# payloads like the soak's). ROUNDS rounds of PER_ROUND publishes (`holdfast bench publish`, as fast
# as the server answers); after each: RSS (VmRSS), the store's disk_bytes and history_bytes.
# 30,000 messages = 10 minutes of the soak's 50/s.
#
#   bench/soak_store_rss.sh                 # ROUNDS=12 PER_ROUND=30000, ~2 min
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT
ROUNDS=${ROUNDS:-12}
PER_ROUND=${PER_ROUND:-30000}
STORES=${STORES:-"memory disk"}
need curl curl
need jq jq
need ss iproute2
BIN=$(holdfast_bin)
log "load average: $(cut -d" " -f1-3 /proc/loadavg)"
printf '%-7s %9s %9s %11s %13s\n' store published rss_kib disk_bytes history_bytes
for store in $STORES; do
    port=$(free_port)
    rm -rf "$WORK/data"
    start_holdfast "$BIN" "$port" --history-store "$store" --data-dir "$WORK/data" --durability batch \
        --history-messages 100 --keepalive-requests 1000000
    for r in $(seq 0 "$ROUNDS"); do
        if [ "$r" -gt 0 ]; then
            "$BIN" bench publish --json --server "127.0.0.1:$port" --channels 100 --prefix soak \
                --messages "$PER_ROUND" --connections 4 --size 40 >/dev/null
        fi
        sleep 1
        stats=$(curl -s "http://127.0.0.1:$port/admin/stats")
        printf '%-7s %9s %9s %11s %13s\n' "$store" $((r * PER_ROUND)) \
            "$(awk '/^VmRSS:/ { print $2 }' "/proc/$SERVER_PID/status")" \
            "$(jq -r '.store.disk_bytes // "-"' <<<"$stats")" "$(jq -r .history_bytes <<<"$stats")"
    done
    stop_pid "$SERVER_PID"
done
echo "load average at the end: $(cut -d" " -f1-3 /proc/loadavg)"
