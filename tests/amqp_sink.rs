//! AMQP sink against the shared RabbitMQ (127.0.0.1:5672, or CT_AMQP_URL):
//! end to end, unroutable, topology, check, backoff.

mod support;

use chargetail::sink::amqp::{AmqpConfig, AmqpSink, QueueType};
use chargetail::sink::{Envelope, Outcome, Sink};
use lapin::types::AMQPValue;
use support::*;

fn cfg(exchange: &str) -> AmqpConfig {
    let mut c = AmqpConfig::new(shared_url(), exchange);
    c.timeout_ms = 5_000;
    c.reconnect_initial_ms = 50;
    c.reconnect_max_ms = 200;
    c
}

async fn send_all(sink: &mut AmqpSink, envs: &[Envelope], batch: usize) -> Vec<Outcome> {
    let mut out = Vec::new();
    for chunk in envs.chunks(batch) {
        let o = sink.send(chunk).await;
        assert_eq!(o.len(), chunk.len());
        out.extend(o);
    }
    out
}

fn header(d: &lapin::message::Delivery, k: &str) -> Option<String> {
    let h = d.properties.headers().as_ref()?;
    match h.inner().get(k)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        other => Some(format!("{other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_bodies_properties_order() {
    let ex = unique("e2e");
    let q = unique("e2e-q");
    let mut c = cfg(&ex);
    c.declare_exchange = true;
    c.queue = Some(q.clone());
    c.queue_type = QueueType::Classic;
    c.routing_key = "charge.{job_type}.{account_type}.{source}".into();
    let mut sink = AmqpSink::new(c, "pc-main".into()).unwrap();
    let envs = envelopes("e2e", 2_500);
    let out = send_all(&mut sink, &envs, 1000).await;
    assert!(
        out.iter().all(|o| *o == Outcome::Delivered),
        "{:?}",
        out.iter().find(|o| **o != Outcome::Delivered)
    );
    assert!(sink.health().connected);
    assert_eq!(sink.health().alert, None);

    let got = drain(&shared_url(), &q).await;
    assert_eq!(got.len(), envs.len());
    for (e, d) in envs.iter().zip(&got) {
        assert_eq!(d.data, e.payload, "body must be byte-identical");
        let p = &d.properties;
        assert_eq!(
            p.message_id().as_ref().map(|s| s.as_str()),
            Some(e.id.as_str())
        );
        assert_eq!(
            p.content_type().as_ref().map(|s| s.as_str()),
            Some("application/cloudevents+json")
        );
        assert_eq!(p.delivery_mode(), &Some(2));
        assert_eq!(p.app_id().as_ref().map(|s| s.as_str()), Some("chargetail"));
        assert_eq!(p.timestamp(), &Some(1_795_126_443));
        // {source} is the message's own (papercut/pc-test), not the name
        // the sink was made with: one sink carries several sources.
        assert_eq!(
            d.routing_key.as_str(),
            format!("charge.{}.{}.pc-test", e.job_type, e.account_type)
        );
        assert_eq!(header(d, "cloudEvents_specversion").as_deref(), Some("1.0"));
        assert_eq!(header(d, "cloudEvents_id").as_deref(), Some(e.id.as_str()));
        assert_eq!(
            header(d, "cloudEvents_source").as_deref(),
            Some("papercut/pc-test")
        );
        assert_eq!(
            header(d, "cloudEvents_type").as_deref(),
            Some("papercut.charge")
        );
        assert_eq!(
            header(d, "cloudEvents_subject").as_deref(),
            Some("Acme Design")
        );
        assert_eq!(
            header(d, "cloudEvents_time").as_deref(),
            Some("2026-11-20T09:14:03+11:00")
        );
    }
    // Declaring again on a new connection is idempotent.
    sink.close().await;
    let out = sink.send(&envelopes("e2e-again", 3)).await;
    assert!(out.iter().all(|o| *o == Outcome::Delivered), "{out:?}");
    sink.close().await;
    cleanup(&shared_url(), &ex, Some(&q)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_smaller_than_batch_keeps_order() {
    let ex = unique("win");
    let q = unique("win-q");
    declare(&shared_url(), &ex, Some((&q, true, "charge.#"))).await;
    let mut c = cfg(&ex);
    c.window = 7;
    let mut sink = AmqpSink::new(c, "pc".into()).unwrap();
    let envs = envelopes("win", 300);
    let out = send_all(&mut sink, &envs, 100).await;
    assert!(out.iter().all(|o| *o == Outcome::Delivered));
    let got = drain(&shared_url(), &q).await;
    let ids: Vec<_> = got
        .iter()
        .map(|d| d.properties.message_id().clone().unwrap().to_string())
        .collect();
    let want: Vec<_> = envs.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids, want);
    sink.close().await;
    cleanup(&shared_url(), &ex, Some(&q)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_is_retried_and_alerts_until_bound() {
    let ex = unique("unroutable");
    let q = unique("unroutable-q");
    declare(&shared_url(), &ex, None).await;
    let mut sink = AmqpSink::new(cfg(&ex), "pc".into()).unwrap();
    let envs = envelopes("unr", 50);
    let out = sink.send(&envs).await;
    assert_eq!(out.len(), 50);
    for (o, e) in out.iter().zip(&envs) {
        match o {
            Outcome::Retry { error, .. } => {
                assert!(error.contains(&ex), "{error}");
                assert!(error.contains(&format!("charge.{}", e.job_type)), "{error}");
                assert!(error.contains("unroutable"), "{error}");
            }
            other => panic!("unroutable must be Retry, got {other:?}"),
        }
    }
    eprintln!("unroutable outcome: {:?}", out[0]);
    let alert = sink.health().alert.expect("alert set");
    eprintln!("alert: {alert}");
    assert!(alert.contains(&ex) && alert.contains("charge."), "{alert}");
    assert!(
        sink.health().connected,
        "unroutable is not a connection problem"
    );

    declare(&shared_url(), &ex, Some((&q, false, "charge.#"))).await;
    let out = sink.send(&envs).await;
    assert!(out.iter().all(|o| *o == Outcome::Delivered), "{out:?}");
    assert_eq!(sink.health().alert, None, "alert clears once routable");
    let got = drain(&shared_url(), &q).await;
    assert_eq!(got.len(), 50, "returned messages were not enqueued");
    sink.close().await;
    cleanup(&shared_url(), &ex, Some(&q)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_exchange_is_retry_with_alert() {
    let ex = unique("missing");
    let mut sink = AmqpSink::new(cfg(&ex), "pc".into()).unwrap();
    let out = sink.send(&envelopes("miss", 20)).await;
    assert_eq!(out.len(), 20);
    // The failure is the first charge's; the rest were not attempted.
    assert!(
        matches!(&out[0], Outcome::Retry { error, .. } if error.contains("NOT_FOUND")),
        "{:?}",
        out[0]
    );
    assert!(out[1..].iter().all(|o| *o == Outcome::NotSent), "{out:?}");
    eprintln!("missing exchange: {:?}", out[0]);
    assert!(sink.health().alert.is_some_and(|a| a.contains("NOT_FOUND")));
    let e = sink.check().await.unwrap_err().to_string();
    assert!(e.contains(&ex) && e.contains("NOT_FOUND"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_exchange_and_queue() {
    let ex = unique("check");
    let q = unique("check-q");
    declare(&shared_url(), &ex, Some((&q, false, "charge.#"))).await;
    let mut c = cfg(&ex);
    c.queue = Some(q.clone());
    c.queue_type = QueueType::Classic;
    let mut sink = AmqpSink::new(c, "pc".into()).unwrap();
    let r = sink.check().await.unwrap();
    assert!(
        r.contains(&ex) && r.contains(&q) && r.contains("guest:****@"),
        "{r}"
    );
    sink.close().await;
    cleanup(&shared_url(), &ex, Some(&q)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_type_mismatch_is_a_clear_topology_error() {
    let ex = unique("mismatch");
    let q = unique("mismatch-q");
    declare(&shared_url(), &ex, Some((&q, false, "charge.#"))).await; // classic
    let mut c = cfg(&ex);
    c.declare_exchange = true;
    c.queue = Some(q.clone());
    c.queue_type = QueueType::Quorum;
    let mut sink = AmqpSink::new(c, "pc".into()).unwrap();
    let out = sink.send(&envelopes("mm", 3)).await;
    for o in &out {
        match o {
            Outcome::Retry { error, .. } => {
                assert!(error.contains(&q), "{error}");
                assert!(error.contains("different settings"), "{error}");
                assert!(error.contains("PRECONDITION_FAILED"), "{error}");
            }
            Outcome::NotSent => {}
            other => panic!("{other:?}"),
        }
    }
    eprintln!("mismatch: {:?}", out[0]);
    assert!(sink
        .health()
        .alert
        .is_some_and(|a| a.contains("different settings")));
    let e = sink.check().await.unwrap_err().to_string();
    assert!(e.contains("different settings"), "{e}");
    cleanup(&shared_url(), &ex, Some(&q)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlong_routing_key_or_id_is_rejected_alone() {
    let ex = unique("longkey");
    let q = unique("longkey-q");
    declare(&shared_url(), &ex, Some((&q, false, "#"))).await;
    let mut c = cfg(&ex);
    c.routing_key = "charge.{job_type}".into();
    let mut sink = AmqpSink::new(c, "pc".into()).unwrap();
    let mut envs = envelopes("long", 4);
    envs[1].job_type = "x".repeat(300);
    envs[2].id = "y".repeat(300);
    let out = sink.send(&envs).await;
    assert_eq!(out[0], Outcome::Delivered);
    assert!(
        matches!(&out[1], Outcome::Reject { error } if error.contains("routing key")),
        "{:?}",
        out[1]
    );
    assert!(
        matches!(&out[2], Outcome::Reject { error } if error.contains("charge id")),
        "{:?}",
        out[2]
    );
    assert_eq!(out[3], Outcome::Delivered);
    sink.close().await;
    cleanup(&shared_url(), &ex, Some(&q)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_broker_answers_retry_quickly_with_backoff() {
    let port = support::rabbit::free_port();
    let mut c = cfg("x");
    c.url = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    c.reconnect_initial_ms = 1_000;
    c.reconnect_max_ms = 4_000;
    let mut sink = AmqpSink::new(c, "pc".into()).unwrap();
    let t = std::time::Instant::now();
    for _ in 0..5 {
        let out = sink.send(&envelopes("down", 10)).await;
        assert!(matches!(out[0], Outcome::Retry { .. }));
        assert!(out[1..].iter().all(|o| *o == Outcome::NotSent));
    }
    assert!(
        t.elapsed() < std::time::Duration::from_secs(2),
        "send must not sleep"
    );
    let out = sink.send(&envelopes("down", 1)).await;
    match &out[0] {
        Outcome::Retry { retry_after, error } => {
            assert!(
                error.contains("next attempt") || error.contains("cannot connect"),
                "{error}"
            );
            let _ = retry_after; // may be zero-ish under full jitter
        }
        o => panic!("{o:?}"),
    }
    assert!(!sink.health().connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_is_retry_and_later_messages_still_confirm() {
    use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    let ex = unique("nack");
    let q = unique("nack-q");
    {
        // A full queue that refuses publishes: the broker nacks them.
        let (conn, chan) = connect(&shared_url()).await;
        chan.exchange_declare(
            ex.as_str().into(),
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
        let mut args = FieldTable::default();
        args.insert("x-max-length".into(), AMQPValue::LongLongInt(5));
        args.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish".into()),
        );
        chan.queue_declare(
            q.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await
        .unwrap();
        chan.queue_bind(
            q.as_str().into(),
            ex.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
        let _ = conn.close(200, "".into()).await;
    }
    let mut sink = AmqpSink::new(cfg(&ex), "pc".into()).unwrap();
    let out = sink.send(&envelopes("nack", 8)).await;
    assert!(out[..5].iter().all(|o| *o == Outcome::Delivered), "{out:?}");
    for o in &out[5..] {
        assert!(
            matches!(o, Outcome::Retry { error, .. } if error.contains("nacked")),
            "{o:?}"
        );
    }
    assert!(sink.health().connected, "a nack keeps the connection");
    // After a nack the sink sends one at a time until an ack: the first
    // charge is nacked again and nothing behind it is published, so no
    // later charge can overtake it.
    let out = sink.send(&envelopes("nack", 8)[5..]).await;
    assert!(
        matches!(&out[0], Outcome::Retry { error, .. } if error.contains("nacked")),
        "{out:?}"
    );
    assert!(out[1..].iter().all(|o| *o == Outcome::NotSent), "{out:?}");
    assert_eq!(message_count(&shared_url(), &q).await, 5);
    sink.close().await;
    cleanup(&shared_url(), &ex, Some(&q)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declares_quorum_queue_with_dead_letter_exchange_idempotently() {
    let ex = unique("dlx");
    let q = unique("dlx-q");
    let mut c = cfg(&ex);
    c.declare_exchange = true;
    c.queue = Some(q.clone());
    c.dead_letter_exchange = Some(format!("{ex}.dead"));
    // queue_type defaults to quorum.
    let mut sink = AmqpSink::new(c.clone(), "pc".into()).unwrap();
    let envs = envelopes("dlx", 20);
    assert!(sink
        .send(&envs)
        .await
        .iter()
        .all(|o| *o == Outcome::Delivered));
    sink.close().await;
    // A second sink with the same settings declares again without error.
    let mut again = AmqpSink::new(c.clone(), "pc".into()).unwrap();
    assert!(again
        .send(&envs[..1])
        .await
        .iter()
        .all(|o| *o == Outcome::Delivered));
    again.close().await;
    // Another dead-letter exchange: the queue exists with different args.
    let mut other = c.clone();
    other.dead_letter_exchange = Some(format!("{ex}.elsewhere"));
    let mut sink = AmqpSink::new(other, "pc".into()).unwrap();
    let e = sink.check().await.unwrap_err().to_string();
    assert!(
        e.contains("x-dead-letter-exchange") && e.contains("different settings"),
        "{e}"
    );
    assert_eq!(message_count(&shared_url(), &q).await, 21);
    cleanup(&shared_url(), &ex, Some(&q)).await;
}
