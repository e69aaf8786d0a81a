//! RMCP+ cryptography: cipher suites, the RAKP authentication codes, session key derivation,
//! per-packet integrity codes and AES-CBC-128 confidentiality (IPMI v2.0 §13.28–§13.32).
//!
//! Every function takes its inputs explicitly so the console (our client) and a BMC (the
//! simulator) call the same code with the same [`RakpInputs`]: the console checks RAKP 2 and
//! RAKP 4 and sends RAKP 3; the BMC sends RAKP 2 and RAKP 4 and checks RAKP 3.

use super::WireError;
use aes::Aes128;
use cbc::cipher::{block_padding::NoPadding, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;
use std::fmt;
use zeroize::Zeroizing;

/// RAKP authentication algorithm of a session (§13.28, Table 13-17).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthAlgorithm {
    /// RAKP-none: no authentication at all (cipher suite 0).
    None,
    /// RAKP-HMAC-SHA1 (cipher suite 3).
    HmacSha1,
    /// RAKP-HMAC-SHA256 (cipher suite 17).
    HmacSha256,
}

impl AuthAlgorithm {
    /// The algorithm number in Open Session payloads.
    pub fn to_byte(self) -> u8 {
        match self {
            AuthAlgorithm::None => 0x00,
            AuthAlgorithm::HmacSha1 => 0x01,
            AuthAlgorithm::HmacSha256 => 0x03,
        }
    }

    /// The algorithm for a wire number, if we implement it (RAKP-HMAC-MD5 is deliberately not).
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0x00 => Some(AuthAlgorithm::None),
            0x01 => Some(AuthAlgorithm::HmacSha1),
            0x03 => Some(AuthAlgorithm::HmacSha256),
            _ => None,
        }
    }

    /// Length of the RAKP 2 / RAKP 3 key exchange authentication codes (full HMAC output).
    pub fn auth_code_len(self) -> usize {
        match self {
            AuthAlgorithm::None => 0,
            AuthAlgorithm::HmacSha1 => 20,
            AuthAlgorithm::HmacSha256 => 32,
        }
    }

    /// Length of the RAKP 4 integrity check value: the HMAC truncated to 96 bits for SHA1 and
    /// 128 bits for SHA256 (§13.28.1, §13.28.4).
    pub fn rakp4_icv_len(self) -> usize {
        match self {
            AuthAlgorithm::None => 0,
            AuthAlgorithm::HmacSha1 => 12,
            AuthAlgorithm::HmacSha256 => 16,
        }
    }
}

/// Integrity algorithm of a session (§13.28.4, Table 13-18).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntegrityAlgorithm {
    /// No integrity trailer.
    None,
    /// HMAC-SHA1 truncated to 96 bits, keyed with K1.
    HmacSha1_96,
    /// HMAC-SHA256 truncated to 128 bits, keyed with K1.
    HmacSha256_128,
}

impl IntegrityAlgorithm {
    /// The algorithm number in Open Session payloads.
    pub fn to_byte(self) -> u8 {
        match self {
            IntegrityAlgorithm::None => 0x00,
            IntegrityAlgorithm::HmacSha1_96 => 0x01,
            IntegrityAlgorithm::HmacSha256_128 => 0x04,
        }
    }

    /// The algorithm for a wire number, if we implement it (MD5 variants deliberately not).
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0x00 => Some(IntegrityAlgorithm::None),
            0x01 => Some(IntegrityAlgorithm::HmacSha1_96),
            0x04 => Some(IntegrityAlgorithm::HmacSha256_128),
            _ => None,
        }
    }

    /// Length of the AuthCode field that ends every authenticated packet.
    pub fn auth_code_len(self) -> usize {
        match self {
            IntegrityAlgorithm::None => 0,
            IntegrityAlgorithm::HmacSha1_96 => 12,
            IntegrityAlgorithm::HmacSha256_128 => 16,
        }
    }
}

/// Confidentiality algorithm of a session (§13.28.5, Table 13-19).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfidentialityAlgorithm {
    /// Payloads travel in clear.
    None,
    /// AES-CBC-128 keyed with the first 16 bytes of K2, IPMI pad format (§13.29).
    AesCbc128,
}

