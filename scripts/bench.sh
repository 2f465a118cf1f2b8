#!/usr/bin/env bash
# The benchmark suite (make bench): installs oha (the HTTP load generator) if missing, builds
# the services and eriop-bench in release mode, then runs it on a deployment of its own
# (private PostgreSQL, nats-server and Mosquitto it starts; the machine's Redis).
# Arguments go to eriop-bench (see `eriop-bench --help`); a full run writes docs/BENCHMARKS.md.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/services.sh
export ERIOP_TEST_NATS_SERVER_BIN=${ERIOP_TEST_NATS_SERVER_BIN:-$(bash scripts/nats-server-bin.sh)}
if ! command -v oha >/dev/null && [ -z "${ERIOP_BENCH_OHA:-}" ]; then
  echo "bench: installing oha (cargo install --locked oha), once" >&2
  cargo install --locked --quiet oha
fi
echo "bench: building the services and eriop-bench (release)" >&2
cargo build --release --quiet -p eriop-gateway -p eriop-projections -p eriop-bridge -p eriop-tests --bins
exec "${CARGO_TARGET_DIR:-$root/target}/release/eriop-bench" "$@"
