//! The shared volume of the drill: a block device read and written with O_DIRECT (no page
//! cache between the nodes, as on a SAN LUN), holding a log of [`Record`]s, and the checker
//! that says whether the log was written by one node at a time.

use super::record::{self, Record, RecordError, SECTOR};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// O_DIRECT needs buffers aligned to the logical block size; 4096 covers 512 and 4K disks.
const ALIGN: usize = 4096;

/// A heap buffer whose usable part starts on an [`ALIGN`] boundary.
struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> Self {
        let raw = vec![0u8; len + ALIGN];
        let start = (ALIGN - (raw.as_ptr() as usize % ALIGN)) % ALIGN;
        AlignedBuf { raw, start, len }
    }
    fn get(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }
    fn get_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

/// What one sector of the log holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// A valid record.
    Record(Record),
    /// Something that is not a valid record (torn, overwritten, foreign data).
    Bad(RecordError),
}

/// A block device opened with O_DIRECT.
#[derive(Debug)]
pub struct Volume {
    file: File,
    sectors: u64,
}

impl Volume {
    /// Opens `path` for reading (and writing if `write`), bypassing the page cache.
    pub fn open(path: &Path, write: bool) -> std::io::Result<Volume> {
        let file = OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(libc::O_DIRECT)
            .open(path)?;
        let bytes = std::io::Seek::seek(&mut &file, std::io::SeekFrom::End(0))?;
        Ok(Volume {
            file,
            sectors: bytes / SECTOR as u64,
        })
    }

    /// Size in sectors.
    pub fn sectors(&self) -> u64 {
        self.sectors
    }

    /// Reads the log from sector 0 up to the first empty sector (or the end of the device).
    pub fn read_log(&self) -> std::io::Result<Vec<Slot>> {
        const CHUNK: usize = 256 * SECTOR;
        let mut buf = AlignedBuf::new(CHUNK);
        let mut out = Vec::new();
        let mut at = 0u64;
        while at < self.sectors {
            let n = self.file.read_at(buf.get_mut(), at * SECTOR as u64)?;
            if n < SECTOR {
                break;
            }
            for s in buf.get()[..n - n % SECTOR].chunks_exact(SECTOR) {
                match record::decode(s) {
                    Ok(None) => return Ok(out),
                    Ok(Some(r)) => out.push(Slot::Record(r)),
                    Err(e) => out.push(Slot::Bad(e)),
                }
            }
            at += (n / SECTOR) as u64;
        }
        Ok(out)
    }

    /// Reads the slot at sector `index`: `None` if it is empty.
    pub fn read_slot(&self, index: u64) -> std::io::Result<Option<Slot>> {
        let mut buf = AlignedBuf::new(SECTOR);
        self.file
            .read_exact_at(buf.get_mut(), index * SECTOR as u64)?;
        Ok(match record::decode(buf.get()) {
            Ok(None) => None,
            Ok(Some(r)) => Some(Slot::Record(r)),
            Err(e) => Some(Slot::Bad(e)),
        })
    }

    /// Writes one record at sector `index` (one direct write: it is on the device when this
    /// returns).
    pub fn write_record(&self, index: u64, r: &Record) -> std::io::Result<()> {
        let sector = record::encode(r).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "node name must be 1-32 bytes",
            )
        })?;
        let mut buf = AlignedBuf::new(SECTOR);
        buf.get_mut().copy_from_slice(&sector);
        self.file.write_all_at(buf.get(), index * SECTOR as u64)
    }
}

/// Where a writer that starts now continues the log: after the last slot, with the sequence
/// number after the last valid record (a database replaying its journal does the same).
pub fn log_end(log: &[Slot]) -> (u64, u64) {
    let next_seq = log
        .iter()
        .rev()
        .find_map(|s| match s {
            Slot::Record(r) => Some(r.seq + 1),
            Slot::Bad(_) => None,
        })
        .unwrap_or(0);
    (log.len() as u64, next_seq)
}

