//! Encryption at rest: AES-256-GCM for every stanza stored in the archive and the offline store.
//!
//! Two levels of keys, so that the secret an operator guards never touches the database:
//! - the **key-encryption key** (KEK, [`Kek`]) comes from a key file or an environment variable
//!   and is never stored in the database;
//! - **data keys** encrypt records. They are random, stored in the database only wrapped
//!   (encrypted) by the KEK, and rotated with `zorg keys rotate`; records written under an old
//!   data key are re-encrypted in the background and the old key is then deleted.
//!
//! Each record's owner, id and timestamp (and what kind of record it is) are bound into the
//! ciphertext as associated data ([`RecordAad`]): a row copied over another, or moved to another
//! account, fails to decrypt instead of showing the wrong message.
//!
//! Nonces are 96 random bits per record. That is safe for about 2^32 records per data key (NIST
//! SP 800-38D §8.3); rotate long before that (a year of a busy domain is far below it).

mod keyfile;

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::digest;
use zeroize::Zeroizing;

pub use keyfile::{KeySource, generate_key_file, load_key_text};

/// Length of every key here: AES-256.
pub const KEY_LEN: usize = 32;
/// The format byte in front of every sealed record; a later format gets another value.
const FORMAT_V1: u8 = 1;

/// Why a key or a record could not be used. The texts say what to do and never hold key material.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CryptoError {
    /// The key text is not 64 hexadecimal digits.
    #[error(
        "the key is not 64 hexadecimal digits (32 bytes); generate one with `zorg keys generate FILE`"
    )]
    BadKeyText,
    /// A wrapped data key does not open with this KEK.
    #[error(
        "the key-encryption key does not open data key {0}: this is not the key the database was \
         written with; configure the right key file or environment variable"
    )]
    WrongKek(i64),
    /// A record refers to a data key that is not loaded.
    #[error("data key {0} is not loaded; it was deleted or the database was changed outside Zorg")]
    UnknownDataKey(i64),
    /// A record failed authentication: changed, moved to another row, or truncated.
    #[error("a stored record failed its integrity check (changed, moved or truncated)")]
    Tampered,
    /// The system random generator failed.
    #[error("the system random number generator failed")]
    Random,
}

/// The key-encryption key: wraps and unwraps data keys.
pub struct Kek {
    key: LessSafeKey,
    /// A short public fingerprint, stored beside each wrapped data key so that a wrong key is
    /// reported as such instead of as a corrupt database.
    id: String,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kek")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Kek {
    /// A KEK from its 32 raw bytes.
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> Kek {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"zorg kek fingerprint v1\0");
        ctx.update(bytes);
        let fp = ctx.finish();
        let id = fp.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Kek {
            key: aes_key(bytes),
            id,
        }
    }

    /// A fresh random KEK (tests and `open_memory`).
    pub fn random() -> Result<Kek, CryptoError> {
        let bytes = random_key()?;
        Ok(Kek::from_bytes(&bytes))
    }

    /// The public fingerprint of this KEK (16 hex digits).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Wraps a data key for storage under its id.
    pub fn wrap(&self, key_id: i64, data_key: &[u8; KEY_LEN]) -> Result<Vec<u8>, CryptoError> {
        seal_with(&self.key, &wrap_aad(key_id), data_key)
    }

    /// Unwraps the data key stored under `key_id`.
    pub fn unwrap_key(
        &self,
        key_id: i64,
        wrapped: &[u8],
    ) -> Result<Zeroizing<[u8; KEY_LEN]>, CryptoError> {
        let plain = open_with(&self.key, &wrap_aad(key_id), wrapped)
            .map_err(|_| CryptoError::WrongKek(key_id))?;
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        if plain.len() != KEY_LEN {
            return Err(CryptoError::WrongKek(key_id));
        }
        out.copy_from_slice(&plain);
        Ok(out)
    }
}

/// What kind of record is sealed: part of the associated data, so that an offline row can
/// never be passed off as an archive row or the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKind {
    /// A message in an account's archive (XEP-0313).
    Archive,
    /// A message waiting in the offline store (XEP-0160).
    Offline,
}

/// The associated data of one record: who owns it, its id and its time.
#[derive(Debug, Clone, Copy)]
pub struct RecordAad<'a> {
    /// Archive or offline.
    pub kind: RecordKind,
    /// The owning account's bare JID.
    pub owner: &'a str,
    /// The record's id (the XEP-0359 stanza-id).
    pub id: &'a str,
    /// When the record was stored (Unix milliseconds).
    pub stamp_unix_ms: i64,
}

