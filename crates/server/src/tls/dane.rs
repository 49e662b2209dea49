//! DANE (RFC 6698, RFC 7671, RFC 7673 for SRV): TLSA records, validated under DNSSEC by the
//! caller, that pin a peer's certificate. In a Zorg federation they come *on top of* the
//! auditor's chain and the name check: a peer must pass both, so DANE can only narrow whom this
//! server talks to, never widen it.
//!
//! Usages: DANE-TA (2) and PKIX-TA (0) match any certificate the peer presents (RFC 7671 §5.2.2:
//! a server using DANE-TA sends its trust anchor in the chain); DANE-EE (3) and PKIX-EE (1) match
//! the peer's own certificate. The PKIX usages add nothing here that the auditor chain does not
//! already demand, so they are matched the same way. Selectors: the whole certificate (0) or its
//! SubjectPublicKeyInfo (1). Matching: exact (0), SHA-256 (1), SHA-512 (2). A record with any
//! other value is unusable and ignored; when no record is usable the peer is treated as if it had
//! published none (RFC 6698 §4.1).

use aws_lc_rs::digest;
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

/// One TLSA record's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlsa {
    /// Certificate usage: 0 PKIX-TA, 1 PKIX-EE, 2 DANE-TA, 3 DANE-EE.
    pub usage: u8,
    /// 0: the full certificate, 1: its SubjectPublicKeyInfo.
    pub selector: u8,
    /// 0: exact, 1: SHA-256, 2: SHA-512.
    pub matching: u8,
    /// What is compared.
    pub data: Vec<u8>,
}

impl Tlsa {
    /// Whether this server can use the record at all.
    fn usable(&self) -> bool {
        self.usage <= 3 && self.selector <= 1 && self.matching <= 2
    }

    /// Whether `cert` (DER) matches the record's selector and matching type.
    fn matches(&self, cert: &[u8]) -> bool {
        let selected: &[u8] = match self.selector {
            0 => cert,
            _ => match X509Certificate::from_der(cert) {
                Ok((_, c)) => c.tbs_certificate.subject_pki.raw,
                Err(_) => return false,
            },
        };
        match self.matching {
            0 => selected == self.data.as_slice(),
            1 => digest::digest(&digest::SHA256, selected).as_ref() == self.data.as_slice(),
            2 => digest::digest(&digest::SHA512, selected).as_ref() == self.data.as_slice(),
            _ => false,
        }
    }
}

/// What the TLSA records say about a peer's chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A usable record matches.
    Match,
    /// No record is usable: DANE does not apply.
    NoUsableRecords,
    /// Usable records exist and none matches: refuse the peer.
    Mismatch,
}

/// Checks `chain` (the peer's certificate first) against `records`.
pub fn check(records: &[Tlsa], chain: &[CertificateDer<'_>]) -> Verdict {
    let mut usable = false;
    for r in records.iter().filter(|r| r.usable()) {
        usable = true;
        let ee_only = matches!(r.usage, 1 | 3);
        let candidates = if ee_only {
            chain.get(..1).unwrap_or_default()
        } else {
            chain
        };
        if candidates.iter().any(|c| r.matches(c.as_ref())) {
            return Verdict::Match;
        }
    }
    if usable {
        Verdict::Mismatch
    } else {
        Verdict::NoUsableRecords
    }
}

/// The SHA-256 of a certificate's SubjectPublicKeyInfo: the data of a `3 1 1` record, the usual
/// DANE-EE record an operator publishes (`zorg` prints it in its docs' commands).
pub fn spki_sha256(cert: &[u8]) -> Option<Vec<u8>> {
    let (_, c) = X509Certificate::from_der(cert).ok()?;
    Some(
        digest::digest(&digest::SHA256, c.tbs_certificate.subject_pki.raw)
            .as_ref()
            .to_vec(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

    /// (leaf DER, root DER)
    fn chain() -> (Vec<u8>, Vec<u8>) {
        let mut ca = CertificateParams::new(Vec::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let root = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let leaf = CertificateParams::new(vec!["b.example".into()])
            .unwrap()
            .signed_by(&KeyPair::generate().unwrap(), &root)
            .unwrap();
        (leaf.der().to_vec(), root.der().to_vec())
    }

    fn rec(usage: u8, selector: u8, matching: u8, data: Vec<u8>) -> Tlsa {
        Tlsa {
            usage,
            selector,
            matching,
            data,
        }
    }

    fn ders(leaf: &[u8], root: &[u8]) -> Vec<CertificateDer<'static>> {
        vec![
            CertificateDer::from(leaf.to_vec()),
            CertificateDer::from(root.to_vec()),
        ]
    }

    #[test]
    fn dane_ee_matches_the_leaf_by_spki_hash_and_by_full_certificate() {
        let (leaf, root) = chain();
        let presented = ders(&leaf, &root);
        let spki = spki_sha256(&leaf).unwrap();
        assert_eq!(check(&[rec(3, 1, 1, spki)], &presented), Verdict::Match);
        assert_eq!(
            check(&[rec(3, 0, 0, leaf.clone())], &presented),
            Verdict::Match
        );
        let sha512 = digest::digest(&digest::SHA512, &leaf).as_ref().to_vec();
        assert_eq!(check(&[rec(3, 0, 2, sha512)], &presented), Verdict::Match);
    }

    #[test]
    fn dane_ee_does_not_match_the_root_but_dane_ta_does() {
        let (leaf, root) = chain();
        let presented = ders(&leaf, &root);
        let root_hash = digest::digest(&digest::SHA256, &root).as_ref().to_vec();
        assert_eq!(
            check(&[rec(3, 0, 1, root_hash.clone())], &presented),
            Verdict::Mismatch
        );
        assert_eq!(
            check(&[rec(2, 0, 1, root_hash)], &presented),
            Verdict::Match
        );
    }

    #[test]
    fn a_wrong_hash_is_a_mismatch_even_beside_unusable_records() {
        let (leaf, root) = chain();
        let presented = ders(&leaf, &root);
        let records = [rec(3, 1, 1, vec![0; 32]), rec(4, 1, 1, vec![0; 32])];
        assert_eq!(check(&records, &presented), Verdict::Mismatch);
        // Another server's key.
        let (other, _) = chain();
        let records = [rec(3, 1, 1, spki_sha256(&other).unwrap())];
        assert_eq!(check(&records, &presented), Verdict::Mismatch);
    }

    #[test]
    fn only_unusable_records_mean_no_dane() {
        let (leaf, root) = chain();
        let presented = ders(&leaf, &root);
        let records = [
            rec(4, 1, 1, vec![1]),
            rec(3, 2, 1, vec![1]),
            rec(3, 1, 3, vec![1]),
        ];
        assert_eq!(check(&records, &presented), Verdict::NoUsableRecords);
        assert_eq!(check(&[], &presented), Verdict::NoUsableRecords);
    }

    #[test]
    fn one_matching_record_among_several_is_enough() {
        let (leaf, root) = chain();
        let presented = ders(&leaf, &root);
        let records = [
            rec(3, 1, 1, vec![9; 32]),
            rec(3, 1, 1, spki_sha256(&leaf).unwrap()),
        ];
        assert_eq!(check(&records, &presented), Verdict::Match);
        assert_eq!(check(&records, &[]), Verdict::Mismatch);
    }
}
