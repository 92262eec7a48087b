#!/usr/bin/env bash
# Bring up the whole system locally: PostgreSQL, Redis, the demo sites, a local Solana chain,
# N hub replicas behind HAProxy, three validators that get paid in (local) SOL.
#
#   scripts/dev.sh [--hubs N] [--no-build] [--for SECONDS]
#
#   --hubs N        how many hub replicas to run, 1..5 (default 2)
#   --no-build      use the binaries already in target/debug (fails if one is missing)
#   --for SECONDS   stop everything cleanly after SECONDS (smoke tests); default: until Ctrl-C
#
# What it does, in order:
#   1. cargo build -p hub -p api -p validator -p demo-sites -p test-support  (debug profile: the first build on a
#      2-core machine is much faster than --release, and the crypto crates are optimised even
#      in debug; see [profile.dev.package.*] in Cargo.toml)
#   2. PostgreSQL in .dev/pg (kept between runs; installed with apt-get if missing and root),
#      database `uptime`, `hub migrate`; then Redis in .dev/redis (never writes to disk;
#      installed with apt-get if missing and root)
#   3. demo-sites on 127.0.0.1 (the port is remembered in .dev/demo-sites.port so registered
#      site URLs stay valid across runs)
#   3b. local-solana (test-support's litesvm chain behind JSON-RPC, a block every 400 ms,
#      blockhashes valid 40 blocks: a payout hub's first payment waits 72 blocks, ~30 s) on a
#      free port from 18899, with a treasury keypair in .dev/keys/treasury.json (generated
#      once) funded with 1,000 SOL
#   4. N hubs (`hub serve`, HUB_ID=hub-1..hub-N), each on its own free port from 18080, all
#      with the same token keys, database and Redis, and HUB_TRUSTED_PROXIES=127.0.0.1,
#      HUB_PREFIX_DIVERSITY=false (every local validator connects from 127.0.0.1, one /24;
#      the rule would give each round one validator), and payouts on (the elected leader pays every 10 s; reward 100,000 lamports per result, so
#      a validator passes the 890,880-lamport minimum payout in well under a minute); waits
#      for each one's /readyz
#   4b. the owners' REST API (`api serve`) on a free port from 18060, with a key secret kept in
#      .dev/api-key-secret, cookies without Secure (plain HTTP on loopback) and private targets
#      allowed; the dashboard at its /app/; a demo account demo@example.com (password generated once into
#      .dev/api-demo-password) and a write API key for it (.dev/api-demo-key)
#   5. HAProxy (scripts/lib/haproxy.sh; installed with apt-get if missing and root) on a free
#      port from 18070: HTTP mode with WebSocket tunnels, X-Forwarded-For, least-connections
#      balancing, and a GET /readyz check of every hub each second, so a draining hub is
#      taken out; stats at /haproxy-stats
#   6. three validator keypairs in .dev/keys/ (generated once, before the hubs, which list them in
#      HUB_TRUSTED_VALIDATORS so they count from the start) and three validators in regions
#      eu-west, us-east, ap-south, all with --allow-private-targets (the demo sites are on
#      loopback); each gets the HAProxy URL first, then every hub's own URL to rotate to when
#      HAProxy is down
#   7. registers the demo sites (/up, /down, /slow with a 2 s timeout, /flap, /keyword) for the
#      demo account through the REST API (curl, installed if missing and root), unless the
#      account already has them
#   8. every 10 s prints `hub sites status`, one line per hub from its /metrics
#      (validators connected, websites owned, ring members, leader) with HAProxy's view of it,
#      and each validator's earnings (`validator earnings`: earned, pending, paid lamports)
# Process ids: .dev/pids/NAME.pid (hub-1.pid, validator-eu-west.pid, ...; HAProxy's is
# .dev/haproxy/haproxy.pid). A hub that exits (say after `kill -TERM $(cat .dev/pids/hub-2.pid)`)
# is reported and the rest carry on; any other process exiting stops the stack.
# On exit (Ctrl-C, SIGTERM, --for elapsed, or an error) it stops validators, HAProxy, hubs,
# demo-sites, Redis and PostgreSQL, in that order. Logs: .dev/logs/*.log and
# .dev/haproxy/haproxy.log. Everything stays on 127.0.0.1.
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
LOG_PREFIX=dev