impl RecordAad<'_> {
    fn bytes(&self) -> Vec<u8> {
        let kind: &[u8] = match self.kind {
            RecordKind::Archive => b"archive",
            RecordKind::Offline => b"offline",
        };
        let mut v = Vec::with_capacity(32 + self.owner.len() + self.id.len());
        v.extend_from_slice(b"zorg record v1\0");
        // Length prefixes: no two different (owner, id) pairs give the same bytes.
        for part in [kind, self.owner.as_bytes(), self.id.as_bytes()] {
            v.extend_from_slice(&(part.len() as u32).to_be_bytes());
            v.extend_from_slice(part);
        }
        v.extend_from_slice(&self.stamp_unix_ms.to_be_bytes());
        v
    }
}

/// The data keys in use: the one new records are sealed with, and every one still needed to
/// open older records.
pub struct KeySet {
    /// The data key new records are sealed with.
    pub active: i64,
    keys: HashMap<i64, LessSafeKey>,
}

impl KeySet {
    /// A key set from unwrapped keys; `active` must be among them.
    pub fn new(active: i64, keys: Vec<(i64, Zeroizing<[u8; KEY_LEN]>)>) -> KeySet {
        KeySet {
            active,
            keys: keys.into_iter().map(|(id, k)| (id, aes_key(&k))).collect(),
        }
    }

    /// The ids of the loaded keys.
    pub fn ids(&self) -> Vec<i64> {
        let mut v: Vec<i64> = self.keys.keys().copied().collect();
        v.sort_unstable();
        v
    }
}

/// A sealed record: which data key sealed it, and `format ‖ nonce ‖ ciphertext ‖ tag`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The data key's id.
    pub key_id: i64,
    /// The bytes to store.
    pub blob: Vec<u8>,
}

/// The loaded keys of one database, shared by every clone of its `Storage`. The key set is
/// swapped whole on rotation, so that sealing never takes a lock.
pub struct Keyring {
    kek: Kek,
    set: ArcSwap<KeySet>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("kek", &self.kek)
            .field("active", &self.set.load().active)
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// A keyring with its KEK and the data keys unwrapped with it.
    pub fn new(kek: Kek, set: KeySet) -> Keyring {
        Keyring {
            kek,
            set: ArcSwap::from_pointee(set),
        }
    }

    /// The KEK.
    pub fn kek(&self) -> &Kek {
        &self.kek
    }

    /// The current key set.
    pub fn keys(&self) -> Arc<KeySet> {
        self.set.load_full()
    }

    /// Replaces the key set (after a rotation or once an old key is deleted).
    pub fn replace(&self, set: KeySet) {
        self.set.store(Arc::new(set));
    }

    /// Seals `plain` under the active data key.
    pub fn seal(&self, aad: &RecordAad<'_>, plain: &[u8]) -> Result<Sealed, CryptoError> {
        let set = self.set.load();
        let key = set
            .keys
            .get(&set.active)
            .ok_or(CryptoError::UnknownDataKey(set.active))?;
        Ok(Sealed {
            key_id: set.active,
            blob: seal_with(key, &aad.bytes(), plain)?,
        })
    }

    /// Opens a record sealed under data key `key_id`.
    pub fn open(
        &self,
        key_id: i64,
        aad: &RecordAad<'_>,
        blob: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let set = self.set.load();
        let key = set
            .keys
            .get(&key_id)
            .ok_or(CryptoError::UnknownDataKey(key_id))?;
        open_with(key, &aad.bytes(), blob)
    }
}

/// 32 random bytes for a new key.
pub fn random_key() -> Result<Zeroizing<[u8; KEY_LEN]>, CryptoError> {
    let mut k = Zeroizing::new([0u8; KEY_LEN]);
    aws_lc_rs::rand::fill(k.as_mut()).map_err(|_| CryptoError::Random)?;
    Ok(k)
}

fn aes_key(bytes: &[u8; KEY_LEN]) -> LessSafeKey {
    // Only fails for a wrong key length, which the array type rules out.
    #[allow(clippy::expect_used)]
    let unbound = UnboundKey::new(&AES_256_GCM, bytes).expect("AES-256 key is 32 bytes");
    LessSafeKey::new(unbound)
}

fn wrap_aad(key_id: i64) -> Vec<u8> {
    let mut v = b"zorg data key v1\0".to_vec();
    v.extend_from_slice(&key_id.to_be_bytes());
    v
}

fn seal_with(key: &LessSafeKey, aad: &[u8], plain: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| CryptoError::Random)?;
    let mut out = Vec::with_capacity(1 + NONCE_LEN + plain.len() + 16);
    out.push(FORMAT_V1);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plain);
    let mut body = out.split_off(1 + NONCE_LEN);
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut body,
    )
    .map_err(|_| CryptoError::Random)?;
    out.extend_from_slice(&body);
    Ok(out)
}

