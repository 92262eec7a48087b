#!/usr/bin/env bash
# Load-test the hubs on this machine: a private PostgreSQL and Redis, 1 or more hubs (release
# build) behind HAProxy, and the `loadtest` binary running one scenario against them through
# HAProxy (burst: straight to the hubs); everything is stopped at the end, whatever happens.
#
#   scripts/loadtest.sh SCENARIO [--hubs N] [--no-build] [--pg-fast] [--api-reads] [LOADTEST ARGS...]
#
#   SCENARIO      connections | ingest | schedule | soak | burst  (see `loadtest SCENARIO --help`)
#                 burst: every simulated website due in the same second (33,334 sites x 3 =
#                 100,002 tasks for 1,100 validators of capacity 100), held 50 s past it; fails
#                 (exit 3) if any result is never acknowledged. See "burst" below.
#   --hubs N      hub replicas, 1..4 (default 1)
#   --no-build    use target/release/hub and target/release/loadtest as they are
#   --pg-fast     PostgreSQL with fsync, synchronous_commit and full_page_writes off (default:
#                 on, as in the dev stack and production: commits wait for the disk)
#   --api-reads   also start the owners' API (release) on the same database and, during the
#                 run, read through it (`api-reads`, loopback only): after
#                 LOADTEST_API_READS_DELAY (default 25s) it gives 100 simulated websites to an account and reads one
#                 website's status, then the 100-website list, for LOADTEST_API_READS_DURATION (20s) each
#                 with LOADTEST_API_READS_CONCURRENCY (8) requests in flight; figures in
#                 reports/api-reads-*.json. Give the scenario a --hold-secs that covers it.
#   LOADTEST ARGS go to `loadtest SCENARIO` after the ones this script adds, so they win, e.g.
#                 --validators 2000 --hold-secs 20, --sites 1000 --interval-secs 1
#
# Examples (small smoke runs; the defaults of each scenario are in `loadtest SCENARIO --help`):
#   scripts/loadtest.sh connections --validators 2000 --hold-secs 20
#   scripts/loadtest.sh ingest --validators 200 --sites 1000 --interval-secs 1 --hold-secs 20
#   scripts/loadtest.sh schedule --hubs 2 --sites 10000 --hold-secs 70
#   scripts/loadtest.sh soak --duration 30m
#   scripts/loadtest.sh burst --sites 3000 --validators 100 --hold-secs 45
#
# What it does, in order:
#   1. cargo build --release -p hub -p loadtest (release: the figures are about speed)
#   2. raises the open-file limit (to 1,048,576 where allowed, else to the hard limit) for
#      everything it starts; warns when the run will not fit under it
#   3. PostgreSQL in .tmp/loadtest/pg, recreated on every run (database `uptime`, `hub migrate`),
#      first free port from 57432; Redis in .tmp/loadtest/redis, first free port from 57379
#   4. N hubs (hub-1..hub-N, the same token key) on free ports from 19080, with settings for
#      load, each overridable from the environment:
#        HUB_MAX_CONNECTIONS=100000 HUB_MIN_INTERVAL_SECS=1 HUB_MAX_MESSAGES_PER_SEC=1000
#        HUB_MESSAGE_BURST=2000 HUB_TASK_DEADLINE_MS=10000 (RUST_LOG passes through too)
#        HUB_MAX_PREAUTH_CONNECTIONS=100000 HUB_MAX_PREAUTH_PER_IP=100000
#        HUB_HELLO_RATE_PER_IP=100000 HUB_HELLO_BURST_PER_IP=100000 (the simulated validators
#        connect from a few loopback addresses, and the connections scenario ramps thousands
#        a second); every scenario: HUB_PREFIX_DIVERSITY=false and HUB_PROBATION_RESULTS=0
#        (all validators share 127.0.0.0/24, and every key is new)
#      burst sets none of the first group but HUB_TASK_DEADLINE_MS=30000 (the default): the
#        hubs run under their hardening defaults (per IP: 16 sockets before hello, 5 hellos/s
#        with a burst of 20; 1,024 sockets before hello in all; 50 messages/s per session with
#        a burst of 100; 20,000 connections; intervals from 10 s). The tool spreads its 1,100
#        validators over 64 source addresses (--source-addrs, about 17 each) and a 10 s ramp
#        to stay under them; bigger runs may need HUB_MAX_CONNECTIONS from the environment.
#   5. HAProxy (scripts/lib/haproxy.sh) on a free port from 19070, with HAPROXY_MAXCONN set to
#      twice the validators plus 1024, at least 4096, at most what the open-file limit allows
#      (HAProxy needs two descriptors per connection and refuses to start otherwise); the
#      environment's HAPROXY_MAXCONN wins
#   6. loadtest SCENARIO --hub-url ws://127.0.0.1:LB/ws --database-url ... --metrics-url (each
#      hub) --hub-pid (each hub) --haproxy-pid --redis-pid --pg-pid --json REPORT [ARGS...]
#      (a --hub-url, --metrics-url or --hub-pid among ARGS replaces all of this script's);
#      burst: --hub-url ws://127.0.0.1:HUB/ws of each hub instead (no HAProxy in between, so
#      the hubs see each validator's own source address and apply their per-IP limits to it)
#      Every scenario also times one verify_result (the bench's per_result/verify_result) on
#      this machine before and after the load, and prints hub CPU per stored tick in them
#      (--no-calibrate skips it; about 2.5 s each)
#   7. stops HAProxy, the hubs (SIGTERM: they drain), Redis and PostgreSQL
# Ports stay clear of scripts/dev.sh (18070, 18080.., 55432, 56379) and scripts/test.sh.
# Files: .tmp/loadtest/ (git-ignored): pg/, redis/, haproxy/ (haproxy.cfg and its log),
# logs/hub-N.log, reports/SCENARIO-YYYYmmdd-HHMMSS.json (the JSON report; the human summary is
# on stdout, progress on stderr). Ctrl-C stops the load tool, which still reports, then the
# stack. Exit status: the load tool's (0 completed, 3 a burst that lost results, 130
# interrupted, 124 its time limit).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/common.sh
source "$ROOT/scripts/lib/common.sh"
# shellcheck source=lib/pg.sh
source "$ROOT/scripts/lib/pg.sh"
# shellcheck source=lib/redis.sh
source "$ROOT/scripts/lib/redis.sh"
# shellcheck source=lib/haproxy.sh
source "$ROOT/scripts/lib/haproxy.sh"
LOG_PREFIX=loadtest.sh

