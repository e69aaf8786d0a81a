#!/usr/bin/env bash
# Fuzzes every cargo-fuzz target for a bounded time when a nightly toolchain and cargo-fuzz are
# present; otherwise says so and exits 0 (the seed corpora are replayed on stable by the test
# suite either way, so CI never depends on nightly).
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]      (default 60; CI passes a small bound)
#   FUZZ_SANITIZER=address|none   default `address`. The decoders under fuzz are safe Rust, so a
#                                 panic is what the fuzzer can find there; `none` builds in about
#                                 a third of the time and runs several times more inputs per second.
# Prints one line per target with the executions libFuzzer ran; a crash fails the script and
# leaves the input in <crate>/fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
sanitizer=${FUZZ_SANITIZER:-address}

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly' || ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz: skipped: needs a nightly toolchain and cargo-fuzz (cargo install cargo-fuzz)"
  exit 0
fi

# Every crate's fuzz folder (drivers/fuzz, fenced/fuzz, ...) builds into one directory so the
# dependencies they share are built once.
target_dir="$PWD/target/fuzz"
summary=()
for dir in */fuzz; do
  crate=${dir%/fuzz}
  for target in $(cd "$dir" && cargo +nightly fuzz list); do
    scratch=$(mktemp -d)
    log="$scratch.log"
    echo "== fuzz $dir $target for ${secs}s (sanitizer $sanitizer)"
    # New inputs go to a scratch corpus; the committed seeds are read only.
    if ! (cd "$dir" && cargo +nightly fuzz run -O -s "$sanitizer" --target-dir "$target_dir" \
      "$target" "$scratch" "corpus/$target" -- \
      -max_total_time="$secs" -rss_limit_mb=1024 -print_final_stats=1) >"$log" 2>&1; then
      tail -40 "$log"
      echo "fuzz: $dir $target found a crash; the input is in $dir/artifacts/$target/" >&2
      exit 1
    fi
    runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -1)
    summary+=("$(printf '%-8s %-16s %12s executions in %ss' "$crate" "$target" "${runs:-?}" "$secs")")
    rm -rf "$scratch" "$log"
  done
done
echo "== fuzz summary (no crash)"
printf '%s\n' "${summary[@]}"
