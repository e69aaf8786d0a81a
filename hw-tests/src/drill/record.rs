//! The drill workload's on-disk record: one 512-byte sector per record, appended in order.
//!
//! | bytes   | field                                                         |
//! |---------|---------------------------------------------------------------|
//! | 0..8    | magic `PLSDREC1`                                              |
//! | 8..16   | sequence number, little endian (the log's, not the writer's)  |
//! | 16..24  | `CLOCK_MONOTONIC` nanoseconds at write, little endian         |
//! | 24      | length of the node name (1..=32)                              |
//! | 25..57  | node name, zero padded                                        |
//! | 57..504 | zero                                                          |
//! | 504..512| first 8 bytes of SHA-256 over bytes 0..504                    |
//!
//! An all-zero sector is "no record" (the end of the log). Pure functions, no I/O.

use sha2::{Digest, Sha256};

/// Size of a record: one logical sector.
pub const SECTOR: usize = 512;
/// The magic at the start of every record.
pub const MAGIC: [u8; 8] = *b"PLSDREC1";
/// Longest node name a record carries.
pub const MAX_NODE: usize = 32;

const CHECKSUM_AT: usize = SECTOR - 8;

/// One record as written by a workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Position in the log (the writer continues from the last record it found).
    pub seq: u64,
    /// `CLOCK_MONOTONIC` at write, in nanoseconds (comparable with [`super::mono_ns`]).
    pub mono_ns: u64,
    /// The node that wrote it.
    pub node: String,
}

/// Why a sector is not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Not exactly one sector.
    #[error("a record is {SECTOR} bytes, found {0}")]
    Size(usize),
    /// The magic is missing: not a record at all (or an overwritten one).
    #[error("no record magic")]
    Magic,
    /// The checksum does not match: a torn or corrupted write.
    #[error("checksum mismatch (torn or corrupted record)")]
    Checksum,
    /// The node name is empty, too long or not UTF-8.
    #[error("bad node name field")]
    Node,
    /// The padding holds data.
    #[error("non-zero padding")]
    Padding,
}

fn checksum(body: &[u8]) -> [u8; 8] {
    let d = Sha256::digest(body);
    let mut c = [0u8; 8];
    c.copy_from_slice(&d[..8]);
    c
}

/// Encodes a record into one sector; `None` if the node name is empty or longer than
/// [`MAX_NODE`] bytes.
pub fn encode(r: &Record) -> Option<[u8; SECTOR]> {
    let name = r.node.as_bytes();
    if name.is_empty() || name.len() > MAX_NODE {
        return None;
    }
    let mut s = [0u8; SECTOR];
    s[..8].copy_from_slice(&MAGIC);
    s[8..16].copy_from_slice(&r.seq.to_le_bytes());
    s[16..24].copy_from_slice(&r.mono_ns.to_le_bytes());
    s[24] = name.len() as u8;
    s[25..25 + name.len()].copy_from_slice(name);
    let c = checksum(&s[..CHECKSUM_AT]);
    s[CHECKSUM_AT..].copy_from_slice(&c);
    Some(s)
}

/// Decodes one sector: `Ok(None)` for an all-zero sector (no record there).
pub fn decode(sector: &[u8]) -> Result<Option<Record>, RecordError> {
    if sector.len() != SECTOR {
        return Err(RecordError::Size(sector.len()));
    }
    if sector.iter().all(|b| *b == 0) {
        return Ok(None);
    }
    if sector[..8] != MAGIC {
        return Err(RecordError::Magic);
    }
    if sector[CHECKSUM_AT..] != checksum(&sector[..CHECKSUM_AT]) {
        return Err(RecordError::Checksum);
    }
    let len = usize::from(sector[24]);
    if len == 0 || len > MAX_NODE {
        return Err(RecordError::Node);
    }
    if sector[25 + len..CHECKSUM_AT].iter().any(|b| *b != 0) {
        return Err(RecordError::Padding);
    }
    let node = std::str::from_utf8(&sector[25..25 + len])
        .map_err(|_| RecordError::Node)?
        .to_string();
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&sector[i..i + 8]);
        u64::from_le_bytes(b)
    };
    Ok(Some(Record {
        seq: u64_at(8),
        mono_ns: u64_at(16),
        node,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_and_each_kind_of_damage() {
        let r = Record {
            seq: 7,
            mono_ns: 123_456,
            node: "node1".into(),
        };
        let s = encode(&r).unwrap();
        assert_eq!(decode(&s), Ok(Some(r.clone())));
        assert_eq!(decode(&[0u8; SECTOR]), Ok(None));
        assert_eq!(decode(&s[..100]), Err(RecordError::Size(100)));
        let mut torn = s;
        torn[9] ^= 1;
        assert_eq!(decode(&torn), Err(RecordError::Checksum));
        let mut other = s;
        other[0] = b'X';
        assert_eq!(decode(&other), Err(RecordError::Magic));
        assert!(encode(&Record {
            node: String::new(),
            ..r.clone()
        })
        .is_none());
        assert!(encode(&Record {
            node: "x".repeat(33),
            ..r
        })
        .is_none());
    }

    proptest! {
        #[test]
        fn any_record_round_trips(seq: u64, mono_ns: u64, node in "[a-z0-9-]{1,32}") {
            let r = Record { seq, mono_ns, node };
            prop_assert_eq!(decode(&encode(&r).unwrap()), Ok(Some(r)));
        }

        #[test]
        fn any_sector_decodes_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode(&bytes);
        }
    }
}
