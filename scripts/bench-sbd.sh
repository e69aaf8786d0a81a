#!/usr/bin/env bash
# Side-by-side figures for palisade-sbd and ClusterLabs sbd (Debian) on the same loop devices:
# list and dump on 3 disks, message (msgwait + overhead), and list with one of three disks hung
# (reads throttled to a few bytes per second through the cgroup v1 blkio throttle, which makes
# a 512-byte O_DIRECT read sleep in the kernel; device-mapper is not available here).
# Whole-process wall times, medians of RUNS (default 7; message and fence_sbd 5; hung-disk
# rows HUNG_RUNS, default 5). Needs root, sbd, fence_sbd, losetup, bc.
# Usage: scripts/bench-sbd.sh [RUNS]   (never runs sbd's watcher)
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${1:-7}
MSG_RUNS=5
HUNG_BPS=${HUNG_BPS:-16} # 512-byte read takes 512/16 = 32 s
OURS=${OURS:-target/release/palisade-sbd}
SBD=/usr/sbin/sbd
export PALISADE_SBD_CONFIG= SBD_PACEMAKER=no
unset SBD_DEVICE

[[ -x $OURS ]] || cargo build -q --release -p watchdog --bin palisade-sbd

work=$(mktemp -d)
loops=()
cg=/sys/fs/cgroup/blkio/palisade-bench-$$
cleanup() {
  [[ -d $cg ]] && { echo "${majmin:-0:0} 0" >"$cg/blkio.throttle.read_bps_device" || true; sleep 1; rmdir "$cg" 2>/dev/null || true; }
  for l in "${loops[@]}"; do losetup -d "$l" || true; done
  rm -rf "$work"
}
trap cleanup EXIT

for i in 1 2 3; do
  truncate -s 16M "$work/d$i"
  loops+=("$(losetup -f --show "$work/d$i")")
done
D="-d ${loops[0]} -d ${loops[1]} -d ${loops[2]}"

# seconds.nanoseconds wall time of one command, output discarded
t() { local s e; s=$(date +%s%N); "$@" >/dev/null 2>&1 || true; e=$(date +%s%N); echo "scale=4; ($e-$s)/1000000000" | bc; }
median() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.4f", m}'; }
bench() { local n=$1; shift; for _ in $(seq "$n"); do t "$@"; done | median; }
# fence_sbd answers "Already OFF" when n1's mailbox says off, and fails unless it says clear:
# zero n1's mailbox (slot 0, sector 2) before each run, so every run really fences.
unfence() { for l in "${loops[@]}"; do dd if=/dev/zero of="$l" bs=512 seek=2 count=1 oflag=direct conv=notrunc status=none; done; }
fence_bench() { local n=$1; shift; for _ in $(seq "$n"); do unfence; t "$@"; done | median; }

$SBD $D create >/dev/null
$SBD $D allocate n1 >/dev/null
$SBD $D allocate n2 >/dev/null
echo "# 3 loop devices of 16 MiB, created by sbd (watchdog 5, msgwait 10), 2 slots allocated"
echo "| what | command | sbd (s) | palisade-sbd (s) |"
echo "|---|---|---|---|"
echo "| list, 3 disks | \`-d A -d B -d C list\` | $(bench "$RUNS" $SBD $D list) | $(bench "$RUNS" "$OURS" $D list) |"
echo "| dump, 3 disks | \`-d A -d B -d C dump\` | $(bench "$RUNS" $SBD $D dump) | $(bench "$RUNS" "$OURS" $D dump) |"
echo "| message (msgwait 10) | \`-d A -d B -d C message n1 test\` | $(bench $MSG_RUNS $SBD $D message n1 test) | $(bench $MSG_RUNS "$OURS" $D message n1 test) |"
echo "| message exit (no msgwait) | \`-d A -d B -d C message n2 exit\` | $(bench "$RUNS" $SBD $D message n2 exit) | $(bench "$RUNS" "$OURS" $D message n2 exit) |"
FDH="--devices=${loops[0]},${loops[1]},${loops[2]} --plug=n1 --action=off"
echo "| fence_sbd off (msgwait 10) | \`fence_sbd --devices=A,B,C --plug=n1 --sbd-path=BIN --action=off\` | $(fence_bench 5 /usr/sbin/fence_sbd $FDH --sbd-path=$SBD) | $(fence_bench 5 /usr/sbin/fence_sbd $FDH --sbd-path="$(realpath "$OURS")") |"

# One of three disks hung for the processes in $cg.
majmin=$(lsblk -dno MAJ:MIN "${loops[1]}" | tr -d ' ')
mkdir -p "$cg"
echo "$majmin $HUNG_BPS" >"$cg/blkio.throttle.read_bps_device"
inside() { sh -c "echo \$\$ > $cg/cgroup.procs; exec $*"; }
# Before every run the throttle queue is drained (limit lifted for a moment, then set again),
# so each run meets a fresh hang rather than reads queued by earlier runs (sbd's own stuck
# children, or the reads ours abandoned).
drain() { echo "$majmin 0" >"$cg/blkio.throttle.read_bps_device"; sleep 1; echo "$majmin $HUNG_BPS" >"$cg/blkio.throttle.read_bps_device"; }
hung() { local n=$1; shift; for _ in $(seq "$n"); do drain; unfence; t inside "$@"; done | median; }
FD="--devices=${loops[0]},${loops[1]},${loops[2]} --plug=n1 --action=off"
H=${HUNG_RUNS:-5}
echo "| list, disk 2 of 3 hung ($HUNG_BPS B/s reads) | \`-d A -d B -d C list\` | $(hung "$H" $SBD $D list) | $(hung "$H" "$OURS" $D list) |"
echo "| message (msgwait 10), disk 2 of 3 hung | \`-d A -d B -d C message n1 test\` | $(hung "$H" $SBD $D message n1 test) | $(hung "$H" "$OURS" $D message n1 test) |"
echo "| fence_sbd off (msgwait 10), disk 2 of 3 hung | \`fence_sbd --devices=A,B,C --plug=n1 --sbd-path=BIN --action=off\` | $(hung "$H" /usr/sbin/fence_sbd $FD --sbd-path=$SBD) | $(hung "$H" /usr/sbin/fence_sbd $FD --sbd-path="$(realpath "$OURS")") |"
