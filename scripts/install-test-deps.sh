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
#   nftables      -> nft (lab nodes: network partitions, rules only inside lab namespaces)
#   iproute2      -> ip (lab nodes: network namespaces, veth pairs, bridges)
#   pacemaker, pacemaker-cli-utils -> pacemaker-fenced (stand-alone) and stonith_admin, which
#                    run fence_palisade as Pacemaker does (fenced/tests/pacemaker.rs)
#   libxml2-utils -> xmllint (fence_palisade's metadata against ClusterLabs' metadata.rng)
#   util-linux    -> unshare, nsenter (each Pacemaker fencer in its own namespaces)
#   snmp          -> snmpget, snmpset, snmpwalk (net-snmp clients: drive our PDU simulator; fence_apc_snmp uses them)
#   snmpd         -> snmpd (net-snmp's agent, started per test on a loopback port with its own
#                    config and a pass_persist script: a PDU our SNMP driver must fence)
#   qemu-system-x86, busybox-static, cpio -> the watchdog VM tests (hw-tests/src/vm.rs); the
#                    kernel they boot is unpacked below, not installed
packages=(ipmitool openipmi fence-agents curl procps sbd faketime pacemaker pacemaker-cli-utils libxml2-utils util-linux nftables iproute2 snmp snmpd qemu-system-x86 busybox-static cpio)

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
for c in ipmitool ipmi_sim fence_ipmilan fence_sbd sbd curl stonith_admin xmllint unshare nsenter; do
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

# Redfish peers (PyPI): sushy-emulator (a Redfish service our driver must fence; pinned, its
# fake driver's behaviour is what the tests expect) and the DMTF Redfish-Protocol-Validator
# (checks our Redfish lab BMC). fence_redfish comes with fence-agents above.
if ! command -v sushy-emulator >/dev/null || \
   [[ "$(python3 -m pip show sushy-tools 2>/dev/null | sed -n 's/^Version: //p')" != "2.2.0" ]] || \
   ! command -v rf_protocol_validator >/dev/null; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-test-deps: need root to install sushy-tools and redfish-protocol-validator (run with sudo)" >&2
    exit 1
  fi
  # Debian's own python3 refuses system-wide pip installs (PEP 668); a pyenv or venv python
  # does not know the flag's reason but accepts it.
  pip_flags=(--quiet --disable-pip-version-check)
  if python3 -m pip install --help 2>/dev/null | grep -q -- --break-system-packages; then
    pip_flags+=(--break-system-packages)
  fi
  python3 -m pip install "${pip_flags[@]}" sushy-tools==2.2.0 redfish-protocol-validator
fi
for c in sushy-emulator rf_protocol_validator fence_redfish openssl; do
  command -v "$c" >/dev/null || { echo "install-test-deps: $c missing after install" >&2; exit 1; }
done

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

# The watchdog VM tests boot Debian's 6.1 kernel, unpacked (not installed) where
# hw-tests/src/vm.rs looks for it; watchdog.ko, i6300esb.ko and virtio_blk.ko come from it.
vm_kernel=/var/cache/palisade/vm-kernel
if ! ls "$vm_kernel"/boot/vmlinuz-* >/dev/null 2>&1; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-test-deps: need root to unpack the VM kernel (run with sudo)" >&2
    exit 1
  fi
  pkg=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$' | cut -d' ' -f1 | sort -V | tail -1)
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -qq "$pkg" 2>/dev/null)
  mkdir -p "$vm_kernel"
  dpkg-deb -x "$tmp"/*.deb "$vm_kernel"
  rm -rf "$tmp"
fi
