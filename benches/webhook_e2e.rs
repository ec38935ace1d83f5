//! End-to-end webhook latency of the real daemon (prints figures; not a
//! test): a line appended to the followed file → its signed POST received
//! by a fast local receiver, at a steady rate, concurrency 1.
//!
//!     cargo bench --bench webhook_e2e
//!
//! `cargo bench` builds `chargetail` with the bench profile (release
//! optimisations), and this harness runs that binary (`chargetail run`)
//! with the default stat poll (2 s): the daemon must be woken by inotify,
//! not by its poll. Knobs (environment): `E2E_RATE` lines per second
//! (default 100), `E2E_SECS` (default 20), `E2E_BATCH_EVERY` > 1 appends
//! that many lines per write (default 1).
//!
//! `E2E_DUMP=FILE` writes `appended-at-ms latency-ms` per line.
//!
//! Baseline, same run, same receiver, same rate, right after: a plain
//! reqwest client (the sink's client settings: rustls, TCP_NODELAY, one
//! kept-alive connection, one request in flight) POSTing each line's
//! message (the bytes `chargetail parse` renders) as the line is appended.
//! Both figures print as `FIGURE` lines with the load average.
//!
//! Target: p99 ≤ 10 ms at 100 lines/s. It prints the split too: append
//! → committed to the outbox (inotify wake-up, read, parse; from the row's
//! `created_ms`) and committed → received (commit, worker wake-up, POST).
//!
//! What to expect: on a quiet machine p50 ≈ 0.7 ms, p99 a few ms. The tail
//! is the SQLite WAL checkpoint: SQLite runs it inside the commit that
//! pushes the WAL past 1000 pages (every second or two at 100 lines/s),
//! on the reader's or the worker's thread, and it makes 2-3 fsyncs; on a
//! disk shared with heavy writers an fsync can take 100-800 ms, and the
//! lines behind it wait. A checkpoint thread of its own does not simply cure
//! it: under steady writes a passive checkpoint never catches the WAL fully
//! up, so the WAL is never restarted and grows until a writer checkpoints.

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;
#[path = "../tests/webhook_support/mod.rs"]
mod webhook_support;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{env_num, figure, parse_messages, pct};
use support::{append, bin, tx_line, wait_timeout, HEADER};
use webhook_support::{new_secret, serve, Reply, Server};

fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn write_config(dir: &Path, url: &str, secret: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("in")).expect("mkdir");
    let secret_file = dir.join("webhook-secret");
    std::fs::write(&secret_file, format!("{secret}\n")).expect("secret");
    let cfg = dir.join("config.toml");
    // Defaults everywhere that matters for latency (poll 2 s, batch 1000,
    // concurrency 1).
    std::fs::write(
        &cfg,
        format!(
            "[source]\nname = \"bench\"\npath = \"{}\"\ntimezone = \"Australia/Melbourne\"\ncurrency = \"AUD\"\n\n[state]\npath = \"{}\"\n\n[sink]\nkind = \"webhook\"\n\n[sink.webhook]\nurl = \"{url}\"\nsecret_file = \"{}\"\n",
            dir.join("in/tx.log").display(),
            dir.join("state/state.db").display(),
            secret_file.display(),
        ),
    )
    .expect("config");
    cfg
}

