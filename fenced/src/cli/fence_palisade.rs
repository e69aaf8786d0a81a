//! `fence_palisade`'s options, actions and usage text: the tables its hand-rolled parser, its
//! metadata and its `--help` use, in the library so that the packaging's generator
//! (`packaging/src/bin/palisade-docs.rs`) renders the man page and completions from them too.

/// The metadata's one-line description (no XML special characters).
pub const SHORTDESC: &str = "Fence agent for the Palisade fencer daemon";

/// The metadata's long description (no XML special characters), also the man page's.
pub const LONGDESC: &str = "fence_palisade forwards fencing requests to Palisade's fencer daemon (fenced) over its Unix socket or HTTPS API with a token, and waits for the outcome. It reports success only when fenced confirmed the action: the power state was read back as off (or on), an SBD poison pill was written and msgwait elapsed, or an operator confirmed it by hand. A timeout, a device error or a device that acknowledged off but stayed on is reported as a failure.";

/// Options that take a value: name (as on stdin; `--name-with-dashes` as a flag), short flag,
/// metadata content type, description.
pub const VALUE_OPTIONS: &[(&str, Option<char>, &str, &str)] = &[
    ("action", Some('o'), "string", "Fencing action (off, on, reboot, status, list, list-status, monitor, metadata, validate-all)"),
    ("plug", Some('n'), "string", "The target to fence, as named in fenced's configuration"),
    ("socket", None, "string", "fenced's Unix socket (default /run/palisade/fenced.sock)"),
    ("url", None, "string", "fenced's TCP listener instead of the socket: https://HOST:PORT, or http://127.0.0.1:PORT on loopback"),
    ("ca_file", None, "string", "PEM file of the CA that signed fenced's certificate (https URLs)"),
    ("token_file", None, "string", "File (mode 0600) holding a bearer token from `fenced token create` (role fence)"),
    ("fence_timeout", None, "second", "Deadline of one fencing operation in fenced, seconds (default: the target's total_timeout_s)"),
    ("api_timeout", None, "second", "Deadline of one API request, seconds"),
];

/// The actions, in the order the metadata lists them.
pub const ACTIONS: &[&str] = &[
    "on",
    "off",
    "reboot",
    "status",
    "list",
    "list-status",
    "monitor",
    "metadata",
    "validate-all",
];

/// The usage text `--help` prints.
pub const USAGE: &str = "\
Usage: fence_palisade [--action=ACTION] [--plug=TARGET] [--socket=PATH | --url=URL [--ca-file=FILE]]
                      [--token-file=FILE] [--fence-timeout=S] [--api-timeout=S]
   or: options as name=value lines on stdin (how Pacemaker runs fence agents)

Actions: off, on, reboot (default), status, list, list-status, monitor, metadata, validate-all
Exit status: 0 success (for off/reboot: fenced CONFIRMED the target is off; for status: on),
             2 status: off, 1 anything else (failure, refusal, unreachable daemon, bad options)";
