#!/usr/bin/env bash
# Runs gateway, bridge and projections with prefixed logs until Ctrl-C (make run).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
data=${ERIOP_DEV_DATA_DIR:-$root/.data}

echo "run: building the services (a first build takes several minutes on 2 cores; cargo shows its progress)" >&2
cargo build --bins
bin=${CARGO_TARGET_DIR:-$root/target}/debug

export ERIOP_NATS_URL=${ERIOP_NATS_URL:-nats://127.0.0.1:${ERIOP_DEV_NATS_PORT:-4223}}
export ERIOP_LOG_FORMAT=${ERIOP_LOG_FORMAT:-pretty}
export ERIOP_SECRET_KEY_FILE=${ERIOP_SECRET_KEY_FILE:-$(bash scripts/dev-secret-key.sh)}

# Each service is supervised: restarted with backoff when it exits (a panic ends a service on
# purpose), all of them stopped by Ctrl-C (scripts/supervise.sh).
services=(projections "$bin/eriop-projections run" bridge "$bin/eriop-bridge" gateway "$bin/eriop-gateway")
if [ -n "${SIMULATE:-}" ]; then
  # make run SIMULATE=20: virtual street lights too (registered when TOKEN is set; see make simulate)
  services+=(simulate "env DEVICES=$SIMULATE RATE=${RATE:-5} bash scripts/simulate.sh")
fi
# The supervisor leads its own process group (setsid), with every service in it: Ctrl-C here
# asks it to stop them (SIGTERM; a background job ignores SIGINT), and whatever way this
# script ends, nothing of the group outlives it.
setsid bash scripts/supervise.sh "${services[@]}" &
supervisor=$!
finish() {
  trap - INT TERM EXIT
  kill -TERM "$supervisor" 2>/dev/null && wait "$supervisor" 2>/dev/null
  kill -KILL -- "-$supervisor" 2>/dev/null || true
}
trap finish INT TERM EXIT

addr=${ERIOP_HTTP_ADDR:-127.0.0.1:8080}
for _ in $(seq 1 100); do
  if curl -fsS "http://$addr/health/live" >/dev/null 2>&1; then break; fi
  sleep 0.1
done
cat >&2 <<MSG

  ERIOP API:   http://$addr/api/v1   (health: http://$addr/health/ready)
  First admin: make bootstrap-admin EMAIL=you@agency.example   (prints a one-time password)
  Log in:      curl -H 'content-type: application/json' -d '{"email":"…","password":"…"}' http://$addr/api/v1/auth/login
  Devices:     make simulate DEVICES=20 RATE=5 TOKEN=<access_token>   (registers and runs virtual street lights)
  Stop:        Ctrl-C

MSG
wait "$supervisor" || true
