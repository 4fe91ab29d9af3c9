# Shared helpers for the bench scripts (sourced, not run). Every process started through here is
# recorded and stopped by `cleanup`, which the scripts install as their EXIT trap.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$(mktemp -d /tmp/holdfast-bench.XXXXXX)"
STARTED_PIDS=()
# A failure inside $(...) must stop the script too.
shopt -s inherit_errexit

cleanup() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${STARTED_PIDS[@]}"; do
        # Give each a few seconds to exit on its own, then force it.
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    STARTED_PIDS=()
    rm -rf "$WORK"
}

log() { printf '%s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# need CMD PACKAGE: installs the Debian package if CMD is missing (as root, as on the bench machine).
need() {
    command -v "$1" >/dev/null 2>&1 && return 0
    [ "$(id -u)" = 0 ] || die "$1 is missing; install the $2 package"
    log "installing $2"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
    command -v "$1" >/dev/null 2>&1 || die "$1 still missing after installing $2"
}

# The holdfast binary: $HOLDFAST_BIN if given (allocators.sh passes its variants), else a fresh
# release build of this work tree.
holdfast_bin() {
    if [ -n "${HOLDFAST_BIN:-}" ]; then
        [ -x "$HOLDFAST_BIN" ] || die "HOLDFAST_BIN=$HOLDFAST_BIN is not executable"
        printf '%s\n' "$HOLDFAST_BIN"
        return
    fi
    (cd "$ROOT" && cargo build --release -q -p holdfast) >&2 || die "cargo build --release -p holdfast failed"
    printf '%s\n' "$ROOT/target/release/holdfast"
}

# The Holdfast binary to compare against (server `baseline` in fanout.sh, subscribers.sh,
# keepalive.sh; "old" in hostile.sh): $BASELINE_BIN if given, else a release build of
# $BASELINE_COMMIT (default a8894f4, main before the per-connection bounds of issue 9) in the
# git worktree $BASELINE_DIR (default /tmp/hf-base), created on first use; cargo rebuilds nothing
# when it is up to date.
baseline_bin() {
    if [ -n "${BASELINE_BIN:-}" ]; then
        [ -x "$BASELINE_BIN" ] || die "BASELINE_BIN=$BASELINE_BIN is not executable"
        printf '%s\n' "$BASELINE_BIN"
        return
    fi
    local commit=${BASELINE_COMMIT:-a8894f4} dir=${BASELINE_DIR:-/tmp/hf-base} want
    want=$(git -C "$ROOT" rev-parse --verify "$commit^{commit}") || die "no commit $commit"
    if [ ! -e "$dir/.git" ]; then
        log "creating the worktree $dir at $commit"
        git -C "$ROOT" worktree add --detach "$dir" "$want" >&2 || die "git worktree add $dir failed"
    fi
    [ "$(git -C "$dir" rev-parse HEAD)" = "$want" ] ||
        die "$dir is not at $commit; remove it (git worktree remove) or set BASELINE_DIR"
    (cd "$dir" && cargo build --release -q -p holdfast) >&2 || die "building the baseline ($commit) failed"
    printf '%s\n' "$dir/target/release/holdfast"
}

# A free TCP port on 127.0.0.1, below the ephemeral range so no client socket can take it.
free_port() {
    local port
    for _ in $(seq 200); do
        port=$((20000 + RANDOM % 10000))
        if ! ss -Htan "( sport = :$port or dport = :$port )" | grep -q .; then
            printf '%s\n' "$port"
            return
        fi
    done
    die "no free port found"
}

# Resident set size of one process in KiB (Rss of /proc/PID/smaps_rollup).
rss_kb() { awk '/^Rss:/ { print $2 }' "/proc/$1/smaps_rollup"; }

# Waits (up to $2 s, default 10) until http://127.0.0.1:$1/healthz answers 200; with SCHEME=https
# and CACERT=FILE, https:// checked against that CA (keepalive.sh TLS=1).
wait_healthy() {
    local deadline=$((SECONDS + ${2:-10})) tls=()
    [ "${SCHEME:-http}" = https ] && tls=(--cacert "$CACERT")
    until curl -fs "${tls[@]}" -o /dev/null "${SCHEME:-http}://127.0.0.1:$1/healthz"; do
        [ "$SECONDS" -lt "$deadline" ] || die "nothing answers on port $1"
        sleep 0.1
    done
}

# Starts `holdfast serve` on port $2 (binary $1, extra flags after); sets SERVER_PID.
# $HOLDFAST_ENV (e.g. "MIMALLOC_ALLOW_THP=0") is added to its environment.
start_holdfast() {
    local bin=$1 port=$2
    shift 2
    # shellcheck disable=SC2086 # HOLDFAST_ENV is a list of NAME=VALUE words.
    env RUST_LOG=warn ${HOLDFAST_ENV:-} "$bin" serve --listen "127.0.0.1:$port" "$@" \
        >>"$WORK/holdfast.log" 2>&1 &
    SERVER_PID=$!
    STARTED_PIDS+=("$SERVER_PID")
    wait_healthy "$port"
}

# Writes an nginx config into directory $1: port $2, $3 worker processes, main-level directives
# $4 (e.g. load_module), http-level directives $5, and the server's locations $6. Plain nginx and
# nginx+Nchan (nchan.conf.sh) differ only in those.
nginx_conf_with() {
    local dir=$1 port=$2 workers=$3 main=$4 extra=$5 locations=$6
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<EOF
$main
worker_processes $workers;
worker_rlimit_nofile 20000;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
daemon off;
events {
    worker_connections 20000;
}
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    $extra
    server {
        listen 127.0.0.1:$port;
        $locations
    }
}
EOF
}

