#!/usr/bin/env bash
# Prints the path of this machine's development server key, making it on first use
# (readable by you alone, never printed). Deployments set ERIOP_SECRET_KEY(_FILE) themselves.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data=${ERIOP_DEV_DATA_DIR:-$root/.data}
file="$data/secret-key"
mkdir -p "$data"
if [ ! -s "$file" ]; then
  (umask 077; head -c 48 /dev/urandom | base64 | tr -d '\n' >"$file")
fi
echo "$file"
