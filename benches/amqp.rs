//! Throughput of the AMQP sink against the broker's own ceiling.
//!
//! `cargo bench --bench amqp` (CT_AMQP_URL, CT_BENCH_N, CT_BENCH_ROUNDS to
//! override). For a durable classic and a quorum queue on the shared
//! broker, 200,000 messages each: a raw lapin publisher with a sliding
//! window of 1000 unconfirmed, the same bytes and properties the sink sends,
//! in two styles (`raw`: await every publish; `raw+`: collect the write
//! completion lazily); and `AmqpSink::send` in batches of 1000 (window
//! 1000), as the outbox worker calls it. Rounds are interleaved; prints
//! every run, the best of each, and sink / best raw.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use chargetail::sink::amqp::{AmqpConfig, AmqpSink};
use chargetail::sink::{Envelope, Outcome, Sink};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Confirmation};
use support::*;

const WINDOW: usize = 1000;

fn props(e: &Envelope) -> BasicProperties {
    let mut h = FieldTable::default();
    for (k, v) in [
        ("cloudEvents_specversion", "1.0"),
        ("cloudEvents_id", e.id.as_str()),
        ("cloudEvents_source", "papercut/pc-test"),
        ("cloudEvents_type", "papercut.charge"),
        ("cloudEvents_subject", "Acme Design"),
        ("cloudEvents_time", "2026-11-20T09:14:03+11:00"),
    ] {
        h.insert(k.into(), AMQPValue::LongString(LongString::from(v)));
    }
    BasicProperties::default()
        .with_message_id(e.id.as_str().into())
        .with_content_type("application/cloudevents+json".into())
        .with_delivery_mode(2)
        .with_timestamp(1_795_126_443)
        .with_app_id("chargetail".into())
        .with_headers(h)
}

/// The broker's ceiling: a plain lapin publisher with a sliding window of
/// `WINDOW` unconfirmed messages. Builds each message's properties in the
/// loop, as any real publisher must. `lazy`: poll each publish once (which
/// queues its frames) and collect the write completion later, instead of
/// awaiting every write before the next publish.
async fn raw(url: &str, ex: &str, envs: &[Envelope], lazy: bool) -> Duration {
    let (conn, chan) = connect(url).await;
    chan.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    let opts = BasicPublishOptions {
        mandatory: true,
        immediate: false,
    };
    let t = Instant::now();
    if lazy {
        type Pub<'a> = std::pin::Pin<
            Box<
                dyn std::future::Future<Output = lapin::Result<lapin::PublisherConfirm>>
                    + Send
                    + 'a,
            >,
        >;
        enum P<'a> {
            Pending(Pub<'a>),
            Done(lapin::Result<lapin::PublisherConfirm>),
        }
        async fn settle(p: P<'_>) -> Confirmation {
            let c = match p {
                P::Pending(f) => f.await,
                P::Done(r) => r,
            };
            c.unwrap().await.unwrap()
        }
        let mut inflight: VecDeque<P> = VecDeque::with_capacity(WINDOW);
        for e in envs {
            if inflight.len() >= WINDOW {
                let p = inflight.pop_front().unwrap();
                assert_eq!(settle(p).await, Confirmation::Ack(None));
            }
            let rk = format!("charge.{}", e.job_type);
            let mut f: Pub =
                Box::pin(chan.basic_publish(ex.into(), rk.into(), opts, &e.payload, props(e)));
            let p = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(r) => Some(r),
                    std::task::Poll::Pending => None,
                })
            })
            .await;
            inflight.push_back(match p {
                Some(r) => P::Done(r),
                None => P::Pending(f),
            });
        }
        for p in inflight {
            assert_eq!(settle(p).await, Confirmation::Ack(None));
        }
    } else {
        let mut inflight = VecDeque::with_capacity(WINDOW);
        for e in envs {
            if inflight.len() >= WINDOW {
                let c: lapin::PublisherConfirm = inflight.pop_front().unwrap();
                assert_eq!(c.await.unwrap(), Confirmation::Ack(None));
            }
            let rk = format!("charge.{}", e.job_type);
            let c = chan
                .basic_publish(ex.into(), rk.into(), opts, &e.payload, props(e))
                .await
                .unwrap();
            inflight.push_back(c);
        }
        for c in inflight {
            assert_eq!(c.await.unwrap(), Confirmation::Ack(None));
        }
    }
    let d = t.elapsed();
    let _ = conn.close(200, "".into()).await;
    d
}

