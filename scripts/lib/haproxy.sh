# shellcheck shell=bash
# A private HAProxy in front of the dev stack's hubs. Source after common.sh.
#
#   haproxy_start DIR PORT_VAR BACKEND...
#       Ensures haproxy exists, writes DIR/haproxy.cfg for the BACKENDs (each NAME=HOST:PORT,
#       e.g. hub-1=127.0.0.1:18080), checks it with `haproxy -c`, and starts HAProxy on the
#       first free port from 18070 (127.0.0.1 only). Waits until the port accepts connections,
#       sets the variable named PORT_VAR to the port and exports:
#         HAPROXY_URL    http://127.0.0.1:PORT
#         HAPROXY_STATS  http://127.0.0.1:PORT/haproxy-stats (append ;csv for CSV)
#         HAPROXY_PID    the process id (also in DIR/haproxy.pid)
#       A HAProxy of DIR left running by an earlier run (its backends are gone) is stopped
#       first. Call it directly, not in $(...): the server is a background child of the caller,
#       which haproxy_stop then reaps.
#   haproxy_stop DIR
#       Stops the HAProxy of DIR if it runs (SIGTERM: a hard stop that closes every proxied
#       connection at once; SIGKILL after 5 s) and removes DIR/haproxy.pid.
#
# HAPROXY_MAXCONN (environment, optional): the most concurrent client connections, for load
# tests (scripts/loadtest.sh). Unset, the configuration is exactly the dev stack's (global
# maxconn 4096, no frontend maxconn); set, it is written as the global maxconn and as the
# frontend's own maxconn, so that neither limits below it. HAProxy started as root raises its
# descriptor limit to fit (about two descriptors per connection); otherwise raise `ulimit -n`.
#
# Layout of DIR: DIR/haproxy.cfg (written on every start), DIR/haproxy.pid, DIR/haproxy.log
# (HAProxy's own messages, one line per finished request or WebSocket session, and every
# backend going UP or DOWN).
#
# What the configuration does: HTTP mode, so WebSocket upgrades are understood and then
# tunnelled (`timeout tunnel 1h`: validator sockets live long); `option forwardfor` adds
# X-Forwarded-For, which the hubs believe from 127.0.0.1 (HUB_TRUSTED_PROXIES); `balance
# leastconn` sends each new validator to the hub with the fewest open connections; every hub
# is checked with GET /readyz once a second and taken out after two failures (a hub that got
# SIGTERM stops accepting connections at once, and /readyz answers 503 while it drains) and
# put back after one success.
# A connection that fails to reach a hub is retried on another (`option redispatch 1`).
# Sessions on a hub that goes DOWN are left alone: the hub itself hands its validators a
# reconnect hint and closes them once their results are in.
#
# HAProxy runs in the foreground (-db) of its own session (setsid, so a Ctrl-C in the terminal
# reaches only the caller), as whoever runs the script, root included. When haproxy is missing
# and this runs as root, it is installed with `apt-get install -y haproxy` (Debian 12:
# HAProxy 2.6). Where an init system runs, that package starts a system HAProxy with Debian's
# default configuration (no listeners); it is never used here.

HAPROXY_FIRST_PORT=${HAPROXY_FIRST_PORT:-18070}
HAPROXY_MAXCONN=${HAPROXY_MAXCONN:-}

# Prints the pid of the HAProxy of DIR, if it runs.
haproxy__pid() {
    pidfile_pid "$1/haproxy.pid" haproxy
}

