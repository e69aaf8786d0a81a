//! Native async IPMI v2.0 LAN (RMCP+) client: the BMC fencing path.
//!
//! One file per protocol layer, outermost first:
//! - [`rmcp`]: the 4-byte RMCP header (and the ASF presence ping) that wraps every datagram.
//! - [`session`]: IPMI 1.5 and IPMI 2.0/RMCP+ session headers, the integrity trailer and
//!   payload types; encodes and decodes whole datagrams for either role (console or BMC).
//! - [`crypto`]: cipher suites, the RAKP HMACs, SIK/K1/K2 derivation, integrity codes and
//!   AES-CBC-128 with the IPMI pad format ([`crypto::SessionKeys`]).
//! - [`message`]: IPMI message framing (addresses, netFn, checksums, rqSeq) and the request and
//!   response bodies of every command the fencing path uses, both directions.
//! - [`client`]: an async RMCP+ session over one tokio `UdpSocket`.
//! - [`device`]: [`IpmiDevice`], the [`crate::PowerDevice`] for a BMC, and its [`IpmiConfig`].
//!
//! Everything below [`client`] is pure functions over byte slices: no I/O, no panics on any
//! input, and both directions of every format, so the BMC simulator in `hw-tests` can decode
//! requests and encode responses (it computes RAKP 2 and RAKP 4 with the same
//! [`crypto::RakpInputs`] the console uses). Wire formats are also checked against real third
//! party peers (ipmitool captures in unit tests, OpenIPMI `ipmi_sim` in `hw-tests`), so the
//! simulator and the driver cannot agree on a shared mistake unnoticed.
//!
//! # Using the codec in the BMC role (the simulator)
//! 1. [`session::decode_header`] on each datagram: session id 0 means session setup or a
//!    pre-session command; otherwise look the session (and its [`SessionKeys`]) up by id.
//! 2. [`session::decode_packet`] with those keys: verifies the AuthCode, then decrypts.
//! 3. Setup payloads: [`message::OpenSessionRequest`], [`message::Rakp1`], [`message::Rakp3`]
//!    decode; answer with [`message::OpenSessionResponse`], [`message::Rakp2`] (code from
//!    [`crypto::rakp2_auth_code`]) and [`message::Rakp4`] (value from
//!    [`crypto::rakp4_integrity_check`] keyed with [`SessionKeys::derive`]'s SIK), after
//!    checking RAKP 3 against [`crypto::rakp3_auth_code`] — the same [`RakpInputs`] the
//!    console fills in.
//! 4. IPMI messages: [`message::IpmiRequest::decode`], the command's [`message::Body`]
//!    `decode`, then [`message::IpmiRequest::response`] with a completion code and the
//!    response body's `encode`, wrapped by [`session::encode_packet`] with the console's
//!    session id and a fresh random IV.
//!
//! `drivers/tests/ipmi_client_fake_bmc.rs` is a working example of exactly that.
//!
//! Why not the `ipmi-rs` crate: it was evaluated and rejected for the fencing path because it
//! has no Set Session Privilege Level (so a session stays at USER and cannot power off), no
//! cipher suite 17, `unwrap`s on received data (a garbage reply panics the daemon) and no
//! session sequence or rqSeq checks (a late reply can be taken for a new request).
//!
//! References are to the IPMI v2.0 rev 1.1 specification ("§13.x" = chapter 13, "IPMI LAN
//! interface").

pub mod client;
pub mod crypto;
pub mod device;
pub mod fuzzing;
pub mod message;
pub mod rmcp;
pub mod session;

pub use client::{ClientConfig, Session};
pub use crypto::{CipherSuite, RakpInputs, SessionKeys};
pub use device::{CipherSuiteChoice, IpmiConfig, IpmiDevice, Privilege};

/// Why bytes could not be decoded (or a value could not be encoded) at some protocol layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The input ended before a field the format requires.
    #[error("{what}: needs {needed} bytes, got {got}")]
    Truncated {
        /// The structure or field being read.
        what: &'static str,
        /// How many bytes were needed.
        needed: usize,
        /// How many bytes were there.
        got: usize,
    },
    /// A field holds a value the format does not allow.
    #[error("{what}: unexpected value {value:#04x}")]
    BadValue {
        /// The field.
        what: &'static str,
        /// The value found (widened).
        value: u32,
    },
    /// A checksum or length field disagrees with the data.
    #[error("{what} mismatch")]
    Mismatch {
        /// The check that failed.
        what: &'static str,
    },
    /// A value is too large for its field when encoding.
    #[error("{what} too long: {len} bytes, at most {max}")]
    TooLong {
        /// The field.
        what: &'static str,
        /// The length given.
        len: usize,
        /// The largest length the format allows.
        max: usize,
    },
    /// The integrity AuthCode does not match (forged, corrupted, or wrong keys).
    #[error("integrity check (AuthCode) failed")]
    Integrity,
    /// The payload could not be decrypted (bad length or pad).
    #[error("confidentiality: {0}")]
    Decrypt(&'static str),
}

/// Reads `N` bytes at `at` from `buf`, or says which structure was truncated.
pub(crate) fn take<const N: usize>(
    buf: &[u8],
    at: usize,
    what: &'static str,
) -> Result<[u8; N], WireError> {
    at.checked_add(N)
        .and_then(|end| buf.get(at..end))
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .ok_or(WireError::Truncated {
            what,
            needed: at.saturating_add(N),
            got: buf.len(),
        })
}

/// Reads one byte at `at`, or says which structure was truncated.
pub(crate) fn byte(buf: &[u8], at: usize, what: &'static str) -> Result<u8, WireError> {
    buf.get(at).copied().ok_or(WireError::Truncated {
        what,
        needed: at.saturating_add(1),
        got: buf.len(),
    })
}

/// Reads a little-endian u32 at `at` (IPMI multi-byte fields are LS-byte first, §13.5).
pub(crate) fn le32(buf: &[u8], at: usize, what: &'static str) -> Result<u32, WireError> {
    take::<4>(buf, at, what).map(u32::from_le_bytes)
}
