#!/usr/bin/env bash
# arm64 footprint figures (issue 18): stripped sizes of the release `fenced` and `palisade-sbd`,
# `fenced run`'s idle RSS after 30 s with the shipped default configuration, and
# `palisade-sbd watch`'s VmLck/VmRSS on an SBD disk our own `palisade-sbd create` wrote, fed to
# the VM's i6300esb watchdog. Measured in a qemu VM of each architecture (arm64: `virt`,
# Cortex-A72, TCG; amd64: q35), by hw-tests/tests/arm64_figures.rs, which prints the figures.
#   scripts/arm64-figures.sh [ARCH...]       ARCH: aarch64 (default: aarch64 x86_64)
# Binaries: built here (release profile, nice -n 10; a cold aarch64 build is many minutes on
# 2 cores), or given: FENCED_BIN_<ARCH>=path SBD_BIN_<ARCH>=path (e.g. FENCED_BIN_aarch64).
# Needs what scripts/install-test-deps.sh installs (qemu-system-arm, the unpacked arm64 kernel
# and busybox, gcc-aarch64-linux-gnu).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
archs=("$@")
((${#archs[@]})) || archs=(aarch64 x86_64)
host=$(rustc -vV | sed -n 's/^host: //p')
for a in "${archs[@]}"; do
  case "$a" in
    aarch64 | arm64) a=aarch64 triple=aarch64-unknown-linux-gnu strip=aarch64-linux-gnu-strip ;;
    x86_64 | amd64) a=x86_64 triple=x86_64-unknown-linux-gnu strip=strip ;;
    *) echo "arm64-figures: unknown architecture $a (expected aarch64 or x86_64)" >&2; exit 2 ;;
  esac
  fv=FENCED_BIN_$a sv=SBD_BIN_$a
  fenced=${!fv:-} sbd=${!sv:-}
  if [[ -z $fenced || -z $sbd ]]; then
    tflag=() dir=$root/target/release
    if [[ $triple != "$host" ]]; then tflag=(--target "$triple") dir=$root/target/$triple/release; fi
    echo "== $a: release build of fenced and palisade-sbd"
    nice -n 10 cargo build --locked --release "${tflag[@]}" --manifest-path "$root/Cargo.toml" \
      -p fenced --bin fenced -p watchdog --bin palisade-sbd
    fenced=$dir/fenced sbd=$dir/palisade-sbd
  fi
  # The release profile strips already (strip = "symbols"); strip again so a given binary is
  # measured the same way. Copies: the originals stay as cargo left them.
  d=$(mktemp -d)
  trap 'rm -rf "$d"' EXIT
  cp "$fenced" "$d/fenced"; cp "$sbd" "$d/palisade-sbd"
  "$strip" "$d/fenced" "$d/palisade-sbd"
  echo "== $a: figures in the VM (boot and 30 s idle; under TCG an arm64 guest takes minutes)"
  PALISADE_FIGURES_ARCH=$a PALISADE_FENCED_BIN=$d/fenced PALISADE_SBD_BIN=$d/palisade-sbd \
    nice -n 5 cargo test --locked --manifest-path "$root/Cargo.toml" -p hw-tests --test arm64_figures \
    -- --ignored --nocapture --exact release_daemons_footprint_in_a_vm
  rm -rf "$d"
done
