# shellcheck shell=bash
# A private Redis server for the dev stack and the test suite. Source after common.sh.
#
#   redis_start DIR PORT_VAR [--fast]
#       Ensures redis-server exists, writes DIR/redis.conf and starts redis-server on the first
#       free port from 56379 (127.0.0.1 only, no Unix socket), waits until it answers PING,
#       sets the variable named PORT_VAR to the port and exports:
#         REDIS_URL  redis://127.0.0.1:PORT
#       The server never writes to disk (`save ""`, `appendonly no`): everything the hubs keep
#       in Redis is rebuildable by design, so a restart simply starts empty. --fast is accepted
#       for symmetry with pg_start and changes nothing (there is no durability to give up).
#       If the server of DIR is still running (a previous run was killed), it is reused.
#   redis_stop DIR
#       Stops the server of DIR if it runs (SHUTDOWN NOSAVE; SIGTERM, then SIGKILL, if it does
#       not answer) and waits until the process is gone.
#
# Layout of DIR: DIR/redis.conf (written on every start), DIR/redis.pid, DIR/redis.log.
#
# The server runs as the current user, root included (Redis, unlike PostgreSQL, does not
# refuse). It daemonizes itself (and starts its own session, so a Ctrl-C in the terminal does
# not reach it); DIR/redis.pid is how redis_stop finds it again.
#
# When redis-server is missing and this runs as root, it is installed with
# `apt-get install -y redis-server` (Debian 12: Redis 7.0; redis-cli comes with it, in
# redis-tools). That package may start a system Redis on port 6379 where an init system runs;
# it is never used here. Without redis-cli, PING and SHUTDOWN go over bash's /dev/tcp.

REDIS_FIRST_PORT=${REDIS_FIRST_PORT:-56379}

# redis__send PORT WORD... : sends one command, prints the first line of the reply without the
# trailing CR (e.g. "PONG", "OK"; errors keep their "ERR ..." text). Fails if nothing answers.
redis__send() {
    local port=$1
    shift
    if command -v redis-cli >/dev/null 2>&1; then
        timeout 5 redis-cli -h 127.0.0.1 -p "$port" "$@" 2>/dev/null
        return
    fi
    # An inline command (words separated by spaces) is enough for PING and SHUTDOWN NOSAVE.
    local reply
    # shellcheck disable=SC2016 # the inner bash expands $1 and $2.
    reply=$(timeout 5 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf "%s\r\n" "$2" >&3
        IFS= read -r -t 4 line <&3
        printf "%s" "$line"
    ' _ "$port" "$*" 2>/dev/null) || return 1
    reply=${reply%$'\r'}
    printf '%s\n' "${reply#[+-]}"
}

redis__ping() {
    [[ $(redis__send "$1" PING) == PONG ]]
}

# Prints the pid of the server of DIR, if it runs.
redis__pid() {
    pidfile_pid "$1/redis.pid" redis-server
}

# Prints the port named in DIR/redis.conf.
redis__conf_port() {
    local port
    port=$(sed -n 's/^port \([0-9][0-9]*\)$/\1/p' "$1/redis.conf" 2>/dev/null)
    [[ -n $port ]] || return 1
    printf '%s\n' "$port"
}

redis__conf_tls_port() {
    local port
    port=$(sed -n 's/^tls-port \([0-9][0-9]*\)$/\1/p' "$1/redis.conf" 2>/dev/null)
    [[ -n $port ]] || return 1
    printf '%s\n' "$port"
}

redis_start() {
    local dir=$1 port_var=$2 fast=${3:-}
    [[ -z $fast || $fast == --fast ]] || die "redis_start: unknown option $fast"
    ensure_cmd redis-server
    dir=$(abspath "$dir")
    [[ $dir != *[[:space:]\"\\]* ]] ||
        die "redis_start: $dir contains spaces, quotes or backslashes; Redis's config cannot name it"
    local port pid tls_port
    # A TLS port beside the plain one, with a certificate of a local CA (tests of rediss://).
    test_tls_certs "$dir/tls"
    if pid=$(redis__pid "$dir") && port=$(redis__conf_port "$dir") && redis__ping "$port" &&
        tls_port=$(redis__conf_tls_port "$dir"); then
        log "Redis in $dir is already running on port $port (pid $pid); reusing it"
    else
        port=$(free_port "$REDIS_FIRST_PORT")
        tls_port=$(free_port $((port + 1)))
        rm -f "$dir/redis.pid"
        : >"$dir/redis.log"
        # No `unixsocket` line: TCP on 127.0.0.1 only.
        cat >"$dir/redis.conf" <<EOF
# Written by scripts/lib/redis.sh on every start: local development and tests only.
bind 127.0.0.1
port $port
protected-mode yes
dir "$dir"
daemonize yes
pidfile "$dir/redis.pid"
logfile "$dir/redis.log"
save ""
appendonly no
tls-port $tls_port
tls-cert-file "$dir/tls/server.crt"
tls-key-file "$dir/tls/server.key"
tls-ca-cert-file "$dir/tls/ca.crt"
tls-auth-clients no
EOF
        log "starting Redis on 127.0.0.1:$port (log: $dir/redis.log)"
        # With `daemonize yes` the command returns once the server has forked; the server
        # itself binds afterwards, so a failed bind shows up only in the log.
        redis-server "$dir/redis.conf" >>"$dir/redis.log" 2>&1 ||
            { tail -n 20 "$dir/redis.log" >&2; die "redis-server did not start; see $dir/redis.log"; }
        local deadline=$((SECONDS + 30))
        until redis__ping "$port"; do
            if grep -qiE 'aborting|fatal|failed listening|bad directive' "$dir/redis.log" ||
                ((SECONDS >= deadline)); then
                tail -n 20 "$dir/redis.log" >&2 || true
                redis_stop "$dir"
                die "Redis did not answer PING on port $port; see $dir/redis.log"
            fi
            sleep 0.1
        done
    fi
    printf -v "$port_var" '%s' "$port"
    REDIS_URL="redis://127.0.0.1:$port"
    REDIS_TLS_URL="rediss://127.0.0.1:$tls_port"
    REDIS_TLS_CA=$dir/tls/ca.crt
    export REDIS_URL REDIS_TLS_URL REDIS_TLS_CA
}

redis_stop() {
    local dir=$1 pid port
    [[ -d $dir ]] || return 0
    pid=$(redis__pid "$dir") || return 0
    log "stopping Redis in $dir (pid $pid)"
    # SHUTDOWN NOSAVE closes the connection instead of answering; its reply does not matter.
    if port=$(redis__conf_port "$dir"); then
        redis__send "$port" SHUTDOWN NOSAVE >/dev/null || true
    fi
    local deadline=$((SECONDS + 5))
    while proc_alive "$pid"; do
        if ((SECONDS >= deadline)); then
            # The daemon is not our child, so stop_pid cannot reap it; init does.
            log "Redis did not shut down; sending SIGTERM"
            kill -TERM "$pid" 2>/dev/null || true
            deadline=$((SECONDS + 10))
            while proc_alive "$pid" && ((SECONDS < deadline)); do
                sleep 0.1
            done
            if proc_alive "$pid"; then
                log "Redis did not stop within 10 s; sending SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
            fi
            break
        fi
        sleep 0.05
    done
    rm -f "$dir/redis.pid"
}
