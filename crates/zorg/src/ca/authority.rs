//! The signing side of `zorg ca`: the root certificate, server certificates and CRLs, all
//! ECDSA P-256 with SHA-256 (rcgen on aws-lc-rs). No file I/O here apart from loading the CA.

use std::path::Path;

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CrlDistributionPoint,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair,
    KeyUsagePurpose, OtherNameValue, PKCS_ECDSA_P256_SHA256, PublicKeyData, RevokedCertParams,
    SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::{Duration, OffsetDateTime};

use super::files::io_err;
use super::index::Reason;

/// File names in the CA directory.
pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";

/// id-on-xmppAddr (RFC 6120 §13.7.1.4).
const XMPP_ADDR: [u64; 9] = [1, 3, 6, 1, 5, 5, 7, 8, 5];
/// Bytes of randomness in a serial; the top bits are then fixed (see [`random_serial`]).
const SERIAL_LEN: usize = 16;
/// Certificates start this long before they are made, for peers whose clocks run behind.
const BACKDATE: Duration = Duration::HOUR;

/// A freshly made key and certificate, both PEM.
pub struct Made {
    /// The serial in lowercase hex.
    pub serial: String,
    /// The certificate (for a server: its chain, leaf then CA).
    pub cert_pem: String,
    /// The private key (PKCS#8). Written to a 0600 file, never printed.
    pub key_pem: String,
    pub not_after: OffsetDateTime,
}

/// What a server certificate names and how long it lives.
pub struct Request<'a> {
    /// Valid DNS names (see `names::domain`); the first is also the subject CN.
    pub domains: &'a [String],
    /// Add an XmppAddr otherName for each domain as well.
    pub xmppaddr: bool,
    pub days: u32,
    pub crl_url: Option<&'a str>,
}

/// A revoked certificate as the CRL lists it.
pub struct RevokedEntry<'a> {
    pub serial: &'a str,
    pub at: OffsetDateTime,
    pub reason: Reason,
}

fn sign_err(what: &str) -> impl Fn(rcgen::Error) -> String + '_ {
    move |e| format!("cannot make the {what}: {e}")
}

/// A serial of 126 random bits: 16 random bytes, the top bit cleared (a positive INTEGER) and
/// the next one set (no leading zero byte, so the hex in the index is the DER's, and every
/// serial has the same length).
pub fn random_serial() -> Result<[u8; SERIAL_LEN], String> {
    let mut bytes = [0u8; SERIAL_LEN];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| "the system's random number generator failed".to_owned())?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(hex: &str) -> Result<Vec<u8>, String> {
    let padded = if hex.len() % 2 == 1 {
        format!("0{hex}")
    } else {
        hex.to_owned()
    };
    (0..padded.len())
        .step_by(2)
        .map(|i| {
            padded
                .get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
                .ok_or_else(|| format!("the index holds a damaged serial {hex:?}"))
        })
        .collect()
}

fn new_key() -> Result<KeyPair, String> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(sign_err("key"))
}

/// A self-signed root: CN=`name`, CA:true with path length 0 (it signs servers, no
/// intermediates), keyCertSign and cRLSign only.
pub fn make_root(name: &str, days: u32, now: OffsetDateTime) -> Result<Made, String> {
    let serial = random_serial()?;
    let mut params = CertificateParams::default();
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(i64::from(days));
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = new_key()?;
    let cert = params
        .self_signed(&key)
        .map_err(sign_err("CA certificate"))?;
    Ok(Made {
        serial: hex(&serial),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after: params.not_after,
    })
}

/// The SHA-256 fingerprint of a PEM certificate, as servers print theirs.
pub fn fingerprint(cert_pem: &str) -> Option<String> {
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).ok()?;
    Some(zorg_server::tls::fingerprint(&der))
}

/// The CA loaded from its directory, ready to sign.
pub struct Authority {
    key: KeyPair,
    cert: CertificateDer<'static>,
    cert_pem: String,
    not_after: OffsetDateTime,
    /// The CA's subject key identifier, which CRLs name as their authority key identifier.
    key_id: Option<Vec<u8>>,
}