# ---- arguments ---------------------------------------------------------------------------------
[[ ${1:-} == -h || ${1:-} == --help ]] && {
    print_usage
    exit 0
}
SCENARIO=${1:-}
case $SCENARIO in
connections | ingest | schedule | soak | burst) shift ;;
'') die "which scenario? connections, ingest, schedule, soak or burst (try --help)" ;;
*) die "unknown scenario '$SCENARIO' (connections, ingest, schedule, soak or burst)" ;;
esac
HUBS=1
BUILD=1
PG_FAST=
API_READS=0
ARGS=()
while (($#)); do
    case $1 in
    --hubs)
        [[ ${2:-} =~ ^[0-9]+$ ]] || die "--hubs needs a number"
        HUBS=$2
        shift
        ;;
    --hubs=*)
        HUBS=${1#--hubs=}
        [[ $HUBS =~ ^[0-9]+$ ]] || die "--hubs needs a number"
        ;;
    --no-build) BUILD=0 ;;
    --pg-fast) PG_FAST=--fast ;;
    --api-reads) API_READS=1 ;;
    *) ARGS+=("$1") ;;
    esac
    shift
done
((HUBS >= 1 && HUBS <= 4)) || die "--hubs must be 1..4"

# arg_given NAME: true if the load tool's arguments include --NAME (or --NAME=...).
arg_given() {
    local a
    for a in "${ARGS[@]}"; do
        [[ $a == "--$1" || $a == "--$1="* ]] && return 0
    done
    return 1
}
# arg_value NAME: the value of the last --NAME among them, if any.
arg_value() {
    local i value=
    for ((i = 0; i < ${#ARGS[@]}; i++)); do
        case ${ARGS[i]} in
        "--$1") value=${ARGS[i + 1]:-} ;;
        "--$1="*) value=${ARGS[i]#--"$1"=} ;;
        esac
    done
    printf '%s' "$value"
}

LT=$ROOT/.tmp/loadtest
LOGS=$LT/logs
REPORTS=$LT/reports
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
mkdir -p "$LOGS" "$REPORTS"

# One load test per checkout: a second would fight over the same cluster.
exec 9>"$LT/lock"
flock -n 9 || die "another scripts/loadtest.sh is already running in this checkout"

# ---- shutdown ----------------------------------------------------------------------------------
HUB_PIDS=() HUB_PORTS=()
API_PID=
PG_STARTED=0
REDIS_STARTED=0
HAPROXY_STARTED=0
# shellcheck disable=SC2317 # reached through on_exit
cleanup() {
    ((HAPROXY_STARTED)) && haproxy_stop "$LT/haproxy"
    [[ -z $API_PID ]] || stop_pid api "$API_PID" 10
    local pid
    # All hubs drain at once.
    for pid in "${HUB_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${HUB_PIDS[@]}"; do
        stop_pid hub "$pid" 20
    done
    ((REDIS_STARTED)) && redis_stop "$LT/redis"
    ((PG_STARTED)) && pg_stop "$LT/pg"
    log "stopped (logs in ${LOGS#"$ROOT"/})"
}
on_exit cleanup

# ---- 1. build ----------------------------------------------------------------------------------
need_cmd flock "install util-linux"
need_cmd setsid "install util-linux"
if ((BUILD)); then
    need_cmd cargo "install Rust from https://rustup.rs"
    PKGS=(-p hub -p loadtest)
    ((!API_READS)) || PKGS+=(-p api)
    log "cargo build --release ${PKGS[*]}"
    (cd "$ROOT" && cargo build --release "${PKGS[@]}")
fi
BINS=(hub loadtest)
((!API_READS)) || BINS+=(api api-reads)
for bin in "${BINS[@]}"; do
    [[ -x $BIN/$bin ]] || die "$BIN/$bin is missing; run without --no-build"
done

# ---- 2. descriptors ----------------------------------------------------------------------------
# Each validator costs a descriptor in the tool, two in HAProxy and one in a hub.
# Raising the hard limit needs CAP_SYS_RESOURCE; without it the hard limit is what there is.
ulimit -Hn 1048576 2>/dev/null || true
ulimit -Sn "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -Sn)
[[ $NOFILE =~ ^[0-9]+$ ]] || NOFILE=1048576
log "open-file limit $NOFILE"

# ---- 3. PostgreSQL and Redis -------------------------------------------------------------------
# A fresh cluster each run: earlier runs' ticks would only slow the count down.
PG_FIRST_PORT=57432
REDIS_FIRST_PORT=57379
pg_destroy "$LT/pg"
PG_STARTED=1
# shellcheck disable=SC2086 # PG_FAST is empty or one word
pg_start "$LT/pg" PG_PORT $PG_FAST 9>&-
pg_ensure_db "$PG_URL" uptime
# Plain TCP on loopback: the local PostgreSQL also speaks TLS (scripts/lib/pg.sh), and sqlx
# prefers TLS when it can; the figures measure the hub, not TLS (performance.md (l)).
DATABASE_URL="$(pg_url_for_db "$PG_URL" uptime)?sslmode=disable"
# The postmaster (its backends are its children): the first line of postmaster.pid.
PG_DATA=$("$PG_BINDIR/psql" -X -At -v ON_ERROR_STOP=1 "$PG_URL" -c 'show data_directory')
PG_PID=$(head -n 1 "$PG_DATA/postmaster.pid")
log "applying migrations (hub migrate)"
DATABASE_URL=$DATABASE_URL "$BIN/hub" migrate >"$LOGS/hub-migrate.log" 2>&1 ||
    { tail -n 20 "$LOGS/hub-migrate.log" >&2; die "hub migrate failed"; }

redis_stop "$LT/redis"
REDIS_STARTED=1
redis_start "$LT/redis" REDIS_PORT 9>&-
REDIS_PID=$(cat "$LT/redis/redis.pid")

# ---- 4. hubs -----------------------------------------------------------------------------------
TOKEN_KEY=$(head -c32 /dev/urandom | od -An -tx1 | tr -d ' \n')
if [[ $SCENARIO == burst ]]; then
    # The hardening defaults (see the header); the deadline as in production.
    HUB_LOAD_ENV=(HUB_TASK_DEADLINE_MS="${HUB_TASK_DEADLINE_MS:-30000}")
else
    HUB_LOAD_ENV=(
        HUB_MAX_CONNECTIONS="${HUB_MAX_CONNECTIONS:-100000}"
        HUB_MIN_INTERVAL_SECS="${HUB_MIN_INTERVAL_SECS:-1}"
        HUB_MAX_MESSAGES_PER_SEC="${HUB_MAX_MESSAGES_PER_SEC:-1000}"
        HUB_MESSAGE_BURST="${HUB_MESSAGE_BURST:-2000}"
        HUB_TASK_DEADLINE_MS="${HUB_TASK_DEADLINE_MS:-10000}"
        HUB_MAX_PREAUTH_CONNECTIONS="${HUB_MAX_PREAUTH_CONNECTIONS:-100000}"
        HUB_MAX_PREAUTH_PER_IP="${HUB_MAX_PREAUTH_PER_IP:-100000}"
        HUB_HELLO_RATE_PER_IP="${HUB_HELLO_RATE_PER_IP:-100000}"
        HUB_HELLO_BURST_PER_IP="${HUB_HELLO_BURST_PER_IP:-100000}"
    )
fi
port=19080
for ((n = 1; n <= HUBS; n++)); do
    port=$(free_port "$port")
    : >"$LOGS/hub-$n.log"
    env "${HUB_LOAD_ENV[@]}" \
        HUB_DATABASE_URL="$DATABASE_URL" \
        HUB_REDIS_URL="$REDIS_URL" \
        HUB_LISTEN="127.0.0.1:$port" \
        HUB_ID="hub-$n" \
        HUB_TOKEN_KEYS="lt:$TOKEN_KEY" \
        HUB_TRUSTED_PROXIES=127.0.0.1 \
        HUB_PREFIX_DIVERSITY="${HUB_PREFIX_DIVERSITY:-false}" \
        HUB_PROBATION_RESULTS="${HUB_PROBATION_RESULTS:-0}" \
        NO_COLOR=1 setsid "$BIN/hub" serve </dev/null >>"$LOGS/hub-$n.log" 2>&1 9>&- &
    HUB_PIDS+=("$!")
    HUB_PORTS+=("$port")
    log "started hub-$n (pid $!, port $port, log ${LOGS#"$ROOT"/}/hub-$n.log)"
    port=$((port + 1))
done
for i in "${!HUB_PIDS[@]}"; do
    if ! wait_for_http "http://127.0.0.1:${HUB_PORTS[i]}/readyz" 60 "${HUB_PIDS[i]}"; then
        tail -n 30 "$LOGS/hub-$((i + 1)).log" >&2 || true
        die "hub-$((i + 1)) did not become ready"
    fi
done

# ---- 5. HAProxy --------------------------------------------------------------------------------
validators=$(arg_value validators)
if [[ ! $validators =~ ^[0-9]+$ ]]; then
    # The scenario's default (see loadtest SCENARIO --help).
    case $SCENARIO in
    connections) validators=2000 ;;
    schedule) validators=300 ;;
    burst) validators=1100 ;;
    *) validators=200 ;;
    esac
