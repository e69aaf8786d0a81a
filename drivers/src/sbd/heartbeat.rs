//! The Palisade heartbeat area on an SBD disk: where each node's watcher writes a monotonic
//! counter that the `disk-heartbeat` witness watches (`crate::witness::disk`). Pure
//! encode/decode over one sector, plus two thin readers over [`BlockDevice`].
//!
//! # Where it lives, and why there
//! ClusterLabs sbd (`src/sbd-md.c`) only ever reads or writes sector 0 (header), `1 + 2*slot`
//! (node entry) and `2 + 2*slot` (mailbox) for `slot < header.slots`: with its fixed 255 slots,
//! sectors 0..=510. Its `create` writes exactly those; nothing in sbd scans further. The area
//! starts at the first sector after that ([`area_sector`], 511 on every disk sbd or we
//! create) and holds an area header, then one sector per slot ([`record_sector`]), so no two
//! writers ever share a sector: an O_DIRECT write of one logical sector is atomic, and a record
//! is one sector. On 512-byte sectors the whole disk needs 767 sectors (384 KiB), on 4096-byte
//! ones 3 MiB ([`bytes_needed`]); sbd itself needs 511 sectors, so a disk between the two sizes
//! is a valid SBD disk without room for heartbeats.
//!
//! # Area header (sector [`area_sector`])
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `PALISADE` |
//! | 8 | 1 | version, 1 |
//! | 9 | 1 | records (the SBD header's slot count) |
//! | 10 | 2 | zero |
//! | 12 | 4 | sector size |
//! | 16 | 16 | the SBD header's UUID when the area was made |
//! | 32 | 8 | first record's sector |
//! | 40 | 4 | CRC-32C of bytes 0..40 |
//!
//! The UUID ties the area to one `create`: `sbd create` on the same disk writes a new header
//! (new UUID) and leaves our sectors alone, and an area whose UUID is not the header's is
//! treated as absent, so stale records from before never read as a live node.
//!
//! # Record (sector [`record_sector`]`(slots, slot)`)
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `PAL_BEAT` |
//! | 8 | 1 | version, 1 |
//! | 9 | 1 | slot |
//! | 10 | 2 | zero |
//! | 12 | 64 | node name, NUL-padded (as in sbd's node entry) |
//! | 76 | 16 | the SBD disk's UUID |
//! | 92 | 16 | the writer's boot id (`/proc/sys/kernel/random/boot_id`) |
//! | 108 | 8 | when the writing watcher started, ms since the Unix epoch |
//! | 116 | 8 | counter, +1 every write |
//! | 124 | 8 | when this record was written, ms since the Unix epoch (writer's clock) |
//! | 132 | 4 | CRC-32C of bytes 0..132 |
//!
//! Integers are big-endian, like sbd's header. The rest of each sector is zero when we write
//! it and ignored when read. A sector whose checksum does not match (torn by a writer that
//! does not honour sector atomicity, overwritten, never written) is not a record.

use super::format::{self, NodeName, SectorSize, NAME_MAX};
use super::{BlockDevice, DiskError, Header};
use std::time::{Duration, Instant};

/// First eight bytes of the area header.
pub const AREA_MAGIC: [u8; 8] = *b"PALISADE";
/// First eight bytes of a heartbeat record.
pub const RECORD_MAGIC: [u8; 8] = *b"PAL_BEAT";
/// The area and record version this code writes and reads.
pub const VERSION: u8 = 1;
/// Bytes of the area header the format uses (checksum included).
pub const AREA_BYTES: usize = 44;
/// Bytes of a record the format uses (checksum included).
pub const RECORD_BYTES: usize = 136;

/// The area header's sector on a disk whose SBD header has `slots` slots: the first sector
/// sbd never touches.
pub const fn area_sector(slots: u8) -> u64 {
    format::sectors_used(slots)
}

/// The sector of `slot`'s heartbeat record.
pub const fn record_sector(slots: u8, slot: u8) -> u64 {
    area_sector(slots) + 1 + slot as u64
}

