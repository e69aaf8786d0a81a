#!/usr/bin/env bash
# PDU profile figures (issue 21): per `palisade-lab snmp --profile P`, the time to confirmed off
# of one outlet as a whole `fence_node off` process through `fenced` (SNMP v2c, the profile's
# factory write community), and the matching ClusterLabs agent's `-o off` where fence-agents
# has one for that MIB. Medians of RUNS (default 5) runs, everything on 127.0.0.1.
#   scripts/pdu-profile-figures.sh [FENCED_BINARY]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-5}
cargo build -p fenced --bins --manifest-path "$root/Cargo.toml" >/dev/null 2>&1
cargo build -p hw-tests --bin palisade-lab --manifest-path "$root/Cargo.toml" >/dev/null 2>&1
F=${1:-$root/target/debug/fenced}; FN=$root/target/debug/fence_node; L=$root/target/debug/palisade-lab
d=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$d"' EXIT
declare -A model=([apc]=apc-rpdu [tripplite]=tripplite-lx [eaton]=eaton-epdu [raritan]=raritan-px2 [servertech]=sentry3 [sentry4]=sentry4)
declare -A rw=([apc]=private [tripplite]=tripplite [eaton]=private [raritan]=private [servertech]=private [sentry4]=private)
declare -A agent=([apc]=fence_apc_snmp [tripplite]=fence_tripplite_snmp [eaton]=fence_eaton_snmp)
port=17400
{ printf '[daemon]\nsocket = "%s/S.sock"\nhistory = "%s/S.redb"\n\n[limits]\nmax_operations = 500\nmax_operations_per_target = 100\n\n' "$d" "$d"; } > "$d/fenced.toml"
for p in apc tripplite eaton raritan servertech sentry4; do
  port=$((port+10)); echo $port > "$d/$p.port"
  "$L" snmp --profile $p --base-port $port --outlets 4 > "$d/$p.out" &
  printf '%s\n' "${rw[$p]}" > "$d/$p.community"; chmod 600 "$d/$p.community"
  printf '[devices.%s]\nkind = "snmp-pdu"\naddress = "127.0.0.1:%s"\nmodel = "%s"\nversion = "2c"\ncommunity_file = "%s"\n\n[targets.%s-db1]\nlevels = [["%s:1"]]\n\n' \
    $p $port "${model[$p]}" "$d/$p.community" $p $p >> "$d/fenced.toml"
done
for p in apc tripplite eaton raritan servertech sentry4; do until [ -s "$d/$p.out" ]; do sleep 0.05; done; done
"$F" run --config "$d/fenced.toml" > "$d/run.log" 2>&1 &
until "$FN" --socket "$d/S.sock" status >/dev/null 2>&1; do sleep 0.1; done
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
now() { date +%s%N; }
for p in apc tripplite eaton raritan servertech sentry4; do
  vals=()
  for r in $(seq 1 "$RUNS"); do
    "$FN" --socket "$d/S.sock" on $p-db1 --reason bench >/dev/null
    s=$(now); "$FN" --socket "$d/S.sock" off $p-db1 --reason bench >/dev/null; e=$(now)
    vals+=($(( (e-s)/1000000 )))
  done
  echo "profile $p: fence_node off (fenced, v2c): runs(ms) ${vals[*]} -> median $(printf '%s\n' "${vals[@]}" | median) ms"
  a=${agent[$p]:-}
  if [ -z "$a" ]; then echo "profile $p: no SNMP agent in fence-agents for this MIB"; continue; fi
  vals=(); res=""
  for r in $(seq 1 "$RUNS"); do
    "$FN" --socket "$d/S.sock" on $p-db1 --reason bench >/dev/null
    s=$(now); if MIBS= "$a" --ip 127.0.0.1 --ipport "$(cat "$d/$p.port")" --community "${rw[$p]}" -d 2c --plug 2 -o off >/dev/null 2>&1; then res=ok; else res=failed; fi; e=$(now)
    vals+=($(( (e-s)/1000000 )))
    MIBS= "$a" --ip 127.0.0.1 --ipport "$(cat "$d/$p.port")" --community "${rw[$p]}" -d 2c --plug 2 -o on >/dev/null 2>&1 || true
  done
  echo "profile $p: $a -o off: $res; runs(ms) ${vals[*]} -> median $(printf '%s\n' "${vals[@]}" | median) ms"
done