impl ConfidentialityAlgorithm {
    /// The algorithm number in Open Session payloads.
    pub fn to_byte(self) -> u8 {
        match self {
            ConfidentialityAlgorithm::None => 0x00,
            ConfidentialityAlgorithm::AesCbc128 => 0x01,
        }
    }

    /// The algorithm for a wire number, if we implement it (xRC4 deliberately not).
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0x00 => Some(ConfidentialityAlgorithm::None),
            0x01 => Some(ConfidentialityAlgorithm::AesCbc128),
            _ => None,
        }
    }
}

/// A cipher suite: the three algorithms a session uses (§22.15.2, Table 22-20).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CipherSuite {
    /// The suite's number as BMCs and ipmitool's `-C` name it.
    pub id: u8,
    /// Authentication (RAKP) algorithm.
    pub auth: AuthAlgorithm,
    /// Per-packet integrity algorithm.
    pub integrity: IntegrityAlgorithm,
    /// Payload confidentiality algorithm.
    pub confidentiality: ConfidentialityAlgorithm,
}

impl CipherSuite {
    /// Suite 0: no authentication, integrity or encryption. Anyone on the network can fence.
    pub const SUITE_0: CipherSuite = CipherSuite {
        id: 0,
        auth: AuthAlgorithm::None,
        integrity: IntegrityAlgorithm::None,
        confidentiality: ConfidentialityAlgorithm::None,
    };
    /// Suite 3: RAKP-HMAC-SHA1, HMAC-SHA1-96, AES-CBC-128 (the one every BMC has).
    pub const SUITE_3: CipherSuite = CipherSuite {
        id: 3,
        auth: AuthAlgorithm::HmacSha1,
        integrity: IntegrityAlgorithm::HmacSha1_96,
        confidentiality: ConfidentialityAlgorithm::AesCbc128,
    };
    /// Suite 17: RAKP-HMAC-SHA256, HMAC-SHA256-128, AES-CBC-128 (preferred where offered).
    pub const SUITE_17: CipherSuite = CipherSuite {
        id: 17,
        auth: AuthAlgorithm::HmacSha256,
        integrity: IntegrityAlgorithm::HmacSha256_128,
        confidentiality: ConfidentialityAlgorithm::AesCbc128,
    };

    /// The suite with this number, if this driver implements it.
    pub fn from_id(id: u8) -> Option<CipherSuite> {
        match id {
            0 => Some(Self::SUITE_0),
            3 => Some(Self::SUITE_3),
            17 => Some(Self::SUITE_17),
            _ => None,
        }
    }

    /// The implemented suite with these wire algorithm numbers (as an Open Session Request
    /// proposes them), if any.
    pub fn from_algorithms(auth: u8, integrity: u8, confidentiality: u8) -> Option<CipherSuite> {
        [Self::SUITE_0, Self::SUITE_3, Self::SUITE_17]
            .into_iter()
            .find(|s| {
                s.auth.to_byte() == auth
                    && s.integrity.to_byte() == integrity
                    && s.confidentiality.to_byte() == confidentiality
            })
    }
}

/// Everything both sides feed into the RAKP codes and the SIK, named as this crate names
/// things (the spec's SIDm/SIDc/Rm/Rc naming is easy to swap; §13.31 notes in brackets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RakpInputs<'a> {
    /// The session id the console chose (SIDm; BMC-to-console packets carry it).
    pub console_session_id: u32,
    /// The session id the BMC chose (SIDc; console-to-BMC packets carry it).
    pub bmc_session_id: u32,
    /// The console's random number from RAKP 1 (Rm).
    pub console_random: [u8; 16],
    /// The BMC's random number from RAKP 2 (Rc).
    pub bmc_random: [u8; 16],
    /// The BMC's GUID exactly as sent in RAKP 2 (GUIDc), wire byte order.
    pub bmc_guid: [u8; 16],
    /// The whole "requested maximum privilege" byte of RAKP 1, including the name-only
    /// lookup bit 4 (ROLEm): the HMACs cover the byte as sent, not just the level.
    pub role: u8,
    /// The user name as sent in RAKP 1 (UNAMEm), at most 16 bytes.
    pub username: &'a [u8],
}

