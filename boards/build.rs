//! Embeds every `profiles/*.toml` (boards) and `hats/*.toml` (add-on boards): the mere
//! existence of a file creates a board.

use std::fmt::Write;

/// `pub static NAME: &[(&str, &str)]` of every `DIR/*.toml`, by file stem, sorted.
fn table(out: &mut String, name: &str, dir: &str) {
    println!("cargo:rerun-if-changed={dir}");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".toml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let _ = writeln!(
        out,
        "/// Every `{dir}/*.toml`, by file stem, with its text.\npub static {name}: &[(&str, &str)] = &["
    );
    for n in &files {
        let stem = n.trim_end_matches(".toml");
        let _ = writeln!(
            out,
            "    ({stem:?}, include_str!(concat!(env!(\"CARGO_MANIFEST_DIR\"), \"/{dir}/{n}\"))),"
        );
    }
    out.push_str("];\n");
}

fn main() {
    let mut out = String::new();
    table(&mut out, "PROFILES", "profiles");
    table(&mut out, "HATS", "hats");
    let dest = std::path::Path::new(&std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into()))
        .join("profiles.rs");
    if let Err(e) = std::fs::write(&dest, out) {
        println!("cargo:warning=cannot write {}: {e}", dest.display());
    }
}
