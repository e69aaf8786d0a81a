//! The SBD admin verbs of `palisade-sbd`, a drop-in for ClusterLabs sbd's command line
//! (`create`, `dump`, `list`, `allocate`, `message`), with sbd's option letters, environment
//! variables and output formats, so operators' scripts and `fence_sbd` work unchanged.
//!
//! Where we differ, we are safer and say so in `--help`:
//! - `create` refuses msgwait < 2 × watchdog timeout unless `--force` (a pill must outlive the
//!   watcher's watchdog: sbd's own documentation recommends msgwait = 2 × watchdog).
//! - every disk I/O has a deadline (`-I`, default 3 s like sbd's `timeout_io`); a disk that
//!   does not answer is reported by name instead of hanging the command.
//! - `message` counts a disk only if the mailbox read back identical (sbd's check never fails,
//!   see `drivers::sbd::pill`).

use drivers::sbd::{
    self, format, heartbeat, open_and_deliver, BlockDevice, Disk, DiskConfig, Header, Mailbox,
    Message, NodeEntry, SbdError,
};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The configuration files sbd's systemd unit reads (`EnvironmentFile=`), in order.
pub const CONFIG_FILES: [&str; 2] = ["/etc/sysconfig/sbd", "/etc/default/sbd"];

/// The most devices sbd accepts.
pub const MAX_DEVICES: usize = 3;

/// The usage text, sbd's layout plus what we do differently.
pub const USAGE: &str = "\
palisade-sbd: shared storage fencing tool (drop-in for ClusterLabs sbd's disk commands).
Syntax:
\tpalisade-sbd <options> <command> <cmdarguments>
Options:
-d <devname>\tBlock device to use (mandatory; can be specified up to 3 times)
-n <node>\tSet local node name; defaults to uname -n (optional)
-1 <N>\t\tSet watchdog timeout to N seconds (optional, create only)
-2 <N>\t\tSet slot allocation timeout to N seconds (optional, create only)
-3 <N>\t\tSet daemon loop timeout to N seconds (optional, create only)
-4 <N>\t\tSet msgwait timeout to N seconds (optional, create only)
-I <N>\t\tDeadline for each disk I/O in seconds (default 3)
-v\t\tVerbose: say what each disk did on stderr
--board NAME\tBoard profile (boards/profiles: generic-x86, raspberry-pi-4, ...) giving the
\t\twatchdog device and timeout range (watch, test-watchdog; or PALISADE_BOARD)
--force\t\tcreate: accept msgwait < 2 x watchdog timeout (unsafe)
--no-heartbeat\twatch: write no heartbeat (also PALISADE_SBD_HEARTBEAT=no)
-h, --help\tThis help
Commands:
create\t\tinitialize N slots on <dev> - OVERWRITES DEVICE!
list\t\tList all allocated slots on device, and messages.
dump\t\tDump meta-data header from device.
allocate <node>\tAllocate a slot for node (optional)
message <node> (test|reset|off|crashdump|clear|exit)
\t\tWrites the specified message to node's slot.
create-heartbeat
\t\tAdd (or reset) the Palisade heartbeat area on an SBD disk, e.g. one made by
\t\tsbd: sectors after sbd's last mailbox; sbd's own sectors are not written.
heartbeats\tList the heartbeat records (slot, node, counter, written at, boot id).

Devices also come from SBD_DEVICE (';'-separated) in the environment or in
/etc/sysconfig/sbd or /etc/default/sbd (PALISADE_SBD_CONFIG=FILE reads another file,
PALISADE_SBD_CONFIG= none). SBD_WATCHDOG_TIMEOUT sets create's default watchdog timeout.

Safer than sbd:
- create refuses msgwait < 2 x watchdog timeout unless --force: a pill must outlive the
  target's watchdog, or \"delivered\" can be reported before the target is down.
- Every disk I/O has a deadline (-I): list, dump and message on a disk that does not answer
  report that disk by name after a bounded time instead of hanging (sbd waits for the kernel).
- message counts a disk only when the mailbox reads back identical, and fails unless more
  than half of the disks hold it. Like sbd, it then waits msgwait (except for exit) before
  returning 0, so fence_sbd's \"off\" means the target's watchdog has had time to fire.