impl RakpInputs<'_> {
    fn username_len_byte(&self) -> u8 {
        u8::try_from(self.username.len()).unwrap_or(u8::MAX)
    }
}

/// Computes HMAC over the concatenation of `parts`; returns the full digest.
fn hmac(alg: AuthAlgorithm, key: &[u8], parts: &[&[u8]]) -> Zeroizing<Vec<u8>> {
    // HMAC accepts keys of any length (longer ones are hashed, RFC 2104 §2), so
    // `new_from_slice` cannot fail; an empty result would still never verify.
    match alg {
        AuthAlgorithm::None => Zeroizing::new(Vec::new()),
        AuthAlgorithm::HmacSha1 => match Hmac::<Sha1>::new_from_slice(key) {
            Ok(mut m) => {
                parts.iter().for_each(|p| m.update(p));
                Zeroizing::new(m.finalize().into_bytes().to_vec())
            }
            Err(_) => Zeroizing::new(Vec::new()),
        },
        AuthAlgorithm::HmacSha256 => match Hmac::<Sha256>::new_from_slice(key) {
            Ok(mut m) => {
                parts.iter().for_each(|p| m.update(p));
                Zeroizing::new(m.finalize().into_bytes().to_vec())
            }
            Err(_) => Zeroizing::new(Vec::new()),
        },
    }
}

/// Compares two byte strings in time independent of where they differ, so a forger cannot
/// learn an AuthCode byte by byte from our reply timing.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// RAKP 2 key exchange authentication code, keyed with the user's password Kuid (§13.31):
/// HMAC(SIDm | SIDc | Rm | Rc | GUIDc | ROLEm | ULENGTHm | UNAMEm).
pub fn rakp2_auth_code(alg: AuthAlgorithm, kuid: &[u8], i: &RakpInputs<'_>) -> Vec<u8> {
    hmac(
        alg,
        kuid,
        &[
            &i.console_session_id.to_le_bytes(),
            &i.bmc_session_id.to_le_bytes(),
            &i.console_random,
            &i.bmc_random,
            &i.bmc_guid,
            &[i.role, i.username_len_byte()],
            i.username,
        ],
    )
    .to_vec()
}

/// RAKP 3 key exchange authentication code, keyed with Kuid (§13.31):
/// HMAC(Rc | SIDm | ROLEm | ULENGTHm | UNAMEm).
pub fn rakp3_auth_code(alg: AuthAlgorithm, kuid: &[u8], i: &RakpInputs<'_>) -> Vec<u8> {
    hmac(
        alg,
        kuid,
        &[
            &i.bmc_random,
            &i.console_session_id.to_le_bytes(),
            &[i.role, i.username_len_byte()],
            i.username,
        ],
    )
    .to_vec()
}

/// The Session Integrity Key (§13.31): HMAC_Kg(Rm | Rc | ROLEm | ULENGTHm | UNAMEm).
/// Kg is the BMC key; when it is unset (or all zeros) the spec says to use Kuid instead.
pub fn session_integrity_key(
    alg: AuthAlgorithm,
    kuid: &[u8],
    kg: Option<&[u8]>,
    i: &RakpInputs<'_>,
) -> Zeroizing<Vec<u8>> {
    let key = match kg {
        Some(k) if k.iter().any(|&b| b != 0) => k,
        _ => kuid,
    };
    hmac(
        alg,
        key,
        &[
            &i.console_random,
            &i.bmc_random,
            &[i.role, i.username_len_byte()],
            i.username,
        ],
    )
}

/// RAKP 4 integrity check value, keyed with the SIK (§13.31): HMAC_SIK(Rm | SIDc | GUIDc),
/// truncated to [`AuthAlgorithm::rakp4_icv_len`].
pub fn rakp4_integrity_check(alg: AuthAlgorithm, sik: &[u8], i: &RakpInputs<'_>) -> Vec<u8> {
    let mut v = hmac(
        alg,
        sik,
        &[
            &i.console_random,
            &i.bmc_session_id.to_le_bytes(),
            &i.bmc_guid,
        ],
    )
    .to_vec();
    v.truncate(alg.rakp4_icv_len());
    v
}

