//! Finding the configuration a command runs with: the file given with `--config`, or the
//! embedded defaults (data in `./zorg-data`, relative to the working directory).

use std::path::{Path, PathBuf};

use zorg_server::config::{Config, ConfigError};

/// Loads `path`, or returns the embedded defaults when there is none. The error text lists every
/// problem of the file, one per line, as `FILE:LINE: key.path: message`.
pub fn load(path: Option<&Path>) -> Result<Config, String> {
    let mut config = match path {
        Some(path) => Config::load(path).map_err(|e| match e {
            ConfigError::Invalid { .. } => format!("the configuration has problems:\n{e}"),
            ConfigError::Read { .. } => e.to_string(),
        })?,
        None => Config::default(),
    };
    // Absolute, so that what we print and what the server opens stay the same whatever the
    // process does later; the relative default is relative to the working directory.
    config.data_dir = absolute(&config.data_dir);
    Ok(config)
}

/// `path` made absolute against the working directory (unchanged if that cannot be read).
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

/// The database file inside the data directory.
pub fn database_path(config: &Config) -> PathBuf {
    config.data_dir.join("zorg.db")
}

/// How a later command should name the config again: `" --config FILE"`, or nothing for the
/// defaults. For hints printed to the operator.
pub fn config_flag(path: Option<&Path>) -> String {
    match path {
        Some(p) => format!(" --config {}", p.display()),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_file_the_defaults_are_used_with_an_absolute_data_dir() {
        let config = load(None).unwrap();
        assert!(config.data_dir.is_absolute());
        assert!(config.data_dir.ends_with("zorg-data"));
        assert_eq!(config.domains.len(), 1);
        assert_eq!(config.domains[0].name, "localhost");
    }

    #[test]
    fn a_missing_file_is_named_in_the_error() {
        let err = load(Some(Path::new("/nonexistent/zorg.toml"))).unwrap_err();
        assert!(err.contains("/nonexistent/zorg.toml"), "{err}");
    }

    #[test]
    fn config_flag_repeats_the_file() {
        assert_eq!(config_flag(None), "");
        assert_eq!(
            config_flag(Some(Path::new("/etc/zorg.toml"))),
            " --config /etc/zorg.toml"
        );
    }
}
