//! `chargetail run` and `replay` delivering to a real RabbitMQ: the shared
//! broker on 127.0.0.1:5672, a uniquely named exchange and queue per test.
//! The process killed here is our own daemon, never the shared broker.

mod support;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use support::*;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn amqp_config(dir: &Path, pattern: &str, exchange: &str) -> std::path::PathBuf {
    write_config(
        dir,
        pattern,
        &format!(
            "[sink]\nkind = \"amqp\"\n\n[sink.amqp]\nurl = \"{}\"\nexchange = \"{exchange}\"\n",
            shared_url()
        ),
    )
}

/// Wait until `queue` holds at least `n` messages.
fn wait_count(rt: &tokio::runtime::Runtime, queue: &str, n: u32, within: Duration) -> u32 {
    let deadline = Instant::now() + within;
    loop {
        let c = rt.block_on(message_count(&shared_url(), queue));
        if c >= n || Instant::now() > deadline {
            return c;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn followed_file_to_queue_byte_identical_to_parse_in_order() {
    let rt = rt();
    let (ex, q) = (unique("ct-e2e-x"), unique("ct-e2e-q"));
    rt.block_on(declare(&shared_url(), &ex, Some((&q, false, "charge.#"))));
    let dir = tempfile::tempdir().unwrap();
    let file = tx_file(dir.path(), 200);
    let cfg = amqp_config(dir.path(), "tx.log", &ex);
    let d = Daemon::start(&cfg);
    assert_eq!(wait_count(&rt, &q, 200, Duration::from_secs(30)), 200);
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));

    let parsed = run_cli(&[
        "parse",
        "--config",
        cfg.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert!(parsed.status.success());
    let expected: Vec<&[u8]> = parsed
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let got = rt.block_on(drain(&shared_url(), &q));
    assert_eq!(got.len(), 200);
    for (i, (m, want)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(
            &m.data[..],
            *want,
            "message {i} differs from `parse` output"
        );
        let p = &m.properties;
        let v: serde_json::Value = serde_json::from_slice(&m.data).unwrap();
        assert_eq!(
            p.message_id().as_ref().map(|s| s.as_str()),
            v["id"].as_str()
        );
        assert_eq!(
            p.content_type().as_ref().map(|s| s.as_str()),
            Some("application/cloudevents+json")
        );
        assert_eq!(*p.delivery_mode(), Some(2), "persistent");
        assert_eq!(m.routing_key.as_str(), "charge.print");
    }
    rt.block_on(cleanup(&shared_url(), &ex, Some(&q)));
}

#[test]
fn kill9_thirty_times_during_a_stream_loses_nothing() {
    let rt = rt();
    let (ex, q) = (unique("ct-k9-x"), unique("ct-k9-q"));
    rt.block_on(declare(&shared_url(), &ex, Some((&q, true, "charge.#"))));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tx.log");
    append(&file, HEADER);
    let cfg = amqp_config(dir.path(), "tx.log", &ex);
    let total = 6000u64;
    // A writer appends steadily while the daemon is killed again and again.
    let writer = {
        let file = file.clone();
        std::thread::spawn(move || {
            for n in 0..total {
                append(&file, &tx_line(n));
                if n % 50 == 49 {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        })
    };
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..30 {
        let d = Daemon::start(&cfg);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(40 + seed % 260));
        d.kill9();
    }
    writer.join().unwrap();
    let d = Daemon::start(&cfg);
    // Wait until the outbox is empty and everything is read, then drain the
    // queue once (draining with auto-ack while messages still arrive would
    // drop those pushed past the count asked for).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let out = run_cli(&["status", "--config", cfg.to_str().unwrap(), "--json"]);
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        // Running too: the earlier daemons may have delivered everything,
        // and a SIGTERM before this one has started is not a clean stop.
        if s["daemon_running"] == true
            && s["outbox"]["pending"] == 0
            && s["files"][0]["lag_bytes"] == 0
            && s["outbox"]["delivered"] == total
        {
            break;
        }
        assert!(Instant::now() < deadline, "not caught up: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
    let mut all = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for m in rt.block_on(drain(&shared_url(), &q)) {
        let v: serde_json::Value = serde_json::from_slice(&m.data).unwrap();
        let tx = v["data"]["transaction_id"].as_str().unwrap().to_string();
        seen.insert(tx.clone());
        all.push((tx, v["id"].as_str().unwrap().to_string()));
    }
    assert_eq!(
        seen.len(),
        total as usize,
        "every charge reached the queue after 30 kill -9s"
    );
    let mut ids: HashMap<String, HashSet<String>> = HashMap::new();
    for (tx, id) in &all {
        ids.entry(tx.clone()).or_default().insert(id.clone());
    }
    assert!(
        ids.values().all(|s| s.len() == 1),
        "a repeat always has the same id"
    );
    eprintln!(
        "kill -9 x30 during a {total}-charge stream: {} messages, {} redelivered with the same id",
        all.len(),
        all.len() - total as usize
    );
    rt.block_on(cleanup(&shared_url(), &ex, Some(&q)));
}

#[test]
fn replay_twice_into_rabbitmq_delivers_each_id_once() {
    let rt = rt();
    let (ex, q) = (unique("ct-rp-x"), unique("ct-rp-q"));
    rt.block_on(declare(&shared_url(), &ex, Some((&q, false, "charge.#"))));
    let dir = tempfile::tempdir().unwrap();
    let arch = dir.path().join("old.log");
    let mut text = HEADER.to_string();
    for n in 0..500 {
        text.push_str(&tx_line(n));
    }
    std::fs::write(&arch, text).unwrap();
    let cfg = amqp_config(dir.path(), "live/*.log", &ex);
    for (round, want_new) in [(1, 500), (2, 0)] {
        let out = std::process::Command::new(bin())
            .args(["replay", "--json", "--config"])
            .arg(&cfg)
            .arg(&arch)
            .env("CHARGETAIL_LOG", "warn")
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "round {round}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(s["newly_delivered"], want_new, "round {round}: {s}");
        assert_eq!(s["already_delivered"], 500 - want_new, "round {round}");
    }
    let msgs = rt.block_on(drain(&shared_url(), &q));
    let ids: HashSet<String> = msgs
        .iter()
        .map(|m| m.properties.message_id().as_ref().unwrap().to_string())
        .collect();
    assert_eq!(msgs.len(), 500);
    assert_eq!(ids.len(), 500, "each id once");
    rt.block_on(cleanup(&shared_url(), &ex, Some(&q)));
}

#[test]
fn unroutable_charges_stay_pending_until_a_queue_is_bound() {
    let rt = rt();
    let (ex, q) = (unique("ct-ur-x"), unique("ct-ur-q"));
    rt.block_on(declare(&shared_url(), &ex, None));
    let dir = tempfile::tempdir().unwrap();
    tx_file(dir.path(), 20);
    let cfg = write_config(
        dir.path(),
        "tx.log",
        &format!(
            "[delivery]\nretry_initial_ms = 100\nretry_max_ms = 500\n\n[sink]\nkind = \"amqp\"\n\n[sink.amqp]\nurl = \"{}\"\nexchange = \"{ex}\"\n",
            shared_url()
        ),
    );
    let d = Daemon::start(&cfg);
    std::thread::sleep(Duration::from_secs(2));
    let out = run_cli(&["status", "--config", cfg.to_str().unwrap(), "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["outbox"]["pending"], 20, "nothing counted delivered: {s}");
    assert_eq!(s["outbox"]["delivered"], 0);
    assert!(
        s["outbox"]["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("unroutable"),
        "{s}"
    );
    // Someone binds a queue: everything arrives.
    rt.block_on(declare(&shared_url(), &ex, Some((&q, false, "charge.#"))));
    assert_eq!(wait_count(&rt, &q, 20, Duration::from_secs(30)), 20);
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
    rt.block_on(cleanup(&shared_url(), &ex, Some(&q)));
}
