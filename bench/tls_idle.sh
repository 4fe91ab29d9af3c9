#!/usr/bin/env bash
# Server memory per idle TLS connection (issue 14): Holdfast (release build) against nginx-light
# with TLS (`ssl_session_cache off; ssl_session_tickets off`), idle keep-alive connections and
# idle SSE subscribers (nginx+Nchan), with the plain (no TLS) figures of both servers beside them.
#
# One ECDSA P-256 certificate (self-signed, CN and SAN localhost / 127.0.0.1) is made with the
# openssl CLI into the run's temp directory; every TLS server gets it. For each N, repetition,
# workload and server: start a fresh server on a free port, open and close one warm-up connection
# of the workload (WARMUP=1), read the server's RSS (/proc/PID/smaps_rollup; nginx: master +
# worker), open N connections with bench/tls_idle_client.py (Python asyncio + ssl, an independent
# client: no code shared with `holdfast bench`; several processes of PER_CLIENT connections
# each), each completing the TLS handshake and one request, then idle; wait until the server
# counts them all, settle SETTLE s, read RSS again, and report (after - before) / N. The clients
# keep reading (TLS records, SSE heartbeats) and check at the end that the server closed none.
#
# Workloads:
#   keepalive  `GET /healthz` on each connection (keep-alive), whole answer read, then idle.
#              Counted: Holdfast /admin/stats `connections_open` = N + 1 (the stats request's
#              own) and then `connections_parked` = N (waited for up to PARK_WAIT s; the run says
#              how many were parked); nginx `Waiting` of stub_status = N.
#   sse        Holdfast `GET /sub/bench?transport=sse`, Nchan `GET /sub/bench` (nchan.conf.sh's
#              subscriber location), both with `Accept: text/event-stream`; the 200's head read,
#              then idle. Counted: Holdfast `subscribers.sse`, Nchan `subscribers:` of
#              nchan_stub_status.
#
# Servers (SERVERS):
#   nginx           TLS. keepalive: nginx_conf (lib.sh); sse: nchan_conf (nchan.conf.sh); the
#                   listener gets `ssl`, the certificate, `ssl_protocols TLSv1.2 TLSv1.3;` (1.22's
#                   default has no 1.3; the client negotiates 1.3 with both), `ssl_session_cache off;
#                   ssl_session_tickets off; keepalive_timeout 300; keepalive_requests 100000;`
#   holdfast        TLS: `holdfast serve --tls-cert … --tls-key …` (skipped, with a warning, by a
#                   binary whose `serve --help` has no --tls-cert) `--keepalive-timeout 300s
#                   --longpoll-timeout 300s`
#   nginx-plain, holdfast-plain   the same without TLS
#
# Environment (all optional):
#   NS="10000"              connection counts
#   REPS=3                  repetitions; the summary gives medians
#   WORKLOADS="keepalive sse"
#   SERVERS="nginx holdfast nginx-plain holdfast-plain"
#   PER_CLIENT=2500         connections per client process (each may hold 20,000 descriptors)
#   CONCURRENCY=64          handshakes in flight per client process
#   SETTLE=1                seconds between "all N counted" and the second RSS reading
#   PARK_WAIT=5             Holdfast keepalive: seconds to wait for all N to be parked
#   WARMUP=1                0: no warm-up connection before the "before" reading
#   HOLDFAST_BIN=path       use this binary instead of building
#   HOLDFAST_ARGS=""        extra `holdfast serve` flags (both Holdfast servers)
#   DUMP_DIR=dir            keep /proc/PID/smaps and status of the server before and after there
set -euo pipefail
source "$(dirname "$0")/lib.sh"
source "$(dirname "$0")/nchan.conf.sh"
trap cleanup EXIT

