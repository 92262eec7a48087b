# shellcheck shell=bash
# Small helpers shared by scripts/*.sh. Source it; it defines functions and changes nothing else.
#
#   log MSG...                      message to stderr, prefixed with the script's name
#   die MSG...                      log and exit 1
#   need_cmd CMD [HINT]             exit 1 with HINT unless CMD is on PATH
#   port_open HOST PORT             true if something accepts TCP connections there
#   free_port START [HOST]          print the first port >= START that nothing listens on
#   wait_for_port HOST PORT SECS [PID]
#   http_status URL                 print the HTTP status code of GET URL (000 if no answer)
#   http_get URL                    print the body of GET URL; fails unless it answers 2xx
#   wait_for_http URL SECS [PID]    wait until GET URL answers 2xx
#   proc_alive PID                  true while PID runs (a zombie counts as gone)
#   stop_pid NAME PID [SECS]        SIGTERM, wait, SIGKILL after SECS; reaps our children
#   pidfile_pid FILE COMM           print the pid FILE names if it runs and its comm starts with COMM
#   abspath DIR                     make DIR if missing; print its absolute physical path
#   install_pkg WHAT PACKAGE        as root, apt-get install PACKAGE; otherwise say how and exit 1
#   ensure_cmd CMD [PACKAGE]        install_pkg unless CMD is on PATH (PACKAGE defaults to CMD)
#   print_usage                     print the comment block at the top of the running script
#   on_exit FUNC                    run FUNC once whenever and however the script exits
#
# Everything here is plain bash plus coreutils: no curl, nc or ss is assumed (curl is used
# when present).

log() {
    printf '[%s] %s\n' "${LOG_PREFIX:-$(basename "$0")}" "$*" >&2
}

die() {
    log "error: $*"
    exit 1
}

need_cmd() {
    local cmd=$1 hint=${2:-}
    if ! command -v "$cmd" >/dev/null 2>&1; then
        die "'$cmd' is not installed${hint:+; $hint}"
    fi
}

# Connects with bash's /dev/tcp in a subshell so the descriptor closes with it. Loopback
# connections are refused at once when nothing listens; `timeout` covers a filtered port.
port_open() {
    local host=$1 port=$2
    # shellcheck disable=SC2016 # $1 and $2 expand in the inner bash, not here.
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$host" "$port" 2>/dev/null
}

# Nothing prevents another program taking the port between this check and our bind; the
# callers bind soon after and report the log if the bind fails.
free_port() {
    local port=$1 host=${2:-127.0.0.1}
    while ((port < 65536)); do
        if ! port_open "$host" "$port"; then
            printf '%s\n' "$port"
            return 0
        fi
        port=$((port + 1))
    done
    die "no free TCP port at or above $1"
}

