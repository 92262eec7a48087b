#!/usr/bin/env bash
# Run the criterion benchmarks of the hot paths against a private PostgreSQL:
#   protocol: decode, token check, signature verification (single and batched)
#   store:    the tick writer's batched insert (rows/s at several batch sizes); the owners'
#             API reads on a website with 90 days of rounds (uptime, latency, pages)
#
#   scripts/bench.sh [CRITERION ARGS...]     e.g. scripts/bench.sh -- --quick
#   scripts/bench.sh --help                  this text
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
[[ ${1:-} == -h || ${1:-} == --help ]] && {
    print_usage
    exit 0
}
cd "$ROOT"

BENCH_PG=$ROOT/.tmp/bench-pg
# shellcheck disable=SC2317 # reached through on_exit
stop_pg() {
    pg_stop "$BENCH_PG"
}
on_exit stop_pg

pg_destroy "$BENCH_PG"
pg_start "$BENCH_PG" BENCH_PG_PORT
export UPTIME_TEST_DATABASE_URL=$PG_URL

log "cargo bench -p protocol --bench verify $*"
cargo bench -p protocol --bench verify "$@"
log "cargo bench -p store --bench tick_writer $*"
cargo bench -p store --bench tick_writer "$@"
log "cargo bench -p store --bench owner_reads $*"
cargo bench -p store --bench owner_reads "$@"
log "cargo bench -p store --bench rollup_reads $*"
cargo bench -p store --bench rollup_reads "$@"
log "cargo bench -p hub --bench pick $*"
cargo bench -p hub --bench pick "$@"