fn tx_of(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).expect("JSON body");
    v["data"]["transaction_id"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn main() {
    let rate = env_num("E2E_RATE", 100).max(1);
    let secs = env_num("E2E_SECS", 20).max(1);
    let per_write = env_num("E2E_BATCH_EVERY", 1).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let server = rt.block_on(serve(|_| Reply::status(204)));
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), &server.url("/hook"), &new_secret());
    let file = dir.path().join("in/tx.log");
    append(&file, HEADER);
    let log = dir.path().join("daemon.log");
    let mut child = Command::new(bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .env("CHARGETAIL_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start chargetail");

    // Warm up: the first lines open the connection and the state pages.
    let warm = 20u64;
    for n in 0..warm {
        append(&file, &tx_line(n));
    }
    wait_until("warm-up delivery", Duration::from_secs(60), || {
        server.count() as u64 >= warm
    });

    let total = rate * secs;
    let every = Duration::from_secs_f64(per_write as f64 / rate as f64);
    let mut appended: HashMap<String, Instant> = HashMap::with_capacity(total as usize);
    let mut appended_wall: HashMap<String, i64> = HashMap::with_capacity(total as usize);
    let start = Instant::now();
    let mut n = warm;
    let mut k = 0u32;
    while n < warm + total {
        let due = start + every * k;
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        k += 1;
        let mut text = String::new();
        let first = n;
        for _ in 0..per_write.min(warm + total - n) {
            text.push_str(&tx_line(n));
            n += 1;
        }
        let at = Instant::now();
        let wall = wall_ms(std::time::SystemTime::now());
        append(&file, &text);
        for m in first..n {
            appended.insert(format!("tx-{m:06}"), at);
            appended_wall.insert(format!("tx-{m:06}"), wall);
        }
    }
    let wrote = start.elapsed();
    wait_until("every line delivered", Duration::from_secs(120), || {
        server.count() as u64 >= warm + total
    });
    let wal = std::fs::metadata(dir.path().join("state/state.db-wal"))
        .map(|m| m.len())
        .unwrap_or(0);
    unsafe_term(&child);
    let _ = wait_timeout(&mut child, Duration::from_secs(20));

    let hits: Vec<_> = server
        .hits()
        .into_iter()
        .filter(|h| h.path == "/hook")
        .collect();
    let mut lat: Vec<Duration> = hits
        .iter()
        .filter_map(|h| {
            appended
                .get(&tx_of(&h.body))
                .map(|a| h.at.saturating_duration_since(*a))
        })
        .collect();
    if let Ok(path) = std::env::var("E2E_DUMP") {
        // `appended-at-ms latency-ms` per line, for plotting.
        let mut rows: Vec<(f64, f64)> = hits
            .iter()
            .filter_map(|h| {
                appended.get(&tx_of(&h.body)).map(|a| {
                    (
                        ms(a.saturating_duration_since(start)),
                        ms(h.at.saturating_duration_since(*a)),
                    )
                })
            })
            .collect();
        rows.sort_by(|a, b| a.0.total_cmp(&b.0));
        let text: String = rows
            .iter()
            .map(|(t, l)| format!("{t:.1} {l:.2}\n"))
            .collect();
        let _ = std::fs::write(path, text);
    }
    // Where the time goes, from the outbox's `created_ms` (taken when the
    // reader commits the charge): append -> committed (inotify wake, read,
    // parse) and committed -> received (commit, wake-up, POST).
    let created = created_ms(&dir.path().join("state/state.db"));
    let (mut read, mut send) = (Vec::new(), Vec::new());
    for h in &hits {
        let tx = tx_of(&h.body);
        if let (Some(a), Some(c)) = (appended_wall.get(&tx), created.get(&tx)) {
            read.push(Duration::from_millis((c - a).max(0) as u64));
            send.push(Duration::from_millis((wall_ms(h.wall) - c).max(0) as u64));
        }
    }
    read.sort();
    send.sort();
    let dup = hits.len() as u64 - (warm + total);
    lat.sort();
    let over = |ms: u64| {
        lat.iter()
            .filter(|d| **d > Duration::from_millis(ms))
            .count()
    };
    println!(
        "webhook e2e (release daemon, concurrency 1, default 2 s stat poll): {} lines at {rate}/s over {:.1} s ({} per write)",
        lat.len(),
        wrote.as_secs_f64(),
        per_write,
    );
    println!(
        "  WAL at the end: {} KiB\n  line appended -> request received: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms; over 25 ms: {}, over 100 ms: {}; duplicates: {dup}",
        wal / 1024,
        pct(&lat, 50.0).map_or(f64::NAN, ms),
        pct(&lat, 90.0).map_or(f64::NAN, ms),
        pct(&lat, 99.0).map_or(f64::NAN, ms),
        lat.last().copied().map_or(f64::NAN, ms),
        over(25),
        over(100),
    );
    if !read.is_empty() {
        println!(
            "  of which append -> committed: p50 {} ms, p99 {} ms, max {} ms; committed -> received: p50 {} ms, p99 {} ms, max {} ms (1 ms clock)",
            pct(&read, 50.0).unwrap_or_default().as_millis(),
            pct(&read, 99.0).unwrap_or_default().as_millis(),
            read[read.len() - 1].as_millis(),
            pct(&send, 50.0).unwrap_or_default().as_millis(),
            pct(&send, 99.0).unwrap_or_default().as_millis(),
            send[send.len() - 1].as_millis(),
        );
    }
    figure(
        "latency.webhook",
        &format!(
            "append→received {} ({rate}/s; target p99 ≤ 10 ms)",
            summary(&lat)
        ),
    );
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    if !log_text.trim().is_empty() {
        println!("  daemon warnings:\n{log_text}");
    }

    // Baseline: the same lines' messages, POSTed by a plain client as each
    // is appended (ids from 1,000,000 up, so no hit is mistaken for the
    // daemon's).
    let raw_file = dir.path().join("raw.log");
    let base = 1_000_000;
    let sample = dir.path().join("raw-sample.log");
    let mut text = String::from(HEADER);
    for n in base..base + warm + total {
        text.push_str(&tx_line(n));
    }
    std::fs::write(&sample, text).expect("sample");
    let messages = parse_messages(bin(), &cfg, &sample).expect("chargetail parse");
    assert_eq!(messages.len() as u64, warm + total, "parsed messages");
    let raw = raw_baseline(
        &server,
        &server.url("/raw"),
        &raw_file,
        (base..base + warm + total).zip(messages).collect(),
        warm as usize,
        every,
    );
    figure(
        "latency.webhook_raw",
        &format!(
            "append→received {} ({rate}/s): baseline, a reqwest client POSTing each line as appended",
            summary(&raw)
        ),
    );
}

