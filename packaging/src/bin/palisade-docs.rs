//! `palisade-docs OUT`: writes the man pages (`OUT/man/man8/`) and shell completions
//! (`OUT/bash-completion/`, `OUT/zsh/`, `OUT/fish/`) of every binary the Debian packages ship,
//! laid out as under `/usr/share`. Run by scripts/build-debs.sh.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        // A closed stdout or stderr (EPIPE) must not panic: the exit status tells the outcome.
        let _ = writeln!(
            std::io::stderr(),
            "usage: palisade-docs OUT_DIR (man pages and completions are written below it)"
        );
        return ExitCode::from(2);
    };
    match packaging::generate(&PathBuf::from(out)) {
        Ok(files) => {
            let _ = writeln!(
                std::io::stdout(),
                "palisade-docs: {} files written",
                files.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "palisade-docs: {e}");
            ExitCode::FAILURE
        }
    }
}
