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
# The Raspberry Pi relay backend (drivers/src/relay/rpi.rs) is behind the off-by-default
# `rppal` feature, so the workspace run above never compiles it; rppal builds on any Linux
# (it only fails at run time off a Pi), so it is checked here on amd64 and built and unit-tested
# on arm64 below.
echo "== clippy, relay backend rppal (drivers and fenced with feature rppal)"
cargo clippy --locked -p drivers -p fenced --all-targets --features fenced/rppal -- -D warnings

echo "== build (binaries used by end-to-end tests)"
cargo build --workspace --bins --locked

# A test whose peer or kernel feature is missing fails (hw-tests/src/require.rs) unless
# PALISADE_ALLOW_SKIP allows it (a developer's local run; never set here). Every missing one is
# logged, one line per test, and listed at the end, so no skip passes unnoticed.
target_dir=${CARGO_TARGET_DIR:-target}
[[ $target_dir == /* ]] || target_dir="$(pwd)/$target_dir"
export PALISADE_SKIP_LOG="$target_dir/palisade-skips.log"
mkdir -p "$target_dir"
: >"$PALISADE_SKIP_LOG"

# The Debian packages, built once with the shipped profile (release, fat LTO: Cargo.toml says
# why) so the package test (hw-tests/tests/debian_package.rs) only installs, upgrades and
# purges them. amd64 only: the arm64 packages are another full cross build of that profile,
# over CI's budget (scripts/check-debs.sh checks them by hand; its header says how).
echo "== Debian packages (amd64, release profile)"
export PALISADE_DEB_DIR="$target_dir/debian"
rm -f "$PALISADE_DEB_DIR"/*.deb
PALISADE_DEB_ARCHES=amd64 bash scripts/build-debs.sh "$PALISADE_DEB_DIR"

echo "== tests"
tests_rc=0
cargo nextest run --workspace --locked --no-fail-fast --profile ci || tests_rc=$?
# The relay config's rppal selection (accepted, BCM ranges, a board that is not a Pi, the
# build failing off a Pi) only compiles with the feature; the run above tests its refusal.
cargo nextest run --locked --no-fail-fast --profile ci -p fenced --lib --features rppal \
  config::relay || tests_rc=$?

skips=$(sort -u "$PALISADE_SKIP_LOG")
skipped=$(grep -c '^skipped' <<<"$skips" || true)
missing=$(grep -c '^missing' <<<"$skips" || true)
if ((skipped + missing)); then
  echo "== tests whose requirement is missing here"
  awk -F'\t' '{ printf "  %s: %s needs %s (%s): %s\n", toupper($1), $2, $3, $4, $5 }' <<<"$skips"
fi
if ((missing)); then
  echo "$missing test(s) FAILED for a missing requirement: run scripts/install-test-deps.sh as" \
    "root (it installs and verifies each); PALISADE_ALLOW_SKIP=NAME,... skips on a local run only"
fi
if [[ -n ${PALISADE_ALLOW_SKIP:-} && ${PALISADE_ALLOW_SKIP} != 0 ]]; then
  echo "PALISADE_ALLOW_SKIP=$PALISADE_ALLOW_SKIP: $skipped test(s) skipped, not tested on this machine"
fi
if ((tests_rc)); then
  exit "$tests_rc"
fi

# Bounded fuzzing of every decoder when a nightly toolchain and cargo-fuzz are present (skipped,
# with a message, otherwise: CI never depends on nightly). Safe-Rust decoders: no sanitizer, so
# the build takes minutes, not tens of minutes. FUZZ_SECONDS=0 skips it.
if [ "${FUZZ_SECONDS:-20}" != 0 ]; then
  echo "== fuzz (${FUZZ_SECONDS:-20}s per target)"
  FUZZ_SANITIZER=${FUZZ_SANITIZER:-none} bash scripts/fuzz.sh "${FUZZ_SECONDS:-20}"
fi

# arm64 fence controllers (issue 18): the daemons' binaries cross-build for aarch64, and the unit
# tests of drivers, watchdog, boards and fenced's library run on arm64 under qemu user mode
# (.cargo/config.toml sets the linker and the runner). A dev build: a fat-LTO release
# cross-build costs many minutes on 2 cores, and what this
# gates is that the code builds and the tests pass on arm64. On by default; ARM64=0 skips it.
# Cost from cold (no arm64 artifacts), measured on 2 cores shared with five other builds: bins
# 9 m 22 s, test binaries 5 m 29 s, tests 42 s wall; 8.2 min of CPU in all.
if [ "${ARM64:-1}" != 0 ]; then
  echo "== arm64: cross-build the daemons, unit tests under qemu-aarch64"
  # fenced without its `corosync` feature here: Corosync's client libraries are installed for
  # amd64 only, and the feature's unit test loads them (fenced opens them at run time, so the
  # packaged arm64 fenced has [cluster]); the cluster code is tested against Corosync on amd64.
  cargo build --locked --target aarch64-unknown-linux-gnu -p watchdog --bins
  # With `rppal`: the arm64 build is the fence controller's, where `backend = "rppal"` applies.
  cargo build --locked --target aarch64-unknown-linux-gnu -p fenced --bins --no-default-features \
    --features rppal
  cargo nextest run --locked --no-fail-fast --target aarch64-unknown-linux-gnu \
    -p drivers -p watchdog -p boards --lib --features drivers/rppal
  cargo nextest run --locked --no-fail-fast --target aarch64-unknown-linux-gnu \
    -p fenced --lib --no-default-features --features rppal
fi