/// The baseline: `lines` (transaction number, message bytes) appended to
/// `file` on the same schedule, each message POSTed to `url` as its line is
/// appended, one request in flight (later lines queue behind it, as in the
/// sink); the first `warm` open the connection and are not counted.
/// Append → received, sorted.
fn raw_baseline(
    server: &Server,
    url: &str,
    file: &Path,
    lines: Vec<(u64, Vec<u8>)>,
    warm: usize,
    every: Duration,
) -> Vec<Duration> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1)
        .build()
        .expect("reqwest client");
    let mut appended: HashMap<String, Instant> = HashMap::with_capacity(lines.len());
    let before = server.count();
    rt.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        let url = url.to_string();
        let poster = tokio::spawn(async move {
            while let Some(body) = rx.recv().await {
                if let Ok(r) = client
                    .post(&url)
                    .header("content-type", "application/cloudevents+json")
                    .body(body)
                    .send()
                    .await
                {
                    let _ = r.bytes().await;
                }
            }
        });
        let mut lines = lines.into_iter();
        for (n, msg) in lines.by_ref().take(warm) {
            append(file, &tx_line(n));
            let _ = tx.send(msg);
        }
        while server.count() < before + warm {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let start = tokio::time::Instant::now();
        for (k, (n, msg)) in lines.enumerate() {
            tokio::time::sleep_until(start + every * k as u32).await;
            let at = Instant::now();
            append(file, &tx_line(n));
            appended.insert(format!("tx-{n:06}"), at);
            let _ = tx.send(msg);
        }
        drop(tx);
        let _ = poster.await;
    });
    let mut lat: Vec<Duration> = server
        .hits()
        .iter()
        .filter(|h| h.path == "/raw")
        .filter_map(|h| {
            appended
                .get(&tx_of(&h.body))
                .map(|a| h.at.saturating_duration_since(*a))
        })
        .collect();
    lat.sort();
    lat
}

fn wall_ms(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `created_ms` of each charge by transaction id (line n+2 is tx n).
fn created_ms(db: &Path) -> HashMap<String, i64> {
    let Ok(conn) = rusqlite::Connection::open(db) else {
        return HashMap::new();
    };
    let Ok(mut st) = conn.prepare("SELECT line, created_ms FROM outbox") else {
        return HashMap::new();
    };
    let rows = st.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)));
    rows.map(|rows| {
        rows.flatten()
            .map(|(line, c)| (format!("tx-{:06}", line - 2), c))
            .collect()
    })
    .unwrap_or_default()
}

/// p50, p99 and max of sorted latencies, and how many: the daemon's figure
/// and its baseline's are printed alike.
fn summary(sorted: &[Duration]) -> String {
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (n={})",
        pct(sorted, 50.0).map_or(f64::NAN, ms),
        pct(sorted, 99.0).map_or(f64::NAN, ms),
        sorted.last().copied().map_or(f64::NAN, ms),
        sorted.len()
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn unsafe_term(child: &std::process::Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
}
