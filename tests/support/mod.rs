//! Shared helpers for the AMQP tests (and the bench): broker URLs, unique
//! names, realistic envelopes, a lapin consumer that drains a queue.
#![allow(dead_code)]

pub mod rabbit;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

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
    let id = format!("chg_{tag}_{i:08}");
    let job_type = JOB_TYPES[i % JOB_TYPES.len()];
    let account_type = if i.is_multiple_of(3) {
        "personal"
    } else {
        "shared"
    };
    let payload = format!(
        concat!(
            r#"{{"specversion":"1.0","id":"{id}","source":"papercut/pc-test","type":"papercut.charge","#,
            r#""subject":"Acme Design","time":"2026-11-20T09:14:03+11:00","#,
            r#""data":{{"user":"alice","account":"Acme Design","account_type":"{at}","amount":"1.20","#,
            r#""currency":"AUD","job_type":"{jt}","pages":12,"color_pages":2,"device":"floor2-mfd"}}}}"#
        ),
        id = id,
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
            Ok(Some(Ok(d))) => out.push(d),
            Ok(other) => panic!("consumer ended after {} of {n}: {other:?}", out.len()),
            Err(_) => panic!("no delivery for 20 s after {} of {n}", out.len()),
        }
    }
    let _ = conn.close(200, "".into()).await;
    out
}
