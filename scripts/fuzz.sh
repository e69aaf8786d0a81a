#!/usr/bin/env bash
# Fuzzes every cargo-fuzz target for a bounded time when a nightly toolchain and cargo-fuzz are
# present; otherwise says so and exits 0 (the seed corpora are replayed on stable by the test
# suite either way). Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 60)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly' || ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz: skipped: needs a nightly toolchain and cargo-fuzz (cargo install cargo-fuzz)"
  exit 0
fi

for crate in drivers fenced; do
  (
    cd "$crate/fuzz"
    for target in $(cargo +nightly fuzz list); do
      out=$(mktemp -d)
      echo "== fuzz $crate/$target for ${secs}s"
      # New inputs go to a scratch corpus; the committed seeds are read only.
      cargo +nightly fuzz run -O "$target" "$out" "corpus/$target" -- \
        -max_total_time="$secs" -rss_limit_mb=1024 2>&1 | grep -E '^(Done|==[0-9]+==ERROR)|panicked' || true
      rm -rf "$out"
    done
  )
done
