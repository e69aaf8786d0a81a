//! The SBD on-disk format, version 2 (ClusterLabs sbd `src/sbd.h`, `src/sbd-md.c`), as pure
//! encode/decode functions over one sector. No I/O here.
//!
//! Layout, verified byte for byte against a disk made by Debian's `sbd` 1.5.2 `create`:
//!
//! | sector | content |
//! |---|---|
//! | 0 | header |
//! | `1 + 2*slot` | node entry of `slot` (0..255) |
//! | `2 + 2*slot` | mailbox of `slot` |
//!
//! Header (sbd writes its C struct unpacked, so there are two padding bytes at 10..12; integers
//! are big-endian because sbd passes them through `htonl`):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `SBD_SBD_` |
//! | 8 | 1 | version, 2 |
//! | 9 | 1 | number of slots (sbd always writes 255) |
//! | 10 | 2 | padding (zero) |
//! | 12 | 4 | sector size |
//! | 16 | 4 | watchdog timeout, seconds |
//! | 20 | 4 | allocate timeout |
//! | 24 | 4 | loop timeout |
//! | 28 | 4 | msgwait timeout |
//! | 32 | 1 | minor version (1 since sbd 1.2: the UUID is valid) |
//! | 33 | 16 | UUID |
//!
//! Node entry: byte 0 `in_use` (non-zero = allocated), bytes 1..65 the NUL-padded name
//! (`char name[64]`, at most 63 bytes plus NUL). Mailbox: byte 0 the command (a signed char),
//! bytes 1..65 the sender's name.
//! The rest of every sector is zero when sbd writes it; decoding ignores it.

use core::fmt;
use heapless::Vec as HVec;

/// `SBD_SBD_`, the first eight bytes of a formatted disk.
pub const MAGIC: [u8; 8] = *b"SBD_SBD_";
/// The only major version sbd reads (`sbd_version` in sbd-md.c).
pub const VERSION: u8 = 2;
/// The minor version sbd writes today: 1 means the UUID field is set.
pub const MINOR_VERSION: u8 = 1;
/// Slots sbd creates (it never writes any other number).
pub const DEFAULT_SLOTS: u8 = 255;
/// Longest node name the format holds (`SECTOR_NAME_MAX`).
pub const NAME_MAX: usize = 63;
/// Bytes of a sector the format uses (a tag byte and a 64-byte name field); the rest is zero.
pub const USED_BYTES: usize = 65;

/// A node name as stored in a slot or a mailbox's sender: 0 to 63 bytes, no NUL.
pub type NodeName = HVec<u8, NAME_MAX>;

/// A logical sector size sbd supports (the device's `BLKSSZGET`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SectorSize {
    /// 512-byte sectors.
    S512,
    /// 4096-byte sectors (4Kn disks, `losetup --sector-size 4096`).
    S4096,
}

impl SectorSize {
    /// The size in bytes.
    pub const fn bytes(self) -> usize {
        match self {
            SectorSize::S512 => 512,
            SectorSize::S4096 => 4096,
        }
    }

    /// Maps a byte count to a supported size.
    pub fn from_bytes(n: u64) -> Option<Self> {
        match n {
            512 => Some(SectorSize::S512),
            4096 => Some(SectorSize::S4096),
            _ => None,
        }
    }
}

/// The sector holding slot `slot`'s node entry (`SLOT_TO_SECTOR` in sbd-md.c).
pub const fn node_sector(slot: u8) -> u64 {
    1 + 2 * slot as u64
}

/// The sector holding slot `slot`'s mailbox (`MBOX_TO_SECTOR` in sbd-md.c).
pub const fn mailbox_sector(slot: u8) -> u64 {
    2 + 2 * slot as u64
}

/// Sectors a disk with `slots` slots uses (header, then a node entry and a mailbox per slot).
pub const fn sectors_used(slots: u8) -> u64 {
    1 + 2 * slots as u64
}

/// Why a sector does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The buffer is shorter than the 65 bytes every SBD sector uses.
    #[error("sector buffer has {len} bytes, SBD needs at least 65; read a whole sector")]
    Short {
        /// Bytes given.
        len: usize,
    },
    /// The header does not start with `SBD_SBD_`.
    #[error("no SBD header (magic is not SBD_SBD_); initialise the disk with `create`, or check that this is the right device")]
    BadMagic,
    /// The header's major version is not 2.
    #[error("SBD header version {found} is not supported (only version 2 is); the disk was made by an incompatible tool")]
    BadVersion {
        /// The version found.
        found: u8,
    },
    /// The header's sector size is neither 512 nor 4096.
    #[error(
        "SBD header says sector size {found}, which is neither 512 nor 4096; the header is damaged"
    )]
    BadSectorSize {
        /// The size found.
        found: u32,
    },
    /// A name field has bytes after its NUL terminator or no terminator at all.
    #[error(
        "a node name on disk is not NUL-terminated within its 64-byte field; the sector is damaged"
    )]
    BadName,
}

