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
#   systemd       -> systemd-analyze (verifies the units in fenced/systemd and watchdog/systemd;
#                    nothing is started)
#   bsdutils      -> script (a pseudo-terminal for fence_node's terminal output)
#   openssl       -> openssl (certificates for sushy-emulator)
#   gcc-aarch64-linux-gnu, libc6-dev-arm64-cross, qemu-user -> the arm64 cross build and its
#                    unit tests under qemu-aarch64 (scripts/test.sh, .cargo/config.toml)
#   mmdebstrap, lintian, dpkg-dev -> the Debian package test (hw-tests/tests/debian_package.rs):
#                    a clean bookworm root, lintian on each package, dpkg-shlibdeps in
#                    scripts/build-debs.sh
#   gpiod         -> gpioset, gpioinfo (libgpiod's tools: in the relay VM test, another process
#                    holding a GPIO line, and the lines' holders)
#   chromium, chromium-driver -> headless Chromium and ChromeDriver (fenced/tests/status_page.rs)
#   telnet        -> fence_wti's telnet path (hw-tests/tests/serial_pdu_peers.rs: fence_wti
#                    fences an outlet of the simulated WTI console's TCP form)
#   qemu-system-arm -> qemu-system-aarch64 (the arm64 figures VM; kernel and busybox below)
#   prometheus    -> promtool (checks and unit-tests packaging/prometheus/palisade.rules.yml in
#                    fenced/tests/metrics_scrape.rs; Debian ships promtool only in this package)
packages=(ipmitool openipmi fence-agents curl procps sbd faketime pacemaker pacemaker-cli-utils libxml2-utils util-linux nftables iproute2 snmp snmpd qemu-system-x86 busybox-static cpio systemd bsdutils openssl gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user mmdebstrap lintian dpkg-dev gpiod chromium chromium-driver telnet prometheus qemu-system-arm)
# redfishtool (DMTF's CLI) -> hw-tests/tests/profile_peers.rs lists and resets the lab's profiles
packages+=(redfishtool)
# corosync -> hw-tests/tests/cluster_lab.rs (the cluster lab); the client libraries -> fenced's cluster membership (issue 16)
packages+=(corosync libcpg-dev libquorum-dev libvotequorum-dev libcmap-dev libcfg-dev libcorosync-common-dev)
# resource-agents (ocf:heartbeat:anything, lxc), lxc, busybox-static -> hw-tests/tests/pacemaker_cluster.rs (a whole Pacemaker cluster fails over a writer; issue 17)
packages+=(resource-agents lxc)

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

# sushy (PyPI, the Redfish library Ironic uses): hw-tests/tests/profile_peers.rs drives the
# lab's vendor profiles with it (hw-tests/peers/sushy/sushy_off_on.py). Pinned: checked with 5.14.0.
if [[ "$(python3 -m pip show sushy 2>/dev/null | sed -n 's/^Version: //p')" != "5.14.0" ]]; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-test-deps: need root to install sushy (run with sudo)" >&2
    exit 1
  fi
  sushy_flags=(--quiet --disable-pip-version-check)
  if python3 -m pip install --help 2>/dev/null | grep -q -- --break-system-packages; then
    sushy_flags+=(--break-system-packages)
  fi
  python3 -m pip install "${sushy_flags[@]}" sushy==5.14.0
fi

# schemathesis: fenced/tests/security.rs runs it against a live fenced through its served
# OpenAPI document (PyPI).
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

# The arm64 cross target (scripts/test.sh cross-builds and runs unit tests under qemu-aarch64).
if ! rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
  rustup target add aarch64-unknown-linux-gnu
fi

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