fi
maxconn=$((2 * validators + 1024))
((maxconn >= 4096)) || maxconn=4096
# HAProxy refuses to start when 2 x maxconn (plus a few) exceeds its open-file limit.
fit=$(((NOFILE - 200) / 2))
if ((maxconn > fit)); then
    maxconn=$fit
fi
if ((validators > fit)); then
    log "warning: under the open-file limit $NOFILE, about $fit connections fit through" \
        "HAProxy (two descriptors each); the rest will fail to connect. Pass" \
        "--hub-url ws://127.0.0.1:PORT/ws per hub to bypass it, or raise the hard limit."
fi
if ((validators + 1000 > NOFILE)); then
    log "warning: $validators validators need about $((validators + 1000)) descriptors in the" \
        "load tool and in a hub; the limit is $NOFILE. Run several load tools with fewer each."
fi
export HAPROXY_MAXCONN=${HAPROXY_MAXCONN:-$maxconn}
export HAPROXY_FIRST_PORT=19070
BACKENDS=()
for i in "${!HUB_PIDS[@]}"; do
    BACKENDS+=("hub-$((i + 1))=127.0.0.1:${HUB_PORTS[i]}")
done
HAPROXY_STARTED=1
haproxy_start "$LT/haproxy" LB_PORT "${BACKENDS[@]}" 9>&-
wait_for_http "$HAPROXY_URL/readyz" 15 "$HAPROXY_PID" ||
    { tail -n 20 "$LT/haproxy/haproxy.log" >&2; die "no hub answers through HAProxy"; }
