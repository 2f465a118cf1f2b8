#!/usr/bin/env bash
# make fuzz: coverage-guided fuzzing (cargo-fuzz, libFuzzer) of the decoders that take a
# device's or a client's bytes, each target for FUZZ_SECONDS (60), from the seeds in
# bridge/fuzz/seeds/ and the corpus of earlier runs. A finding stops with the input saved in
# bridge/fuzz/artifacts/ (make it a regression test in bridge/src/ingest/tests.rs or the
# crate it breaks). The toolchain is stable: RUSTC_BOOTSTRAP lets cargo-fuzz pass its flags.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${FUZZ_SECONDS:-60}
case "${1:-}" in -h|--help) sed -n '2,7p' "$0" | sed 's/^# //'; exit 0;; esac
command -v cargo-fuzz >/dev/null || cargo install --locked --quiet cargo-fuzz
export RUSTC_BOOTSTRAP=1
# Its own target folder (sanitizer builds), kept across clones like the main one.
export CARGO_TARGET_DIR=${ERIOP_FUZZ_TARGET_DIR:-/var/tmp/eriop-fuzz-target}
cd "$root/bridge"
echo "fuzz: building the targets (sanitizer build; the first one takes minutes)"
cargo fuzz build --fuzz-dir fuzz
summary=()
for target in ingest domain_parsers telemetry_batch; do
  corpus="fuzz/corpus/$target"
  mkdir -p "$corpus"
  echo "fuzz: $target for ${seconds}s"
  log=$(mktemp)
  if cargo fuzz run --fuzz-dir fuzz "$target" "$corpus" "fuzz/seeds/$target" -- \
      -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
    runs=$(grep -Eo '^Done [0-9]+ runs' "$log" | grep -Eo '[0-9]+' || echo "?")
    cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -1 || true)
    summary+=("fuzz: $target: $runs runs in ${seconds}s, ${cov:-cov: ?}, no finding")
  else
    tail -40 "$log"
    echo "fuzz: $target FOUND A FAILURE: the input is in bridge/fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
printf '%s\n' "${summary[@]}"
