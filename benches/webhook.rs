//! Webhook sink throughput and latency to a fast local receiver (prints
//! figures; not a test). `cargo bench --bench webhook`.
//!
//! - throughput: 20,000 charges through `send` in batches of 1,000 (the
//!   worker's default), concurrency 1 (strict order) and 8;
//! - latency: one charge every 10 ms (100/s), from `send` called to request
//!   received, p50/p99. This is the sink's share only; the daemon-level
//!   figure (line appended → request received) needs the daemon.

#[path = "../tests/webhook_support/mod.rs"]
mod webhook_support;

use std::time::{Duration, Instant};

use chargetail::sink::webhook::{WebhookConfig, WebhookSink};
use chargetail::sink::{Envelope, Outcome, Sink};
use webhook_support::{envelope, new_secret, secret_file, serve, Reply, Server};

const N: i64 = 20_000;
const BATCH: usize = 1000;

fn sink(server: &Server, dir: &std::path::Path, concurrency: usize) -> WebhookSink {
    let mut cfg = WebhookConfig::for_url(&server.url("/hook"));
    cfg.secret_file = Some(secret_file(dir, &[&new_secret()]));
    cfg.concurrency = concurrency;
    WebhookSink::new(cfg).expect("sink")
}

async fn throughput(concurrency: usize) {
    let server = serve(|_| Reply::status(204)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = sink(&server, dir.path(), concurrency);
    let warm: Vec<Envelope> = (0..200).map(|i| envelope(-i - 1)).collect();
    s.send(&warm).await;
    let envs: Vec<Envelope> = (1..=N).map(envelope).collect();
    let t = Instant::now();
    for chunk in envs.chunks(BATCH) {
        let out = s.send(chunk).await;
        assert!(out.iter().all(|o| *o == Outcome::Delivered));
    }
    let took = t.elapsed();
    println!(
        "webhook concurrency {concurrency}: {N} charges in {:.2} s = {:.0} msg/s ({} B payload)",
        took.as_secs_f64(),
        N as f64 / took.as_secs_f64(),
        envs[0].payload.len()
    );
}

async fn latency() {
    let server = serve(|_| Reply::status(204)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = sink(&server, dir.path(), 1);
    s.send(&[envelope(0)]).await;
    let n = 500;
    let mut called = Vec::with_capacity(n);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    for i in 1..=n as i64 {
        tick.tick().await;
        called.push(Instant::now());
        s.send(&[envelope(i)]).await;
    }
    let hits = server.hits();
    let mut lat: Vec<Duration> = hits[1..]
        .iter()
        .zip(&called)
        .map(|(h, c)| h.at.saturating_duration_since(*c))
        .collect();
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    println!(
        "webhook latency at 100/s, send() called -> request received: p50 {:?}, p99 {:?}, max {:?}",
        p(0.50),
        p(0.99),
        lat[lat.len() - 1]
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    throughput(1).await;
    throughput(8).await;
    latency().await;
}
