//! A RabbitMQ cluster of the test's own (three private nodes joined with
//! `rabbitmqctl join_cluster`), the quorum queue the daemon declares, and
//! 20,000 charges streaming from two sources while the node the daemon is
//! connected to is killed with SIGKILL, twice, and brought back.
//!
//! Asserted: every charge arrives; a charge that arrives more than once
//! carries the same id and bytes each time; per source, the first
//! occurrences of the charges arrive in the order of the lines (a
//! redelivery may repeat earlier charges later, never put a charge ahead of
//! one written before it). Printed: how long delivery stalled at each kill.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::rabbit::cluster::RabbitCluster;
use support::*;

/// Two PaperCut servers, one outbox and one sink.
const SOURCES: [&str; 2] = ["site-a", "site-b"];
const TOTAL: u64 = 20_000;
const PER_SOURCE: u64 = TOTAL / SOURCES.len() as u64;

fn config(dir: &Path, urls: &[String], ex: &str, q: &str, http: u16) -> std::path::PathBuf {
    let urls: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    let mut text = String::new();
    for name in SOURCES {
        text.push_str(&format!(
            "[[source]]\nname = \"{name}\"\npath = \"{}\"\ntimezone = \"Australia/Melbourne\"\ncurrency = \"AUD\"\npoll_interval_ms = 200\n\n",
            dir.join(format!("{name}.log")).display()
        ));
    }
    // Delivery and reconnect settings are the defaults: the figures printed
    // are what an operator gets.
    text.push_str(&format!(
        "[state]\npath = \"{}\"\n\n[http]\nlisten = \"127.0.0.1:{http}\"\n\n\
         [sink]\nkind = \"amqp\"\n\n[sink.amqp]\nurls = [{}]\nexchange = \"{ex}\"\ndeclare_exchange = true\nqueue = \"{q}\"\n",
        dir.join("state/state.db").display(),
        urls.join(", ")
    ));
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// The end of the daemon's log, for failure messages.
fn log_tail(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// `chargetail_delivered_total` from /metrics (all sources); `None` while not listening.
fn delivered_total(http: u16) -> Option<u64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", http)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    // One series per source: their sum.
    let body = raw.split_once("\r\n\r\n")?.1;
    metric(body, "chargetail_delivered_total")?;
    Some(
        body.lines()
            .filter(|l| l.starts_with("chargetail_delivered_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64,
    )
}

fn pending(cfg: &Path) -> u64 {
    let out = run_cli(&["status", "--config", cfg.to_str().unwrap(), "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    s["outbox"]["pending"].as_u64().unwrap_or(u64::MAX)
}

/// The longest time the delivered count stood still, among the stretches
/// that begin within `from..from + within` (the samples are (time, count)).
fn longest_stall(samples: &[(Instant, u64)], from: Instant, within: Duration) -> Duration {
    let mut best = Duration::ZERO;
    let mut run: Option<(Instant, u64)> = None;
    for &(t, v) in samples {
        match run {
            Some((t0, v0)) if v != v0 => {
                if t0 + Duration::from_millis(100) >= from && t0 <= from + within {
                    best = best.max(t.duration_since(t0));
                }
                run = Some((t, v));
            }
            None => run = Some((t, v)),
            Some(_) => {}
        }
    }
    best
}

/// The test's directory (config, state, daemon log), kept when the test
/// fails so the daemon's log can be read.
struct KeepOnPanic(Option<tempfile::TempDir>);

impl KeepOnPanic {
    fn path(&self) -> &Path {
        self.0
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(Path::new("/nonexistent"))
    }
}

impl Drop for KeepOnPanic {
    fn drop(&mut self) {
        if let (true, Some(d)) = (std::thread::panicking(), self.0.take()) {
            eprintln!("test directory kept: {}", d.keep().display());
        }
    }
}

#[test]
fn cluster_node_killed_twice_under_streaming_sources_loses_nothing() {
    let began = Instant::now();
    let mut cluster = RabbitCluster::start(3).expect("private three-node rabbitmq cluster");
    let boot = began.elapsed();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (ex, q) = (unique("ct-cl-x"), unique("ct-cl-q"));
    let dir = KeepOnPanic(Some(tempfile::tempdir().unwrap()));
    let http = free_http_port();
    let cfg = config(dir.path(), &cluster.amqp_urls(), &ex, &q, http);
    for name in SOURCES {
        append(&dir.path().join(format!("{name}.log")), HEADER);
    }
    let daemon = Daemon::start(&cfg);

    let samples = Arc::new(Mutex::new(Vec::<(Instant, u64)>::new()));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (samples, done) = (samples.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                if let Some(v) = delivered_total(http) {
                    samples.lock().unwrap().push((Instant::now(), v));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    // PaperCut keeps writing throughout: ~500 lines/s in all.
    let writers: Vec<_> = SOURCES
        .iter()
        .map(|name| {
            let file = dir.path().join(format!("{name}.log"));
            std::thread::spawn(move || {
                for n in 0..PER_SOURCE {
                    append(&file, &tx_line(n));
                    if n % 10 == 9 {
                        std::thread::sleep(Duration::from_millis(20 * SOURCES.len() as u64));
                    }
                }
            })
        })
        .collect();

    let delivered = || samples.lock().unwrap().last().map(|s| s.1).unwrap_or(0);
    let mut kills = Vec::new();
    for (k, at) in [TOTAL * 3 / 10, TOTAL * 6 / 10].into_iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(90);
        while delivered() < at {
            assert!(
                Instant::now() < deadline,
                "stuck at {} delivered before kill {k}; daemon log:\n{}",
                delivered(),
                log_tail(dir.path())
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let via = cluster.nodes.iter_mut().position(|n| n.running()).unwrap();
        let conns = cluster
            .nodes_with_connection(via, "chargetail")
            .expect("list_connections");
        assert_eq!(conns.len(), 1, "the daemon holds one connection: {conns:?}");
        let victim = conns[0];
        let leader = cluster.queue_leader(via, &q).expect("list_queues");
        let before = delivered();
        let t_kill = Instant::now();
        cluster.nodes[victim].kill();
        std::thread::sleep(Duration::from_secs(2));
        cluster.nodes[victim]
            .start_again()
            .expect("restart the killed node");
        cluster
            .await_running(victim, 3)
            .expect("the node rejoins the cluster");
        kills.push((victim, leader, before, t_kill));
    }
    for w in writers {
        w.join().unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    while pending(&cfg) > 0 || delivered() < TOTAL {
        assert!(
            Instant::now() < deadline,
            "stuck at {} delivered; daemon log:\n{}",
            delivered(),
            log_tail(dir.path())
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    done.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    let last_node = cluster
        .nodes_with_connection(0, "chargetail")
        .expect("list_connections");
    let (code, _) = daemon.stop();
    assert_eq!(code, Some(0), "the daemon stops cleanly");

    assert_eq!(
        cluster.queue_type(0, &q).expect("list_queues").as_deref(),
        Some("quorum"),
        "the daemon declares a quorum queue by default"
    );
    let msgs = rt.block_on(drain(&cluster.nodes[0].amqp_url(), &q));
    let arrivals: Vec<String> = msgs
        .iter()
        .map(|m| {
            let v: serde_json::Value = serde_json::from_slice(&m.data).unwrap();
            format!(
                "{} {} {}",
                v["source"], v["data"]["transaction_id"], v["id"]
            )
        })
        .collect();
    std::fs::write(dir.path().join("arrivals.txt"), arrivals.join("\n")).unwrap();
    // Per source: (transaction id → ids seen) and the first-occurrence order.
    let mut ids_of: HashMap<(String, String), HashSet<String>> = HashMap::new();
    let mut bytes_of: HashMap<String, Vec<u8>> = HashMap::new();
    let mut first_order: HashMap<String, Vec<String>> = HashMap::new();
    for m in &msgs {
        let v: serde_json::Value = serde_json::from_slice(&m.data).unwrap();
        let source = v["source"].as_str().unwrap().to_string();
        let tx = v["data"]["transaction_id"].as_str().unwrap().to_string();
        let id = v["id"].as_str().unwrap().to_string();
        let seen = ids_of.entry((source.clone(), tx.clone())).or_default();
        if seen.is_empty() {
            first_order.entry(source).or_default().push(tx);
        }
        seen.insert(id.clone());
        let first = bytes_of.entry(id.clone()).or_insert_with(|| m.data.clone());
        assert_eq!(*first, m.data, "a repeat of {id} carries the same bytes");
    }
    let dups = msgs.len() as u64 - ids_of.len() as u64;
    let figures: Vec<String> = kills
        .iter()
        .enumerate()
        .map(|(k, (node, leader, before, t))| {
            // Short of the next kill (whose stall begins up to 100 ms
            // before it): each figure is its own kill's.
            let within = kills
                .get(k + 1)
                .map(|next| {
                    next.3
                        .duration_since(*t)
                        .saturating_sub(Duration::from_millis(200))
                })
                .unwrap_or(Duration::from_secs(20));
            let stall = longest_stall(&samples.lock().unwrap(), *t, within);
            format!(
                "kill {k}: node {node} (queue leader: node {leader:?}) at {before} delivered, \
                 delivery stalled {} ms",
                stall.as_millis()
            )
        })
        .collect();
    // A quorum queue electing a leader nacks publishes (see the sink's
    // "Order through nacks"): how often that met the daemon here.
    let nacked_rounds = std::fs::read_to_string(dir.path().join("daemon.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("broker nacked"))
        .count();
    eprintln!(
        "FIGURE cluster failover: {TOTAL} charges from {} source(s), {} messages ({dups} repeats, same id), \
         {nacked_rounds} batches ended by a nack, cluster boot {} s, test {} s, daemon finally on node {last_node:?}; {}",
        SOURCES.len(),
        msgs.len(),
        boot.as_secs(),
        began.elapsed().as_secs(),
        figures.join("; ")
    );

    assert_eq!(
        ids_of.len() as u64,
        TOTAL,
        "every charge is in the queue exactly under one id"
    );
    assert!(
        ids_of.values().all(|ids| ids.len() == 1),
        "repeats carry the same id"
    );
    for name in SOURCES {
        let want: Vec<String> = (0..PER_SOURCE).map(|n| format!("tx-{n:06}")).collect();
        let got = &first_order[&format!("papercut/{name}")];
        if let Some(i) = got.iter().zip(&want).position(|(a, b)| a != b) {
            panic!(
                "source {name}: first occurrences out of line order at {i}: {:?}",
                &got[i.saturating_sub(2)..(i + 10).min(got.len())]
            );
        }
        assert_eq!(got.len(), want.len(), "source {name}: every line arrived");
    }
    let victims: HashSet<usize> = kills.iter().map(|k| k.0).collect();
    assert_eq!(
        victims.len(),
        2,
        "each kill hit the daemon's node of the time"
    );
}
