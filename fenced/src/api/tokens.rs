//! Bearer tokens: random, shown once at creation, stored only as SHA-256 hashes.
//!
//! Why a plain SHA-256 and not a password hash (argon2, bcrypt): a token is 256 random bits,
//! not a human-chosen password, so there is no dictionary to try and a brute-force search of
//! 2^256 is out of reach however fast the hash is. A slow hash would only slow every request.
//! Comparisons are constant-time so timing does not reveal how much of a hash matched.
//!
//! The file (`api.tokens_file`) has one token per line: `NAME ROLE SHA256HEX CREATED_MS`.
//! `fenced token create|list|revoke` edit it; the daemon re-reads it when it changes, so no
//! restart or signal is needed.

use crate::config::{check_secret_file_mode, Role};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;
use zeroize::Zeroizing;

/// Prefix of every token, so a leaked one is recognisable (secret scanners, logs).
pub const TOKEN_PREFIX: &str = "pal_";

/// One stored token (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEntry {
    /// Its name (`ctrl-1`), recorded as identity `token:NAME`.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// SHA-256 of the token, lowercase hex.
    pub hash: String,
    /// When it was created, ms since the Unix epoch.
    pub created_ms: u64,
}

fn role_from(s: &str) -> Option<Role> {
    match s {
        "read" => Some(Role::Read),
        "fence" => Some(Role::Fence),
        "admin" => Some(Role::Admin),
        _ => None,
    }
}

fn hash_token(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut d = 0u8;
    for (x, y) in a.iter().zip(b) {
        d |= x ^ y;
    }
    // Keep the optimiser from short-circuiting the loop.
    std::hint::black_box(d) == 0
}

/// Why a tokens file could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// A line of the file is not `NAME ROLE SHA256HEX CREATED_MS`.
    #[error("{path}line {line}: expected `NAME ROLE SHA256HEX CREATED_MS`; recreate the token with `fenced token create`")]
    BadLine {
        /// The file and `: `, or empty when parsing text.
        path: String,
        /// 1-based line number.
        line: usize,
    },
    /// The file's permissions let others read it.
    #[error("{detail}")]
    Unsafe {
        /// What is wrong and the fix (`chmod 600 ...`).
        detail: String,
    },
    /// A token name with characters other than letters, digits, `-`, `_` or `.`.
    #[error("token name `{name}` must be letters, digits, `-`, `_` or `.`")]
    BadName {
        /// The name given.
        name: String,
    },
    /// A token with that name exists.
    #[error("a token named `{name}` exists; revoke it first (`fenced token revoke {name}`) or pick another name")]
    Exists {
        /// The name given.
        name: String,
    },
    /// The file could not be read or written.
    #[error(
        "cannot {what} {path}: {source}; check api.tokens_file and its directory's permissions"
    )]
    Io {
        /// What was being done (`read tokens file`, `write`, `replace`).
        what: &'static str,
        /// The file.
        path: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TokenError {
    let path = path.display().to_string();
    move |source| TokenError::Io { what, path, source }
}

/// Parses a tokens file's text.
pub fn parse(text: &str) -> Result<Vec<TokenEntry>, TokenError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let bad = || TokenError::BadLine {
            path: String::new(),
            line: i + 1,
        };
        if f.len() != 4 {
            return Err(bad());
        }
        let role = role_from(f[1]).ok_or_else(bad)?;
        if f[2].len() != 64 || !f[2].bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        out.push(TokenEntry {
            name: f[0].to_string(),
            role,
            hash: f[2].to_ascii_lowercase(),
            created_ms: f[3].parse().map_err(|_| bad())?,
        });
    }
    Ok(out)
}

/// Reads a tokens file (a missing file has no tokens); refuses one others can read.
pub fn read_file(path: &Path) -> Result<Vec<TokenEntry>, TokenError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            check_secret_file_mode(path).map_err(|e| TokenError::Unsafe {
                detail: e.to_string(),
            })?;
            parse(&text).map_err(|e| match e {
                TokenError::BadLine { line, .. } => TokenError::BadLine {
                    path: format!("{}: ", path.display()),
                    line,
                },
                other => other,
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_err("read tokens file", path)(e)),
    }
}

