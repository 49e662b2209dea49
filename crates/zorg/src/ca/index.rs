//! The CA's index, `DIR/index.toml`: the CA's name and CRL URL, the number of the last CRL,
//! and every certificate issued with its domains, expiry, files and revocation. It is the
//! auditor's record and what `revoke`, `crl` and `list` work from, so it is replaced
//! atomically and never edited in place.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::files;

/// The index format this program writes and reads.
const VERSION: u32 = 1;

/// The file name of the index in the CA directory.
pub const FILE: &str = "index.toml";

const HEADER: &str = "# The index of a Zorg certificate authority, written by `zorg ca`.\n\
                      # Do not edit: `zorg ca list` shows it, `zorg ca revoke` changes it.\n\n";

/// The whole index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    /// The format version, to refuse an index a later Zorg wrote rather than misread it.
    pub version: u32,
    /// The CA's name, its certificate's subject CN.
    pub name: String,
    /// The CRL distribution point put in every certificate issued, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl_url: Option<String>,
    /// When the CA was made.
    pub created: Time,
    /// The number of the last CRL made (0: none yet). RFC 5280 §5.2.3 wants it to grow, so
    /// relying parties can tell a newer CRL from an older one.
    pub crl_number: u64,
    /// Every certificate issued, oldest first.
    #[serde(default, rename = "certificate")]
    pub certificates: Vec<Issued>,
}

/// One issued certificate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Issued {
    /// The serial number in lowercase hex, as `list` shows it and `revoke` takes it.
    pub serial: String,
    /// The domains it names (dNSName, and XmppAddr with `xmppaddr`), the first names the files.
    pub domains: Vec<String>,
    /// Whether it carries XmppAddr otherNames too.
    pub xmppaddr: bool,
    /// When it was issued.
    pub issued: Time,
    /// When it expires.
    pub not_after: Time,
    /// Where the chain was written.
    pub cert_file: PathBuf,
    /// Where its private key was written.
    pub key_file: PathBuf,
    /// Set once revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Revocation>,
}

/// When and why a certificate was revoked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    /// When `zorg ca revoke` ran: the revocation date in every CRL after it.
    pub at: Time,
    /// The reason put in the CRL entry.
    pub reason: Reason,
}

/// RFC 5280 §5.3.1 revocation reasons an auditor has use for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// No reason given (no reason code in the CRL entry).
    Unspecified,
    /// The server's private key was (or may have been) disclosed.
    KeyCompromise,
    /// The organisation left, or changed, the federation.
    AffiliationChanged,
    /// A new certificate replaces this one.
    Superseded,
    /// The server was shut down for good.
    CessationOfOperation,
    /// The auditor withdrew the organisation's right to federate.
    PrivilegeWithdrawn,
}

impl Reason {
    /// The code in the CRL entry.
    pub fn code(self) -> rcgen::RevocationReason {
        use rcgen::RevocationReason as R;
        match self {
            Reason::Unspecified => R::Unspecified,
            Reason::KeyCompromise => R::KeyCompromise,
            Reason::AffiliationChanged => R::AffiliationChanged,
            Reason::Superseded => R::Superseded,
            Reason::CessationOfOperation => R::CessationOfOperation,
            Reason::PrivilegeWithdrawn => R::PrivilegeWithdrawn,
        }
    }
}

/// A certificate's state at some moment, as `list` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Valid,
    Expired,
    Revoked(OffsetDateTime),
}

impl Issued {
    pub fn status(&self, now: OffsetDateTime) -> Status {
        match &self.revoked {
            Some(r) => Status::Revoked(r.at.0),
            None if self.not_after.0 <= now => Status::Expired,
            None => Status::Valid,
        }
    }
}

impl Index {
    /// A new, empty index for a CA.
    pub fn new(name: String, crl_url: Option<String>, created: OffsetDateTime) -> Index {
        Index {
            version: VERSION,
            name,
            crl_url,
            created: Time::from(created),
            crl_number: 0,
            certificates: Vec::new(),
        }
    }

