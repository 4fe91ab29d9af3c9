#!/usr/bin/env bash
# Requests per second on GET /healthz: keep-alive vs `Connection: close`, Holdfast (release
# build) vs nginx-light, in one run, repetitions interleaved so drift hits both alike. Two clients
# measure each: `holdfast bench keepalive` (this tree's; REQUESTS / CLOSE_REQUESTS requests at
# concurrency CONNS, latency percentiles from its histogram) and wrk (DURATION at -cCONNS, with
# --latency), the cross-check that the first is not the bottleneck: "client check" in the summary
# is holdfast-bench req/s over wrk req/s on the same server and mode.
#
# Both servers get the same per-connection request cap (KEEPALIVE_REQUESTS) and keep-alive
# timeout (75 s, both defaults); nginx runs `worker_processes 1`, `access_log off`,
# `return 200 "ok\n"`. Holdfast runs with its defaults otherwise (a tokio runtime with one worker
# thread per core). Per run, the server's CPU (/proc/PID/stat, % of one core) is printed, and
# "other%": CPU used by anything but the server and wrk (/proc/stat), i.e. other load on the
# machine that skews that run.
#
# TLS=1 runs the same over TLS (issue 14): a throw-away CA and an ECDSA P-256 server certificate
# for 127.0.0.1/localhost are made with the openssl CLI; Holdfast gets them as `--tls-cert` /
# `--tls-key`, nginx as `listen … ssl` with `ssl_protocols TLSv1.2 TLSv1.3;` (1.22's default has
# no 1.3) and `ssl_session_cache off;` (session tickets as by default). Both clients then open a
# new TLS connection per request in close mode with a full handshake each: `holdfast bench
# keepalive --tls --cacert CA` resumes no session, and wrk (OpenSSL) does not try to. So the
# keep-alive/close ratio is what keep-alive saves over TLS.
#
# Environment (all optional):
#   TLS=0 (1: over TLS, see above)
#   REPS=3  DURATION=10s  CONNS=50  THREADS=1  KEEPALIVE_REQUESTS=1000000
#   CLIENTS="holdfast wrk"   REQUESTS=1000000 (holdfast bench, keep-alive)  CLOSE_REQUESTS=300000
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
CLIENTS=${CLIENTS:-"holdfast wrk"}
REQUESTS=${REQUESTS:-1000000}
CLOSE_REQUESTS=${CLOSE_REQUESTS:-300000}
TLS=${TLS:-0}

need curl curl
need ss iproute2
need wrk wrk
need jq jq
case " $SERVERS " in *" nginx "*) need nginx nginx-light ;; esac
BIN=$(holdfast_bin)
SCHEME=http HOLDFAST_TLS=() BENCH_TLS=() NGINX_LISTEN_TLS=""
if [ "$TLS" = 1 ]; then
    need openssl openssl
    # A CA and a server certificate it signs (rustls, like browsers, refuses a self-signed
    # certificate that is its own CA as a server's). ECDSA P-256: what most TLS sites serve.
    T="$WORK/tls"
    mkdir -p "$T"
    {
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
            -subj "/CN=holdfast bench CA" -keyout "$T/ca.key" -out "$T/ca.pem" &&
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
                -keyout "$T/key.pem" -out "$T/req.pem" &&
            printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=critical,CA:FALSE" \
                "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >"$T/ext.cnf" &&
            openssl x509 -req -in "$T/req.pem" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial -days 2 \
                -extfile "$T/ext.cnf" -out "$T/cert.pem"
    } 2>"$T/openssl.log" || die "openssl could not make the certificates: $(cat "$T/openssl.log")"
    # wait_healthy (lib.sh) checks the servers over https with the CA.
    SCHEME=https CACERT="$T/ca.pem"
    HOLDFAST_TLS=(--tls-cert "$T/cert.pem" --tls-key "$T/key.pem")
    BENCH_TLS=(--tls --cacert "$T/ca.pem")
    # One line: it goes into a sed replacement.
    NGINX_LISTEN_TLS="ssl; ssl_certificate $T/cert.pem; ssl_certificate_key $T/key.pem;"
    NGINX_LISTEN_TLS+=" ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache off;"
    "$BIN" serve --help | grep -q -- '--tls-cert' || die "$BIN has no --tls-cert: this Holdfast has no TLS"
fi
case " $SERVERS " in *" baseline "*) BASE_BIN=$(baseline_bin) ;; esac
log "load average: $(cut -d" " -f1-3 /proc/loadavg)"
TICK=$(getconf CLK_TCK)

