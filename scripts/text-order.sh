#!/bin/bash
# Writes fenced/text-order.txt: the functions the shipped `fenced run` reaches at start and while
# idle, in address order, for the linker to place first (fenced/build.rs says why: idle RSS).
#
#   scripts/text-order.sh          regenerate it (release build, then about 30 s under callgrind)
#   scripts/text-order.sh check    count how many of its entries the current release build matches
#
# How: a release build with PALISADE_TEXT_MAP asks LLD for its link map, which names every
# function section's address and size (the shipped binary is stripped, and a build with symbols
# would be a different build: its mangled hashes differ). Callgrind runs that very binary with
# the packaged example configuration (packaging/debian/fenced.toml, paths moved to a scratch
# folder) and records every instruction address it executed; each address is looked up in the
# map. Needs valgrind and python3 (Debian: valgrind python3). A developer's tool, not run in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-write}
idle_s=${PALISADE_TEXT_ORDER_IDLE_S:-20}
work=$(mktemp -d /tmp/palisade-text-order.XXXXXX)
trap 'rm -rf "$work"' EXIT

PALISADE_TEXT_MAP="$work/fenced.map" cargo build --release --locked -p fenced --bin fenced
if [ ! -s "$work/fenced.map" ]; then
  echo "text-order: the linker wrote no map to $work/fenced.map (is this an x86-64 build with PALISADE_TEXT_ORDER unset?)" >&2
  exit 1
fi

lookup() { # lookup MAP [CALLGRIND_OUT BINARY]: print the touched sections, or check coverage
  python3 - "$@" <<'PY'
import bisect, re, sys
sections = []
for line in open(sys.argv[1]):
    m = re.match(r"\s*([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+\d+\s+\S*:\(\.text\.(\S+)\)$", line)
    if m and int(m.group(2), 16):
        sections.append((int(m.group(1), 16), int(m.group(2), 16), m.group(3)))
if not sections:
    sys.exit("text-order: no .text.NAME sections in the link map %s" % sys.argv[1])
if len(sys.argv) == 2:
    names = {s[2] for s in sections}
    order = [l.strip() for l in open("fenced/text-order.txt") if l.strip()]
    hit = sum(1 for n in order if n in names)
    print("fenced/text-order.txt: %d of %d entries match this build" % (hit, len(order)))
    sys.exit(0 if order and hit * 10 >= len(order) * 9 else 1)
sections.sort()
starts = [s[0] for s in sections]
touched, obj = {}, None
for line in open(sys.argv[2]):
    if line.startswith("ob="):
        obj = line[3:].strip()
    elif obj == sys.argv[3] and line.startswith("0x"):
        addr = int(line.split()[0], 16)
        i = bisect.bisect_right(starts, addr) - 1
        if i >= 0 and addr < sections[i][0] + sections[i][1]:
            touched[sections[i][2]] = sections[i]
if not touched:
    sys.exit("text-order: callgrind recorded no instruction of %s" % sys.argv[3])
for _, _, name in sorted(touched.values()):
    print(name)
print("text-order: %d functions, %d bytes" % (len(touched), sum(s[1] for s in touched.values())), file=sys.stderr)
PY
}

if [ "$mode" = check ]; then
  lookup "$work/fenced.map"
  exit
fi
[ "$mode" = write ] || { echo "usage: scripts/text-order.sh [check]" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "text-order: needs valgrind (apt-get install valgrind)" >&2; exit 1; }

cp target/release/fenced "$work/fenced"
mkdir "$work/state"
sed -e "s#/run/palisade/fenced.sock#$work/state/fenced.sock#" \
    -e "s#/var/lib/palisade/history.redb#$work/state/history.redb#" \
    packaging/debian/fenced.toml > "$work/fenced.toml"
# The daemon runs until SIGTERM, which it answers by stopping cleanly (callgrind then writes).
timeout -s TERM "$idle_s" valgrind --tool=callgrind --dump-instr=yes --compress-pos=no \
  --compress-strings=no --callgrind-out-file="$work/cg.out" \
  "$work/fenced" run --config "$work/fenced.toml" >"$work/run.log" 2>&1 || true
grep -q "fenced ready" "$work/run.log" || { echo "text-order: fenced never got ready:" >&2; tail -20 "$work/run.log" >&2; exit 1; }
lookup "$work/fenced.map" "$work/cg.out" "$work/fenced" > "$work/order.txt"
mv "$work/order.txt" fenced/text-order.txt
echo "text-order: wrote fenced/text-order.txt; rebuild with cargo build --release -p fenced"
