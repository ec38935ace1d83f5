//! AMQP throughput of the whole daemon beside a raw lapin publisher, in the
//! same run, printed (not asserted): `scripts/bench_amqp.sh`, or
//! `cargo bench --bench amqp_run`.
//!
//! - run: `chargetail run` from a pre-written file of CT_AMQP_LINES
//!   (200,000) charges to a durable classic, then a quorum queue on the
//!   shared broker (unique exchange and queue names, deleted afterwards):
//!   seconds from start until the queue holds every charge.
//! - drain: the same file read while the broker is unreachable (the sink
//!   points at a closed port) until the outbox holds every charge; then the
//!   daemon is restarted pointing at the broker: seconds from start until
//!   the classic queue holds them all.
//! - raw: a lapin publisher in this process sends the same message bytes
//!   (persistent, mandatory, confirms, the same window) to the same queue
//!   right after each daemon figure.
//!
//! Every line says the 1-minute load average: the machine may be shared.
//! Knobs: CT_AMQP_URL, CT_AMQP_LINES, CT_AMQP_WINDOW (1000), CT_AMQP_BATCH
//! (1000), CT_KEEP=1 (keep the temp dir and the daemon log).

#[path = "common/mod.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::{env_num, figure, load, parse_messages};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueuePurgeOptions};
use lapin::{BasicProperties, Confirmation};
use support::*;

struct Bench {
    dir: PathBuf,
    file: PathBuf,
    url: String,
    lines: u64,
    window: u64,
    batch: u64,
    payloads: Vec<Vec<u8>>,
}

/// `chargetail run`, stderr to a log; killed when dropped.
struct Run(Child);

