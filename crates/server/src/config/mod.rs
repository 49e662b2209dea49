//! The server's configuration: the `zorg.toml` an operator writes, its embedded defaults, and the
//! checks that report every problem in it at once, each with its key path and line.
//!
//! Every key is optional; [`Config::default`] is the configuration used without a file and is
//! itself valid. `zorg.example.toml` at the repository root documents every key with its default;
//! tests keep the two in step.

mod audit;
mod diagnose;
mod federation;
mod push;
mod sections;
mod storage;
mod values;

#[cfg(test)]
mod federation_tests;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use audit::{AuditConfig, OnFailure};
pub use federation::{FederationConfig, S2sConfig};
pub use push::PushConfig;
pub use sections::{
    C2sConfig, DomainConfig, LimitsConfig, LogConfig, LogFormat, ModulesConfig, RegistrationConfig,
};
pub use storage::{ArchiveConfig, StorageConfig};
pub use values::{DurationStr, ParseDurationError};

/// The whole configuration file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the database, generated certificates and uploaded files live. Relative paths are
    /// relative to the config file (to the working directory without one). Default "zorg-data".
    pub data_dir: PathBuf,
    /// The `[[domain]]` entries: the domains this server hosts. At least one is required in a
    /// file (a file without any is an error, not "localhost"); the embedded default has
    /// "localhost".
    #[serde(rename = "domain", default)]
    pub domains: Vec<DomainConfig>,
    /// `[c2s]`: client listeners and stream behaviour.
    pub c2s: C2sConfig,
    /// `[limits]`: resource limits per connection, account and address.
    pub limits: LimitsConfig,
    /// `[s2s]`: listeners for other servers, opened only when federation is enabled.
    pub s2s: S2sConfig,
    /// `[federation]`: trust anchors, revocation, peer lists and discovery overrides.
    pub federation: FederationConfig,
    /// `[log]`: diagnostic log format and filter.
    pub log: LogConfig,
    /// `[registration]`: XEP-0077 in-band registration.
    pub registration: RegistrationConfig,
    /// `[modules]`: optional capabilities.
    pub modules: ModulesConfig,
    /// `[storage]`: the key that encrypts stored messages.
    pub storage: StorageConfig,
    /// `[archive]`: XEP-0313 archives and their retention.
    pub archive: ArchiveConfig,
    /// `[push]`: XEP-0357 push notifications.
    pub push: PushConfig,
    /// `[audit]`: the NEN 7513 audit trail.
    pub audit: AuditConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("zorg-data"),
            domains: vec![DomainConfig::new("localhost")],
            c2s: C2sConfig::default(),
            limits: LimitsConfig::default(),
            s2s: S2sConfig::default(),
            federation: FederationConfig::default(),
            log: LogConfig::default(),
            registration: RegistrationConfig::default(),
            modules: ModulesConfig::default(),
            storage: StorageConfig::default(),
            archive: ArchiveConfig::default(),
            push: PushConfig::default(),
            audit: AuditConfig::default(),
        }
    }
}

