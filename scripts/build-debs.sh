#!/usr/bin/env bash
# Builds the Debian packages fenced, fence-node, fence-palisade and palisade-sbd into
# target/debian/ (or $1) for amd64, and for arm64 when the cross linker (gcc-aarch64-linux-gnu)
# and the rustup target aarch64-unknown-linux-gnu are both present (said either way).
#
# Why dpkg-deb and not cargo-deb or debhelper: dpkg-deb ships with dpkg (nothing to build or
# install; cargo-deb would be one more crates.io tool built on every CI machine), and the
# layout, maintainer scripts and conffiles are plain files under packaging/debian/ that
# lintian and the bookworm test (hw-tests/tests/debian_package.rs) check. Debhelper's
# dh-cargo wants Debian's packaged Rust crates, which this workspace does not use. The
# maintainer scripts are written in the shape dh_installsystemd/dh_installsysusers generate.
#
# Package names use '-' where the binaries use '_' (Debian package names cannot hold '_').
# PALISADE_DEB_VERSION overrides the version (the upgrade test builds an older one).
# PALISADE_DEB_PROFILE picks the cargo profile (default `release`, fat LTO, what is shipped;
# Cargo.toml's [profile.deb] comment says why and what thin LTO would cost).
# PALISADE_DEB_ARCHES limits the architectures ("amd64", "arm64" or "amd64 arm64").
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-target/debian}
version=${PALISADE_DEB_VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)}
profile=${PALISADE_DEB_PROFILE:-release}
target_dir=${CARGO_TARGET_DIR:-target}
deb=packaging/debian
mkdir -p "$out"
out=$(cd "$out" && pwd)

# Man pages and completions, from the command definitions (host build; arch-independent).
docs=$(mktemp -d)
trap 'rm -rf "$docs" "${stage:-}"' EXIT
cargo run --quiet --locked -p packaging --bin palisade-docs -- "$docs" >/dev/null

if [[ -n ${PALISADE_DEB_ARCHES:-} ]]; then
  read -ra arches <<<"$PALISADE_DEB_ARCHES"
else
  arches=(amd64)
  if command -v aarch64-linux-gnu-gcc >/dev/null && rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
    arches+=(arm64)
  else
    echo "build-debs: arm64 skipped (needs gcc-aarch64-linux-gnu and rustup target aarch64-unknown-linux-gnu)"
  fi
fi

# install_file SRC DEST MODE: DEST is relative to the package root.
install_file() { install -D -m "$3" "$1" "$stage/$2"; }

# The prometheus rules are another piece of work (packaging/prometheus/); shipped once present.
rules=packaging/prometheus/palisade.rules.yml