NS=${NS:-"10000"}
REPS=${REPS:-3}
WORKLOADS=${WORKLOADS:-"keepalive sse"}
SERVERS=${SERVERS:-"nginx holdfast nginx-plain holdfast-plain"}
PER_CLIENT=${PER_CLIENT:-2500}
CONCURRENCY=${CONCURRENCY:-64}
SETTLE=${SETTLE:-1}
PARK_WAIT=${PARK_WAIT:-5}
WARMUP=${WARMUP:-1}
HOLDFAST_ARGS=${HOLDFAST_ARGS:-}
DUMP_DIR=${DUMP_DIR:-}
[ -z "$DUMP_DIR" ] || mkdir -p "$DUMP_DIR"
CLIENT_PY="$ROOT/bench/tls_idle_client.py"
# What nginx gets for idle connections, as in idle.sh (and Holdfast the same keep-alive timeout).
NGINX_IDLE="keepalive_timeout 300; keepalive_requests 100000;"

need curl curl
need jq jq
need ss iproute2
need openssl openssl
need python3 python3
case " $SERVERS " in *" nginx"*) need_nchan ;; esac
BIN=$(holdfast_bin)
if [[ " $SERVERS " == *" holdfast "* ]] && ! "$BIN" serve --help | grep -q -- '--tls-cert'; then
    log "warning: $BIN has no --tls-cert (no TLS yet): server holdfast skipped"
    # shellcheck disable=SC2086 # a word list
    SERVERS=$(printf '%s\n' $SERVERS | grep -vx holdfast | tr '\n' ' ')
fi
log "load average: $(cut -d" " -f1-3 /proc/loadavg)"

CERT_DIR="$WORK/cert"
mkdir -p "$CERT_DIR"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$CERT_DIR/key.pem" -out "$CERT_DIR/cert.pem" 2>/dev/null || die "openssl could not make the certificate"
CERT="$CERT_DIR/cert.pem" KEY="$CERT_DIR/key.pem"

is_tls() { case $1 in *-plain) return 1 ;; *) return 0 ;; esac; }
scheme() { if is_tls "$1"; then echo https; else echo http; fi; }
# curl to the server ($1) on port $2, path $3 (the certificate is checked, SNI localhost).
sget() {
    if is_tls "$1"; then
        curl -fs --cacert "$CERT" --resolve "localhost:$2:127.0.0.1" "https://localhost:$2$3"
    else
        curl -fs "http://127.0.0.1:$2$3"
    fi
}

wait_up() {
    local server=$1 port=$2 deadline=$((SECONDS + 10))
    until sget "$server" "$port" /healthz >/dev/null; do
        kill -0 "$SERVER_PID" 2>/dev/null || die "$server exited: $(tail -5 "$WORK"/*.log 2>/dev/null)"
        [ "$SECONDS" -lt "$deadline" ] || die "$server does not answer on port $port"
        sleep 0.1
    done
}

# nginx (or nginx+Nchan for sse) on port $2; server $1 says TLS or not. Sets SERVER_PID.
start_nginx_tls() {
    local server=$1 port=$2 workload=$3 dir="$WORK/nginx-$2" listen
    case $workload in
        keepalive) nginx_conf "$dir" "$port" ;;
        sse) nchan_conf "$dir" "$port" 1 ;;
    esac
    listen="listen 127.0.0.1:$port;"
    if is_tls "$server"; then
        listen="listen 127.0.0.1:$port ssl;
        ssl_certificate $CERT;
        ssl_certificate_key $KEY;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache off;
        ssl_session_tickets off;"
    fi
    # The same listener, made TLS, and the keep-alive settings of idle.sh in the server block.
    awk -v old="listen 127.0.0.1:$port;" -v new="$listen
        $NGINX_IDLE" '{ i = index($0, old); if (i) { print substr($0, 1, i - 1) new } else print }' \
        "$dir/nginx.conf" >"$dir/nginx.conf.new"
    mv "$dir/nginx.conf.new" "$dir/nginx.conf"
    nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" &
    SERVER_PID=$!
    STARTED_PIDS+=("$SERVER_PID")
    wait_up "$server" "$port"
    local deadline=$((SECONDS + 10))
    until [ "$(pgrep -c -P "$SERVER_PID" || true)" -ge 1 ]; do
        [ "$SECONDS" -lt "$deadline" ] || die "nginx did not start its worker"
        sleep 0.1
    done
    cp "$dir/nginx.conf" "$WORK/last-nginx.conf"
}

