#!/usr/bin/env bash
# Installs the real third-party peers the test suite runs against (Debian packages).
# Idempotent and quiet: already-installed packages cost one dpkg query.
set -euo pipefail

# Peers and tools the tests use, by the command each provides:
#   ipmitool      -> ipmitool (drives our BMC simulator; always with -H in tests)
#   openipmi      -> ipmi_sim (a BMC our IPMI client must fence)
#   fence-agents  -> fence_ipmilan, fence_sbd (ClusterLabs agents against our simulator and palisade-sbd)
#   curl          -> a real HTTP client for the fencer API over its Unix socket
#   procps        -> ps (RSS figures in benchmarks)
#   faketime      -> libfaketime (runs fenced with a racing wall clock: msgwait must not shrink)
#   sbd           -> sbd (ClusterLabs SBD: its disk format and admin commands are our peer;
#                    never run its watcher on a test machine, see shared/PEERS.md)
packages=(ipmitool openipmi fence-agents curl procps sbd faketime)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-test-deps: need root to install: ${missing[*]} (run with sudo)" >&2
    exit 1
  fi
  echo "install-test-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# fence_ipmilan needs ipmitool on PATH; ipmi_sim must exist for the interop tests.
for c in ipmitool ipmi_sim fence_ipmilan fence_sbd sbd curl; do
  command -v "$c" >/dev/null || { echo "install-test-deps: $c missing after install" >&2; exit 1; }
done
# openapi-spec-validator: fenced/tests/api.rs validates fenced/openapi.json with it (PyPI).
if ! python3 -c "import openapi_spec_validator" >/dev/null 2>&1; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-test-deps: need root to install openapi-spec-validator (run with sudo)" >&2
    exit 1
  fi
  python3 -m pip install --quiet --disable-pip-version-check openapi-spec-validator
fi

# schemathesis: fenced/tests/security.rs runs it against a live fenced through its served
# OpenAPI document (PyPI; the test skips, saying so, when it is absent).
if ! command -v schemathesis >/dev/null 2>&1; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-test-deps: need root to install schemathesis (run with sudo)" >&2
    exit 1
  fi
  python3 -m pip install --quiet --disable-pip-version-check schemathesis
fi

# cargo-deny: scripts/test.sh checks licences, bans and sources with it (deny.toml). Built from
# crates.io (about 5 minutes on 2 cores, once per machine).
if ! command -v cargo-deny >/dev/null 2>&1; then
  echo "install-test-deps: building cargo-deny"
  cargo install --locked --quiet cargo-deny
fi

echo "install-test-deps: ok"
