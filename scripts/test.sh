#!/usr/bin/env bash
# Runs every test of the workspace against the real services (make test).
# Starts what is down first, and TimescaleDB on loopback for the hypertable test.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/services.sh
# An independent TOTP implementation for the MFA tests (Debian's oathtool).
if ! command -v oathtool >/dev/null; then
  echo "test: installing oathtool" >&2
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq oathtool >/dev/null
fi

# nginx checks and serves the shipped edge configuration in the edge test (tests/tests/e2e/
# edge.rs). Installed without starting Debian's own nginx service (policy-rc.d says no).
if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
  echo "test: installing nginx (not started)" >&2
  policy=/usr/sbin/policy-rc.d
  made_policy=0
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1; fi
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-core >/dev/null
  if [ "$made_policy" = 1 ]; then rm -f "$policy"; fi
fi

# PyYAML reads docker-compose.yml in the deployment test (no Docker engine here).
if ! python3 -c 'import yaml' 2>/dev/null; then
  echo "test: installing PyYAML" >&2
  python3 -m pip install -q pyyaml >/dev/null
fi

export ERIOP_TEST_NATS_SERVER_BIN=${ERIOP_TEST_NATS_SERVER_BIN:-$(bash scripts/nats-server-bin.sh)}
export ERIOP_TEST_NATS_URL=${ERIOP_TEST_NATS_URL:-nats://127.0.0.1:${ERIOP_DEV_NATS_PORT:-4223}}
export RUST_BACKTRACE=${RUST_BACKTRACE:-0}

shared="$root/../shared/timescaledb/start.sh"
if [ -z "${ERIOP_TEST_TIMESCALE_URL:-}" ] && [ -x "$shared" -o -f "$shared" ]; then
  echo "test: starting TimescaleDB on loopback (../shared/timescaledb)" >&2
  ERIOP_TEST_TIMESCALE_URL=$(bash "$shared" "${ERIOP_DEV_TIMESCALE_PORT:-55432}")
  export ERIOP_TEST_TIMESCALE_URL
fi

# Databases of earlier runs (each test makes its own).
stale=$(psql -h 127.0.0.1 -U postgres -At -c "SELECT datname FROM pg_database WHERE datname LIKE 'eriop\_test\_%'" postgres || true)
for db in $stale; do psql -h 127.0.0.1 -U postgres -q -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" postgres >/dev/null || true; done

# Streams of earlier runs on the shared nats-server (each reserves its size from the store).
cargo run --quiet -p eriop-tests --bin eriop-test-streams

# Every log line the services write goes to this folder too (tests/src/lib.rs), and is scanned
# for personal data and secrets once the tests are done.
export ERIOP_TEST_LOG_DIR=${ERIOP_TEST_LOG_DIR:-$(mktemp -d -t eriop-test-logs.XXXXXX)}
status=0
coverage=""
if [ "${ERIOP_COVERAGE:-0}" = 1 ]; then
  # The same tests, instrumented (cargo-llvm-cov; its own target folder): line coverage of
  # the workspace, printed at the end and held at ERIOP_COVERAGE_MIN percent.
  coverage=$(mktemp -t eriop-coverage.XXXXXX)
  cargo llvm-cov nextest --workspace --no-fail-fast --summary-only "$@" | tee "$coverage" || status=$?
elif cargo nextest --version >/dev/null 2>&1; then
  # (nextest skips doc-tests; the workspace has none: examples live in tests/.)
  cargo nextest run --workspace --no-fail-fast "$@" || status=$?
else
  cargo test --workspace --no-fail-fast "$@" || status=$?
fi
python3 scripts/scan-logs.py "$ERIOP_TEST_LOG_DIR" || status=$((status == 0 ? 1 : status))
if [ -n "$coverage" ]; then
  # TOTAL regions missed cover% functions missed executed% lines missed cover% ...
  lines=$(awk '$1 == "TOTAL" { print $10 }' "$coverage" | tr -d '%')
  min=${ERIOP_COVERAGE_MIN:-80}
  if [ -z "$lines" ]; then
    # cargo-llvm-cov reports only after a run whose tests all passed.
    echo "coverage: not measured (no summary: did a test fail? see above)" >&2
    status=$((status == 0 ? 1 : status))
  elif awk -v l="$lines" -v m="$min" 'BEGIN { exit !(l + 0 < m + 0) }'; then
    echo "coverage: ${lines}% of the workspace's lines, below ${min}%: add tests for what the summary above shows uncovered" >&2
    status=$((status == 0 ? 1 : status))
  else
    echo "coverage: ${lines}% of the workspace's lines (at least ${min}%)"
  fi
fi
exit "$status"
