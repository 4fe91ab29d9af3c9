#!/usr/bin/env bash
# The disk history store (`--history-store disk`): what each durability mode costs a publisher,
# and how long a restart over a full store takes.
#
# 1. Publishes (PARTS=publish): for each repetition, number of publishers P (PUBLISHERS) and mode
#    (MODES: `memory` = `--history-store memory`, the reference; `none`, `batch`, `always` =
#    `--history-store disk --durability MODE`), interleaved: a fresh server (disk: a fresh data_dir
#    under $WORK, on /tmp), then `holdfast bench publish --connections P --pipeline 1 --size SIZE
#    --channels CHANNELS` (P keep-alive connections, one publish in flight on each: P concurrent
#    publishers; message i to channel i mod CHANNELS). Each cell's message count is set once by a
#    calibration run on its own fresh server (also the warm-up): DURATION s at the calibrated
#    rate, at least MIN_MESSAGES. After each run: /admin/stats `store.syncs` (with `always`, one
#    sync per group commit: publishes / syncs is the group size) and the server's CPU time; then
#    the data dir is deleted and `sync` run, so no run's dirty pages are written back in the next.
#    Cross-check (CHECK, "MODE:P …"): the same cell also measured by wrk (-t1 -c P -d DURATION s,
#    a Lua script POSTing SIZE bytes to channel n mod CHANNELS), on its own fresh server.
#    Goal: `always` at 50 publishers >= 25 % of `none`'s publishes/s.
# 2. Restart (PARTS=restart): one server (`--durability none`, `--history-messages
#    RESTART_MESSAGES`, `--history-max-bytes 2GiB`, `--history-seconds 720h`) filled with
#    RESTART_CHANNELS x RESTART_MESSAGES messages of SIZE bytes (FILL_CONNECTIONS pipelined
#    connections). Then RESTARTS times each: a top-up of one message per channel per 100 (so the
#    journal has a fresh tail; the oldest are evicted), stop it (`clean`: SIGTERM, waits for the
#    exit; `kill9`: SIGKILL), time `holdfast store check` on the stopped store (fjall's open +
#    reading every entry, without the server), then start `holdfast serve` on it and time from
#    the start to the first `GET /healthz` 200 (curl every 10 ms); at once then, a short poll of
#    the channel that sorts last (`r-999`, read back last) for its whole history (its time, and
#    from the start: a channel not read back yet is read when asked for); the log lines "history
#    store opened" (`millis` to serving) and "history store read back" (`millis` until every
#    message is in memory, messages recovered), and the RSS 1 s after that. Goal: <= 1 s to
#    serving.
#    PROFILE=1: one more (clean) restart under `perf record -g`, with the top of the report.
#
# Environment (all optional):
#   PARTS="publish restart"   MODES="memory none batch always"   PUBLISHERS="1 50"   REPS=3
#   DURATION=10   MIN_MESSAGES=2000   CHANNELS=100   SIZE=200   CHECK="none:50 always:50"
#   RESTART_CHANNELS=1000   RESTART_MESSAGES=1000   RESTARTS=3   FILL_CONNECTIONS=64
#   PROFILE=0   KEEP_LOGS=DIR (copy the servers' logs there)   HOLDFAST_BIN=path
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT

PARTS=${PARTS:-publish restart}
MODES=${MODES:-memory none batch always}
PUBLISHERS=${PUBLISHERS:-1 50}
REPS=${REPS:-3}
DURATION=${DURATION:-10}
MIN_MESSAGES=${MIN_MESSAGES:-2000}
CHANNELS=${CHANNELS:-100}
SIZE=${SIZE:-200}
CHECK=${CHECK-none:50 always:50}
RESTART_CHANNELS=${RESTART_CHANNELS:-1000}
RESTART_MESSAGES=${RESTART_MESSAGES:-1000}
RESTARTS=${RESTARTS:-3}
FILL_CONNECTIONS=${FILL_CONNECTIONS:-64}
PROFILE=${PROFILE:-0}
# Every request of a run on its connection: the server must not close them midway.
KEEPALIVE=(--keepalive-requests 4000000000)

