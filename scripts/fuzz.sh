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

for crate in drivers fenced hw-tests; do
  (
    cd "$crate/fuzz"
    for target in $(cargo +nightly fuzz list); do
      out=$(mktemp -d)
      echo "== fuzz $crate/$target for ${secs}s"
      # New inputs go to a scratch corpus; the committed seeds are read only.
      if ! cargo +nightly fuzz run -O "$target" "$out" "corpus/$target" -- \
        -max_total_time="$secs" -rss_limit_mb=1024 >"$out.log" 2>&1; then
        tail -40 "$out.log"
        echo "fuzz: $crate/$target found a crash; the input is in $crate/fuzz/artifacts/$target" >&2
        exit 1
      fi
      grep -E '^Done' "$out.log" || true
      rm -rf "$out" "$out.log"
    done
  )
done