start_holdfast_tls() {
    local server=$1 port=$2 tls=()
    is_tls "$server" && tls=(--tls-cert "$CERT" --tls-key "$KEY")
    # shellcheck disable=SC2086 # HOLDFAST_ARGS is a list of flags
    env RUST_LOG=warn "$BIN" serve --listen "127.0.0.1:$port" "${tls[@]}" \
        --keepalive-timeout 300s --longpoll-timeout 300s $HOLDFAST_ARGS >>"$WORK/holdfast.log" 2>&1 &
    SERVER_PID=$!
    STARTED_PIDS+=("$SERVER_PID")
    wait_up "$server" "$port"
}

# What the server counts now: "open parked" (Holdfast keepalive), else one number.
server_count() {
    local server=$1 port=$2 workload=$3
    case $server.$workload in
        holdfast*.keepalive) sget "$server" "$port" /admin/stats | jq -r '"\(.connections_open) \(.connections_parked)"' ;;
        holdfast*.sse) sget "$server" "$port" /admin/stats | jq -r '.subscribers.sse' ;;
        nginx*.keepalive) sget "$server" "$port" /nginx_status | sed -n 's/.*Waiting: \([0-9]*\).*/\1/p' ;;
        nginx*.sse) sget "$server" "$port" /nchan_status | sed -n 's/^subscribers: \([0-9]*\).*/\1/p' ;;
    esac
}

# True once the server on port $2 counts N ($4) idle connections of the workload.
counted() {
    local c
    c=$(server_count "$1" "$2" "$3") || return 1
    case $1.$3 in
        holdfast*.keepalive) [ "${c% *}" = "$(($4 + 1))" ] ;;
        *) [ "$c" = "$4" ] ;;
    esac
}

# "RSS Anonymous File" (KiB) of a process and its children (nginx's workers), each process's
# three from one read of /proc/PID/smaps_rollup (File = Rss - Anonymous: the binary's and
# libraries' pages; there is no shared memory).
tree_mem_kb() {
    local rss=0 anon=0 pid r a
    for pid in "$1" $(pgrep -P "$1" || true); do
        read -r r a < <(awk '$1 == "Rss:" { r = $2 } $1 == "Anonymous:" { a = $2 } END { print r, a }' "/proc/$pid/smaps_rollup")
        rss=$((rss + r)) anon=$((anon + a))
    done
    printf '%s %s %s\n' "$rss" "$anon" "$((rss - anon))"
}

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

# Starts a client process for N connections: appends its pid and output file to CLIENTS / OUTS.
start_client() {
    local server=$1 port=$2 workload=$3 n=$4 out args=()
    out="$WORK/client-$server-$workload-$n-$RANDOM$RANDOM.out"
    case $workload in
        keepalive) args=(--mode keepalive --path /healthz) ;;
        sse)
            case $server in
                holdfast*) args=(--mode sse --path "/sub/bench?transport=sse") ;;
                nginx*) args=(--mode sse --path /sub/bench) ;;
            esac
            ;;
    esac
    if is_tls "$server"; then
        args+=(--cafile "$CERT" --sni localhost)
    else
        args+=(--plain)
    fi
    python3 "$CLIENT_PY" --server "127.0.0.1:$port" --connections "$n" --concurrency "$CONCURRENCY" \
        "${args[@]}" >"$out" 2>"$out.err" &
    CLIENTS+=("$!")
    OUTS+=("$out")
    STARTED_PIDS+=("$!")
}

