#!/usr/bin/env bash
# Figures per vendor profile (issue 21): time to confirmed off through fenced and through the
# matching ClusterLabs agent (fence_redfish / fence_ipmilan), and what each quirk costs
# (status reads during PoweringOff or a lagging chassis status, refusals read back when
# arriving mid-transition). Medians of 5; everything on 127.0.0.1 against palisade-lab's
# profiles. Debug build of the test harness and daemon unless PROFILE=release is given.
#   scripts/profile-figures.sh            (prints one FIGURE line per profile and kind)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
args=(--manifest-path "$root/Cargo.toml" -p fenced --test whole_stack_profiles)
[[ ${PROFILE:-debug} == release ]] && args+=(--release)
# Both figure tests at once would share the 2 cores with each other: one after the other.
for t in figures_redfish_per_profile figures_ipmi_per_profile; do
  cargo test "${args[@]}" -- --ignored --exact "$t" --nocapture 2>&1 | grep '^FIGURE' || {
    echo "profile-figures: $t printed no figure; run it without the filter to see why" >&2
    exit 1
  }
done
# DMTF Redfish-Protocol-Validator (PyPI redfish-protocol-validator) against every Redfish
# profile: one FIGURE line with its PASS/WARN/FAIL summary per profile (about 25 s each).
# The lab CA is given both as --ca-bundle and as REQUESTS_CA_BUNDLE: the validator's extra
# sessions (no-auth, TLS probes) verify against requests' default bundle.
cargo build --manifest-path "$root/Cargo.toml" -p hw-tests --bin palisade-lab >/dev/null 2>&1
L=$root/target/debug/palisade-lab
d=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$d"' EXIT
printf 'secret\n' > "$d/pw"; chmod 600 "$d/pw"
for p in $("$L" redfish --help | awk '/^Profiles/ {on=1; next} on && /^  [a-z]/ {print $1} on && /^$/ {exit}'); do
  "$L" redfish --profile "$p" --user admin --password-file "$d/pw" > "$d/$p.out" &
  lab=$!
  timeout 20 sh -c "until [ -s '$d/$p.out' ]; do sleep 0.1; done"
  read -r _ _ url ca < "$d/$p.out"
  mkdir -p "$d/$p"
  summary=$(REQUESTS_CA_BUNDLE=$ca rf_protocol_validator -r "$url" -u admin -p secret \
    --ca-bundle "$ca" --report-type tsv --report-dir "$d/$p" 2>&1 | grep '^Summary' || echo "no summary")
  echo "FIGURE Redfish-Protocol-Validator profile $p: $summary"
  kill "$lab"; wait "$lab" 2>/dev/null || true
done