need curl curl
need jq jq
need ss iproute2
need wrk wrk
BIN=$(holdfast_bin)
log "load average: $(cut -d" " -f1-3 /proc/loadavg)"
log "data dirs under $WORK: $(df -h --output=source,fstype,size,avail "$WORK" 2>/dev/null | tail -1 || df -h "$WORK" | tail -1)"

# What one synced write costs this disk: 1,000 writes of 4 KiB, each synced (dd oflag=dsync).
dd_out=$(dd if=/dev/zero of="$WORK/dsync" bs=4k count=1000 oflag=dsync 2>&1 | tail -1)
rm -f "$WORK/dsync"
log "synced 4 KiB writes on $WORK: $dd_out"

stats() { curl -fs "http://127.0.0.1:$1/admin/stats"; }
# CPU seconds (user + system) the process has used.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / hz }' "/proc/$1/stat"; }
ms() { awk -v s="$1" 'BEGIN { printf "%.0f", s * 1000 }'; }
keep_log() { [ -z "${KEEP_LOGS:-}" ] || { mkdir -p "$KEEP_LOGS" && cp "$1" "$KEEP_LOGS/$2"; }; }

# Server flags of a mode, for data dir $2.
mode_args() {
    case $1 in
        memory) echo --history-store memory ;;
        none | batch | always) echo --history-store disk --data-dir "$2" --durability "$1" ;;
        *) die "unknown mode $1" ;;
    esac
}

RUN=0
# Starts a fresh server for mode $1 on a fresh data dir; sets PORT, SERVER_PID.
fresh_server() {
    RUN=$((RUN + 1))
    local dir="$WORK/data-$RUN"
    DATA=$dir
    PORT=$(free_port)
    # shellcheck disable=SC2046 # mode_args is a list of words.
    start_holdfast "$BIN" "$PORT" $(mode_args "$1" "$dir") "${KEEPALIVE[@]}"
}

# Stops the server of a run and deletes its data dir, then `sync`: what one run left dirty in the
# page cache must not be written back during the next one's fsyncs (seen: wrk's p99 9x bench
# publish's, run right after the `none` runs had left ~270 MB unsynced).
end_run() {
    stop_pid "$SERVER_PID"
    rm -rf "$DATA"
    sync
}

# One `holdfast bench publish` run: publishers $1, messages $2, against $PORT; JSON line on stdout.
publish_run() {
    "$BIN" bench publish --json --server "127.0.0.1:$PORT" --connections "$1" --pipeline 1 \
        --channels "$CHANNELS" --size "$SIZE" --messages "$2" --prefix dur- >"$WORK/publish.json" 2>"$WORK/publish.err" ||
        die "bench publish failed: $(cat "$WORK/publish.json" "$WORK/publish.err")"
    cat "$WORK/publish.json"
}

# The wrk cross-check: publishers $1 for DURATION s against $PORT; one JSON line on stdout.
cat >"$WORK/post.lua" <<EOF
local n = 0
local body = string.rep("x", $SIZE)
request = function()
    n = n + 1
    return wrk.format("POST", "/pub/dur-" .. (n % $CHANNELS), { ["Content-Type"] = "text/plain" }, body)
end
done = function(summary, latency, requests)
    local bad = summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
    io.write(string.format('{"requests":%d,"seconds":%.3f,"per_second":%.1f,"p50_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,"errors":%d}\n',
        summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
        latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000, bad))
end
EOF
wrk_run() {
    wrk -t1 -c"$1" -d"${DURATION}s" --timeout 10s -s "$WORK/post.lua" "http://127.0.0.1:$PORT" >"$WORK/wrk.out" 2>&1 ||
        die "wrk failed: $(cat "$WORK/wrk.out")"
    local line
    line=$(grep '^{' "$WORK/wrk.out") || die "no line from wrk: $(cat "$WORK/wrk.out")"
    [ "$(jq .errors <<<"$line")" = 0 ] || die "wrk saw errors: $(cat "$WORK/wrk.out")"
    printf '%s\n' "$line"
}

