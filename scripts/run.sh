#!/usr/bin/env bash
# Runs gateway, bridge and projections with prefixed logs until Ctrl-C (make run).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
data=${ERIOP_DEV_DATA_DIR:-$root/.data}

cargo build --quiet --bins
bin=${CARGO_TARGET_DIR:-$root/target}/debug

export ERIOP_NATS_URL=${ERIOP_NATS_URL:-nats://127.0.0.1:${ERIOP_DEV_NATS_PORT:-4223}}
export ERIOP_LOG_FORMAT=${ERIOP_LOG_FORMAT:-pretty}
export ERIOP_SECRET_KEY_FILE=${ERIOP_SECRET_KEY_FILE:-$(bash scripts/dev-secret-key.sh)}

pids=()
stop() {
  trap - INT TERM EXIT
  echo "run: stopping" >&2
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

start() {
  local name=$1; shift
  ("$@" 2>&1 | sed -u "s/^/[$name] /") &
  pids+=($!)
}
start projections "$bin/eriop-projections" run
start bridge "$bin/eriop-bridge"
start gateway "$bin/eriop-gateway"

addr=${ERIOP_HTTP_ADDR:-127.0.0.1:8080}
for _ in $(seq 1 100); do
  if curl -fsS "http://$addr/health/live" >/dev/null 2>&1; then break; fi
  sleep 0.1
done
if [ -n "${SIMULATE:-}" ]; then
  # make run SIMULATE=20: virtual street lights too (registered when TOKEN is set; see make simulate)
  start simulate env DEVICES="$SIMULATE" RATE="${RATE:-5}" bash scripts/simulate.sh
fi
cat >&2 <<MSG

  ERIOP API:   http://$addr/api/v1   (health: http://$addr/health/ready)
  First admin: make bootstrap-admin EMAIL=you@agency.example   (prints a one-time password)
  Log in:      curl -H 'content-type: application/json' -d '{"email":"…","password":"…"}' http://$addr/api/v1/auth/login
  Devices:     make simulate DEVICES=20 RATE=5 TOKEN=<access_token>   (registers and runs virtual street lights)
  Stop:        Ctrl-C

MSG
wait -n "${pids[@]}" || true