    /// Reads `DIR/index.toml`.
    pub fn load(dir: &Path) -> Result<Index, String> {
        let path = dir.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!(
                    "no CA in {} (it has no {FILE}): check --dir, or create a CA with \
                     `zorg ca init --dir {} --name NAME`",
                    dir.display(),
                    dir.display()
                ));
            }
            Err(e) => return Err(files::io_err(&path, e)),
        };
        let index: Index = toml::from_str(&text).map_err(|e| {
            format!(
                "{} is damaged, restore it from a backup: {e}",
                path.display()
            )
        })?;
        if index.version != VERSION {
            return Err(format!(
                "{} has format version {}, this zorg reads version {VERSION}: use the zorg that wrote it",
                path.display(),
                index.version
            ));
        }
        Ok(index)
    }

    /// Writes `DIR/index.toml` atomically.
    pub fn save(&self, dir: &Path) -> Result<(), String> {
        let body = toml::to_string(self).map_err(|e| format!("cannot write the index: {e}"))?;
        files::replace_atomically(&dir.join(FILE), format!("{HEADER}{body}").as_bytes())
    }
}

/// A moment, stored as a TOML datetime (`2026-05-01T12:00:00Z`) to whole seconds, as X.509
/// has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Time(pub OffsetDateTime);

impl From<OffsetDateTime> for Time {
    fn from(t: OffsetDateTime) -> Time {
        Time(t.replace_nanosecond(0).unwrap_or(t))
    }
}

impl Serialize for Time {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = self.0.format(&Rfc3339).map_err(serde::ser::Error::custom)?;
        let dt: toml::value::Datetime = text.parse().map_err(serde::ser::Error::custom)?;
        dt.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Time, D::Error> {
        let dt = toml::value::Datetime::deserialize(d)?;
        OffsetDateTime::parse(&dt.to_string(), &Rfc3339)
            .map(Time)
            .map_err(|e| {
                serde::de::Error::custom(format!("{dt}: not a date and time with offset: {e}"))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn sample() -> Index {
        let mut index = Index::new(
            "Care Root".into(),
            Some("http://pki.example/root.crl".into()),
            datetime!(2026-01-02 03:04:05.678 UTC),
        );
        index.crl_number = 3;
        for (n, revoked) in [
            ("4a01", None),
            ("4b02", Some(datetime!(2026-02-01 00:00 UTC))),
        ] {
            index.certificates.push(Issued {
                serial: n.into(),
                domains: vec!["a.example".into(), "b.example".into()],
                xmppaddr: revoked.is_some(),
                issued: Time::from(datetime!(2026-01-03 00:00 UTC)),
                not_after: Time::from(datetime!(2027-02-04 00:00 UTC)),
                cert_file: PathBuf::from("/out/a.example.crt"),
                key_file: PathBuf::from("/out/a.example.key"),
                revoked: revoked.map(|at| Revocation {
                    at: Time::from(at),
                    reason: Reason::KeyCompromise,
                }),
            });
        }
        index
    }

    #[test]
    fn the_index_survives_a_save_and_a_reload() {
        let dir = std::env::temp_dir().join(format!("zorg-ca-index-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let index = sample();
        index.save(&dir).unwrap();
        let text = std::fs::read_to_string(dir.join(FILE)).unwrap();
        assert!(text.starts_with("# The index"), "{text}");
        assert!(text.contains("created = 2026-01-02T03:04:05Z"), "{text}");
        assert!(text.contains("reason = \"key-compromise\""), "{text}");
        assert_eq!(Index::load(&dir).unwrap(), index);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_or_foreign_index_is_refused_with_what_to_do() {
        let dir = std::env::temp_dir().join(format!("zorg-ca-index-bad-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let err = Index::load(&dir).unwrap_err();
        assert!(err.contains("zorg ca init"), "{err}");
        let text = toml::to_string(&sample())
            .unwrap()
            .replace("version = 1", "version = 9");
        std::fs::write(dir.join(FILE), text).unwrap();
        assert!(Index::load(&dir).unwrap_err().contains("version 9"));
        std::fs::write(dir.join(FILE), "version = 1\nname = 3\n").unwrap();
        assert!(Index::load(&dir).unwrap_err().contains("damaged"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn status_is_revoked_before_expired() {
        let index = sample();
        let before = datetime!(2026-06-01 00:00 UTC);
        let after = datetime!(2028-01-01 00:00 UTC);
        assert_eq!(index.certificates[0].status(before), Status::Valid);
        assert_eq!(index.certificates[0].status(after), Status::Expired);
        assert_eq!(
            index.certificates[1].status(after),
            Status::Revoked(datetime!(2026-02-01 00:00 UTC))
        );
    }
}
