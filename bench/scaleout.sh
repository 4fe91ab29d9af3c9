#!/usr/bin/env bash
# Scale-out: several Holdfast nodes on one Redis (`--broker redis://…`) against as many
# nginx+Nchan servers in Redis mode, in the same run; and what the Redis broker costs a publish.
# One redis-server (started here on a free port, `--save "" --appendonly no`, flushed before
# every run) serves both; every run gets fresh servers and its own channel.
#
# Part `fanout` (for each repetition, for each server in SERVERS):
#   NODES servers on their own ports, all on the Redis: `holdfast` = this tree's release build
#   with `--broker redis://127.0.0.1:PORT/0`; `nchan` = nginx+Nchan, one nginx per node
#   (`worker_processes 1`, own config and prefix; `nchan_redis_conf` in nchan.conf.sh). Their RSS
#   is read (smaps_rollup; nginx: master + worker), then `holdfast bench fanout --server
#   n1,n2,…` opens SUBSCRIBERS SSE subscribers to one channel, subscriber g on node g mod NODES
#   (so they spread evenly), from CLIENT_PROCS processes (`--procs`), and pauses
#   (`--pause-file`). Once every node counts its share (Holdfast: /admin/stats subscribers.sse;
#   Nchan: nchan_stub_status) and SETTLE s more, RSS again: (after − before) / the node's
#   subscribers is the node's RSS per subscriber. Then PHASES phases, each MESSAGES message(s)
#   of SIZE B published to the first node (a burst when several) and waited for at every
#   subscriber. Per phase: deliveries/s (first publish to last delivery), latency p50/p99/max
#   (from just before each POST to each read; CLOCK_MONOTONIC, one clock for every client
#   process), lost, the servers' CPU (/proc/PID/stat) and redis-server's (`--broker-pid`:
#   /proc/PID/task/*/schedstat, to the microsecond, as Redis spends far less than a 10 ms clock
#   tick on a message). A run's row gives the medians over its phases, the lost summed, and
#   Redis: its CPU time over the phases / the phases' fan-out time (first publish to last
#   delivery; the CPU is read from before the first publish to 200 ms after the last delivery, so
#   this errs high), beside its share during SETTLE s with every subscriber open and nothing
#   published (idle%: its own background work, which a phase's share includes); srv_us/d: the
#   nodes' CPU time over the phases per delivery (nginx: master + worker; it includes the kernel's
#   loopback work done in the servers' write calls); sys_us/d: the kernel's part of it. The
#   summary's "with no user-space time at all" is Nchan's srv_us/d over Holdfast's sys_us/d: where
#   the machine is the limit (server, client and Redis share its cores), a server that spent no
#   user time would still pay its kernel part, so no server work can take the ratio beyond it.
#
# Part `publish` (for each repetition, for each config in PUB_CONFIGS):
#   `memory1`: one node, `--broker memory`; `redisN`: N nodes on the Redis. PUB_SUBSCRIBERS SSE
#   subscribers on one channel, spread evenly over the nodes and read to the end by `holdfast
#   bench idle --until-closed` (one client per node), plus one reader per node on a second
#   channel (`curl -N`). Then `holdfast bench publish`:
#   - latency: LAT_MESSAGES publishes to the subscribers' channel at LAT_RATE/s, one connection,
#     one request at a time, to the first node (each publish fanned out to every subscriber on
#     every node): p50/p99/max from the write to the answer;
#   - max publishes/s: TP_MESSAGES publishes as fast as they are answered (TP_CONNECTIONS
#     connections spread over the nodes, TP_PIPELINE requests in flight on each) to the second
#     channel: publishes/s, p50/p99 (loaded, so queueing included), and the CPU per publish of
#     redis-server and of the nodes over that run (schedstat).
#   `cut`, `tp_cut`: subscribers of either channel the nodes closed meanwhile (the readers'
#   end-of-stream count; the nodes' close reasons from /admin/stats are printed under the run).
#
# The summary gives medians over the repetitions, the Holdfast/Nchan ratios with the goals
# (Holdfast RSS per subscriber <= 512 B on every node; deliveries/s >= 4x Nchan's; p99 no worse
# than Nchan's; 0 lost), and what Redis adds per publish (redis1 against memory1; redis3 against
# redis1). A run during which another benchmark or cargo (a build, tests) was running is marked `*`.
#
# Everything shares the machine's cores: the client processes, every node and Redis. Each process
# may hold at most 20,000 descriptors, so the subscribers are spread over processes on both sides.
#
# Environment (all optional):
#   SMOKE=1              a quick check (~30 s quiet, ~90 s loaded): SUBSCRIBERS=6000 PHASES=3 REPS=1
#                        PUB_SUBSCRIBERS=3000 LAT_MESSAGES=40 TP_MESSAGES=5000
#   PARTS="fanout publish"
#   SERVERS="holdfast nchan"
#   REPS=3
#   SUBSCRIBERS=100000 NODES=6 PHASES=10 MESSAGES=1 SIZE=100
#   CLIENT_PROCS=        client processes for the subscribers (default: ceil(SUBSCRIBERS /
#                        MAX_PER_CLIENT), at least 2)
#   MAX_PER_CLIENT=18000
#   BINDS=…              source addresses for the subscribers (`--bind`); default one per node,
#                        127.0.0.2, 127.0.0.3, …; empty: none. From one address to a few ports the
#                        kernel's search for a free ephemeral port grows with the connections
#                        already open (100,000 subscribers took 65 s to open instead of 8 s),
#                        and one address reaches one server from ~28,000 ports at most
#   SETTLE=1             seconds between "every node counts its subscribers" and the RSS reading
#   HOLDFAST_ARGS=""     extra `holdfast serve` flags for every node (e.g. "--push-threads 1")
#   PUB_CONFIGS="memory1 redis1 redis3"
#   PUB_SUBSCRIBERS=18000 LAT_MESSAGES=200 LAT_RATE=20 TP_MESSAGES=50000 TP_CONNECTIONS=8 TP_PIPELINE=32
#   KEEP_LOGS=dir        keep every run's client output, the nodes' logs and Redis's log there
#   HOLDFAST_BIN=path    use this binary instead of building
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/nchan.conf.sh"
trap cleanup EXIT

