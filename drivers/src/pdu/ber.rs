//! The subset of ASN.1 BER that SNMP uses (RFC 3416 §3, X.690 §8): definite lengths only,
//! universal INTEGER, OCTET STRING, NULL, OBJECT IDENTIFIER, SEQUENCE, and SNMP's
//! application types. Pure functions over byte slices: no I/O, no panics on any input.

use std::fmt;
use std::str::FromStr;

/// Longest OID accepted (RFC 2578 §3.5 caps an OID at 128 sub-identifiers).
pub const MAX_OID_LEN: usize = 128;

/// Universal and SNMP application tags used by the codec.
pub mod tag {
    /// INTEGER.
    pub const INTEGER: u8 = 0x02;
    /// OCTET STRING.
    pub const OCTET_STRING: u8 = 0x04;
    /// NULL.
    pub const NULL: u8 = 0x05;
    /// OBJECT IDENTIFIER.
    pub const OID: u8 = 0x06;
    /// SEQUENCE (constructed).
    pub const SEQUENCE: u8 = 0x30;
    /// IpAddress (APPLICATION 0).
    pub const IP_ADDRESS: u8 = 0x40;
    /// Counter32 (APPLICATION 1).
    pub const COUNTER32: u8 = 0x41;
    /// Gauge32 / Unsigned32 (APPLICATION 2).
    pub const GAUGE32: u8 = 0x42;
    /// TimeTicks (APPLICATION 3).
    pub const TIMETICKS: u8 = 0x43;
    /// Opaque (APPLICATION 4).
    pub const OPAQUE: u8 = 0x44;
    /// Counter64 (APPLICATION 6).
    pub const COUNTER64: u8 = 0x46;
    /// noSuchObject exception (context 0, primitive).
    pub const NO_SUCH_OBJECT: u8 = 0x80;
    /// noSuchInstance exception (context 1, primitive).
    pub const NO_SUCH_INSTANCE: u8 = 0x81;
    /// endOfMibView exception (context 2, primitive).
    pub const END_OF_MIB_VIEW: u8 = 0x82;
}

/// Why bytes are not valid BER (or not the SNMP structure expected).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BerError {
    /// The input ended inside a tag, a length or a value.
    #[error("{what}: truncated")]
    Truncated {
        /// What was being read.
        what: &'static str,
    },
    /// A different tag was found than the structure requires.
    #[error("{what}: expected tag {expected:#04x}, found {found:#04x}")]
    UnexpectedTag {
        /// What was being read.
        what: &'static str,
        /// The tag required.
        expected: u8,
        /// The tag found.
        found: u8,
    },
    /// A length form SNMP does not use (indefinite, or longer than 4 bytes).
    #[error("{what}: unsupported length encoding")]
    BadLength {
        /// What was being read.
        what: &'static str,
    },
    /// A value is out of range for its type (an INTEGER wider than 64 bits, a 33-bit Counter32,
    /// a 0-length INTEGER, an OID sub-identifier above 2^32-1).
    #[error("{what}: value out of range")]
    Range {
        /// What was being read.
        what: &'static str,
    },
    /// Bytes are left over after a structure that must fill its container.
    #[error("{what}: {extra} trailing bytes")]
    Trailing {
        /// The container.
        what: &'static str,
        /// How many bytes were left.
        extra: usize,
    },
    /// A field holds a value the protocol does not allow here.
    #[error("{what}: unexpected value {value}")]
    BadValue {
        /// The field.
        what: &'static str,
        /// The value found.
        value: i64,
    },
}

/// An OBJECT IDENTIFIER as its sub-identifiers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Oid(pub Vec<u32>);

impl Oid {
    /// This OID with `more` sub-identifiers appended (a table column plus its index).
    pub fn child(&self, more: &[u32]) -> Oid {
        let mut v = self.0.clone();
        v.extend_from_slice(more);
        Oid(v)
    }

    /// Whether `self` lies under `prefix` (or equals it).
    pub fn starts_with(&self, prefix: &Oid) -> bool {
        self.0.starts_with(&prefix.0)
    }

