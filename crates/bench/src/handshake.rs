//! The speed of light for logins: full TLS handshakes and nothing else. `tls-server` is a bare
//! TLS server (each connection's handshake on its own task, then it waits for the client to
//! close); `handshakes` opens connections against it, or against any TLS port such as Zorg's
//! direct TLS listener, each with a full handshake (no resumption), and closes them again.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::ServerName;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::stats::{self, Tally};

/// Longest one connection may take, handshake and close together.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the bare TLS server until the process is killed.
pub async fn serve(listen: SocketAddr, cert: &Path, key: &Path) -> Result<(), String> {
    let acceptor = crate::relay::acceptor(cert, key)?;
    let listener = crate::relay::bind(listen).await?;
    loop {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(TIMEOUT, async {
                let mut tls = acceptor.accept(tcp).await?;
                // Until the client's close_notify (or EOF), then close in turn.
                let mut buf = [0u8; 256];
                while tls.read(&mut buf).await? > 0 {}
                tls.shutdown().await
            })
            .await;
        });
    }
}

/// One connection: TCP, a full TLS handshake, close_notify, and the server's close.
async fn one(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    name: ServerName<'static>,
) -> Result<(), &'static str> {
    let tcp = TcpStream::connect(addr).await.map_err(|_| "connect")?;
    let _ = tcp.set_nodelay(true);
    let mut io = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .map_err(|_| "tls")?;
    io.shutdown().await.map_err(|_| "io")?;
    // Waiting for the server's side of the close makes sure it finished its handshake too.
    let mut buf = [0u8; 512];
    loop {
        match io.read(&mut buf).await {
            Ok(0) | Err(_) => return Ok(()),
            Ok(_) => {}
        }
    }
}

/// `count` connections, `in_flight` at a time; handshakes per second, their latency, and the
/// server's CPU time per handshake given its pid.
pub async fn client(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    domain: &str,
    count: usize,
    in_flight: usize,
    pid: Option<u32>,
) -> Value {
    let name = match ServerName::try_from(domain.to_owned()) {
        Ok(n) => n,
        Err(e) => return json!({"mode": "handshakes", "error": e.to_string()}),
    };
    let before = pid.and_then(stats::sample);
    let sem = Arc::new(Semaphore::new(in_flight.max(1)));
    let mut set = JoinSet::new();
    let started = Instant::now();
    for _ in 0..count {
        let (tls, name, sem) = (tls.clone(), name.clone(), sem.clone());
        set.spawn(async move {
            let _permit = sem.acquire().await;
            let begun = Instant::now();
            let r = tokio::time::timeout(TIMEOUT, one(addr, tls, name)).await;
            let us = u32::try_from(begun.elapsed().as_micros()).unwrap_or(u32::MAX);
            (r, us)
        });
    }
    let mut tally = Tally::default();
    let mut lat = Vec::with_capacity(count);
    while let Some(done) = set.join_next().await {
        match done {
            Ok((Ok(Ok(())), us)) => lat.push(us),
            Ok((Ok(Err(kind)), _)) => tally.error(kind),
            Ok((Err(_), _)) => tally.error("timeout"),
            Err(_) => tally.error("task"),
        }
    }
    let elapsed = started.elapsed();
    let after = pid.and_then(stats::sample);
    let ok = lat.len();
    let p = stats::percentiles(&mut lat);
    let mut v = json!({
        "mode": "handshakes", "count": count, "in_flight": in_flight,
        "ok": ok, "failed": count - ok,
        "handshake_rate": (ok as f64 / elapsed.as_secs_f64() * 10.0).round() / 10.0,
        "handshake_p99_ms": p.get("p99").and_then(Value::as_u64).map(|us| us as f64 / 1000.0),
        "handshake_latency_us": p, "errors": tally.errors, "duration_s": elapsed.as_secs_f64(),
    });
    if let (Some(b), Some(a)) = (before, after)
        && ok > 0
    {
        v["server_pid"] = json!(pid);
        v["server_cpu_s"] = json!(((a.cpu_s - b.cpu_s) * 1000.0).round() / 1000.0);
        v["server_cpu_ms_per_handshake"] =
            json!(((a.cpu_s - b.cpu_s) * 1e6 / ok as f64).round() / 1000.0);
    }
    v
}