if [ "${SMOKE:-0}" = 1 ]; then
    d_subs=6000 d_phases=3 d_reps=1 d_pub_subs=3000 d_lat=40 d_tp=5000
else
    d_subs=100000 d_phases=10 d_reps=3 d_pub_subs=18000 d_lat=200 d_tp=50000
fi
PARTS=${PARTS:-"fanout publish"}
SERVERS=${SERVERS:-"holdfast nchan"}
REPS=${REPS:-$d_reps}
SUBSCRIBERS=${SUBSCRIBERS:-$d_subs}
NODES=${NODES:-6}
PHASES=${PHASES:-$d_phases}
MESSAGES=${MESSAGES:-1}
SIZE=${SIZE:-100}
MAX_PER_CLIENT=${MAX_PER_CLIENT:-18000}
CLIENT_PROCS=${CLIENT_PROCS:-$(((SUBSCRIBERS + MAX_PER_CLIENT - 1) / MAX_PER_CLIENT))}
[ "$CLIENT_PROCS" -ge 2 ] || CLIENT_PROCS=2
if [ -z "${BINDS+set}" ]; then
    BINDS=""
    for i in $(seq "$NODES"); do BINDS+="${BINDS:+,}127.0.0.$((i + 1))"; done
fi
SETTLE=${SETTLE:-1}
HOLDFAST_ARGS=${HOLDFAST_ARGS:-}
PUB_CONFIGS=${PUB_CONFIGS:-"memory1 redis1 redis3"}
PUB_SUBSCRIBERS=${PUB_SUBSCRIBERS:-$d_pub_subs}
LAT_MESSAGES=${LAT_MESSAGES:-$d_lat}
LAT_RATE=${LAT_RATE:-20}
TP_MESSAGES=${TP_MESSAGES:-$d_tp}
TP_CONNECTIONS=${TP_CONNECTIONS:-8}
TP_PIPELINE=${TP_PIPELINE:-32}
KEEP_LOGS=${KEEP_LOGS:-}
[ -z "$KEEP_LOGS" ] || mkdir -p "$KEEP_LOGS"

for part in $PARTS; do case $part in fanout | publish) ;; *) die "unknown part $part" ;; esac; done
for server in $SERVERS; do case $server in holdfast | nchan) ;; *) die "unknown server $server" ;; esac; done
for config in $PUB_CONFIGS; do [[ $config =~ ^(memory1|redis[0-9]+)$ ]] || die "unknown config $config"; done
[ "$NODES" -ge 1 ] || die "NODES must be at least 1"

need curl curl
need jq jq
need ss iproute2
need redis-server redis-server
need redis-cli redis-tools
case " $PARTS " in *" fanout "*) case " $SERVERS " in *" nchan "*) need_nchan ;; esac ;; esac
BIN=$(holdfast_bin)

# Each (source address, node) pair takes its share of ~28,000 ephemeral ports.
PER_PAIR=$(((SUBSCRIBERS + NODES - 1) / NODES))
[ -z "$BINDS" ] || PER_PAIR=$(((PER_PAIR + $(tr ',' '\n' <<<"$BINDS" | wc -l) - 1) / $(tr ',' '\n' <<<"$BINDS" | wc -l)))
[ "$PER_PAIR" -le 25000 ] || die "$PER_PAIR connections from one source address to one node: give more BINDS"
log "load average: $(cut -d" " -f1-3 /proc/loadavg)"
log "fanout: $SUBSCRIBERS SSE subscribers over $NODES nodes, $CLIENT_PROCS client processes${BINDS:+, from $BINDS}; $PHASES phases of $MESSAGES message(s) of $SIZE B"