BUILD=1
RUN_FOR=
HUBS=2
while (($#)); do
    case $1 in
    --no-build) BUILD=0 ;;
    --for | --hubs)
        [[ ${2:-} =~ ^[0-9]+$ ]] || die "$1 needs a number"
        if [[ $1 == --for ]]; then RUN_FOR=$2; else HUBS=$2; fi
        shift
        ;;
    --for=*)
        RUN_FOR=${1#--for=}
        [[ $RUN_FOR =~ ^[0-9]+$ ]] || die "--for needs a number of seconds"
        ;;
    --hubs=*)
        HUBS=${1#--hubs=}
        [[ $HUBS =~ ^[0-9]+$ ]] || die "--hubs needs a number"
        ;;
    -h | --help)
        print_usage
        exit 0
        ;;
    *) die "unknown option '$1' (try --help)" ;;
    esac
    shift
done
((HUBS >= 1 && HUBS <= 5)) || die "--hubs must be 1..5"

DEV=$ROOT/.dev
LOGS=$DEV/logs
KEYS=$DEV/keys
PIDDIR=$DEV/pids
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug
REGIONS=(eu-west us-east ap-south)
STATUS_EVERY=10

mkdir -p "$LOGS" "$KEYS" "$PIDDIR"
chmod 700 "$KEYS"

# One dev stack per checkout: a second one would fight over the same cluster and ports.
exec 9>"$DEV/lock"
flock -n 9 || die "another scripts/dev.sh is already running in this checkout"

# ---- shutdown -------------------------------------------------------------------------------
PIDS=() # "name:pid", in start order; stopped in reverse ("haproxy:lib" is haproxy_stop's)
HUB_NAMES=() HUB_PIDS=() HUB_PORTS=()
SPAWNED=
PG_STARTED=0
REDIS_STARTED=0
SLEEP_PID=