/// The SBD disk header (sector 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// Number of slots (255 as sbd writes it).
    pub slots: u8,
    /// The sector size the disk was created with.
    pub sector_size: SectorSize,
    /// Seconds without a good disk read after which a node self-fences.
    pub timeout_watchdog: u32,
    /// Seconds `allocate` waits before re-checking its claim.
    pub timeout_allocate: u32,
    /// Seconds between a watcher's reads of its mailbox.
    pub timeout_loop: u32,
    /// Seconds after which a written poison pill has been obeyed (the watcher's watchdog fired).
    pub timeout_msgwait: u32,
    /// Minor version; 0 means the UUID field is not meaningful.
    pub minor_version: u8,
    /// The disk's identity, generated at `create`.
    pub uuid: [u8; 16],
}

impl Header {
    /// Encodes the header into `out` (at least 65 bytes); bytes past 49 are zeroed.
    pub fn encode(&self, out: &mut [u8]) -> Result<(), FormatError> {
        let used = prefix_mut(out)?;
        used.fill(0);
        used[0..8].copy_from_slice(&MAGIC);
        used[8] = VERSION;
        used[9] = self.slots;
        used[12..16].copy_from_slice(&(self.sector_size.bytes() as u32).to_be_bytes());
        used[16..20].copy_from_slice(&self.timeout_watchdog.to_be_bytes());
        used[20..24].copy_from_slice(&self.timeout_allocate.to_be_bytes());
        used[24..28].copy_from_slice(&self.timeout_loop.to_be_bytes());
        used[28..32].copy_from_slice(&self.timeout_msgwait.to_be_bytes());
        used[32] = self.minor_version;
        used[33..49].copy_from_slice(&self.uuid);
        zero_tail(out);
        Ok(())
    }

    /// Decodes sector 0. Checks magic, version and sector size as sbd's `valid_header` does.
    pub fn decode(sector: &[u8]) -> Result<Self, FormatError> {
        let s = prefix(sector)?;
        if s[0..8] != MAGIC {
            return Err(FormatError::BadMagic);
        }
        if s[8] != VERSION {
            return Err(FormatError::BadVersion { found: s[8] });
        }
        let size = be32(s, 12);
        let sector_size = SectorSize::from_bytes(u64::from(size))
            .ok_or(FormatError::BadSectorSize { found: size })?;
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&s[33..49]);
        Ok(Header {
            slots: s[9],
            sector_size,
            timeout_watchdog: be32(s, 16),
            timeout_allocate: be32(s, 20),
            timeout_loop: be32(s, 24),
            timeout_msgwait: be32(s, 28),
            minor_version: s[32],
            uuid,
        })
    }

    /// A header with `sbd create`'s defaults (255 slots, 512-byte sectors, watchdog 5 s,
    /// allocate 2 s, loop 1 s, msgwait 10 s) and the given UUID, for tests across the crate.
    #[cfg(test)]
    pub(crate) fn for_tests(uuid: [u8; 16]) -> Header {
        Header {
            slots: 255,
            sector_size: SectorSize::S512,
            timeout_watchdog: 5,
            timeout_allocate: 2,
            timeout_loop: 1,
            timeout_msgwait: 10,
            minor_version: 1,
            uuid,
        }
    }

    /// The UUID as sbd prints it (`uuid_unparse_lower`), or `None` for a minor-version-0 disk.
    pub fn uuid_string(&self) -> Option<String> {
        (self.minor_version > 0).then(|| format_uuid(&self.uuid))
    }
}

/// Formats 16 bytes as a lower-case hyphenated UUID.
pub fn format_uuid(u: &[u8; 16]) -> String {
    let mut s = String::with_capacity(36);
    for (i, b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Parses a hyphenated (or plain) 32-hex-digit UUID.
pub fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hexits: Vec<u8> = s.bytes().filter(|b| *b != b'-').collect();
    if hexits.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hexits.chunks(2).enumerate() {
        let txt = core::str::from_utf8(pair).ok()?;
        *out.get_mut(i)? = u8::from_str_radix(txt, 16).ok()?;
    }
    Some(out)
}

/// A slot's node entry: whether it is allocated, and to which node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct NodeEntry {
    /// The raw `in_use` byte; non-zero means allocated (sbd's `slot_lookup` tests `!= 0`).
    pub in_use: u8,
    /// The node's name.
    pub name: NodeName,
}

