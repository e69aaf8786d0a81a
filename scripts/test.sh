#!/usr/bin/env bash
# The whole test suite, as CI runs it: real peers installed, style gates, then every test.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh

echo "== rustfmt"
cargo fmt --all --check

echo "== cargo deny (licences, bans, sources; advisories cannot be fetched here)"
cargo deny check licenses bans sources

echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== build (binaries used by end-to-end tests)"
cargo build --workspace --bins --locked

echo "== tests"
cargo nextest run --workspace --locked --no-fail-fast --profile ci

# Bounded fuzzing of every decoder when a nightly toolchain and cargo-fuzz are present (skipped,
# with a message, otherwise: CI never depends on nightly). Safe-Rust decoders: no sanitizer, so
# the build takes minutes, not tens of minutes. FUZZ_SECONDS=0 skips it.
if [ "${FUZZ_SECONDS:-20}" != 0 ]; then
  echo "== fuzz (${FUZZ_SECONDS:-20}s per target)"
  FUZZ_SANITIZER=${FUZZ_SANITIZER:-none} bash scripts/fuzz.sh "${FUZZ_SECONDS:-20}"
fi
