//! `zorg-bench`: the load tool. Logs in up to 20,000 TLS clients against any XMPP server
//! (Zorg, Prosody, ejabberd…), exchanges messages, and prints one JSON line per run; plus the
//! bare TLS relay that marks what this machine can do at all. See docs/performance.md.
#![forbid(unsafe_code)]

mod client;
mod handshake;
mod modes;
mod relay;
mod scram;
mod stats;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use client::{Mech, Target};
use modes::{Accounts, Pace};

/// Most users any run may log in.
const MAX_USERS: usize = 20_000;
/// Longest any run may measure.
const MAX_SECS: u64 = 300;

/// Load tool for XMPP servers.
#[derive(Debug, Parser)]
#[command(name = "zorg-bench", version, about)]
struct Cli {
    /// Worker threads of the generator (it shares the machine with the server).
    #[arg(long, default_value_t = 1, global = true)]
    threads: usize,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Args)]
struct Server {
    /// The server's client port (STARTTLS, or direct TLS with --direct-tls).
    #[arg(long)]
    server: SocketAddr,
    /// The XMPP domain.
    #[arg(long, default_value = "localhost")]
    domain: String,
    /// Use direct TLS (XEP-0368) instead of STARTTLS.
    #[arg(long)]
    direct_tls: bool,
    /// Pin the server's certificate (PEM); without it any certificate is accepted, which is
    /// only for loopback test servers.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Accept any certificate (explicitly; the same as giving no --ca).
    #[arg(long)]
    insecure: bool,
    /// SASL mechanism.
    #[arg(long, value_enum, default_value = "SCRAM-SHA-256")]
    mech: Mech,
    /// User names are PREFIX0, PREFIX1, …
    #[arg(long, default_value = "bench")]
    prefix: String,
    /// Everyone's password.
    #[arg(long, default_value = "bench")]
    password: String,
    /// Logins in progress at once.
    #[arg(long, default_value_t = 50)]
    in_flight: usize,
    /// The server's process id, to report its memory and CPU time.
    #[arg(long)]
    server_pid: Option<u32>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create accounts by in-band registration (XEP-0077).
    Register {
        #[command(flatten)]
        s: Server,
        /// How many.
        #[arg(long)]
        count: usize,
    },
    /// Log in N users, each with a full TLS handshake.
    Login {
        #[command(flatten)]
        s: Server,
        /// How many.
        #[arg(long)]
        users: usize,
    },
    /// Closed loop: pairs answer each other, WINDOW messages in flight per pair.
    Closed {
        #[command(flatten)]
        s: Server,
        /// Pairs of users.
        #[arg(long, default_value_t = 100)]
        pairs: usize,
        /// Messages in flight per pair.
        #[arg(long, default_value_t = 10)]
        window: usize,
        /// Seconds to measure.
        #[arg(long, default_value_t = 30)]
        duration: u64,
    },
    /// Open loop: a fixed total rate, one way within each pair; measures latency.
    Open {
        #[command(flatten)]
        s: Server,
        /// Pairs of users.
        #[arg(long, default_value_t = 100)]
        pairs: usize,
        /// Messages per second in total.
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Seconds to measure.
        #[arg(long, default_value_t = 30)]
        duration: u64,
    },
    /// Log in N users and hold the sessions; reports server memory per session.
    Idle {
        #[command(flatten)]
        s: Server,
        /// How many sessions.
        #[arg(long)]
        users: usize,
        /// Seconds to hold them before measuring.
        #[arg(long, default_value_t = 10)]
        hold: u64,
    },
    /// The bare TLS relay server (runs until killed).
    RelayServer {
        /// Where to listen.
        #[arg(long)]
        listen: SocketAddr,
        /// Certificate chain (PEM).
        #[arg(long)]
        cert: PathBuf,
        /// Private key (PEM).
        #[arg(long)]
        key: PathBuf,
    },
    /// A bare TLS server: full handshakes and nothing else (runs until killed).
    TlsServer {
        /// Where to listen.
        #[arg(long)]
        listen: SocketAddr,
        /// Certificate chain (PEM).
        #[arg(long)]
        cert: PathBuf,
        /// Private key (PEM).
        #[arg(long)]
        key: PathBuf,
    },
    /// Full TLS handshakes against any TLS port (tls-server, or a direct TLS listener).
    Handshakes {
        /// The TLS port.
        #[arg(long)]
        server: SocketAddr,
        /// The name to ask for (SNI).
        #[arg(long, default_value = "localhost")]
        domain: String,
        /// Pin the server's certificate (PEM); else any is accepted.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Accept any certificate.
        #[arg(long)]
        insecure: bool,
        /// How many connections.
        #[arg(long, default_value_t = 1000)]
        count: usize,
        /// Handshakes in progress at once.
        #[arg(long, default_value_t = 50)]
        in_flight: usize,
        /// The server's process id, to report its CPU time.
        #[arg(long)]
        server_pid: Option<u32>,
    },
    /// Closed loop against the bare relay.
    Relay {
        /// The relay's address.
        #[arg(long)]
        server: SocketAddr,
        /// Pin the relay's certificate (PEM); else any is accepted.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Accept any certificate.
        #[arg(long)]
        insecure: bool,
        /// Pairs of connections.
        #[arg(long, default_value_t = 100)]
        pairs: usize,
        /// Messages in flight per pair.
        #[arg(long, default_value_t = 10)]
        window: usize,
        /// Seconds to measure.
        #[arg(long, default_value_t = 30)]
        duration: u64,
    },
}