/// Sectors a disk needs for the SBD area and the heartbeat area together.
pub const fn sectors_needed(slots: u8) -> u64 {
    area_sector(slots) + 1 + slots as u64
}

/// Bytes a disk needs for the SBD area and the heartbeat area together.
pub const fn bytes_needed(slots: u8, sector_size: SectorSize) -> u64 {
    sectors_needed(slots) * sector_size.bytes() as u64
}

/// Why a sector is not a valid area header or record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeartbeatError {
    /// The buffer is shorter than the format's bytes.
    #[error("heartbeat sector buffer has {len} bytes, {need} needed; read a whole sector")]
    Short {
        /// Bytes given.
        len: usize,
        /// Bytes needed.
        need: usize,
    },
    /// All zero: nothing was ever written there.
    #[error("never written (all zero)")]
    Blank,
    /// The magic is not ours: something else wrote the sector.
    #[error("not a Palisade heartbeat sector (wrong magic)")]
    BadMagic,
    /// Written by a newer Palisade with a format this one does not know.
    #[error("heartbeat format version {found} is newer than this Palisade reads (version {VERSION}); upgrade Palisade on this node")]
    FutureVersion {
        /// The version found.
        found: u8,
    },
    /// The checksum does not match: a torn or damaged sector.
    #[error("checksum mismatch (a torn or damaged sector)")]
    Checksum,
    /// A field holds a value the format does not allow.
    #[error("invalid {field}")]
    Invalid {
        /// Which field.
        field: &'static str,
    },
}

/// The area header: that the area exists, for which `create`, with how many records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AreaHeader {
    /// Records in the area (the SBD header's slots).
    pub slots: u8,
    /// The disk's sector size.
    pub sector_size: SectorSize,
    /// The SBD header's UUID when the area was made.
    pub disk_uuid: [u8; 16],
}

impl AreaHeader {
    /// The area header that belongs with `header`.
    pub fn for_disk(header: &Header) -> Self {
        AreaHeader {
            slots: header.slots,
            sector_size: header.sector_size,
            disk_uuid: header.uuid,
        }
    }

    /// Encodes into `out` (at least [`AREA_BYTES`]; the rest is zeroed).
    pub fn encode(&self, out: &mut [u8]) -> Result<(), HeartbeatError> {
        let used = prefix_mut::<AREA_BYTES>(out)?;
        used.fill(0);
        used[0..8].copy_from_slice(&AREA_MAGIC);
        used[8] = VERSION;
        used[9] = self.slots;
        used[12..16].copy_from_slice(&(self.sector_size.bytes() as u32).to_be_bytes());
        used[16..32].copy_from_slice(&self.disk_uuid);
        used[32..40].copy_from_slice(&(area_sector(self.slots) + 1).to_be_bytes());
        let crc = crc32c(&used[..40]);
        used[40..44].copy_from_slice(&crc.to_be_bytes());
        zero_tail(out, AREA_BYTES);
        Ok(())
    }

    /// Decodes an area header sector.
    pub fn decode(sector: &[u8]) -> Result<Self, HeartbeatError> {
        let s = prefix::<AREA_BYTES>(sector)?;
        check_envelope(s, &AREA_MAGIC, 40)?;
        let size = u32::from_be_bytes(take(s, 12));
        let sector_size =
            SectorSize::from_bytes(u64::from(size)).ok_or(HeartbeatError::Invalid {
                field: "sector size",
            })?;
        let slots = s[9];
        // The first record's place is written out so a later version may move the records;
        // version 1 always puts them right after the area header.
        if u64::from_be_bytes(take(s, 32)) != area_sector(slots) + 1 {
            return Err(HeartbeatError::Invalid {
                field: "first record sector",
            });
        }
        Ok(AreaHeader {
            slots,
            sector_size,
            disk_uuid: take(s, 16),
        })
    }
}