/// What the checker found in a log written first by `first` and then, after failover, by
/// `second`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verdict {
    /// Records per node.
    pub records: BTreeMap<String, usize>,
    /// Sector of `second`'s first record, if it wrote any.
    pub second_starts_at: Option<usize>,
    /// Sectors after `second_starts_at` that hold a record of `first`: writes of the old
    /// copy interleaved with the new one's. Must be empty.
    pub first_after_second: Vec<usize>,
    /// Sequence numbers that appear more than once (two writers continued the same log).
    pub duplicate_seqs: usize,
    /// Sectors that are not valid records.
    pub bad_sectors: Vec<(usize, RecordError)>,
}

impl Verdict {
    /// Whether the log shows one writer at a time: nothing of `first` after `second`'s first
    /// record, no sequence number twice, no damaged sector.
    pub fn is_clean(&self) -> bool {
        self.first_after_second.is_empty()
            && self.duplicate_seqs == 0
            && self.bad_sectors.is_empty()
    }

    /// One line for reports.
    pub fn summary(&self) -> String {
        let counts = self
            .records
            .iter()
            .map(|(n, c)| format!("{n}: {c}"))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "{} — records {{{counts}}}, second writer from sector {}, {} records of the first writer after that{}, {} duplicate sequence numbers, {} damaged sectors",
            if self.is_clean() { "CLEAN" } else { "CORRUPTED" },
            self.second_starts_at
                .map_or_else(|| "- (never)".to_string(), |s| s.to_string()),
            self.first_after_second.len(),
            self.first_after_second
                .first()
                .map(|s| format!(" (first at sector {s})"))
                .unwrap_or_default(),
            self.duplicate_seqs,
            self.bad_sectors.len()
        )
    }

    /// How many records `node` wrote.
    pub fn count(&self, node: &str) -> usize {
        self.records.get(node).copied().unwrap_or(0)
    }
}

/// Checks a log (pure).
pub fn check(log: &[Slot], first: &str, second: &str) -> Verdict {
    let mut v = Verdict::default();
    let mut seqs = std::collections::HashSet::new();
    for (i, slot) in log.iter().enumerate() {
        match slot {
            Slot::Bad(e) => v.bad_sectors.push((i, *e)),
            Slot::Record(r) => {
                *v.records.entry(r.node.clone()).or_default() += 1;
                if !seqs.insert(r.seq) {
                    v.duplicate_seqs += 1;
                }
                if r.node == second && v.second_starts_at.is_none() {
                    v.second_starts_at = Some(i);
                }
                if r.node == first && v.second_starts_at.is_some() {
                    v.first_after_second.push(i);
                }
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: u64, node: &str) -> Slot {
        Slot::Record(Record {
            seq,
            mono_ns: seq,
            node: node.into(),
        })
    }

    #[test]
    fn a_clean_failover_passes_and_interleaving_is_caught() {
        let clean = [rec(0, "a"), rec(1, "a"), rec(2, "b"), rec(3, "b")];
        let v = check(&clean, "a", "b");
        assert!(v.is_clean(), "{v:?}");
        assert_eq!(
            (v.count("a"), v.count("b"), v.second_starts_at),
            (2, 2, Some(2))
        );
        assert_eq!(log_end(&clean), (4, 4));

        // The old copy kept writing: its records land after the new one's first.
        let split = [
            rec(0, "a"),
            rec(1, "b"),
            rec(1, "a"),
            rec(2, "b"),
            rec(3, "a"),
        ];
        let v = check(&split, "a", "b");
        assert!(!v.is_clean());
        assert_eq!(v.first_after_second, vec![2, 4]);
        assert_eq!(v.duplicate_seqs, 1);

        let torn = [rec(0, "a"), Slot::Bad(RecordError::Checksum)];
        assert!(!check(&torn, "a", "b").is_clean());
        assert_eq!(log_end(&torn), (2, 1));
        assert_eq!(log_end(&[]), (0, 0));
        // Only the first writer: clean, second never started.
        let v = check(&[rec(0, "a")], "a", "b");
        assert!(v.is_clean() && v.second_starts_at.is_none());
    }
}
