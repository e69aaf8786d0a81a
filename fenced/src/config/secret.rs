//! Secrets named in the config: `NAME_file` (a file only fenced's user can read) or `NAME_env`
//! (an environment variable), never the secret itself. An empty secret is refused everywhere;
//! a BMC user that really has no password is said so with `empty_password = true`.

use super::device::DeviceCx;
use super::ConfigError;
use drivers::Secret;
use serde_spanned::Spanned;
use std::path::{Path, PathBuf};

/// Why a file holding a secret cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// The file cannot be read (missing, no permission).
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The path names a directory.
    #[error("{} is a directory; name the file that holds the secret", path.display())]
    Directory {
        /// The path.
        path: PathBuf,
    },
    /// The path names something other than a file (a device, a FIFO, a socket).
    #[error("{} is not a regular file; name a file that holds the secret", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// Group or others can access it.
    #[error("{} holds a secret but its mode is {mode:04o} (group or others can access it); run `chmod 600 {}` (and make it owned by the user fenced runs as)", path.display(), path.display())]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// Refuses a file holding a secret that group or others can read or write, as ssh refuses
/// such private keys, and a path that is not a regular file; the error says how to fix it.
pub fn check_secret_file_mode(path: &Path) -> Result<(), SecretFileError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| SecretFileError::Unreadable {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_dir() {
        return Err(SecretFileError::Directory {
            path: path.to_path_buf(),
        });
    }
    if !meta.is_file() {
        return Err(SecretFileError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretFileError::TooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Reads a secret file after [`check_secret_file_mode`]; one trailing newline is dropped.
fn read_secret_file(path: &Path) -> Result<Secret, SecretFileError> {
    check_secret_file_mode(path)?;
    std::fs::read(path)
        .map(Secret::from_file_contents)
        .map_err(|source| SecretFileError::Unreadable {
            path: path.to_path_buf(),
            source,
        })
}

impl DeviceCx<'_> {
    /// A secret given as `{base}_file` or `{base}_env`, if either is; an empty one is refused
    /// with `empty_hint` (what to do if it really is empty).
    pub(crate) fn secret(
        &self,
        base: &str,
        file: &Option<Spanned<PathBuf>>,
        var: &Option<Spanned<String>>,
        empty_hint: &str,
    ) -> Result<Option<Secret>, ConfigError> {
        let file_field = format!("{base}_file");
        let env_field = format!("{base}_env");
        match (file, var) {
            (Some(f), Some(_)) => Err(self.at(
                f,
                &file_field,
                format!("give either {file_field} or {env_field}, not both"),
            )),
            (Some(f), None) => {
                let path = self.path(f.get_ref());
                let s =
                    read_secret_file(&path).map_err(|e| self.at(f, &file_field, e.to_string()))?;
                if s.is_empty() {
                    return Err(self.at(
                        f,
                        &file_field,
                        format!("{} is empty; {empty_hint}", path.display()),
                    ));
                }
                Ok(Some(s))
            }
            (None, Some(v)) => {
                // The kernel keeps the initial environment readable in /proc/PID/environ (to
                // root and the same user) for the life of the process, whatever we do with it.
                tracing::warn!(
                    "{}: the secret stays readable in fenced's /proc/PID/environ; prefer {}",
                    self.field(&env_field),
                    file_field
                );
                let s = self.ctx.env(v.get_ref()).map(Secret::from_file_contents);
                match s {
                    None => Err(self.at(
                        v,
                        &env_field,
                        format!("environment variable {} is not set", v.get_ref()),
                    )),
                    Some(s) if s.is_empty() => Err(self.at(
                        v,
                        &env_field,
                        format!(
                            "environment variable {} is empty; {empty_hint}",
                            v.get_ref()
                        ),
                    )),
                    Some(s) => Ok(Some(s)),
                }
            }
            (None, None) => Ok(None),
        }
    }

    /// A BMC's password: `password_file`, `password_env`, or `empty_password = true` for a
    /// user that really has none. Exactly one of them.
    pub(crate) fn bmc_password(
        &self,
        file: &Option<Spanned<PathBuf>>,
        var: &Option<Spanned<String>>,
        empty: &Option<Spanned<bool>>,
    ) -> Result<Secret, ConfigError> {
        let hint = "put the password in it, or, if this BMC user really has no password, remove password_file/password_env and set `empty_password = true`";
        match empty {
            Some(e) if *e.get_ref() => {
                if file.is_some() || var.is_some() {
                    return Err(self.at(
                        e,
                        "empty_password",
                        "give either empty_password = true or password_file/password_env, not both",
                    ));
                }
                tracing::warn!(
                    "{}: the BMC user has an empty password: anyone who can reach the BMC can log in as it",
                    self.field("empty_password")
                );
                Ok(Secret::default())
            }
            _ => self.secret("password", file, var, hint)?.ok_or_else(|| {
                self.missing(
                    "password_file",
                    "expected password_file = \"PATH\" or password_env = \"VAR\" (passwords are never written in the config itself; for a BMC user without a password, empty_password = true)",
                )
            }),
        }
    }
}
