//! DANE (RFC 6698, RFC 7671, RFC 7673 for SRV): TLSA records, validated under DNSSEC by the
//! caller, that pin a peer's certificate. In a Zorg federation they come *on top of* the
//! auditor's chain and the name check: a peer must pass both, so DANE can only narrow whom this
//! server talks to, never widen it. The one exception is an outbound link with
//! `[federation] dialback = true` to a peer the auditor does not vouch for: there a DANE-TA or
//! DANE-EE match is what authenticates the receiving server ([`Verdict::Authenticated`]), since
//! dialback never does.
//!
//! Usages:
//! - DANE-EE (3): the record matches the peer's own certificate; nothing else is checked
//!   (RFC 7671 §5.1: no names, no dates).
//! - DANE-TA (2): the record matches a trust anchor, which the server sends in its chain
//!   (RFC 7671 §5.2.2) or which a `2 0 0` record holds whole. Matching a certificate in the chain
//!   is not enough: the chain from that anchor down to the peer's certificate must validate
//!   (signatures, validity, serverAuth; rustls-webpki does it as for any chain) and the peer's
//!   certificate must name the domain (RFC 7671 §5.2.1, RFC 6125). Otherwise anyone could append
//!   the pinned CA's public certificate to a chain of their own.
//! - PKIX-TA (0) and PKIX-EE (1) are matched as DANE-TA and DANE-EE, but vouch for nothing
//!   alone: the auditor's chain must also pass.
//!
//! Selectors: the whole certificate (0) or its SubjectPublicKeyInfo (1). Matching: exact (0),
//! SHA-256 (1), SHA-512 (2). A record with any other value is unusable and ignored; when no
//! record is usable the peer is treated as if it had published none (RFC 6698 §4.1).

use aws_lc_rs::digest;
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::peer_name::presented_names;

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
    /// A DANE-TA or DANE-EE record matches: DNSSEC alone vouches for the certificate.
    Authenticated,
    /// Only a PKIX-TA or PKIX-EE record matches: the auditor's chain must vouch as well.
    Match,
    /// No record is usable: DANE does not apply.
    NoUsableRecords,
    /// Usable records exist and none matches: refuse the peer.
    Mismatch,
}

/// Checks `chain` (the peer's certificate first), presented for `domain` on an outbound link,
/// against `records` at time `now`.
pub fn check(
    records: &[Tlsa],
    chain: &[CertificateDer<'_>],
    domain: &str,
    now: UnixTime,
) -> Verdict {
    let mut usable = false;
    let mut pkix = false;
    for r in records.iter().filter(|r| r.usable()) {
        usable = true;
        let matched = match r.usage {
            1 | 3 => chain.first().is_some_and(|leaf| r.matches(leaf.as_ref())),
            _ => anchors(r, chain).any(|ta| anchors_chain(ta, chain, domain, now)),
        };
        match (matched, r.usage) {
            (true, 2 | 3) => return Verdict::Authenticated,
            (true, _) => pkix = true,
            (false, _) => {}
        }
    }
    match (pkix, usable) {
        (true, _) => Verdict::Match,
        (false, true) => Verdict::Mismatch,
        (false, false) => Verdict::NoUsableRecords,
    }
}

/// The trust anchors a TA record names: certificates of the chain that match it, and the
/// record's data itself when it is a whole certificate (`x 0 0`).
fn anchors<'a>(r: &'a Tlsa, chain: &'a [CertificateDer<'_>]) -> impl Iterator<Item = &'a [u8]> {
    let whole = (r.selector == 0 && r.matching == 0).then_some(r.data.as_slice());
    chain
        .iter()
        .map(|c| c.as_ref())
        .filter(|c| r.matches(c))
        .chain(whole)
}

