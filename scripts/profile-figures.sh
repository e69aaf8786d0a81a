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
