//! The Ed25519 key that signs audit checkpoints. It is its own file, apart from the key that
//! encrypts messages: an operator may hand the public half to the auditor, and keep the private
//! half where the database backups are not.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use zeroize::Zeroizing;

/// The checkpoint signing key.
pub struct Signer {
    key: Ed25519KeyPair,
    public: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("public", &self.public)
            .finish()
    }
}

/// Why the signing key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SignKeyError {
    /// Reading or writing the file failed.
    #[error("{file}: {source}")]
    Io {
        /// The key file.
        file: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not an Ed25519 key in PKCS#8.
    #[error(
        "{0}: not an Ed25519 private key (PKCS#8, base64); restore it from your backup or \
         point [audit] signing_key at the right file"
    )]
    Invalid(PathBuf),
}

impl Signer {
    /// Loads the key in `path`, or makes one there (mode 0600) if the file does not exist.
    /// Returns the key and whether it was made now.
    pub fn load_or_create(path: &Path) -> Result<(Signer, bool), SignKeyError> {
        let io = |source| SignKeyError::Io {
            file: path.to_owned(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Ok((
                Self::from_text(&text).ok_or_else(|| SignKeyError::Invalid(path.into()))?,
                false,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Ed25519KeyPair::generate()
                    .map_err(|_| io(std::io::Error::other("key generation failed")))?;
                let der = key
                    .to_pkcs8()
                    .map_err(|_| io(std::io::Error::other("key encoding failed")))?;
                let text = Zeroizing::new(format!(
                    "# Zorg audit checkpoint signing key (Ed25519, PKCS#8). Its public key is\n\
                     # printed by `zorg audit key`; give that to your auditor.\n{}\n",
                    B64.encode(der.as_ref())
                ));
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt as _;
                    options.mode(0o600);
                }
                let mut f = options.open(path).map_err(io)?;
                f.write_all(text.as_bytes()).map_err(io)?;
                f.sync_all().map_err(io)?;
                Ok((Self::from_pair(key), true))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Loads an existing key; never makes one.
    pub fn load(path: &Path) -> Result<Signer, SignKeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| SignKeyError::Io {
            file: path.to_owned(),
            source,
        })?;
        Self::from_text(&text).ok_or_else(|| SignKeyError::Invalid(path.into()))
    }

    fn from_text(text: &str) -> Option<Signer> {
        let b64: String = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let der = Zeroizing::new(B64.decode(b64).ok()?);
        Ed25519KeyPair::from_pkcs8(&der).ok().map(Self::from_pair)
    }

    fn from_pair(key: Ed25519KeyPair) -> Signer {
        let public = B64.encode(key.public_key().as_ref());
        Signer { key, public }
    }

    /// The public key, base64 of its 32 bytes (what checkpoints name and auditors hold).
    pub fn public_key(&self) -> &str {
        &self.public
    }

    /// The signature over `msg`, base64.
    pub fn sign(&self, msg: &[u8]) -> String {
        B64.encode(self.key.sign(msg).as_ref())
    }
}

/// Whether `signature` (base64) is `public` (base64)'s signature over `msg`.
pub fn verify(public: &str, msg: &[u8], signature: &str) -> bool {
    let (Ok(pk), Ok(sig)) = (B64.decode(public), B64.decode(signature)) else {
        return false;
    };
    UnparsedPublicKey::new(&ED25519, pk)
        .verify(msg, &sig)
        .is_ok()
}

/// Reads a public key file as `zorg audit key` writes it: base64 of 32 bytes, `#` comments
/// allowed. A private key file is accepted too (its public half is used).
pub fn read_public_key(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(s) = Signer::from_text(&text) {
        return Ok(s.public);
    }
    let b64: String = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    match B64.decode(&b64) {
        Ok(k) if k.len() == 32 => Ok(b64),
        _ => Err(format!(
            "{}: not an Ed25519 public key (base64 of 32 bytes, as `zorg audit key` prints)",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_made_once_signs_and_is_read_back() {
        let dir = std::env::temp_dir().join(format!("zorg-sign-{}", crate::storage::new_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit-signing.key");
        let (a, made) = Signer::load_or_create(&path).unwrap();
        assert!(made);
        let (b, made) = Signer::load_or_create(&path).unwrap();
        assert!(!made);
        assert_eq!(a.public_key(), b.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let sig = a.sign(b"head");
        assert!(verify(b.public_key(), b"head", &sig));
        assert!(!verify(b.public_key(), b"tail", &sig));
        assert_eq!(read_public_key(&path).unwrap(), a.public_key());
        std::fs::write(
            dir.join("pub"),
            format!("# auditor's copy\n{}\n", a.public_key()),
        )
        .unwrap();
        assert_eq!(read_public_key(&dir.join("pub")).unwrap(), a.public_key());
        std::fs::write(&path, "garbage").unwrap();
        assert!(matches!(Signer::load(&path), Err(SignKeyError::Invalid(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
