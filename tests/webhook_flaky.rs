//! Thousands of charges to an endpoint that fails at random (500s, 429 and
//! 503 with Retry-After, answers slower than the timeout, dropped
//! connections), driven by a retry loop that behaves like the outbox worker.
//! Every charge must arrive with a valid signature, duplicates only under the
//! same id, no request before the Retry-After the endpoint asked for, and
//! (concurrency 1) in order.

mod webhook_support;

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use chargetail::sink::webhook::{WebhookConfig, WebhookSink};
use chargetail::sink::{Envelope, Outcome, Sink};
use webhook_support::{envelope, new_secret, secret_file, serve, verify, Hit, Reply};

/// Per-request odds of each failure.
#[derive(Clone, Copy)]
struct Odds {
    r429: f64,
    r503_date: f64,
    r500: f64,
    slow: f64,
    drop: f64,
}

fn flaky(seed: u64, odds: Odds) -> impl Fn(&Hit) -> Reply + Send + Sync + 'static {
    let rng = Mutex::new(StdRng::seed_from_u64(seed));
    move |hit| {
        let r: f64 = rng.lock().unwrap().random();
        let odds = [odds.r429, odds.r503_date, odds.r500, odds.slow, odds.drop];
        // Early on, one of each failure for sure; then chance.
        let kind = match hit.n {
            10 => Some(0),
            20 => Some(1),
            30 => Some(2),
            40 => Some(3),
            50 => Some(4),
            _ => {
                let mut edge = 0.0;
                odds.iter().position(|p| {
                    edge += p;
                    r < edge
                })
            }
        };
        match kind {
            Some(0) => Reply::with_header(429, "Retry-After", "1"),
            Some(1) => {
                let when = SystemTime::now() + Duration::from_secs(2);
                Reply::with_header(503, "Retry-After", &httpdate::fmt_http_date(when))
            }
            Some(2) => Reply::status(500),
            Some(3) => Reply::Slow {
                delay: Duration::from_millis(400),
                status: 200,
            },
            Some(4) => Reply::Drop,
            _ => Reply::status(200),
        }
    }
}

struct Pending {
    env: Envelope,
    due: Instant,
}

/// The worker's loop in miniature: due prefix in outbox order, Retry-After
/// honoured, else exponential backoff with full jitter.
async fn drive(sink: &mut WebhookSink, envs: Vec<Envelope>, batch: usize) -> usize {
    let start = Instant::now();
    let mut pending: VecDeque<Pending> = envs
        .into_iter()
        .map(|env| Pending { env, due: start })
        .collect();
    let mut rounds = 0;
    while let Some(head) = pending.front() {
        let now = Instant::now();
        if head.due > now {
            tokio::time::sleep_until(head.due.into()).await;
            continue;
        }
        let take = pending
            .iter()
            .take(batch)
            .take_while(|p| p.due <= now)
            .count();
        let envs: Vec<Envelope> = pending.iter().take(take).map(|p| p.env.clone()).collect();
        let out = sink.send(&envs).await;
        rounds += 1;
        assert_eq!(out.len(), envs.len(), "one outcome per envelope");
        let after = Instant::now();
        let mut keep = Vec::with_capacity(take);
        for (mut p, o) in pending.drain(..take).zip(out) {
            match o {
                Outcome::Delivered => {}
                Outcome::Retry { retry_after, .. } => {
                    let cap = (5u64 << p.env.attempts.min(3)).min(40);
                    let backoff = Duration::from_millis(rand::rng().random_range(0..=cap));
                    p.due = after + retry_after.unwrap_or(backoff);
                    p.env.attempts += 1;
                    keep.push(p);
                }
                Outcome::NotSent => keep.push(p),
                Outcome::Reject { error } => panic!("{}: rejected: {error}", p.env.id),
            }
        }
        for p in keep.into_iter().rev() {
            pending.push_front(p);
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "taking too long"
        );
    }
    rounds
}

