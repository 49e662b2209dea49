//! Where the key-encryption key comes from: a key file or an environment variable, and the
//! generated key file a fresh install starts with.
//!
//! The text is 64 hexadecimal digits (32 bytes); lines starting with `#` are comments, so a
//! generated file can say what it is.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::{KEY_LEN, Kek, random_key};

/// Where the KEK is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A key file the operator configured (`[storage] key_file`): it must exist.
    File(PathBuf),
    /// An environment variable the operator named (`[storage] key_env`): it must be set.
    Env(String),
    /// Nothing configured: the file beside the database, generated at the first start.
    Default(PathBuf),
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::File(p) | KeySource::Default(p) => write!(f, "key file {}", p.display()),
            KeySource::Env(v) => write!(f, "environment variable {v}"),
        }
    }
}

/// Why the KEK could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyLoadError {
    /// The file could not be read (or created).
    #[error("cannot read the key file {file}: {source}; check the path and its permissions")]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The variable is not set.
    #[error(
        "the environment variable {0} named by [storage] key_env is not set; set it to the key \
         (64 hexadecimal digits)"
    )]
    EnvMissing(String),
    /// The text is malformed.
    #[error("{source_name}: {error}")]
    Malformed {
        /// Where the text came from.
        source_name: String,
        /// What is wrong.
        error: super::CryptoError,
    },
    /// The key file cannot be created.
    #[error(
        "cannot create the key file {file}: {source}; check that its directory exists and is \
         writable"
    )]
    Create {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl KeySource {
    /// Reads the KEK. A [`KeySource::Default`] file that does not exist yields `Ok(None)`: the
    /// caller decides whether generating one is safe (only for a database without data keys).
    pub fn load(&self) -> Result<Option<Kek>, KeyLoadError> {
        let (text, name) = match self {
            KeySource::Env(var) => match std::env::var(var) {
                Ok(v) => (Zeroizing::new(v), format!("environment variable {var}")),
                Err(_) => return Err(KeyLoadError::EnvMissing(var.clone())),
            },
            KeySource::File(p) | KeySource::Default(p) => match std::fs::read_to_string(p) {
                Ok(t) => (Zeroizing::new(t), format!("key file {}", p.display())),
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound
                        && matches!(self, KeySource::Default(_)) =>
                {
                    return Ok(None);
                }
                Err(source) => {
                    return Err(KeyLoadError::Read {
                        file: p.clone(),
                        source,
                    });
                }
            },
        };
        load_key_text(&text)
            .map(Some)
            .map_err(|error| KeyLoadError::Malformed {
                source_name: name,
                error,
            })
    }
}

/// Parses key text: 64 hex digits, ignoring blank lines, `#` comments and surrounding space.
pub fn load_key_text(text: &str) -> Result<Kek, super::CryptoError> {
    let hex: Zeroizing<String> = Zeroizing::new(
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect(),
    );
    if hex.len() != 2 * KEY_LEN {
        return Err(super::CryptoError::BadKeyText);
    }
    let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
    for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
        let hi = hex_digit(pair[0]).ok_or(super::CryptoError::BadKeyText)?;
        let lo = hex_digit(pair[1]).ok_or(super::CryptoError::BadKeyText)?;
        bytes[i] = (hi << 4) | lo;
    }
    Ok(Kek::from_bytes(&bytes))
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Writes a new random key to `path`, which must not exist, readable by its owner only (0600),
/// and returns it.
pub fn generate_key_file(path: &Path) -> Result<Kek, KeyLoadError> {
    let create = |source| KeyLoadError::Create {
        file: path.to_owned(),
        source,
    };
    let key = random_key().map_err(|e| create(std::io::Error::other(e)))?;
    let mut text = Zeroizing::new(String::from(
        "# Zorg key-encryption key: it unlocks the encrypted archive and offline messages.\n\
         # Keep a copy apart from the database backups; without it they cannot be read.\n",
    ));
    for b in key.iter() {
        text.push_str(&format!("{b:02x}"));
    }
    text.push('\n');
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(create)?;
    file.write_all(text.as_bytes()).map_err(create)?;
    file.sync_all().map_err(create)?;
    Ok(Kek::from_bytes(&key))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn key_text_is_64_hex_digits_with_comments_allowed() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        let a = load_key_text(hex).unwrap();
        let b = load_key_text(&format!("# comment\n\n  {hex}  \n")).unwrap();
        assert_eq!(a.id(), b.id());
        assert!(load_key_text(&hex[..62]).is_err());
        assert!(load_key_text(&format!("{}zz", &hex[..62])).is_err());
        assert!(load_key_text("").is_err());
    }

    #[test]
    fn generated_file_is_private_loads_and_is_never_overwritten() {
        let dir = std::env::temp_dir().join(format!("zorg-key-{}", crate::storage::new_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("zorg.key");
        let source = KeySource::Default(path.clone());
        assert!(source.load().unwrap().is_none());
        let made = generate_key_file(&path).unwrap();
        let loaded = source.load().unwrap().unwrap();
        assert_eq!(made.id(), loaded.id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(generate_key_file(&path).is_err());
        assert_eq!(
            KeySource::File(path.clone()).load().unwrap().unwrap().id(),
            made.id()
        );
        assert!(KeySource::File(dir.join("missing")).load().is_err());
        assert!(matches!(
            KeySource::Env("ZORG_TEST_SURELY_UNSET_VARIABLE".into()).load(),
            Err(KeyLoadError::EnvMissing(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