Heartbeats (for fenced's disk-heartbeat witness, which vetoes a power device's \"off\" while
the node's watcher still writes): create also makes a heartbeat area after sbd's sectors
(skipped with a warning on a disk too small for it: 384 KiB at 512-byte sectors, 3 MiB at
4096). watch writes this node's record once per read of its slot (10 single-sector writes a
second per disk) on every disk that has the area, unless --no-heartbeat or
PALISADE_SBD_HEARTBEAT=no; a disk without the area is never written past sbd's sectors.
The area is tied to the header's UUID: after `sbd create` run create-heartbeat again.

Watcher and watchdog commands (run in the foreground, for systemd's Type=notify):
watch		Watch the disks and feed the watchdog (-w DEV, SBD_WATCHDOG_DEV, the board
		profile's device, else /dev/watchdog; -1 N asks the watchdog for N s instead of
		the header's timeout, clamped into the board's range with --board).
		A poison pill reboots/powers off this node at once; losing a majority of disks
		for half the watchdog timeout reboots it; `exit` or SIGTERM disarms and exits.
query-watchdog	List the watchdogs (from sysfs; nothing is armed).
test-watchdog	Arm the watchdog and stop feeding it: THE NODE RESETS. Needs
		PALISADE_SBD_TEST_WATCHDOG=reset-this-node in the environment.
";

/// Why the command line or configuration was refused (exit status 1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// A bad option or argument.
    #[error("{0}")]
    Invalid(String),
}

/// The parsed command line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Options {
    /// `-d` devices, or SBD_DEVICE's.
    pub devices: Vec<PathBuf>,
    /// `-n`.
    pub local_name: Option<String>,
    /// `-1`.
    pub timeout_watchdog: Option<u32>,
    /// `-2`.
    pub timeout_allocate: Option<u32>,
    /// `-3`.
    pub timeout_loop: Option<u32>,
    /// `-4`.
    pub timeout_msgwait: Option<u32>,
    /// `-I`, seconds.
    pub io_timeout: Option<u32>,
    /// `-w`: the watchdog device (`watch`, `test-watchdog`).
    pub watchdog_device: Option<PathBuf>,
    /// `--board NAME`: the board profile that names the watchdog device and its timeout range.
    pub board: Option<String>,
    /// `--force`.
    pub force: bool,
    /// `--no-heartbeat`: `watch` writes no heartbeat even where the disk has the area.
    pub no_heartbeat: bool,
    /// `-v` count.
    pub verbose: u32,
    /// `-h` / `--help`.
    pub help: bool,
    /// The command and its arguments.
    pub command: Vec<String>,
}

/// Options sbd takes with an argument (its getopt string `C:w:d:n:p:1:2:3:4:5:t:I:F:S:s:r:`).
const WITH_ARG: &str = "Cwdnp12345tIFSsr";
/// Flags sbd takes without one; accepted and ignored where they only matter to the watcher.
const FLAGS: &str = "czDPRTWZhv";

fn parse_num(opt: char, v: &str) -> Result<u32, UsageError> {
    v.trim()
        .parse::<u32>()
        .map_err(|_| UsageError::Invalid(format!("Invalid value \"{v}\" for option -{opt}")))
}