for arch in "${arches[@]}"; do
  # The cross linker and C compiler (ring) for arm64 come from .cargo/config.toml.
  # shlib_dirs: where dpkg-shlibdeps finds the target's libraries (Debian's cross libc).
  case $arch in
    amd64) triple=x86_64-unknown-linux-gnu shlib_dirs=() ;;
    arm64) triple=aarch64-unknown-linux-gnu shlib_dirs=(-l/usr/aarch64-linux-gnu/lib) ;;
    *) echo "build-debs: unknown architecture $arch (amd64 or arm64)" >&2; exit 2 ;;
  esac
  # The host's own target builds into target/PROFILE, where the workspace's other builds of
  # that profile go.
  target_args=(--target "$triple")
  bin=$target_dir/$triple/$profile
  if [[ $triple == "$(rustc -vV | sed -n 's/^host: //p')" ]]; then
    target_args=()
    bin=$target_dir/$profile
  fi
  # fenced's [cluster] membership opens Corosync's libcpg/libquorum at run time
  # (fenced/src/cluster/libs.rs), so every architecture's fenced has it without their -dev
  # packages; the .deb suggests libcpg4 and libquorum5.
  t0=$SECONDS
  cargo build --profile "$profile" --locked "${target_args[@]}" -p fenced -p watchdog \
    --bin fenced --bin fence_node --bin fence_palisade --bin palisade-sbd
  echo "build-debs: $arch binaries ($profile profile) ready in $((SECONDS - t0)) s"

  for pkg in fenced fence-node fence-palisade palisade-sbd; do
    stage=$(mktemp -d)
    case $pkg in
      fenced)
        install_file "$bin/fenced" usr/sbin/fenced 0755
        install_file fenced/systemd/fenced.service lib/systemd/system/fenced.service 0644
        install_file "$deb/sysusers-palisade.conf" usr/lib/sysusers.d/palisade.conf 0644
        install_file "$deb/tmpfiles-palisade.conf" usr/lib/tmpfiles.d/palisade.conf 0644
        install_file "$deb/fenced.toml" etc/palisade/fenced.toml 0644
        install_file fenced/openapi.json usr/share/doc/fenced/openapi.json 0644
        if [[ -f $rules ]]; then
          install_file "$rules" usr/share/palisade/prometheus/palisade.rules.yml 0644
        fi
        cmds=(fenced)
        ;;
      fence-node)
        install_file "$bin/fence_node" usr/sbin/fence_node 0755
        cmds=(fence_node)
        ;;
      fence-palisade)
        install_file "$bin/fence_palisade" usr/sbin/fence_palisade 0755
        cmds=(fence_palisade)
        ;;
      palisade-sbd)
        install_file "$bin/palisade-sbd" usr/sbin/palisade-sbd 0755
        install_file watchdog/systemd/palisade-sbd.service lib/systemd/system/palisade-sbd.service 0644
        cmds=(palisade-sbd)
        ;;
    esac
    for c in "${cmds[@]}"; do
      for page in "$docs"/man/man8/"$c".8 "$docs"/man/man8/"$c"-*.8; do
        [[ -f $page ]] || continue
        install -D -m 0644 "$page" "$stage/usr/share/man/man8/$(basename "$page")"
        gzip -9n "$stage/usr/share/man/man8/$(basename "$page")"
      done
      install_file "$docs/bash-completion/completions/$c" "usr/share/bash-completion/completions/$c" 0644
      install_file "$docs/zsh/vendor-completions/_$c" "usr/share/zsh/vendor-completions/_$c" 0644
      install_file "$docs/fish/vendor_completions.d/$c.fish" "usr/share/fish/vendor_completions.d/$c.fish" 0644
    done
    install_file "$deb/copyright" "usr/share/doc/$pkg/copyright" 0644
    printf '%s (%s) unstable; urgency=medium\n\n  * Built from the Palisade workspace by scripts/build-debs.sh.\n\n -- Palisade maintainers <maintainers@palisade.example.invalid>  %s\n' \
      "$pkg" "$version" "$(date -R -u -d "@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}")" \
      | gzip -9n >"$stage/usr/share/doc/$pkg/changelog.gz"
    if [[ -f $deb/$pkg/lintian-overrides ]]; then
      install_file "$deb/$pkg/lintian-overrides" "usr/share/lintian/overrides/$pkg" 0644
    fi

    # The shared libraries the binaries need, with versions, as dpkg-shlibdeps computes them
    # (it wants a debian/control in the directory it runs from).
    shl=$(mktemp -d)
    mkdir -p "$shl/debian"
    printf 'Source: palisade\n\nPackage: %s\nArchitecture: any\n' "$pkg" >"$shl/debian/control"
    # A cross build's libraries belong to Debian's *-arm64-cross packages on this host; on
    # the target they are the plain packages (libc6, libgcc-s1), so the suffix goes.
    # The cross libc ships only a shlibs file (no symbols file), which names "libc6:arm64
    # (>= 2.36)": the qualifier goes too (it is the package's own architecture), and the
    # version is the cross libc's whole-library minimum (bookworm's own glibc), not the newest
    # symbol used, as the amd64 build's symbols file gives.
    # Its one expected warning (the binaries are not under debian/PACKAGE) is dropped.
    if ! shlibs=$(cd "$shl" && DEB_HOST_ARCH=$arch dpkg-shlibdeps -O -x"$pkg" "${shlib_dirs[@]}" "$stage"/usr/sbin/* 2>"$shl/stderr"); then
      cat "$shl/stderr" >&2
      echo "build-debs: dpkg-shlibdeps failed for $pkg ($arch); for arm64 it needs libc6-dev-arm64-cross" >&2
      exit 1
    fi
    grep -v "binaries to analyze should already be installed in their package's directory" "$shl/stderr" >&2 || true
    shlibs=$(sed -n "s/^shlibs:Depends=//; T; s/-$arch-cross//g; s/:$arch\([ ,]\|$\)/\1/g; p" <<<"$shlibs")
    rm -rf "$shl"
    if [[ $shlibs != *libc6* ]]; then
      echo "build-debs: dpkg-shlibdeps found no libc6 dependency for $pkg ($arch): '$shlibs'" >&2
      exit 1
    fi

    mkdir -p "$stage/DEBIAN"
    for f in conffiles postinst prerm postrm; do
      [[ -f $deb/$pkg/$f ]] && install -m "$([[ $f == conffiles ]] && echo 0644 || echo 0755)" "$deb/$pkg/$f" "$stage/DEBIAN/$f"
    done
    (cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$stage/DEBIAN/md5sums"
    size=$(du -k -s --exclude=DEBIAN "$stage" | cut -f1)
    sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@INSTALLED_SIZE@/$size/" \
      -e "s/@SHLIBS@/$shlibs/" "$deb/$pkg/control" >"$stage/DEBIAN/control"
    find "$stage" -type d -exec chmod 0755 {} +
    dpkg-deb --root-owner-group -Zxz --build "$stage" "$out/${pkg}_${version}_${arch}.deb" >/dev/null
    rm -rf "$stage"
    stage=
    echo "build-debs: $out/${pkg}_${version}_${arch}.deb ($(stat -c %s "$out/${pkg}_${version}_${arch}.deb") bytes, installed $size KiB)"
  done
done