# --- 1. publishes per durability mode ---
declare -A COUNT RATE P50 P99 SYNCS CPU WRATE WP50 WP99
if [[ " $PARTS " == *" publish "* ]]; then
    log "part 1: publishes, modes: $MODES; publishers: $PUBLISHERS; $CHANNELS channels, $SIZE B each, $REPS repetitions"
    for p in $PUBLISHERS; do
        for mode in $MODES; do
            fresh_server "$mode"
            cal=$((p == 1 ? 1000 : 20000))
            line=$(publish_run "$p" "$cal")
            n=$(jq -r --argjson d "$DURATION" --argjson min "$MIN_MESSAGES" '[.per_second * $d | ceil, $min] | max' <<<"$line")
            COUNT[$mode,$p]=$n
            log "  calibration $mode P=$p: $(jq -r .per_second <<<"$line")/s -> $n messages a run"
            end_run
        done
    done
    for rep in $(seq "$REPS"); do
        for p in $PUBLISHERS; do
            for mode in $MODES; do
                fresh_server "$mode"
                cpu0=$(cpu_s "$SERVER_PID")
                line=$(publish_run "$p" "${COUNT[$mode,$p]}")
                cpu1=$(cpu_s "$SERVER_PID")
                s=$(stats "$PORT")
                syncs=$(jq '.store.syncs // 0' <<<"$s")
                secs=$(jq .seconds <<<"$line")
                RATE[$mode,$p]+="$(jq .per_second <<<"$line") "
                P50[$mode,$p]+="$(jq .p50_ms <<<"$line") "
                P99[$mode,$p]+="$(jq .p99_ms <<<"$line") "
                SYNCS[$mode,$p]+="$(ratio "$(jq .ok <<<"$line")" "$syncs") "
                CPU[$mode,$p]+="$(awk -v a="$cpu0" -v b="$cpu1" -v s="$secs" 'BEGIN { printf "%.0f", (b - a) * 100 / s }') "
                log "  rep $rep $mode P=$p: $(jq -c '{ok,seconds,per_second,p50_ms,p99_ms,max_ms}' <<<"$line") syncs $syncs disk $(jq '.store.disk_bytes // 0' <<<"$s") B"
                end_run
                if [[ " $CHECK " == *" $mode:$p "* ]]; then
                    fresh_server "$mode"
                    w=$(wrk_run "$p")
                    WRATE[$mode,$p]+="$(jq .per_second <<<"$w") "
                    WP50[$mode,$p]+="$(jq .p50_ms <<<"$w") "
                    WP99[$mode,$p]+="$(jq .p99_ms <<<"$w") "
                    log "  rep $rep $mode P=$p wrk: $w syncs $(stats "$PORT" | jq '.store.syncs // 0')"
                    end_run
                fi
            done
        done
    done
fi