/// Parses arguments (without the program name) like sbd's getopt: bundled flags (`-ZZ`),
/// attached values (`-d/dev/x`), options before the command only.
pub fn parse_args(args: &[String]) -> Result<Options, UsageError> {
    let mut o = Options::default();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            i += 1;
            break;
        }
        if a == "--force" {
            o.force = true;
            i += 1;
            continue;
        }
        if a == "--no-heartbeat" {
            o.no_heartbeat = true;
            i += 1;
            continue;
        }
        if let Some(v) = a.strip_prefix("--board=") {
            o.board = Some(v.trim().to_string());
            i += 1;
            continue;
        }
        if a == "--board" {
            let v = args.get(i + 1).ok_or_else(|| {
                UsageError::Invalid(
                    "option '--board' requires an argument (a board profile name)".into(),
                )
            })?;
            o.board = Some(v.trim().to_string());
            i += 2;
            continue;
        }
        if a == "--help" {
            o.help = true;
            i += 1;
            continue;
        }
        if !a.starts_with('-') || a == "-" {
            break;
        }
        let chars: Vec<char> = a.chars().skip(1).collect();
        let mut j = 0;
        while j < chars.len() {
            let c = chars[j];
            if WITH_ARG.contains(c) {
                let rest: String = chars[j + 1..].iter().collect();
                let val = if !rest.is_empty() {
                    rest
                } else {
                    i += 1;
                    args.get(i).cloned().ok_or_else(|| {
                        UsageError::Invalid(format!("option requires an argument -- '{c}'"))
                    })?
                };
                match c {
                    'd' => o.devices.push(PathBuf::from(val.trim())),
                    'n' => o.local_name = Some(val.trim().to_string()),
                    '1' => o.timeout_watchdog = Some(parse_num(c, &val)?),
                    '2' => o.timeout_allocate = Some(parse_num(c, &val)?),
                    '3' => o.timeout_loop = Some(parse_num(c, &val)?),
                    '4' => o.timeout_msgwait = Some(parse_num(c, &val)?),
                    'I' => o.io_timeout = Some(parse_num(c, &val)?),
                    'w' => o.watchdog_device = Some(PathBuf::from(val.trim())),
                    // The rest configure sbd's watcher; validate numbers as sbd does, then ignore.
                    'C' | '5' | 't' | 'F' | 'S' | 's' => {
                        parse_num(c, &val)?;
                    }
                    _ => {}
                }
                j = chars.len();
            } else if FLAGS.contains(c) {
                match c {
                    'h' => o.help = true,
                    'v' => o.verbose += 1,
                    _ => {}
                }
                j += 1;
            } else {
                return Err(UsageError::Invalid(format!("invalid option -- '{c}'")));
            }
        }
        i += 1;
    }
    o.command = args.get(i..).unwrap_or_default().to_vec();
    Ok(o)
}

/// Parses a shell-style `KEY=VALUE` file as sbd's systemd unit reads it (comments, quotes).
pub fn parse_config(text: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|x| x.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')))
                .unwrap_or(v);
            m.insert(k.trim().to_string(), v.to_string());
        }
    }
    m
}

/// Splits SBD_DEVICE like sbd's `parse_device_line`: `;`-separated, blanks trimmed.
pub fn parse_device_line(line: &str) -> Vec<PathBuf> {
    line.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect()
}

/// Where settings come from: the process environment first, then the config file.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    vars: BTreeMap<String, String>,
}

impl Settings {
    /// Reads the environment and the first config file that exists.
    pub fn load() -> Self {
        let file = match std::env::var("PALISADE_SBD_CONFIG") {
            Ok(p) if p.is_empty() => None,
            Ok(p) => std::fs::read_to_string(p).ok(),
            Err(_) => CONFIG_FILES
                .iter()
                .find_map(|p| std::fs::read_to_string(p).ok()),
        };
        let mut vars = file.as_deref().map(parse_config).unwrap_or_default();
        for (k, v) in std::env::vars() {
            if k.starts_with("SBD_") {
                vars.insert(k, v);
            }
        }
        Settings { vars }
    }

    /// Settings from explicit pairs (tests).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        Settings {
            vars: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// A variable, blank values treated as unset (sbd's `sanitize_option_value`).
    pub fn get(&self, k: &str) -> Option<&str> {
        self.vars.get(k).map(|v| v.trim()).filter(|v| !v.is_empty())
    }
}

/// Parses a Pacemaker-style duration (`5`, `5s`, `500ms`, `2min`) to whole seconds.
fn parse_seconds(v: &str) -> Option<u32> {
    let v = v.trim();
    let digits: String = v.chars().take_while(|c| c.is_ascii_digit()).collect();
    let n: u64 = digits.parse().ok()?;
    let unit = v.get(digits.len()..).unwrap_or("").trim();
    let secs = match unit {
        "" | "s" | "sec" => n,
        "ms" | "msec" => n / 1000,
        "m" | "min" => n * 60,
        "h" | "hr" => n * 3600,
        _ => return None,
    };
    u32::try_from(secs).ok()
}

fn local_uname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

fn random_uuid() -> std::io::Result<[u8; 16]> {
    use std::io::Read;
    let mut u = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut u)?;
    // RFC 4122 version 4 (random), as libuuid's uuid_generate makes when it has /dev/urandom.
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    Ok(u)
}

/// Runs one invocation; returns the exit status (0 ok, 1 failure, like sbd).
pub fn run(args: &[String], settings: &Settings, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    match run_inner(args, settings, out, err) {
        Ok(code) => code,
        Err(UsageError::Invalid(msg)) => {
            let _ = writeln!(err, "{msg}");
            let _ = writeln!(
                err,
                "Run `palisade-sbd --help` for the options and commands."
            );
            1
        }
    }
}