    /// The sub-identifiers after `prefix`, when `self` lies under it.
    pub fn suffix(&self, prefix: &Oid) -> Option<&[u32]> {
        self.0.strip_prefix(prefix.0.as_slice())
    }
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

/// Text that is not a dotted OID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidError {
    /// A part is not a number.
    #[error("`{0}` is not a dotted OID like 1.3.6.1.2.1.1.5.0")]
    NotDotted(String),
    /// Numbers, but not an OID (fewer than 2 or more than 128 arcs, or the first two arcs out
    /// of range: X.690 §8.19.4).
    #[error(
        "`{0}` is not a valid OID (at least 2 arcs, the first 0-2, the second 0-39 under 0 or 1)"
    )]
    Invalid(String),
}

impl FromStr for Oid {
    type Err = OidError;
    fn from_str(s: &str) -> Result<Self, OidError> {
        let v = s
            .trim_start_matches('.')
            .split('.')
            .map(|p| p.parse::<u32>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| OidError::NotDotted(s.to_string()))?;
        if v.len() < 2 || v.len() > MAX_OID_LEN || v[0] > 2 || (v[0] < 2 && v[1] > 39) {
            return Err(OidError::Invalid(s.to_string()));
        }
        Ok(Oid(v))
    }
}

/// A cursor over BER bytes that remembers where each value starts (the SNMPv3 HMAC is
/// computed over the whole message with the authentication parameters zeroed in place, so
/// their offset must be known).
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Offset of `buf` within the datagram.
    base: usize,
}

