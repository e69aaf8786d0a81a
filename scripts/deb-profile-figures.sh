#!/usr/bin/env bash
# Thin LTO ([profile.deb]) against fat LTO ([profile.release]) for fenced, the figures behind
# the choice of the packages' profile (Cargo.toml's [profile.deb] comment):
# - stripped size of the binary;
# - idle RSS (VmRSS, and VmHWM) of `fenced run` with the packaged example configuration
#   (packaging/debian/fenced.toml, its paths moved into a scratch folder) after 30 s;
# - fenced's CPU per fence: the mass_fence bench (hw-tests/examples/mass_fence.rs) with a small
#   count, both binaries in the same run against one palisade-lab ipmi fleet.
#
# Build first (the bench and the lab may be dev builds: only fenced's CPU is compared):
#   cargo build --profile deb -p fenced --bin fenced
#   cargo build --release -p fenced --bin fenced
#   cargo build -p hw-tests --example mass_fence --bin palisade-lab
# then: scripts/deb-profile-figures.sh [COUNT]   (COUNT targets, default 100)
set -euo pipefail
cd "$(dirname "$0")/.."

count=${1:-100}
target_dir=${CARGO_TARGET_DIR:-target}
declare -A bins=([deb]=$target_dir/deb/fenced [release]=$target_dir/release/fenced)
bench=$target_dir/debug/examples/mass_fence
lab=$target_dir/debug/palisade-lab
for f in "${bins[@]}" "$bench" "$lab"; do
  [[ -x $f ]] || { echo "deb-profile-figures: $f is missing: build it first (see this script's header)" >&2; exit 1; }
done

scratch=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$scratch"
}
trap cleanup EXIT

echo "== stripped size (both profiles strip symbols)"
for p in deb release; do
  printf '%-8s %10d bytes  %s\n' "$p" "$(stat -c %s "${bins[$p]}")" "${bins[$p]}"
done

echo "== idle RSS of fenced run (packaged example configuration), after 30 s"
for p in deb release; do
  d=$scratch/$p
  mkdir -p "$d"
  sed -e "s|/run/palisade/|$d/|" -e "s|/var/lib/palisade/|$d/|" packaging/debian/fenced.toml >"$d/fenced.toml"
  "${bins[$p]}" run --config "$d/fenced.toml" >"$d/log" 2>&1 &
  pids+=($!)
  echo "$!" >"$d/pid"
done
sleep 30
for p in deb release; do
  d=$scratch/$p
  pid=$(cat "$d/pid")
  if ! kill -0 "$pid" 2>/dev/null; then
    cat "$d/log" >&2
    echo "deb-profile-figures: fenced ($p) exited during the 30 s" >&2
    exit 1
  fi
  rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status")
  hwm=$(awk '/^VmHWM/ { print $2 }' "/proc/$pid/status")
  printf '%-8s VmRSS %6d KiB  VmHWM %6d KiB\n' "$p" "$rss" "$hwm"
  kill "$pid"
done
wait 2>/dev/null || true
pids=()

echo "== fenced CPU per fence: mass_fence --count $count (both binaries, one fleet)"
"$bench" --count "$count" --delays 0 --lab "$lab" --fenced "deb=${bins[deb]}" --fenced "release=${bins[release]}"