struct Ctx<'a> {
    o: Options,
    settings: &'a Settings,
    io: Duration,
}

fn run_inner(
    args: &[String],
    settings: &Settings,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<i32, UsageError> {
    let mut o = parse_args(args)?;
    if o.help {
        let _ = out.write_all(USAGE.as_bytes());
        return Ok(0);
    }
    // Command-line devices win over the environment's, as in sbd.
    if o.devices.is_empty() {
        if let Some(line) = settings.get("SBD_DEVICE") {
            o.devices = parse_device_line(line);
            if o.devices.is_empty() {
                return Err(UsageError::Invalid(format!("Invalid device line: {line}")));
            }
        }
    }
    o.devices.dedup();
    if o.devices.len() > MAX_DEVICES {
        return Err(UsageError::Invalid(
            "You can specify up to 3 devices via the -d option.".into(),
        ));
    }
    if o.command.is_empty() {
        return Err(UsageError::Invalid("Not enough arguments.".into()));
    }
    if o.devices.is_empty() {
        return Err(UsageError::Invalid(
            "No SBD device given: pass -d DEV (up to 3) or set SBD_DEVICE.".into(),
        ));
    }
    let io = Duration::from_secs(u64::from(o.io_timeout.unwrap_or(3).max(1)));
    let cmd = o.command.first().cloned().unwrap_or_default();
    let arg1 = o.command.get(1).cloned();
    let arg2 = o.command.get(2).cloned();
    let ctx = Ctx { o, settings, io };
    Ok(match cmd.as_str() {
        "create" => create(&ctx, out, err)?,
        "dump" => dump(&ctx, out, err),
        "list" => list(&ctx, out, err),
        "allocate" => allocate(&ctx, arg1.as_deref(), out, err)?,
        "message" => message(&ctx, arg1.as_deref(), arg2.as_deref(), err)?,
        "create-heartbeat" => create_heartbeat(&ctx, out, err),
        "heartbeats" => heartbeats(&ctx, out, err),
        "watch" | "query-watchdog" | "test-watchdog" => {
            return Err(UsageError::Invalid(format!(
                "`{cmd}` runs in the palisade-sbd binary itself (watchdog::daemon), not through sbd_admin::run"
            )))
        }
        "ping" => {
            return Err(UsageError::Invalid(
                "`ping` is not provided by palisade-sbd; use `message NODE test`".into(),
            ))
        }
        other => return Err(UsageError::Invalid(format!("Unknown command: {other}"))),
    })
}

fn open(ctx: &Ctx<'_>, path: &Path) -> Result<Disk, SbdError> {
    Ok(Disk::open(path, Instant::now() + ctx.io)?)
}

fn explain(err: &mut dyn Write, e: &SbdError) {
    // sbd logs the reason only to syslog; we always say it on stderr (it never contains the
    // words fence_sbd greps for: "NOT dumped").
    let _ = writeln!(err, "palisade-sbd: {e}");
}

fn create(ctx: &Ctx<'_>, out: &mut dyn Write, err: &mut dyn Write) -> Result<i32, UsageError> {
    let o = &ctx.o;
    let env_wd = ctx
        .settings
        .get("SBD_WATCHDOG_TIMEOUT")
        .and_then(parse_seconds);
    // sbd's defaults (sbd-common.c): watchdog 5, allocate 2, loop 1, msgwait 10.
    let watchdog = o.timeout_watchdog.or(env_wd).unwrap_or(5);
    let msgwait = o.timeout_msgwait.unwrap_or(10);
    let allocate = o.timeout_allocate.unwrap_or(2);
    let lp = o.timeout_loop.unwrap_or(1);
    if u64::from(msgwait) < 2 * u64::from(watchdog) && !o.force {
        return Err(UsageError::Invalid(format!(
            "refusing to create: msgwait ({msgwait} s) is less than 2 x the watchdog timeout ({watchdog} s), so a poison pill could be reported delivered before the target's watchdog fires; raise -4 to at least {} or pass --force",
            2 * u64::from(watchdog)
        )));
    }
    for path in &o.devices {
        let _ = writeln!(out, "Initializing device {}", path.display());
        let r = (|| -> Result<(), SbdError> {
            let d = open(ctx, path)?;
            let h = Header {
                slots: format::DEFAULT_SLOTS,
                sector_size: d.sector_size(),
                timeout_watchdog: watchdog,
                timeout_allocate: allocate,
                timeout_loop: lp,
                timeout_msgwait: msgwait,
                minor_version: format::MINOR_VERSION,
                uuid: random_uuid().map_err(|e| {
                    SbdError::Disk(sbd::DiskError::Io {
                        path: path.clone(),
                        what: "reading /dev/urandom for the UUID".into(),
                        reason: e.to_string(),
                    })
                })?,
            };
            let _ = writeln!(
                out,
                "Creating version {}.{} header on device {} (uuid: {})",
                format::VERSION,
                h.minor_version,
                d.fd(),
                format::format_uuid(&h.uuid)
            );
            // Slots first, header last: a crash half-way leaves no valid header rather than a
            // valid header over stale slots (sbd writes the header first).
            let ss = d.sector_size().bytes();
            let n = format::sectors_used(h.slots) - 1;
            let zeros = vec![0u8; ss * n as usize];
            let _ = writeln!(out, "Initializing {} slots on device {}", h.slots, d.fd());
            d.write(1, &zeros, Instant::now() + ctx.io)?;
            let hb = sbd::sector_with(&d, |b| h.encode(b))?;
            d.write(0, &hb, Instant::now() + ctx.io)?;
            // The heartbeat area after the header: a crash before this leaves a valid SBD
            // disk without heartbeats, which the watcher and the witness handle.
            match heartbeat::write_area(&d, &h, ctx.io) {
                Ok(_) => {
                    let _ = writeln!(
                        out,
                        "Initializing the Palisade heartbeat area (sectors {}..{}) on device {}",
                        heartbeat::area_sector(h.slots),
                        heartbeat::sectors_needed(h.slots) - 1,
                        d.fd()
                    );
                }
                Err(e @ heartbeat::AreaError::TooSmall { .. }) => {
                    let _ = writeln!(err, "palisade-sbd: warning: {}: {e}", path.display());
                }
                Err(e) => return Err(area_io(path, e)),
            }
            Ok(())
        })();
        if let Err(e) = r {
            explain(err, &e);
            let _ = writeln!(err, "Failed to init device {}", path.display());
            return Ok(1);
        }
        let _ = writeln!(out, "Device {} is initialized.", path.display());
    }
    let _ = writeln!(out, "Did you check sbd service down on all nodes before? If not do so now and restart afterwards.");
    Ok(0)
}

fn dump(ctx: &Ctx<'_>, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let mut rc = 0;
    for path in &ctx.o.devices {
        let _ = writeln!(out, "==Dumping header on disk {}", path.display());
        let _ = out.flush();
        let r = match open(ctx, path) {
            Err(e) => {
                explain(err, &e);
                let _ = writeln!(err, "== disk {} unreadable!", path.display());
                Err(())
            }
            Ok(d) => match sbd::read_header(&d, ctx.io) {
                Ok(h) => {
                    print_header(out, &h);
                    Ok(())
                }
                Err(e) => {
                    explain(err, &e);
                    Err(())
                }
            },
        };
        match r {
            Ok(()) => {
                let _ = writeln!(out, "==Header on disk {} is dumped", path.display());
            }
            Err(()) => {
                rc = 1;
                let _ = writeln!(err, "==Header on disk {} NOT dumped", path.display());
            }
        }
    }
    rc
}

/// Prints a header exactly as sbd's `header_dump` does (fence_sbd parses the msgwait line).
pub fn print_header(out: &mut dyn Write, h: &Header) {
    let _ = writeln!(
        out,
        "Header version     : {}.{}",
        format::VERSION,
        h.minor_version
    );
    if let Some(u) = h.uuid_string() {
        let _ = writeln!(out, "UUID               : {u}");
    }
    let _ = writeln!(out, "Number of slots    : {}", h.slots);
    let _ = writeln!(out, "Sector size        : {}", h.sector_size.bytes());
    let _ = writeln!(out, "Timeout (watchdog) : {}", h.timeout_watchdog);
    let _ = writeln!(out, "Timeout (allocate) : {}", h.timeout_allocate);
    let _ = writeln!(out, "Timeout (loop)     : {}", h.timeout_loop);
    let _ = writeln!(out, "Timeout (msgwait)  : {}", h.timeout_msgwait);
}

fn list(ctx: &Ctx<'_>, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let mut rc = 0;
    for path in &ctx.o.devices {
        let d = match open(ctx, path) {
            Ok(d) => d,
            Err(e) => {
                explain(err, &e);
                rc = 1;
                let _ = writeln!(err, "== disk {} unreadable!", path.display());
                continue;
            }
        };
        let r = sbd::read_header(&d, ctx.io).and_then(|h| sbd::read_slots(&d, &h, ctx.io));
        match r {
            Ok(slots) => {
                for s in slots.iter().filter(|s| s.node.is_allocated()) {
                    let _ = writeln!(
                        out,
                        "{}\t{}\t{}\t{}",
                        s.slot,
                        format::display_name(&s.node.name),
                        s.mailbox.cmd,
                        format::display_name(&s.mailbox.from)
                    );
                }
            }
            Err(e) => {
                explain(err, &e);
                rc = 1;
                let _ = writeln!(err, "== Slots on disk {} NOT dumped", path.display());
            }
        }
    }
    rc
}

fn allocate(
    ctx: &Ctx<'_>,
    name: Option<&str>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<i32, UsageError> {
    let name =
        name.ok_or_else(|| UsageError::Invalid("slot_allocate(): No name specified.".into()))?;
    let node = format::node_name(name).ok_or_else(|| {
        UsageError::Invalid(format!(
            "Node name `{name}` is not usable: it must be 1 to {} bytes",
            format::NAME_MAX
        ))
    })?;
    for path in &ctx.o.devices {
        let _ = writeln!(
            out,
            "Trying to allocate slot for {name} on device {}.",
            path.display()
        );
        let r = (|| -> Result<(), SbdError> {
            let d = open(ctx, path)?;
            let h = sbd::read_header(&d, ctx.io)?;
            // sbd's slot_allocate: claim the first free slot, wait the allocate timeout, and
            // look again, so that of two nodes racing for one slot the last writer keeps it
            // and the other moves on.
            loop {
                let slots = sbd::read_slots(&d, &h, ctx.io)?;
                if slots
                    .iter()
                    .any(|s| s.node.is_allocated() && format::same_node(&s.node.name, &node))
                {
                    return Ok(());
                }
                let free = slots
                    .iter()
                    .find(|s| !s.node.is_allocated())
                    .ok_or_else(|| SbdError::NoFreeSlot {
                        path: path.clone(),
                        name: name.into(),
                        slots: h.slots,
                    })?;
                let _ = writeln!(out, "slot {} is unused - trying to own", free.slot);
                let _ = out.flush();
                let e = NodeEntry::allocated(node.clone());
                let bytes = sbd::sector_with(&d, |b| e.encode(b))?;
                d.write(
                    format::node_sector(free.slot),
                    &bytes,
                    Instant::now() + ctx.io,
                )?;
                std::thread::sleep(Duration::from_secs(u64::from(h.timeout_allocate)));
            }
        })();
        if let Err(e) = r {
            explain(err, &e);
            if matches!(e, SbdError::NoFreeSlot { .. }) {
                let _ = writeln!(err, "No more free slots.");
            }
            return Ok(1);
        }
        let _ = writeln!(
            out,
            "Slot for {name} has been allocated on {}.",
            path.display()
        );
    }
    Ok(0)
}

fn message(
    ctx: &Ctx<'_>,
    name: Option<&str>,
    cmd: Option<&str>,
    err: &mut dyn Write,
) -> Result<i32, UsageError> {
    let (Some(name), Some(cmd)) = (name, cmd) else {
        return Err(UsageError::Invalid(
            "slot_msg(): No recipient / cmd specified.".into(),
        ));
    };
    let msg = Message::parse(cmd).ok_or_else(|| {
        UsageError::Invalid(format!(
            "slot_msg(): Invalid command {cmd}; use test, reset, off, crashdump, clear or exit"
        ))
    })?;
    let local = ctx.o.local_name.clone().unwrap_or_else(local_uname);
    // sbd sends to the local node when the recipient is LOCAL.
    let target = if name == "LOCAL" {
        local.as_str()
    } else {
        name
    };
    let disks: Vec<DiskConfig> = ctx
        .o
        .devices
        .iter()
        .map(|p| DiskConfig {
            path: p.clone(),
            uuid: None,
        })
        .collect();
    let delivered = match open_and_deliver(&disks, target, msg, &local, ctx.io) {
        Ok(ok) => Ok(ok),
        Err(sbd::DeliveryError::NoMajority {
            written,
            total,
            needed,
            failed,
        }) => {
            for e in &failed {
                explain(err, e);
            }
            Err(format!(
                "message written and read back on {written} of {total} SBD disks, a majority needs {needed}; not delivered"
            ))
        }
        Err(e) => Err(e.to_string()),
    };
    match delivered {
        Ok(ok) => {
            for e in &ok.failed {
                explain(err, e);
            }
            if ctx.o.verbose > 0 {
                for w in &ok.written {
                    let _ = writeln!(
                        err,
                        "palisade-sbd: {cmd} written to slot {} of {} on {}",
                        w.slot,
                        target,
                        w.path.display()
                    );
                }
            }
            // sbd's slot_msg sleeps msgwait after writing (not for exit) and only then reports
            // success; fence_sbd relies on that to call the target off.
            // We count msgwait from when a majority held the pill, so a disk that timed out
            // meanwhile does not add its timeout on top.
            if msg != Message::Exit {
                std::thread::sleep(ok.remaining_wait());
            }
            Ok(0)
        }
        Err(e) => {
            let _ = writeln!(err, "palisade-sbd: {e}");
            Ok(1)
        }
    }
}

/// An area write's failure as the disk error it is (a disk too small for the area is
/// handled before this; an encode failure cannot happen with a whole sector).
fn area_io(path: &Path, e: heartbeat::AreaError) -> SbdError {
    match e {
        heartbeat::AreaError::Disk(d) => SbdError::Disk(d),
        other => SbdError::Disk(sbd::DiskError::Io {
            path: path.into(),
            what: "writing the heartbeat area".into(),
            reason: other.to_string(),
        }),
    }
}

/// `create-heartbeat`: writes a fresh heartbeat area (zeroed records, then the area header)
/// on disks that already hold a valid SBD header. Only sectors after sbd's are written.
fn create_heartbeat(ctx: &Ctx<'_>, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    for path in &ctx.o.devices {
        let r = open(ctx, path)
            .and_then(|d| Ok((sbd::read_header(&d, ctx.io)?, d)))
            .map_err(|e| e.to_string())
            .and_then(|(h, d)| {
                heartbeat::write_area(&d, &h, ctx.io)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                Ok(h)
            });
        match r {
            Ok(h) => {
                let _ = writeln!(
                    out,
                    "Heartbeat area for {} slots written on {} (sectors {}..{}); restart the watchers to start writing",
                    h.slots,
                    path.display(),
                    heartbeat::area_sector(h.slots),
                    heartbeat::sectors_needed(h.slots) - 1
                );
            }
            Err(e) => {
                let _ = writeln!(err, "palisade-sbd: {e}");
                let _ = writeln!(err, "Failed to add a heartbeat area to {}", path.display());
                return 1;
            }
        }
    }
    0
}

/// `heartbeats`: every allocated slot's heartbeat record, one line each:
/// `slot<TAB>node<TAB>counter<TAB>written (ms since the epoch)<TAB>boot id`, or `-` and the
/// reason where a slot has no valid record.
fn heartbeats(ctx: &Ctx<'_>, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let mut rc = 0;
    for path in &ctx.o.devices {
        let r = open(ctx, path).and_then(|d| {
            let h = sbd::read_header(&d, ctx.io)?;
            let slots = sbd::read_slots(&d, &h, ctx.io)?;
            Ok((d, h, slots))
        });
        let (d, h, slots) = match r {
            Ok(v) => v,
            Err(e) => {
                explain(err, &e);
                rc = 1;
                continue;
            }
        };
        let area = match heartbeat::read_area(&d, &h, Instant::now() + ctx.io) {
            Ok(a) => a,
            Err(e) => {
                let _ = writeln!(err, "palisade-sbd: {}: {e}", path.display());
                rc = 1;
                continue;
            }
        };
        for s in slots.iter().filter(|s| s.node.is_allocated()) {
            let name = format::display_name(&s.node.name);
            match heartbeat::read_record(&d, &area, s.slot, Instant::now() + ctx.io) {
                Ok(Ok(r)) if format::same_node(&r.name, &s.node.name) => {
                    let _ = writeln!(
                        out,
                        "{}\t{name}\t{}\t{}\t{}",
                        s.slot,
                        r.counter,
                        r.written_ms,
                        format::format_uuid(&r.boot_id)
                    );
                }
                Ok(Ok(r)) => {
                    let _ = writeln!(
                        out,
                        "{}\t{name}\t-\trecord names {}",
                        s.slot,
                        format::display_name(&r.name)
                    );
                }
                Ok(Err(e)) => {
                    let _ = writeln!(out, "{}\t{name}\t-\t{e}", s.slot);
                }
                Err(e) => {
                    explain(err, &SbdError::Disk(e));
                    rc = 1;
                    break;
                }
            }
        }
    }
    rc
}

/// Reads a slot's mailbox on one disk (tests and the watcher).
pub fn read_mailbox(dev: &dyn BlockDevice, slot: u8, io: Duration) -> Result<Mailbox, SbdError> {
    let s = format::mailbox_sector(slot);
    let b = dev.read(s, 1, Instant::now() + io)?;
    Mailbox::decode(&b).map_err(|source| SbdError::Format {
        path: dev.path().into(),
        sector: s,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_like_getopt() {
        let o = parse_args(&args("-d /dev/a -d/dev/b -ZZ -4 20 -n me message n1 off")).unwrap();
        assert_eq!(
            o.devices,
            vec![PathBuf::from("/dev/a"), PathBuf::from("/dev/b")]
        );
        assert_eq!(o.timeout_msgwait, Some(20));
        assert_eq!(o.local_name.as_deref(), Some("me"));
        assert_eq!(o.command, args("message n1 off"));
        assert!(parse_args(&args("-4 x create")).is_err());
        assert!(parse_args(&args("-q create")).is_err());
        assert!(parse_args(&args("-d")).is_err());
    }

    #[test]
    fn fence_sbd_list_with_trailing_none_is_accepted() {
        // fence_sbd runs "sbd -d DEV list None" (its arguments default to None).
        let o = parse_args(&args("-d /dev/x list None")).unwrap();
        assert_eq!(o.command[0], "list");
    }

    #[test]
    fn device_line_and_config_file() {
        assert_eq!(
            parse_device_line(" /dev/a ; /dev/b;;"),
            vec![PathBuf::from("/dev/a"), PathBuf::from("/dev/b")]
        );
        let m = parse_config("# c\nSBD_DEVICE=\"/dev/a;/dev/b\"\nexport SBD_OPTS=\nX='y'\n");
        assert_eq!(m["SBD_DEVICE"], "/dev/a;/dev/b");
        assert_eq!(m["X"], "y");
        assert_eq!(parse_seconds("5"), Some(5));
        assert_eq!(parse_seconds("2min"), Some(120));
        assert_eq!(parse_seconds("x"), None);
    }

    #[test]
    fn create_refuses_short_msgwait_without_force() {
        let s = Settings::from_pairs(&[]);
        let mut out = Vec::new();
        let mut err = Vec::new();
        let rc = run(
            &args("-d /dev/null -1 10 -4 15 create"),
            &s,
            &mut out,
            &mut err,
        );
        assert_eq!(rc, 1);
        let e = String::from_utf8_lossy(&err);
        assert!(e.contains("at least 20 or pass --force"), "{e}");
        assert!(out.is_empty(), "nothing touched");
    }

    #[test]
    fn usage_errors_say_what_to_do() {
        let s = Settings::from_pairs(&[]);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(run(&args("list"), &s, &mut out, &mut err), 1);
        assert!(String::from_utf8_lossy(&err).contains("SBD_DEVICE"));
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(
            run(&args("-d a -d b -d c -d d list"), &s, &mut out, &mut err),
            1
        );
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(run(&args("--help"), &s, &mut out, &mut err), 0);
        assert!(String::from_utf8_lossy(&out).contains("Safer than sbd"));
    }

    #[test]
    fn sbd_device_from_settings_when_no_d() {
        let s = Settings::from_pairs(&[("SBD_DEVICE", "/nonexistent/a;/nonexistent/b")]);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(run(&args("dump"), &s, &mut out, &mut err), 1);
        let o = String::from_utf8_lossy(&out);
        assert!(o.contains("==Dumping header on disk /nonexistent/b"), "{o}");
        let e = String::from_utf8_lossy(&err);
        assert!(
            e.contains("==Header on disk /nonexistent/a NOT dumped"),
            "{e}"
        );
    }
}