log "HAProxy on $HAPROXY_URL (pid $HAPROXY_PID, maxconn $HAPROXY_MAXCONN)"

# ---- 5b. the owners' API (--api-reads) ----------------------------------------------------------
if ((API_READS)); then
    API_PORT=$(free_port 19060)
    API_ENV=(
        API_DATABASE_URL="$DATABASE_URL"
        API_KEY_SECRET="$(head -c32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
        API_LISTEN="127.0.0.1:$API_PORT"
        API_RATE_PER_CALLER=1000000 API_BURST_PER_CALLER=1000000
        API_RATE_PER_IP=1000000 API_BURST_PER_IP=1000000
        NO_COLOR=1
    )
    env "${API_ENV[@]}" setsid "$BIN/api" serve </dev/null >"$LOGS/api.log" 2>&1 9>&- &
    API_PID=$!
    wait_for_http "http://127.0.0.1:$API_PORT/readyz" 30 "$API_PID" ||
        { tail -n 20 "$LOGS/api.log" >&2; die "the api did not become ready"; }
    printf 'load-test-password\n' | env "${API_ENV[@]}" "$BIN/api" accounts create \
        --email load@example.com --password-stdin --max-sites 1000 >>"$LOGS/api.log" 2>&1 ||
        { tail -n 20 "$LOGS/api.log" >&2; die "api accounts create failed"; }
    LOADTEST_API_KEY=$(env "${API_ENV[@]}" "$BIN/api" keys create --email load@example.com) ||
        die "api keys create failed"
    export LOADTEST_API_KEY
    log "api on http://127.0.0.1:$API_PORT (pid $API_PID, log ${LOGS#"$ROOT"/}/api.log)"