impl Run {
    fn start(cfg: &Path, log: &Path) -> Result<Run> {
        Ok(Run(Command::new(bin())
            .args(["run", "--config"])
            .arg(cfg)
            .env("CHARGETAIL_LOG", "info")
            .stdout(Stdio::null())
            .stderr(File::options().create(true).append(true).open(log)?)
            .spawn()
            .context("starting chargetail run")?))
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = wait_timeout(&mut self.0, Duration::from_secs(30));
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Bench {
    /// A config for the file, a fresh state database named `state`, the
    /// amqp sink at `url` to `exchange` (declared with its queue by the
    /// bench).
    fn config(&self, state: &str, url: &str, exchange: &str) -> PathBuf {
        let cfg = self.dir.join(format!("{state}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[source]\nname = \"bench\"\npath = \"{}\"\ntimezone = \"Australia/Melbourne\"\n\
                 currency = \"AUD\"\nbacklog_limit = 10000000\n\n[state]\npath = \"{}\"\n\n\
                 [sink]\nkind = \"amqp\"\n\n[sink.amqp]\nurl = \"{url}\"\nexchange = \"{exchange}\"\n\
                 window = {}\nreconnect_max_ms = 1000\n\n[delivery]\nbatch = {}\n",
                self.file.display(),
                self.dir.join(format!("{state}/state.db")).display(),
                self.window,
                self.batch,
            ),
        )
        .unwrap();
        cfg
    }

    fn log(&self) -> PathBuf {
        self.dir.join("daemon.log")
    }

    /// Wait until `queue` holds `n` messages; seconds since `t0`.
    async fn until_queued(&self, queue: &str, n: u64, t0: Instant) -> Result<f64> {
        loop {
            if message_count(&self.url, queue).await as u64 >= n {
                return Ok(t0.elapsed().as_secs_f64());
            }
            if t0.elapsed() > Duration::from_secs(600) {
                bail!("{queue}: not every charge arrived within 600 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The raw publisher to the same queue (purged first): messages/s.
    async fn raw(&self, exchange: &str, queue: &str) -> Result<f64> {
        let (conn, chan) = connect(&self.url).await;
        chan.queue_purge(queue.into(), QueuePurgeOptions::default())
            .await?;
        chan.confirm_select(ConfirmSelectOptions::default()).await?;
        let opts = BasicPublishOptions {
            mandatory: true,
            immediate: false,
        };
        let window = self.window.max(1) as usize;
        let t = Instant::now();
        let mut inflight = VecDeque::with_capacity(window);
        for (i, p) in self.payloads.iter().enumerate() {
            if inflight.len() >= window {
                let c: lapin::PublisherConfirm = inflight.pop_front().context("window")?;
                if c.await? != Confirmation::Ack(None) {
                    bail!("raw publisher: not acked");
                }
            }
            let props = BasicProperties::default()
                .with_message_id(format!("raw-{i}").into())
                .with_content_type("application/cloudevents+json".into())
                .with_delivery_mode(2);
            inflight.push_back(
                chan.basic_publish(exchange.into(), "charge.print".into(), opts, p, props)
                    .await?,
            );
        }
        for c in inflight {
            if c.await? != Confirmation::Ack(None) {
                bail!("raw publisher: not acked");
            }
        }
        let secs = t.elapsed().as_secs_f64();
        let _ = conn.close(200, "".into()).await;
        let n = message_count(&self.url, queue).await as usize;
        if n != self.payloads.len() {
            bail!("raw publisher: queue holds {n} of {}", self.payloads.len());
        }
        Ok(self.payloads.len() as f64 / secs)
    }

    /// The daemon's figure and the raw one beside it.
    fn report(&self, name: &str, what: &str, daemon: f64, raw: f64) {
        figure(
            &format!("amqp.{name}"),
            &format!(
                "{daemon:.0} msg/s: {what} ({} charges, window {}, batch {})",
                self.lines, self.window, self.batch
            ),
        );
        figure(
            &format!("amqp.{name}.raw"),
            &format!(
                "{raw:.0} msg/s: raw lapin publisher, same bytes and queue, window {} (baseline)",
                self.window
            ),
        );
        figure(
            &format!("amqp.{name}.ratio"),
            &format!("{:.2} of raw (target >= 0.9)", daemon / raw),
        );
    }

    async fn run_to(&self, quorum: bool) -> Result<()> {
        let kind = if quorum { "quorum" } else { "classic" };
        let exchange = unique("bench.run");
        let queue = unique(&format!("bench.run.{kind}"));
        declare(&self.url, &exchange, Some((&queue, quorum, "charge.#"))).await;
        let cfg = self.config(&format!("run-{kind}"), &self.url, &exchange);
        let t0 = Instant::now();
        let daemon = Run::start(&cfg, &self.log())?;
        let r = self.until_queued(&queue, self.lines, t0).await;
        daemon.stop();
        let secs = r?;
        let raw = self.raw(&exchange, &queue).await;
        cleanup(&self.url, &exchange, Some(&queue)).await;
        self.report(
            &format!("run_{kind}"),
            "`run` from a pre-written file",
            self.lines as f64 / secs,
            raw?,
        );
        Ok(())
    }

    async fn drain(&self) -> Result<()> {
        let exchange = unique("bench.drain");
        let queue = unique("bench.drain.classic");
        // The outage: nothing listens on this port.
        let down = format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_http_port());
        declare(&self.url, &exchange, Some((&queue, false, "charge.#"))).await;
        let cfg = self.config("drain", &down, &exchange);
        let daemon = Run::start(&cfg, &self.log())?;
        let t = Instant::now();
        loop {
            let out = Command::new(bin())
                .args(["status", "--json", "--config"])
                .arg(&cfg)
                .stderr(Stdio::null())
                .output()?;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            if v["outbox"]["pending"].as_u64() == Some(self.lines) {
                break;
            }
            if t.elapsed() > Duration::from_secs(600) {
                bail!("backlog not built within 600 s");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        daemon.stop();
        let backlog_secs = t.elapsed().as_secs_f64();
        // The broker is back: same state, the real URL.
        let cfg = self.config("drain", &self.url, &exchange);
        let t0 = Instant::now();
        let daemon = Run::start(&cfg, &self.log())?;
        let r = self.until_queued(&queue, self.lines, t0).await;
        daemon.stop();
        let secs = r?;
        println!(
            "  drain: backlog of {} built in {backlog_secs:.1} s",
            self.lines
        );
        let raw = self.raw(&exchange, &queue).await;
        cleanup(&self.url, &exchange, Some(&queue)).await;
        self.report(
            "drain_classic",
            "drain of a backlog after an outage",
            self.lines as f64 / secs,
            raw?,
        );
        Ok(())
    }
}

fn write_lines(path: &Path, n: u64) -> Result<()> {
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    w.write_all(HEADER.as_bytes())?;
    for i in 0..n {
        w.write_all(tx_line(i).as_bytes())?;
    }
    w.flush()?;
    Ok(())
}

fn main() -> Result<()> {
    let lines = env_num("CT_AMQP_LINES", 200_000);
    let dir = tempfile::Builder::new()
        .prefix("ct-bench-amqp-")
        .disable_cleanup(std::env::var_os("CT_KEEP").is_some())
        .tempdir()?;
    let file = dir.path().join("tx.log");
    write_lines(&file, lines)?;
    // The exact bytes the daemon sends, for the raw publisher.
    let probe = dir.path().join("probe.toml");
    std::fs::write(
        &probe,
        format!(
            "[source]\nname = \"bench\"\npath = \"{}\"\ntimezone = \"Australia/Melbourne\"\n\
             currency = \"AUD\"\n\n[state]\npath = \"{}\"\n",
            file.display(),
            dir.path().join("probe/state.db").display()
        ),
    )?;
    let payloads = parse_messages(bin(), &probe, &file)?;
    if payloads.len() as u64 != lines {
        bail!("parse gave {} messages for {lines} lines", payloads.len());
    }
    let b = Bench {
        dir: dir.path().to_path_buf(),
        file,
        url: shared_url(),
        lines,
        window: env_num("CT_AMQP_WINDOW", 1000),
        batch: env_num("CT_AMQP_BATCH", 1000),
        payloads,
    };
    let avg = b.payloads.iter().map(Vec::len).sum::<usize>() / b.payloads.len().max(1);
    println!(
        "chargetail amqp bench: {lines} charges of ~{avg} bytes, broker {}, {} cores, load {}",
        b.url,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        load()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wants = |w: &str| which.is_empty() || which.iter().any(|x| x == w);
    let mut failed = false;
    for (name, quorum) in [("classic", false), ("quorum", true)] {
        if wants(name) {
            if let Err(e) = rt.block_on(b.run_to(quorum)) {
                println!("FIGURE amqp.run_{name:<16} FAILED: {e:#}");
                failed = true;
            }
        }
    }
    if wants("drain") {
        if let Err(e) = rt.block_on(b.drain()) {
            println!("FIGURE amqp.drain_classic        FAILED: {e:#}");
            failed = true;
        }
    }
    if failed {
        std::process::exit(1);
    }
    Ok(())
}