/// The keys of an open session: SIK and the K1 (integrity) and K2 (confidentiality) keys
/// derived from it (§13.32). Zeroized on drop; `Debug` shows no key material.
#[derive(Clone)]
pub struct SessionKeys {
    suite: CipherSuite,
    sik: Zeroizing<Vec<u8>>,
    k1: Zeroizing<Vec<u8>>,
    k2: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionKeys")
            .field("suite", &self.suite.id)
            .finish_non_exhaustive()
    }
}

impl SessionKeys {
    /// Derives the session keys both sides hold after RAKP: SIK from Kuid/Kg, then K1 and K2.
    pub fn derive(suite: CipherSuite, kuid: &[u8], kg: Option<&[u8]>, i: &RakpInputs<'_>) -> Self {
        let sik = session_integrity_key(suite.auth, kuid, kg, i);
        Self::from_sik(suite, sik)
    }

    /// Builds the keys from a known SIK: K1 = HMAC_SIK(0x01 × 20), K2 = HMAC_SIK(0x02 × 20)
    /// (§13.32). The constants are 20 bytes for RAKP-HMAC-SHA256 too: the spec defines them
    /// as 20 bytes and ipmitool (`lanplus_generate_k1/k2`) and FreeIPMI use 20 with every
    /// algorithm, so BMCs that interoperate with them do the same (checked against ipmitool
    /// `-C 17` in drivers/tests/ipmi_client_fake_bmc.rs).
    pub fn from_sik(suite: CipherSuite, sik: Zeroizing<Vec<u8>>) -> Self {
        let k1 = hmac(suite.auth, &sik, &[&[0x01; 20]]);
        let k2 = hmac(suite.auth, &sik, &[&[0x02; 20]]);
        Self { suite, sik, k1, k2 }
    }

    /// The cipher suite these keys belong to.
    pub fn suite(&self) -> CipherSuite {
        self.suite
    }

    /// The Session Integrity Key (keys the RAKP 4 check value).
    pub fn sik(&self) -> &[u8] {
        &self.sik
    }

    /// Length of the AuthCode this session puts on each packet.
    pub fn auth_code_len(&self) -> usize {
        self.suite.integrity.auth_code_len()
    }

    /// The AuthCode over `data` (the packet from AuthType through Next Header, §13.28.4).
    pub fn auth_code(&self, data: &[u8]) -> Vec<u8> {
        let alg = match self.suite.integrity {
            IntegrityAlgorithm::None => return Vec::new(),
            IntegrityAlgorithm::HmacSha1_96 => AuthAlgorithm::HmacSha1,
            IntegrityAlgorithm::HmacSha256_128 => AuthAlgorithm::HmacSha256,
        };
        let mut v = hmac(alg, &self.k1, &[data]).to_vec();
        v.truncate(self.auth_code_len());
        v
    }

    /// Checks an AuthCode in constant time.
    pub fn verify_auth_code(&self, data: &[u8], code: &[u8]) -> bool {
        constant_time_eq(&self.auth_code(data), code)
    }

    fn aes_key(&self) -> Option<&[u8]> {
        self.k2.get(..16)
    }

    /// Encrypts a payload: IV, then AES-CBC-128 of data + pad 1, 2, … n + pad length n, padded
    /// to a whole block (§13.29). Without confidentiality the payload is returned unchanged.
    pub fn encrypt(&self, iv: [u8; 16], plain: &[u8]) -> Vec<u8> {
        let key = match (self.suite.confidentiality, self.aes_key()) {
            (ConfidentialityAlgorithm::AesCbc128, Some(k)) => k,
            _ => return plain.to_vec(),
        };
        let pad_len = (16 - (plain.len() + 1) % 16) % 16;
        let mut buf = Zeroizing::new(Vec::with_capacity(plain.len() + pad_len + 1));
        buf.extend_from_slice(plain);
        // pad_len < 16, so the casts below cannot truncate.
        buf.extend((1..=pad_len).map(|b| b as u8));
        buf.push(pad_len as u8);
        let len = buf.len();
        let mut out = Vec::with_capacity(16 + len);
        out.extend_from_slice(&iv);
        if let Ok(enc) = cbc::Encryptor::<Aes128>::new_from_slices(key, &iv) {
            if let Ok(ct) = enc.encrypt_padded_mut::<NoPadding>(&mut buf, len) {
                out.extend_from_slice(ct);
            }
        }
        out
    }

