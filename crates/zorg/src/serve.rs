//! `zorg serve`: load the configuration, set up logging, start the server, tell the operator
//! where it listens and how to use it, and stop it cleanly on SIGINT or SIGTERM.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use tracing_subscriber::EnvFilter;
use zorg_server::config::{Config, LogConfig, LogFormat};
use zorg_server::server::{self, RunningServer};

use crate::settings;

/// Exit code after a second signal cut a slow shutdown short (128 + SIGINT, as shells do).
const EXIT_INTERRUPTED: u8 = 130;

/// Runs the server until a signal; see the module docs.
pub fn run(config_path: Option<&Path>) -> Result<ExitCode, String> {
    let config = settings::load(config_path)?;
    init_logging(&config.log)?;
    let rt = crate::runtime()?;
    rt.block_on(serve(config, config_path))
}

async fn serve(config: Config, config_path: Option<&Path>) -> Result<ExitCode, String> {
    // Registered before starting, so that a signal during start-up is not lost (nor kills the
    // process half-way through writing a certificate).
    let mut signals = Signals::new()?;
    let data_dir = config.data_dir.clone();
    let running = server::start(config)
        .await
        .map_err(|e| format!("cannot start the server: {e}"))?;
    // Not print!: a closed stdout (`zorg serve | head -3`) must not bring the server down.
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(banner(&running, &data_dir, config_path).as_bytes());
    let _ = stdout.flush();
    drop(stdout);
    tracing::info!(
        c2s = ?running.c2s_addrs,
        direct_tls = ?running.direct_tls_addrs,
        s2s = ?running.s2s_addrs,
        s2s_direct_tls = ?running.s2s_direct_tls_addrs,
        data_dir = %data_dir.display(),
        version = env!("CARGO_PKG_VERSION"),
        "zorg started"
    );

    let signal = signals.next().await;
    tracing::info!(
        signal,
        "shutting down: closing every stream with <system-shutdown/> and flushing storage"
    );
    tokio::select! {
        () = running.shutdown() => {
            tracing::info!("shutdown complete: streams closed, storage flushed");
            Ok(ExitCode::SUCCESS)
        }
        signal = signals.next() => {
            tracing::warn!(signal, "second signal: stopping without waiting for streams to close");
            Ok(ExitCode::from(EXIT_INTERRUPTED))
        }
    }
}

/// Installs the global tracing subscriber: format from `[log]`, filter from `log.level` unless
/// `RUST_LOG` is set. Logs go to stderr, so that stdout carries only the start-up summary.
fn init_logging(log: &LogConfig) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.trim().is_empty() => EnvFilter::try_new(&env)
            .map_err(|e| format!("RUST_LOG={env:?} is not a valid log filter: {e}"))?,
        _ => EnvFilter::try_new(&log.level)
            .map_err(|e| format!("log.level {:?} is not a valid log filter: {e}", log.level))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match log.format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| format!("cannot set up logging: {e}"))
}

/// What the operator reads on stdout once the server runs: certificates with fingerprints,
/// listening addresses, and how to add an account and connect a client.
fn banner(running: &RunningServer, data_dir: &Path, config_path: Option<&Path>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Zorg {} is running.", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(out, "Data directory: {}", data_dir.display());
    for cert in &running.server.tls.certs {
        let _ = writeln!(out, "Domain {}", cert.domain);
        let origin = if cert.generated {
            " (generated a self-signed certificate)"
        } else {
            ""
        };
        let _ = writeln!(out, "  certificate: {}{origin}", cert.certificate.display());
        let _ = writeln!(out, "  SHA-256 fingerprint: {}", cert.fingerprint);
        if let Some(sha1) = sha1_fingerprint(&cert.certificate) {
            let _ = writeln!(
                out,
                "  SHA-1 fingerprint:   {sha1}   (some clients, e.g. profanity, show only this)"
            );
        }
    }
    for addr in &running.c2s_addrs {
        let _ = writeln!(out, "Clients (STARTTLS): {addr}");
    }
    for addr in &running.direct_tls_addrs {
        let _ = writeln!(out, "Clients (direct TLS, XEP-0368): {addr}");
    }
    for addr in &running.s2s_addrs {
        let _ = writeln!(out, "Servers (STARTTLS): {addr}");
    }
    for addr in &running.s2s_direct_tls_addrs {
        let _ = writeln!(out, "Servers (direct TLS, XEP-0368): {addr}");
    }
    let domain = running
        .server
        .config
        .domains
        .first()
        .map_or("localhost", |d| d.name.as_str());
    let account = format!("alice@{domain}");
    let config = settings::config_flag(config_path);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Add an account: zorg user add {account}{config}   (from the source tree: cargo run \
         --release -- user add {account}{config})"
    );
    let target = running
        .c2s_addrs
        .first()
        .or(running.direct_tls_addrs.first())
        .map_or_else(|| "the server".to_owned(), describe_addr);
    let _ = writeln!(
        out,
        "Then connect any XMPP client (Gajim, Dino, profanity…) as {account} to {target} and \
         accept the certificate with the fingerprint above."
    );
    let _ = writeln!(out, "Stop with Ctrl-C or SIGTERM.");
    out
}

/// The SHA-1 fingerprint of the first certificate in a PEM file, as `AB:CD:…`. SHA-1 is no
/// longer fit for signatures, but profanity and other clients still show only this fingerprint
/// when they ask whether to trust a certificate, and an operator must be able to compare.
fn sha1_fingerprint(pem: &Path) -> Option<String> {
    use aws_lc_rs::digest;
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let der = CertificateDer::pem_file_iter(pem).ok()?.next()?.ok()?;
    let hash = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, der.as_ref());
    Some(colon_hex(hash.as_ref()))
}

/// Bytes as upper-case hex pairs joined by colons, the way certificate fingerprints are shown.
fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// An address as a client should dial it: a wildcard listener is reached on any of the
/// machine's addresses.
fn describe_addr(addr: &SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("this machine's address, port {}", addr.port())
    } else {
        addr.to_string()
    }
}

/// SIGINT and SIGTERM as one stream.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self, String> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let err = |e: std::io::Error| format!("cannot install signal handlers: {e}");
            Ok(Self {
                term: signal(SignalKind::terminate()).map_err(err)?,
                int: signal(SignalKind::interrupt()).map_err(err)?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Waits for the next signal and returns its name.
    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_colon_separated_upper_case_hex() {
        assert_eq!(colon_hex(&[0x9f, 0x63, 0x05]), "9F:63:05");
        assert_eq!(sha1_fingerprint(Path::new("/nonexistent.crt")), None);
    }

    #[test]
    fn wildcard_addresses_are_described() {
        let any: SocketAddr = "0.0.0.0:5222".parse().unwrap();
        assert_eq!(describe_addr(&any), "this machine's address, port 5222");
        let local: SocketAddr = "127.0.0.1:5222".parse().unwrap();
        assert_eq!(describe_addr(&local), "127.0.0.1:5222");
    }
}
