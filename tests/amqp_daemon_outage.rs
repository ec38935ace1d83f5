//! A broker outage under the real daemon: a private RabbitMQ node (its own
//! name, ports and data) is stopped and killed several times while
//! `chargetail run` streams 20,000 charges into a durable queue. Afterwards
//! every charge is in the queue; repeats only with the same id.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use support::rabbit::{NodeOptions, RabbitNode};
use support::*;

const TOTAL: u64 = 20_000;

fn delivered(cfg: &std::path::Path) -> (u64, u64) {
    let out = run_cli(&["status", "--config", cfg.to_str().unwrap(), "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    (
        s["outbox"]["delivered"].as_u64().unwrap_or(0),
        s["outbox"]["pending"].as_u64().unwrap_or(u64::MAX),
    )
}

#[test]
fn broker_stopped_and_killed_mid_stream_loses_nothing() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut node = RabbitNode::start(NodeOptions::default()).expect("private rabbitmq node");
    let _guard = node.guard();
    let url = node.amqp_url();
    let (ex, q) = (unique("ct-do-x"), unique("ct-do-q"));
    rt.block_on(declare(&url, &ex, Some((&q, false, "charge.#"))));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tx.log");
    append(&file, HEADER);
    let cfg = write_config(
        dir.path(),
        "tx.log",
        &format!(
            "[delivery]\nretry_initial_ms = 50\nretry_max_ms = 500\n\n[sink]\nkind = \"amqp\"\n\n[sink.amqp]\nurl = \"{url}\"\nexchange = \"{ex}\"\ntimeout_ms = 3000\nreconnect_initial_ms = 50\nreconnect_max_ms = 500\n"
        ),
    );
    let d = Daemon::start(&cfg);
    // PaperCut keeps writing throughout.
    let writer = {
        let file = file.clone();
        std::thread::spawn(move || {
            for n in 0..TOTAL {
                append(&file, &tx_line(n));
                if n % 100 == 99 {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        })
    };
    let mut log = Vec::new();
    let mut resumed_at = 0;
    for k in 0..3u64 {
        let at = ((k + 1) * TOTAL / 5).max(resumed_at + 500);
        let deadline = Instant::now() + Duration::from_secs(120);
        while delivered(&cfg).0 < at {
            assert!(Instant::now() < deadline, "no progress before fault {k}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let at_fault = delivered(&cfg).0;
        // A clean stop first, then SIGKILLs (see amqp_outage.rs on why).
        if k == 0 {
            node.terminate();
        } else {
            node.kill();
        }
        std::thread::sleep(Duration::from_millis(500));
        node.start_again().expect("restart node");
        resumed_at = delivered(&cfg).0;
        log.push(format!("fault {k} at {at_fault} delivered"));
    }
    writer.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (done, pending) = delivered(&cfg);
        if done == TOTAL && pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "stuck at {done} delivered, {pending} pending"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));

    let msgs = rt.block_on(drain(&url, &q));
    let mut by_tx: HashMap<String, HashSet<String>> = HashMap::new();
    for m in &msgs {
        let v: serde_json::Value = serde_json::from_slice(&m.data).unwrap();
        by_tx
            .entry(v["data"]["transaction_id"].as_str().unwrap().to_string())
            .or_default()
            .insert(v["id"].as_str().unwrap().to_string());
    }
    eprintln!(
        "daemon broker outage: {TOTAL} charges, {} messages, {} duplicates (same id); {log:?}",
        msgs.len(),
        msgs.len() as u64 - TOTAL
    );
    assert_eq!(by_tx.len() as u64, TOTAL, "every charge is in the queue");
    assert!(
        by_tx.values().all(|ids| ids.len() == 1),
        "repeats carry the same id"
    );
}