/// One node's heartbeat as its watcher last wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Record {
    /// The slot (the node's SBD slot) this record belongs to.
    pub slot: u8,
    /// The node's name, as in its SBD node entry.
    pub name: NodeName,
    /// The SBD disk's UUID.
    pub disk_uuid: [u8; 16],
    /// The writer's kernel boot id: a new boot is a new writer.
    pub boot_id: [u8; 16],
    /// When the writing watcher started, ms since the Unix epoch: a restart is a new writer.
    pub started_ms: u64,
    /// Advances by one on every write.
    pub counter: u64,
    /// When this record was written, ms since the Unix epoch on the writer's clock (evidence
    /// for operators only; nothing compares clocks across nodes).
    pub written_ms: u64,
}

/// How a later read of a record compares with an earlier one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Same writer, same counter: nothing was written in between (or the same value again).
    Unchanged,
    /// Same writer, higher counter: the node wrote since.
    Advanced,
    /// Another writer (new boot id or watcher start time): the node's watcher (re)started.
    NewWriter,
    /// Same writer, lower counter: the disk went back in time (a restored snapshot, a cache
    /// that lies); neither life nor silence can be read from it.
    Backwards,
}

impl Record {
    /// Encodes into `out` (at least [`RECORD_BYTES`]; the rest is zeroed).
    pub fn encode(&self, out: &mut [u8]) -> Result<(), HeartbeatError> {
        let used = prefix_mut::<RECORD_BYTES>(out)?;
        used.fill(0);
        used[0..8].copy_from_slice(&RECORD_MAGIC);
        used[8] = VERSION;
        used[9] = self.slot;
        let n = self.name.len().min(NAME_MAX);
        used[12..12 + n].copy_from_slice(&self.name[..n]);
        used[76..92].copy_from_slice(&self.disk_uuid);
        used[92..108].copy_from_slice(&self.boot_id);
        used[108..116].copy_from_slice(&self.started_ms.to_be_bytes());
        used[116..124].copy_from_slice(&self.counter.to_be_bytes());
        used[124..132].copy_from_slice(&self.written_ms.to_be_bytes());
        let crc = crc32c(&used[..132]);
        used[132..136].copy_from_slice(&crc.to_be_bytes());
        zero_tail(out, RECORD_BYTES);
        Ok(())
    }

    /// Decodes a record sector.
    pub fn decode(sector: &[u8]) -> Result<Self, HeartbeatError> {
        let s = prefix::<RECORD_BYTES>(sector)?;
        check_envelope(s, &RECORD_MAGIC, 132)?;
        let field = &s[12..76];
        let end = field
            .iter()
            .position(|b| *b == 0)
            .ok_or(HeartbeatError::Invalid { field: "node name" })?;
        if field[end..].iter().any(|b| *b != 0) {
            return Err(HeartbeatError::Invalid { field: "node name" });
        }
        let name = NodeName::from_slice(&field[..end])
            .map_err(|_| HeartbeatError::Invalid { field: "node name" })?;
        Ok(Record {
            slot: s[9],
            name,
            disk_uuid: take(s, 76),
            boot_id: take(s, 92),
            started_ms: u64::from_be_bytes(take(s, 108)),
            counter: u64::from_be_bytes(take(s, 116)),
            written_ms: u64::from_be_bytes(take(s, 124)),
        })
    }

    /// Whether this (later) read shows a write since `earlier`.
    pub fn progress_since(&self, earlier: &Record) -> Progress {
        if self.boot_id != earlier.boot_id || self.started_ms != earlier.started_ms {
            Progress::NewWriter
        } else if self.counter > earlier.counter {
            Progress::Advanced
        } else if self.counter == earlier.counter {
            Progress::Unchanged
        } else {
            Progress::Backwards
        }
    }
}

fn check_envelope(s: &[u8], magic: &[u8; 8], crc_at: usize) -> Result<(), HeartbeatError> {
    if s.iter().all(|b| *b == 0) {
        return Err(HeartbeatError::Blank);
    }
    if s[0..8] != *magic {
        return Err(HeartbeatError::BadMagic);
    }
    // A newer version may lay out everything after the version byte differently, so it is
    // refused before the checksum (which it may compute over other bytes).
    if s[8] > VERSION {
        return Err(HeartbeatError::FutureVersion { found: s[8] });
    }
    if s[8] != VERSION {
        return Err(HeartbeatError::Invalid { field: "version" });
    }
    if u32::from_be_bytes(take(s, crc_at)) != crc32c(&s[..crc_at]) {
        return Err(HeartbeatError::Checksum);
    }
    if s[10..12] != [0, 0] {
        return Err(HeartbeatError::Invalid {
            field: "reserved bytes",
        });
    }
    Ok(())
}

