#!/usr/bin/env bash
# Prints the figure of issue 10: `stonith_admin --fence` through fence_palisade -> fenced ->
# a lab IPMI BMC (RMCP+ on loopback), whole stonith_admin command, median of 5, with the real
# pacemaker-fenced in stand-alone mode (fenced/tests/pacemaker.rs sets it up in private
# namespaces). Compare: PEERS.md measured 2.18 s through fence_ipmilan (2.0 s of it is
# fence_ipmilan's fixed power_wait sleep). Needs root (namespaces) and scripts/install-test-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh >/dev/null
cargo nextest run --release -p fenced --test pacemaker --run-ignored ignored-only --no-capture \
  figure_stonith_admin_fence_through_fence_palisade 2>&1 | grep '^FIGURE'
