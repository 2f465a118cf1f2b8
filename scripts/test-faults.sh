#!/usr/bin/env bash
# The fault suite (make test-faults): builds the services and eriop-faults, then runs it
# against private PostgreSQL, nats-server and Mosquitto instances it starts and kills itself.
# Arguments go to eriop-faults (see `eriop-faults --help`).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/services.sh
export ERIOP_TEST_NATS_SERVER_BIN=${ERIOP_TEST_NATS_SERVER_BIN:-$(bash scripts/nats-server-bin.sh)}
echo "test-faults: building the services (debug)" >&2
cargo build --quiet -p eriop-gateway -p eriop-projections -p eriop-bridge --bins
cargo run --quiet -p eriop-tests --bin eriop-faults -- "$@"