declare -A PORT PID
for server in $SERVERS; do
    PORT[$server]=$(free_port)
    case $server in
        holdfast) start_holdfast "$BIN" "${PORT[$server]}" --keepalive-requests "$KEEPALIVE_REQUESTS" "${HOLDFAST_TLS[@]}" ;;
        baseline)
            start_holdfast "$BASE_BIN" "${PORT[$server]}" --keepalive-requests "$KEEPALIVE_REQUESTS" "${HOLDFAST_TLS[@]}"
            ;;
        # Diagnostic, not in the default set: the same binary on a one-thread tokio runtime
        # (tokio reads TOKIO_WORKER_THREADS), to see what two workers cost on two shared cores.
        holdfast-1w)
            HOLDFAST_ENV="${HOLDFAST_ENV:-} TOKIO_WORKER_THREADS=1" \
                start_holdfast "$BIN" "${PORT[$server]}" --keepalive-requests "$KEEPALIVE_REQUESTS" "${HOLDFAST_TLS[@]}"
            ;;
        nginx)
            if [ "$TLS" = 1 ]; then
                # lib.sh's config with its one listener made TLS.
                dir="$WORK/nginx-${PORT[$server]}"
                nginx_conf "$dir" "${PORT[$server]}" "keepalive_requests $KEEPALIVE_REQUESTS;"
                sed -i "s|listen 127.0.0.1:${PORT[$server]};|listen 127.0.0.1:${PORT[$server]} $NGINX_LISTEN_TLS|" \
                    "$dir/nginx.conf"
                launch_nginx "$dir" "${PORT[$server]}"
            else
                start_nginx "${PORT[$server]}" "keepalive_requests $KEEPALIVE_REQUESTS;"
            fi
            ;;
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

# Latency of a wrk --latency percentile line ("50%  1.23ms") in ms.
wrk_ms() { awk -v p="$1" '$1 == p { v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
    m = (u == "us" ? 0.001 : u == "ms" ? 1 : u == "s" ? 1000 : u == "m" ? 60000 : 0); printf "%.3f\n", v * m }' "$2"; }

# run_client CLIENT SERVER MODE DURATION: sets R_RPS, R_P50, R_P99 (ms), R_CPU (server CPU, % of
# one core), R_OTHER (CPU used by everything but the server and the client: other load skewing
# the run) and R_ERRORS. DURATION is wrk's; holdfast bench sends REQUESTS (CLOSE_REQUESTS).
run_client() {
    local client=$1 server=$2 mode=$3 duration=$4 header=() t0 t1 m0 m1 w0 w1 secs cli_cpu n
    t0=$(cpu_ticks "${PID[$server]}")
    m0=$(machine_ticks)
    w0=$EPOCHREALTIME
    local TIMEFORMAT='%3U %3S'
    if [ "$client" = wrk ]; then
        [ "$mode" = close ] && header=(-H 'Connection: close')
        { time wrk -t"$THREADS" -c"$CONNS" -d"$duration" --latency "${header[@]}" \
            "$SCHEME://127.0.0.1:${PORT[$server]}/healthz" >"$WORK/client.out"; } 2>"$WORK/client.time"
    else
        n=$REQUESTS
        [ "$mode" = close ] && n=$CLOSE_REQUESTS
        # A short warm-up run (like wrk's) is the caller's; this one is measured.
        { time "$BIN" bench keepalive --json --server "127.0.0.1:${PORT[$server]}" --modes "$mode" \
            --requests "$n" --concurrency "$CONNS" --threads "$THREADS" "${BENCH_TLS[@]}" >"$WORK/client.out"; } 2>"$WORK/client.time" ||
            true
    fi
    w1=$EPOCHREALTIME
    m1=$(machine_ticks)
    t1=$(cpu_ticks "${PID[$server]}")
    secs=$(awk -v a="$w0" -v b="$w1" 'BEGIN { print b - a }')
    cli_cpu=$(awk 'END { print $1 + $2 }' "$WORK/client.time")
    if [ "$client" = wrk ]; then
        R_RPS=$(awk '/^Requests\/sec:/ { printf "%.0f\n", $2 }' "$WORK/client.out")
        R_P50=$(wrk_ms 50% "$WORK/client.out")
        R_P99=$(wrk_ms 99% "$WORK/client.out")
        R_ERRORS=$(awk '/Socket errors|Non-2xx/ { sub(/^ +/, ""); printf "%s; ", $0 }' "$WORK/client.out")
    else
        local line
        line=$(jq -c "select(.mode == \"$mode\")" "$WORK/client.out") || true
        [ -n "$line" ] || die "holdfast bench keepalive on $server $mode printed no result: $(cat "$WORK/client.out" "$WORK/client.time")"
        R_RPS=$(jq -r '.req_per_s | floor' <<<"$line")
        R_P50=$(jq -r '.p50_ms' <<<"$line")
        R_P99=$(jq -r '.p99_ms' <<<"$line")
        R_ERRORS=$(jq -r 'if .errors + .non_2xx > 0 then "errors \(.errors), non-2xx \(.non_2xx): \(.first_error)" else "" end' <<<"$line")
    fi
    R_CPU=$(awk -v d="$secs" -v t=$((t1 - t0)) -v hz="$TICK" 'BEGIN { printf "%.0f\n", 100 * t / hz / d }')
    R_OTHER=$(awk -v d="$secs" -v m=$((m1 - m0)) -v t=$((t1 - t0)) -v w="$cli_cpu" -v hz="$TICK" \
        'BEGIN { o = 100 * ((m - t) / hz - w) / d; printf "%.0f\n", (o < 0 ? 0 : o) }')
}

