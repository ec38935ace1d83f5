//! Retries blame only the charge that failed, under the real daemon: a
//! charge held back behind a failing older one is not attempted (no attempt
//! counted, no failure clock), so when the head gives up it alone becomes a
//! dead letter and the rest go out as soon as the endpoint is back. Real
//! HTTP receiver on loopback; a private RabbitMQ node for the broker case.

mod support;
mod webhook_support;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use support::{
    append, bin, dead_letters, outbox_counts, tx_line, wait_for_outbox, write_config, HEADER,
};
use webhook_support::{new_secret, serve, Hit, Reply, Server};

/// A `chargetail run` with stderr in a log file; killed when dropped.
struct Run(Child);

impl Run {
    fn start(cfg: &Path, log: &Path) -> Run {
        let err = std::fs::File::create(log).unwrap();
        Run(Command::new(bin())
            .args(["run", "--config"])
            .arg(cfg)
            .env("CHARGETAIL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("start chargetail"))
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A pre-written source of `n` charges and a webhook config.
struct Hook {
    server: Server,
    _rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    cfg: PathBuf,
}

impl Hook {
    fn new(n: u64, delivery: &str, decide: impl Fn(&Hit) -> Reply + Send + Sync + 'static) -> Hook {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let server = rt.block_on(serve(decide));
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("webhook-secret");
        std::fs::write(&secret, format!("{}\n", new_secret())).unwrap();
        std::fs::create_dir(dir.path().join("in")).unwrap();
        let mut text = String::from(HEADER);
        for i in 0..n {
            text.push_str(&tx_line(i));
        }
        append(&dir.path().join("in/tx.log"), &text);
        let cfg = write_config(
            dir.path(),
            "in/tx.log",
            &format!(
                "\n[sink]\nkind = \"webhook\"\n\n[sink.webhook]\nurl = \"{}\"\nsecret_file = \"{}\"\nconnect_timeout_ms = 2000\ntimeout_ms = 5000\n\n[delivery]\n{delivery}\n",
                server.url("/hook"),
                secret.display(),
            ),
        );
        Hook {
            server,
            _rt: rt,
            dir,
            cfg,
        }
    }

    /// Charge ids answered 2xx, each once.
    fn delivered(&self) -> HashSet<String> {
        self.server
            .hits()
            .iter()
            .filter(|h| (200..300).contains(&h.reply.code()))
            .map(|h| h.id().to_string())
            .collect()
    }

    /// Requests per charge id.
    fn tries(&self) -> HashMap<String, u64> {
        let mut m = HashMap::new();
        for h in self.server.hits() {
            *m.entry(h.id().to_string()).or_insert(0) += 1;
        }
        m
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }
}

/// Answers 503 from the first request for `outage`, then 200.
fn outage_then_ok(outage: Duration) -> impl Fn(&Hit) -> Reply + Send + Sync + 'static {
    let start: Mutex<Option<Instant>> = Mutex::new(None);
    move |h| {
        let t0 = *start.lock().unwrap().get_or_insert(h.at);
        if h.at.duration_since(t0) < outage {
            Reply::status(503)
        } else {
            Reply::status(200)
        }
    }
}

#[test]
fn outage_longer_than_give_up_dead_letters_only_the_charges_tried() {
    const N: u64 = 600;
    let outage = Duration::from_secs(14);
    let hook = Hook::new(
        N,
        "retry_initial_ms = 200\nretry_max_ms = 1000\ngive_up_after_secs = 8",
        outage_then_ok(outage),
    );
    let _run = Run::start(&hook.cfg, &hook.dir.path().join("daemon.log"));
    wait_for_outbox(
        &hook.cfg,
        90,
        |(delivered, pending, dead)| pending == 0 && delivered + dead == N,
        || hook.log(),
    );
    let hits = hook.server.hits();
    let recovered = hits[0].at + outage;
    let tries = hook.tries();
    let dead = dead_letters(&hook.cfg);
    let dead_ids: Vec<&str> = dead
        .iter()
        .take(5)
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    let distinct_tried = tries.len();
    eprintln!(
        "{} requests, {distinct_tried} charges tried, {} dead letters: {dead_ids:?}",
        hits.len(),
        dead.len()
    );
    // Only the head fails for its 8 s; the next head starts its own clock
    // and is through when the endpoint recovers at 14 s.
    assert!(
        (1..=2).contains(&dead.len()),
        "only the charges tried while failing may be dead letters: {dead_ids:?}"
    );
    for d in &dead {
        let id = d["id"].as_str().unwrap();
        let sent = tries.get(id).copied().unwrap_or(0);
        assert!(sent > 0, "{id} is a dead letter but was never sent");
        assert_eq!(
            d["attempts"].as_u64().unwrap(),
            sent,
            "{id}: attempts shown are the requests made"
        );
        assert!(d["reason"].as_str().unwrap().contains("gave up"), "{d}");
    }
    // Every other charge arrived, once the endpoint was back, soon after.
    let delivered = hook.delivered();
    assert_eq!(delivered.len() as u64 + dead.len() as u64, N);
    let last = hits
        .iter()
        .filter(|h| h.reply.code() == 200)
        .map(|h| h.at)
        .max()
        .unwrap();
    let after = last.saturating_duration_since(recovered);
    eprintln!("all delivered {after:?} after the endpoint recovered");
    assert!(
        after < Duration::from_secs(8),
        "the rest must arrive within seconds of recovery, took {after:?}"
    );
    // During the outage, only the heads were sent (one charge at a time).
    let during: HashSet<&str> = hits
        .iter()
        .filter(|h| h.reply.code() == 503)
        .map(|h| h.id())
        .collect();
    assert!(during.len() <= 3, "sent during the outage: {during:?}");
    // Failure metrics count real attempts only: the daemon log's warnings
    // name the head, never hundreds of charges.
    assert!(!hook.log().contains("retrying = 600"), "{}", hook.log());
}

#[test]
fn random_failures_and_an_outage_do_not_grow_the_backoff_of_the_backlog() {
    const N: u64 = 2_000;
    let rng = Mutex::new(StdRng::seed_from_u64(7));
    let start: Mutex<Option<Instant>> = Mutex::new(None);
    let decide = move |h: &Hit| {
        let t0 = *start.lock().unwrap().get_or_insert(h.at);
        let since = h.at.duration_since(t0);
        if since >= Duration::from_secs(2) && since < Duration::from_secs(5) {
            return Reply::status(503);
        }
        let r: f64 = rng.lock().unwrap().random();
        if r < 0.0075 {
            Reply::status(500)
        } else if r < 0.015 {
            Reply::with_header(429, "Retry-After", "1")
        } else {
            Reply::status(200)
        }
    };
    // The defaults: backoff from 500 ms up to 60 s, retried forever.
    let hook = Hook::new(N, "", decide);
    let t = Instant::now();
    let _run = Run::start(&hook.cfg, &hook.dir.path().join("daemon.log"));
    let bound = Duration::from_secs(60);
    while hook.delivered().len() < N as usize {
        assert!(
            t.elapsed() < bound,
            "{} of {N} arrived in {bound:?}\n{}",
            hook.delivered().len(),
            hook.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let hits = hook.server.hits();
    let failed = hits.iter().filter(|h| h.reply.code() != 200).count();
    eprintln!(
        "{N} charges in {:?}: {} requests, {failed} failed",
        t.elapsed(),
        hits.len()
    );
    assert!(dead_letters(&hook.cfg).is_empty());
}

#[test]
fn broker_down_longer_than_give_up_dead_letters_only_the_head() {
    use support::rabbit::{NodeOptions, RabbitNode};
    const N: u64 = 500;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut node = RabbitNode::start(NodeOptions::default()).expect("private rabbitmq node");
    let _guard = node.guard();
    let url = node.amqp_url();
    let (ex, q) = (support::unique("ct-blame-x"), support::unique("ct-blame-q"));
    rt.block_on(support::declare(&url, &ex, Some((&q, false, "charge.#"))));
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("in")).unwrap();
    let file = dir.path().join("in/tx.log");
    append(&file, HEADER);
    let cfg = write_config(
        dir.path(),
        "in/tx.log",
        &format!(
            "[delivery]\nretry_initial_ms = 200\nretry_max_ms = 1000\ngive_up_after_secs = 4\n\n[sink]\nkind = \"amqp\"\n\n[sink.amqp]\nurl = \"{url}\"\nexchange = \"{ex}\"\ntimeout_ms = 2000\nreconnect_initial_ms = 100\nreconnect_max_ms = 500\n"
        ),
    );
    let _run = Run::start(&cfg, &dir.path().join("daemon.log"));
    let log = || std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
    // Connected and delivering first.
    append(&file, &tx_line(0));
    let deadline = Instant::now() + Duration::from_secs(60);
    while outbox_counts(&cfg).0 < 1 {
        assert!(Instant::now() < deadline, "not delivering\n{}", log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let down = Instant::now();
    node.terminate();
    let mut text = String::new();
    for i in 1..N {
        text.push_str(&tx_line(i));
    }
    append(&file, &text);
    // Down for longer than give_up_after_secs.
    std::thread::sleep(Duration::from_secs(7));
    node.start_again().expect("restart node");
    let down = down.elapsed();
    wait_for_outbox(
        &cfg,
        90,
        |(delivered, pending, dead)| pending == 0 && delivered + dead == N,
        log,
    );
    let dead = dead_letters(&cfg);
    eprintln!(
        "broker down {down:?}, give up after 4 s: {} dead letters",
        dead.len()
    );
    // Each head gives up 4 s after its own first failure, and the next
    // starts its own clock: one dead letter per 4 s of outage, at most.
    let most = down.as_secs() / 4 + 1;
    assert!(
        (1..=most as usize).contains(&dead.len()),
        "only heads may be dead letters ({most} at most): {dead:?}"
    );
    for d in &dead {
        assert!(d["reason"].as_str().unwrap().contains("gave up"), "{d}");
    }
    let msgs = rt.block_on(support::drain(&url, &q));
    let ids: HashSet<String> = msgs
        .iter()
        .map(|m| {
            let v: serde_json::Value = serde_json::from_slice(&m.data).unwrap();
            v["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(ids.len() as u64 + dead.len() as u64, N, "the rest arrived");
}

#[test]
fn a_stored_next_attempt_far_ahead_is_capped_by_retry_max() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let up = Arc::new(AtomicBool::new(false));
    let hook = {
        let up = up.clone();
        Hook::new(
            3,
            "retry_initial_ms = 200\nretry_max_ms = 1000",
            move |_| Reply::status(if up.load(Ordering::SeqCst) { 200 } else { 503 }),
        )
    };
    let log = hook.dir.path().join("daemon.log");
    let run = Run::start(&hook.cfg, &log);
    let deadline = Instant::now() + Duration::from_secs(60);
    while hook.server.count() < 2 {
        assert!(Instant::now() < deadline, "no tries\n{}", hook.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(run);
    // As if the wall clock had been a day ahead when the failure was
    // recorded (and was stepped back since).
    let db = rusqlite::Connection::open(hook.dir.path().join("state/state.db")).unwrap();
    let n = db
        .execute(
            "UPDATE outbox SET next_ms = next_ms + 86400000 WHERE state = 'pending' AND attempts > 0",
            [],
        )
        .unwrap();
    assert_eq!(n, 1, "only the head was attempted");
    drop(db);
    up.store(true, Ordering::SeqCst);
    let t = Instant::now();
    let _run = Run::start(&hook.cfg, &log);
    while hook.delivered().len() < 3 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the stored day-long wait stalled delivery\n{}",
            hook.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("delivered {:?} after restart", t.elapsed());
}