    /// Decrypts a payload produced by [`SessionKeys::encrypt`]. Call it only after the
    /// AuthCode has been verified (§13.28.4: integrity covers the ciphertext), so garbage is
    /// never fed to the cipher.
    pub fn decrypt(&self, payload: &[u8]) -> Result<Vec<u8>, WireError> {
        let key = match (self.suite.confidentiality, self.aes_key()) {
            (ConfidentialityAlgorithm::AesCbc128, Some(k)) => k,
            _ => return Ok(payload.to_vec()),
        };
        let iv = payload
            .get(..16)
            .ok_or(WireError::Decrypt("payload shorter than the IV"))?;
        let ct = payload.get(16..).unwrap_or_default();
        if ct.is_empty() || ct.len() % 16 != 0 {
            return Err(WireError::Decrypt(
                "ciphertext is not a whole number of blocks",
            ));
        }
        let mut buf = Zeroizing::new(ct.to_vec());
        let dec = cbc::Decryptor::<Aes128>::new_from_slices(key, iv)
            .map_err(|_| WireError::Decrypt("bad key or IV length"))?;
        let plain = dec
            .decrypt_padded_mut::<NoPadding>(&mut buf)
            .map_err(|_| WireError::Decrypt("block decryption failed"))?;
        let (&pad_len, rest) = plain
            .split_last()
            .ok_or(WireError::Decrypt("empty plaintext"))?;
        let pad_len = usize::from(pad_len);
        // The pad bytes' values are not checked: the AuthCode already authenticated the
        // ciphertext, and some BMC firmwares are known to pad with zeros instead of 1, 2, ….
        if pad_len > 15 || pad_len > rest.len() {
            return Err(WireError::Decrypt(
                "confidentiality pad length out of range",
            ));
        }
        Ok(rest
            .get(..rest.len() - pad_len)
            .unwrap_or_default()
            .to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }
    fn arr16(s: &str) -> [u8; 16] {
        hex(s).try_into().unwrap()
    }

    /// The session in testdata/ipmitool-1.8.19-lanplus-C3-vs-ipmi_sim.txt (user "u", password
    /// "p", suite 3), captured with `ipmitool -vvvvv` against OpenIPMI ipmi_sim.
    fn captured() -> RakpInputs<'static> {
        RakpInputs {
            console_session_id: 0xa0a2a3a4,
            bmc_session_id: 0x0000_0182,
            console_random: arr16("7b 8f e6 93 84 e3 07 93 2a 7b 05 53 df c5 e1 01"),
            bmc_random: arr16("ce 74 99 e7 60 d8 d8 bc a9 2c 1b a3 d3 5b d6 f5"),
            bmc_guid: arr16("a1 23 45 67 89 ab cd ef a1 23 45 67 89 ab cd ef"),
            role: 0x14,
            username: b"u",
        }
    }