# The arm64 figures (scripts/arm64-figures.sh, hw-tests/tests/arm64_figures.rs) boot Debian's
# arm64 6.1 kernel and arm64 busybox-static under qemu-system-aarch64, unpacked where
# hw-tests/src/vm.rs looks for them. Fetched through a private apt state in $apt_arm64 that
# knows only arm64, so the host's dpkg never gains a foreign architecture. The kernel is picked
# as the amd64 one is: the highest linux-image-6.1.0-N-arm64-unsigned the archive offers.
vm_kernel_arm64=${PALISADE_VM_KERNEL_ARM64:-/var/cache/palisade/vm-kernel-arm64}
apt_arm64=${PALISADE_APT_ARM64:-/var/cache/palisade/apt-arm64}
if ! ls "$vm_kernel_arm64"/boot/vmlinuz-* >/dev/null 2>&1 || [[ ! -x $vm_kernel_arm64/busybox/bin/busybox ]]; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-test-deps: need root to unpack the arm64 VM kernel (run with sudo)" >&2
    exit 1
  fi
  aopt=(-o "Dir::State::Lists=$apt_arm64/lists" -o "Dir::Cache=$apt_arm64" -o "Dir::State::status=/dev/null"
    -o APT::Architecture=arm64 -o APT::Architectures::=arm64 -o Debug::NoLocking=1
    -o APT::Sandbox::User=root) # the private folder is root's; apt's _apt user cannot write it
  mkdir -p "$apt_arm64/lists/partial" "$apt_arm64/archives/partial" "$apt_arm64/dl"
  apt-get "${aopt[@]}" update -qq
  pkg=$(apt-cache "${aopt[@]}" search --names-only '^linux-image-6\.1\.0-[0-9]+-arm64-unsigned$' | cut -d' ' -f1 | sort -V | tail -1)
  if [[ -z $pkg ]]; then
    echo "install-test-deps: no linux-image-6.1.0-*-arm64-unsigned in the arm64 archive lists ($apt_arm64)" >&2
    exit 1
  fi
  rm -f "$apt_arm64"/dl/*.deb
  (cd "$apt_arm64/dl" && apt-get "${aopt[@]}" download -qq "$pkg:arm64" busybox-static:arm64)
  rm -rf "$vm_kernel_arm64"
  mkdir -p "$vm_kernel_arm64/busybox"
  dpkg-deb -x "$apt_arm64"/dl/linux-image-*_arm64.deb "$vm_kernel_arm64"
  dpkg-deb -x "$apt_arm64"/dl/busybox-static_*_arm64.deb "$vm_kernel_arm64/busybox"
fi

# The relay VM test builds Linux's gpio-sim out of tree for that kernel
# (scripts/build-gpio-sim.sh): Debian's headers and sources of the very same upload as the
# unpacked kernel (its changelog names it), so the module loads into it.
vm_release=$(compgen -G "$vm_kernel/boot/vmlinuz-*" | head -1 | sed 's|.*/vmlinuz-||' || true)
vm_series=$(sed -E 's/^([0-9]+\.[0-9]+).*/\1/' <<<"$vm_release")
vm_version=$(zcat "$vm_kernel"/usr/share/doc/linux-image-"$vm_release"*/changelog.Debian.gz 2>/dev/null | sed -n '1s/^[^(]*(\([^)]*\)).*/\1/p' || true)
if [[ -n $vm_release && -n $vm_version ]]; then
  kpkgs=()
  for p in "linux-headers-$vm_release" "linux-source-$vm_series"; do
    [[ "$(dpkg-query -W -f='${Version}' "$p" 2>/dev/null)" == "$vm_version" ]] || kpkgs+=("$p=$vm_version")
  done
  if ((${#kpkgs[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
      echo "install-test-deps: need root to install ${kpkgs[*]} (run with sudo)" >&2
      exit 1
    fi
    echo "install-test-deps: installing ${kpkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "${kpkgs[@]}" >/dev/null
  fi
fi

# Every requirement the tests check (hw-tests/src/require.rs), verified after installing: an
# install that half-failed, or a kernel without a feature, stops here with what is missing
# rather than turning into failed tests. The names are the tests' requirement names, so
# PALISADE_ALLOW_SKIP=NAME,... (a developer's local run, where those tests then skip) lets
# the same ones through here.
skip_allowed() {
  local a=${PALISADE_ALLOW_SKIP:-} n
  case "$a" in "" | 0) return 1 ;; 1 | all) return 0 ;; esac
  for n in ${a//,/ }; do [[ ${n,,} == "${1,,}" ]] && return 0; done
  return 1
}
missing_reqs=()
# need NAME PROVIDED-BY PROBE...: the probe runs quietly; failing, NAME is missing.
need() {
  local name=$1 by=$2
  shift 2
  "$@" >/dev/null 2>&1 || missing_reqs+=("$name ($by)")
}
# An executable regular file at that path, or of that name on PATH, as the tests look for it
# (bash's `command -v` also answers with a file that is not executable).
executable() {
  local d dirs
  if [[ $1 == */* ]]; then
    [[ -f $1 && -x $1 ]]
    return
  fi
  IFS=: read -ra dirs <<<"$PATH"
  for d in "${dirs[@]}"; do
    [[ -f $d/$1 && -x $d/$1 ]] && return 0
  done
  return 1
}
# Programs, by the path or name the tests run them with.
for c in ipmitool:ipmitool /usr/bin/ipmi_sim:openipmi /usr/sbin/fence_ipmilan:fence-agents \
  /usr/sbin/fence_sbd:fence-agents fence_redfish:fence-agents fence_apc_snmp:fence-agents \
  /usr/sbin/sbd:sbd curl:curl ps:procps stonith_admin:pacemaker-cli-utils \
  /usr/lib/pacemaker/pacemaker-fenced:pacemaker xmllint:libxml2-utils unshare:util-linux \
  nsenter:util-linux losetup:mount mount:mount nft:nftables ip:iproute2 snmpget:snmp \
  snmpset:snmp snmpwalk:snmp snmpbulkwalk:snmp /usr/sbin/snmpd:snmpd \
  qemu-system-x86_64:qemu-system-x86 cpio:cpio /bin/busybox:busybox-static \
  systemd-analyze:systemd script:bsdutils openssl:openssl python3:python3 \
  aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu qemu-aarch64:qemu-user \
  /usr/bin/gpioset:gpiod /usr/bin/gpioinfo:gpiod /usr/bin/chromium:chromium \
  /usr/bin/chromedriver:chromium-driver mmdebstrap:mmdebstrap lintian:lintian dpkg-shlibdeps:dpkg-dev \
  /usr/sbin/fence_wti:fence-agents /usr/bin/telnet:telnet promtool:prometheus \
  qemu-system-aarch64:qemu-system-arm aarch64-linux-gnu-readelf:binutils-aarch64-linux-gnu; do
  prog=${c%%:*}
  need "${prog##*/}" "Debian package ${c#*:}" executable "$prog"
done
for c in sushy-emulator:sushy-tools rf_protocol_validator:redfish-protocol-validator schemathesis:schemathesis; do
  need "${c%%:*}" "PyPI ${c#*:}" executable "${c%%:*}"
done
need openapi-spec-validator "PyPI openapi-spec-validator" python3 -c "import openapi_spec_validator"
need redfishtool "Debian package redfishtool" executable redfishtool
for c in /usr/sbin/corosync /usr/sbin/corosync-quorumtool /usr/sbin/corosync-cfgtool /usr/sbin/corosync-cpgtool; do
  need "${c##*/}" "Debian package corosync" executable "$c"
done
need libcpg-dev "Debian package libcpg-dev" test -e /usr/include/corosync/cpg.h
# palisade-cpg (the cluster lab's CPG member) loads libcpg.so.4 at run time.
need libcpg.so.4 "Debian package libcpg4" sh -c "ldconfig -p | grep -q 'libcpg\.so\.4 '"
need sushy "PyPI sushy 5.14.0" python3 -c "import sushy"
need libfaketime "Debian package faketime" test -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1
need metadata.rng "Debian package pacemaker" test -e /usr/share/cluster/relaxng/metadata.rng
need pacemakerd "Debian package pacemaker" executable /usr/sbin/pacemakerd
need ocf-anything "Debian package resource-agents" test -x /usr/lib/ocf/resource.d/heartbeat/anything
need ocf-lxc "Debian package resource-agents" test -x /usr/lib/ocf/resource.d/heartbeat/lxc
need lxc-start "Debian package lxc" executable /usr/bin/lxc-start
need aarch64-target "rustup target add aarch64-unknown-linux-gnu" \
  bash -c 'rustup target list --installed | grep -qx aarch64-unknown-linux-gnu'
need vm-kernel "Debian linux-image-6.1, unpacked above into $vm_kernel" compgen -G "$vm_kernel/boot/vmlinuz-*"
need vm-kernel-arm64 "Debian linux-image-6.1.0-*-arm64-unsigned, unpacked above into $vm_kernel_arm64" \
  compgen -G "$vm_kernel_arm64/boot/vmlinuz-*"
need busybox-arm64 "Debian arm64 busybox-static, unpacked above into $vm_kernel_arm64/busybox" \
  bash -c "[ \"\$(od -An -tu2 -j18 -N2 '$vm_kernel_arm64/busybox/bin/busybox' | tr -d ' ')\" = 183 ]" # ELF e_machine: EM_AARCH64
need linux-headers "Debian package linux-headers-$vm_release (= $vm_version)" test -f "/usr/src/linux-headers-$vm_release/Makefile"
need linux-source "Debian package linux-source-$vm_series (= $vm_version)" test -f "/usr/src/linux-source-$vm_series.tar.xz"

# Kernel features, each probed the way the tests use it (as root: the tests run as root).
probe_loop() {
  local f dev rc=0
  f=$(mktemp)
  truncate -s 1M "$f"
  dev=$(losetup -f --show "$f") && losetup -d "$dev" || rc=1
  rm -f "$f"
  return "$rc"
}
probe_tmpfs() {
  local d rc=0
  d=$(mktemp -d)
  mount -t tmpfs -o size=1M tmpfs "$d" && umount "$d" || rc=1
  rmdir "$d"
  return "$rc"
}
need root "running the tests as root (they attach loop devices, mount, enter namespaces)" \
  test "$(id -u)" -eq 0
need loop-devices "root and the loop kernel module: modprobe loop" probe_loop
need blkio-throttle "the cgroup v1 blkio controller mounted at /sys/fs/cgroup/blkio" \
  test -e /sys/fs/cgroup/blkio/blkio.throttle.read_bps_device
need fuse "the fuse kernel module (modprobe fuse) and /dev/fuse; a container needs --device /dev/fuse" \
  bash -c 'test -c /dev/fuse && : <>/dev/fuse'
need tmpfs "root, mount(8) of a tmpfs" probe_tmpfs

refused=()
for r in "${missing_reqs[@]}"; do
  if skip_allowed "${r%% *}"; then
    echo "install-test-deps: missing ${r}: allowed by PALISADE_ALLOW_SKIP, the tests needing it will skip" >&2
  else
    refused+=("$r")
  fi
done
if ((${#refused[@]})); then
  printf 'install-test-deps: missing after install: %s\n' "${refused[@]}" >&2
  echo "install-test-deps: the tests need each of these; install them (or, for a local run only, set PALISADE_ALLOW_SKIP=NAME,... to skip the tests that need them)" >&2
  exit 1
fi
echo "install-test-deps: ok"
