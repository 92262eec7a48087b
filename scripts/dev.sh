#!/usr/bin/env bash
# Bring up the whole system locally: PostgreSQL, Redis, the demo sites, one hub, three
# validators.
#
#   scripts/dev.sh [--no-build] [--for SECONDS]
#
#   --no-build      use the binaries already in target/debug (fails if one is missing)
#   --for SECONDS   stop everything cleanly after SECONDS (smoke tests); default: until Ctrl-C
#
# What it does, in order:
#   1. cargo build -p hub -p validator -p demo-sites  (debug profile: the first build on a
#      2-core machine is much faster than --release, and the crypto crates are optimised even
#      in debug; see [profile.dev.package.*] in Cargo.toml)
#   2. PostgreSQL in .dev/pg (kept between runs; installed with apt-get if missing and root),
#      database `uptime`, `hub migrate`; then Redis in .dev/redis (never writes to disk;
#      installed with apt-get if missing and root)
#   3. demo-sites on 127.0.0.1 (the port is remembered in .dev/demo-sites.port so registered
#      site URLs stay valid across runs)
#   4. one hub (`hub serve`, HUB_ID=hub-1, HUB_REDIS_URL pointing at that Redis) on a free
#      port from 18080, waits for /readyz
#   5. three validator keypairs in .dev/keys/ (generated once) and three validators in regions
#      eu-west, us-east, ap-south, all with --allow-private-targets (the demo sites are on
#      loopback)
#   6. registers the demo sites (/up, /down, /slow with a 2 s timeout, /flap, /keyword) unless
#      `hub sites list` already shows them
#   7. prints `hub sites status` every 10 s
# On exit (Ctrl-C, SIGTERM, --for elapsed, or an error) it stops validators, hub, demo-sites,
# Redis and PostgreSQL, in that order. Logs: .dev/logs/*.log. Everything stays on 127.0.0.1.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/common.sh
source "$ROOT/scripts/lib/common.sh"
# shellcheck source=lib/pg.sh
source "$ROOT/scripts/lib/pg.sh"
# shellcheck source=lib/redis.sh
source "$ROOT/scripts/lib/redis.sh"
LOG_PREFIX=dev

usage() {
    # The comment block at the top of this file, without the shellcheck directives.
    awk 'NR > 1 && !/^#/ { exit } NR > 1 && !/shellcheck/ { sub(/^# ?/, ""); print }' \
        "${BASH_SOURCE[0]}"
}

BUILD=1
RUN_FOR=
while (($#)); do
    case $1 in
    --no-build) BUILD=0 ;;
    --for)
        [[ ${2:-} =~ ^[0-9]+$ ]] || die "--for needs a number of seconds"
        RUN_FOR=$2
        shift
        ;;
    --for=*)
        RUN_FOR=${1#--for=}
        [[ $RUN_FOR =~ ^[0-9]+$ ]] || die "--for needs a number of seconds"
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) die "unknown option '$1' (try --help)" ;;
    esac
    shift
done

DEV=$ROOT/.dev
LOGS=$DEV/logs
KEYS=$DEV/keys
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug
REGIONS=(eu-west us-east ap-south)
STATUS_EVERY=10

mkdir -p "$LOGS" "$KEYS"
chmod 700 "$KEYS"

# One dev stack per checkout: a second one would fight over the same cluster and ports.
exec 9>"$DEV/lock"
flock -n 9 || die "another scripts/dev.sh is already running in this checkout"

# ---- shutdown -------------------------------------------------------------------------------
PIDS=() # "name:pid", in start order; stopped in reverse
SPAWNED=
PG_STARTED=0
REDIS_STARTED=0
SLEEP_PID=

