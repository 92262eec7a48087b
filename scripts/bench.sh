#!/usr/bin/env bash
# Run the criterion benchmarks of the hot paths against a private PostgreSQL:
#   protocol: decode, token check, signature verification (single and batched)
#   store:    the tick writer's batched insert (rows/s at several batch sizes)
#
#   scripts/bench.sh [CRITERION ARGS...]     e.g. scripts/bench.sh -- --quick
#
# Builds with the optimised bench profile (slow the first time). PostgreSQL runs in
# .tmp/bench-pg with the same durability settings as the dev stack (fsync on), and is
# stopped on exit.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/common.sh
source "$ROOT/scripts/lib/common.sh"
# shellcheck source=lib/pg.sh
source "$ROOT/scripts/lib/pg.sh"
LOG_PREFIX="bench"
cd "$ROOT"

BENCH_PG=$ROOT/.tmp/bench-pg
# shellcheck disable=SC2317 # reached through the trap below
stop_pg() {
    local status=$?
    set +e
    pg_stop "$BENCH_PG"
    exit "$status"
}
trap stop_pg EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

pg_destroy "$BENCH_PG"
pg_start "$BENCH_PG" BENCH_PG_PORT
export UPTIME_TEST_DATABASE_URL=$PG_URL

log "cargo bench -p protocol --bench verify $*"
cargo bench -p protocol --bench verify "$@"
log "cargo bench -p store --bench tick_writer $*"
cargo bench -p store --bench tick_writer "$@"
log "cargo bench -p hub --bench pick $*"
cargo bench -p hub --bench pick "$@"
