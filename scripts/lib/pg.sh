# shellcheck shell=bash
# A private PostgreSQL server for the dev stack and the test suite. Source after common.sh.
#
#   pg_start DIR PORT_VAR [--fast]
#       Ensures the server binaries exist, initialises a cluster under DIR if there is none,
#       starts it on the first free port from 55432 (127.0.0.1 only, trust auth), sets the
#       variable named PORT_VAR to the port, and exports:
#         PG_URL     postgres://USER@127.0.0.1:PORT/postgres  (superuser, `postgres` database)
#         PG_USER    the superuser / operating-system user the server runs as
#         PG_BINDIR  where initdb, pg_ctl, psql and createdb are
#       --fast turns off fsync, synchronous_commit and full_page_writes: for throwaway test
#       clusters only (a crash can corrupt such a cluster; the dev cluster does not use it).
#       If the cluster in DIR is already running (a previous run was killed), it is reused.
#   pg_stop DIR          stops the cluster in DIR if it runs (fast shutdown).
#   pg_destroy DIR       pg_stop, then deletes the cluster (DIR and any /tmp fallback).
#   pg_ensure_db URL NAME    creates database NAME unless it exists (URL: a superuser URL).
#   pg_url_for_db URL NAME   prints URL with its database replaced by NAME.
#
# Layout of DIR: DIR/data (PGDATA), DIR/run (Unix socket), DIR/log (server log).
#
# Running as root: initdb and postgres refuse to run as root, so the cluster belongs to an
# unprivileged user and every server command goes through `runuser -u USER --`. USER is the
# `postgres` system user (which Debian's postgresql package creates), or UPTIME_PG_USER if set;
# if that user does not exist, a system user `uptime-pg` is created and used. DIR is chown'ed to USER (mode 700). That user must be able
# to traverse every parent of DIR: a checkout under /work or /home/<someone> with mode 755 is
# fine, but one under /root (mode 700) is not, and then the cluster lives in
# /tmp/uptime-pg-<checksum of DIR's absolute path> instead (DIR keeps a POINTER file naming it).
# As any other user, the cluster runs as that user and DIR is used as is.
#
# Redis has the same shape in the sibling scripts/lib/redis.sh.

PG_FIRST_PORT=${PG_FIRST_PORT:-55432}

# Sets PG_BINDIR to a folder holding initdb, pg_ctl and postgres, installing PostgreSQL with
# apt-get when running as root and none is found.
pg__find_bindir() {
    local dir candidates=()
    if command -v pg_config >/dev/null 2>&1; then
        candidates+=("$(pg_config --bindir 2>/dev/null || true)")
    fi
    # Newest version first.
    while IFS= read -r dir; do
        candidates+=("$dir")
    done < <(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null |
        sort -t/ -k5,5 -V -r)
    for dir in "${candidates[@]}"; do
        if [[ -n $dir && -x $dir/initdb && -x $dir/pg_ctl && -x $dir/postgres ]]; then
            PG_BINDIR=$dir
            export PG_BINDIR
            return 0
        fi
    done
    return 1
}

pg__ensure_server() {
    pg__find_bindir && return 0
    # The package's own cluster (port 5432) is not used; ours runs on a private port.
    install_pkg "PostgreSQL server (initdb, pg_ctl, postgres)" postgresql
    pg__find_bindir || die "installed postgresql but found no initdb/pg_ctl/postgres"
}

# Sets PG_USER: who the server runs as.
pg__choose_user() {
    if ((EUID != 0)); then
        PG_USER=$(id -un)
    elif id -u "${UPTIME_PG_USER:-postgres}" >/dev/null 2>&1; then
        PG_USER=${UPTIME_PG_USER:-postgres}
    else
        if ! id -u uptime-pg >/dev/null 2>&1; then
            log "creating system user uptime-pg to run PostgreSQL (it refuses to run as root)"
            useradd --system --user-group --no-create-home --home-dir /nonexistent \
                --shell /usr/sbin/nologin uptime-pg
        fi
        PG_USER=uptime-pg
    fi
    export PG_USER
}

# Runs a command as PG_USER, from / so an unreadable working directory does not matter.
pg__as_user() {
    if ((EUID == 0)); then
        (cd / && runuser -u "$PG_USER" -- "$@")
    else
        (cd / && "$@")
    fi
}

pg__fallback_dir() {
    local sum
    sum=$(printf '%s' "$1" | cksum)
    printf '/tmp/uptime-pg-%s\n' "${sum%% *}"
}

# Prints where the cluster for DIR lives (DIR itself, or its /tmp fallback). With `create`,
# makes that folder, owned by PG_USER, choosing the fallback if PG_USER cannot reach DIR.
pg__cluster_dir() {
    local dir mode=${2:-}
    dir=$(abspath "$1")
    local fallback
    fallback=$(pg__fallback_dir "$dir")
    if [[ -f $dir/POINTER ]]; then
        printf '%s\n' "$fallback"
        [[ $mode != create ]] || pg__own_dir "$fallback"
        return 0
    fi
    if [[ $mode != create ]]; then
        printf '%s\n' "$dir"
        return 0
    fi
    if ((EUID == 0)); then
        chown "$PG_USER:" "$dir"
        chmod 700 "$dir"
        if ! pg__as_user test -w "$dir" -a -x "$dir"; then
            log "user $PG_USER cannot reach $dir (a parent folder is not traversable);" \
                "keeping the cluster in $fallback instead"
            chown root: "$dir"
            chmod 755 "$dir"
            printf 'This cluster lives in %s: user %s cannot traverse to this folder.\n' \
                "$fallback" "$PG_USER" >"$dir/POINTER"
            pg__own_dir "$fallback"
            printf '%s\n' "$fallback"
            return 0
        fi
    fi
    printf '%s\n' "$dir"
}

