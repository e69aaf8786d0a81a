#!/usr/bin/env bash
# SNMP PDU figures (issue 9), everything on 127.0.0.1 against `palisade-lab snmp-pdu`:
#  - time to confirmed off of a two-outlet target (one outlet on each of two PDUs), as a whole
#    `fence_node off` process through a release `fenced`, SNMP v2c and v3 authPriv (SHA/AES);
#  - ClusterLabs `fence_apc_snmp -o off` for one outlet of the same simulator (v2c and v3).
# Medians of RUNS (default 7) runs. Outlets switch after POWER_DELAY_MS (default 0).
#   scripts/snmp-figures.sh [FENCED_BINARY]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-7}; DELAY=${POWER_DELAY_MS:-0}
cargo build --release -p fenced --manifest-path "$root/Cargo.toml" >/dev/null 2>&1
cargo build -p hw-tests --bin palisade-lab --manifest-path "$root/Cargo.toml" >/dev/null 2>&1
F=${1:-$root/target/release/fenced}; FN=$root/target/release/fence_node; L=$root/target/debug/palisade-lab
d=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$d"' EXIT
printf 'bench-community\n' > "$d/community"; printf 'bench-auth-pass\n' > "$d/auth"; printf 'bench-priv-pass\n' > "$d/priv"
chmod 600 "$d/community" "$d/auth" "$d/priv"   # fenced refuses secret files others can read
"$L" snmp-pdu --count 2 --base-port 17161 --outlets 8 --model apc-rpdu --community bench-community \
  --v3-user fence --auth-password-file "$d/auth" --priv-password-file "$d/priv" \
  --names db1-psu1,db1v3-psu1 --power-delay-ms "$DELAY" > "$d/lab.out" &
until [ "$(wc -l < "$d/lab.out")" -ge 2 ]; do sleep 0.05; done
v2c="version = \"2c\"\ncommunity_file = \"$d/community\""
v3="version = \"3\"\nusername = \"fence\"\nauth_password_file = \"$d/auth\"\npriv_password_file = \"$d/priv\""
{
  printf '[daemon]\nsocket = "%s/S.sock"\nhistory = "%s/S.redb"\n\n[limits]\nmax_operations = 500\nmax_operations_per_target = 100\n\n' "$d" "$d"
  for p in 1 2; do
    printf "[devices.pdu$p]\nkind = \"snmp-pdu\"\naddress = \"127.0.0.1:$((17160+p))\"\nmodel = \"apc-rpdu\"\n$v2c\n\n"
    printf "[devices.pdu$p-v3]\nkind = \"snmp-pdu\"\naddress = \"127.0.0.1:$((17160+p))\"\nmodel = \"apc-rpdu\"\n$v3\n\n"
  done
  printf '[targets.db1]\nlevels = [["pdu1:db1-psu1", "pdu2:1"]]\n\n'
  printf '[targets.db1v3]\nlevels = [["pdu1-v3:db1v3-psu1", "pdu2-v3:2"]]\n\n'
} > "$d/fenced.toml"
"$F" run --config "$d/fenced.toml" > "$d/run.log" 2>&1 & pid=$!
until [ -S "$d/S.sock" ]; do sleep 0.05; done
export PALISADE_SOCKET=$d/S.sock
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
now() { date +%s%N; }
for t in db1 db1v3; do
  vals=()
  for r in $(seq 1 "$RUNS"); do
    "$FN" on "$t" --reason bench >/dev/null
    s=$(now); "$FN" off "$t" --reason bench >/dev/null; e=$(now)
    vals+=($(( (e-s)/1000 )))
  done
  echo "fence_node off $t (2 outlets on 2 PDUs, $([ $t = db1 ] && echo v2c || echo 'v3 authPriv SHA/AES'), power delay ${DELAY} ms): runs(us) ${vals[*]} -> median $(printf '%s\n' "${vals[@]}" | median) us"
done
"$FN" on db1 --reason bench >/dev/null
for v in 2c 3; do
  vals=()
  for r in $(seq 1 "$RUNS"); do
    snmpset -v2c -c bench-community -r 0 127.0.0.1:17161 1.3.6.1.4.1.318.1.1.12.3.3.1.1.4.3 i 1 >/dev/null
    if [ $v = 2c ]; then args=(--community bench-community -d 2c); else
      args=(-d 3 --username fence --snmp-sec-level authPriv --snmp-auth-prot SHA --password bench-auth-pass --snmp-priv-prot AES --snmp-priv-passwd bench-priv-pass); fi
    s=$(now); fence_apc_snmp --ip 127.0.0.1 --ipport 17161 "${args[@]}" --plug 3 -o off >/dev/null; e=$(now)
    vals+=($(( (e-s)/1000 )))
  done
  echo "fence_apc_snmp -o off (1 outlet, v$v, default options): runs(us) ${vals[*]} -> median $(printf '%s\n' "${vals[@]}" | median) us"
done
echo "fenced idle VmRSS with these 4 PDU devices: $(awk '/^VmRSS/{print $2}' /proc/$pid/status) kB"