for server in $SERVERS; do # warm-up, not counted
    for client in $CLIENTS; do
        if [ "$client" = wrk ]; then
            run_client wrk "$server" keepalive 2s
        else
            REQUESTS=100000 run_client holdfast "$server" keepalive 2s
        fi
    done
done

declare -A RPS CPU P50 P99
FMT='%-9s %-11s %-9s %4s %10s %8s %8s %6s %7s  %s\n'
# shellcheck disable=SC2059 # the format is ours
printf "$FMT" client server mode rep req/s p50_ms p99_ms cpu% other% errors
for rep in $(seq "$REPS"); do
    for mode in $MODES; do
        for server in $SERVERS; do
            for client in $CLIENTS; do
                run_client "$client" "$server" "$mode" "$DURATION"
                # shellcheck disable=SC2059
                printf "$FMT" "$client" "$server" "$mode" "$rep" "$R_RPS" "$R_P50" "$R_P99" "$R_CPU" "$R_OTHER" "${R_ERRORS:--}"
                key=$client.$server.$mode
                RPS[$key]+="$R_RPS " CPU[$key]+="$R_CPU " P50[$key]+="$R_P50 " P99[$key]+="$R_P99 "
            done
        done
    done
done

echo
[ "$TLS" = 1 ] && echo "over TLS (ECDSA P-256; close: a new connection and a full handshake per request)"
echo "summary (medians of $REPS; -c$CONNS -t$THREADS; wrk -d$DURATION; holdfast bench $REQUESTS keep-alive / $CLOSE_REQUESTS close requests; keepalive_requests $KEEPALIVE_REQUESTS on both)"
FMT='%-9s %-11s %-9s %10s %8s %8s %6s\n'
# shellcheck disable=SC2059
printf "$FMT" client server mode req/s p50_ms p99_ms cpu%
declare -A MED
for client in $CLIENTS; do
    for mode in $MODES; do
        for server in $SERVERS; do
            key=$client.$server.$mode
            # shellcheck disable=SC2086 # word lists
            MED[$key]=$(median ${RPS[$key]})
            # shellcheck disable=SC2059,SC2086
            printf "$FMT" "$client" "$server" "$mode" "${MED[$key]}" "$(median ${P50[$key]})" "$(median ${P99[$key]})" \
                "$(median ${CPU[$key]})"
        done
    done
done
echo
for client in $CLIENTS; do
    if [ -n "${MED[$client.holdfast.keepalive]:-}" ] && [ -n "${MED[$client.nginx.keepalive]:-}" ]; then
        for mode in $MODES; do
            echo "$client: holdfast/nginx $mode: $(ratio "${MED[$client.holdfast.$mode]}" "${MED[$client.nginx.$mode]}")"
        done
        r=$(ratio "${MED[$client.holdfast.keepalive]}" "${MED[$client.nginx.keepalive]}")
        echo "$client: goal keep-alive >= 1.0x nginx: $(awk -v r="$r" 'BEGIN { print (r >= 1.0 ? "met" : "MISSED") }') (${r}x)"
    fi
    if [ -n "${MED[$client.holdfast.keepalive]:-}" ] && [ -n "${MED[$client.baseline.keepalive]:-}" ]; then
        for mode in $MODES; do
            echo "$client: holdfast/baseline $mode: $(ratio "${MED[$client.holdfast.$mode]}" "${MED[$client.baseline.$mode]}") (regression check)"
        done
    fi
    if [[ " $MODES " == *" keepalive "* && " $MODES " == *" close "* ]]; then
        for server in $SERVERS; do
            echo "$client: $server keep-alive/close: $(ratio "${MED[$client.$server.keepalive]}" "${MED[$client.$server.close]}")"
        done
    fi
done
if [[ " $CLIENTS " == *" holdfast "* && " $CLIENTS " == *" wrk "* ]]; then
    for mode in $MODES; do
        for server in $SERVERS; do
            echo "client check $server $mode: holdfast bench / wrk req/s = $(ratio "${MED[holdfast.$server.$mode]}" "${MED[wrk.$server.$mode]}")"
        done
    done
fi
echo "load average at the end: $(cut -d" " -f1-3 /proc/loadavg)"