fn open_with(key: &LessSafeKey, aad: &[u8], blob: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if blob.len() < 1 + NONCE_LEN + 16 || blob[0] != FORMAT_V1 {
        return Err(CryptoError::Tampered);
    }
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&blob[1..1 + NONCE_LEN]);
    let mut body = blob[1 + NONCE_LEN..].to_vec();
    let n = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut body,
        )
        .map_err(|_| CryptoError::Tampered)?
        .len();
    body.truncate(n);
    Ok(body)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ring() -> Keyring {
        let k1 = random_key().unwrap();
        Keyring::new(Kek::random().unwrap(), KeySet::new(1, vec![(1, k1)]))
    }

    fn aad<'a>(owner: &'a str, id: &'a str) -> RecordAad<'a> {
        RecordAad {
            kind: RecordKind::Archive,
            owner,
            id,
            stamp_unix_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn seal_open_round_trip_and_no_plaintext() {
        let r = ring();
        let s = r.seal(&aad("a@x", "1"), b"<body>secret</body>").unwrap();
        assert_eq!(s.key_id, 1);
        assert!(!s.blob.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            r.open(1, &aad("a@x", "1"), &s.blob).unwrap(),
            b"<body>secret</body>"
        );
        // Two seals of the same text differ (random nonce).
        assert_ne!(r.seal(&aad("a@x", "1"), b"x").unwrap().blob, {
            r.seal(&aad("a@x", "1"), b"x").unwrap().blob
        });
    }

    #[test]
    fn a_record_moved_to_another_owner_id_time_or_kind_fails() {
        let r = ring();
        let s = r.seal(&aad("a@x", "1"), b"hello").unwrap();
        assert_eq!(
            r.open(1, &aad("b@x", "1"), &s.blob),
            Err(CryptoError::Tampered)
        );
        assert_eq!(
            r.open(1, &aad("a@x", "2"), &s.blob),
            Err(CryptoError::Tampered)
        );
        let mut later = aad("a@x", "1");
        later.stamp_unix_ms += 1;
        assert_eq!(r.open(1, &later, &s.blob), Err(CryptoError::Tampered));
        let mut offline = aad("a@x", "1");
        offline.kind = RecordKind::Offline;
        assert_eq!(r.open(1, &offline, &s.blob), Err(CryptoError::Tampered));
        // Length prefixes: "a@x"+"1" and "a@x1"+"" are different records.
        assert_eq!(
            r.open(1, &aad("a@x1", ""), &s.blob),
            Err(CryptoError::Tampered)
        );
        let mut flipped = s.blob.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(
            r.open(1, &aad("a@x", "1"), &flipped),
            Err(CryptoError::Tampered)
        );
        assert_eq!(
            r.open(1, &aad("a@x", "1"), &s.blob[..10]),
            Err(CryptoError::Tampered)
        );
        assert_eq!(
            r.open(7, &aad("a@x", "1"), &s.blob),
            Err(CryptoError::UnknownDataKey(7))
        );
    }

    #[test]
    fn wrapped_keys_open_only_with_their_kek_and_id() {
        let kek = Kek::random().unwrap();
        let dk = random_key().unwrap();
        let w = kek.wrap(3, &dk).unwrap();
        assert_eq!(*kek.unwrap_key(3, &w).unwrap(), *dk);
        assert_eq!(kek.unwrap_key(4, &w), Err(CryptoError::WrongKek(4)));
        let other = Kek::random().unwrap();
        assert_eq!(other.unwrap_key(3, &w), Err(CryptoError::WrongKek(3)));
        assert_ne!(kek.id(), other.id());
        assert_eq!(kek.id().len(), 16);
        assert!(!format!("{kek:?}").contains(&format!("{:?}", &dk[..4])));
    }

    #[test]
    fn after_rotation_new_records_use_the_new_key_and_old_ones_still_open() {
        let k1 = random_key().unwrap();
        let k2 = random_key().unwrap();
        let r = Keyring::new(
            Kek::random().unwrap(),
            KeySet::new(1, vec![(1, k1.clone())]),
        );
        let old = r.seal(&aad("a@x", "1"), b"old").unwrap();
        r.replace(KeySet::new(2, vec![(1, k1), (2, k2)]));
        let new = r.seal(&aad("a@x", "2"), b"new").unwrap();
        assert_eq!((old.key_id, new.key_id), (1, 2));
        assert_eq!(r.keys().ids(), vec![1, 2]);
        assert_eq!(r.open(1, &aad("a@x", "1"), &old.blob).unwrap(), b"old");
        assert_eq!(r.open(2, &aad("a@x", "2"), &new.blob).unwrap(), b"new");
        // Sealed under key 1, claimed to be under key 2: refused.
        assert_eq!(
            r.open(2, &aad("a@x", "1"), &old.blob),
            Err(CryptoError::Tampered)
        );
    }
}