# Writes the plain nginx config for port $2 into directory $1. Extra http-level directives in $3.
nginx_conf() {
    nginx_conf_with "$1" "$2" 1 "" "${3:-}" \
        'location /healthz { return 200 "ok\n"; }
        location /nginx_status { stub_status; }'
}

# Runs nginx (master in the foreground) with the config in directory $1; sets SERVER_PID to the
# master and waits until port $2 answers /healthz.
launch_nginx() {
    local dir=$1 port=$2
    nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" &
    SERVER_PID=$!
    STARTED_PIDS+=("$SERVER_PID")
    wait_healthy "$port"
}

# Sum of the RSS (KiB, smaps_rollup) of a process and its children (nginx's workers).
tree_rss_kb() {
    local total=0 pid
    for pid in "$1" $(pgrep -P "$1" || true); do total=$((total + $(rss_kb "$pid"))); done
    printf '%s\n' "$total"
}

# Starts nginx (master in the foreground) on port $1 with extra http directives $2; sets
# SERVER_PID to the master.
start_nginx() {
    local port=$1 dir="$WORK/nginx-$1"
    nginx_conf "$dir" "$port" "${2:-}"
    launch_nginx "$dir" "$port"
}

# Stops one process started here and forgets it.
stop_pid() {
    local pid=$1 keep=() p
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${STARTED_PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
    STARTED_PIDS=("${keep[@]}")
}

# Median of the numbers given as arguments.
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# $1 / $2 with 2 decimals.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f\n", (b == 0 ? 0 : a / b) }'; }

# wait_client_open PID OUT DEADLINE: waits until the `holdfast bench idle` client PID has written
# its "open" line to OUT; dies if it exits first or $SECONDS passes DEADLINE.
wait_client_open() {
    local pid=$1 out=$2 deadline=$3
    until grep -qs '"phase":"open"' "$out"; do
        kill -0 "$pid" 2>/dev/null || die "client exited: $(cat "$out" "$out.err")"
        [ "$SECONDS" -lt "$deadline" ] || die "client did not finish opening"
        sleep 0.2
    done
}