impl<'a> Reader<'a> {
    /// A reader over a whole datagram.
    pub fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            base: 0,
        }
    }

    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Fails unless every byte was read.
    pub fn finish(&self, what: &'static str) -> Result<(), BerError> {
        match self.buf.len().saturating_sub(self.pos) {
            0 => Ok(()),
            extra => Err(BerError::Trailing { what, extra }),
        }
    }

    /// The tag of the next value, without consuming it.
    pub fn peek_tag(&self) -> Option<u8> {
        self.buf.get(self.pos).copied()
    }

    /// Reads one tag-length-value; returns the tag, the value bytes and the value's offset in
    /// the datagram.
    pub fn tlv(&mut self, what: &'static str) -> Result<(u8, &'a [u8], usize), BerError> {
        let t = *self.buf.get(self.pos).ok_or(BerError::Truncated { what })?;
        // Multi-byte (high-number) tags never occur in SNMP.
        if t & 0x1f == 0x1f {
            return Err(BerError::BadLength { what });
        }
        let first = *self
            .buf
            .get(self.pos + 1)
            .ok_or(BerError::Truncated { what })?;
        let mut at = self.pos + 2;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            // 0x80 is the indefinite form, which SNMP forbids (RFC 3417 §8).
            if n == 0 || n > 4 {
                return Err(BerError::BadLength { what });
            }
            let bytes = self
                .buf
                .get(at..at + n)
                .ok_or(BerError::Truncated { what })?;
            at += n;
            bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
        };
        let end = at.checked_add(len).ok_or(BerError::Truncated { what })?;
        let value = self.buf.get(at..end).ok_or(BerError::Truncated { what })?;
        self.pos = end;
        Ok((t, value, self.base + at))
    }

    /// Reads one tag-length-value and returns its tag and its whole encoding (header included).
    pub fn raw(&mut self, what: &'static str) -> Result<(u8, &'a [u8]), BerError> {
        let start = self.pos;
        let (t, _, _) = self.tlv(what)?;
        let whole = self
            .buf
            .get(start..self.pos)
            .ok_or(BerError::Truncated { what })?;
        Ok((t, whole))
    }

    /// Reads a value that must carry `expected` as its tag.
    pub fn expect(&mut self, expected: u8, what: &'static str) -> Result<&'a [u8], BerError> {
        self.expect_at(expected, what).map(|(v, _)| v)
    }

    /// As [`Reader::expect`], also returning the value's offset in the datagram.
    pub fn expect_at(
        &mut self,
        expected: u8,
        what: &'static str,
    ) -> Result<(&'a [u8], usize), BerError> {
        let (t, v, at) = self.tlv(what)?;
        if t != expected {
            return Err(BerError::UnexpectedTag {
                what,
                expected,
                found: t,
            });
        }
        Ok((v, at))
    }

    /// Enters a constructed value with tag `expected` and returns a reader over its contents.
    pub fn nested(&mut self, expected: u8, what: &'static str) -> Result<Reader<'a>, BerError> {
        let (v, at) = self.expect_at(expected, what)?;
        Ok(Reader {
            buf: v,
            pos: 0,
            base: at,
        })
    }

    /// Reads an INTEGER.
    pub fn integer(&mut self, what: &'static str) -> Result<i64, BerError> {
        decode_integer(self.expect(tag::INTEGER, what)?, what)
    }

    /// Reads an OCTET STRING.
    pub fn octets(&mut self, what: &'static str) -> Result<&'a [u8], BerError> {
        self.expect(tag::OCTET_STRING, what)
    }

    /// Reads an OBJECT IDENTIFIER.
    pub fn oid(&mut self, what: &'static str) -> Result<Oid, BerError> {
        decode_oid(self.expect(tag::OID, what)?, what)
    }
}

/// Decodes a two's-complement INTEGER of 1 to 8 bytes.
pub fn decode_integer(v: &[u8], what: &'static str) -> Result<i64, BerError> {
    if v.is_empty() || v.len() > 8 {
        return Err(BerError::Range { what });
    }
    let neg = v[0] & 0x80 != 0;
    let mut x: i64 = if neg { -1 } else { 0 };
    for b in v {
        x = (x << 8) | i64::from(*b);
    }
    Ok(x)
}

/// Decodes an unsigned application integer (Counter32, Gauge32, TimeTicks: `max_bytes` 4;
/// Counter64: 8), which may carry one leading zero byte to stay positive.
pub fn decode_unsigned(v: &[u8], max_bytes: usize, what: &'static str) -> Result<u64, BerError> {
    let v = match v {
        [0, rest @ ..] if !rest.is_empty() => rest,
        _ => v,
    };
    if v.is_empty() || v.len() > max_bytes {
        return Err(BerError::Range { what });
    }
    Ok(v.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

/// Decodes OBJECT IDENTIFIER contents (X.690 §8.19).
pub fn decode_oid(v: &[u8], what: &'static str) -> Result<Oid, BerError> {
    if v.is_empty() {
        return Err(BerError::Range { what });
    }
    let mut subs = Vec::with_capacity(v.len() + 1);
    let mut acc: u64 = 0;
    let mut in_sub = false;
    for b in v {
        // A leading 0x80 would be a non-minimal encoding.
        if !in_sub && *b == 0x80 {
            return Err(BerError::Range { what });
        }
        acc = (acc << 7) | u64::from(b & 0x7f);
        if acc > u64::from(u32::MAX) + 80 {
            return Err(BerError::Range { what });
        }
        in_sub = b & 0x80 != 0;
        if !in_sub {
            if subs.is_empty() {
                let (a, b2) = match acc {
                    0..=39 => (0, acc),
                    40..=79 => (1, acc - 40),
                    _ => (2, acc - 80),
                };
                subs.push(a as u32);
                subs.push(u32::try_from(b2).map_err(|_| BerError::Range { what })?);
            } else {
                subs.push(u32::try_from(acc).map_err(|_| BerError::Range { what })?);
            }
            acc = 0;
            if subs.len() > MAX_OID_LEN {
                return Err(BerError::Range { what });
            }
        }
    }
    if in_sub {
        return Err(BerError::Truncated { what });
    }
    Ok(Oid(subs))
}

/// Appends a length in the shortest definite form.
fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = (len as u32).to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (4 - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// Appends one tag-length-value.
pub fn put(out: &mut Vec<u8>, t: u8, value: &[u8]) {
    out.push(t);
    push_len(out, value.len());
    out.extend_from_slice(value);
}

/// Appends a constructed value whose contents `f` writes; returns the contents' offset in
/// `out` (so a caller can find a field it wrote, such as the HMAC placeholder).
pub fn put_nested(out: &mut Vec<u8>, t: u8, f: impl FnOnce(&mut Vec<u8>)) -> usize {
    let mut inner = Vec::new();
    f(&mut inner);
    out.push(t);
    push_len(out, inner.len());
    let at = out.len();
    out.extend_from_slice(&inner);
    at
}

/// Minimal two's-complement bytes of `x`.
pub fn integer_bytes(x: i64) -> Vec<u8> {
    let bytes = x.to_be_bytes();
    let mut start = 0;
    while start < 7 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        if (b == 0 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    bytes[start..].to_vec()
}

/// Minimal unsigned bytes of `x`, with a leading zero when the top bit is set.
pub fn unsigned_bytes(x: u64) -> Vec<u8> {
    let bytes = x.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count().min(7);
    let mut v = Vec::with_capacity(9);
    if bytes[skip] & 0x80 != 0 {
        v.push(0);
    }
    v.extend_from_slice(&bytes[skip..]);
    v
}

/// Appends an INTEGER.
pub fn put_integer(out: &mut Vec<u8>, x: i64) {
    put(out, tag::INTEGER, &integer_bytes(x));
}

/// OBJECT IDENTIFIER contents. OIDs with fewer than two arcs encode as `0.0`.
pub fn oid_bytes(oid: &Oid) -> Vec<u8> {
    let mut v = Vec::with_capacity(oid.0.len() + 2);
    let (a, b) = (
        u64::from(oid.0.first().copied().unwrap_or(0)),
        u64::from(oid.0.get(1).copied().unwrap_or(0)),
    );
    let mut push_sub = |x: u64| {
        let mut tmp = [0u8; 10];
        let mut n = 0;
        let mut y = x;
        loop {
            tmp[n] = (y & 0x7f) as u8;
            n += 1;
            y >>= 7;
            if y == 0 {
                break;
            }
        }
        for i in (0..n).rev() {
            v.push(tmp[i] | if i > 0 { 0x80 } else { 0 });
        }
    };
    push_sub(a * 40 + b);
    for s in oid.0.iter().skip(2) {
        push_sub(u64::from(*s));
    }
    v
}

/// Appends an OBJECT IDENTIFIER.
pub fn put_oid(out: &mut Vec<u8>, oid: &Oid) {
    put(out, tag::OID, &oid_bytes(oid));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_round_trip_minimally() {
        for x in [
            0i64,
            1,
            127,
            128,
            255,
            256,
            -1,
            -128,
            -129,
            i64::MAX,
            i64::MIN,
            2_147_483_647,
        ] {
            let b = integer_bytes(x);
            assert_eq!(decode_integer(&b, "t").unwrap(), x, "{x}");
        }
        assert_eq!(integer_bytes(128), vec![0, 128]);
        assert_eq!(integer_bytes(-128), vec![0x80]);
        assert_eq!(unsigned_bytes(0xffff_ffff), vec![0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(
            decode_unsigned(&[0, 0xff, 0xff, 0xff, 0xff], 4, "t").unwrap(),
            0xffff_ffff
        );
        assert!(decode_unsigned(&[1, 0, 0, 0, 0], 4, "t").is_err());
        assert!(decode_integer(&[], "t").is_err());
    }

    #[test]
    fn oids_round_trip_and_match_x690() {
        let o: Oid = "1.3.6.1.4.1.318.1.1.12.3.3.1.1.4.3".parse().unwrap();
        let b = oid_bytes(&o);
        // 1.3 packs into 43; 318 is 0x82 0x3e.
        assert_eq!(&b[..6], &[0x2b, 6, 1, 4, 1, 0x82]);
        assert_eq!(decode_oid(&b, "t").unwrap(), o);
        let big = Oid(vec![2, 999, u32::MAX]);
        assert_eq!(decode_oid(&oid_bytes(&big), "t").unwrap(), big);
        assert!(decode_oid(&[0x2b, 0x86], "t").is_err());
        assert!(decode_oid(&[0x2b, 0x80, 1], "t").is_err());
        assert_eq!(o.to_string(), "1.3.6.1.4.1.318.1.1.12.3.3.1.1.4.3");
    }

    #[test]
    fn lengths_long_form_and_refusals() {
        let mut out = Vec::new();
        put(&mut out, tag::OCTET_STRING, &[7u8; 300]);
        assert_eq!(&out[..4], &[0x04, 0x82, 0x01, 0x2c]);
        let mut r = Reader::new(&out);
        assert_eq!(r.octets("s").unwrap().len(), 300);
        r.finish("s").unwrap();
        // Indefinite length and truncated value are refused.
        assert!(Reader::new(&[0x30, 0x80, 0, 0]).tlv("s").is_err());
        assert!(Reader::new(&[0x04, 0x05, 1]).tlv("s").is_err());
        assert!(Reader::new(&[0x04, 0x85, 1, 1, 1, 1, 1]).tlv("s").is_err());
    }
}