impl NodeEntry {
    /// An allocated entry for `name`.
    pub fn allocated(name: NodeName) -> Self {
        NodeEntry { in_use: 1, name }
    }

    /// Whether a node owns this slot.
    pub fn is_allocated(&self) -> bool {
        self.in_use != 0
    }

    /// Encodes into `out` (at least 65 bytes; the rest is zeroed).
    pub fn encode(&self, out: &mut [u8]) -> Result<(), FormatError> {
        encode_tagged(self.in_use, &self.name, out)
    }

    /// Decodes a node-entry sector.
    pub fn decode(sector: &[u8]) -> Result<Self, FormatError> {
        let (in_use, name) = decode_tagged(sector)?;
        Ok(NodeEntry { in_use, name })
    }
}

/// A command in a mailbox (`SBD_MSG_*` in sbd-md.c).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Message {
    /// 0: empty mailbox.
    Clear,
    /// 1: the watcher acknowledges by clearing the mailbox.
    Test,
    /// 2: poison pill, reboot.
    Reset,
    /// 3: poison pill, power off.
    Off,
    /// 4: the watcher exits cleanly.
    Exit,
    /// 5: poison pill, crash dump.
    Crashdump,
    /// Any other byte; sbd's `list` prints it as `undefined`.
    Other(i8),
}

impl Message {
    /// The byte on disk.
    pub fn to_byte(self) -> u8 {
        match self {
            Message::Clear => 0,
            Message::Test => 1,
            Message::Reset => 2,
            Message::Off => 3,
            Message::Exit => 4,
            Message::Crashdump => 5,
            Message::Other(b) => b as u8,
        }
    }

    /// The message a byte on disk means.
    pub fn from_byte(b: u8) -> Self {
        match b {
            0 => Message::Clear,
            1 => Message::Test,
            2 => Message::Reset,
            3 => Message::Off,
            4 => Message::Exit,
            5 => Message::Crashdump,
            other => Message::Other(other as i8),
        }
    }

    /// The command-line word (`cmd2char` in sbd-md.c); `None` for unknown words.
    pub fn parse(word: &str) -> Option<Self> {
        Some(match word {
            "clear" => Message::Clear,
            "test" => Message::Test,
            "reset" => Message::Reset,
            "off" => Message::Off,
            "exit" => Message::Exit,
            "crashdump" => Message::Crashdump,
            _ => return None,
        })
    }

    /// Whether a watcher that reads this takes its node down.
    pub fn is_poison_pill(self) -> bool {
        matches!(self, Message::Reset | Message::Off | Message::Crashdump)
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The words of sbd's `char2cmd`, which `list` prints and fence_sbd parses.
        f.write_str(match self {
            Message::Clear => "clear",
            Message::Test => "test",
            Message::Reset => "reset",
            Message::Off => "off",
            Message::Exit => "exit",
            Message::Crashdump => "crashdump",
            Message::Other(_) => "undefined",
        })
    }
}

/// A slot's mailbox: the last command written to it and who wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mailbox {
    /// The command.
    pub cmd: Message,
    /// The sender's node name.
    pub from: NodeName,
}

impl Default for Mailbox {
    fn default() -> Self {
        Mailbox {
            cmd: Message::Clear,
            from: NodeName::new(),
        }
    }
}

impl Mailbox {
    /// Encodes into `out` (at least 65 bytes; the rest is zeroed).
    pub fn encode(&self, out: &mut [u8]) -> Result<(), FormatError> {
        encode_tagged(self.cmd.to_byte(), &self.from, out)
    }

    /// Decodes a mailbox sector.
    pub fn decode(sector: &[u8]) -> Result<Self, FormatError> {
        let (cmd, from) = decode_tagged(sector)?;
        Ok(Mailbox {
            cmd: Message::from_byte(cmd),
            from,
        })
    }
}

/// Makes a [`NodeName`] from a string: `None` if it is empty, longer than 63 bytes or has a NUL.
pub fn node_name(s: &str) -> Option<NodeName> {
    if s.is_empty() || s.as_bytes().contains(&0) {
        return None;
    }
    NodeName::from_slice(s.as_bytes()).ok()
}

