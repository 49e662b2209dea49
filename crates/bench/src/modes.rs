//! The measurements: register, login, closed loop, open loop, idle, and the bare relay.
//! Every loop is bounded in count (users ≤ 20,000) and time (≤ 300 s plus a short drain).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::client::{Conn, Target};
use crate::stats::{self, ProcSample, Tally, now_ns};

/// Longest any single login may take before it counts as failed.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long in-flight messages may take to arrive after the sending stops.
const DRAIN: Duration = Duration::from_secs(5);
/// Filler that makes a body the size of a short chat message.
const PAD: &str = " The patient in bed 12 asks for you when you have a minute.";

/// Who logs in as what.
#[derive(Clone)]
pub struct Accounts {
    /// User names are `{prefix}{i}`.
    pub prefix: String,
    /// Everyone's password.
    pub password: String,
}

impl Accounts {
    fn user(&self, i: usize) -> String {
        format!("{}{i}", self.prefix)
    }
}

fn proc_json(
    pid: Option<u32>,
    before: Option<ProcSample>,
    after: Option<ProcSample>,
    sessions: usize,
) -> Map<String, Value> {
    let mut m = Map::new();
    if let (Some(pid), Some(b), Some(a)) = (pid, before, after) {
        m.insert("server_pid".into(), json!(pid));
        m.insert("server_rss_kib_before".into(), json!(b.rss_kib));
        m.insert("server_rss_kib_after".into(), json!(a.rss_kib));
        if sessions > 0 {
            let per = (a.rss_kib as f64 - b.rss_kib as f64) / sessions as f64;
            m.insert("kib_per_session".into(), json!((per * 10.0).round() / 10.0));
        }
        m.insert(
            "server_cpu_s".into(),
            json!(((a.cpu_s - b.cpu_s) * 1000.0).round() / 1000.0),
        );
    }
    m
}

/// Logs in users `range` with at most `in_flight` logins at a time; returns the connections
/// (in index order, `None` for failures), the tally (errors) and per-login latencies.
async fn login_all(
    t: &Target,
    acc: &Accounts,
    range: std::ops::Range<usize>,
    in_flight: usize,
    presence: bool,
) -> (Vec<Option<Conn>>, Tally, Vec<u32>, Duration) {
    let sem = Arc::new(Semaphore::new(in_flight.max(1)));
    let mut set = JoinSet::new();
    let started = Instant::now();
    for i in range.clone() {
        let (t, acc, sem) = (t.clone(), acc.clone(), sem.clone());
        set.spawn(async move {
            let _permit = sem.acquire().await;
            let begun = Instant::now();
            let r = tokio::time::timeout(LOGIN_TIMEOUT, async {
                let (mut c, _) = Conn::connect(&t).await?;
                c.login(&t, &acc.user(i), &acc.password, "bench").await?;
                if presence {
                    c.presence().await?;
                }
                Ok::<_, crate::client::ClientError>(c)
            })
            .await;
            let us = u32::try_from(begun.elapsed().as_micros()).unwrap_or(u32::MAX);
            (i, r, us)
        });
    }
    let mut conns: Vec<Option<Conn>> = (0..range.len()).map(|_| None).collect();
    let mut tally = Tally::default();
    let mut lat = Vec::with_capacity(range.len());
    while let Some(done) = set.join_next().await {
        let Ok((i, r, us)) = done else { continue };
        match r {
            Ok(Ok(c)) => {
                lat.push(us);
                conns[i - range.start] = Some(c);
            }
            Ok(Err(e)) => {
                eprintln!("login {} failed: {e}", acc.user(i));
                tally.error(e.kind());
            }
            Err(_) => tally.error("timeout"),
        }
    }
    (conns, tally, lat, started.elapsed())
}