# shellcheck disable=SC2317 # reached through on_exit
cleanup() {
    [[ -z $SLEEP_PID ]] || kill "$SLEEP_PID" 2>/dev/null
    local i entry name pid hubs_told=0
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        entry=${PIDS[i]}
        name=${entry%%:*}
        pid=${entry##*:}
        if [[ $name == haproxy ]]; then
            haproxy_stop "$DEV/haproxy"
            continue
        fi
        if [[ $name == hub-* ]] && ((!hubs_told)); then
            # All hubs drain at once rather than one after another (stop_pid's second
            # SIGTERM changes nothing).
            hubs_told=1
            log "stopping the hubs (${HUB_PIDS[*]})"
            for entry in "${PIDS[@]}"; do
                [[ ${entry%%:*} != hub-* ]] || kill -TERM "${entry##*:}" 2>/dev/null
            done
        fi
        stop_pid "$name" "$pid" 15
        rm -f "$PIDDIR/$name.pid"
    done
    ((REDIS_STARTED)) && redis_stop "$DEV/redis"
    ((PG_STARTED)) && pg_stop "$DEV/pg"
    log "stopped (logs in ${LOGS#"$ROOT"/})"
}
on_exit cleanup

# A run that was killed outright (SIGKILL, a closed terminal) leaves its children behind; a
# leftover hub would rejoin the ring under a name this run uses. Stop those named in
# .dev/pids/ that are still our binaries, in the usual order (HAProxy's own pid file is
# .dev/haproxy/haproxy.pid).
stop_leftovers() {
    local file pid
    for file in "$@"; do
        [[ -e $file ]] || continue
        pid=$(cat "$file" 2>/dev/null) || pid=
        if [[ $pid =~ ^[0-9]+$ ]] && proc_alive "$pid" &&
            [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == "$BIN"/* ]]; then
            log "$(basename "$file" .pid) (pid $pid) is left from an earlier run; stopping it"
            stop_pid "$(basename "$file" .pid)" "$pid" 15
        fi
        rm -f "$file"
    done
}
stop_leftovers "$PIDDIR"/validator-*.pid
haproxy_stop "$DEV/haproxy"
stop_leftovers "$PIDDIR"/hub-*.pid
stop_leftovers "$PIDDIR"/*.pid

# spawn NAME CMD...: runs CMD in the background with its output in .dev/logs/NAME.log and
# records it for cleanup and in .dev/pids/NAME.pid; SPAWNED is its pid. Each child gets its
# own session (setsid) so a Ctrl-C in the terminal reaches only this script, which then stops
# the children in order; setsid execs in place here (a background job of a script is no
# process-group leader), so $! is the program itself. `9>&-`: no child keeps the lock.
# NO_COLOR: plain text in the logs.
spawn() {
    local name=$1
    shift
    : >"$LOGS/$name.log"
    NO_COLOR=1 setsid "$@" </dev/null >>"$LOGS/$name.log" 2>&1 9>&- &
    SPAWNED=$!
    PIDS+=("$name:$SPAWNED")
    printf '%s\n' "$SPAWNED" >"$PIDDIR/$name.pid"
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
    log "building hub, api, validator, demo-sites and local-solana (debug)"
    (cd "$ROOT" && cargo build -p hub -p api -p validator -p demo-sites -p test-support)
fi
ensure_cmd curl
for bin in hub api validator demo-sites local-solana; do
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

# Once, before the hubs start. They migrate at start too; sqlx holds an advisory lock while
# it does, so several starting at once is safe, but a failed migration is clearer here.
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
# listening_url NAME PID: the URL NAME prints as "NAME listening on URL" in its log, waiting up
# to 15 s for it (and dying with the log if NAME exits first).
listening_url() {
    local name=$1 pid=$2 url deadline=$((SECONDS + 15))
    until url=$(sed -n "s#^$name listening on \(http://.*\)\$#\1#p" "$LOGS/$name.log") &&
        [[ -n $url ]]; do
        proc_alive "$pid" || show_log_and_die "$name" "$name exited"
        ((SECONDS < deadline)) || show_log_and_die "$name" "$name did not start in 15 s"
        sleep 0.1
    done
    printf '%s\n' "$url"
}
spawn demo-sites "$BIN/demo-sites" --listen "127.0.0.1:$DEMO_PORT"
DEMO_URL=$(listening_url demo-sites "$SPAWNED")
printf '%s\n' "$DEMO_PORT" >"$DEV/demo-sites.port"

# ---- 3b. local Solana chain and the treasury ----------------------------------------------------
mkdir -p "$KEYS"
TREASURY=$KEYS/treasury.json
if [[ ! -s $TREASURY ]]; then
    log "generating the payout treasury keypair: ${TREASURY#"$ROOT"/}"
    (umask 077 && "$BIN/validator" keygen --out "$TREASURY") >>"$LOGS/validator-keygen.log" 2>&1 ||
        show_log_and_die validator-keygen "treasury keygen failed"
fi
TREASURY_PUBKEY=$("$BIN/validator" pubkey --keypair "$TREASURY")
SOLANA_PORT=$(free_port 18899)
spawn local-solana "$BIN/local-solana" --listen "127.0.0.1:$SOLANA_PORT" \
    --fund "$TREASURY_PUBKEY=1000000000000" --block-ms 400 --blockhash-validity 40
SOLANA_URL=$(listening_url local-solana "$SPAWNED")
log "local Solana chain on $SOLANA_URL; treasury $TREASURY_PUBKEY funded with 1,000 SOL"

# The demo validators' keys, made before the hubs: the hubs trust them from the start
# (HUB_TRUSTED_VALIDATORS), so rounds have quorum in the first minute; other keys start on
# probation.
for region in "${REGIONS[@]}"; do
    key=$KEYS/validator-$region.json
    if [[ ! -s $key ]]; then
        log "generating a keypair for the $region validator: ${key#"$ROOT"/}"
        (umask 077 && "$BIN/validator" keygen --out "$key") >>"$LOGS/validator-keygen.log" 2>&1 ||
            show_log_and_die validator-keygen "validator keygen failed"
    fi
done
TRUSTED=()
for region in "${REGIONS[@]}"; do
    TRUSTED+=("$("$BIN/validator" pubkey --keypair "$KEYS/validator-$region.json")")
done
TRUSTED_VALIDATORS=$(IFS=,; echo "${TRUSTED[*]}")

# ---- 4. hubs ----------------------------------------------------------------------------------
# A fresh token-signing key per run, the same on every hub (a token one signs, all verify);
# dev validators re-authenticate on every start anyway.
TOKEN_KEY=$(head -c32 /dev/urandom | od -An -tx1 | tr -d ' \n')
port=18080
for ((n = 1; n <= HUBS; n++)); do
    # free_port only sees ports that are already bound, so each hub searches past the last.
    port=$(free_port "$port")
    spawn "hub-$n" env \
        HUB_DATABASE_URL="$DATABASE_URL" \
        HUB_REDIS_URL="$REDIS_URL" \
        HUB_LISTEN="127.0.0.1:$port" \
        HUB_ID="hub-$n" \
        HUB_TOKEN_KEYS="dev:$TOKEN_KEY" \
        HUB_MIN_INTERVAL_SECS=5 \
        HUB_TRUSTED_PROXIES=127.0.0.1 \
        HUB_PREFIX_DIVERSITY=false \
        HUB_TRUSTED_VALIDATORS="$TRUSTED_VALIDATORS" \
        HUB_MAX_PREAUTH_PER_IP=256 \
        HUB_HELLO_RATE_PER_IP=100 \
        HUB_HELLO_BURST_PER_IP=200 \
        HUB_REWARD_LAMPORTS=100000 \
        HUB_PAYOUT_TREASURY_KEYPAIR="$TREASURY" \
        HUB_PAYOUT_RPC_URL="$SOLANA_URL" \
        HUB_PAYOUT_INTERVAL_MS=10000 \
        HUB_TASK_DEADLINE_MS=10000 \
        HUB_PAYOUT_SETTLE_DELAY_MS=10000 \
        "$BIN/hub" serve
    HUB_NAMES+=("hub-$n")
    HUB_PIDS+=("$SPAWNED")
    HUB_PORTS+=("$port")
    port=$((port + 1))
done
for i in "${!HUB_NAMES[@]}"; do
    wait_for_http "http://127.0.0.1:${HUB_PORTS[i]}/readyz" 60 "${HUB_PIDS[i]}" ||
        show_log_and_die "${HUB_NAMES[i]}" "${HUB_NAMES[i]} did not become ready"
    log "${HUB_NAMES[i]} ready on http://127.0.0.1:${HUB_PORTS[i]}"
done

# ---- 4b. the owners' API ----------------------------------------------------------------------
# The HMAC key of API keys: kept, so keys made in one run work in the next.
API_SECRET_FILE=$DEV/api-key-secret
if [[ ! -s $API_SECRET_FILE ]]; then
    (umask 077 && head -c32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$API_SECRET_FILE")
fi
API_PORT=$(free_port 18060)
API_URL=http://127.0.0.1:$API_PORT
# The server and every api subcommand get the same settings.
API_ENV=(
    API_DATABASE_URL="$DATABASE_URL"
    API_KEY_SECRET="$(cat "$API_SECRET_FILE")"
    API_LISTEN="127.0.0.1:$API_PORT"
    API_COOKIE_SECURE=false
    API_ALLOW_PRIVATE_TARGETS=true
    API_MIN_INTERVAL_SECS=5
    API_DEFAULT_MIN_INTERVAL_SECS=10
)
api() {
    env "${API_ENV[@]}" "$BIN/api" "$@"
}
spawn api env "${API_ENV[@]}" "$BIN/api" serve
wait_for_http "$API_URL/readyz" 30 "$SPAWNED" || show_log_and_die api "the api did not become ready"
log "api ready on $API_URL (OpenAPI document /openapi.json, browsable at $API_URL/docs/)"
DEMO_EMAIL=demo@example.com
DEMO_PASSWORD_FILE=$DEV/api-demo-password
DEMO_KEY_FILE=$DEV/api-demo-key
if [[ ! -s $DEMO_PASSWORD_FILE ]]; then
    # Kept only once the account exists, so a failed attempt is retried next run.
    (umask 077 && head -c24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DEMO_PASSWORD_FILE.new")
    log "creating the demo account $DEMO_EMAIL"
    api accounts create --email "$DEMO_EMAIL" --password-stdin --max-sites 100 \
        --min-interval-secs 5 <"$DEMO_PASSWORD_FILE.new" >>"$LOGS/api-cli.log" 2>&1 ||
        show_log_and_die api-cli "api accounts create failed"
    mv "$DEMO_PASSWORD_FILE.new" "$DEMO_PASSWORD_FILE"
    rm -f "$DEMO_KEY_FILE"
fi
if [[ ! -s $DEMO_KEY_FILE ]]; then
    (umask 077 && api keys create --email "$DEMO_EMAIL" --name scripts/dev.sh --scope write \
        >"$DEMO_KEY_FILE.new" 2>>"$LOGS/api-cli.log") ||
        show_log_and_die api-cli "api keys create failed"
    mv "$DEMO_KEY_FILE.new" "$DEMO_KEY_FILE"
fi
DEMO_KEY=$(cat "$DEMO_KEY_FILE")
# api_call METHOD PATH [JSON]: the REST API as the demo account's key.
api_call() {
    local args=(-fsS -m 10 -X "$1" -H "Authorization: Bearer $DEMO_KEY" "$API_URL$2")
    [[ $# -lt 3 ]] || args+=(-H 'Content-Type: application/json' --data "$3")
    curl "${args[@]}"
}

# ---- 5. HAProxy -------------------------------------------------------------------------------
BACKENDS=()
for i in "${!HUB_NAMES[@]}"; do
    BACKENDS+=("${HUB_NAMES[i]}=127.0.0.1:${HUB_PORTS[i]}")
done
PIDS+=("haproxy:lib")
haproxy_start "$DEV/haproxy" LB_PORT "${BACKENDS[@]}" 9>&-
# Through HAProxy to a hub: proves the proxying, not just the listening port.
wait_for_http "$HAPROXY_URL/readyz" 15 "$HAPROXY_PID" ||
    { tail -n 20 "$DEV/haproxy/haproxy.log" >&2; die "no hub answers through HAProxy"; }
log "HAProxy ready on $HAPROXY_URL (pid $HAPROXY_PID, stats $HAPROXY_STATS)"

# ---- 6. validators ----------------------------------------------------------------------------
# HAProxy first; the hubs themselves are there to rotate to when HAProxy does not answer. A
# validator takes the next URL of its list on every reconnect, so each one gets the hubs in a
# different order: they do not all land on hub-1 when HAProxy is gone.
for v in "${!REGIONS[@]}"; do
    region=${REGIONS[v]}
    hub_args=(--hub "ws://127.0.0.1:$LB_PORT/ws")
    for ((i = 0; i < HUBS; i++)); do
        hub_args+=(--hub "ws://127.0.0.1:${HUB_PORTS[(v + i) % HUBS]}/ws")
    done
    spawn "validator-$region" "$BIN/validator" run \
        "${hub_args[@]}" \
        --keypair "$KEYS/validator-$region.json" \
        --region "$region" \
        --tag dev \
        --concurrency 16 \
        --allow-private-targets
done

# ---- 7. demo sites registered once, for the demo account, through the REST API -------------
registered=$(api_call GET '/v1/websites?limit=100' 2>>"$LOGS/api-cli.log") ||
    show_log_and_die api "GET /v1/websites failed"
add_site() {
    local url=$1 body=$2
    if grep -qF "\"url\":\"$url\"" <<<"$registered"; then
        return 0
    fi
    log "registering $url"
    api_call POST /v1/websites "$body" >>"$LOGS/api-cli.log" 2>&1 ||
        show_log_and_die api-cli "POST /v1/websites ($url) failed"
}
add_site "$DEMO_URL/up" "{\"name\": \"Up\", \"url\": \"$DEMO_URL/up\", \"interval_secs\": 10}"
add_site "$DEMO_URL/down" "{\"name\": \"Down\", \"url\": \"$DEMO_URL/down\", \"interval_secs\": 10}"
add_site "$DEMO_URL/slow" \
    "{\"name\": \"Slow\", \"url\": \"$DEMO_URL/slow\", \"interval_secs\": 10, \"timeout_ms\": 2000}"
add_site "$DEMO_URL/flap" "{\"name\": \"Flap\", \"url\": \"$DEMO_URL/flap\", \"interval_secs\": 10}"
add_site "$DEMO_URL/keyword" \
    "{\"name\": \"Keyword\", \"url\": \"$DEMO_URL/keyword\", \"interval_secs\": 10, \"keyword\": \"uptime-demo-keyword\"}"
# The demo account's public status page shows every demo site (made once; the owner may change it).
if ! api_call GET /v1/status-page 2>>"$LOGS/api-cli.log" | grep -q '"slug":"demo"'; then
    ids=$(api_call GET '/v1/websites?limit=100' 2>>"$LOGS/api-cli.log" |
        grep -o '"id":[0-9]*' | cut -d: -f2 | paste -sd, -)
    api_call PUT /v1/status-page \
        "{\"slug\": \"demo\", \"title\": \"Demo status\", \"enabled\": true, \"website_ids\": [$ids]}" \
        >>"$LOGS/api-cli.log" 2>&1 || show_log_and_die api-cli "PUT /v1/status-page failed"
fi

# ---- 8. status until Ctrl-C (or --for) --------------------------------------------------------
# metric TEXT NAME: the value of a single-series metric in Prometheus text, or "-".
metric() {
    # With or without labels: `name 3` and `name{hub="hub-1"} 3` both count.
    awk -v name="$2" '$1 == name || index($1, name "{") == 1 { v = $2 }
        END { print (v == "" ? "-" : v) }' <<<"$1"
}

# One line per hub: its own /metrics, and HAProxy's view of it (stats CSV: svname is
# field 2, status field 18).
print_hubs() {
    local stats i name metrics lb
    stats=$(http_get "$HAPROXY_STATS;csv" 2>/dev/null) || stats=
    printf '  %-6s %-8s %-6s %-10s %-11s %-15s %-13s %s\n' \
        HUB PID PORT HAPROXY VALIDATORS "WEBSITES OWNED" "RING MEMBERS" LEADER
    for i in "${!HUB_NAMES[@]}"; do
        name=${HUB_NAMES[i]}
        lb=$(awk -F, -v n="$name" '$1 == "hubs" && $2 == n { print $18 }' <<<"$stats")
        if ! proc_alive "${HUB_PIDS[i]}"; then
            printf '  %-6s %-8s %-6s %-10s exited\n' \
                "$name" "${HUB_PIDS[i]}" "${HUB_PORTS[i]}" "${lb:--}"
            continue
        fi
        metrics=$(http_get "http://127.0.0.1:${HUB_PORTS[i]}/metrics" 2>/dev/null) || metrics=
        printf '  %-6s %-8s %-6s %-10s %-11s %-15s %-13s %s\n' \
            "$name" "${HUB_PIDS[i]}" "${HUB_PORTS[i]}" "${lb:--}" \
            "$(metric "$metrics" uptime_hub_validators_connected)" \
            "$(metric "$metrics" uptime_hub_websites_owned)" \
            "$(metric "$metrics" uptime_hub_ring_members)" \
            "$(metric "$metrics" uptime_hub_is_leader)"
    done
}

# One line per validator from `validator earnings` (through HAProxy).
print_earnings() {
    local region out
    printf '  %-10s %14s %14s %14s %s\n' VALIDATOR "EARNED" "PENDING" "PAID" "LAST PAYOUT"
    for region in "${REGIONS[@]}"; do
        out=$("$BIN/validator" earnings --hub "$HAPROXY_URL" --json \
            --keypair "$KEYS/validator-$region.json" 2>/dev/null) || out=
        if [[ -z $out ]]; then
            printf '  %-10s %s\n' "$region" "(no earnings yet)"
            continue
        fi
        awk -v r="$region" '
            /"earned_lamports"/ { gsub(/[^0-9]/, "", $2); e = $2 }
            /"pending_lamports"/ { gsub(/[^0-9]/, "", $2); p = $2 }
            /"paid_lamports"/ { gsub(/[^0-9]/, "", $2); d = $2 }
            /"signature"/ && s == "" { s = $2; gsub(/[",]/, "", s) }
            END { printf "  %-10s %14s %14s %14s %s\n", r, e, p, d, (s == "" || s == "null" ? "-" : s) }
        ' <<<"$out"
    done
}

log "up: $HUBS hub(s) behind HAProxy $HAPROXY_URL (validators connect to $HAPROXY_URL/ws)," \
    "demo sites $DEMO_URL, PostgreSQL $DATABASE_URL, Redis $REDIS_URL"
log "dashboard: $API_URL/app/ -- sign in as $DEMO_EMAIL, password $(cat "$DEMO_PASSWORD_FILE")" \
    "(kept in ${DEMO_PASSWORD_FILE#"$ROOT"/}); public status page: $API_URL/status/demo"
log "owners' API: $API_URL (docs $API_URL/docs/), the same account; or, as a program:"
log "  curl -H \"Authorization: Bearer \$(cat ${DEMO_KEY_FILE#"$ROOT"/})\" $API_URL/v1/websites"
((HUBS == 1)) || log "pids in ${PIDDIR#"$ROOT"/}/; to watch a failover, stop one hub:" \
    "kill -TERM \$(cat ${PIDDIR#"$ROOT"/}/hub-$HUBS.pid)"
if [[ -n $RUN_FOR ]]; then
    log "running for $RUN_FOR s"
else
    log "press Ctrl-C to stop"
fi
stop_at=$((SECONDS + ${RUN_FOR:-0}))
declare -A GONE=()
while :; do
    alive_hubs=0
    for entry in "${PIDS[@]}"; do
        name=${entry%%:*}
        pid=${entry##*:}
        [[ $name == haproxy ]] && pid=$HAPROXY_PID
        if proc_alive "$pid"; then
            [[ $name != hub-* ]] || alive_hubs=$((alive_hubs + 1))
            continue
        fi
        # Losing a hub or HAProxy is what a cluster is for: say so once and carry on.
        case $name in
        hub-* | haproxy)
            if [[ -z ${GONE[$name]:-} ]]; then
                GONE[$name]=1
                wait "$pid" 2>/dev/null && rc=0 || rc=$?
                if [[ $name == haproxy ]]; then
                    log "HAProxy (pid $pid) exited with status $rc; validators rotate to" \
                        "the hubs' own URLs"
                else
                    log "$name (pid $pid) exited with status $rc; the other hubs take over" \
                        "its websites and its validators reconnect to them"
                fi
            fi
            ;;
        *) show_log_and_die "$name" "$name exited" ;;
        esac
    done
    ((alive_hubs > 0)) || die "every hub has exited (logs: ${LOGS#"$ROOT"/}/hub-*.log)"
    printf '\n== %s ==\n' "$(date '+%H:%M:%S')"
    hub sites status 2>>"$LOGS/hub-cli.log" || log "hub sites status failed (see hub-cli.log)"
    print_hubs
    print_earnings
    wait_secs=$STATUS_EVERY
    if [[ -n $RUN_FOR ]]; then
        ((SECONDS < stop_at)) || break
        ((stop_at - SECONDS >= wait_secs)) || wait_secs=$((stop_at - SECONDS))
    fi
    # `wait` on a background sleep, unlike a foreground sleep, lets SIGTERM's trap run at once.
    # 9>&-: if this script is killed outright, the sleep must not hold the lock.
    sleep "$wait_secs" 9>&- &
    SLEEP_PID=$!
    wait "$SLEEP_PID" || true
    SLEEP_PID=
done
log "--for $RUN_FOR s elapsed"
