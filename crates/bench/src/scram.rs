//! The client side of SCRAM (RFC 5802, RFC 7677), without channel binding: enough to log in
//! to any server the way real clients do, paying the PBKDF2 on the client side.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Mutex, OnceLock};

use aws_lc_rs::{digest, hmac, pbkdf2, rand};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

/// The hash function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    /// SCRAM-SHA-1.
    Sha1,
    /// SCRAM-SHA-256.
    Sha256,
}

impl Hash {
    /// The SASL mechanism name.
    pub fn mechanism(self) -> &'static str {
        match self {
            Hash::Sha1 => "SCRAM-SHA-1",
            Hash::Sha256 => "SCRAM-SHA-256",
        }
    }
    fn hmac(self) -> hmac::Algorithm {
        match self {
            Hash::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            Hash::Sha256 => hmac::HMAC_SHA256,
        }
    }
    fn digest(self) -> &'static digest::Algorithm {
        match self {
            Hash::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            Hash::Sha256 => &digest::SHA256,
        }
    }
    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            Hash::Sha1 => pbkdf2::PBKDF2_HMAC_SHA1,
            Hash::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
        }
    }
    fn len(self) -> usize {
        match self {
            Hash::Sha1 => 20,
            Hash::Sha256 => 32,
        }
    }
}

/// SaltedPassword by (hash, salt, iterations, password), as real clients keep it: the load
/// tool then measures the server's login cost, not its own PBKDF2 (a warm-up pass fills it).
type Cache = HashMap<(bool, Vec<u8>, u32, String), Vec<u8>>;
static SALTED: OnceLock<Mutex<Cache>> = OnceLock::new();

fn salted_password(hash: Hash, password: &str, salt: &[u8], iters: NonZeroU32) -> Vec<u8> {
    let key = (
        hash == Hash::Sha1,
        salt.to_vec(),
        iters.get(),
        password.to_owned(),
    );
    let cache = SALTED.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(v) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return v;
    }
    let mut salted = vec![0u8; hash.len()];
    pbkdf2::derive(hash.pbkdf2(), iters, salt, password.as_bytes(), &mut salted);
    if let Ok(mut c) = cache.lock() {
        c.insert(key, salted.clone());
    }
    salted
}

/// One client exchange.
pub struct Client {
    hash: Hash,
    password: String,
    first_bare: String,
    nonce: String,
    server_signature: Vec<u8>,
}

fn sign(alg: hmac::Algorithm, key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(alg, key), data)
        .as_ref()
        .to_vec()
}

impl Client {
    /// Starts an exchange for `user` (the name must not need SASLprep escaping).
    pub fn new(hash: Hash, user: &str, password: &str) -> Client {
        let mut raw = [0u8; 18];
        // A failed generator only makes this one nonce weaker; the load tool goes on.
        let _ = rand::fill(&mut raw);
        let nonce = B64.encode(raw);
        let user = user.replace('=', "=3D").replace(',', "=2C");
        Client {
            hash,
            password: password.to_owned(),
            first_bare: format!("n={user},r={nonce}"),
            nonce,
            server_signature: Vec::new(),
        }
    }

    /// client-first-message.
    pub fn first(&self) -> Vec<u8> {
        format!("n,,{}", self.first_bare).into_bytes()
    }

    /// client-final-message for the server-first-message.
    pub fn final_message(&mut self, server_first: &[u8]) -> Result<Vec<u8>, String> {
        let sf = std::str::from_utf8(server_first).map_err(|e| e.to_string())?;
        let (mut r, mut s, mut i) = (None, None, None);
        for part in sf.split(',') {
            if let Some((k, v)) = part.split_once('=') {
                match k {
                    "r" => r = Some(v),
                    "s" => s = Some(v),
                    "i" => i = v.parse::<u32>().ok(),
                    _ => {}
                }
            }
        }
        let (Some(r), Some(s), Some(i)) = (r, s, i) else {
            return Err("malformed server-first-message".into());
        };
        if !r.starts_with(&self.nonce) {
            return Err("server nonce does not extend ours".into());
        }
        let salt = B64.decode(s).map_err(|e| e.to_string())?;
        let iters = NonZeroU32::new(i).ok_or("zero iterations")?;
        let salted = salted_password(self.hash, &self.password, &salt, iters);
        let client_key = sign(self.hash.hmac(), &salted, b"Client Key");
        let stored = digest::digest(self.hash.digest(), &client_key);
        let without_proof = format!("c=biws,r={r}");
        let auth = format!("{},{sf},{without_proof}", self.first_bare);
        let sig = sign(self.hash.hmac(), stored.as_ref(), auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        let server_key = sign(self.hash.hmac(), &salted, b"Server Key");
        self.server_signature = sign(self.hash.hmac(), &server_key, auth.as_bytes());
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks the server-final-message (`v=…`).
    pub fn verify_server(&self, server_final: &[u8]) -> bool {
        let expected = format!("v={}", B64.encode(&self.server_signature));
        server_final == expected.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7677_example() {
        let mut c = Client::new(Hash::Sha256, "user", "pencil");
        c.nonce = "rOprNGfwEbeRWgbNEkqO".into();
        c.first_bare = "n=user,r=rOprNGfwEbeRWgbNEkqO".into();
        let fin = c
            .final_message(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
            .unwrap();
        assert_eq!(
            String::from_utf8(fin).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert!(c.verify_server(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="));
    }

    #[test]
    fn rfc5802_example() {
        let mut c = Client::new(Hash::Sha1, "user", "pencil");
        c.nonce = "fyko+d2lbbFgONRv9qkxdawL".into();
        c.first_bare = "n=user,r=fyko+d2lbbFgONRv9qkxdawL".into();
        let fin = c
            .final_message(
                b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
            )
            .unwrap();
        assert_eq!(
            String::from_utf8(fin).unwrap(),
            "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
        );
        assert!(c.verify_server(b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ="));
        assert!(
            c.final_message(b"r=other,s=QSXCR+Q6sek8bf92,i=4096")
                .is_err()
        );
    }
}