pg__own_dir() {
    # /tmp is shared: refuse a fallback someone else planted (a symlink, or not ours).
    [[ ! -L $1 ]] || die "$1 is a symbolic link; refusing to use it for PostgreSQL"
    mkdir -p "$1"
    local owner
    owner=$(stat -c %U "$1")
    [[ $owner == "$PG_USER" || $owner == root ]] ||
        die "$1 belongs to $owner, not $PG_USER or root; refusing to use it"
    if ((EUID == 0)); then
        chown "$PG_USER:" "$1"
    fi
    chmod 700 "$1"
}

pg__running_port() {
    local data=$1 port
    pg__as_user "$PG_BINDIR/pg_ctl" -D "$data" status >/dev/null 2>&1 || return 1
    # postmaster.pid line 4 is the port.
    port=$(sed -n 4p "$data/postmaster.pid" 2>/dev/null) || return 1
    [[ $port =~ ^[0-9]+$ ]] || return 1
    printf '%s\n' "$port"
}

# The server also takes TLS connections, with a certificate from a CA of its own in
# CLUSTER/tls (made once; clients asking for `sslmode=verify-full` check it against
# CLUSTER/tls/ca.crt). Sets PG_TLS_CA.
pg__ensure_tls() {
    local tls=$1/tls
    test_tls_certs "$tls"
    # The server refuses a key that is not its user's.
    if ((EUID == 0)); then
        chown -R "$PG_USER:" "$tls"
    fi
    PG_TLS_CA=$tls/ca.crt
    export PG_TLS_CA
}

pg_start() {
    local dir=$1 port_var=$2 fast=${3:-}
    [[ -z $fast || $fast == --fast ]] || die "pg_start: unknown option $fast"
    pg__ensure_server
    pg__choose_user
    local cluster data port
    cluster=$(pg__cluster_dir "$dir" create)
    data=$cluster/data

    if [[ ! -f $data/PG_VERSION ]]; then
        log "initialising a PostgreSQL cluster in $data (as $PG_USER)"
        pg__own_dir "$data"
        pg__as_user "$PG_BINDIR/initdb" -D "$data" -U "$PG_USER" --auth=trust \
            --encoding=UTF8 --locale=C >"$cluster/initdb.log" 2>&1 ||
            { cat "$cluster/initdb.log" >&2; die "initdb failed"; }
        # Trust, but only over the socket in DIR/run and from 127.0.0.1: nothing else can connect.
        pg__as_user tee "$data/pg_hba.conf" >/dev/null <<'EOF'
# Written by scripts/lib/pg.sh: local development and tests only.
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 trust
host    all       all   127.0.0.1/32  trust
EOF
    fi
    pg__own_dir "$cluster/run"
    pg__ensure_tls "$cluster"

    if port=$(pg__running_port "$data"); then
        log "PostgreSQL in $data is already running on port $port; reusing it"
    else
        port=$(free_port "$PG_FIRST_PORT")
        local socket_dir=$cluster/run
        # Unix socket paths are limited to 107 bytes; past that, TCP only.
        ((${#socket_dir} + 20 < 107)) || socket_dir=
        local opts=(-p "$port" -c listen_addresses=127.0.0.1
            -c "unix_socket_directories='$socket_dir'"
            -c ssl=on -c "ssl_cert_file='$cluster/tls/server.crt'"
            -c "ssl_key_file='$cluster/tls/server.key'")
        if [[ $fast == --fast ]]; then
            opts+=(-c fsync=off -c synchronous_commit=off -c full_page_writes=off)
        fi
        pg__as_user touch "$cluster/log"
        log "starting PostgreSQL on 127.0.0.1:$port (log: $cluster/log)"
        if ! pg__as_user "$PG_BINDIR/pg_ctl" -D "$data" -l "$cluster/log" -w -t 60 \
            -o "${opts[*]}" start >/dev/null; then
            tail -n 20 "$cluster/log" >&2 || true
            die "PostgreSQL did not start; see $cluster/log"
        fi
    fi
    printf -v "$port_var" '%s' "$port"
    PG_URL="postgres://$PG_USER@127.0.0.1:$port/postgres"
    export PG_URL
}

pg_stop() {
    local dir=$1 cluster
    pg__find_bindir || return 0
    pg__choose_user
    [[ -d $dir ]] || return 0
    cluster=$(pg__cluster_dir "$dir")
    [[ -f $cluster/data/postmaster.pid ]] || return 0
    log "stopping PostgreSQL in $cluster/data"
    pg__as_user "$PG_BINDIR/pg_ctl" -D "$cluster/data" -m fast -w -t 60 stop >/dev/null ||
        log "pg_ctl stop failed; see $cluster/log"
}

pg_destroy() {
    local dir=$1 abs
    [[ -d $dir ]] || return 0
    pg_stop "$dir"
    abs=$(abspath "$dir")
    rm -rf -- "$(pg__fallback_dir "$abs")" "$abs"
}

pg_url_for_db() {
    printf '%s/%s\n' "${1%/*}" "$2"
}

pg_ensure_db() {
    local url=$1 name=$2
    [[ $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "pg_ensure_db: unsafe database name '$name'"
    if [[ $("$PG_BINDIR/psql" -X -At -v ON_ERROR_STOP=1 "$url" \
        -c "select 1 from pg_database where datname = '$name'") != 1 ]]; then
        log "creating database $name"
        "$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 "$url" -c "create database $name" >/dev/null
    fi
}