/// Whether two names are the same node, as sbd's `slot_lookup` decides (`strncasecmp`, ASCII).
pub fn same_node(a: &[u8], b: &[u8]) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Displays a name the way sbd's `printf("%s")` would (bytes as they are, lossily for non-UTF-8).
pub fn display_name(n: &[u8]) -> String {
    String::from_utf8_lossy(n).into_owned()
}

fn encode_tagged(tag: u8, name: &[u8], out: &mut [u8]) -> Result<(), FormatError> {
    let used = prefix_mut(out)?;
    used.fill(0);
    used[0] = tag;
    let n = name.len().min(NAME_MAX);
    used[1..1 + n].copy_from_slice(&name[..n]);
    zero_tail(out);
    Ok(())
}

fn decode_tagged(sector: &[u8]) -> Result<(u8, NodeName), FormatError> {
    let s = prefix(sector)?;
    let field = &s[1..USED_BYTES];
    // sbd reads names with C string functions: everything up to the first NUL. A 63-byte name
    // is still terminated by the 64th byte of the field (sbd strncpy's at most 63 bytes into a
    // zeroed sector). We accept bytes after the NUL (sbd ignores them too) but refuse a field
    // with no NUL at all, which sbd would read past.
    let end = field
        .iter()
        .position(|b| *b == 0)
        .ok_or(FormatError::BadName)?;
    let name = NodeName::from_slice(&field[..end]).map_err(|_| FormatError::BadName)?;
    Ok((s[0], name))
}

fn prefix(sector: &[u8]) -> Result<&[u8; USED_BYTES], FormatError> {
    sector
        .get(..USED_BYTES)
        .and_then(|s| <&[u8; USED_BYTES]>::try_from(s).ok())
        .ok_or(FormatError::Short { len: sector.len() })
}

fn prefix_mut(out: &mut [u8]) -> Result<&mut [u8; USED_BYTES], FormatError> {
    let len = out.len();
    out.get_mut(..USED_BYTES)
        .and_then(|s| <&mut [u8; USED_BYTES]>::try_from(s).ok())
        .ok_or(FormatError::Short { len })
}

fn zero_tail(out: &mut [u8]) {
    if let Some(t) = out.get_mut(USED_BYTES..) {
        t.fill(0);
    }
}