fi

# ---- 6. the load -------------------------------------------------------------------------------
REPORT=$REPORTS/$SCENARIO-$(date +%Y%m%d-%H%M%S).json
TOOL=("$BIN/loadtest" "$SCENARIO")
if ! arg_given hub-url; then
    if [[ $SCENARIO == burst ]]; then
        for p in "${HUB_PORTS[@]}"; do
            TOOL+=(--hub-url "ws://127.0.0.1:$p/ws")
        done
    else
        TOOL+=(--hub-url "ws://127.0.0.1:$LB_PORT/ws")
    fi
fi
if ! arg_given metrics-url; then
    for p in "${HUB_PORTS[@]}"; do
        TOOL+=(--metrics-url "http://127.0.0.1:$p/metrics")
    done
fi
if ! arg_given hub-pid; then
    for p in "${HUB_PIDS[@]}"; do
        TOOL+=(--hub-pid "$p")
    done
fi
# Single-valued: any of ARGS that repeats one of these replaces it (the last one wins).
TOOL+=(--database-url "$DATABASE_URL" --haproxy-pid "$HAPROXY_PID" --redis-pid "$REDIS_PID"
    --pg-pid "$PG_PID" --json "$REPORT")
log "${TOOL[*]} ${ARGS[*]}"
status=0
READS_PID=
if ((API_READS)); then
    READS_REPORT=$REPORTS/api-reads-$(date +%Y%m%d-%H%M%S).json
    DATABASE_URL=$DATABASE_URL "$BIN/api-reads" --api-url "http://127.0.0.1:$API_PORT" \
        --email load@example.com --delay "${LOADTEST_API_READS_DELAY:-25s}" \
        --duration "${LOADTEST_API_READS_DURATION:-20s}" --concurrency "${LOADTEST_API_READS_CONCURRENCY:-8}" \
        --json "$READS_REPORT" >"$LOGS/api-reads.log" 2>&1 9>&- &
    READS_PID=$!
fi
"${TOOL[@]}" "${ARGS[@]}" 9>&- || status=$?
if [[ -n $READS_PID ]]; then
    wait "$READS_PID" || log "api-reads failed; see ${LOGS#"$ROOT"/}/api-reads.log"
    grep '^api-reads:' "$LOGS/api-reads.log" || true
    [[ ! -s $READS_REPORT ]] || log "api-reads report: ${READS_REPORT#"$ROOT"/}"
fi
for i in "${!HUB_PIDS[@]}"; do
    proc_alive "${HUB_PIDS[i]}" || log "hub-$((i + 1)) exited during the run; see ${LOGS#"$ROOT"/}/hub-$((i + 1)).log"
done
[[ ! -s $REPORT ]] || log "JSON report: ${REPORT#"$ROOT"/}"
exit "$status"