async fn run(n: i64, concurrency: usize, seed: u64, odds: Odds) {
    let server = serve(flaky(seed, odds)).await;
    let (a, b) = (new_secret(), new_secret());
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = WebhookConfig::for_url(&server.url("/hook"));
    cfg.secret_file = Some(secret_file(dir.path(), &[&a, &b]));
    cfg.connect_timeout_ms = 500;
    cfg.timeout_ms = 150;
    cfg.concurrency = concurrency;
    let mut sink = WebhookSink::new(cfg).unwrap();

    let envs: Vec<Envelope> = (1..=n).map(envelope).collect();
    let by_id: HashMap<String, &Envelope> = envs.iter().map(|e| (e.id.clone(), e)).collect();
    let t = Instant::now();
    let rounds = drive(&mut sink, envs.clone(), 100).await;
    let took = t.elapsed();

    let hits = server.hits();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    // Earliest moment each id may come back, per Retry-After answers.
    let mut not_before_instant: HashMap<&str, Instant> = HashMap::new();
    let mut not_before_wall: HashMap<&str, SystemTime> = HashMap::new();
    let mut kinds: HashMap<String, usize> = HashMap::new();
    // How long after the allowed moment each such id came back.
    let mut margins: Vec<Duration> = Vec::new();
    let mut last_ok_seq = 0;
    for h in &hits {
        let id = h.id();
        let env = by_id.get(id).unwrap_or_else(|| panic!("unknown id {id:?}"));
        // Same id ⇒ the very same bytes; the body's own id matches.
        assert_eq!(h.body.as_ref(), env.payload.as_slice());
        verify(&a, &h.headers, &h.body).unwrap();
        verify(&b, &h.headers, &h.body).unwrap();
        if let Some(t) = not_before_instant.remove(id) {
            assert!(h.at >= t, "{id} came back {:?} early", t - h.at);
            margins.push(h.at - t);
        }
        if let Some(w) = not_before_wall.remove(id) {
            assert!(h.wall >= w, "{id} came back before its Retry-After date");
            margins.push(h.wall.duration_since(w).unwrap_or_default());
        }
        let kind = match &h.reply {
            Reply::Answer {
                status, headers, ..
            } => {
                if let Some((_, v)) = headers.iter().find(|(k, _)| k == "Retry-After") {
                    match v.parse::<u64>() {
                        Ok(s) => {
                            not_before_instant.insert(id, h.at + Duration::from_secs(s));
                        }
                        Err(_) => {
                            let w = httpdate::parse_http_date(v).unwrap();
                            not_before_wall.insert(id, w);
                        }
                    }
                }
                format!("{status}")
            }
            Reply::Slow { .. } => "slow".into(),
            Reply::Drop => "drop".into(),
            Reply::Pending => unreachable!(),
        };
        if concurrency == 1 && matches!(h.reply, Reply::Answer { status: 200, .. }) {
            // Strict order: what the receiver accepts never goes backwards.
            assert!(
                env.seq >= last_ok_seq,
                "{} after seq {last_ok_seq}",
                env.seq
            );
            last_ok_seq = env.seq;
        }
        *kinds.entry(kind).or_default() += 1;
        *seen.entry(id).or_default() += 1;
    }
    for e in &envs {
        assert!(seen.contains_key(e.id.as_str()), "{} never arrived", e.id);
    }
    let dups: usize = seen.values().map(|c| c - 1).sum();
    let mut kinds: Vec<_> = kinds.into_iter().collect();
    kinds.sort();
    println!(
        "concurrency {concurrency}: {n} charges, {} requests ({dups} repeats of an id), {rounds} rounds, {took:?}; answers {kinds:?}",
        hits.len()
    );
    for k in ["429", "503", "500", "slow", "drop"] {
        assert!(
            kinds.iter().any(|(kind, c)| kind == k && *c > 0),
            "no {k} happened: {kinds:?}"
        );
    }
    margins.sort();
    println!(
        "  Retry-After honoured {} times; came back after the allowed moment by min {:?}, max {:?}",
        margins.len(),
        margins.first(),
        margins.last()
    );
    assert!(margins.len() >= 2, "Retry-After was exercised");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_endpoint_strict_order() {
    run(
        5000,
        1,
        0x5eed_0001,
        Odds {
            r429: 0.001,
            r503_date: 0.0006,
            r500: 0.015,
            slow: 0.004,
            drop: 0.01,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_endpoint_concurrency_8() {
    run(
        2000,
        8,
        0x5eed_0008,
        Odds {
            r429: 0.002,
            r503_date: 0.0015,
            r500: 0.02,
            slow: 0.005,
            drop: 0.01,
        },
    )
    .await;
}
