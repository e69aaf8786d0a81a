#!/usr/bin/env bash
# Checks the Debian packages scripts/build-debs.sh made, on the host (no root, no chroot):
# `dpkg-deb --info` fields (architecture, one version for all, Depends as dpkg-shlibdeps
# computed it), `dpkg-deb --contents` (what each package must ship), the ELF machine of every
# binary in /usr/sbin against the package's architecture, and lintian with no errors and no
# warnings (each tag kept is overridden in packaging/debian/PKG/lintian-overrides with its reason).
#
#   scripts/check-debs.sh [DIR [ARCH...]]
#
# DIR defaults to target/debian; ARCH (amd64, arm64) defaults to every architecture that has a
# package in DIR. Each architecture named must have all four packages.
#
# The package test (hw-tests/tests/debian_package.rs) runs this for amd64, whose packages
# scripts/test.sh builds. arm64 packages are a cross build of the shipped profile, too long for
# CI's budget (see scripts/test.sh): check them by hand with
#   PALISADE_DEB_ARCHES=arm64 scripts/build-debs.sh && scripts/check-debs.sh target/debian arm64
set -euo pipefail
cd "$(dirname "$0")/.."

dir=${1:-target/debian}
shift || true
packages=(fenced fence-node fence-palisade palisade-sbd)
if [[ ! -d $dir ]]; then
  echo "check-debs: $dir does not exist: run scripts/build-debs.sh $dir first" >&2
  exit 1
fi
arches=("$@")
if ((${#arches[@]} == 0)); then
  mapfile -t arches < <(find "$dir" -maxdepth 1 -name '*.deb' -printf '%f\n' | sed 's/.*_\([^_]*\)\.deb$/\1/' | sort -u)
fi
if ((${#arches[@]} == 0)); then
  echo "check-debs: no .deb in $dir: run scripts/build-debs.sh $dir first" >&2
  exit 1
fi

fail() {
  echo "check-debs: $*" >&2
  exit 1
}

all=()
version=
for arch in "${arches[@]}"; do
  # e_machine of the ELF header (offset 18, little-endian on both architectures).
  case $arch in
    amd64) machine=62 ;;
    arm64) machine=183 ;;
    *) fail "unknown architecture $arch (amd64 or arm64)" ;;
  esac
  for pkg in "${packages[@]}"; do
    debs=("$dir/${pkg}_"*"_$arch.deb")
    [[ -f ${debs[0]} ]] || fail "no $pkg package for $arch in $dir: run PALISADE_DEB_ARCHES=$arch scripts/build-debs.sh $dir"
    ((${#debs[@]} == 1)) || fail "${#debs[@]} $pkg packages for $arch in $dir (${debs[*]}): remove the stale ones"
    deb=${debs[0]}
    all+=("$deb")

    [[ $(dpkg-deb --field "$deb" Package) == "$pkg" ]] || fail "$deb: Package is not $pkg"
    [[ $(dpkg-deb --field "$deb" Architecture) == "$arch" ]] || fail "$deb: Architecture is not $arch"
    v=$(dpkg-deb --field "$deb" Version)
    [[ -z $version || $v == "$version" ]] || fail "$deb: Version $v, other packages have $version"
    version=$v
    depends=$(dpkg-deb --field "$deb" Depends)
    # dpkg-shlibdeps' answer carries versions; a bare "libc6" (or none) means it failed.
    [[ $depends == *"libc6 (>= "* ]] || fail "$deb: Depends '$depends' lacks a versioned libc6"
    # An architecture qualifier (libc6:arm64) is the cross build's shlibs leaking through.
    [[ $depends != *:* ]] || fail "$deb: Depends '$depends' carries an architecture qualifier"
    dpkg-deb --field "$deb" Installed-Size >/dev/null

    contents=$(dpkg-deb --contents "$deb" | awk '{ print $6 }')
    bin=${pkg/fence-/fence_}
    expected=("./usr/sbin/$bin" "./usr/share/doc/$pkg/copyright" "./usr/share/doc/$pkg/changelog.gz"
      "./usr/share/man/man8/$bin.8.gz" "./usr/share/bash-completion/completions/$bin")
    case $pkg in
      fenced)
        expected+=(./lib/systemd/system/fenced.service ./usr/lib/sysusers.d/palisade.conf
          ./usr/lib/tmpfiles.d/palisade.conf ./etc/palisade/fenced.toml
          ./usr/share/palisade/prometheus/palisade.rules.yml)
        ;;
      palisade-sbd) expected+=(./lib/systemd/system/palisade-sbd.service) ;;
    esac
    for f in "${expected[@]}"; do
      grep -qxF "$f" <<<"$contents" || fail "$deb lacks $f"
    done

    x=$(mktemp -d)
    dpkg-deb -x "$deb" "$x"
    for b in "$x"/usr/sbin/*; do
      [[ $(head -c4 "$b" | od -An -c | tr -d ' ') == '177ELF' ]] || { rm -rf "$x"; fail "$deb: $(basename "$b") is not ELF"; }
      m=$(od -An -tu2 -j18 -N2 "$b" | tr -d ' ')
      [[ $m == "$machine" ]] || { rm -rf "$x"; fail "$deb: $(basename "$b") has ELF machine $m, not $arch ($machine)"; }
    done
    rm -rf "$x"
    echo "check-debs: $(basename "$deb"): $(stat -c %s "$deb") bytes, Installed-Size $(dpkg-deb --field "$deb" Installed-Size) KiB, Depends: $depends"
  done
done

# lintian reads foreign-architecture ELF files, so one run covers both architectures.
# Left at info level (lintian -I --pedantic), none of them a fault:
# - hardening-no-fortify-functions: Rust code calls no fortifiable glibc functions (memcpy_chk
#   and kin come from C built with _FORTIFY_SOURCE; there is none here). lintian's PIE and
#   RELRO checks, warnings when they fail, pass.
# - binary-has-unneeded-section .comment: rustc's and the linker's version strings; strip
#   = "symbols" keeps them, and they say which toolchain built a binary found in the field.
# - package-supports-alternative-init-but-no-init.d-script (fenced, palisade-sbd): the units
#   are the supported way to run them; no sysvinit script is shipped or tested.
# - systemd-service-file-missing-documentation-key (fenced): the units live in fenced/ and
#   watchdog/, outside this packaging; a Documentation=man:fenced(8) line there would clear it.
t0=$SECONDS
report=$(mktemp)
trap 'rm -f "$report"' EXIT
if ! lintian --fail-on error,warning --tag-display-limit 0 "${all[@]}" >"$report" 2>&1; then
  cat "$report" >&2
  fail "lintian found errors or warnings (fix them, or override each with its reason in packaging/debian/PKG/lintian-overrides)"
fi
echo "check-debs: lintian: ${#all[@]} packages (${arches[*]}) without errors or warnings in $((SECONDS - t0)) s"