# --- 2. restart over a full store ---
R_FJ=() R_RB=() U_FJ=() U_RB=() R_FIRST=() R_POLL=() U_FIRST=() U_POLL=() R_SERVE=() R_MILLIS=() R_RSS=() R_CHECK=() R_MSGS=() U_SERVE=() U_MILLIS=() U_RSS=() U_CHECK=() U_MSGS=()
if [[ " $PARTS " == *" restart "* ]]; then
    total=$((RESTART_CHANNELS * RESTART_MESSAGES))
    DIR="$WORK/restart-data"
    PORT=$(free_port)
    RARGS=(--history-store disk --data-dir "$DIR" --durability none --history-messages "$RESTART_MESSAGES"
        --history-max-bytes 2GiB --history-seconds 720h "${KEEPALIVE[@]}")
    SLOG=0
    # Starts the restart server; sets SERVER_PID, SERVE_MS (start to first /healthz 200), LOGF.
    start_timed() {
        SLOG=$((SLOG + 1))
        LOGF="$WORK/restart-$SLOG.log"
        local t0 t1
        t0=$EPOCHREALTIME
        t0_start=$t0
        env RUST_LOG=info,fjall=trace "${PREFIX_CMD[@]}" "$BIN" serve --listen "127.0.0.1:$PORT" --log-format json "${RARGS[@]}" >"$LOGF" 2>&1 &
        SERVER_PID=$!
        STARTED_PIDS+=("$SERVER_PID")
        until curl -fs -o /dev/null --max-time 2 "http://127.0.0.1:$PORT/healthz"; do
            kill -0 "$SERVER_PID" 2>/dev/null || die "server exited: $(tail -5 "$LOGF")"
            sleep 0.01
        done
        t1=$EPOCHREALTIME
        SERVE_MS=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", (b - a) * 1000 }')
    }
    opened() { grep -h '"history store opened"' "$LOGF" | tail -1; }
    # Milliseconds between the first log lines (of $LOGF) whose messages match $1 and $2.
    span_ms() {
        jq -rs --arg a "$1" --arg b "$2" '
            def t: .timestamp[11:] | split(":") | (.[0] | tonumber) * 3600 + (.[1] | tonumber) * 60 + (.[2][:-1] | tonumber);
            ([.[] | select(.message | test($a))][0] | t) as $ta | ([.[] | select(.message | test($b))][0] | t) as $tb
            | ($tb - $ta) * 1000 | round' "$LOGF" 2>/dev/null || echo -
    }
    topup() {
        "$BIN" bench publish --json --server "127.0.0.1:$PORT" --connections 8 --channels "$RESTART_CHANNELS" \
            --messages $((RESTART_CHANNELS * 10)) --size "$SIZE" --prefix r- >/dev/null || die "top-up failed"
    }
    # Stops the server: clean (SIGTERM, wait up to 60 s for its own exit) or kill9.
    stop_server() {
        if [ "$1" = clean ]; then
            kill -TERM "$SERVER_PID"
            local t0=$SECONDS
            while kill -0 "$SERVER_PID" 2>/dev/null; do
                [ $((SECONDS - t0)) -lt 60 ] || die "no exit 60 s after SIGTERM"
                sleep 0.05
            done
        else
            kill -KILL "$SERVER_PID"
        fi
        wait "$SERVER_PID" 2>/dev/null || true
        local keep=() p
        for p in "${STARTED_PIDS[@]}"; do [ "$p" = "$SERVER_PID" ] || keep+=("$p"); done
        STARTED_PIDS=("${keep[@]}")
    }
    check_ms() {
        local t0 t1
        t0=$EPOCHREALTIME
        "$BIN" store check "$DIR" >"$WORK/check.out" 2>&1 || die "store check: $(cat "$WORK/check.out")"
        t1=$EPOCHREALTIME
        awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.0f", (b - a) * 1000 }'
    }

    PREFIX_CMD=()
    log "part 2: restart over $RESTART_CHANNELS channels x $RESTART_MESSAGES messages of $SIZE B"
    start_timed
    log "  fresh store: serving after $SERVE_MS ms"
    t0=$SECONDS
    "$BIN" bench publish --json --server "127.0.0.1:$PORT" --connections "$FILL_CONNECTIONS" --pipeline 32 \
        --channels "$RESTART_CHANNELS" --messages "$total" --size "$SIZE" --prefix r- >"$WORK/fill.json" || die "fill failed: $(cat "$WORK/fill.json")"
    s=$(stats "$PORT")
    log "  filled in $((SECONDS - t0)) s: $(jq -c '{per_second,p99_ms}' "$WORK/fill.json"); store $(jq -c '.store | {channels,messages,disk_bytes}' <<<"$s"); RSS $(rss_kb "$SERVER_PID") KiB"
    [ "$(jq .store.messages <<<"$s")" = "$total" ] || die "the store holds $(jq .store.messages <<<"$s") messages, not $total"
    FILL_DISK=$(jq .store.disk_bytes <<<"$s") FILL_RSS=$(rss_kb "$SERVER_PID") FILL_RATE=$(jq .per_second "$WORK/fill.json")
    for how in clean kill9; do
        for i in $(seq "$RESTARTS"); do
            topup
            stop_server "$how"
            c=$(check_ms)
            start_timed
            # The channel read back last, asked for at once: read first, on demand.
            last="r-$((RESTART_CHANNELS - 1))"
            poll_s=$(curl -fs -o "$WORK/poll.json" -w '%{time_total}' "http://127.0.0.1:$PORT/sub/$last?transport=poll&history=$RESTART_MESSAGES") || die "poll of $last failed"
            poll_ms=$(awk -v t="$poll_s" 'BEGIN { printf "%.0f", t * 1000 }')
            first_ms=$(awk -v a="$t0_start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", (b - a) * 1000 }')
            got=$(jq '.messages | length' "$WORK/poll.json")
            [ "$got" = "$RESTART_MESSAGES" ] || die "the poll of $last got $got messages, not $RESTART_MESSAGES"
            until grep -q '"history store read back"' "$LOGF"; do
                kill -0 "$SERVER_PID" 2>/dev/null || die "server exited: $(tail -5 "$LOGF")"
                sleep 0.05
            done
            sleep 1
            rss=$(rss_kb "$SERVER_PID")
            o=$(opened)
            [ -n "$o" ] || die "no 'history store opened' line: $(head -5 "$LOGF")"
            b=$(grep -h '"history store read back"' "$LOGF" | tail -1)
            keep_log "$LOGF" "restart-$how-$i.log"
            # fjall's own recovery (its journal replay included); then serving; the read-back goes on.
            fj=$(span_ms '^Recovering database' '^Database recovery successful')
            log "  $how $i: serving after $SERVE_MS ms; $last's $got messages $first_ms ms after the start (poll $poll_ms ms); store check $c ms; opened $(jq -c '{millis,channels,closed_cleanly}' <<<"$o"); fjall recovery $fj ms; read back $(jq -c '{millis,messages}' <<<"$b"); RSS $rss KiB"
            # More than $total: evicted messages whose delete had not reached the store before the stop.
            [ "$(jq .messages <<<"$b")" -ge "$total" ] || die "recovered $(jq .messages <<<"$b") messages, fewer than $total"
            if [ "$how" = clean ]; then
                R_FJ+=("$fj") R_RB+=("$(jq .millis <<<"$b")") R_SERVE+=("$SERVE_MS") R_MILLIS+=("$(jq .millis <<<"$o")") R_RSS+=("$rss") R_CHECK+=("$c") R_MSGS+=("$(jq .messages <<<"$b")") R_FIRST+=("$first_ms") R_POLL+=("$poll_ms")
            else
                U_FJ+=("$fj") U_RB+=("$(jq .millis <<<"$b")") U_SERVE+=("$SERVE_MS") U_MILLIS+=("$(jq .millis <<<"$o")") U_RSS+=("$rss") U_CHECK+=("$c") U_MSGS+=("$(jq .messages <<<"$b")") U_FIRST+=("$first_ms") U_POLL+=("$poll_ms")
            fi
        done
    done
    if [ "$PROFILE" = 1 ] && command -v perf >/dev/null; then
        stop_server clean
        PREFIX_CMD=(perf record -F 2000 -g -o "$WORK/perf.data" --)
        start_timed
        log "  profiled restart: serving after $SERVE_MS ms (under perf); $(opened | jq -c '{millis}')"
        kill -INT "$SERVER_PID"
        wait "$SERVER_PID" 2>/dev/null || true
        PREFIX_CMD=()
        perf report -i "$WORK/perf.data" --stdio --no-children --sort comm,dso,symbol -g none 2>/dev/null | grep -E "^ +[0-9]" | sed "s/ *$//" | head -40 >&2 || true
        [ -z "${KEEP_LOGS:-}" ] || cp "$WORK/perf.data" "$KEEP_LOGS/"
    fi
