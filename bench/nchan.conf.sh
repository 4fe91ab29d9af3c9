# nginx + Nchan for the pub/sub benchmarks (sourced after lib.sh, not run).
#
# One channel, `bench`: POST /pub/bench publishes, GET /sub/bench subscribes with whatever the
# request asks for (Accept: text/event-stream = SSE, Upgrade: websocket = WebSocket, else long
# poll). Own prefix and config under $WORK; the Debian module is loaded with `load_module`.
# `nchan_redis_conf` / `start_nchan_redis`: the same in Redis mode, any channel name.

# Installs nginx-light and the Nchan module if missing (as root, as on the bench machine).
need_nchan() {
    need nginx nginx-light
    [ -n "$(nchan_module)" ] && return 0
    [ "$(id -u)" = 0 ] || die "the Nchan module is missing; install libnginx-mod-nchan"
    log "installing libnginx-mod-nchan"
    apt-get update -qq >/dev/null &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libnginx-mod-nchan >/dev/null
    [ -n "$(nchan_module)" ] || die "the Nchan module is still missing after installing libnginx-mod-nchan"
}

# Path of ngx_nchan_module.so (empty if none): where Debian puts it, or what its
# modules-available snippet loads.
nchan_module() {
    local f
    for f in /usr/lib/nginx/modules/ngx_nchan_module.so /usr/share/nginx/modules/ngx_nchan_module.so; do
        [ -f "$f" ] && { printf '%s\n' "$f"; return; }
    done
    f=$(sed -n 's/^[[:space:]]*load_module[[:space:]]*\([^;]*\);.*/\1/p' \
        /usr/share/nginx/modules-available/mod-nchan.conf 2>/dev/null | head -1)
    case $f in /*) ;; ?*) f=/usr/share/nginx/$f ;; esac # relative to nginx's prefix
    [ -n "$f" ] && [ -f "$f" ] && printf '%s\n' "$f"
    return 0
}

# Writes the config for port $2 with $3 worker processes into directory $1.
nchan_conf() {
    nginx_conf_with "$1" "$2" "${3:-1}" "load_module $(nchan_module);" \
        '# Room for every message of the runs, and no subscriber timeout.
    nchan_message_buffer_length 2000;
    nchan_message_timeout 1h;
    nchan_subscriber_timeout 0;' \
        'location = /healthz { return 200 "ok\n"; }
        location = /nchan_status { nchan_stub_status; }
        location = /pub/bench { nchan_publisher; nchan_channel_id bench; }
        location /sub { nchan_subscriber; nchan_channel_id bench; }'
}

# Starts nginx+Nchan (master in the foreground) on port $1 with $2 workers; sets SERVER_PID to
# the master.
start_nchan() {
    local port=$1 workers=${2:-1} dir="$WORK/nchan-$1"
    nchan_conf "$dir" "$port" "$workers"
    launch_nginx "$dir" "$port"
    # The workers answer /healthz; give every one of them time to be up.
    local deadline=$((SECONDS + 10))
    until [ "$(pgrep -c -P "$SERVER_PID" || true)" -ge "$workers" ]; do
        [ "$SECONDS" -lt "$deadline" ] || die "nginx did not start $workers workers"
        sleep 0.1
    done
}

# Nchan in Redis mode (bench/scaleout.sh): every channel's messages go through the Redis on port
# $3, in the default `distributed` storage mode, so any number of these servers on one Redis act
# as one. The Redis is named as the Nchan 1.3 docs ask (an `upstream` with `nchan_redis_server`,
# `nchan_redis_pass` in the locations; `nchan_redis_url` + `nchan_use_redis on` do the same, with
# a deprecation warning). Any channel: POST /pub/NAME, GET /sub/NAME. Writes the config for port
# $2 with one worker into directory $1.
nchan_redis_conf() {
    nginx_conf_with "$1" "$2" 1 "load_module $(nchan_module);" \
        "# Room for every message of the runs, and no subscriber timeout.
    nchan_message_buffer_length 2000;
    nchan_message_timeout 1h;
    nchan_subscriber_timeout 0;
    upstream bench_redis {
        nchan_redis_server redis://127.0.0.1:$3;
    }" \
        'location = /healthz { return 200 "ok\n"; }
        location = /nchan_status { nchan_stub_status; }
        location ~ ^/pub/([\w.:-]+)$ { nchan_publisher; nchan_channel_id $1; nchan_redis_pass bench_redis; }
        location ~ ^/sub/([\w.:-]+)$ { nchan_subscriber; nchan_channel_id $1; nchan_redis_pass bench_redis; }'
}

# Starts nginx+Nchan in Redis mode (one worker) on port $1 with the Redis on port $2; sets
# SERVER_PID to the master. Waits until Nchan is connected to Redis (nchan_stub_status).
start_nchan_redis() {
    local port=$1 redis_port=$2 dir="$WORK/nchan-redis-$1" deadline
    nchan_redis_conf "$dir" "$port" "$redis_port"
    launch_nginx "$dir" "$port"
    deadline=$((SECONDS + 10))
    until curl -fs "http://127.0.0.1:$port/nchan_status" | grep -q '^redis connected servers: [1-9]'; do
        [ "$SECONDS" -lt "$deadline" ] || die "nginx+Nchan on port $port did not connect to Redis (port $redis_port)"
        sleep 0.1
    done
}

# Subscribers Nchan holds now (nchan_stub_status, all workers).
nchan_subscribers() {
    curl -fs "http://127.0.0.1:$1/nchan_status" | sed -n 's/^subscribers: \([0-9]*\).*/\1/p'
}