/// Whether the chain from trust anchor `ta` (DER) down to the peer's certificate validates for
/// server authentication at `now`, and that certificate names `domain`.
fn anchors_chain(ta: &[u8], chain: &[CertificateDer<'_>], domain: &str, now: UnixTime) -> bool {
    let ta = CertificateDer::from(ta);
    let Ok(anchor) = webpki::anchor_from_trusted_cert(&ta) else {
        return false;
    };
    let anchors = [anchor];
    let Some((leaf, intermediates)) = chain.split_first() else {
        return false;
    };
    let Ok(ee) = webpki::EndEntityCert::try_from(leaf) else {
        return false;
    };
    let algs = rustls::crypto::aws_lc_rs::default_provider()
        .signature_verification_algorithms
        .all;
    let verified = ee
        .verify_for_usage(
            algs,
            &anchors,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .is_ok();
    verified
        && presented_names(leaf.as_ref()).is_ok_and(|names| names.iter().any(|n| n.matches(domain)))
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

    type Issuer = CertifiedIssuer<'static, KeyPair>;

    fn ca() -> Issuer {
        let mut ca = CertificateParams::new(Vec::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap()
    }

    /// A certificate for `name` issued by `by`, tweaked.
    fn leaf_with(by: &Issuer, name: &str, tweak: impl FnOnce(&mut CertificateParams)) -> Vec<u8> {
        let mut params = CertificateParams::new(vec![name.into()]).unwrap();
        tweak(&mut params);
        let cert = params.signed_by(&KeyPair::generate().unwrap(), by).unwrap();
        cert.der().to_vec()
    }

    fn leaf(by: &Issuer, name: &str) -> Vec<u8> {
        leaf_with(by, name, |_| {})
    }

    /// (leaf DER for b.example, root DER)
    fn chain() -> (Vec<u8>, Vec<u8>) {
        let root = ca();
        (leaf(&root, "b.example"), root.der().to_vec())
    }

    fn rec(usage: u8, selector: u8, matching: u8, data: Vec<u8>) -> Tlsa {
        Tlsa {
            usage,
            selector,
            matching,
            data,
        }
    }

    fn ders(certs: &[&[u8]]) -> Vec<CertificateDer<'static>> {
        certs
            .iter()
            .map(|c| CertificateDer::from(c.to_vec()))
            .collect()
    }

    /// The verdict for a chain presented for b.example now.
    fn verdict(records: &[Tlsa], chain: &[CertificateDer<'_>]) -> Verdict {
        check(records, chain, "b.example", UnixTime::now())
    }

    fn sha256(der: &[u8]) -> Vec<u8> {
        digest::digest(&digest::SHA256, der).as_ref().to_vec()
    }

    #[test]
    fn dane_ee_matches_the_leaf_by_spki_hash_and_by_full_certificate() {
        let (leaf, root) = chain();
        let presented = ders(&[&leaf, &root]);
        let spki = spki_sha256(&leaf).unwrap();
        assert_eq!(
            verdict(&[rec(3, 1, 1, spki)], &presented),
            Verdict::Authenticated
        );
        let whole = rec(3, 0, 0, leaf.clone());
        assert_eq!(verdict(&[whole], &presented), Verdict::Authenticated);
        let sha512 = digest::digest(&digest::SHA512, &leaf).as_ref().to_vec();
        assert_eq!(
            verdict(&[rec(3, 0, 2, sha512)], &presented),
            Verdict::Authenticated
        );
        // RFC 7671 §5.1: a DANE-EE match checks no name.
        let other = check(
            &[rec(3, 0, 0, leaf)],
            &presented,
            "c.example",
            UnixTime::now(),
        );
        assert_eq!(other, Verdict::Authenticated);
    }

    #[test]
    fn dane_ee_does_not_match_the_root_but_dane_ta_does() {
        let (leaf, root) = chain();
        let presented = ders(&[&leaf, &root]);
        let root_hash = sha256(&root);
        let ee = [rec(3, 0, 1, root_hash.clone())];
        assert_eq!(verdict(&ee, &presented), Verdict::Mismatch);
        assert_eq!(
            verdict(&[rec(2, 0, 1, root_hash)], &presented),
            Verdict::Authenticated
        );
        // By its key, too.
        let by_key = rec(2, 1, 1, spki_sha256(&root).unwrap());
        assert_eq!(verdict(&[by_key], &presented), Verdict::Authenticated);
    }

    /// The attack: TLSA pins the real server's CA; the attacker presents a certificate of its
    /// own for the domain and appends that CA's (public) certificate to its chain.
    #[test]
    fn dane_ta_refuses_a_leaf_the_pinned_anchor_did_not_issue() {
        let pinned = ca();
        let records = [
            rec(2, 0, 1, sha256(pinned.der())),
            rec(2, 1, 1, spki_sha256(pinned.der()).unwrap()),
            rec(2, 0, 0, pinned.der().to_vec()),
        ];
        let attacker = ca();
        let forged = leaf(&attacker, "b.example");
        for r in &records {
            let r = std::slice::from_ref(r);
            assert_eq!(
                verdict(r, &ders(&[&forged, pinned.der()])),
                Verdict::Mismatch
            );
            let with_own_ca = ders(&[&forged, attacker.der(), pinned.der()]);
            assert_eq!(verdict(r, &with_own_ca), Verdict::Mismatch);
            // A self-signed certificate for the domain.
            let key = KeyPair::generate().unwrap();
            let params = CertificateParams::new(vec!["b.example".into()]).unwrap();
            let own = params.self_signed(&key).unwrap();
            assert_eq!(
                verdict(r, &ders(&[own.der(), pinned.der()])),
                Verdict::Mismatch
            );
            // The genuine chain passes.
            let genuine = leaf(&pinned, "b.example");
            assert_eq!(
                verdict(r, &ders(&[&genuine, pinned.der()])),
                Verdict::Authenticated
            );
        }
        // A whole certificate in the record need not be sent.
        let genuine = leaf(&pinned, "b.example");
        assert_eq!(
            verdict(&records[2..], &ders(&[&genuine])),
            Verdict::Authenticated
        );
        assert_eq!(
            verdict(&records[..2], &ders(&[&genuine])),
            Verdict::Mismatch
        );
    }

    #[test]
    fn dane_ta_checks_the_name_and_the_dates_of_the_leaf() {
        let pinned = ca();
        let record = [rec(2, 0, 1, sha256(pinned.der()))];
        let elsewhere = leaf(&pinned, "c.example");
        assert_eq!(
            verdict(&record, &ders(&[&elsewhere, pinned.der()])),
            Verdict::Mismatch
        );
        let expired = leaf_with(&pinned, "b.example", |p| {
            p.not_before = time::macros::datetime!(2020-01-01 0:00 UTC);
            p.not_after = time::macros::datetime!(2021-01-01 0:00 UTC);
        });
        assert_eq!(
            verdict(&record, &ders(&[&expired, pinned.der()])),
            Verdict::Mismatch
        );
    }

    #[test]
    fn pkix_usages_match_but_vouch_for_nothing_alone() {
        let (leaf, root) = chain();
        let presented = ders(&[&leaf, &root]);
        assert_eq!(
            verdict(&[rec(0, 0, 1, sha256(&root))], &presented),
            Verdict::Match
        );
        assert_eq!(
            verdict(&[rec(1, 0, 1, sha256(&leaf))], &presented),
            Verdict::Match
        );
        // PKIX-TA is path-checked as DANE-TA is.
        let forged = leaf_with(&ca(), "b.example", |_| {});
        let attack = ders(&[&forged, &root]);
        assert_eq!(
            verdict(&[rec(0, 0, 1, sha256(&root))], &attack),
            Verdict::Mismatch
        );
        // A DANE match beside a PKIX one wins.
        let both = [rec(1, 0, 1, sha256(&leaf)), rec(3, 0, 1, sha256(&leaf))];
        assert_eq!(verdict(&both, &presented), Verdict::Authenticated);
    }

    #[test]
    fn a_wrong_hash_is_a_mismatch_even_beside_unusable_records() {
        let (leaf, root) = chain();
        let presented = ders(&[&leaf, &root]);
        let records = [rec(3, 1, 1, vec![0; 32]), rec(4, 1, 1, vec![0; 32])];
        assert_eq!(verdict(&records, &presented), Verdict::Mismatch);
        // Another server's key.
        let (other, _) = chain();
        let records = [rec(3, 1, 1, spki_sha256(&other).unwrap())];
        assert_eq!(verdict(&records, &presented), Verdict::Mismatch);
    }

    #[test]
    fn only_unusable_records_mean_no_dane() {
        let (leaf, root) = chain();
        let presented = ders(&[&leaf, &root]);
        let records = [
            rec(4, 1, 1, vec![1]),
            rec(3, 2, 1, vec![1]),
            rec(3, 1, 3, vec![1]),
        ];
        assert_eq!(verdict(&records, &presented), Verdict::NoUsableRecords);
        assert_eq!(verdict(&[], &presented), Verdict::NoUsableRecords);
    }

    #[test]
    fn one_matching_record_among_several_is_enough() {
        let (leaf, root) = chain();
        let presented = ders(&[&leaf, &root]);
        let records = [
            rec(3, 1, 1, vec![9; 32]),
            rec(3, 1, 1, spki_sha256(&leaf).unwrap()),
        ];
        assert_eq!(verdict(&records, &presented), Verdict::Authenticated);
        assert_eq!(verdict(&records, &[]), Verdict::Mismatch);
    }
}
