//! Embeds every `profiles/*.toml`: the mere existence of a file creates a board.

use std::fmt::Write;

fn main() {
    let dir = std::path::Path::new("profiles");
    println!("cargo:rerun-if-changed=profiles");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".toml"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    let mut out = String::from(
        "/// Every board profile file, by file stem.\npub static PROFILES: &[(&str, &str)] = &[\n",
    );
    for n in &names {
        let stem = n.trim_end_matches(".toml");
        let _ = writeln!(out, "    ({stem:?}, include_str!(concat!(env!(\"CARGO_MANIFEST_DIR\"), \"/profiles/{n}\"))),");
    }
    out.push_str("];\n");
    let dest = std::path::Path::new(&std::env::var("OUT_DIR").unwrap_or_else(|_| ".".into()))
        .join("profiles.rs");
    if let Err(e) = std::fs::write(&dest, out) {
        println!("cargo:warning=cannot write {}: {e}", dest.display());
    }
}
