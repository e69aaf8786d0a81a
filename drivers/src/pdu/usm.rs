//! The User-based Security Model's cryptography: password to key and key localisation
//! (RFC 3414 §2.6, A.2), HMAC-SHA-96 authentication (RFC 3414 §7), HMAC-SHA-256-192
//! (RFC 7860) and AES-128-CFB privacy (RFC 3826). Pure functions; keys are zeroized on drop.
//!
//! MD5 and DES are not offered: both are broken, `fence_apc_snmp`'s own tests use SHA/AES, and
//! leaving them out keeps two more crates out of `fenced`.

use aes::cipher::{generic_array::GenericArray, BlockEncrypt, KeyInit};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// An authentication protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthProtocol {
    /// usmHMACSHAAuthProtocol: HMAC-SHA-1 truncated to 96 bits.
    Sha1,
    /// usmHMAC192SHA256AuthProtocol: HMAC-SHA-256 truncated to 192 bits.
    Sha256,
}

impl AuthProtocol {
    /// Length of msgAuthenticationParameters.
    pub fn mac_len(self) -> usize {
        match self {
            AuthProtocol::Sha1 => 12,
            AuthProtocol::Sha256 => 24,
        }
    }

    /// The name net-snmp's `-a` option takes.
    pub fn net_snmp_name(self) -> &'static str {
        match self {
            AuthProtocol::Sha1 => "SHA",
            AuthProtocol::Sha256 => "SHA-256",
        }
    }
}

/// A privacy protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivProtocol {
    /// usmAesCfb128Protocol (RFC 3826).
    Aes128,
}

/// A localised key (Kul): the password key bound to one engine id.
#[derive(Clone)]
pub struct LocalKey(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for LocalKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalKey(***)")
    }
}

/// Hashes 1 MiB of the repeated password (RFC 3414 A.2.1 / A.2.2), then localises the result
/// to `engine_id`: H(Ku || engineID || Ku). An empty password yields an error upstream; here
/// it is the caller's job to refuse it (the RFC requires at least 8 characters).
pub fn localize(proto: AuthProtocol, password: &[u8], engine_id: &[u8]) -> LocalKey {
    fn expand<D: Digest>(password: &[u8], engine_id: &[u8]) -> Zeroizing<Vec<u8>> {
        let mut h = D::new();
        if !password.is_empty() {
            let mut block = Zeroizing::new([0u8; 64]);
            let mut idx = 0usize;
            for _ in 0..(1_048_576 / 64) {
                for b in block.iter_mut() {
                    *b = password[idx % password.len()];
                    idx += 1;
                }
                h.update(&block[..]);
            }
        }
        let ku = Zeroizing::new(h.finalize().to_vec());
        let mut h = D::new();
        h.update(&ku[..]);
        h.update(engine_id);
        h.update(&ku[..]);
        Zeroizing::new(h.finalize().to_vec())
    }
    LocalKey(match proto {
        AuthProtocol::Sha1 => expand::<Sha1>(password, engine_id),
        AuthProtocol::Sha256 => expand::<Sha256>(password, engine_id),
    })
}