    #[test]
    fn rakp_codes_match_ipmitool_and_ipmi_sim() {
        let i = captured();
        let a = AuthAlgorithm::HmacSha1;
        assert_eq!(
            rakp2_auth_code(a, b"p", &i),
            hex("26 b7 47 07 1b 52 0f 0c d8 ac be 43 db b6 c4 fd a8 54 44 fe")
        );
        assert_eq!(
            rakp3_auth_code(a, b"p", &i),
            hex("c1 fe 96 15 3c 48 b4 1b 74 8c fa 50 23 10 09 5f 97 5d 97 ad")
        );
        let keys = SessionKeys::derive(CipherSuite::SUITE_3, b"p", None, &i);
        assert_eq!(
            keys.sik(),
            hex("04 92 0b e1 32 74 25 61 a2 d0 1f de c0 db 4d 81 52 49 6a 3f")
        );
        assert_eq!(
            *keys.k1,
            hex("2c cc 5d a3 a1 8d ad 6f 96 e9 87 c3 d9 af ae 0a a7 4c 98 cd")
        );
        assert_eq!(
            *keys.k2,
            hex("c8 c8 43 8c ac fb 7f 4b 6a 61 3b e7 7f c9 94 dc 6f 90 0e e5")
        );
        // ipmi_sim's RAKP 4 (first 12 bytes of the HMAC).
        assert_eq!(
            rakp4_integrity_check(a, keys.sik(), &i),
            hex("42 8e b2 bc 5b e5 c4 f0 ae b8 aa a3")
        );
        // A zero Kg means "no BMC key": Kuid is used.
        let zero_kg = SessionKeys::derive(CipherSuite::SUITE_3, b"p", Some(&[0; 20]), &i);
        assert_eq!(zero_kg.sik(), keys.sik());
    }

    #[test]
    fn integrity_and_encryption_match_ipmitool() {
        let keys = SessionKeys::derive(CipherSuite::SUITE_3, b"p", None, &captured());
        let iv = arr16("b8 23 38 10 fc 35 3f a1 04 24 3b 48 e8 57 ae e5");
        let plain = hex("20 18 c8 81 04 3b 04 3c");
        let enc = keys.encrypt(iv, &plain);
        assert_eq!(
            enc,
            hex("b8 23 38 10 fc 35 3f a1 04 24 3b 48 e8 57 ae e5 fe 1b 6c be 01 26 27 6c b8 14 8a 0b 6c cb 48 82")
        );
        assert_eq!(keys.decrypt(&enc).unwrap(), plain);
        let signed = hex(
            "06 c0 82 01 00 00 03 00 00 00 20 00 b8 23 38 10 fc 35 3f a1 04 24 3b 48 e8 57 ae e5 fe 1b 6c be 01 26 27 6c b8 14 8a 0b 6c cb 48 82 ff ff 02 07",
        );
        assert_eq!(
            keys.auth_code(&signed),
            hex("cc e8 a0 b5 2b 1c cc db d0 b2 53 3a")
        );
        assert!(keys.verify_auth_code(&signed, &hex("cc e8 a0 b5 2b 1c cc db d0 b2 53 3a")));
        assert!(!keys.verify_auth_code(&signed, &hex("cc e8 a0 b5 2b 1c cc db d0 b2 53 3b")));
    }

    #[test]
    fn sha256_suite_lengths_and_round_trip() {
        let i = captured();
        let keys = SessionKeys::derive(CipherSuite::SUITE_17, b"p", None, &i);
        assert_eq!(keys.sik().len(), 32);
        assert_eq!(keys.auth_code(b"x").len(), 16);
        assert_eq!(
            rakp2_auth_code(AuthAlgorithm::HmacSha256, b"p", &i).len(),
            32
        );
        assert_eq!(
            rakp4_integrity_check(AuthAlgorithm::HmacSha256, keys.sik(), &i).len(),
            16
        );
        for n in 0..40 {
            let plain: Vec<u8> = (0..n).collect();
            let enc = keys.encrypt([7; 16], &plain);
            assert_eq!((enc.len() - 16) % 16, 0);
            assert_eq!(keys.decrypt(&enc).unwrap(), plain);
        }
        assert!(keys.decrypt(&[0; 15]).is_err());
        assert!(keys.decrypt(&[0; 17]).is_err());
    }

    #[test]
    fn suites_by_algorithms() {
        assert_eq!(
            CipherSuite::from_algorithms(1, 1, 1),
            Some(CipherSuite::SUITE_3)
        );
        assert_eq!(
            CipherSuite::from_algorithms(3, 4, 1),
            Some(CipherSuite::SUITE_17)
        );
        assert_eq!(CipherSuite::from_algorithms(2, 2, 1), None);
        assert_eq!(CipherSuite::from_id(17), Some(CipherSuite::SUITE_17));
    }
}