fi

log "load average: $(cut -d" " -f1-3 /proc/loadavg)"

# --- summary ---
list() { printf '%s' "$1" | tr ' ' '\n' | grep . | paste -sd, | sed 's/,/, /g'; }
med() { [ -n "${1// /}" ] && median $1 || echo -; }
if [[ " $PARTS " == *" publish "* ]]; then
    echo
    echo "| mode | publishers | messages a run | publishes/s (median) | the runs | p50 ms | p99 ms | publishes per sync | server CPU % |"
    echo "|---|---:|---:|---:|---|---:|---:|---:|---:|"
    for p in $PUBLISHERS; do
        for mode in $MODES; do
            per_sync=-
            [ "$mode" = memory ] || [ "$mode" = none ] || per_sync=$(med "${SYNCS[$mode,$p]}")
            echo "| $mode | $p | ${COUNT[$mode,$p]} | $(med "${RATE[$mode,$p]}") | $(list "${RATE[$mode,$p]}") | $(med "${P50[$mode,$p]}") | $(med "${P99[$mode,$p]}") | $per_sync | $(med "${CPU[$mode,$p]}") |"
        done
    done
    if [ -n "$CHECK" ]; then
        echo
        echo "| cross-check (wrk -t1, ${DURATION} s) | publishes/s (median) | the runs | p50 ms | p99 ms | bench publish publishes/s | wrk / bench publish |"
        echo "|---|---:|---|---:|---:|---:|---:|"
        for cell in $CHECK; do
            mode=${cell%:*} p=${cell#*:}
            [ -n "${WRATE[$mode,$p]:-}" ] || continue
            echo "| $mode, $p publishers | $(med "${WRATE[$mode,$p]}") | $(list "${WRATE[$mode,$p]}") | $(med "${WP50[$mode,$p]}") | $(med "${WP99[$mode,$p]}") | $(med "${RATE[$mode,$p]}") | $(ratio "$(med "${WRATE[$mode,$p]}")" "$(med "${RATE[$mode,$p]}")") |"
        done
    fi
    if [ -n "${RATE[always,50]:-}" ] && [ -n "${RATE[none,50]:-}" ]; then
        r=$(ratio "$(med "${RATE[always,50]}")" "$(med "${RATE[none,50]}")")
        v=$(awk -v r="$r" 'BEGIN { print (r >= 0.25 ? "met" : "MISSED") }')
        echo
        echo "Goal: always / none at 50 publishers >= 0.25: $(med "${RATE[always,50]}") / $(med "${RATE[none,50]}") = **$r** ($v)"
    fi
fi
if [[ " $PARTS " == *" restart "* ]]; then
    verdict() { awk -v m="$1" 'BEGIN { print (m <= 1000 ? "met" : "MISSED") }'; }
    echo
    echo "Store: $total messages ($RESTART_CHANNELS channels x $RESTART_MESSAGES, $SIZE B), $FILL_DISK B on disk; filled at $FILL_RATE publishes/s; server RSS when full $FILL_RSS KiB"
    echo
    echo "| stop | start to /healthz 200 ms (median) | the runs | log millis to serving (median) | of which fjall recovery ms | start to r-last's history ms (median) | its poll ms | start to all read back ms (log, median) | the runs | store check ms (median) | RSS after read-back KiB (median) | messages recovered | goal <= 1 s |"
    echo "|---|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---|"
    rs=$(median "${R_SERVE[@]}") us=$(median "${U_SERVE[@]}")
    echo "| SIGTERM (clean) | $rs | $(list "${R_SERVE[*]}") | $(median "${R_MILLIS[@]}") | $(median "${R_FJ[@]}") | $(median "${R_FIRST[@]}") | $(median "${R_POLL[@]}") | $(median "${R_RB[@]}") | $(list "${R_RB[*]}") | $(median "${R_CHECK[@]}") | $(median "${R_RSS[@]}") | $(median "${R_MSGS[@]}") | $(verdict "$rs") |"
    echo "| kill -9 | $us | $(list "${U_SERVE[*]}") | $(median "${U_MILLIS[@]}") | $(median "${U_FJ[@]}") | $(median "${U_FIRST[@]}") | $(median "${U_POLL[@]}") | $(median "${U_RB[@]}") | $(list "${U_RB[*]}") | $(median "${U_CHECK[@]}") | $(median "${U_RSS[@]}") | $(median "${U_MSGS[@]}") | $(verdict "$us") |"
fi
