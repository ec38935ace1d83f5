//! Whole-daemon figures, printed (not asserted): `scripts/bench.sh`, or
//! `cargo bench --bench pipeline -- [latency] [memory] [replay] [ingest]` (the
//! first three when none is named). Each prints one `FIGURE` line per figure with the
//! 1-minute load average at the time, since the machine is shared.
//!
//! - latency: `chargetail run` follows a file, amqp sink to the shared broker
//!   (unique exchange + classic queue, deleted afterwards); lines appended
//!   at 200/s for 20 s; a lapin consumer in this process notes when each
//!   transaction id arrives; write → receipt p50/p99/max. Also the daemon's
//!   own histogram (commit → confirm) from /metrics, for a breakdown. Then,
//!   same run, same exchange, queue and consumer, the baseline: a raw lapin
//!   publisher (persistent, mandatory, confirms collected beside, never
//!   waited for before the next publish) publishing the same lines'
//!   messages at the same rate, timed publish → receipt the same way.
//! - memory: the daemon with the amqp sink pointing at a private RabbitMQ
//!   node that is stopped, `backlog_limit = 2000000`, a file of 1,000,000
//!   lines; VmRSS/VmHWM sampled every second until the outbox holds all of
//!   them; then the node is started and the drain to a durable classic
//!   queue is timed.
//! - ingest: file → committed outbox with the sink down, beside the raw
//!   SQLite ceiling of the same rows (see `pipeline/ingest.rs`); 300,000
//!   lines (CT_INGEST_LINES). Not in the default set: name it.
//! - replay: 1,000,000 charges `chargetail replay`ed to the stdout sink
//!   (to /dev/null) and to a durable classic queue on the shared broker,
//!   under `/usr/bin/time -v`: charges/s and peak RSS.
//!
//! Knobs: CT_AMQP_URL (shared broker), CT_BENCH_LINES (1,000,000),
//! CT_BENCH_BIN (the daemon binary run, default this build's),
//! CT_LAT_SECS (20), CT_LAT_RATE (200); for investigation CT_KEEP=1 (keep
//! the temp dirs and daemon logs), CT_DAEMON_LOG (the daemon's
//! CHARGETAIL_LOG, e.g. `info,chargetail::deliver=trace` for per-batch
//! timings), CT_WRAP (a command the daemon runs under, e.g.
//! `perf record -g -o /tmp/perf.data --`).

#[path = "common/mod.rs"]
mod common;
#[path = "pipeline/ingest.rs"]
mod ingest;
#[path = "../tests/support/mod.rs"]
mod support;

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use common::{env_num, figure, load, parse_messages, pct_ms};
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use support::rabbit::{NodeOptions, RabbitNode};
use support::*;

fn note(text: &str) {
    println!("  {text}");
}

/// VmRSS and VmHWM of a process, in KiB.
fn rss(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn mb(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A temp dir, removed afterwards unless CT_KEEP is set (for the logs).
fn workdir(prefix: &str) -> std::io::Result<tempfile::TempDir> {
    let keep = std::env::var_os("CT_KEEP").is_some();
    let d = tempfile::Builder::new()
        .prefix(prefix)
        .disable_cleanup(keep)
        .tempdir()?;
    if keep {
        note(&format!("keeping {}", d.path().display()));
    }
    Ok(d)
}

/// A config for a transaction-file source on `file`, state in `dir`.
fn config(dir: &Path, file: &Path, source_extra: &str, rest: &str) -> PathBuf {
    let cfg = dir.join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[source]\nname = \"bench\"\npath = \"{}\"\ntimezone = \"Australia/Melbourne\"\n\
             currency = \"AUD\"\n{source_extra}\n[state]\npath = \"{}\"\n\n{rest}",
            file.display(),
            dir.join("state/state.db").display()
        ),
    )
    .unwrap();
    cfg
}

/// A file of `n` transaction lines (ids tx-000000 …).
fn write_lines(path: &Path, n: u64) -> Result<()> {
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    w.write_all(HEADER.as_bytes())?;
    for i in 0..n {
        w.write_all(tx_line(i).as_bytes())?;
    }
    w.flush()?;
    Ok(())
}

/// The daemon binary: CT_BENCH_BIN (another build, e.g. main's, for a
/// before/after in one session), else this build's.
fn daemon_bin() -> String {
    std::env::var("CT_BENCH_BIN").unwrap_or_else(|_| bin().into())
}

