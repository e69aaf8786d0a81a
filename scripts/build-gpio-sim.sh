#!/usr/bin/env bash
# Builds Linux's gpio-sim driver out of tree, as one module with the irq_sim helper it needs,
# for the kernel the VM tests boot (hw-tests/src/gpiosim.rs calls this and caches the result).
#
# Why out of tree: Debian's kernels build neither gpio-sim nor gpio-mockup, and the amd64 6.1
# kernel lacks CONFIG_IRQ_SIM, which gpio-sim selects (shared/PEERS.md "Kernels, VMs, GPIO").
# The sources come from Debian's linux-source package and the build uses Debian's
# linux-headers for the same kernel, both of the exact Debian version of the VM's kernel
# (install-test-deps.sh installs them), so the module's vermagic and symbol CRCs match.
#
# Usage: scripts/build-gpio-sim.sh KERNEL_RELEASE OUT_DIR  (e.g. 6.1.0-57-amd64 target/gpio-sim)
# Writes OUT_DIR/palisade_gpio_sim.ko and OUT_DIR/version (the Debian version it was built
# for); does nothing when both are there for the VM kernel's version.
set -euo pipefail

if (($# != 2)); then
  echo "usage: $0 KERNEL_RELEASE OUT_DIR" >&2
  exit 2
fi
kver=$1
out=$2
vm_kernel=${PALISADE_VM_KERNEL:-/var/cache/palisade/vm-kernel}
series=$(sed -E 's/^([0-9]+\.[0-9]+).*/\1/' <<<"$kver")
headers=/usr/src/linux-headers-$kver
tarball=/usr/src/linux-source-$series.tar.xz

fail() {
  echo "build-gpio-sim: $*" >&2
  exit 1
}

[[ -f $headers/Makefile ]] || fail "no $headers; run scripts/install-test-deps.sh (Debian package linux-headers-$kver)"
[[ -f $tarball ]] || fail "no $tarball; run scripts/install-test-deps.sh (Debian package linux-source-$series)"

# The VM's kernel, the headers and the source must be the same Debian upload: a module built
# against other headers is refused by the kernel (vermagic, CRCs), and other sources may not
# match the headers' structures.
changelog=$(compgen -G "$vm_kernel/usr/share/doc/linux-image-$kver*/changelog.Debian.gz" | head -1 || true)
[[ -n $changelog ]] || fail "no changelog of linux-image-$kver under $vm_kernel; run scripts/install-test-deps.sh"
want=$(zcat "$changelog" | sed -n '1s/^[^(]*(\([^)]*\)).*/\1/p')
have_h=$(dpkg-query -W -f='${Version}' "linux-headers-$kver" 2>/dev/null || true)
have_s=$(dpkg-query -W -f='${Version}' "linux-source-$series" 2>/dev/null || true)
[[ $have_h == "$want" ]] || fail "linux-headers-$kver is version '${have_h:-none}' but the VM kernel is $want; run scripts/install-test-deps.sh"
[[ $have_s == "$want" ]] || fail "linux-source-$series is version '${have_s:-none}' but the VM kernel is $want; run scripts/install-test-deps.sh"

# Cached: built before for this very Debian version.
if [[ -f $out/palisade_gpio_sim.ko && "$(cat "$out/version" 2>/dev/null)" == "$want" ]]; then
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Only the three files are written (tar still reads the whole archive: about 15 s).
tar -xJf "$tarball" -C "$work" --strip-components=1 \
  "linux-source-$series/drivers/gpio/gpio-sim.c" \
  "linux-source-$series/drivers/gpio/gpiolib.h" \
  "linux-source-$series/kernel/irq/irq_sim.c"
mkdir "$work/m"
mv "$work/drivers/gpio/gpio-sim.c" "$work/drivers/gpio/gpiolib.h" "$work/kernel/irq/irq_sim.c" "$work/m/"

# The one change: irq_to_desc() is not exported to modules in 6.1, so irq_sim's work handler
# dispatches through the exported generic_handle_irq(), which looks the descriptor up itself
# and runs the same flow handler (handle_simple_irq, set in irq_sim_domain_map).
sed -i 's/handle_simple_irq(irq_to_desc(irqnum));/generic_handle_irq(irqnum);/' "$work/m/irq_sim.c"
grep -q 'generic_handle_irq(irqnum);' "$work/m/irq_sim.c" || fail "irq_sim.c of $want changed: the irq_to_desc() call to replace is not there"
grep -q 'irq_to_desc' "$work/m/irq_sim.c" && fail "irq_sim.c of $want still calls irq_to_desc() after the change"

# One module from both objects; its name differs from both (kbuild requires it).
cat >"$work/m/Kbuild" <<'EOF'
obj-m := palisade_gpio_sim.o
palisade_gpio_sim-y := gpio-sim.o irq_sim.o
EOF
make -s -C "$headers" M="$work/m" modules >"$work/build.log" 2>&1 || {
  cat "$work/build.log" >&2
  fail "the module did not build (log above)"
}
mkdir -p "$out"
cp "$work/m/palisade_gpio_sim.ko" "$out/palisade_gpio_sim.ko.tmp"
mv "$out/palisade_gpio_sim.ko.tmp" "$out/palisade_gpio_sim.ko"
echo "$want" >"$out/version"
echo "build-gpio-sim: $out/palisade_gpio_sim.ko for $kver ($want)"