fn write_file(path: &Path, entries: &[TokenEntry]) -> Result<(), TokenError> {
    let mut text = String::from(
        "# Palisade API tokens (SHA-256 hashes; the tokens themselves are never stored).\n# Edit with `fenced token create|list|revoke`.\n",
    );
    for e in entries {
        text.push_str(&format!(
            "{} {} {} {}\n",
            e.name,
            e.role.as_str(),
            e.hash,
            e.created_ms
        ));
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err("write", &tmp))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io_err("write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err("replace", path))
}

/// Creates a token named `name` with `role`, stores its hash, and returns the token (the only
/// time it exists outside the caller).
pub fn create(path: &Path, name: &str, role: Role) -> Result<Zeroizing<String>, TokenError> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(TokenError::BadName {
            name: name.to_string(),
        });
    }
    let mut entries = read_file(path)?;
    if entries.iter().any(|e| e.name == name) {
        return Err(TokenError::Exists {
            name: name.to_string(),
        });
    }
    let mut raw = Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(raw.as_mut());
    let token = Zeroizing::new(format!("{TOKEN_PREFIX}{}", hex::encode(raw.as_ref())));
    let created_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    entries.push(TokenEntry {
        name: name.to_string(),
        role,
        hash: hex::encode(hash_token(token.as_bytes())),
        created_ms,
    });
    write_file(path, &entries)?;
    Ok(token)
}

/// Removes the token named `name`; false if there was none.
pub fn revoke(path: &Path, name: &str) -> Result<bool, TokenError> {
    let mut entries = read_file(path)?;
    let before = entries.len();
    entries.retain(|e| e.name != name);
    if entries.len() == before {
        return Ok(false);
    }
    write_file(path, &entries)?;
    Ok(true)
}

type Stamp = Option<(SystemTime, u64, u64)>;

/// The daemon's view of the tokens file, re-read whenever the file changes.
pub struct TokenStore {
    path: PathBuf,
    cache: Mutex<(Stamp, Vec<TokenEntry>)>,
}

impl TokenStore {
    /// A store over `path` (read at the first lookup).
    pub fn new(path: PathBuf) -> TokenStore {
        TokenStore {
            path,
            cache: Mutex::new((None, Vec::new())),
        }
    }

    /// The token's name and role, or `None` if no stored token matches. An unreadable or
    /// insecure file matches nothing (and is logged).
    pub fn lookup(&self, token: &[u8]) -> Option<(String, Role)> {
        use std::os::unix::fs::MetadataExt;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let stamp = std::fs::metadata(&self.path).ok().map(|m| {
            (
                m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                m.len(),
                m.ino(),
            )
        });
        if stamp != cache.0 || stamp.is_none() {
            match read_file(&self.path) {
                Ok(entries) => *cache = (stamp, entries),
                Err(e) => {
                    tracing::error!(
                        "tokens file refused, no token is accepted until it is fixed: {e}"
                    );
                    *cache = (None, Vec::new());
                }
            }
        }
        let h = hash_token(token);
        let mut found = None;
        // Compare against every entry, so the time taken does not tell which one matched.
        for e in &cache.1 {
            let mut stored = [0u8; 32];
            if hex::decode_to_slice(&e.hash, &mut stored).is_ok() && ct_eq(&stored, &h) {
                found = Some((e.name.clone(), e.role));
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_lookup_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens");
        let t = create(&p, "ctrl-1", Role::Fence).unwrap();
        assert!(t.starts_with(TOKEN_PREFIX) && t.len() == TOKEN_PREFIX.len() + 64);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            !text.contains(t.as_str()),
            "the token itself is never stored"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let store = TokenStore::new(p.clone());
        assert_eq!(
            store.lookup(t.as_bytes()),
            Some(("ctrl-1".into(), Role::Fence))
        );
        assert_eq!(store.lookup(b"pal_wrong"), None);
        assert!(create(&p, "ctrl-1", Role::Read).is_err());
        assert!(create(&p, "bad name", Role::Read).is_err());
        assert!(revoke(&p, "ctrl-1").unwrap());
        assert!(!revoke(&p, "ctrl-1").unwrap());
        assert_eq!(store.lookup(t.as_bytes()), None);
    }

    #[test]
    fn a_tokens_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokens");
        let t = create(&p, "a", Role::Admin).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_file(&p).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        assert_eq!(TokenStore::new(p).lookup(t.as_bytes()), None);
    }
}
