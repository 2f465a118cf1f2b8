#!/usr/bin/env bash
# make simulate DEVICES=100 RATE=50 [TOKEN=<access token>]: virtual street lights against the
# development broker. With TOKEN (an access token of a user with devices:write, e.g. from
# POST /api/v1/auth/login), the lights are first registered (a device class and a bulk CSV);
# without it, register them yourself: unregistered devices' messages go to the DLQ stream.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
devices=${DEVICES:-10}
rate=${RATE:-10}
registry=${REGISTRY:-simulator}
api=${ERIOP_API_URL:-http://${ERIOP_HTTP_ADDR:-127.0.0.1:8080}/api/v1}

if [ -n "${TOKEN:-}" ]; then
  echo "simulate: registering $devices lights in registry '$registry' through $api" >&2
  # Devices are registered only under a registry of the caller's agency (README, "Registries").
  agency=$(curl -fsS -H "authorization: Bearer $TOKEN" "$api/auth/me" | python3 -c 'import json,sys; print(json.load(sys.stdin)["agency_id"])') \
    || { echo "simulate: cannot read who TOKEN is: is the gateway running (make run) and TOKEN valid?" >&2; exit 1; }
  code=$(curl -sS -o /dev/null -w '%{http_code}' -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d "{\"registry\":\"$registry\",\"agency_id\":\"$agency\"}" "$api/registries")
  case $code in
    200|201) ;;
    403) echo "simulate: TOKEN cannot assign registries; a platform administrator must assign '$registry' to agency $agency (POST $api/registries)" >&2 ;;
    *) echo "simulate: assigning registry '$registry' answered $code (another agency's? REGISTRY=name picks another)" >&2 ;;
  esac
  class=$(curl -fsS -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \
    -d '{"name":"Simulated street light","offline_after_secs":180,"functions":[{"id":"lampMonitor001","type":"LampMonitorFunction"},{"id":"lampActuator001","type":"LampActuatorFunction"},{"id":"comm001","type":"CommunicationFunction"}]}' \
    "$api/device-classes" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])') \
    || { echo "simulate: cannot create the device class: is the gateway running (make run) and TOKEN valid?" >&2; exit 1; }
  csv=$(mktemp)
  echo "class_id,registry,serial,name" > "$csv"
  for n in $(seq 1 "$devices"); do printf '%s,%s,SIM-%04d,Simulated light %d\n' "$class" "$registry" "$n" "$n" >> "$csv"; done
  curl -fsS -H "authorization: Bearer $TOKEN" -H 'content-type: text/csv' --data-binary "@$csv" "$api/devices/bulk" \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); print("simulate: %d registered, %d not (already registered?)" % (r["registered"], r["failed"]), file=sys.stderr)'
  rm -f "$csv"
else
  echo "simulate: no TOKEN given: the lights are not registered here (their messages go to the DLQ until they are)" >&2
fi

cargo build --quiet -p eriop-bridge --bin eriop-simulate
export ERIOP_LOG_FORMAT=${ERIOP_LOG_FORMAT:-pretty}
exec "${CARGO_TARGET_DIR:-$root/target}/debug/eriop-simulate" --devices "$devices" --rate "$rate" --registry "$registry" \
  --heartbeat-secs "${HEARTBEAT_SECS:-60}" ${DURATION_SECS:+--duration-secs "$DURATION_SECS"}