/// Creates accounts by in-band registration (XEP-0077).
pub async fn register(t: &Target, acc: &Accounts, count: usize, in_flight: usize) -> Value {
    let sem = Arc::new(Semaphore::new(in_flight.max(1)));
    let mut set = JoinSet::new();
    let started = Instant::now();
    for i in 0..count {
        let (t, acc, sem) = (t.clone(), acc.clone(), sem.clone());
        set.spawn(async move {
            let _permit = sem.acquire().await;
            tokio::time::timeout(LOGIN_TIMEOUT, async {
                let (mut c, _) = Conn::connect(&t).await?;
                c.register(&acc.user(i), &acc.password).await
            })
            .await
        });
    }
    let (mut ok, mut exists) = (0u64, 0u64);
    let mut tally = Tally::default();
    while let Some(done) = set.join_next().await {
        match done {
            Ok(Ok(Ok(true))) => ok += 1,
            Ok(Ok(Ok(false))) => exists += 1,
            Ok(Ok(Err(e))) => {
                eprintln!("registration failed: {e}");
                tally.error(e.kind());
            }
            _ => tally.error("timeout"),
        }
    }
    let failed: u64 = tally.errors.values().sum();
    json!({"mode": "register", "ok": ok, "exists": exists, "failed": failed, "errors": tally.errors,
           "duration_s": started.elapsed().as_secs_f64()})
}

/// Logs in `users` clients, `in_flight` at a time, each with a full TLS handshake. A first,
/// unmeasured pass fills the client's SaltedPassword cache (as real clients keep one), so the
/// measured pass is bound by the server, not by the generator's PBKDF2.
pub async fn login(
    t: &Target,
    acc: &Accounts,
    users: usize,
    in_flight: usize,
    pid: Option<u32>,
) -> Value {
    if t.mech != crate::client::Mech::Plain {
        let (warm, _, _, _) = login_all(t, acc, 0..users, in_flight, false).await;
        drop(warm);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let before = pid.and_then(stats::sample);
    let (conns, tally, mut lat, elapsed) = login_all(t, acc, 0..users, in_flight, true).await;
    let after = pid.and_then(stats::sample);
    let ok = conns.iter().filter(|c| c.is_some()).count();
    let p = stats::percentiles(&mut lat);
    let mut v = json!({
        "mode": "login", "users": users, "in_flight": in_flight,
        "logins_ok": ok, "logins_failed": users - ok,
        "login_rate": (ok as f64 / elapsed.as_secs_f64() * 10.0).round() / 10.0,
        "login_p99_ms": p.get("p99").and_then(Value::as_u64).map(|us| us as f64 / 1000.0),
        "login_latency_us": p, "errors": tally.errors, "duration_s": elapsed.as_secs_f64(),
    });
    extend(&mut v, proc_json(pid, before, after, 0));
    if let (Some(b), Some(a)) = (before, after)
        && ok > 0
    {
        v["server_cpu_ms_per_login"] =
            json!(((a.cpu_s - b.cpu_s) * 1e6 / ok as f64).round() / 1000.0);
    }
    v
}

fn extend(v: &mut Value, m: Map<String, Value>) {
    if let Some(o) = v.as_object_mut() {
        o.extend(m);
    }
}

/// The start of every message to `partner`, up to the send time (see [`stats::marker`]).
fn message_prefix(partner: Option<&str>) -> String {
    let m = String::from_utf8_lossy(stats::marker()).into_owned();
    match partner {
        Some(p) => format!("<message to='{p}' type='chat'><body>{m}"),
        None => format!("<message><body>{m}"),
    }
}

/// Waits until the flag is set (or its sender is gone); the guard `wait_for` returns is dropped
/// here, so the caller's future stays `Send`.
async fn until(rx: &mut watch::Receiver<bool>) -> bool {
    rx.wait_for(|v| *v).await.is_ok()
}

/// Shared state of a message run.
struct Run {
    sent: AtomicU64,
    delivered: AtomicU64,
    /// No new messages after this.
    stop: AtomicBool,
}

impl Run {
    /// Queues one timestamped message (`prefix` from [`message_prefix`]) and counts it.
    fn queue_message(&self, conn: &mut Conn, prefix: &str, tally: &mut Tally) {
        conn.wbuf.extend_from_slice(prefix.as_bytes());
        conn.wbuf.extend_from_slice(now_ns().to_string().as_bytes());
        conn.wbuf.extend_from_slice(PAD.as_bytes());
        conn.wbuf.extend_from_slice(b"</body></message>");
        self.sent.fetch_add(1, Ordering::Relaxed);
        tally.sent += 1;
    }
}

/// One side of a pair: reads, records, and (closed loop) answers each message with a new one.
async fn side(
    mut conn: Conn,
    partner: Option<String>,
    initial: usize,
    answer: bool,
    run: Arc<Run>,
    mut go: watch::Receiver<bool>,
    mut done: watch::Receiver<bool>,
) -> Tally {
    let mut tally = Tally::default();
    let prefix = message_prefix(partner.as_deref());
    if !until(&mut go).await {
        return tally;
    }
    for _ in 0..initial {
        run.queue_message(&mut conn, &prefix, &mut tally);
    }
    if conn.flush().await.is_err() {
        tally.error("io");
        return tally;
    }
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        tokio::select! {
            r = conn.read_raw(&mut buf) => {
                if r.is_err() {
                    // After the stop, partners hang up as the run ends: not an error.
                    if !run.stop.load(Ordering::Relaxed) {
                        tally.error("io");
                    }
                    break;
                }
                let mut n = 0u64;
                stats::scan(&mut buf, |ts| { tally.received(ts); n += 1; });
                run.delivered.fetch_add(n, Ordering::Relaxed);
                if answer && !run.stop.load(Ordering::Relaxed) {
                    for _ in 0..n {
                        run.queue_message(&mut conn, &prefix, &mut tally);
                    }
                }
                if conn.flush().await.is_err() {
                    tally.error("io");
                    break;
                }
            }
            _ = until(&mut done) => break,
        }
    }
    tally
}

