//! Resource alarm on a private node: while the broker blocks publishing
//! (connection.blocked), `send` answers Retry promptly with retry_after and
//! the health alert says why; once the alarm clears, charges are delivered.

mod support;

use std::time::{Duration, Instant};

use chargetail::sink::amqp::{AmqpConfig, AmqpSink};
use chargetail::sink::{Outcome, Sink};
use support::rabbit::{NodeOptions, RabbitNode};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_broker_pauses_then_delivers() {
    let node = tokio::task::spawn_blocking(|| RabbitNode::start(NodeOptions::default()))
        .await
        .unwrap()
        .expect("private rabbitmq node");
    let url = node.amqp_url();
    let ex = unique("blocked");
    let q = unique("blocked-q");
    declare(&url, &ex, Some((&q, false, "charge.#"))).await;
    let mut c = AmqpConfig::new(url.clone(), ex.clone());
    c.timeout_ms = 10_000;
    c.blocked_retry_ms = 700;
    let mut sink = AmqpSink::new(c, "pc".into()).unwrap();
    let envs = envelopes("blk", 300);
    assert!(sink
        .send(&envs[..100])
        .await
        .iter()
        .all(|o| *o == Outcome::Delivered));

    // A disk alarm: free space is "below" an absurd limit.
    let node = tokio::task::spawn_blocking(move || {
        let o = node
            .ctl(&["set_disk_free_limit", "100000GB"])
            .expect("rabbitmqctl");
        assert!(o.status.success(), "{o:?}");
        node
    })
    .await
    .unwrap();

    // The broker tells publishing connections when they next publish; a
    // batch may take up to the timeout the first time, never longer.
    let mut saw_blocked = false;
    let start = Instant::now();
    let mut delivered_while_blocked = 0;
    while start.elapsed() < Duration::from_secs(30) {
        let t = Instant::now();
        let out = sink.send(&envs[100..200]).await;
        assert!(
            t.elapsed() < Duration::from_secs(12),
            "send hung: {:?}",
            t.elapsed()
        );
        delivered_while_blocked += out.iter().filter(|o| **o == Outcome::Delivered).count();
        if let Some(Outcome::Retry { error, retry_after }) =
            out.iter().find(|o| matches!(o, Outcome::Retry { .. }))
        {
            if error.contains("blocked") {
                assert_eq!(*retry_after, Some(Duration::from_millis(700)), "{error}");
                eprintln!("blocked: {error} (send took {:?})", t.elapsed());
                saw_blocked = true;
                break;
            }
        }
    }
    assert!(saw_blocked, "no blocked Retry seen");
    assert!(delivered_while_blocked < 100);
    let h = sink.health();
    assert!(
        h.alert.as_deref().is_some_and(|a| a.contains("blocked")),
        "{h:?}"
    );
    // While blocked, further sends answer at once.
    let t = Instant::now();
    let out = sink.send(&envs[100..200]).await;
    assert!(matches!(out[0], Outcome::Retry { .. }), "{:?}", out[0]);
    assert!(out[1..].iter().all(|o| *o == Outcome::NotSent));
    assert!(
        t.elapsed() < Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );

    let node = tokio::task::spawn_blocking(move || {
        let o = node
            .ctl(&["set_disk_free_limit", "1MB"])
            .expect("rabbitmqctl");
        assert!(o.status.success(), "{o:?}");
        node
    })
    .await
    .unwrap();
    let start = Instant::now();
    let mut pending: Vec<_> = envs[100..].to_vec();
    while !pending.is_empty() {
        assert!(start.elapsed() < Duration::from_secs(30), "not unblocked");
        let out = sink.send(&pending).await;
        let mut keep = Vec::new();
        for (e, o) in pending.into_iter().zip(out) {
            if o != Outcome::Delivered {
                keep.push(e);
            }
        }
        pending = keep;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(sink.health().alert, None);
    let got = drain(&url, &q).await;
    let mut ids: Vec<String> = got
        .iter()
        .map(|d| d.properties.message_id().clone().unwrap().to_string())
        .collect();
    ids.dedup();
    let mut uniq = ids.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), 300, "every charge delivered");
    sink.close().await;
    drop(node);
}
