//! Link-time layout of fenced's own binary, for idle memory on a Pi-class fence controller.
//!
//! Why: the kernel maps 64 KiB of a binary's cached file around every page that faults in, and
//! the code `fenced run` reaches at start and while idle (about 0.8 MB of functions from every
//! crate: config parsing, redb, axum, tokio, the signing key) lies scattered over the whole 4 MB
//! text segment, so nearly all of it ends up resident: 3.9 MiB of text for 0.8 MB used. Placing
//! those functions first (`text-order.txt`, written by `scripts/text-order.sh` from a callgrind
//! run of the shipped build) keeps them in a few windows: idle VmRSS 7196 -> 4760 KiB, measured
//! with the packaged example configuration (hw-tests/figures/speed.md).
//!
//! The file names mangled symbols, whose hashes follow the exact build (profile, dependency
//! versions, features): an entry that no longer matches is skipped by the linker, silently, and
//! the binary is only laid out worse, never wrong. `scripts/text-order.sh check` counts the
//! entries the current build still matches; regenerate after a dependency or profile change.
//!
//! Only for the release profile, where memory is measured and shipped, and only on x86-64, where
//! rustc links with its own LLD (`--symbol-ordering-file` is an LLD option; the arm64 cross
//! build links with Debian's ld.bfd, and its symbols would need their own run).
//! `PALISADE_TEXT_ORDER=off` leaves the layout to the linker, for a linker without the option.
//!
//! Also in release: `-z pack-relative-relocs` (DT_RELR, glibc 2.36 = bookworm, LLD and ld.bfd
//! 2.38+): the dynamic loader reads 2.7 KiB of relative relocations at start instead of 219 KiB of
//! RELA entries, which all stayed resident (the first read-only segment 720 -> 500 KiB).
fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    println!("cargo:rerun-if-changed=text-order.txt");
    println!("cargo:rerun-if-env-changed=PALISADE_TEXT_ORDER");
    println!("cargo:rerun-if-env-changed=PALISADE_TEXT_MAP");
    if !release || target != "x86_64-unknown-linux-gnu" {
        return;
    }
    println!("cargo:rustc-link-arg-bin=fenced=-Wl,-z,pack-relative-relocs");
    if std::env::var("PALISADE_TEXT_ORDER").is_ok_and(|v| v == "off") {
        return;
    }
    // Cargo always sets it; without it there is no file to name, and the layout stays the linker's.
    let Ok(dir) = std::env::var("CARGO_MANIFEST_DIR") else {
        return;
    };
    println!("cargo:rustc-link-arg-bin=fenced=-Wl,--symbol-ordering-file={dir}/text-order.txt");
    println!("cargo:rustc-link-arg-bin=fenced=-Wl,--no-warn-symbol-ordering");
    // scripts/text-order.sh asks for the link map: it names each function's address and size,
    // which the stripped shipped binary no longer carries.
    if let Ok(map) = std::env::var("PALISADE_TEXT_MAP") {
        println!("cargo:rustc-link-arg-bin=fenced=-Wl,-Map={map}");
    }
}
