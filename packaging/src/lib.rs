//! Palisade's Debian packaging: the man pages and shell completions the packages ship, rendered
//! from the command definitions the binaries themselves parse with, never from a second copy.
//!
//! - `fenced` and `fence_node` parse with clap: their `clap::Command` comes straight from
//!   [`fenced::cli`].
//! - `fence_palisade` parses by hand from the option table its metadata and `--help` use
//!   ([`fenced::cli::fence_palisade`]); [`agent::command`] builds a `clap::Command` from that
//!   table, only to render it.
//! - `palisade-sbd` keeps sbd's getopt-style parser and sbd's usage layout
//!   ([`watchdog::sbd_admin::USAGE`]); [`sbd_usage::command`] reads that text (the one `--help`
//!   prints) into a `clap::Command`, and a test checks every option it finds is one the parser
//!   accepts.

pub mod agent;
pub mod sbd_usage;

use clap_complete::Shell;
use std::path::{Path, PathBuf};

/// Every binary the packages ship, with its man section: all live in /usr/sbin (Pacemaker looks
/// for fence agents there; the others are administrators' tools), hence section 8.
pub fn commands() -> Vec<clap::Command> {
    vec![
        fenced::cli::fenced::command(),
        fenced::cli::fence_node::command(),
        agent::command(),
        sbd_usage::command(),
    ]
}

/// Why the pages or completions could not be written.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// A file or directory under the output directory could not be written.
    #[error("cannot write {path}: {source}; check the output directory exists and is writable")]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
}

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> GenerateError + '_ {
    move |source| GenerateError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// The shells whose completions are shipped, with the directory Debian's packages of each shell
/// load vendor completions from and the file name each expects.
pub const SHELLS: [(Shell, &str, &str); 3] = [
    (Shell::Bash, "bash-completion/completions", ""),
    (Shell::Zsh, "zsh/vendor-completions", "_"),
    (Shell::Fish, "fish/vendor_completions.d", ".fish"),
];

/// Writes `OUT/man/man8/NAME.8` for every command and every (non-hidden) subcommand
/// (`fenced-token-create.8`, as git names them), and `OUT/<shell dir>/NAME` completions, as the
/// tree under `/usr/share` they are installed to. Returns the files written.
pub fn generate(out: &Path) -> Result<Vec<PathBuf>, GenerateError> {
    let mut written = Vec::new();
    let man_dir = out.join("man/man8");
    std::fs::create_dir_all(&man_dir).map_err(write_err(&man_dir))?;
    for cmd in commands() {
        let mut cmd = cmd.disable_help_subcommand(true);
        cmd.build();
        man_pages(&cmd, &man_dir, &mut written)?;
        for (shell, dir, prefix_or_suffix) in SHELLS {
            let dir = out.join(dir);
            std::fs::create_dir_all(&dir).map_err(write_err(&dir))?;
            let name = cmd.get_name().to_string();
            let file = match shell {
                Shell::Zsh => dir.join(format!("{prefix_or_suffix}{name}")),
                _ => dir.join(format!("{name}{prefix_or_suffix}")),
            };
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut cmd, &name, &mut buf);
            std::fs::write(&file, buf).map_err(write_err(&file))?;
            written.push(file);
        }
    }
    Ok(written)
}

fn man_pages(
    cmd: &clap::Command,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> Result<(), GenerateError> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(sub, dir, written)?;
    }
    let man = clap_mangen::Man::new(cmd.clone())
        .section("8")
        .source(format!("Palisade {}", env!("CARGO_PKG_VERSION")))
        .manual("Palisade");
    let file = dir.join(man.get_filename());
    let mut buf = Vec::new();
    man.render(&mut buf).map_err(write_err(&file))?;
    std::fs::write(&file, buf).map_err(write_err(&file))?;
    written.push(file);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    #[test]
    fn every_command_definition_is_consistent() {
        // clap's own checks (duplicate flags, bad value names, ...) run on `debug_assert`.
        for cmd in super::commands() {
            cmd.debug_assert();
        }
    }

    #[test]
    fn pages_and_completions_cover_every_binary_and_verb() {
        let dir = std::env::temp_dir().join(format!("palisade-docs-test-{}", std::process::id()));
        let written = super::generate(&dir).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for n in [
            "fenced.8",
            "fenced-check-config.8",
            "fenced-token-create.8",
            "fence_node.8",
            "fence_node-off.8",
            "fence_palisade.8",
            "palisade-sbd.8",
            "palisade-sbd-message.8",
            "fence_node",
            "_fence_node",
            "palisade-sbd.fish",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} not generated: {names:?}");
        }
        let page = std::fs::read_to_string(dir.join("man/man8/fence_node-off.8")).unwrap();
        assert!(page.contains(".TH fence_node-off 8"), "{page}");
        assert!(page.contains("request\\-id"), "{page}");
        let bash = std::fs::read_to_string(dir.join("bash-completion/completions/fenced")).unwrap();
        assert!(bash.contains("check-config"), "{bash}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