/// How a message run paces its senders.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// Closed loop: `window` messages in flight per pair, each answered by a new one.
    Closed {
        /// Messages in flight per pair.
        window: usize,
    },
    /// Open loop: this many messages per second in total, one way (A → B).
    Open {
        /// Total rate.
        rate: u64,
    },
}

/// Runs pairs of connections (A = even index, B = odd) for `duration` and reports.
pub async fn messages(
    conns: Vec<Conn>,
    jids: Vec<String>,
    pace: Pace,
    duration: Duration,
    pid: Option<u32>,
    mode: &str,
) -> Value {
    let pairs = conns.len() / 2;
    let run = Arc::new(Run {
        sent: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let (go_tx, go_rx) = watch::channel(false);
    let (done_tx, done_rx) = watch::channel(false);
    let mut set = JoinSet::new();
    let mut iter = conns.into_iter().enumerate();
    while let (Some((ia, a)), Some((ib, b))) = (iter.next(), iter.next()) {
        let to_b = jids.get(ib).cloned();
        let to_a = jids.get(ia).cloned();
        match pace {
            Pace::Closed { window } => {
                set.spawn(side(
                    a,
                    to_b,
                    window,
                    true,
                    run.clone(),
                    go_rx.clone(),
                    done_rx.clone(),
                ));
                set.spawn(side(
                    b,
                    to_a,
                    0,
                    true,
                    run.clone(),
                    go_rx.clone(),
                    done_rx.clone(),
                ));
            }
            Pace::Open { rate } => {
                let per_pair = (rate as f64 / pairs.max(1) as f64).max(0.001);
                // Spread the senders evenly over one period: timers that all fire together
                // would send bursts of `pairs` messages and measure the generator's queueing.
                let offset = Duration::from_secs_f64(ia as f64 / 2.0 / rate.max(1) as f64);
                set.spawn(paced(
                    a,
                    to_b,
                    per_pair,
                    offset,
                    run.clone(),
                    go_rx.clone(),
                    done_rx.clone(),
                ));
                set.spawn(side(
                    b,
                    to_a,
                    0,
                    false,
                    run.clone(),
                    go_rx.clone(),
                    done_rx.clone(),
                ));
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let p0 = pid.and_then(stats::sample);
    let d0 = run.delivered.load(Ordering::Relaxed);
    let started = Instant::now();
    let _ = go_tx.send(true);
    tokio::time::sleep(duration).await;
    let d1 = run.delivered.load(Ordering::Relaxed);
    let window = started.elapsed();
    let p1 = pid.and_then(stats::sample);
    run.stop.store(true, Ordering::Relaxed);
    let drain_until = Instant::now() + DRAIN;
    while run.delivered.load(Ordering::Relaxed) < run.sent.load(Ordering::Relaxed)
        && Instant::now() < drain_until
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = done_tx.send(true);
    let mut total = Tally::default();
    while let Some(t) = set.join_next().await {
        if let Ok(t) = t {
            total.merge(t);
        }
    }
    let in_window = d1 - d0;
    let rate = in_window as f64 / window.as_secs_f64();
    let mut v = json!({
        "mode": mode, "pairs": pairs, "duration_s": window.as_secs_f64(),
        "sent": total.sent, "delivered": total.delivered,
        "lost": total.sent.saturating_sub(total.delivered),
        "msgs_per_sec": rate.round(),
        "latency_us": total.latency_json(), "errors": total.errors,
    });
    match pace {
        Pace::Closed { window } => v["window"] = json!(window),
        Pace::Open { rate } => v["rate"] = json!(rate),
    }
    extend(&mut v, proc_json(pid, p0, p1, 0));
    if let (Some(a), Some(b)) = (p0, p1)
        && in_window > 0
    {
        v["server_cpu_us_per_msg"] =
            json!(((b.cpu_s - a.cpu_s) * 1e6 / in_window as f64 * 10.0).round() / 10.0);
    }
    v
}

/// An open-loop sender: `per_sec` messages per second to `partner`, whatever happens.
async fn paced(
    mut conn: Conn,
    partner: Option<String>,
    per_sec: f64,
    offset: Duration,
    run: Arc<Run>,
    mut go: watch::Receiver<bool>,
    mut done: watch::Receiver<bool>,
) -> Tally {
    let mut tally = Tally::default();
    let prefix = message_prefix(partner.as_deref());
    if !until(&mut go).await {
        return tally;
    }
    let period = Duration::from_secs_f64(1.0 / per_sec);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sink = Vec::with_capacity(4096);
    loop {
        tokio::select! {
            _ = tick.tick(), if !run.stop.load(Ordering::Relaxed) => {
                // The tick may have been armed before the stop: check again, or a message sent
                // after the drain began would be counted as lost.
                if run.stop.load(Ordering::Relaxed) {
                    continue;
                }
                run.queue_message(&mut conn, &prefix, &mut tally);
                if conn.flush().await.is_err() {
                    tally.error("io");
                    break;
                }
            }
            // Keep reading so the server never blocks on us (presence, pings).
            r = conn.read_raw(&mut sink) => {
                sink.clear();
                if r.is_err() {
                    if !run.stop.load(Ordering::Relaxed) {
                        tally.error("io");
                    }
                    break;
                }
            }
            _ = until(&mut done) => break,
        }
    }
    tally
}

/// Logs in `2 * pairs` users and runs a message measurement.
pub async fn pairs_run(
    t: &Target,
    acc: &Accounts,
    pairs: usize,
    in_flight: usize,
    pace: Pace,
    duration: Duration,
    pid: Option<u32>,
) -> Value {
    let (conns, tally, _, _) = login_all(t, acc, 0..2 * pairs, in_flight, true).await;
    if conns.iter().any(Option::is_none) {
        return json!({"mode": mode_name(pace), "error": "not every user could log in", "errors": tally.errors});
    }
    let jids = (0..2 * pairs)
        .map(|i| format!("{}@{}", acc.user(i), t.domain))
        .collect();
    let conns = conns.into_iter().flatten().collect();
    messages(conns, jids, pace, duration, pid, mode_name(pace)).await
}

fn mode_name(p: Pace) -> &'static str {
    match p {
        Pace::Closed { .. } => "closed",
        Pace::Open { .. } => "open",
    }
}

/// Logs in `users` sessions, holds them for `hold`, and reports memory per session.
pub async fn idle(
    t: &Target,
    acc: &Accounts,
    users: usize,
    in_flight: usize,
    hold: Duration,
    pid: Option<u32>,
) -> Value {
    let before = pid.and_then(stats::sample);
    let (conns, tally, _, elapsed) = login_all(t, acc, 0..users, in_flight, true).await;
    let ok = conns.iter().filter(|c| c.is_some()).count();
    // Keep reading (and discarding) so that nothing backs up while the sessions sit idle.
    let (done_tx, done_rx) = watch::channel(false);
    let mut set = JoinSet::new();
    for c in conns.into_iter().flatten() {
        let mut done = done_rx.clone();
        set.spawn(async move {
            let mut c = c;
            let mut sink = Vec::new();
            loop {
                tokio::select! {
                    r = c.read_raw(&mut sink) => { sink = Vec::new(); if r.is_err() { break } }
                    _ = until(&mut done) => break,
                }
            }
        });
    }
    tokio::time::sleep(hold).await;
    let after = pid.and_then(stats::sample);
    let _ = done_tx.send(true);
    while set.join_next().await.is_some() {}
    let mut v = json!({"mode": "idle", "users": users, "sessions": ok, "login_s": elapsed.as_secs_f64(),
                       "hold_s": hold.as_secs_f64(), "errors": tally.errors});
    extend(&mut v, proc_json(pid, before, after, ok));
    v
}