async fn through_sink(url: &str, ex: &str, envs: &[Envelope], batch: usize) -> (Duration, usize) {
    let mut c = AmqpConfig::new(url, ex);
    c.window = WINDOW;
    let mut sink = AmqpSink::new(c, "pc-test".into()).unwrap();
    // Connect outside the timing, as the daemon is connected in steady state.
    sink.check().await.unwrap();
    let mut retries = 0;
    let t = Instant::now();
    for chunk in envs.chunks(batch) {
        let out = sink.send(chunk).await;
        let mut pending: Vec<&Envelope> = chunk
            .iter()
            .zip(out)
            .filter(|(_, o)| *o != Outcome::Delivered)
            .map(|(e, _)| e)
            .collect();
        retries += pending.len();
        while !pending.is_empty() {
            let batch: Vec<Envelope> = pending.iter().map(|e| (*e).clone()).collect();
            let out = sink.send(&batch).await;
            let before = pending.len();
            pending = pending
                .into_iter()
                .zip(out)
                .filter(|(_, o)| *o != Outcome::Delivered)
                .map(|(e, _)| e)
                .collect();
            retries += pending.len();
            if pending.len() == before {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let d = t.elapsed();
    sink.close().await;
    (d, retries)
}

async fn run(url: &str, envs: &[Envelope], quorum: bool, which: &str) -> f64 {
    let ex = unique("bench");
    let q = unique("bench-q");
    declare(url, &ex, Some((&q, quorum, "charge.#"))).await;
    let (d, retries) = match which {
        "raw" => (raw(url, &ex, envs, false).await, 0),
        "raw+" => (raw(url, &ex, envs, true).await, 0),
        _ => through_sink(url, &ex, envs, 1000).await,
    };
    let n = message_count(url, &q).await as usize;
    assert_eq!(n, envs.len(), "queue must hold every message");
    cleanup(url, &ex, Some(&q)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rate = envs.len() as f64 / d.as_secs_f64();
    println!(
        "  {} {which:<6}: {:>7} msgs in {:>6.2} s = {:>7.0} msg/s{}",
        kind(quorum),
        envs.len(),
        d.as_secs_f64(),
        rate,
        if retries > 0 {
            format!(" ({retries} retried)")
        } else {
            String::new()
        }
    );
    rate
}

fn kind(quorum: bool) -> &'static str {
    if quorum {
        "quorum "
    } else {
        "classic"
    }
}

const MODES: [&str; 3] = ["raw", "raw+", "sink"];

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let n = env("CT_BENCH_N", 200_000);
    let rounds = env("CT_BENCH_ROUNDS", 2).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = shared_url();
        let envs = envelopes("bench", n);
        let avg = envs.iter().map(|e| e.payload.len()).sum::<usize>() / envs.len();
        println!(
            "AMQP throughput: {n} persistent {avg}-byte messages, confirms, window {WINDOW}, \
             {rounds} round(s), broker {}",
            chargetail::sink::amqp::mask_url(&url)
        );
        println!("  raw = lapin publisher awaiting each publish; raw+ = the same with write completion collected lazily (as the sink does); sink = AmqpSink::send, batches of 1000");
        // Interleaved rounds: background load on the machine hits all modes alike.
        let mut best = [[0f64; 3]; 2];
        for r in 0..rounds {
            println!(" round {}", r + 1);
            for (qi, quorum) in [false, true].into_iter().enumerate() {
                for (mi, m) in MODES.iter().enumerate() {
                    let rate = run(&url, &envs, quorum, m).await;
                    best[qi][mi] = best[qi][mi].max(rate);
                }
            }
        }
        println!(" best of {rounds}:");
        for (qi, quorum) in [false, true].into_iter().enumerate() {
            let [raw, rawp, sink] = best[qi];
            let ceiling = raw.max(rawp);
            println!(
                "  {}: raw {raw:.0}, raw+ {rawp:.0}, sink {sink:.0} msg/s; sink = {:.0} % of the best raw",
                kind(quorum),
                100.0 * sink / ceiling
            );
        }
    });
}