# One warm-up connection: open, wait until counted, close, wait until the count is 0, settle.
warm_up() {
    local server=$1 port=$2 workload=$3 deadline=$((SECONDS + 20))
    CLIENTS=() OUTS=()
    start_client "$server" "$port" "$workload" 1
    wait_client_open "${CLIENTS[0]}" "${OUTS[0]}" "$deadline"
    if [ "$workload" = sse ]; then
        until counted "$server" "$port" "$workload" 1; do
            [ "$SECONDS" -lt "$deadline" ] || die "$server: warm-up subscriber not counted"
            sleep 0.1
        done
    fi
    stop_pid "${CLIENTS[0]}"
    until counted "$server" "$port" "$workload" 0; do
        [ "$SECONDS" -lt "$deadline" ] || die "$server: warm-up connection not closed ($(server_count "$server" "$port" "$workload"))"
        sleep 0.1
    done
    sleep "$SETTLE"
}

# run_once SERVER WORKLOAD N: sets R_BEFORE, R_AFTER (KiB), R_ANON, R_FILE (KiB growth), R_PER
# (bytes per connection), R_NOTE. Runs in this shell so the EXIT trap knows every process.
run_once() {
    local server=$1 workload=$2 n=$3 port before after deadline anon_before file_before
    local left=$n take i parts opened=0 held=0 unexpected=0
    port=$(free_port)
    case $server in
        holdfast*) start_holdfast_tls "$server" "$port" ;;
        nginx*) start_nginx_tls "$server" "$port" "$workload" ;;
    esac
    sleep 0.5
    local tag="$server-$workload-$n-$RANDOM"
    [ "$WARMUP" = 1 ] && warm_up "$server" "$port" "$workload"
    dump_proc "$tag.1before"
    read -r before anon_before file_before < <(tree_mem_kb "$SERVER_PID")

    CLIENTS=() OUTS=()
    parts=$(((n + PER_CLIENT - 1) / PER_CLIENT))
    for i in $(seq "$parts"); do
        take=$((left / (parts - i + 1)))
        left=$((left - take))
        start_client "$server" "$port" "$workload" "$take"
    done
    deadline=$((SECONDS + 180))
    for i in "${!CLIENTS[@]}"; do
        wait_client_open "${CLIENTS[$i]}" "${OUTS[$i]}" "$deadline"
        opened=$((opened + $(jq -r 'select(.phase == "open") | .open' "${OUTS[$i]}")))
    done
    [ "$opened" = "$n" ] || die "$server $workload: only $opened of $n opened: $(cat "${OUTS[@]}")"
    R_TLS=$(jq -r 'select(.phase == "open") | "\(.tls // "plain") \(.cipher // "")"' "${OUTS[0]}")
    R_OPEN_S=$(jq -rs '[.[] | select(.phase == "open") | .seconds] | max' "${OUTS[@]}")

    deadline=$((SECONDS + 30))
    until counted "$server" "$port" "$workload" "$n"; do
        [ "$SECONDS" -lt "$deadline" ] || die "$server $workload: the server counts $(server_count "$server" "$port" "$workload"), not $n"
        sleep 0.2
    done
    R_NOTE="opened in ${R_OPEN_S}s"
    if [[ $server.$workload == holdfast*.keepalive ]]; then
        # Parked after park_after (1 s) idle.
        deadline=$((SECONDS + PARK_WAIT))
        until [ "$(server_count "$server" "$port" "$workload" | cut -d' ' -f2)" = "$n" ]; do
            [ "$SECONDS" -lt "$deadline" ] || break
            sleep 0.2
        done
        R_NOTE+=", parked $(server_count "$server" "$port" "$workload" | cut -d' ' -f2)"
    fi
    sleep "$SETTLE"
    local anon_after file_after
    read -r after anon_after file_after < <(tree_mem_kb "$SERVER_PID")
    R_ANON=$((anon_after - anon_before)) R_FILE=$((file_after - file_before))
    dump_proc "$tag.2after"

    for i in "${!CLIENTS[@]}"; do
        stop_pid "${CLIENTS[$i]}"
        held=$((held + $(jq -r 'select(.phase == "held") | .open' "${OUTS[$i]}")))
        unexpected=$((unexpected + $(jq -r 'select(.phase == "held") | .unexpected_bytes' "${OUTS[$i]}")))
    done
    [ "$held" = "$n" ] || die "$server closed $workload connections during the hold: $(tail -qn1 "${OUTS[@]}")"
    [ "$unexpected" = 0 ] || die "$server sent $unexpected unexpected bytes on idle keep-alive connections"
    stop_pid "$SERVER_PID"
    R_BEFORE=$before R_AFTER=$after
    R_PER=$(awk -v b="$before" -v a="$after" -v n="$n" 'BEGIN { printf "%.0f\n", (a - b) * 1024 / n }')
}