fn target(s: &Server) -> Result<(Target, Accounts), String> {
    let tls = client::tls_config(if s.insecure { None } else { s.ca.as_deref() })?;
    Ok((
        Target {
            addr: s.server,
            domain: s.domain.clone(),
            direct_tls: s.direct_tls,
            tls,
            mech: s.mech,
        },
        Accounts {
            prefix: s.prefix.clone(),
            password: s.password.clone(),
        },
    ))
}

fn bounded_users(n: usize) -> Result<usize, String> {
    if n == 0 || n > MAX_USERS {
        return Err(format!("users must be between 1 and {MAX_USERS}"));
    }
    Ok(n)
}

fn bounded_secs(s: u64) -> Result<Duration, String> {
    if s == 0 || s > MAX_SECS {
        return Err(format!("duration must be between 1 and {MAX_SECS} seconds"));
    }
    Ok(Duration::from_secs(s))
}

/// `closed` and `open`: log in the pairs, then measure.
async fn pairs_command(
    s: &Server,
    pairs: usize,
    pace: Pace,
    secs: u64,
) -> Result<serde_json::Value, String> {
    let (t, a) = target(s)?;
    bounded_users(2 * pairs)?;
    let duration = bounded_secs(secs)?;
    Ok(modes::pairs_run(&t, &a, pairs, s.in_flight, pace, duration, s.server_pid).await)
}

async fn run(cmd: Command) -> Result<serde_json::Value, String> {
    Ok(match cmd {
        Command::Register { s, count } => {
            let (t, a) = target(&s)?;
            modes::register(&t, &a, bounded_users(count)?, s.in_flight).await
        }
        Command::Login { s, users } => {
            let (t, a) = target(&s)?;
            modes::login(&t, &a, bounded_users(users)?, s.in_flight, s.server_pid).await
        }
        Command::Closed {
            s,
            pairs,
            window,
            duration,
        } => {
            let pace = Pace::Closed {
                window: window.clamp(1, 1000),
            };
            pairs_command(&s, pairs, pace, duration).await?
        }
        Command::Open {
            s,
            pairs,
            rate,
            duration,
        } => {
            let pace = Pace::Open {
                rate: rate.clamp(1, 1_000_000),
            };
            pairs_command(&s, pairs, pace, duration).await?
        }
        Command::Idle { s, users, hold } => {
            let (t, a) = target(&s)?;
            modes::idle(
                &t,
                &a,
                bounded_users(users)?,
                s.in_flight,
                bounded_secs(hold)?,
                s.server_pid,
            )
            .await
        }
        Command::RelayServer { listen, cert, key } => {
            relay::serve(listen, &cert, &key).await?;
            serde_json::Value::Null
        }
        Command::TlsServer { listen, cert, key } => {
            handshake::serve(listen, &cert, &key).await?;
            serde_json::Value::Null
        }
        Command::Handshakes {
            server,
            domain,
            ca,
            insecure,
            count,
            in_flight,
            server_pid,
        } => {
            let tls = client::tls_config(if insecure { None } else { ca.as_deref() })?;
            let count = bounded_users(count)?;
            handshake::client(server, tls, &domain, count, in_flight, server_pid).await
        }
        Command::Relay {
            server,
            ca,
            insecure,
            pairs,
            window,
            duration,
        } => {
            bounded_users(2 * pairs)?;
            let tls = client::tls_config(if insecure { None } else { ca.as_deref() })?;
            relay::client(
                server,
                tls,
                pairs,
                window.clamp(1, 1000),
                bounded_secs(duration)?,
            )
            .await
        }
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    stats::now_ns();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.clamp(1, 64))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("zorg-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(v) => {
            if !v.is_null() {
                println!("{v}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("zorg-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