fn be32(s: &[u8; USED_BYTES], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&s[at..at + 4]);
    u32::from_be_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Sector 0 and the first node entry exactly as Debian's sbd 1.5.2 wrote them on a loop
    /// device (`sbd -d /dev/loop0 create; sbd -d /dev/loop0 allocate node1`, then `xxd`).
    const REAL_HEADER: [u8; 49] = [
        0x53, 0x42, 0x44, 0x5f, 0x53, 0x42, 0x44, 0x5f, 0x02, 0xff, 0x00, 0x00, 0x00, 0x00, 0x02,
        0x00, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
        0x00, 0x0a, 0x01, 0x4f, 0x2d, 0x89, 0x8b, 0x0c, 0x4a, 0x4c, 0x52, 0x98, 0xe1, 0x96, 0xdd,
        0x83, 0xa5, 0xff, 0xce,
    ];

    fn sector(prefix: &[u8]) -> [u8; 512] {
        let mut s = [0u8; 512];
        s[..prefix.len()].copy_from_slice(prefix);
        s
    }

    #[test]
    fn decodes_a_header_written_by_sbd() {
        let h = Header::decode(&sector(&REAL_HEADER)).unwrap();
        assert_eq!(h.slots, 255);
        assert_eq!(h.sector_size, SectorSize::S512);
        assert_eq!(
            (
                h.timeout_watchdog,
                h.timeout_allocate,
                h.timeout_loop,
                h.timeout_msgwait
            ),
            (5, 2, 1, 10)
        );
        assert_eq!(h.minor_version, 1);
        assert_eq!(
            h.uuid_string().unwrap(),
            "4f2d898b-0c4a-4c52-98e1-96dd83a5ffce"
        );
        let mut again = [0xaau8; 512];
        h.encode(&mut again).unwrap();
        assert_eq!(
            again,
            sector(&REAL_HEADER),
            "encode is byte-identical to sbd"
        );
    }

    #[test]
    fn node_and_mailbox_match_sbd_bytes() {
        let mut s = [0u8; 512];
        NodeEntry::allocated(node_name("node1").unwrap())
            .encode(&mut s)
            .unwrap();
        assert_eq!(&s[..7], b"\x01node1\0");
        Mailbox {
            cmd: Message::Reset,
            from: node_name("fencer").unwrap(),
        }
        .encode(&mut s)
        .unwrap();
        assert_eq!(&s[..8], b"\x02fencer\0");
        assert_eq!(Mailbox::decode(&s).unwrap().cmd, Message::Reset);
    }

    #[test]
    fn sector_numbers_match_sbd_macros() {
        assert_eq!(node_sector(0), 1);
        assert_eq!(mailbox_sector(0), 2);
        assert_eq!(node_sector(1), 3);
        assert_eq!(mailbox_sector(254), 510);
        assert_eq!(sectors_used(255), 511);
    }

    #[test]
    fn refuses_what_sbd_refuses() {
        let mut s = sector(&REAL_HEADER);
        s[0] = b'X';
        assert_eq!(Header::decode(&s), Err(FormatError::BadMagic));
        let mut s = sector(&REAL_HEADER);
        s[8] = 3;
        assert_eq!(
            Header::decode(&s),
            Err(FormatError::BadVersion { found: 3 })
        );
        let mut s = sector(&REAL_HEADER);
        s[14] = 4;
        assert!(matches!(
            Header::decode(&s),
            Err(FormatError::BadSectorSize { .. })
        ));
        assert_eq!(
            Header::decode(&[0u8; 10]),
            Err(FormatError::Short { len: 10 })
        );
        assert_eq!(NodeEntry::decode(&[1u8; 65]), Err(FormatError::BadName));
    }

    #[test]
    fn unknown_command_is_listed_as_undefined() {
        let mut s = [0u8; 65];
        s[0] = 0x80;
        let m = Mailbox::decode(&s).unwrap();
        assert_eq!(m.cmd, Message::Other(-128));
        assert_eq!(m.cmd.to_string(), "undefined");
        assert_eq!(m.cmd.to_byte(), 0x80);
    }

    #[test]
    fn names_compare_like_strncasecmp_and_uuids_parse() {
        assert!(same_node(b"Node1", b"nODE1"));
        assert!(!same_node(b"node1", b"node10"));
        assert!(node_name(&"x".repeat(64)).is_none());
        assert!(node_name("").is_none());
        let u = [7u8; 16];
        assert_eq!(parse_uuid(&format_uuid(&u)), Some(u));
        assert_eq!(parse_uuid("zz"), None);
    }

    fn arb_name() -> impl Strategy<Value = NodeName> {
        proptest::collection::vec(1u8..=255, 0..=NAME_MAX)
            .prop_map(|v| NodeName::from_slice(&v).unwrap_or_default())
    }

    fn arb_header() -> impl Strategy<Value = Header> {
        (
            any::<u8>(),
            prop_oneof![Just(SectorSize::S512), Just(SectorSize::S4096)],
            any::<[u32; 4]>(),
            any::<u8>(),
            any::<[u8; 16]>(),
        )
            .prop_map(|(slots, sector_size, t, minor_version, uuid)| Header {
                slots,
                sector_size,
                timeout_watchdog: t[0],
                timeout_allocate: t[1],
                timeout_loop: t[2],
                timeout_msgwait: t[3],
                minor_version,
                uuid,
            })
    }

    proptest! {
        #[test]
        fn header_round_trips(h in arb_header(), big in any::<bool>()) {
            let mut buf = vec![0u8; if big { 4096 } else { 512 }];
            h.encode(&mut buf).unwrap();
            prop_assert_eq!(Header::decode(&buf).unwrap(), h);
        }

        #[test]
        fn node_entry_round_trips(in_use in any::<u8>(), name in arb_name()) {
            let e = NodeEntry { in_use, name };
            let mut buf = [0u8; 512];
            e.encode(&mut buf).unwrap();
            prop_assert_eq!(NodeEntry::decode(&buf).unwrap(), e);
        }

        #[test]
        fn mailbox_round_trips(b in any::<u8>(), from in arb_name()) {
            let m = Mailbox { cmd: Message::from_byte(b), from };
            let mut buf = [0u8; 512];
            m.encode(&mut buf).unwrap();
            prop_assert_eq!(Mailbox::decode(&buf).unwrap(), m);
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Header::decode(&bytes);
            let _ = NodeEntry::decode(&bytes);
            let _ = Mailbox::decode(&bytes);
        }
    }
}