impl Authority {
    /// Reads `DIR/ca.crt` and `DIR/ca.key` and checks that they belong together.
    pub fn load(dir: &Path) -> Result<Authority, String> {
        let cert_path = dir.join(CA_CERT);
        let key_path = dir.join(CA_KEY);
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(|e| io_err(&cert_path, e))?;
        let key_pem = std::fs::read_to_string(&key_path).map_err(|e| io_err(&key_path, e))?;
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| io_err(&cert_path, format!("not a PEM certificate: {e}")))?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| io_err(&key_path, format!("not a usable PEM private key: {e}")))?;
        let (_, x509) = x509_parser::parse_x509_certificate(&cert)
            .map_err(|e| io_err(&cert_path, format!("not a valid certificate: {e}")))?;
        if x509.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(format!(
                "{} is not the key of {}: restore the CA's own pair from its backup",
                key_path.display(),
                cert_path.display()
            ));
        }
        let key_id = x509
            .iter_extensions()
            .find_map(|ext| match ext.parsed_extension() {
                x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(id) => {
                    Some(id.0.to_vec())
                }
                _ => None,
            });
        let not_after = x509.validity().not_after.to_datetime();
        Ok(Authority {
            key,
            cert: cert.clone(),
            cert_pem,
            not_after,
            key_id,
        })
    }

    /// The issuer as rcgen signs with it: subject, key identifier and key usages taken from
    /// the CA certificate itself, so issued certificates chain to it byte for byte.
    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, String> {
        Issuer::from_ca_cert_der(&self.cert, &self.key).map_err(sign_err("issuer from ca.crt"))
    }

    /// A server certificate for `req`, signed by this CA, valid from now.
    pub fn issue(&self, req: &Request<'_>, now: OffsetDateTime) -> Result<Made, String> {
        let not_after = now + Duration::days(i64::from(req.days));
        if not_after > self.not_after {
            return Err(format!(
                "a certificate for {} days would outlive the CA, which expires on {}: \
                 use fewer --days, or make a new CA",
                req.days,
                super::show_time(self.not_after)
            ));
        }
        let first = req.domains.first().ok_or("give at least one --domain")?;
        let serial = random_serial()?;
        let mut params = CertificateParams::default();
        params.not_before = now - BACKDATE;
        params.not_after = not_after;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, first.as_str());
        params.distinguished_name = dn;
        for domain in req.domains {
            let name =
                Ia5String::try_from(domain.as_str()).map_err(|e| format!("{domain}: {e}"))?;
            params.subject_alt_names.push(SanType::DnsName(name));
        }
        if req.xmppaddr {
            for domain in req.domains {
                let value = OtherNameValue::Utf8String(domain.clone());
                params
                    .subject_alt_names
                    .push(SanType::OtherName((XMPP_ADDR.to_vec(), value)));
            }
        }
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        if let Some(url) = req.crl_url {
            params.crl_distribution_points = vec![CrlDistributionPoint {
                uris: vec![url.to_owned()],
            }];
        }
        params.use_authority_key_identifier_extension = true;
        let key = new_key()?;
        let cert = params
            .signed_by(&key, &self.issuer()?)
            .map_err(sign_err("server certificate"))?;
        Ok(Made {
            serial: hex(&serial),
            cert_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: key.serialize_pem(),
            not_after,
        })
    }

    /// A CRL numbered `number`, valid from now for `days`, listing `revoked`. PEM.
    pub fn crl(
        &self,
        number: u64,
        revoked: &[RevokedEntry<'_>],
        days: u32,
        now: OffsetDateTime,
    ) -> Result<String, String> {
        let revoked_certs = revoked
            .iter()
            .map(|r| {
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&unhex(r.serial)?),
                    revocation_time: r.at,
                    reason_code: Some(r.reason.code()),
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update: now + Duration::days(i64::from(days)),
            crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
            // None: the CRL covers every certificate of this CA, whatever URL they carry.
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: match &self.key_id {
                Some(id) => KeyIdMethod::PreSpecified(id.clone()),
                None => KeyIdMethod::Sha256,
            },
        };
        params
            .signed_by(&self.issuer()?)
            .and_then(|crl| crl.pem())
            .map_err(sign_err("CRL"))
    }
}

#[cfg(test)]
#[path = "authority_tests.rs"]
mod tests;
