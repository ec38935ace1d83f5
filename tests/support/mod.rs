//! Shared test harness: real daemon processes, real files, real signals;
//! for the AMQP tests and bench also broker URLs, unique names, realistic
//! envelopes and a lapin consumer that drains a queue.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

pub mod schema;
pub mod week;

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_chargetail")
}

pub const HEADER: &str =
    "time\ttransaction_id\tuser\taccount\tamount\tbalance\tjob_type\tpages\tdevice\tdocument\n";

/// One transaction-file line with a unique transaction id.
pub fn tx_line(n: u64) -> String {
    format!(
        "2026-11-20 09:{:02}:{:02}\ttx-{n:06}\tmember{}@harbourworks.com.au\tAcme Design\t-{}.{:02}\t10.00\tPRINT\t{}\tfloor2-mfd\tdoc {n}.pdf\n",
        (n / 60) % 60,
        n % 60,
        n % 7,
        n % 5,
        n % 100,
        n % 30 + 1
    )
}

/// Write a config for a transaction-file source in `dir`.
/// `tx.log` in `dir`: the header and transactions `0..lines`.
pub fn tx_file(dir: &Path, lines: u64) -> PathBuf {
    let file = dir.join("tx.log");
    append(&file, HEADER);
    for n in 0..lines {
        append(&file, &tx_line(n));
    }
    file
}

/// A config following `tx*.log` in `dir` with an `[http]` listener on a
/// free port: (config file, port).
pub fn http_config(dir: &Path) -> (PathBuf, u16) {
    let port = free_http_port();
    let cfg = write_config(
        dir,
        "tx*.log",
        &format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    (cfg, port)
}

pub fn write_config(dir: &Path, pattern: &str, extra: &str) -> PathBuf {
    let cfg = dir.join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[source]\nname = \"test\"\npath = \"{}\"\ntimezone = \"Australia/Melbourne\"\ncurrency = \"AUD\"\npoll_interval_ms = 200\nrotate_grace_ms = 300\n\n[state]\npath = \"{}\"\n{extra}",
            dir.join(pattern).display(),
            dir.join("state/state.db").display()
        ),
    )
    .unwrap();
    cfg
}

pub fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// A running `chargetail run` whose stdout lines are collected.
pub struct Daemon {
    pub child: Child,
    lines: Receiver<String>,
    pub seen: Vec<String>,
}