# haproxy__config PORT BACKEND... : prints the configuration.
haproxy__config() {
    local port=$1 backend name addr frontend_maxconn=
    shift
    [[ -z $HAPROXY_MAXCONN ]] || frontend_maxconn="
    maxconn $HAPROXY_MAXCONN"
    cat <<EOF
# Written by scripts/lib/haproxy.sh on every start: local development only.
global
    log stderr format raw local0 info
    maxconn ${HAPROXY_MAXCONN:-4096}

defaults
    mode http
    log global
    option httplog
    option dontlognull
    # The hubs read the validator's address from this header (HUB_TRUSTED_PROXIES).
    option forwardfor
    retries 2
    option redispatch 1
    timeout connect 2s
    timeout client 1h
    timeout server 1h
    # Once upgraded, a WebSocket is a tunnel: validators keep theirs for hours.
    timeout tunnel 1h
    timeout http-request 10s
    timeout check 2s

frontend hubs-in
    bind 127.0.0.1:$port$frontend_maxconn
    stats enable
    stats uri /haproxy-stats
    stats refresh 5s
    # scripts/dev.sh reads the stats every 10 s; those requests would drown the log.
    http-request set-log-level silent if { path_beg /haproxy-stats }
    default_backend hubs

backend hubs
    balance leastconn
    option httpchk GET /readyz
    http-check expect status 200
    default-server check inter 1s fall 2 rise 1
EOF
    for backend in "$@"; do
        name=${backend%%=*}
        addr=${backend#*=}
        printf '    server %s %s\n' "$name" "$addr"
    done
}

haproxy_start() {
    local dir=$1 port_var=$2
    shift 2
    (($#)) || die "haproxy_start: no backends"
    [[ -z $HAPROXY_MAXCONN || $HAPROXY_MAXCONN =~ ^[1-9][0-9]*$ ]] ||
        die "HAPROXY_MAXCONN must be a positive number, got '$HAPROXY_MAXCONN'"
    local backend
    for backend in "$@"; do
        [[ $backend =~ ^[A-Za-z0-9_.-]+=[A-Za-z0-9.:-]+:[0-9]+$ ]] ||
            die "haproxy_start: backend '$backend' is not NAME=HOST:PORT"
    done
    ensure_cmd haproxy
    dir=$(abspath "$dir")
    if haproxy__pid "$dir" >/dev/null; then
        log "a HAProxy of $dir from an earlier run is still running; stopping it"
        haproxy_stop "$dir"
    fi
    local port cfg=$dir/haproxy.cfg
    port=$(free_port "$HAPROXY_FIRST_PORT")
    haproxy__config "$port" "$@" >"$cfg"
    local out
    if ! out=$(haproxy -c -q -f "$cfg" 2>&1); then
        printf '%s\n' "$out" >&2
        die "haproxy -c rejected $cfg"
    fi
    rm -f "$dir/haproxy.pid"
    : >"$dir/haproxy.log"
    log "starting HAProxy on 127.0.0.1:$port for $* (log: $dir/haproxy.log)"
    setsid haproxy -db -f "$cfg" </dev/null >>"$dir/haproxy.log" 2>&1 &
    HAPROXY_PID=$!
    printf '%s\n' "$HAPROXY_PID" >"$dir/haproxy.pid"
    if ! wait_for_port 127.0.0.1 "$port" 15 "$HAPROXY_PID"; then
        tail -n 20 "$dir/haproxy.log" >&2 || true
        haproxy_stop "$dir"
        die "HAProxy did not start; see $dir/haproxy.log"
    fi
    printf -v "$port_var" '%s' "$port"
    HAPROXY_URL="http://127.0.0.1:$port"
    HAPROXY_STATS="$HAPROXY_URL/haproxy-stats"
    export HAPROXY_URL HAPROXY_STATS HAPROXY_PID
}

haproxy_stop() {
    local dir=$1 pid
    [[ -d $dir ]] || return 0
    if pid=$(haproxy__pid "$dir"); then
        # stop_pid reaps it too when it is our child (the usual case).
        stop_pid HAProxy "$pid" 5
    elif pid=$(cat "$dir/haproxy.pid" 2>/dev/null) && [[ $pid =~ ^[0-9]+$ ]]; then
        # It exited by itself: reap it if it is our child (no-op otherwise).
        wait "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/haproxy.pid"
}
