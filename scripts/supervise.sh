#!/usr/bin/env bash
# Supervises long-running commands until Ctrl-C (used by `make run`):
#
#   bash scripts/supervise.sh NAME 'COMMAND' [NAME 'COMMAND' ...]
#
# Each command runs with its output prefixed by [NAME]. One that exits is started again after
# a pause that doubles from 1 s up to 30 s (back to 1 s once it stayed up for a minute), with
# a line saying which and why. Ctrl-C (or SIGTERM) stops every command: SIGTERM first, SIGKILL
# after 10 s, and nothing is left behind.
set -uo pipefail
if [ $# -lt 2 ] || [ $(($# % 2)) -ne 0 ] || [ "${1:-}" = "--help" ]; then
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi

# `make run | tee log` then Ctrl-C: tee is gone before us, and a write to it must not kill the
# supervisor halfway through stopping the services.
trap '' PIPE
state=$(mktemp -d)
say() { echo "run: $*" >&2; }

supervise() {
  local name=$1 command=$2 delay=1 started code why
  while [ ! -e "$state/stopping" ]; do
    started=$SECONDS
    bash -c "exec $command" > >(sed -u "s/^/[$name] /") 2>&1 &
    echo $! >"$state/$name.pid"
    say "started $name (pid $!)"
    wait $!
    code=$?
    [ -e "$state/stopping" ] && return 0
    if [ $code -gt 128 ]; then why="was killed by signal $((code - 128))"; else why="exited with status $code"; fi
    if [ $((SECONDS - started)) -ge 60 ]; then delay=1; fi
    say "$name $why; restarting it in ${delay} s (its log above says why)"
    sleep "$delay"
    delay=$((delay * 2 > 30 ? 30 : delay * 2))
  done
}

stop() {
  trap - INT TERM EXIT
  touch "$state/stopping"
  say "stopping"
  local pids=() pid
  for file in "$state"/*.pid; do
    [ -e "$file" ] && pids+=("$(cat "$file")")
  done
  [ ${#pids[@]} -gt 0 ] && kill -TERM "${pids[@]}" 2>/dev/null
  for _ in $(seq 1 100); do
    local alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive -eq 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null && say "pid $pid did not stop in 10 s: killed"; done
  kill $(jobs -p) 2>/dev/null
  wait 2>/dev/null
  rm -rf "$state"
  say "stopped"
  exit 0
}
trap stop INT TERM EXIT

while [ $# -gt 0 ]; do
  supervise "$1" "$2" &
  shift 2
done
# Waits until a signal; `wait` returns early when one arrives, and the trap stops everything.
while true; do wait; sleep 1; done