# The Redis both servers share.
REDIS_PORT=$(free_port)
mkdir -p "$WORK/redis"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$WORK/redis" \
    --logfile "$WORK/redis.log" &
REDIS_PID=$!
STARTED_PIDS+=("$REDIS_PID")
deadline=$((SECONDS + 10))
until [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; do
    [ "$SECONDS" -lt "$deadline" ] || die "redis-server did not start: $(cat "$WORK/redis.log")"
    sleep 0.1
done
REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"

# CPU nanoseconds the live threads of the processes given have run so far
# (/proc/PID/task/*/schedstat, first field).
cpu_ns() {
    local pid
    for pid in "$@"; do cat /proc/"$pid"/task/*/schedstat 2>/dev/null || true; done |
        awk '{ t += $1 } END { printf "%.0f\n", t }'
}

# "*" if another benchmark or a compiler is running now (its load would skew this run).
foreign() {
    if pgrep -f 'bench/(keepalive|idle|allocators|hostile|subscribers|mass_close|channels|fanout|transports|sdk)\.sh|^wrk ' >/dev/null ||
        pgrep -x 'rustc|cargo' >/dev/null; then
        echo '*'
    fi
}

# Subscribers node $2 (server kind $1) holds now.
node_count() {
    case $1 in
        holdfast) curl -fs "http://127.0.0.1:$2/admin/stats" | jq -r '.subscribers.sse' ;;
        nchan) nchan_subscribers "$2" ;;
    esac
}

# The share of N subscribers (dealt round-robin) that node $2 of $3 gets.
share() { echo $(($1 / $3 + ($2 < $1 % $3 ? 1 : 0))); }

# start_nodes KIND N [holdfast flags…]: starts N nodes; sets PORTS and PIDS.
start_nodes() {
    local kind=$1 n=$2 i port
    shift 2
    PORTS=() PIDS=()
    for i in $(seq "$n"); do
        port=$(free_port)
        # shellcheck disable=SC2086 # HOLDFAST_ARGS is a list of flags
        case $kind in
            holdfast) start_holdfast "$BIN" "$port" "$@" $HOLDFAST_ARGS ;;
            nchan) start_nchan_redis "$port" "$REDIS_PORT" ;;
        esac
        PORTS+=("$port") PIDS+=("$SERVER_PID")
    done
}

stop_nodes() {
    local pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
}

# Warnings and errors the nodes of this run logged (Holdfast: its shared log; nginx: each
# error.log), at most a few lines, and copies of the logs under KEEP_LOGS.
node_problems() {
    local kind=$1 tag=$2 port
    case $kind in
        holdfast)
            [ -f "$WORK/holdfast.log" ] || return 0
            [ -z "$KEEP_LOGS" ] || cp "$WORK/holdfast.log" "$KEEP_LOGS/$tag.holdfast.log"
            grep -E 'WARN|ERROR' "$WORK/holdfast.log" | head -5 | sed 's/^/  node log: /' || true
            : >"$WORK/holdfast.log"
            ;;
        nchan)
            for port in "${PORTS[@]}"; do
                [ -z "$KEEP_LOGS" ] || cp "$WORK/nchan-redis-$port/error.log" "$KEEP_LOGS/$tag.nginx-$port.log"
                grep -E '\[(error|crit|alert|emerg)\]' "$WORK/nchan-redis-$port/error.log" | head -3 |
                    sed "s/^/  nginx $port: /" || true
            done
            ;;
    esac
}

RUN=0

# fanout_once SERVER: one run of part fanout; sets F_* (see the table) and F_FOREIGN.
fanout_once() {
    local kind=$1 channel path i before=() after=() per=() list pids out pause client deadline want have idle0 idle1 t0 t1
    RUN=$((RUN + 1))
    channel="sc$RUN"
    redis-cli -p "$REDIS_PORT" flushall >/dev/null
    if [ "$kind" = holdfast ]; then
        start_nodes holdfast "$NODES" --broker "$REDIS_URL"
        path="/sub/$channel?transport=sse"
    else
        start_nodes nchan "$NODES"
        path="/sub/$channel" # SSE by the client's Accept: text/event-stream
    fi
    sleep "$SETTLE"
    for i in "${!PIDS[@]}"; do before+=("$(tree_rss_kb "${PIDS[$i]}")"); done
    list=$(printf '127.0.0.1:%s,' "${PORTS[@]}") list=${list%,}
    pids=$(printf '%s,' "${PIDS[@]}") pids=${pids%,}
    out="$WORK/fanout-$RUN.out" pause="$WORK/pause-$RUN"
    F_FOREIGN=$(foreign)
    "$BIN" bench fanout --json --server "$list" ${BINDS:+--bind "$BINDS"} --subscribe "$path" \
        --publish "/pub/$channel" --subscribers "$SUBSCRIBERS" --messages "$MESSAGES" --phases "$PHASES" \
        --size "$SIZE" --procs "$CLIENT_PROCS" --server-pid "$pids" --broker-pid "$REDIS_PID" \
        --pause-file "$pause" >"$out" 2>"$out.err" &
    client=$!
    STARTED_PIDS+=("$client")
    deadline=$((SECONDS + 120 + SUBSCRIBERS / 500))
    until [ -s "$pause" ]; do
        kill -0 "$client" 2>/dev/null || die "$kind: the client exited while subscribing: $(cat "$out.err")"
        [ "$SECONDS" -lt "$deadline" ] || die "$kind: the client did not finish subscribing"
        sleep 0.2
    done
    F_SUBSCRIBE_S=$(jq -r '.subscribe_seconds | . * 10 | round / 10' "$pause")
    deadline=$((SECONDS + 30))
    for i in "${!PORTS[@]}"; do
        want=$(share "$SUBSCRIBERS" "$i" "$NODES")
        until have=$(node_count "$kind" "${PORTS[$i]}") && [ "$have" = "$want" ]; do
            [ "$SECONDS" -lt "$deadline" ] || die "$kind node $((i + 1)) counts ${have:-?} subscribers of $want"
            sleep 0.2
        done
    done
    # Redis's own background work meanwhile (every subscriber open, nothing published): the
    # baseline of its share during the fan-out.
    idle0=$(cpu_ns "$REDIS_PID") t0=$EPOCHREALTIME
    sleep "$SETTLE"
    idle1=$(cpu_ns "$REDIS_PID") t1=$EPOCHREALTIME
    F_REDIS_IDLE=$(awk -v a="$idle0" -v b="$idle1" -v s="$t0" -v e="$t1" 'BEGIN { printf "%.1f\n", (b - a) / 1e7 / (e - s) }')
    for i in "${!PIDS[@]}"; do
        after+=("$(tree_rss_kb "${PIDS[$i]}")")
        per+=("$(awk -v b="${before[$i]}" -v a="${after[$i]}" -v n="$(share "$SUBSCRIBERS" "$i" "$NODES")" \
            'BEGIN { printf "%.0f\n", (a - b) * 1024 / n }')")
    done
    rm -f "$pause"
    wait "$client" || die "$kind: the client failed: $(cat "$out.err")"
    F_FOREIGN+=$(foreign)
    [ -z "$KEEP_LOGS" ] || cp "$out" "$KEEP_LOGS/fanout-$RUN-$kind.jsonl"
    F_PROBLEMS=$(node_problems "$kind" "fanout-$RUN-$kind")
    stop_nodes
    F_RSS_BEFORE=$(median "${before[@]}") F_RSS_AFTER=$(median "${after[@]}")
    F_PER=$(median "${per[@]}")
    F_PER_MAX=$(printf '%s\n' "${per[@]}" | sort -g | tail -1)
    F_PER_ALL="${per[*]}"
    # Per phase lines → the run's figures.
    read -r F_PHASES F_DPS F_P50 F_P99 F_MAX F_LOST F_REDIS_PCT F_SRV F_SYS < <(jq -rs '
        def median: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor]
            else (.[length / 2 - 1] + .[length / 2]) / 2 end;
        def n: if . == null then "nan" else . * 1000 | round / 1000 end;
        [.[] | select(.phase | type == "number")] as $p
        | ($p | map(.seconds) | add) as $secs
        | ($p | map(.broker_cpu_s // 0) | add) as $redis
        | [($p | length),
           ($p | map(.deliveries_per_s) | median | floor),
           ($p | map(.p50_ms) | median | n),
           ($p | map(.p99_ms) | median | n),
           ($p | map(.max_ms) | max | n),
           ($p | map(.lost + .extra) | add),
           (if $secs > 0 then ($redis / $secs * 1000 | round) / 10 else "nan" end),
           (($p | map(.server_cpu_s // 0) | add) * 1e6 / ([($p | map(.deliveries) | add), 1] | max) * 10 | round / 10),
           (($p | map(.server_system_cpu_s // 0) | add) * 1e6 / ([($p | map(.deliveries) | add), 1] | max) * 10 | round / 10)]
        | map(tostring) | join(" ")' "$out")
    [ "$F_PHASES" = "$PHASES" ] || die "$kind: $F_PHASES phase lines of $PHASES: $(cat "$out" "$out.err")"
}

# publish_once CONFIG: one run of part publish; sets P_* and P_FOREIGN.
publish_once() {
    local config=$1 n broker channel tp i readers=() tp_readers=() outs=() take procs out lat tp_out r0 r1 s0 s1 deadline want have list port cut
    RUN=$((RUN + 1))
    channel="pb$RUN" tp="tp$RUN"
    redis-cli -p "$REDIS_PORT" flushall >/dev/null
    case $config in
        memory1) n=1 broker=memory ;;
        redis*) n=${config#redis} broker=$REDIS_URL ;;
    esac
    start_nodes holdfast "$n" --broker "$broker" --keepalive-requests 4000000000
    for i in "${!PORTS[@]}"; do
        take=$(share "$PUB_SUBSCRIBERS" "$i" "$n")
        procs=$(((take + MAX_PER_CLIENT - 1) / MAX_PER_CLIENT))
        [ "$procs" -ge 1 ] || procs=1
        out="$WORK/readers-$RUN-$i.out"
        "$BIN" bench idle --json --until-closed --server "127.0.0.1:${PORTS[$i]}" --connections "$take" \
            --procs "$procs" --path "/sub/$channel-0?transport=sse" >"$out" 2>"$out.err" &
        readers+=("$!") outs+=("$out")
        STARTED_PIDS+=("$!")
        # The second channel's reader: curl (large reads) takes up to ~60,000 messages a second.
        curl -sN -o /dev/null "http://127.0.0.1:${PORTS[$i]}/sub/$tp-0?transport=sse" &
        tp_readers+=("$!")
        STARTED_PIDS+=("$!")
    done
    deadline=$((SECONDS + 120))
    for i in "${!readers[@]}"; do wait_client_open "${readers[$i]}" "${outs[$i]}" "$deadline"; done
    deadline=$((SECONDS + 30))
    for i in "${!PORTS[@]}"; do
        want=$(($(share "$PUB_SUBSCRIBERS" "$i" "$n") + 1))
        until have=$(node_count holdfast "${PORTS[$i]}") && [ "$have" = "$want" ]; do
            [ "$SECONDS" -lt "$deadline" ] || die "$config node $((i + 1)) counts ${have:-?} subscribers of $want"
            sleep 0.2
        done
    done
    sleep "$SETTLE"
    P_FOREIGN=$(foreign)
    lat=$("$BIN" bench publish --json --server "127.0.0.1:${PORTS[0]}" --channels 1 --prefix "$channel-" \
        --messages "$LAT_MESSAGES" --connections 1 --pipeline 1 --rate "$LAT_RATE" --size "$SIZE" 2>&1 |
        grep '"phase"' || true)
    [ -n "$lat" ] || die "$config: bench publish (latency) printed no result"
    list=$(printf '127.0.0.1:%s,' "${PORTS[@]}") list=${list%,}
    # Let the last fan-out to the subscribers end first: a shard still writing to thousands of
    # them while the burst starts lets the second channel's reader fall max_pending_bytes
    # behind, and the node cuts it (slow_consumer), however fast it reads.
    sleep "$SETTLE"
    r0=$(cpu_ns "$REDIS_PID") s0=$(cpu_ns "${PIDS[@]}")
    tp_out=$("$BIN" bench publish --json --server "$list" --channels 1 --prefix "$tp-" --messages "$TP_MESSAGES" \
        --connections "$TP_CONNECTIONS" --pipeline "$TP_PIPELINE" --size "$SIZE" 2>&1 | grep '"phase"' || true)
    r1=$(cpu_ns "$REDIS_PID") s1=$(cpu_ns "${PIDS[@]}")
    [ -n "$tp_out" ] || die "$config: bench publish (throughput) printed no result"
    P_FOREIGN+=$(foreign)
    # Why the nodes closed connections so far (the readers are still open; the publishers' own
    # closes show as peer_closed).
    P_REASONS=$(for port in "${PORTS[@]}"; do curl -fs "http://127.0.0.1:$port/admin/stats" || true; done |
        jq -rs 'map(.closed // {} | to_entries[]) | group_by(.key) | map({key: .[0].key, value: (map(.value) | add)})
            | map(select(.value > 0) | "\(.key) \(.value)") | join(", ")')
    P_CUT=0 P_TP_CUT=0
    for i in "${!readers[@]}"; do
        stop_pid "${readers[$i]}"
        cut=$(jq -rs 'map(select(.phase == "closed") | .closed) | add // 0' "${outs[$i]}")
        P_CUT=$((P_CUT + cut))
    done
    for i in "${!tp_readers[@]}"; do
        # A curl that has ended saw its stream closed by the node.
        kill -0 "${tp_readers[$i]}" 2>/dev/null || P_TP_CUT=$((P_TP_CUT + 1))
        stop_pid "${tp_readers[$i]}"
    done
    [ -z "$KEEP_LOGS" ] || printf '%s\n%s\n' "$lat" "$tp_out" >"$KEEP_LOGS/publish-$RUN-$config.jsonl"
    P_PROBLEMS=$(node_problems holdfast "publish-$RUN-$config")
    stop_nodes
    P_NODES=$n
    read -r P_LAT_P50 P_LAT_P99 P_LAT_MAX P_LAT_FAILED < <(jq -r '"\(.p50_ms) \(.p99_ms) \(.max_ms) \(.failed)"' <<<"$lat")
    read -r P_TP P_TP_P50 P_TP_P99 P_TP_FAILED P_TP_ERROR < <(jq -r '"\(.per_second) \(.p50_ms) \(.p99_ms) \(.failed) \(.first_error // "-")"' <<<"$tp_out")
    P_FAILED=$((P_LAT_FAILED + P_TP_FAILED))
    [ "$P_FAILED" = 0 ] || P_PROBLEMS+="${P_PROBLEMS:+$'\n'}  failed publishes: latency $(jq -r '.first_error' <<<"$lat"); throughput $P_TP_ERROR"
    [ $((P_CUT + P_TP_CUT)) = 0 ] || P_PROBLEMS+="${P_PROBLEMS:+$'\n'}  nodes' close reasons (/admin/stats): $P_REASONS"
    if [ "$broker" = memory ]; then
        P_REDIS_US="-"
    else
        P_REDIS_US=$(awk -v a="$r0" -v b="$r1" -v m="$TP_MESSAGES" 'BEGIN { printf "%.1f\n", (b - a) / 1e3 / m }')
    fi
    P_NODES_US=$(awk -v a="$s0" -v b="$s1" -v m="$TP_MESSAGES" 'BEGIN { printf "%.1f\n", (b - a) / 1e3 / m }')
}

verdict() { awk -v c="$1" 'BEGIN { print (c ? "met" : "MISSED") }'; }
worst() { printf '%s\n' "$@" | sort -g | tail -1; }
FOREIGN_RUNS=0

# ---- part fanout ----
declare -A F_RUNS_PER F_RUNS_PERMAX F_RUNS_DPS F_RUNS_P50 F_RUNS_P99 F_RUNS_MAX F_RUNS_LOST F_RUNS_RPCT F_RUNS_RIDLE F_RUNS_SRV F_RUNS_SYS
if [[ " $PARTS " == *" fanout "* ]]; then
    echo "fanout: $SUBSCRIBERS SSE subscribers over $NODES nodes on one Redis; $PHASES phases of $MESSAGES message(s) of $SIZE B to the first node"
    FMT='%-9s %4s %6s %7s %7s %7s %10s %8s %8s %8s %6s %7s %7s %8s %8s\n'
    # shellcheck disable=SC2059 # the format is ours
    printf "$FMT" server rep subs sub_s B/sub B/max deliv/s p50_ms p99_ms max_ms lost redis% idle% srv_us/d sys_us/d
    for rep in $(seq "$REPS"); do
        for server in $SERVERS; do
            fanout_once "$server"
            # shellcheck disable=SC2059
            printf "$FMT" "$server" "$rep${F_FOREIGN:0:1}" "$SUBSCRIBERS" "$F_SUBSCRIBE_S" "$F_PER" "$F_PER_MAX" "$F_DPS" \
                "$F_P50" "$F_P99" "$F_MAX" "$F_LOST" "$F_REDIS_PCT" "$F_REDIS_IDLE" "$F_SRV" "$F_SYS"
            echo "  RSS per node (KiB, median) $F_RSS_BEFORE -> $F_RSS_AFTER; B/sub per node: $F_PER_ALL"
            [ -z "$F_PROBLEMS" ] || printf '%s\n' "$F_PROBLEMS"
            [ -n "$F_FOREIGN" ] && FOREIGN_RUNS=$((FOREIGN_RUNS + 1))
            F_RUNS_PER[$server]+="$F_PER " F_RUNS_PERMAX[$server]+="$F_PER_MAX " F_RUNS_DPS[$server]+="$F_DPS "
            F_RUNS_P50[$server]+="$F_P50 " F_RUNS_P99[$server]+="$F_P99 " F_RUNS_MAX[$server]+="$F_MAX "
            F_RUNS_LOST[$server]+="$F_LOST " F_RUNS_RPCT[$server]+="$F_REDIS_PCT " F_RUNS_RIDLE[$server]+="$F_REDIS_IDLE " F_RUNS_SRV[$server]+="$F_SRV " F_RUNS_SYS[$server]+="$F_SYS "
        done
    done
fi

# ---- part publish ----
declare -A P_RUNS_P50 P_RUNS_P99 P_RUNS_MAX P_RUNS_TP P_RUNS_TP50 P_RUNS_TP99 P_RUNS_RUS P_RUNS_NUS P_RUNS_CUT P_RUNS_TPCUT P_RUNS_FAILED P_RUNS_NODES
if [[ " $PARTS " == *" publish "* ]]; then
    echo
    echo "publish: $PUB_SUBSCRIBERS SSE subscribers spread over the nodes; latency: $LAT_MESSAGES publishes at $LAT_RATE/s to their channel, one at a time; max: $TP_MESSAGES on $TP_CONNECTIONS connections x $TP_PIPELINE pipelined to a channel with one reader per node"
    PFMT='%-8s %4s %5s %6s %8s %8s %8s %9s %8s %8s %10s %10s %5s %6s %6s\n'
    # shellcheck disable=SC2059
    printf "$PFMT" config rep nodes subs p50_ms p99_ms max_ms max_pub/s mp50_ms mp99_ms redis_us/p nodes_us/p cut tp_cut failed
    for rep in $(seq "$REPS"); do
        for config in $PUB_CONFIGS; do
            publish_once "$config"
            # shellcheck disable=SC2059
            printf "$PFMT" "$config" "$rep${P_FOREIGN:0:1}" "$P_NODES" "$PUB_SUBSCRIBERS" "$P_LAT_P50" "$P_LAT_P99" "$P_LAT_MAX" \
                "$P_TP" "$P_TP_P50" "$P_TP_P99" "$P_REDIS_US" "$P_NODES_US" "$P_CUT" "$P_TP_CUT" "$P_FAILED"
            [ -z "$P_PROBLEMS" ] || printf '%s\n' "$P_PROBLEMS"
            [ -n "$P_FOREIGN" ] && FOREIGN_RUNS=$((FOREIGN_RUNS + 1))
            P_RUNS_P50[$config]+="$P_LAT_P50 " P_RUNS_P99[$config]+="$P_LAT_P99 " P_RUNS_MAX[$config]+="$P_LAT_MAX "
            P_RUNS_TP[$config]+="$P_TP " P_RUNS_TP50[$config]+="$P_TP_P50 " P_RUNS_TP99[$config]+="$P_TP_P99 "
            P_RUNS_RUS[$config]+="$P_REDIS_US " P_RUNS_NUS[$config]+="$P_NODES_US " P_RUNS_CUT[$config]+="$P_CUT " P_RUNS_TPCUT[$config]+="$P_TP_CUT "
            P_RUNS_FAILED[$config]+="$P_FAILED " P_RUNS_NODES[$config]=$P_NODES
        done
    done
fi

# ---- summary ----
echo
echo "summary (medians of $REPS; lost, cut and failed: the largest of the runs)"
# shellcheck disable=SC2086,SC2059 # word lists throughout; the formats are ours
if [[ " $PARTS " == *" fanout "* ]]; then
    declare -A S_PERMAX S_DPS S_P99 S_LOST S_SRV S_SYS
    printf "$FMT" server reps subs - B/sub B/max deliv/s p50_ms p99_ms max_ms lost redis% idle% srv_us/d sys_us/d
    for server in $SERVERS; do
        S_PERMAX[$server]=$(median ${F_RUNS_PERMAX[$server]}) S_DPS[$server]=$(median ${F_RUNS_DPS[$server]})
        S_P99[$server]=$(median ${F_RUNS_P99[$server]}) S_LOST[$server]=$(worst ${F_RUNS_LOST[$server]})
        S_SRV[$server]=$(median ${F_RUNS_SRV[$server]}) S_SYS[$server]=$(median ${F_RUNS_SYS[$server]})
        # shellcheck disable=SC2059
        printf "$FMT" "$server" "$REPS" "$SUBSCRIBERS" - "$(median ${F_RUNS_PER[$server]})" "${S_PERMAX[$server]}" \
            "${S_DPS[$server]}" "$(median ${F_RUNS_P50[$server]})" "${S_P99[$server]}" "$(median ${F_RUNS_MAX[$server]})" \
            "${S_LOST[$server]}" "$(median ${F_RUNS_RPCT[$server]})" "$(median ${F_RUNS_RIDLE[$server]})" "${S_SRV[$server]}" "${S_SYS[$server]}"
    done
    if [ -n "${S_DPS[holdfast]:-}" ]; then
        echo "holdfast RSS per subscriber (largest node) ${S_PERMAX[holdfast]} B, goal <= 512 B: $(verdict "$(awk -v b="${S_PERMAX[holdfast]}" 'BEGIN { print (b <= 512) }')")"
        echo "holdfast lost ${S_LOST[holdfast]}, goal 0: $(verdict "$([ "${S_LOST[holdfast]}" = 0 ] && echo 1 || echo 0)")"
    fi
    if [ -n "${S_DPS[holdfast]:-}" ] && [ -n "${S_DPS[nchan]:-}" ]; then
        r=$(ratio "${S_DPS[holdfast]}" "${S_DPS[nchan]}")
        echo "holdfast/nchan deliveries/s ${r}x, goal >= 4x: $(verdict "$(awk -v r="$r" 'BEGIN { print (r >= 4) }')")"
        echo "holdfast/nchan p99 ${S_P99[holdfast]} vs ${S_P99[nchan]} ms ($(ratio "${S_P99[holdfast]}" "${S_P99[nchan]}")x), goal no worse: $(verdict "$(awk -v a="${S_P99[holdfast]}" -v b="${S_P99[nchan]}" 'BEGIN { print (a <= b) }')")"
        echo "holdfast/nchan server CPU per delivery ${S_SRV[holdfast]} vs ${S_SRV[nchan]} us ($(ratio "${S_SRV[holdfast]}" "${S_SRV[nchan]}")x), of it in the kernel ${S_SYS[holdfast]} vs ${S_SYS[nchan]} us"
        # Where the run is CPU-bound, a Holdfast that spent nothing in user space would still pay
        # its kernel part per delivery: Nchan's CPU per delivery over that is the most its
        # deliveries/s could be against Nchan's, with everything else on the machine unchanged.
        echo "holdfast/nchan deliveries/s with no user-space time at all, at most: $(ratio "${S_SRV[nchan]}" "${S_SYS[holdfast]}")x (nchan CPU per delivery / holdfast kernel CPU per delivery)"
        echo "holdfast/nchan RSS per subscriber (largest node) $(ratio "${S_PERMAX[holdfast]}" "${S_PERMAX[nchan]}")x; nchan lost ${S_LOST[nchan]}"
    fi
    for server in $SERVERS; do
        echo "$server: redis-server CPU $(median ${F_RUNS_RPCT[$server]}) % of the fan-out time ($(median ${F_RUNS_RIDLE[$server]}) % with the same subscribers and nothing published)"
    done
fi
# shellcheck disable=SC2086,SC2059 # word lists throughout; the formats are ours
if [[ " $PARTS " == *" publish "* ]]; then
    declare -A Q_P50 Q_P99 Q_TP
    [[ " $PARTS " == *" fanout "* ]] && echo
    printf "$PFMT" config reps nodes subs p50_ms p99_ms max_ms max_pub/s mp50_ms mp99_ms redis_us/p nodes_us/p cut tp_cut failed
    for config in $PUB_CONFIGS; do
        Q_P50[$config]=$(median ${P_RUNS_P50[$config]}) Q_P99[$config]=$(median ${P_RUNS_P99[$config]})
        Q_TP[$config]=$(median ${P_RUNS_TP[$config]})
        rus="-"
        [ "$config" = memory1 ] || rus=$(median ${P_RUNS_RUS[$config]})
        # shellcheck disable=SC2059
        printf "$PFMT" "$config" "$REPS" "${P_RUNS_NODES[$config]}" "$PUB_SUBSCRIBERS" "${Q_P50[$config]}" "${Q_P99[$config]}" \
            "$(median ${P_RUNS_MAX[$config]})" "${Q_TP[$config]}" "$(median ${P_RUNS_TP50[$config]})" \
            "$(median ${P_RUNS_TP99[$config]})" "$rus" "$(median ${P_RUNS_NUS[$config]})" \
            "$(worst ${P_RUNS_CUT[$config]})" "$(worst ${P_RUNS_TPCUT[$config]})" "$(worst ${P_RUNS_FAILED[$config]})"
    done
    cost() {
        [ -n "${Q_TP[$1]:-}" ] && [ -n "${Q_TP[$2]:-}" ] || return 0
        echo "$1 vs $2: publish latency p50 $(awk -v a="${Q_P50[$1]}" -v b="${Q_P50[$2]}" 'BEGIN { printf "%+.3f", a - b }') ms, p99 $(awk -v a="${Q_P99[$1]}" -v b="${Q_P99[$2]}" 'BEGIN { printf "%+.3f", a - b }') ms; max publishes/s $(ratio "${Q_TP[$1]}" "${Q_TP[$2]}")x"
    }
    cost redis1 memory1
    for config in $PUB_CONFIGS; do [[ $config == redis1 || $config != redis* ]] || cost "$config" redis1; done
fi
[ "$FOREIGN_RUNS" = 0 ] || echo "WARNING: $FOREIGN_RUNS runs overlapped another benchmark or cargo (marked *)"
echo "load average at the end: $(cut -d" " -f1-3 /proc/loadavg)"