cleanup() {
    local status=$?
    set +e
    # A second Ctrl-C must not abandon the children half-stopped; stop_pid is bounded anyway.
    trap '' INT TERM
    trap - EXIT
    [[ -z $SLEEP_PID ]] || kill "$SLEEP_PID" 2>/dev/null
    local i entry
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        entry=${PIDS[i]}
        stop_pid "${entry%%:*}" "${entry##*:}" 15
    done
    ((REDIS_STARTED)) && redis_stop "$DEV/redis"
    ((PG_STARTED)) && pg_stop "$DEV/pg"
    log "stopped (logs in ${LOGS#"$ROOT"/})"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# spawn NAME CMD...: runs CMD in the background with its output in .dev/logs/NAME.log and
# records it for cleanup; SPAWNED is its pid. Each child gets its own session (setsid) so a
# Ctrl-C in the terminal reaches only this script, which then stops the children in order;
# setsid execs in place here (a background job of a script is no process-group leader), so $!
# is the program itself. `9>&-`: no child keeps the lock. NO_COLOR: plain text in the logs.
spawn() {
    local name=$1
    shift
    : >"$LOGS/$name.log"
    NO_COLOR=1 setsid "$@" </dev/null >>"$LOGS/$name.log" 2>&1 9>&- &
    SPAWNED=$!
    PIDS+=("$name:$SPAWNED")
    log "started $name (pid $SPAWNED, log ${LOGS#"$ROOT"/}/$name.log)"
}

show_log_and_die() {
    local name=$1
    shift
    log "--- last lines of $LOGS/$name.log ---"
    tail -n 30 "$LOGS/$name.log" >&2 || true
    die "$*"
}

# ---- 1. build ---------------------------------------------------------------------------------
need_cmd flock "install util-linux"
need_cmd setsid "install util-linux"
if ((BUILD)); then
    need_cmd cargo "install Rust from https://rustup.rs"
    log "building hub, validator and demo-sites (debug)"
    (cd "$ROOT" && cargo build -p hub -p validator -p demo-sites)
fi
for bin in hub validator demo-sites; do
    [[ -x $BIN/$bin ]] || die "$BIN/$bin is missing; run without --no-build"
done

# ---- 2. PostgreSQL ----------------------------------------------------------------------------
# Children get `9>&-` so none of them (PostgreSQL and Redis above all, which daemonize) keeps
# the lock after we are gone.
PG_STARTED=1
pg_start "$DEV/pg" PG_PORT 9>&-
pg_ensure_db "$PG_URL" uptime
DATABASE_URL=$(pg_url_for_db "$PG_URL" uptime)

# Every hub subcommand reads the database from the environment; nothing else needs it.
hub() {
    DATABASE_URL=$DATABASE_URL "$BIN/hub" "$@"
}

log "applying migrations (hub migrate)"
hub migrate >>"$LOGS/hub-migrate.log" 2>&1 || show_log_and_die hub-migrate "hub migrate failed"

# Redis: the hubs' shared state (membership, ownership), all of it rebuildable, so it is
# never saved and starts empty whenever it starts anew.
REDIS_STARTED=1
redis_start "$DEV/redis" REDIS_PORT 9>&-

# ---- 3. demo sites ----------------------------------------------------------------------------
DEMO_PORT=$(cat "$DEV/demo-sites.port" 2>/dev/null || true)
if [[ ! $DEMO_PORT =~ ^[0-9]+$ ]] || port_open 127.0.0.1 "$DEMO_PORT"; then
    [[ ! $DEMO_PORT =~ ^[0-9]+$ ]] ||
        log "port $DEMO_PORT (remembered for demo-sites) is taken; picking another," \
            "so the sites registered earlier will point at nothing"
    DEMO_PORT=$(free_port 18090)
fi
spawn demo-sites "$BIN/demo-sites" --listen "127.0.0.1:$DEMO_PORT"
DEMO_PID=$SPAWNED
deadline=$((SECONDS + 15))
until DEMO_URL=$(sed -n 's#^demo-sites listening on \(http://.*\)$#\1#p' "$LOGS/demo-sites.log") &&
    [[ -n $DEMO_URL ]]; do
    proc_alive "$DEMO_PID" || show_log_and_die demo-sites "demo-sites exited"
    ((SECONDS < deadline)) || show_log_and_die demo-sites "demo-sites did not start in 15 s"
    sleep 0.1
done
printf '%s\n' "$DEMO_PORT" >"$DEV/demo-sites.port"

# ---- 4. hub -----------------------------------------------------------------------------------
HUB_PORT=$(free_port 18080)
# A fresh token-signing key per run; dev validators re-authenticate on every start anyway.
TOKEN_KEY=$(head -c32 /dev/urandom | od -An -tx1 | tr -d ' \n')
HUB_ENV=(
    DATABASE_URL="$DATABASE_URL"
    HUB_LISTEN="127.0.0.1:$HUB_PORT"
    HUB_ID=hub-1
    HUB_TOKEN_KEYS="dev:$TOKEN_KEY"
    HUB_MIN_INTERVAL_SECS=5
)
# TODO: pass HUB_REDIS_URL unconditionally once the cluster (services/hub/src/cluster) has
# landed. Until then a hub without it would refuse to start on an unknown HUB_ variable.
if [[ -f $ROOT/services/hub/src/cluster/mod.rs ]]; then
    HUB_ENV+=(HUB_REDIS_URL="$REDIS_URL")
fi
spawn hub env "${HUB_ENV[@]}" "$BIN/hub" serve
HUB_PID=$SPAWNED
wait_for_http "http://127.0.0.1:$HUB_PORT/readyz" 60 "$HUB_PID" ||
    show_log_and_die hub "hub did not become ready"
log "hub ready on http://127.0.0.1:$HUB_PORT"

# ---- 5. validators ----------------------------------------------------------------------------
for region in "${REGIONS[@]}"; do
    key=$KEYS/validator-$region.json
    if [[ ! -s $key ]]; then
        log "generating a keypair for the $region validator: ${key#"$ROOT"/}"
        (umask 077 && "$BIN/validator" keygen --out "$key") >>"$LOGS/validator-keygen.log" 2>&1 ||
            show_log_and_die validator-keygen "validator keygen failed"
    fi
done
for region in "${REGIONS[@]}"; do
    spawn "validator-$region" "$BIN/validator" run \
        --hub "ws://127.0.0.1:$HUB_PORT/ws" \
        --keypair "$KEYS/validator-$region.json" \
        --region "$region" \
        --tag dev \
        --concurrency 16 \
        --allow-private-targets
done

# ---- 6. demo sites registered once ------------------------------------------------------------
registered=$(hub sites list 2>>"$LOGS/hub-cli.log") ||
    show_log_and_die hub-cli "hub sites list failed"
add_site() {
    local url=$1
    shift
    # -w: .../slow must not count as registered because .../slowest is.
    if grep -qwF -- "$url" <<<"$registered"; then
        return 0
    fi
    log "registering $url"
    hub sites add "$url" --interval 10 "$@" >>"$LOGS/hub-cli.log" 2>&1 ||
        show_log_and_die hub-cli "hub sites add $url failed"
}
add_site "$DEMO_URL/up"
add_site "$DEMO_URL/down"
add_site "$DEMO_URL/slow" --timeout-ms 2000
add_site "$DEMO_URL/flap"
add_site "$DEMO_URL/keyword" --keyword uptime-demo-keyword

# ---- 7. status until Ctrl-C (or --for) --------------------------------------------------------
log "up: hub http://127.0.0.1:$HUB_PORT, demo sites $DEMO_URL, PostgreSQL $DATABASE_URL," \
    "Redis $REDIS_URL"
if [[ -n $RUN_FOR ]]; then
    log "running for $RUN_FOR s"
else
    log "press Ctrl-C to stop"
fi
stop_at=$((SECONDS + ${RUN_FOR:-0}))
while :; do
    for entry in "${PIDS[@]}"; do
        proc_alive "${entry##*:}" || show_log_and_die "${entry%%:*}" "${entry%%:*} exited"
    done
    printf '\n== %s ==\n' "$(date '+%H:%M:%S')"
    hub sites status 2>>"$LOGS/hub-cli.log" || log "hub sites status failed (see hub-cli.log)"
    wait_secs=$STATUS_EVERY
    if [[ -n $RUN_FOR ]]; then
        ((SECONDS < stop_at)) || break
        ((stop_at - SECONDS >= wait_secs)) || wait_secs=$((stop_at - SECONDS))
    fi
    # `wait` on a background sleep, unlike a foreground sleep, lets SIGTERM's trap run at once.
    sleep "$wait_secs" &
    SLEEP_PID=$!
    wait "$SLEEP_PID" || true
    SLEEP_PID=
done
log "--for $RUN_FOR s elapsed"
