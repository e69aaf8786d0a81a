//! Secrets (device passwords, keys) held so that they are zeroized on drop and never printed.

use std::fmt;
use zeroize::Zeroizing;

/// A secret byte string: zeroized on drop, shown as `***` by `Debug` and `Display`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Wraps secret bytes; the caller's copy should be dropped (or zeroized) afterwards.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Builds a secret from the contents of a password file: one trailing newline (`\n` or
    /// `\r\n`) is removed, since editors add one and no BMC password ends in a newline.
    pub fn from_file_contents(mut bytes: Vec<u8>) -> Self {
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        Self::new(bytes)
    }

    /// The secret bytes; use them only to compute authentication codes, never to log.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new(b"hunter2".to_vec());
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        assert_eq!(s.expose(), b"hunter2");
    }

    #[test]
    fn file_contents_lose_one_trailing_newline_only() {
        assert_eq!(
            Secret::from_file_contents(b"pw\r\n".to_vec()).expose(),
            b"pw"
        );
        assert_eq!(
            Secret::from_file_contents(b"pw\n\n".to_vec()).expose(),
            b"pw\n"
        );
        assert_eq!(Secret::from_file_contents(b"pw".to_vec()).expose(), b"pw");
    }
}
