//! Archive query benchmark: fills one account's archive with 100,000 encrypted messages (ten
//! conversation partners) and times pages of 50 the way the MAM handler fetches them: the query,
//! the decryption and the parsing of every stored stanza.
//!
//! `cargo run --release -p zorg-server --example mam_bench [MESSAGES]`
//!
//! Prints one line per query shape with the median, 95th percentile and worst time of 200 runs,
//! and a JSON line with the same figures. The database is in a temporary directory, removed at
//! the end.

use std::time::{Duration, Instant};

use zorg_server::config::Config;
use zorg_server::storage::AccountStore;
use zorg_server::storage::archive::{ArchiveQuery, NewEntry, Page};

const OWNER: &str = "alice@bench.test";
const RUNS: usize = 200;

fn query(page: Page) -> ArchiveQuery {
    ArchiveQuery::new(page, 50)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000)
        .min(1_000_000);
    let dir = std::env::temp_dir().join(format!("zorg-mam-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = Config {
        data_dir: dir.clone(),
        ..Default::default()
    };
    let db = zorg_server::server::open_storage(&config).await?;
    db.create_account(OWNER, &[]).await?;
    let start = Instant::now();
    let t0 = 1_790_000_000_000_i64;
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let peer = format!("contact{}@bench.test", i % 10);
        let id = format!("id{i:07}");
        let stanza = format!(
            "<message xmlns='jabber:client' from='{peer}/phone' to='{OWNER}/desk' type='chat' \
             id='m{i}'><body>Patient update number {i}: blood pressure stable, continue the \
             current medication and check again tomorrow morning.</body>\
             <origin-id xmlns='urn:xmpp:sid:0' id='o{i}'/>\
             <stanza-id xmlns='urn:xmpp:sid:0' id='{id}' by='{OWNER}'/></message>"
        );
        db.archive(NewEntry {
            owner: OWNER.into(),
            id: id.clone(),
            stamp_unix_ms: t0 + i as i64 * 1000,
            with_bare: peer,
            with_resource: "phone".into(),
            outgoing: i % 3 == 0,
            msg_id: Some(format!("m{i}")),
            origin_id: Some(format!("o{i}")),
            corrects: None,
            stanza,
        })
        .await?;
        ids.push(id);
    }
    db.flush_archive().await;
    let fill = start.elapsed();
    println!(
        "filled {n} messages in {:.1} s ({:.0} messages/s, group commit)",
        fill.as_secs_f64(),
        n as f64 / fill.as_secs_f64()
    );

    let mid = ids[n / 2].clone();
    let shapes: Vec<(&str, ArchiveQuery)> = vec![
        ("first page (oldest 50)", query(Page::Forward(None))),
        (
            "last page (newest 50, <before/>)",
            query(Page::Backward(None)),
        ),
        (
            "page after an id in the middle",
            query(Page::Forward(Some(mid.clone()))),
        ),
        (
            "page before an id in the middle",
            query(Page::Backward(Some(mid))),
        ),
        ("with one contact, newest page", {
            let mut q = query(Page::Backward(None));
            q.with = Some(("contact3@bench.test".into(), None));
            q
        }),
        ("time range (start/end), first page", {
            let mut q = query(Page::Forward(None));
            q.start = Some(t0 + (n as i64 / 4) * 1000);
            q.end = Some(t0 + (n as i64 / 2) * 1000);
            q
        }),
    ];
    let limits = zorg_proto::Limits::default();
    let mut json = Vec::new();
    for (name, q) in &shapes {
        let mut times = Vec::with_capacity(RUNS);
        for _ in 0..RUNS {
            let t = Instant::now();
            let page = db.query_archive(OWNER, q).await?;
            let mut parsed = 0;
            for e in &page.entries {
                zorg_proto::parse_element(&e.stanza, limits)?;
                parsed += 1;
            }
            times.push(t.elapsed());
            assert_eq!(parsed, 50);
            assert_eq!(
                page.count as usize,
                if q.with.is_some() {
                    n / 10
                } else if q.start.is_some() {
                    n / 4 + 1
                } else {
                    n
                }
            );
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let (p50, p95, max) = (
            ms(times[RUNS / 2]),
            ms(times[RUNS * 95 / 100]),
            ms(times[RUNS - 1]),
        );
        println!("{name:<40} median {p50:6.2} ms  p95 {p95:6.2} ms  max {max:6.2} ms");
        json.push(format!(
            "{{\"query\":\"{name}\",\"median_ms\":{p50:.2},\"p95_ms\":{p95:.2},\"max_ms\":{max:.2}}}"
        ));
    }
    println!(
        "{{\"messages\":{n},\"page\":50,\"runs\":{RUNS},\"results\":[{}]}}",
        json.join(",")
    );
    db.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