impl LocalKey {
    /// A key given directly (already localised), e.g. from an agent's stored configuration.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        LocalKey(Zeroizing::new(bytes))
    }

    /// The key bytes, for tests against the RFC's vectors.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// The truncated HMAC of `message` (computed with the authentication field zeroed).
    pub fn mac(&self, proto: AuthProtocol, message: &[u8]) -> Vec<u8> {
        let full = match proto {
            AuthProtocol::Sha1 => <Hmac<Sha1> as Mac>::new_from_slice(&self.0)
                .map(|mut m| {
                    m.update(message);
                    m.finalize().into_bytes().to_vec()
                })
                .unwrap_or_default(),
            AuthProtocol::Sha256 => <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
                .map(|mut m| {
                    m.update(message);
                    m.finalize().into_bytes().to_vec()
                })
                .unwrap_or_default(),
        };
        full.get(..proto.mac_len())
            .map(<[u8]>::to_vec)
            .unwrap_or_default()
    }

    /// Writes the HMAC of `message` into its authentication field at `offset` (which must
    /// hold `mac_len` zero bytes).
    pub fn sign(&self, proto: AuthProtocol, message: &mut [u8], offset: usize) -> bool {
        let mac = self.mac(proto, message);
        match message.get_mut(offset..offset + mac.len()) {
            Some(slot) if mac.len() == proto.mac_len() => {
                slot.copy_from_slice(&mac);
                true
            }
            _ => false,
        }
    }

    /// Checks the HMAC in `message` at `offset`, in constant time.
    pub fn verify(&self, proto: AuthProtocol, message: &[u8], offset: usize) -> bool {
        let n = proto.mac_len();
        let Some(given) = message.get(offset..offset + n) else {
            return false;
        };
        let mut zeroed = message.to_vec();
        zeroed[offset..offset + n].fill(0);
        let want = self.mac(proto, &zeroed);
        want.len() == n
            && want
                .iter()
                .zip(given)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// AES-128-CFB (RFC 3826 §3.1): the key is the first 16 bytes of the localised privacy
    /// key, the IV is engineBoots ‖ engineTime ‖ the 8-byte salt sent as
    /// msgPrivacyParameters. CFB needs no padding and is its own inverse but for the feedback.
    pub fn aes_cfb(
        &self,
        boots: u32,
        time: u32,
        salt: &[u8; 8],
        data: &[u8],
        encrypt: bool,
    ) -> Vec<u8> {
        let Some(key) = self.0.get(..16) else {
            return Vec::new();
        };
        let Ok(cipher) = aes::Aes128::new_from_slice(key) else {
            return Vec::new();
        };
        let mut iv = [0u8; 16];
        iv[..4].copy_from_slice(&boots.to_be_bytes());
        iv[4..8].copy_from_slice(&time.to_be_bytes());
        iv[8..].copy_from_slice(salt);
        let mut out = Vec::with_capacity(data.len());
        let mut feedback = GenericArray::from(iv);
        for chunk in data.chunks(16) {
            let mut ks = feedback;
            cipher.encrypt_block(&mut ks);
            let mut next = [0u8; 16];
            for (i, b) in chunk.iter().enumerate() {
                let c = b ^ ks[i];
                out.push(c);
                next[i] = if encrypt { c } else { *b };
            }
            feedback = GenericArray::from(next);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn rfc3414_a3_2_sha1_localised_key() {
        // RFC 3414 A.3.2: password "maplesyrup", engine id 000000000000000000000002.
        let k = localize(
            AuthProtocol::Sha1,
            b"maplesyrup",
            &hex("000000000000000000000002"),
        );
        assert_eq!(
            k.bytes(),
            &hex("6695febc9288e36282235fc7151f128497b38f3f")[..]
        );
    }

    #[test]
    fn rfc7860_sha256_localised_key() {
        // The same password and engine id with SHA-256; expected value computed independently
        // with Python hashlib (RFC 7860 gives no test vector).
        let k = localize(
            AuthProtocol::Sha256,
            b"maplesyrup",
            &hex("000000000000000000000002"),
        );
        assert_eq!(
            k.bytes(),
            &hex("8982e0e549e866db361a6b625d84cccc11162d453ee8ce3a6445c2d6776f0f8b")[..]
        );
    }

    #[test]
    fn aes_cfb_round_trips_and_signature_verifies() {
        let k = localize(AuthProtocol::Sha1, b"privpass1", b"engine");
        let salt = [9u8; 8];
        let plain = b"a scopedPDU that is not a multiple of sixteen bytes".to_vec();
        let c = k.aes_cfb(3, 700, &salt, &plain, true);
        assert_ne!(c, plain);
        assert_eq!(k.aes_cfb(3, 700, &salt, &c, false), plain);
        assert_ne!(k.aes_cfb(3, 701, &salt, &c, false), plain);
        let mut msg = vec![1u8; 40];
        msg[10..22].fill(0);
        assert!(k.sign(AuthProtocol::Sha1, &mut msg, 10));
        assert!(k.verify(AuthProtocol::Sha1, &msg, 10));
        msg[0] ^= 1;
        assert!(!k.verify(AuthProtocol::Sha1, &msg, 10));
    }
}
