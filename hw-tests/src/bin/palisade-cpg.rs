//! `palisade-cpg [--hold] GROUP`: a Corosync CPG member for the cluster lab (see
//! `hw_tests::cluster::cpg`). Run inside a lab node, it joins GROUP through that node's
//! Corosync, prints one line per event on stdout (`local`, `joined`, `left`, `members`,
//! `deliver`), multicasts every line read on stdin, and leaves the group and exits 0 at end of
//! stdin (with `--hold` it ignores stdin and stays until killed). Exit 1: Corosync refused or
//! went away (the reason is on stderr); 2: bad usage.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag] if flag == "-h" || flag == "--help" => {
            drivers::outln!(
                "usage: palisade-cpg [--hold] GROUP\n\nJoins the Corosync CPG group GROUP (run it inside a cluster lab node), prints\n`local N:P`, `joined N:P REASON`, `left N:P REASON`, `members N:P ...` and\n`deliver N:P TEXT` lines, and multicasts each line read on stdin (agreed order).\nEnd of stdin leaves the group.\nWith --hold, stdin is ignored: it stays a member until killed (a daemon of a lab node)."
            );
            ExitCode::SUCCESS
        }
        [flag, group] if flag == "--hold" => member(group, true),
        [group] if !group.starts_with('-') => member(group, false),
        _ => {
            drivers::errln!("palisade-cpg: expected `[--hold] GROUP` (see --help)");
            ExitCode::from(2)
        }
    }
}

fn member(group: &str, hold: bool) -> ExitCode {
    match hw_tests::cluster::cpg::serve_member(group, hold) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            drivers::errln!("palisade-cpg: {e}");
            ExitCode::from(1)
        }
    }
}
