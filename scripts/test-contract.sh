#!/usr/bin/env bash
# The API against its own document (make test-contract): schemathesis, every phase and
# check, as several roles, against a deployment on loopback that eriop-contract starts.
# Arguments go to eriop-contract (see `eriop-contract --help`).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/services.sh
export ERIOP_TEST_NATS_SERVER_BIN=${ERIOP_TEST_NATS_SERVER_BIN:-$(bash scripts/nats-server-bin.sh)}
version=4.32.5
if ! command -v schemathesis >/dev/null || [ "$(schemathesis --version 2>/dev/null | awk '{print $NF}')" != "$version" ]; then
  echo "test-contract: installing schemathesis $version (PyPI)" >&2
  python3 -m pip install -q "schemathesis==$version" >/dev/null
fi
echo "test-contract: building the services (debug)" >&2
cargo build --quiet -p eriop-gateway -p eriop-projections -p eriop-bridge --bins
cargo run --quiet -p eriop-tests --bin eriop-contract -- "$@"