/// `chargetail run` with stdout discarded and stderr to `dir/daemon.log`;
/// killed when dropped.
struct Run {
    child: Child,
    log: PathBuf,
}

impl Run {
    fn start(cfg: &Path, dir: &Path) -> Result<Run> {
        let log = dir.join("daemon.log");
        // CT_WRAP="perf record -g -o /tmp/x --" (or strace …) for profiling.
        let wrap = std::env::var("CT_WRAP").unwrap_or_default();
        let mut argv: Vec<String> = wrap.split_whitespace().map(String::from).collect();
        argv.push(daemon_bin());
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .args(["run", "--config"])
            .arg(cfg)
            .env(
                "CHARGETAIL_LOG",
                std::env::var("CT_DAEMON_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(File::create(&log)?)
            // Its own group, so that stop/kill reach a wrapped daemon too.
            .process_group(0)
            .spawn()
            .context("starting chargetail run")?;
        Ok(Run { child, log })
    }

    /// The daemon's pid (below a CT_WRAP wrapper, its first child).
    fn pid(&self) -> u32 {
        let id = self.child.id();
        if std::env::var("CT_WRAP")
            .unwrap_or_default()
            .trim()
            .is_empty()
        {
            return id;
        }
        for _ in 0..100 {
            if let Some(c) = std::fs::read_to_string(format!("/proc/{id}/task/{id}/children"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok())
            {
                return c;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        id
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn stop(mut self) -> Option<i32> {
        self.signal("-TERM");
        wait_timeout(&mut self.child, Duration::from_secs(30))
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.signal("-KILL");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `chargetail status --json` → outbox.pending.
fn pending(cfg: &Path) -> Option<u64> {
    let out = Command::new(bin())
        .args(["status", "--json", "--config"])
        .arg(cfg)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["outbox"]["pending"].as_u64()
}

fn http_get(addr: &str, path: &str) -> Result<String> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

// ---------------------------------------------------------------- latency

async fn latency() -> Result<()> {
    let secs = env_num("CT_LAT_SECS", 20);
    let rate = env_num("CT_LAT_RATE", 200).max(1);
    let url = shared_url();
    let ex = unique("lat");
    let q = unique("lat-q");
    declare(&url, &ex, Some((&q, false, "charge.#"))).await;
    let r = latency_run(&url, &ex, &q, secs, rate).await;
    cleanup(&url, &ex, Some(&q)).await;
    r
}

async fn latency_run(url: &str, ex: &str, q: &str, secs: u64, rate: u64) -> Result<()> {
    let n = secs * rate;
    let dir = workdir("ct-bench-lat-")?;
    let file = dir.path().join("tx.log");
    std::fs::write(&file, HEADER)?;
    let port = rabbit::free_port();
    let cfg = config(
        dir.path(),
        &file,
        "",
        &format!(
            "[sink]\nkind = \"amqp\"\n\n[sink.amqp]\nurl = \"{url}\"\nexchange = \"{ex}\"\n\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\n"
        ),
    );
    // Receipt side: transaction number → (written, received); the daemon's
    // lines are 0..=n, the raw baseline's n+1..=2n+1.
    let written: Arc<Mutex<Vec<Option<Instant>>>> =
        Arc::new(Mutex::new(vec![None; 2 * n as usize + 2]));
    let received: Arc<Mutex<Vec<Option<Instant>>>> =
        Arc::new(Mutex::new(vec![None; 2 * n as usize + 2]));
    let (conn, chan) = connect(url).await;
    chan.basic_qos(1000, BasicQosOptions::default()).await?;
    let mut consumer = chan
        .basic_consume(
            q.into(),
            "ct-bench".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let recv = received.clone();
    let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let cnt = count.clone();
    let consumer_task = tokio::spawn(async move {
        while let Some(Ok(d)) = consumer.next().await {
            let now = Instant::now();
            let v: serde_json::Value = match serde_json::from_slice(&d.data) {
                Ok(v) => v,
                Err(_) => continue,
            };
            if let Some(i) = v["data"]["transaction_id"]
                .as_str()
                .and_then(|t| t.strip_prefix("tx-"))
                .and_then(|t| t.parse::<usize>().ok())
            {
                let mut r = recv.lock().unwrap();
                if i < r.len() && r[i].is_none() {
                    r[i] = Some(now);
                }
            }
            cnt.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });

    let mut daemon = Run::start(&cfg, dir.path())?;
    // Warm-up: line 0 goes through once the daemon and its connection are up.
    append(&file, &tx_line(0));
    let t = Instant::now();
    while received.lock().unwrap()[0].is_none() {
        if t.elapsed() > Duration::from_secs(30) || !daemon.alive() {
            bail!("warm-up line not received in 30 s:\n{}", daemon.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    note(&format!(
        "latency: warm-up line arrived {:.0} ms after start; now {n} lines at {rate}/s",
        t.elapsed().as_secs_f64() * 1000.0
    ));

    // Writer: one write(2) per line on an O_APPEND file, on a fixed schedule.
    let w = written.clone();
    let f2 = file.clone();
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().append(true).open(&f2)?;
        let start = Instant::now();
        let every = Duration::from_nanos(1_000_000_000 / rate);
        for i in 1..=n {
            let due = start + every * (i as u32 - 1);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let line = tx_line(i);
            w.lock().unwrap()[i as usize] = Some(Instant::now());
            f.write_all(line.as_bytes())?;
        }
        Ok(())
    });
    let started = Instant::now();
    tokio::task::spawn_blocking(move || writer.join())
        .await?
        .map_err(|_| anyhow!("writer panicked"))??;
    let write_secs = started.elapsed().as_secs_f64();
    // Wait for the tail.
    let t = Instant::now();
    while count.load(std::sync::atomic::Ordering::Relaxed) < n + 1
        && t.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = http_get(&format!("127.0.0.1:{port}"), "/metrics").unwrap_or_default();
    let _ = daemon.stop();

    // The baseline, same consumer and queue: the same lines' messages.
    let sample = dir.path().join("raw-sample.log");
    let mut text = String::from(HEADER);
    for i in n + 1..=2 * n + 1 {
        text.push_str(&tx_line(i));
    }
    std::fs::write(&sample, text)?;
    let msgs = parse_messages(bin(), &cfg, &sample)?;
    if msgs.len() as u64 != n + 1 {
        bail!("chargetail parse gave {} messages of {}", msgs.len(), n + 1);
    }
    let confirms = raw_paced(url, ex, n + 1, msgs, rate, &written, &received).await?;
    let _ = conn.close(200, "".into()).await;
    consumer_task.abort();

    let (w, r) = (written.lock().unwrap(), received.lock().unwrap());
    let mut raw: Vec<f64> = (n as usize + 2..=2 * n as usize + 1)
        .filter_map(|i| Some((r[i]? - w[i]?).as_secs_f64() * 1000.0))
        .collect();
    raw.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mut lat: Vec<f64> = (1..=n as usize)
        .filter_map(|i| Some((r[i]? - w[i]?).as_secs_f64() * 1000.0))
        .collect();
    let missing = n as usize - lat.len();
    // Where the slow ones are: runs of lines over 25 ms, by time into the run.
    let t_first = w[1].unwrap();
    let mut stalls: Vec<(f64, usize, f64)> = Vec::new(); // (at s, lines, worst ms)
    let mut prev = 0usize;
    for i in 1..=n as usize {
        let (Some(wi), Some(ri)) = (w[i], r[i]) else {
            continue;
        };
        let l = (ri - wi).as_secs_f64() * 1000.0;
        if l <= 25.0 {
            continue;
        }
        match stalls.last_mut() {
            Some(s) if i <= prev + 5 => {
                s.1 += 1;
                s.2 = s.2.max(l);
            }
            _ => stalls.push(((wi - t_first).as_secs_f64(), 1, l)),
        }
        prev = i;
    }
    if !stalls.is_empty() {
        note(&format!(
            "latency: stalls over 25 ms (at s: lines, worst ms): {}",
            stalls
                .iter()
                .map(|(t, k, m)| format!("{t:.2}: {k}, {m:.0}"))
                .collect::<Vec<_>>()
                .join(" | ")
        ));
    }
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let over = lat.iter().filter(|&&l| l > 25.0).count();
    note(&format!(
        "latency: wrote {n} lines in {write_secs:.1} s ({:.0}/s); received {}, missing {missing}; {over} over 25 ms",
        n as f64 / write_secs,
        lat.len()
    ));
    figure(
        "latency.amqp",
        &format!(
            "write→receipt p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms (n={}, {rate}/s, target p99 ≤ 10 ms)",
            pct_ms(&lat, 50.0),
            pct_ms(&lat, 90.0),
            pct_ms(&lat, 99.0),
            pct_ms(&lat, 99.9),
            lat.last().copied().unwrap_or(f64::NAN),
            lat.len()
        ),
    );
    figure(
        "latency.amqp_raw",
        &format!(
            "publish→receipt p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms (n={}): baseline, raw lapin publisher at {rate}/s, same queue; its publish→confirm p50 {:.1} ms, p99 {:.1} ms",
            pct_ms(&raw, 50.0),
            pct_ms(&raw, 90.0),
            pct_ms(&raw, 99.0),
            pct_ms(&raw, 99.9),
            raw.last().copied().unwrap_or(f64::NAN),
            raw.len(),
            pct_ms(&confirms, 50.0),
            pct_ms(&confirms, 99.0),
        ),
    );
    // The daemon's own view: commit → broker confirm (ms resolution,
    // Prometheus buckets), for the breakdown.
    let hist: Vec<(String, u64)> = metrics
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("chargetail_delivery_latency_seconds_bucket{")?;
            let rest = &rest[rest.find("le=\"")? + 4..];
            let (le, n) = rest.split_once("\"} ")?;
            Some((le.to_string(), n.trim().parse().ok()?))
        })
        .collect();
    let get = |k: &str| {
        metrics.lines().find_map(|l| {
            let rest = l.strip_prefix(k)?;
            // Past the labels, if any: `{source="…"} 1.5`.
            let value = match rest.strip_prefix('{') {
                Some(r) => r.split_once("} ")?.1,
                None => rest,
            };
            value.trim().parse::<f64>().ok()
        })
    };
    if let (Some(sum), Some(cnt)) = (
        get("chargetail_delivery_latency_seconds_sum"),
        get("chargetail_delivery_latency_seconds_count"),
    ) {
        let b = |le: &str| {
            hist.iter()
                .find(|(l, _)| l == le)
                .map(|(_, n)| *n)
                .unwrap_or(0)
        };
        note(&format!(
            "latency: daemon commit→confirm mean {:.1} ms; ≤5 ms {}, ≤10 ms {}, ≤25 ms {}, ≤50 ms {} of {cnt}",
            1000.0 * sum / cnt.max(1.0),
            b("0.005"),
            b("0.01"),
            b("0.025"),
            b("0.05"),
        ));
    }
    Ok(())
}

/// The latency baseline: `msgs` (transaction numbers from `first` up)
/// published at `rate` by a raw lapin publisher as the sink publishes them
/// (persistent, mandatory, confirms), each stamped in `written` just before
/// its publish; the confirms are awaited by a task beside, so no publish
/// waits for an earlier confirm. The first message warms the connection up
/// and is not counted. Returns publish → confirm in ms, sorted.
async fn raw_paced(
    url: &str,
    exchange: &str,
    first: u64,
    msgs: Vec<Vec<u8>>,
    rate: u64,
    written: &Mutex<Vec<Option<Instant>>>,
    received: &Mutex<Vec<Option<Instant>>>,
) -> Result<Vec<f64>> {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
    use lapin::{BasicProperties, Confirmation};
    let (conn, chan) = connect(url).await;
    chan.confirm_select(ConfirmSelectOptions::default()).await?;
    let opts = BasicPublishOptions {
        mandatory: true,
        immediate: false,
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, lapin::PublisherConfirm)>();
    let confirmer = tokio::spawn(async move {
        let mut ms = Vec::new();
        while let Some((at, c)) = rx.recv().await {
            if c.await? != Confirmation::Ack(None) {
                bail!("raw publisher: not acked");
            }
            ms.push(at.elapsed().as_secs_f64() * 1000.0);
        }
        Ok(ms)
    });
    let every = Duration::from_nanos(1_000_000_000 / rate);
    let mut start = tokio::time::Instant::now();
    for (k, p) in msgs.iter().enumerate() {
        let i = first as usize + k;
        if k == 1 {
            // After the warm-up message arrived.
            let t = Instant::now();
            while received.lock().unwrap()[first as usize].is_none() {
                if t.elapsed() > Duration::from_secs(30) {
                    bail!("raw publisher: warm-up message not received in 30 s");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            start = tokio::time::Instant::now();
        }
        if k >= 1 {
            tokio::time::sleep_until(start + every * (k as u32 - 1)).await;
        }
        let props = BasicProperties::default()
            .with_message_id(format!("raw-{i}").into())
            .with_content_type("application/cloudevents+json".into())
            .with_delivery_mode(2);
        let at = Instant::now();
        written.lock().unwrap()[i] = Some(at);
        let c = chan
            .basic_publish(exchange.into(), "charge.print".into(), opts, p, props)
            .await?;
        let _ = tx.send((at, c));
    }
    drop(tx);
    let mut ms = confirmer.await??;
    // The tail at the consumer.
    let t = Instant::now();
    let last = first as usize + msgs.len() - 1;
    while received.lock().unwrap()[last].is_none() && t.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = conn.close(200, "".into()).await;
    ms.remove(0);
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    Ok(ms)
}

// ---------------------------------------------------------------- memory

async fn memory(lines: u64) -> Result<()> {
    let dir = workdir("ct-bench-mem-")?;
    let file = dir.path().join("tx.log");
    let t = Instant::now();
    write_lines(&file, lines)?;
    note(&format!(
        "memory: wrote {lines} lines ({:.0} MB) in {:.1} s; starting a private RabbitMQ node",
        std::fs::metadata(&file)?.len() as f64 / 1e6,
        t.elapsed().as_secs_f64()
    ));
    let mut node = tokio::task::spawn_blocking(|| RabbitNode::start(NodeOptions::default()))
        .await?
        .context("private RabbitMQ node")?;
    let _guard = node.guard();
    let mut node = tokio::task::spawn_blocking(move || {
        node.terminate();
        node
    })
    .await?;
    let q = "bench.drain";
    let cfg = config(
        dir.path(),
        &file,
        "backlog_limit = 2000000\n",
        &format!(
            "[sink]\nkind = \"amqp\"\n\n[sink.amqp]\nurl = \"{}\"\nexchange = \"bench\"\n\
             declare_exchange = true\nqueue = \"{q}\"\nqueue_type = \"classic\"\n\
             reconnect_max_ms = 2000\n\n[delivery]\nbatch = {}\n",
            node.amqp_url(),
            env_num("CT_DRAIN_BATCH", 1000)
        ),
    );
    let mut daemon = Run::start(&cfg, dir.path())?;
    let pid = daemon.pid();
    // (seconds, pending, rss KiB)
    let mut curve: Vec<(f64, u64, u64)> = Vec::new();
    let mut hwm = 0;
    let t0 = Instant::now();
    let mut full_at = None;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if !daemon.alive() {
            bail!("daemon exited:\n{}", daemon.log_tail());
        }
        let (r, h) = rss(pid).unwrap_or((0, 0));
        hwm = hwm.max(h);
        let p = pending(&cfg).unwrap_or(0);
        curve.push((t0.elapsed().as_secs_f64(), p, r));
        if p >= lines && full_at.is_none() {
            full_at = Some(t0.elapsed());
        }
        // Keep sampling a little while the full backlog sits there and the
        // sink keeps failing.
        if full_at.is_some_and(|f| t0.elapsed() > f + Duration::from_secs(10)) {
            break;
        }
        if t0.elapsed() > Duration::from_secs(300) {
            bail!("outbox not full after 300 s (pending {p})");
        }
    }
    let full = full_at.unwrap().as_secs_f64();
    let peak = curve.iter().map(|c| c.2).max().unwrap_or(0);
    let at = |frac: f64| {
        curve
            .iter()
            .find(|c| c.1 as f64 >= frac * lines as f64)
            .map(|c| format!("{:.1}", mb(c.2)))
            .unwrap_or_else(|| "-".into())
    };
    note(&format!(
        "memory: RSS by backlog: 10% {} MB, 25% {} MB, 50% {} MB, 75% {} MB, 100% {} MB, 10 s later {:.1} MB",
        at(0.10),
        at(0.25),
        at(0.50),
        at(0.75),
        at(1.0),
        mb(curve.last().unwrap().2)
    ));
    note(&format!(
        "memory: curve (s, pending, RSS MB): {}",
        curve
            .iter()
            .step_by((curve.len() / 12).max(1))
            .map(|(t, p, r)| format!("{t:.0}s {p} {:.1}", mb(*r)))
            .collect::<Vec<_>>()
            .join(" | ")
    ));
    figure(
        "memory.broker_down",
        &format!(
            "peak RSS {:.1} MB (VmHWM {:.1} MB) with {lines} charges queued in {full:.1} s ({:.0} charges/s into the outbox) (target flat, < 64 MB)",
            mb(peak),
            mb(hwm),
            lines as f64 / full
        ),
    );

    // Drain: start the broker, time until nothing is pending.
    let t_start = Instant::now();
    let mut node = tokio::task::spawn_blocking(move || node.start_again().map(|_| node))
        .await?
        .context("restarting the private node")?;
    let up = t_start.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let mut first = None;
    let mut drain_peak = 0;
    let mut last_p = lines;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if !daemon.alive() {
            bail!("daemon exited during the drain:\n{}", daemon.log_tail());
        }
        let p = pending(&cfg).unwrap_or(last_p);
        drain_peak = drain_peak.max(rss(pid).map(|r| r.0).unwrap_or(0));
        if p < lines && first.is_none() {
            first = Some((t1.elapsed(), p));
        }
        last_p = p;
        if p == 0 {
            break;
        }
        if t1.elapsed() > Duration::from_secs(400) {
            bail!("drain not done after 400 s ({p} pending)");
        }
    }
    let total = t1.elapsed().as_secs_f64();
    let (f, fp) = first.unwrap();
    let url = node.amqp_url();
    let in_queue = message_count(&url, q).await;
    let hwm_end = rss(pid).map(|r| r.1).unwrap_or(0);
    let _ = daemon.stop();
    note(&format!(
        "memory: node up in {up:.1} s; first confirms seen {:.1} s later; queue holds {in_queue}; RSS peak during drain {:.1} MB, VmHWM overall {:.1} MB",
        f.as_secs_f64(),
        mb(drain_peak),
        mb(hwm_end)
    ));
    figure(
        "drain.amqp_classic",
        &format!(
            "{:.0} msg/s ({lines} in {total:.1} s from broker up; {:.0} msg/s from the first confirm)",
            lines as f64 / total,
            fp as f64 / (total - f.as_secs_f64()).max(0.001)
        ),
    );
    // The broker's ceiling on the same node, same message bytes: a raw
    // lapin publisher with the sink's window (persistent, confirms).
    let k = lines.min(200_000);
    let sample = dir.path().join("sample.log");
    {
        let mut w = BufWriter::new(File::create(&sample)?);
        w.write_all(HEADER.as_bytes())?;
        for i in 0..k {
            w.write_all(tx_line(i).as_bytes())?;
        }
    }
    let payloads = parse_messages(bin(), &cfg, &sample)?;
    let avg = payloads.iter().map(Vec::len).sum::<usize>() / payloads.len().max(1);
    let secs = raw_publish(&url, "bench", q, &payloads).await?;
    figure(
        "drain.raw_ceiling",
        &format!(
            "{:.0} msg/s: raw lapin publisher, same node and queue, {} messages of {avg} bytes, window 1000",
            payloads.len() as f64 / secs,
            payloads.len()
        ),
    );
    tokio::task::spawn_blocking(move || node.stop()).await?;
    Ok(())
}

/// Publish `payloads` to `exchange` as the sink does (persistent,
/// mandatory, confirms, 1000 unconfirmed at most); seconds taken. Purges
/// `queue` first.
async fn raw_publish(url: &str, exchange: &str, queue: &str, payloads: &[Vec<u8>]) -> Result<f64> {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueuePurgeOptions};
    use lapin::{BasicProperties, Confirmation};
    let (conn, chan) = connect(url).await;
    chan.queue_purge(queue.into(), QueuePurgeOptions::default())
        .await?;
    chan.confirm_select(ConfirmSelectOptions::default()).await?;
    let opts = BasicPublishOptions {
        mandatory: true,
        immediate: false,
    };
    let t = Instant::now();
    let mut inflight = std::collections::VecDeque::with_capacity(1000);
    for (i, p) in payloads.iter().enumerate() {
        if inflight.len() >= 1000 {
            let c: lapin::PublisherConfirm = inflight.pop_front().unwrap();
            if c.await? != Confirmation::Ack(None) {
                bail!("raw publisher: not acked");
            }
        }
        let props = BasicProperties::default()
            .with_message_id(format!("raw-{i}").into())
            .with_content_type("application/cloudevents+json".into())
            .with_delivery_mode(2);
        let c = chan
            .basic_publish(exchange.into(), "charge.print".into(), opts, p, props)
            .await?;
        inflight.push_back(c);
    }
    for c in inflight {
        if c.await? != Confirmation::Ack(None) {
            bail!("raw publisher: not acked");
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let n = message_count(url, queue).await as usize;
    let _ = conn.close(200, "".into()).await;
    if n != payloads.len() {
        bail!("raw publisher: queue holds {n} of {}", payloads.len());
    }
    Ok(secs)
}

// ---------------------------------------------------------------- replay

/// `/usr/bin/time -v chargetail replay` → (seconds, max RSS KiB).
fn timed_replay(cfg: &Path, file: &Path, dir: &Path) -> Result<(f64, u64)> {
    let err = dir.join("replay.err");
    let t = Instant::now();
    let st = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(bin())
        .args(["replay", "--config"])
        .arg(cfg)
        .arg(file)
        .env("CHARGETAIL_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(File::create(&err)?)
        .status()
        .context("/usr/bin/time")?;
    let secs = t.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&err).unwrap_or_default();
    if !st.success() {
        let lines: Vec<&str> = text.lines().collect();
        bail!(
            "replay failed ({st}):\n{}",
            lines[lines.len().saturating_sub(30)..].join("\n")
        );
    }
    let max = text
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes):")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0);
    Ok((secs, max))
}

async fn replay(lines: u64) -> Result<()> {
    let dir = workdir("ct-bench-rep-")?;
    let file = dir.path().join("tx-archive.log");
    write_lines(&file, lines)?;

    let d1 = dir.path().join("stdout");
    std::fs::create_dir_all(&d1)?;
    let cfg = config(&d1, &file, "", "[sink]\nkind = \"stdout\"\n");
    let (secs, max) = tokio::task::spawn_blocking({
        let (cfg, file, d1) = (cfg.clone(), file.clone(), d1.clone());
        move || timed_replay(&cfg, &file, &d1)
    })
    .await??;
    let left = pending(&cfg).unwrap_or(u64::MAX);
    figure(
        "replay.stdout",
        &format!(
            "{:.0} charges/s ({lines} in {secs:.1} s), peak RSS {:.1} MB{}",
            lines as f64 / secs,
            mb(max),
            if left == 0 {
                String::new()
            } else {
                format!(" ({left} still pending!)")
            }
        ),
    );

    let url = shared_url();
    let ex = unique("rep");
    let q = unique("rep-q");
    declare(&url, &ex, Some((&q, false, "charge.#"))).await;
    let d2 = dir.path().join("amqp");
    std::fs::create_dir_all(&d2)?;
    let cfg = config(
        &d2,
        &file,
        "",
        &format!("[sink]\nkind = \"amqp\"\n\n[sink.amqp]\nurl = \"{url}\"\nexchange = \"{ex}\"\n"),
    );
    let r = tokio::task::spawn_blocking({
        let (file, d2) = (file.clone(), d2.clone());
        move || timed_replay(&cfg, &file, &d2)
    })
    .await?;
    let in_queue = message_count(&url, &q).await;
    cleanup(&url, &ex, Some(&q)).await;
    let (secs, max) = r?;
    figure(
        "replay.amqp_classic",
        &format!(
            "{:.0} charges/s ({lines} in {secs:.1} s, queue held {in_queue}), peak RSS {:.1} MB",
            lines as f64 / secs,
            mb(max)
        ),
    );
    Ok(())
}

fn main() {
    let mut which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if which.is_empty() {
        which = vec!["latency".into(), "memory".into(), "replay".into()];
    }
    let lines = env_num("CT_BENCH_LINES", 1_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("chargetail pipeline bench: binary {}, {} cores", bin(), {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    });
    let mut failed = false;
    for w in &which {
        let t = Instant::now();
        println!("== {w} (load {})", load());
        let r = rt.block_on(async {
            match w.as_str() {
                "latency" => latency().await,
                "memory" => memory(lines).await,
                "replay" => replay(lines).await,
                "ingest" => ingest::ingest(ingest::lines(lines)).await,
                other => Err(anyhow!("unknown benchmark {other:?}")),
            }
        });
        if let Err(e) = r {
            println!("FIGURE {w:<22} FAILED: {e:#}");
            failed = true;
        }
        println!("   ({w} took {:.0} s)", t.elapsed().as_secs_f64());
    }
    if failed {
        std::process::exit(1);
    }
}