impl Daemon {
    pub fn start(config: &Path) -> Daemon {
        // The daemon's log goes to a file beside its config (appended across
        // restarts), not to the test output.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(config.with_file_name("daemon.log"))
            .expect("daemon log file");
        let mut child = Command::new(bin())
            .args(["run", "--config"])
            .arg(config)
            // CT_DAEMON_LOG: a finer filter when a test needs looking into.
            .env(
                "CHARGETAIL_LOG",
                std::env::var("CT_DAEMON_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start chargetail");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            // Only whole lines: a daemon killed mid-write leaves a fragment,
            // which was never marked delivered and is sent again after the
            // restart.
            let mut reader = BufReader::new(stdout);
            loop {
                let mut buf = Vec::new();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if buf.ends_with(b"\n") => {
                        buf.pop();
                        if tx.send(String::from_utf8_lossy(&buf).into_owned()).is_err() {
                            break;
                        }
                    }
                    Ok(_) => break,
                }
            }
        });
        Daemon {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Collect stdout lines until `n` have been seen in total or the
    /// deadline passes; returns how many were seen.
    pub fn wait_for(&mut self, n: usize, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        while self.seen.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.lines.recv_timeout(left) {
                Ok(l) => self.see(l),
                Err(_) => break,
            }
        }
        self.seen.len()
    }

    /// Gather whatever arrives within `quiet`.
    pub fn drain(&mut self, quiet: Duration) {
        while let Ok(l) = self.lines.recv_timeout(quiet) {
            self.see(l);
        }
    }

    /// Every message the daemon writes is checked against the schema.
    fn see(&mut self, line: String) {
        #[cfg(test)]
        schema::check(line.as_bytes());
        self.seen.push(line);
    }

    pub fn signal(&self, sig: i32) {
        unsafe_kill(self.child.id() as i32, sig);
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn stop(mut self) -> (Option<i32>, Vec<String>) {
        self.signal(15);
        let status = wait_timeout(&mut self.child, Duration::from_secs(20));
        self.drain(Duration::from_millis(100));
        (status, std::mem::take(&mut self.seen))
    }

    pub fn kill9(mut self) -> Vec<String> {
        self.signal(9);
        let _ = self.child.wait();
        self.drain(Duration::from_millis(50));
        std::mem::take(&mut self.seen)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_timeout(child: &mut Child, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            return st.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn unsafe_kill(pid: i32, sig: i32) {
    // `kill` from coreutils: no libc dependency needed for one call.
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// The `id` of each event line.
pub fn ids(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}"));
            v["id"].as_str().unwrap().to_string()
        })
        .collect()
}

pub fn tx_ids(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["data"]["transaction_id"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

/// (delivered, pending, dead charges) from `status --json`.
pub fn outbox_counts(cfg: &Path) -> (u64, u64, u64) {
    let out = run_cli(&["status", "--config", cfg.to_str().unwrap(), "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let n = |k: &str| s["outbox"][k].as_u64().unwrap_or(0);
    (n("delivered"), n("pending"), n("dead_charges"))
}

/// Polls `outbox_counts` until `done` says so; fails after `secs` with the
/// counts and the daemon's `log()`.
pub fn wait_for_outbox(
    cfg: &Path,
    secs: u64,
    done: impl Fn((u64, u64, u64)) -> bool,
    log: impl Fn() -> String,
) -> (u64, u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let counts = outbox_counts(cfg);
        if done(counts) {
            return counts;
        }
        let (delivered, pending, dead) = counts;
        assert!(
            Instant::now() < deadline,
            "stuck: {delivered} delivered, {pending} pending, {dead} dead\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn run_cli(args: &[&str]) -> std::process::Output {
    let out = Command::new(bin())
        .args(args)
        .output()
        .expect("run chargetail");
    // `parse` prints the exact message bytes: each line must validate.
    #[cfg(test)]
    if args.first() == Some(&"parse") && !args.iter().any(|a| matches!(*a, "--help" | "-h")) {
        for line in out.stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            schema::check(line);
        }
    }
    out
}

// ---- AMQP helpers ----

pub mod rabbit;

use std::sync::atomic::{AtomicU32, Ordering};

use chargetail::sink::Envelope;
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicConsumeOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};

/// The shared broker every developer and CI run has (guest/guest).
pub fn shared_url() -> String {
    std::env::var("CT_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "ct-test.{prefix}.{}.{}.{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

const JOB_TYPES: [&str; 4] = ["print", "copy", "scan", "fax"];

/// The i-th test charge: a ~330-byte CloudEvents JSON like the daemon's
/// (the size the RESEARCH throughput figures were measured with).
pub fn envelope(tag: &str, i: usize) -> Envelope {
    // A well-formed charge id, unique per tag and in order within one.
    let tag_hash = <sha2::Sha256 as sha2::Digest>::digest(tag.as_bytes());
    let id = format!("chg_{}{i:016x}", hex::encode(&tag_hash[..8]));
    let job_type = JOB_TYPES[i % JOB_TYPES.len()];
    let account_type = if i.is_multiple_of(3) {
        "personal"
    } else {
        "shared"
    };
    let payload = format!(
        concat!(
            r#"{{"specversion":"1.0","id":"{id}","source":"papercut/pc-test","type":"papercut.charge","#,
            r#""subject":"Acme Design","time":"2026-11-20T09:14:03+11:00","datacontenttype":"application/json","#,
            r#""data":{{"user":"alice","account":"Acme Design","account_type":"{at}","amount":"1.20","status":"charged","#,
            r#""currency":"AUD","job_type":"{jt}","pages":12,"color_pages":2,"device":"floor2-mfd","#,
            r#""origin":{{"file":"/var/log/papercut/tx.log","offset":{off},"line":{line}}}}}}}"#
        ),
        id = id,
        off = i * 300,
        line = i + 1,
        at = account_type,
        jt = job_type,
    );
    Envelope {
        seq: i as i64,
        id,
        payload: payload.into_bytes(),
        job_type: job_type.into(),
        account_type: account_type.into(),
        attempts: 0,
        attrs: Default::default(),
    }
}

pub fn envelopes(tag: &str, n: usize) -> Vec<Envelope> {
    (0..n).map(|i| envelope(tag, i)).collect()
}

pub async fn connect(url: &str) -> (Connection, Channel) {
    let conn = tokio::time::timeout(
        Duration::from_secs(15),
        Connection::connect(url, ConnectionProperties::default()),
    )
    .await
    .expect("connect timed out")
    .expect("connect");
    let chan = conn.create_channel().await.expect("channel");
    (conn, chan)
}

pub fn queue_args(quorum: bool) -> FieldTable {
    let mut args = FieldTable::default();
    if quorum {
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
    }
    args
}

/// A durable topic exchange (`bind` = Some(queue, quorum?, key)) on `url`.
pub async fn declare(url: &str, exchange: &str, bind: Option<(&str, bool, &str)>) {
    let (conn, chan) = connect(url).await;
    chan.exchange_declare(
        exchange.into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("exchange.declare");
    if let Some((queue, quorum, key)) = bind {
        chan.queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            queue_args(quorum),
        )
        .await
        .expect("queue.declare");
        chan.queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("queue.bind");
    }
    let _ = conn.close(200, "".into()).await;
}

pub async fn cleanup(url: &str, exchange: &str, queue: Option<&str>) {
    let (conn, chan) = connect(url).await;
    if let Some(q) = queue {
        let _ = chan
            .queue_delete(q.into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = chan
        .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
        .await;
    let _ = conn.close(200, "".into()).await;
}

pub async fn message_count(url: &str, queue: &str) -> u32 {
    let (conn, chan) = connect(url).await;
    let q = chan
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("passive queue.declare");
    let _ = conn.close(200, "".into()).await;
    q.message_count()
}

/// Every message now in `queue`, in queue order (auto-ack).
pub async fn drain(url: &str, queue: &str) -> Vec<Delivery> {
    let n = message_count(url, queue).await as usize;
    let (conn, chan) = connect(url).await;
    let mut consumer = chan
        .basic_consume(
            queue.into(),
            "ct-test".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("basic.consume");
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match tokio::time::timeout(Duration::from_secs(20), consumer.next()).await {
            Ok(Some(Ok(d))) => {
                #[cfg(test)]
                schema::check(&d.data);
                out.push(d)
            }
            Ok(other) => panic!("consumer ended after {} of {n}: {other:?}", out.len()),
            Err(_) => panic!("no delivery for 20 s after {} of {n}", out.len()),
        }
    }
    let _ = conn.close(200, "".into()).await;
    out
}

/// `dead-letters list --json` for a config: the dead letters, oldest first.
pub fn dead_letters(cfg: &Path) -> Vec<serde_json::Value> {
    let cfg = cfg.to_str().expect("utf-8 path");
    let out = run_cli(&["dead-letters", "--config", cfg, "list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array().unwrap().clone()
}

/// A port nothing listens on yet (for `[http] listen`).
pub fn free_http_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET path` on 127.0.0.1:port, waiting for the daemon to listen; the
/// whole response, headers included.
pub fn http_get(port: u16, path: &str) -> String {
    http_request(port, path, "").raw
}

/// An HTTP/1.0 response read to its end.
pub struct HttpResponse {
    pub status: u16,
    pub head: String,
    pub body: String,
    pub raw: String,
}

/// `GET path` with extra header lines (each ending in `\r\n`), waiting up
/// to 10 s for the daemon to listen.
pub fn http_request(port: u16, path: &str, headers: &str) -> HttpResponse {
    use std::io::Read;
    for _ in 0..100 {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n{headers}\r\n").unwrap();
            let mut raw = String::new();
            s.read_to_string(&mut raw).unwrap();
            let status = raw
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
            let (head, body) = (head.to_string(), body.to_string());
            return HttpResponse {
                status,
                head,
                body,
                raw,
            };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("nothing listens on {port}");
}

/// The value of the series `name` (any labels) in a /metrics text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