proc_alive() {
    local pid=$1 stat
    if [[ -r /proc/$pid/stat ]]; then
        # Field 3 is the state; Z (zombie) and X (dead) mean it has exited but is not reaped.
        read -r stat </proc/"$pid"/stat 2>/dev/null || return 1
        stat=${stat##*) }
        [[ ${stat:0:1} != Z && ${stat:0:1} != X ]]
    else
        kill -0 "$pid" 2>/dev/null
    fi
}

wait_for_port() {
    local host=$1 port=$2 secs=$3 pid=${4:-}
    local deadline=$((SECONDS + secs))
    until port_open "$host" "$port"; do
        if [[ -n $pid ]] && ! proc_alive "$pid"; then
            log "process $pid exited before $host:$port opened"
            return 1
        fi
        if ((SECONDS >= deadline)); then
            log "$host:$port did not open within ${secs}s"
            return 1
        fi
        sleep 0.2
    done
}

# http_status http://HOST:PORT/PATH -> "200". Plain http only (all we need for loopback).
http_status() {
    local url=$1
    if command -v curl >/dev/null 2>&1; then
        curl -s -o /dev/null -m 5 -w '%{http_code}' "$url" || true
        return 0
    fi
    local rest=${url#http://} hostport path=/ host port
    hostport=${rest%%/*}
    [[ $rest == */* ]] && path=/${rest#*/}
    host=${hostport%:*}
    port=${hostport##*:}
    [[ $port != "$hostport" ]] || port=80
    # shellcheck disable=SC2016 # the inner bash expands $1..$3.
    timeout 5 bash -c '
        exec 3<>"/dev/tcp/$1/$2" || exit 1
        printf "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" "$3" "$1:$2" >&3
        IFS=" " read -r _ code _ <&3 && printf "%s" "$code"
    ' _ "$host" "$port" "$path" 2>/dev/null || printf '000'
}

# http_get http://HOST:PORT/PATH -> the body. Plain http only. The /dev/tcp fallback asks
# for HTTP/1.0 so the answer is never chunked and ends when the server closes.
http_get() {
    local url=$1
    if command -v curl >/dev/null 2>&1; then
        curl -fsS -m 5 "$url"
        return
    fi
    local rest=${url#http://} hostport path=/ host port
    hostport=${rest%%/*}
    [[ $rest == */* ]] && path=/${rest#*/}
    host=${hostport%:*}
    port=${hostport##*:}
    [[ $port != "$hostport" ]] || port=80
    # shellcheck disable=SC2016 # the inner bash expands $1..$4 ($4 is a carriage return).
    timeout 5 bash -c '
        exec 3<>"/dev/tcp/$1/$2" || exit 1
        printf "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n" "$3" "$1:$2" >&3
        IFS=" " read -r _ code _ <&3 && [[ $code == 2* ]] || exit 1
        while IFS= read -r line <&3 && [[ -n ${line%"$4"} ]]; do :; done
        cat <&3
    ' _ "$host" "$port" "$path" $'\r'
}

wait_for_http() {
    local url=$1 secs=$2 pid=${3:-}
    local deadline=$((SECONDS + secs)) code
    while :; do
        code=$(http_status "$url")
        [[ $code == 2* ]] && return 0
        if [[ -n $pid ]] && ! proc_alive "$pid"; then
            log "process $pid exited before $url answered"
            return 1
        fi
        if ((SECONDS >= deadline)); then
            log "$url did not answer 2xx within ${secs}s (last status: $code)"
            return 1
        fi
        sleep 0.3
    done
}

stop_pid() {
    local name=$1 pid=$2 secs=${3:-10}
    if ! proc_alive "$pid"; then
        wait "$pid" 2>/dev/null || true
        return 0
    fi
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + secs))
    while proc_alive "$pid"; do
        if ((SECONDS >= deadline)); then
            log "$name did not stop within ${secs}s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
    # Reap it if it is our child (no-op otherwise); its exit status is not ours.
    wait "$pid" 2>/dev/null || true
}

# Prints the pid in FILE if that process is alive and its comm starts with COMM (a stale pid
# file may name a recycled pid that belongs to something else).
pidfile_pid() {
    local file=$1 comm_prefix=$2 pid comm
    pid=$(cat "$file" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    proc_alive "$pid" || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [[ $comm == "$comm_prefix"* ]] || return 1
    printf '%s\n' "$pid"
}

abspath() {
    mkdir -p "$1"
    (cd "$1" && pwd -P)
}

# install_pkg WHAT PACKAGE: WHAT (e.g. "haproxy") is missing. As root (CI), installs PACKAGE
# with apt-get; otherwise prints the command to run and exits 1. The caller checks again after.
install_pkg() {
    local what=$1 pkg=$2
    if ((EUID != 0)); then
        log "$what was not found. Install it, then run this again:"
        log "    sudo apt-get update && sudo apt-get install -y $pkg"
        exit 1
    fi
    log "$what not found; installing it: apt-get install -y $pkg"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg" >&2
}

# test_tls_certs DIR: a CA (DIR/ca.crt) and a server certificate and key for 127.0.0.1, ::1
# and localhost signed by it (DIR/server.crt, DIR/server.key), made once, for the local
# servers' TLS ports (local runs and tests only).
test_tls_certs() {
    local tls=$1
    [[ -f $tls/server.crt && -f $tls/server.key && -f $tls/ca.crt ]] && return 0
    ensure_cmd openssl openssl
    mkdir -p "$tls"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=uptime local test CA" \
        -keyout "$tls/ca.key" -out "$tls/ca.crt" >/dev/null 2>&1 ||
        die "openssl could not make the test CA"
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
        -keyout "$tls/server.key" -out "$tls/server.csr" >/dev/null 2>&1 ||
        die "openssl could not make the server key"
    printf 'subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\n' >"$tls/san.ext"
    openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" \
        -CAcreateserial -days 3650 -extfile "$tls/san.ext" -out "$tls/server.crt" \
        >/dev/null 2>&1 || die "openssl could not sign the server certificate"
    chmod 600 "$tls/server.key" "$tls/ca.key"
    chmod 755 "$tls"
}

ensure_cmd() {
    local cmd=$1 pkg=${2:-$1}
    command -v "$cmd" >/dev/null 2>&1 && return 0
    install_pkg "$cmd" "$pkg"
    command -v "$cmd" >/dev/null 2>&1 || die "installed $pkg but $cmd is not on PATH"
}

# The comment block at the top of the script being run (the first line, #!, left out), without
# its shellcheck directives: every script's --help.
print_usage() {
    local script=${BASH_SOURCE[${#BASH_SOURCE[@]} - 1]}
    awk 'NR > 1 && !/^#/ { exit } NR > 1 && !/shellcheck/ { sub(/^# ?/, ""); print }' "$script"
}

# on_exit FUNC: runs FUNC once when the script exits, however that happens (its end, `exit`, a
# failure under `set -e`, Ctrl-C, SIGTERM), then exits with the status it was exiting with: 130
# after SIGINT, 143 after SIGTERM. FUNC runs under `set +e` with INT and TERM ignored, so a second
# Ctrl-C cannot abandon the children half-stopped (what FUNC calls is bounded anyway).
on_exit() {
    ON_EXIT_FUNC=$1
    trap on_exit__run EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# shellcheck disable=SC2317 # reached through the EXIT trap
on_exit__run() {
    local status=$?
    set +e
    trap '' INT TERM
    trap - EXIT
    "$ON_EXIT_FUNC"
    exit "$status"
}