fn take<const N: usize>(s: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = s.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}

fn prefix<const N: usize>(sector: &[u8]) -> Result<&[u8], HeartbeatError> {
    sector.get(..N).ok_or(HeartbeatError::Short {
        len: sector.len(),
        need: N,
    })
}

fn prefix_mut<const N: usize>(out: &mut [u8]) -> Result<&mut [u8], HeartbeatError> {
    let len = out.len();
    out.get_mut(..N)
        .ok_or(HeartbeatError::Short { len, need: N })
}

fn zero_tail(out: &mut [u8], used: usize) {
    if let Some(t) = out.get_mut(used..) {
        t.fill(0);
    }
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of iSCSI and ext4
/// metadata: it catches every burst error up to 32 bits, which covers a sector torn at any
/// byte boundary of the fields it protects.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in data {
        crc = CRC_TABLE[((crc ^ u32::from(*b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

const CRC_TABLE: [u32; 256] = crc_table();

const fn crc_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0x82F6_3B78 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

/// Why the heartbeat area of a disk cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AreaError {
    /// The disk could not be read.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// The disk is too small to hold the area after sbd's sectors.
    #[error("the disk has no room for a heartbeat area after the SBD slots (it needs {needed} bytes); use a larger SBD disk (16 MiB is plenty) if heartbeats are wanted")]
    TooSmall {
        /// Bytes needed.
        needed: u64,
    },
    /// No (valid) area header: the disk was made by sbd, or before heartbeats existed.
    #[error("the disk has no Palisade heartbeat area ({why}); add one with `palisade-sbd -d DEV create-heartbeat` (it leaves sbd's sectors alone), then restart the watchers")]
    Missing {
        /// What the area sector holds instead.
        why: HeartbeatError,
    },
    /// The area was made for an earlier SBD header (the disk was re-created since).
    #[error("the heartbeat area belongs to an earlier SBD create (area UUID {area}, header UUID {header}); run `palisade-sbd -d DEV create-heartbeat` again, then restart the watchers")]
    Stale {
        /// The UUID in the area header.
        area: String,
        /// The UUID in the SBD header.
        header: String,
    },
    /// The area header does not match the SBD header's geometry.
    #[error("the heartbeat area is for {area_slots} slots of {area_size}-byte sectors but the SBD header has {slots} slots of {size}-byte sectors; run `palisade-sbd -d DEV create-heartbeat` again")]
    Mismatch {
        /// Slots in the area header.
        area_slots: u8,
        /// Sector size in the area header.
        area_size: usize,
        /// Slots in the SBD header.
        slots: u8,
        /// Sector size in the SBD header.
        size: usize,
    },
}

/// Reads and checks the area header of a disk whose SBD header is `header`: present, for this
/// header's UUID, slots and sector size.
pub fn read_area(
    dev: &dyn BlockDevice,
    header: &Header,
    deadline: Instant,
) -> Result<AreaHeader, AreaError> {
    let sector = area_sector(header.slots);
    let bytes = match dev.read(sector, 1, deadline) {
        Ok(b) => b,
        // A disk that ends before the area is a valid SBD disk without heartbeats.
        Err(DiskError::Range { .. }) => {
            return Err(AreaError::TooSmall {
                needed: bytes_needed(header.slots, header.sector_size),
            })
        }
        Err(e) => return Err(e.into()),
    };
    let area = AreaHeader::decode(&bytes).map_err(|why| AreaError::Missing { why })?;
    if area.disk_uuid != header.uuid {
        return Err(AreaError::Stale {
            area: format::format_uuid(&area.disk_uuid),
            header: format::format_uuid(&header.uuid),
        });
    }
    if area.slots != header.slots || area.sector_size != header.sector_size {
        return Err(AreaError::Mismatch {
            area_slots: area.slots,
            area_size: area.sector_size.bytes(),
            slots: header.slots,
            size: header.sector_size.bytes(),
        });
    }
    Ok(area)
}

/// Writes a fresh area for `header`: every record zeroed, then the area header (last, so an
/// interrupted write leaves no area rather than an area over stale records). Needs the disk
/// to be large enough ([`bytes_needed`]); checked by the device's range check.
pub fn write_area(
    dev: &dyn BlockDevice,
    header: &Header,
    io_timeout: Duration,
) -> Result<AreaHeader, AreaError> {
    let ss = dev.sector_size().bytes();
    let first = area_sector(header.slots);
    let zeros = vec![0u8; ss * usize::from(header.slots)];
    let range = |e: DiskError| match e {
        DiskError::Range { .. } => AreaError::TooSmall {
            needed: bytes_needed(header.slots, header.sector_size),
        },
        e => AreaError::Disk(e),
    };
    if header.slots > 0 {
        dev.write(first + 1, &zeros, Instant::now() + io_timeout)
            .map_err(range)?;
    }
    let area = AreaHeader::for_disk(header);
    let mut buf = vec![0u8; ss];
    area.encode(&mut buf)
        .map_err(|why| AreaError::Missing { why })?;
    dev.write(first, &buf, Instant::now() + io_timeout)
        .map_err(range)?;
    Ok(area)
}

/// Reads `slot`'s record sector. `Ok(Err(_))` is a readable sector that holds no valid record.
pub fn read_record(
    dev: &dyn BlockDevice,
    area: &AreaHeader,
    slot: u8,
    deadline: Instant,
) -> Result<Result<Record, HeartbeatError>, DiskError> {
    let bytes = dev.read(record_sector(area.slots, slot), 1, deadline)?;
    Ok(Record::decode(&bytes))
}

/// Decodes `data` as an area header and as a record and checks that whatever decodes
/// re-encodes to the same value (part of the `sbd_decode` fuzz target).
pub fn fuzz_decode(data: &[u8]) {
    let mut buf = vec![0u8; data.len().max(RECORD_BYTES)];
    if let Ok(a) = AreaHeader::decode(data) {
        assert!(a.encode(&mut buf).is_ok());
        assert_eq!(AreaHeader::decode(&buf).ok(), Some(a));
    }
    if let Ok(r) = Record::decode(data) {
        assert!(r.encode(&mut buf).is_ok());
        assert_eq!(Record::decode(&buf).ok(), Some(r));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sbd::MemDisk;
    use proptest::prelude::*;

    fn record(counter: u64) -> Record {
        Record {
            slot: 3,
            name: format::node_name("node1").unwrap(),
            disk_uuid: [7; 16],
            boot_id: [9; 16],
            started_ms: 1_700_000_000_000,
            counter,
            written_ms: 1_700_000_000_500,
        }
    }

    fn header() -> Header {
        Header::for_tests([7; 16])
    }

    #[test]
    fn crc32c_matches_the_published_check_value() {
        // RFC 3720 appendix B.4 / the CRC catalogue: CRC-32C("123456789") = 0xE3069283.
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(
            crc32c(&[0u8; 32]),
            0x8A91_36AA,
            "RFC 3720 B.4, 32 zero bytes"
        );
    }

    #[test]
    fn the_area_starts_after_sbds_last_mailbox() {
        // sbd's last sector with 255 slots is the mailbox of slot 254: 2 + 2*254 = 510.
        assert_eq!(format::mailbox_sector(254), 510);
        assert_eq!(area_sector(255), 511);
        assert_eq!(record_sector(255, 0), 512);
        assert_eq!(record_sector(255, 254), 766);
        assert_eq!(sectors_needed(255), 767);
        assert_eq!(bytes_needed(255, SectorSize::S512), 767 * 512);
        assert!(bytes_needed(255, SectorSize::S4096) <= 4 * 1024 * 1024);
    }

    #[test]
    fn record_layout_is_as_documented() {
        let mut s = [0u8; 512];
        record(0x0102).encode(&mut s).unwrap();
        assert_eq!(&s[0..8], b"PAL_BEAT");
        assert_eq!(s[8], 1);
        assert_eq!(s[9], 3);
        assert_eq!(&s[12..18], b"node1\0");
        assert_eq!(&s[116..124], &0x0102u64.to_be_bytes());
        assert_eq!(
            u32::from_be_bytes(s[132..136].try_into().unwrap()),
            crc32c(&s[..132])
        );
        assert!(s[136..].iter().all(|b| *b == 0));
    }

    #[test]
    fn blank_foreign_future_and_torn_sectors_are_not_records() {
        assert_eq!(Record::decode(&[0u8; 512]), Err(HeartbeatError::Blank));
        assert_eq!(AreaHeader::decode(&[0u8; 512]), Err(HeartbeatError::Blank));
        let mut s = [0u8; 512];
        record(5).encode(&mut s).unwrap();
        let good = s;
        // An SBD mailbox or node entry in its place (sbd's bytes) is foreign.
        s[..8].copy_from_slice(b"\x01node1\0\0");
        assert_eq!(Record::decode(&s), Err(HeartbeatError::BadMagic));
        // A newer version is refused as such, whatever its checksum.
        let mut s = good;
        s[8] = 2;
        assert_eq!(
            Record::decode(&s),
            Err(HeartbeatError::FutureVersion { found: 2 })
        );
        // A sector torn after any byte of the protected fields (new bytes up to the tear,
        // old ones after) fails the checksum.
        let mut newer = [0u8; 512];
        let mut r = record(6);
        r.written_ms += 100;
        r.encode(&mut newer).unwrap();
        for tear in 1..RECORD_BYTES {
            let mut t = good;
            t[..tear].copy_from_slice(&newer[..tear]);
            if t[..RECORD_BYTES] == newer[..RECORD_BYTES]
                || t[..RECORD_BYTES] == good[..RECORD_BYTES]
            {
                continue;
            }
            assert_eq!(
                Record::decode(&t),
                Err(HeartbeatError::Checksum),
                "tear at {tear}"
            );
        }
        assert_eq!(
            Record::decode(&good[..100]),
            Err(HeartbeatError::Short {
                len: 100,
                need: RECORD_BYTES
            })
        );
        // Bytes after the name's NUL are damage (we always write zeros there).
        let mut s = good;
        s[40] = b'x';
        let crc = crc32c(&s[..132]);
        s[132..136].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            Record::decode(&s),
            Err(HeartbeatError::Invalid { field: "node name" })
        );
    }

    #[test]
    fn progress_tells_advanced_restarted_unchanged_and_backwards_apart() {
        let a = record(10);
        assert_eq!(record(11).progress_since(&a), Progress::Advanced);
        assert_eq!(record(10).progress_since(&a), Progress::Unchanged);
        assert_eq!(record(9).progress_since(&a), Progress::Backwards);
        let mut b = record(0);
        b.started_ms += 1;
        assert_eq!(b.progress_since(&a), Progress::NewWriter);
        let mut c = record(10);
        c.boot_id[0] ^= 1;
        assert_eq!(c.progress_since(&a), Progress::NewWriter);
    }

    #[test]
    fn area_on_a_disk_is_checked_against_the_sbd_header() {
        let h = header();
        let disk = MemDisk::new("mem", SectorSize::S512, sectors_needed(255));
        let far = || Instant::now() + Duration::from_secs(5);
        assert!(matches!(
            read_area(&disk, &h, far()),
            Err(AreaError::Missing {
                why: HeartbeatError::Blank
            })
        ));
        let a = write_area(&disk, &h, Duration::from_secs(5)).unwrap();
        assert_eq!(read_area(&disk, &h, far()).unwrap(), a);
        // sbd's sectors are untouched by the area.
        assert!(disk.snapshot()[..511 * 512].iter().all(|b| *b == 0));
        let mut recreated = h;
        recreated.uuid = [8; 16];
        let e = read_area(&disk, &recreated, far()).unwrap_err();
        assert!(matches!(e, AreaError::Stale { .. }), "{e}");
        assert!(e.to_string().contains("create-heartbeat"), "{e}");
        assert_eq!(
            read_record(&disk, &a, 3, far()).unwrap(),
            Err(HeartbeatError::Blank)
        );
        let small = MemDisk::new("small", SectorSize::S512, 511);
        assert!(matches!(
            read_area(&small, &h, far()),
            Err(AreaError::TooSmall { needed }) if needed == 767 * 512
        ));
        assert!(matches!(
            write_area(&small, &h, Duration::from_secs(5)),
            Err(AreaError::TooSmall { .. })
        ));
        disk.set_failing(true);
        assert!(matches!(
            read_area(&disk, &h, far()),
            Err(AreaError::Disk(_))
        ));
    }

    #[test]
    fn the_fuzz_seeds_are_what_their_names_say() {
        // The `sbd_decode` seed corpus (replayed by drivers/tests/fuzz_corpus.rs) holds an
        // area, a record, a torn record and a version-2 record, written independently of this
        // encoder: decoding them checks the encoder against the documented layout.
        let seed = |n: &str| {
            std::fs::read(format!(
                "{}/fuzz/corpus/sbd_decode/{n}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap()
        };
        let uuid: [u8; 16] = core::array::from_fn(|i| i as u8);
        let a = AreaHeader::decode(&seed("heartbeat-area")).unwrap();
        assert_eq!(
            (a.slots, a.sector_size, a.disk_uuid),
            (255, SectorSize::S512, uuid)
        );
        let r = Record::decode(&seed("heartbeat-record")).unwrap();
        assert_eq!((r.slot, &r.name[..], r.counter), (0, &b"node1"[..], 42));
        assert_eq!((r.disk_uuid, r.boot_id), (uuid, [0xb0; 16]));
        let mut again = [0u8; 512];
        r.encode(&mut again).unwrap();
        assert_eq!(&again[..], &seed("heartbeat-record")[..]);
        assert_eq!(
            Record::decode(&seed("heartbeat-record-torn")),
            Err(HeartbeatError::Checksum)
        );
        assert_eq!(
            Record::decode(&seed("heartbeat-record-v2")),
            Err(HeartbeatError::FutureVersion { found: 2 })
        );
    }

    fn arb_record() -> impl Strategy<Value = Record> {
        (
            any::<u8>(),
            proptest::collection::vec(1u8..=255, 0..=NAME_MAX),
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            any::<[u64; 3]>(),
        )
            .prop_map(|(slot, name, disk_uuid, boot_id, n)| Record {
                slot,
                name: NodeName::from_slice(&name).unwrap_or_default(),
                disk_uuid,
                boot_id,
                started_ms: n[0],
                counter: n[1],
                written_ms: n[2],
            })
    }

    proptest! {
        #[test]
        fn record_round_trips(r in arb_record(), big in any::<bool>()) {
            let mut buf = vec![0xa5u8; if big { 4096 } else { 512 }];
            r.encode(&mut buf).unwrap();
            prop_assert_eq!(Record::decode(&buf).unwrap(), r);
        }

        #[test]
        fn area_round_trips(slots in any::<u8>(), big in any::<bool>(), uuid in any::<[u8; 16]>()) {
            let a = AreaHeader {
                slots,
                sector_size: if big { SectorSize::S4096 } else { SectorSize::S512 },
                disk_uuid: uuid,
            };
            let mut buf = vec![0x5au8; a.sector_size.bytes()];
            a.encode(&mut buf).unwrap();
            prop_assert_eq!(AreaHeader::decode(&buf).unwrap(), a);
        }

        #[test]
        fn any_single_byte_change_is_caught(r in arb_record(), at in 0usize..RECORD_BYTES, x in 1u8..=255) {
            let mut buf = [0u8; 512];
            r.encode(&mut buf).unwrap();
            buf[at] ^= x;
            // A one-byte change is a burst of at most 8 bits: CRC-32C catches every one.
            prop_assert!(Record::decode(&buf).is_err());
        }

        #[test]
        fn garbage_never_panics_and_what_decodes_re_encodes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            fuzz_decode(&bytes);
        }
    }
}