impl Config {
    /// Reads, parses and validates the file at `path`, and resolves relative paths in it
    /// (`data_dir`, certificates, keys) against the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_owned(),
            source,
        })?;
        // Absolute, so that paths stay right if the process later changes directory.
        let file = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let base = file.parent().unwrap_or(Path::new(""));
        Self::parse_at(&text, base, path)
    }

    /// Like [`Config::load`] for a config given as text, with relative paths resolved against
    /// `base_dir`. Errors name the file `<config>`.
    pub fn from_str_at(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        Self::parse_at(text, base_dir, Path::new("<config>"))
    }

    fn parse_at(text: &str, base_dir: &Path, file: &Path) -> Result<Config, ConfigError> {
        let mut config = diagnose::parse(text).map_err(|problems| ConfigError::Invalid {
            file: file.to_owned(),
            problems,
        })?;
        config.resolve_relative_to(base_dir);
        Ok(config)
    }

    /// Every problem in a config text: syntax errors, unknown keys, wrong types and values out
    /// of bounds, sorted by line. Empty when the text is a valid config.
    pub fn check(text: &str) -> Vec<Problem> {
        diagnose::parse(text).err().unwrap_or_default()
    }

    /// Every value out of bounds or inconsistent, without line numbers. Also run on configs
    /// built in code; [`Config::check`] and [`Config::load`] run it for files.
    pub fn validate(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        if self.data_dir.as_os_str().is_empty() {
            problems.push(Problem::new("data_dir", "is empty; give a directory"));
        }
        sections::validate_domains(&self.domains, &mut problems);
        self.c2s.validate(&mut problems);
        self.limits.validate(&mut problems);
        let listeners: [(&str, &str, &[std::net::SocketAddr]); 4] = [
            ("c2s", "listen", &self.c2s.listen),
            ("c2s", "direct_tls", &self.c2s.direct_tls),
            ("s2s", "listen", &self.s2s.listen),
            ("s2s", "direct_tls", &self.s2s.direct_tls),
        ];
        sections::validate_listeners(&listeners, &mut problems);
        self.federation.validate(&self.s2s, &mut problems);
        self.log.validate(&mut problems);
        self.registration.validate(&mut problems);
        self.storage.validate(&mut problems);
        self.archive.validate(&mut problems);
        self.push.validate(&mut problems);
        self.audit.validate(&mut problems);
        problems
    }

    /// Makes relative `data_dir`, `certificate`, `key`, trust anchor and CRL paths relative to `base_dir` (the
    /// config file's directory). Absolute paths are kept.
    pub fn resolve_relative_to(&mut self, base_dir: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base_dir.join(&*p);
            }
        };
        resolve(&mut self.data_dir);
        self.storage.key_file.as_mut().map(resolve);
        self.audit.dir.as_mut().map(resolve);
        self.audit.signing_key.as_mut().map(resolve);
        for d in &mut self.domains {
            d.certificate.as_mut().map(resolve);
            d.key.as_mut().map(resolve);
        }
        let federation = &mut self.federation;
        for p in federation
            .trust_anchors
            .iter_mut()
            .chain(&mut federation.crls)
            .chain(&mut federation.dnssec_trust_anchors)
        {
            resolve(p);
        }
    }

    /// Where the key-encryption key comes from.
    pub fn key_source(&self) -> crate::crypto::KeySource {
        use crate::crypto::KeySource;
        match (&self.storage.key_file, &self.storage.key_env) {
            (Some(f), _) => KeySource::File(f.clone()),
            (None, Some(v)) => KeySource::Env(v.clone()),
            (None, None) => KeySource::Default(self.data_dir.join("zorg.key")),
        }
    }

    /// The audit log's directory.
    pub fn audit_dir(&self) -> PathBuf {
        self.audit
            .dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("audit"))
    }

    /// The audit checkpoint signing key's file.
    pub fn audit_signing_key(&self) -> PathBuf {
        self.audit
            .signing_key
            .clone()
            .unwrap_or_else(|| self.data_dir.join("audit-signing.key"))
    }

    /// How long `domain`'s archives keep messages; `None` keeps them.
    pub fn archive_expiry(&self, domain: &str) -> Option<std::time::Duration> {
        let e = self
            .domains
            .iter()
            .find(|d| d.name == domain)
            .and_then(|d| d.archive_expiry)
            .unwrap_or(self.archive.expiry);
        (!e.is_zero()).then(|| e.get())
    }

    /// Lower-cases domain names, so the rest of the server compares them byte for byte.
    fn normalise(&mut self) {
        for d in &mut self.domains {
            d.name.make_ascii_lowercase();
        }
        self.federation.normalise();
    }
}

/// One problem found in a config, located by key path and, when known, line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The key path, e.g. "limits.max_stanza_size", "domain[1].name" or "c2s.listen[0]"; empty
    /// for syntax errors that belong to no key.
    pub path: String,
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl Problem {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            line: None,
            message: message.into(),
        }
    }
}

/// `line N: path: message`, leaving out what is unknown.
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Why a config could not be loaded.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        /// The file as given.
        file: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file was read but has problems; all of them are listed.
    Invalid {
        /// The file as given.
        file: PathBuf,
        /// Every problem found, sorted by line.
        problems: Vec<Problem>,
    },
}

/// One problem per line, as `<file>:<line>: <key.path>: <message>`.
impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { file, source } => {
                write!(
                    f,
                    "{}: cannot read the config file: {source}",
                    file.display()
                )
            }
            ConfigError::Invalid { file, problems } => {
                for (i, p) in problems.iter().enumerate() {
                    if i > 0 {
                        f.write_str("\n")?;
                    }
                    write!(f, "{}:", file.display())?;
                    if let Some(line) = p.line {
                        write!(f, "{line}:")?;
                    }
                    if !p.path.is_empty() {
                        write!(f, " {}:", p.path)?;
                    }
                    write!(f, " {}", p.message)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } => Some(source),
            ConfigError::Invalid { .. } => None,
        }
    }
}
