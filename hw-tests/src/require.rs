//! "This test needs X": the one check a test makes before it depends on the machine (a peer
//! program, a Python tool, a kernel feature, root).
//!
//! Under the README's test command (`scripts/test.sh`, which CI runs) a missing requirement
//! fails the test: a suite that goes green having tested nothing on a machine where an install
//! half-failed is worse than a red one. A developer's local run may skip on request:
//! `PALISADE_ALLOW_SKIP=1` skips any missing requirement, `PALISADE_ALLOW_SKIP=fuse,sbd` only
//! those named. Every missing requirement (skipped or failed) is appended as one line to the
//! skip log, which `scripts/test.sh` empties before the tests and prints after them, so the
//! run's end lists every test that did not run.
//!
//! Only `std` here, and nothing from this crate: the `drivers` and `watchdog` tests include
//! this file with `#[path]` rather than dev-depending on the bench (which would compile the
//! whole bench, and whatever it depends on, for every `cargo test -p drivers`).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The switch that allows skips: `1` or `all` (any requirement), or requirement names
/// separated by commas or spaces. Unset, empty or `0`: a missing requirement fails the test.
pub const ALLOW_ENV: &str = "PALISADE_ALLOW_SKIP";
/// Where the skip log is (scripts/test.sh sets it); unset: `<target>/palisade-skips.log`.
pub const LOG_ENV: &str = "PALISADE_SKIP_LOG";
/// The command that installs every requirement and verifies each afterwards.
pub const INSTALL: &str = "scripts/install-test-deps.sh";

/// Which missing requirements may be skipped, and where every missing one is recorded.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The value of [`ALLOW_ENV`]; `None` when unset.
    pub allow: Option<String>,
    /// The skip log (one line per missing requirement, appended).
    pub log: PathBuf,
}

impl Policy {
    /// The policy the environment sets ([`ALLOW_ENV`], [`LOG_ENV`]).
    pub fn from_env() -> Policy {
        let allow = std::env::var(ALLOW_ENV).ok();
        let log = std::env::var_os(LOG_ENV)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| target_dir().join("palisade-skips.log"));
        Policy { allow, log }
    }

    /// Whether a test may skip when requirement `name` is missing.
    pub fn allows(&self, name: &str) -> bool {
        match self.allow.as_deref().map(str::trim) {
            None | Some("") | Some("0") => false,
            Some("1") | Some("all") => true,
            Some(list) => list
                .split([',', ' '])
                .any(|n| n.trim().eq_ignore_ascii_case(name)),
        }
    }
}

/// The workspace's target directory (every crate of the workspace sits one level below it;
/// each test process finds the same file, so nextest's per-test processes share one log).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// Whether a test that needs `name` may run. `found` is the probe's answer (`Err` says what is
/// missing), `provided_by` what provides it (a Debian package, a PyPI package, a kernel module).
/// Missing and not allowed: panics, naming the requirement and the install script. Missing and
/// allowed by [`ALLOW_ENV`]: records the skip and returns `false`; the test then returns.
pub fn needs(name: &str, provided_by: &str, found: Result<(), String>) -> bool {
    obtain(name, provided_by, found).is_some()
}

/// [`needs`] for a requirement whose probe yields the thing itself (a mounted tmpfs): `Some`
/// when it is there, `None` when a skip was allowed.
pub fn obtain<T>(name: &str, provided_by: &str, found: Result<T, String>) -> Option<T> {
    obtain_with(
        &Policy::from_env(),
        &current_test(),
        name,
        provided_by,
        found,
    )
}

/// [`obtain`] under an explicit policy, for test `test` (what the log and the message name).
// A missing requirement must fail the test that needs it: panicking is how a test fails.
#[allow(clippy::panic)]
pub fn obtain_with<T>(
    policy: &Policy,
    test: &str,
    name: &str,
    provided_by: &str,
    found: Result<T, String>,
) -> Option<T> {
    let why = match found {
        Ok(v) => return Some(v),
        Err(why) => why,
    };
    let allowed = policy.allows(name);
    let status = if allowed { "skipped" } else { "missing" };
    let line = format!(
        "{status}\t{}\t{}\t{}\t{}\n",
        one_field(test),
        one_field(name),
        one_field(provided_by),
        one_field(&why)
    );
    let logged = append(&policy.log, &line);
    if !allowed {
        panic!(
            "{test} needs {name} ({provided_by}), which is missing here: {why}. Run {INSTALL} as \
             root: it installs every test requirement and verifies each. To skip it on a local \
             run, set {ALLOW_ENV}={name} (or {ALLOW_ENV}=1 for any requirement)."
        );
    }
    if let Err(e) = logged {
        // A skip that the run's summary cannot list would pass silently: fail instead.
        panic!(
            "{test}: skipping it ({name} missing) but cannot record the skip in {}: {e}; make \
             the log writable or point {LOG_ENV} elsewhere",
            policy.log.display()
        );
    }
    eprintln!("SKIPPED ({ALLOW_ENV}): {test} needs {name} ({provided_by}): {why}");
    None
}

/// Tabs and newlines would split a log line into fields or lines of its own.
fn one_field(s: &str) -> String {
    s.replace(['\t', '\n', '\r'], " ")
}

/// Appends `line` with one write(2) on an O_APPEND descriptor: lines from concurrent test
/// processes land whole (each is far below a page), never interleaved.
fn append(log: &Path, line: &str) -> std::io::Result<()> {
    if let Some(dir) = log.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?
        .write_all(line.as_bytes())
}

/// The running test as nextest names it: the package (cargo and nextest set `CARGO_PKG_NAME`
/// for the test process), the test binary (without cargo's hash) and the test, which libtest
/// runs on a thread named after it.
pub fn current_test() -> String {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .map(|n| match n.rsplit_once('-') {
            Some((stem, hash))
                if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                stem.to_string()
            }
            _ => n,
        })
        .unwrap_or_else(|| "?".into());
    let package = std::env::var("CARGO_PKG_NAME")
        .map(|p| format!("{p}::"))
        .unwrap_or_default();
    let thread = std::thread::current();
    format!("{package}{binary} {}", thread.name().unwrap_or("?"))
}

/// `Ok` when `program` is an executable on `PATH` (or, given with a `/`, at that path).
pub fn command(program: &str) -> Result<(), String> {
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        return if executable(Path::new(program)) {
            Ok(())
        } else {
            Err(format!("{program} is not an executable file"))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|d| executable(&d.join(program))) {
        Ok(())
    } else {
        Err(format!("`{program}` is not on PATH"))
    }
}

/// [`needs`] for a program: `program` on `PATH` (or at that path), provided by `provided_by`.
pub fn needs_command(program: &str, provided_by: &str) -> bool {
    let name = Path::new(program)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| program.into());
    needs(&name, provided_by, command(program))
}

/// `Ok` when `python3` can import `module`.
pub fn python_module(module: &str) -> Result<(), String> {
    let out = std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "python3 cannot import {module}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
