#!/usr/bin/env bash
# System calls and context switches per long-poll delivery: this tree vs the baseline binary.
# For each: a fresh server, `perf stat -p` on it while `holdfast bench fanout --longpoll` runs
# SUBSCRIBERS (1,000) long polls × MESSAGES (200) at RATE (20)/s; prints the client's result line
# and the counts (divide by the deliveries). Needs `perf` (linux-perf) and root.
#
# Environment (all optional): SUBSCRIBERS=1000 MESSAGES=200 RATE=20 HOLDFAST_BIN=path BASELINE_BIN=path
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT

SUBSCRIBERS=${SUBSCRIBERS:-1000}
MESSAGES=${MESSAGES:-200}
RATE=${RATE:-20}
need curl curl
need ss iproute2
need perf linux-perf
BIN=$(holdfast_bin)
BASE_BIN=$(baseline_bin)
log "load average: $(cut -d" " -f1-3 /proc/loadavg)"
EVENTS=raw_syscalls:sys_enter,syscalls:sys_enter_epoll_ctl,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex
EVENTS+=,syscalls:sys_enter_write,syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto,syscalls:sys_enter_writev
EVENTS+=,context-switches
for server in holdfast baseline; do
    bin=$BIN
    [ "$server" = baseline ] && bin=$BASE_BIN
    port=$(free_port)
    start_holdfast "$bin" "$port"
    perf stat -e "$EVENTS" -p "$SERVER_PID" -o "$WORK/stat.txt" &
    stat_pid=$!
    STARTED_PIDS+=("$stat_pid")
    echo "== $server ($bin)"
    "$BIN" bench fanout --json --server "127.0.0.1:$port" --subscribe /sub/bench --longpoll --subscribers "$SUBSCRIBERS" \
        --messages "$MESSAGES" --rate "$RATE" | tail -1
    kill -INT "$stat_pid"
    wait "$stat_pid" || true
    grep -v '^#' "$WORK/stat.txt" | grep -v '^$'
    stop_pid "$SERVER_PID"
done
echo "load average at the end: $(cut -d" " -f1-3 /proc/loadavg)"
