#!/usr/bin/env bash
# RustSec audit, offline, against the snapshot in ../shared/advisory-db (copied to a
# writable place: cargo-audit wants to write beside its database). Exceptions, each
# justified: .cargo/audit.toml.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
src=${ERIOP_DEV_ADVISORY_DB:-$root/../shared/advisory-db}
if ! cargo audit --version >/dev/null 2>&1; then
  echo "audit: installing cargo-audit" >&2
  cargo install --locked --quiet cargo-audit
fi
db=$(mktemp -d)/advisory-db
trap 'rm -rf "$(dirname "$db")"' EXIT
cp -r "$src" "$db"
chmod -R u+w "$db"
cd "$root"
cargo audit --db "$db" --no-fetch