range() { printf '%s\n' "$@" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo "-" hi }'; }

declare -A PER BEFORE AFTER ANON FILE
fmt='%-15s %-9s %6s %4s %10s %10s %9s %9s %8s  %s\n'
# shellcheck disable=SC2059
printf "$fmt" server workload N rep before_KiB after_KiB dAnon_KiB dFile_KiB B/conn "tls; note"
for n in $NS; do
    for rep in $(seq "$REPS"); do
        for workload in $WORKLOADS; do
            for server in $SERVERS; do
                run_once "$server" "$workload" "$n"
                # shellcheck disable=SC2059
                printf "$fmt" "$server" "$workload" "$n" "$rep" "$R_BEFORE" "$R_AFTER" "$R_ANON" "$R_FILE" \
                    "$R_PER" "$R_TLS${R_NOTE:+; $R_NOTE}"
                key=$server.$workload.$n
                PER[$key]+="$R_PER "
                BEFORE[$key]+="$R_BEFORE "
                AFTER[$key]+="$R_AFTER "
                ANON[$key]+="$R_ANON "
                FILE[$key]+="$R_FILE "
            done
        done
    done
done

echo
echo "summary (medians of $REPS; bytes of server RSS per idle connection; settle ${SETTLE}s; warm-up $WARMUP; sse = nginx+Nchan for nginx)"
fmt='%-15s %-9s %6s %12s %12s %9s %9s %8s %12s\n'
# shellcheck disable=SC2059
printf "$fmt" server workload N before_KiB after_KiB dAnon_KiB dFile_KiB B/conn B/conn_range
for n in $NS; do
    for workload in $WORKLOADS; do
        for server in $SERVERS; do
            key=$server.$workload.$n
            # shellcheck disable=SC2059,SC2086 # word lists
            printf "$fmt" "$server" "$workload" "$n" "$(median ${BEFORE[$key]})" "$(median ${AFTER[$key]})" \
                "$(median ${ANON[$key]})" "$(median ${FILE[$key]})" "$(median ${PER[$key]})" "$(range ${PER[$key]})"
        done
    done
done
echo
for n in $NS; do
    for workload in $WORKLOADS; do
        for pair in "holdfast nginx" "holdfast-plain nginx-plain" "holdfast holdfast-plain" "nginx nginx-plain"; do
            read -r a b <<<"$pair"
            if [ -z "${PER[$a.$workload.$n]:-}" ] || [ -z "${PER[$b.$workload.$n]:-}" ]; then continue; fi
            # shellcheck disable=SC2086
            x=$(median ${PER[$a.$workload.$n]}) y=$(median ${PER[$b.$workload.$n]})
            line="$workload N=$n: $a $x B / $b $y B = $(awk -v a="$x" -v b="$y" 'BEGIN { printf "%.3f", (b == 0 ? 0 : a / b) }')"
            if [ "$pair" = "holdfast nginx" ]; then
                line+="; goal <= 0.25: $(awk -v a="$x" -v b="$y" 'BEGIN { print (a * 4 <= b ? "met" : "MISSED") }')"
            elif [ "$b" = "${a}-plain" ]; then
                line+=" (TLS adds $((x - y)) B)"
            fi
            echo "$line"
        done
    done
done
echo "load average at the end: $(cut -d" " -f1-3 /proc/loadavg)"
