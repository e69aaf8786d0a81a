#!/usr/bin/env bash
# Redfish figures (issue 8): idle RSS of fenced with 3 targets, and one fenced fencing 50
# Redfish targets at once. Release build; medians of 5; everything on 127.0.0.1.
#   scripts/redfish-figures.sh [FENCED_BINARY]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --release -p fenced --manifest-path "$root/Cargo.toml" >/dev/null
cargo build -p hw-tests --bin palisade-lab --manifest-path "$root/Cargo.toml" >/dev/null
F=${1:-$root/target/release/fenced}; FN=$root/target/release/fence_node; L=$root/target/debug/palisade-lab
d=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$d"' EXIT
printf lab-password > "$d/pw"
chmod 600 "$d/pw"   # fenced refuses password files others can read
"$L" redfish --count 50 --base-port 18501 --user admin --password-file "$d/pw" --cert-dir "$d" --power-delay-ms 100 > "$d/lab.out" &
until [ "$(wc -l < "$d/lab.out")" -ge 50 ]; do sleep 0.05; done
config() { # N -> a config with N Redfish targets
  printf '[daemon]\nsocket = "%s/S.sock"\nhistory = "%s/S.redb"\n\n[limits]\nmax_operations = 500\nmax_operations_per_target = 50\n\n' "$d" "$d"
  for i in $(seq 1 "$1"); do
    printf '[devices.rf-node%d]\nkind = "redfish"\naddress = "https://127.0.0.1:%d"\nusername = "admin"\npassword_file = "%s/pw"\nca_file = "%s/redfish-lab-ca.pem"\n\n[targets.node%d]\nlevels = [["rf-node%d"]]\n\n' "$i" $((18500+i)) "$d" "$d" "$i" "$i"
  done
}
config 3 > "$d/c3.toml"; config 50 > "$d/c50.toml"
start() { rm -f "$d/S.sock" "$d/S.redb"; "$F" run --config "$1" > "$d/run.log" 2>&1 & pid=$!; until [ -S "$d/S.sock" ]; do sleep 0.05; done; }
vals=()
for r in 1 2 3 4 5; do start "$d/c3.toml"; sleep 3; vals+=("$(awk '/^VmRSS/{print $2}' /proc/$pid/status)"); kill $pid; wait $pid 2>/dev/null || true; done
echo "idle VmRSS, 3 Redfish targets (kB): ${vals[*]} -> median $(printf '%s\n' "${vals[@]}" | sort -n | sed -n 3p)"
for r in 1 2 3 4 5; do
  start "$d/c50.toml"; sleep 2
  s=$(date +%s%N); pids=()
  for i in $(seq 1 50); do PALISADE_SOCKET=$d/S.sock "$FN" off node$i --reason fifty >/dev/null 2>&1 & pids+=($!); done
  fails=0; for p in "${pids[@]}"; do wait "$p" || fails=$((fails+1)); done
  echo "run $r: 50 targets confirmed off in $(( ($(date +%s%N)-s)/1000000 )) ms, failures $fails, peak VmHWM $(awk '/^VmHWM/{print $2}' /proc/$pid/status) kB"
  kill $pid; wait $pid 2>/dev/null || true
  # Power every node back on for the next run.
  pids=()
  for i in $(seq 1 50); do curl -s --cacert "$d/redfish-lab-ca.pem" -u admin:lab-password -H 'Content-Type: application/json' -d '{"ResetType":"On"}' https://127.0.0.1:$((18500+i))/redfish/v1/Systems/System1/Actions/ComputerSystem.Reset & pids+=($!); done
  for p in "${pids[@]}"; do wait "$p" || true; done; sleep 0.3
done
