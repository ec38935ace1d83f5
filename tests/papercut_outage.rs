//! PaperCut down or slow never loses a charge and never holds delivery
//! forever: delivered unenriched within the bound (`wait_ms`, `timeout_ms`,
//! `retry_secs`), or with `on_unavailable = "hold"` held until PaperCut
//! answers again (at most `hold_max_secs`); and a message's bytes, fixed
//! before its first send, are what every redelivery carries. Against the
//! real XML-RPC server of tests/papercut_support in its down and slow modes.

mod papercut_support;
mod support;
mod webhook_support;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use papercut_support::*;
use support::{bin, metric};

/// Down (the server closes every connection unanswered, or nothing
/// listens): every charge delivered unenriched, saying so, the mapping
/// still applied; PaperCut asked for the first batch only, then left alone
/// for `retry_secs`, not once per charge.
#[test]
fn papercut_down_delivers_unenriched_at_once() {
    let dir0 = tempfile::tempdir().unwrap();
    let server = Server::start(dir0.path());
    server.mode("down");
    let (dir, cfg) = setup(&server.url(), TOKEN, "");
    let (code, events) = replay(dir.path(), &cfg, "replay.log");
    assert_eq!(code, 0);
    assert_eq!(events.len(), CHARGES, "nothing lost");
    for e in &events {
        assert_eq!(e["data"]["enrichment"], "unavailable", "{e}");
        assert!(e["data"].get("papercut").is_none());
        // The mapping still applies.
        if e["data"]["account"] == "Acme Design" {
            assert_eq!(e["data"]["billing"]["customer_id"], "cus_acme");
        }
    }
    // The first batch's users and accounts at most (4 + 2).
    let asked = server.total("down");
    assert!((1..=6).contains(&asked), "{:?}", server.calls());
    assert_eq!(server.total("api."), 0);
    let log = std::fs::read_to_string(dir.path().join("replay.log")).unwrap();
    assert!(log.contains("PaperCut unreachable"), "{log}");
    assert!(log.contains("left alone for retry_secs"), "{log}");
    assert_no_token(dir.path(), "replay.log");

    // Nothing listening: the same, and `check` says it cannot be reached.
    let url = format!("http://127.0.0.1:{}/rpc/api/xmlrpc", dead_port());
    let (dir, cfg) = setup(&url, TOKEN, "");
    let (code, events) = replay(dir.path(), &cfg, "replay.log");
    assert_eq!((code, events.len()), (0, CHARGES));
    assert!(events
        .iter()
        .all(|e| e["data"]["enrichment"] == "unavailable"));
    let out = Command::new(bin())
        .args(["check", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unreachable"));
}

/// Slower than `wait_ms`: the server would answer (after 30 s), but the
/// batch does not wait for it: every charge goes out "unavailable", and
/// PaperCut is not asked again per batch.
#[test]
fn papercut_slow_past_the_bound_delivers_unenriched_within_it() {
    let dir0 = tempfile::tempdir().unwrap();
    let server = Server::start(dir0.path());
    server.mode("slow 30");
    let (dir, cfg) = setup(&server.url(), TOKEN, "wait_ms = 500\ntimeout_ms = 60000\n");
    let (code, events) = replay(dir.path(), &cfg, "replay.log");
    assert_eq!(code, 0);
    assert_eq!(events.len(), CHARGES, "nothing lost");
    for e in &events {
        assert_eq!(e["data"]["enrichment"], "unavailable", "{e}");
    }
    assert!(server.total("api.getUserProperties") <= 4);
    let log = std::fs::read_to_string(dir.path().join("replay.log")).unwrap();
    assert!(log.contains("slower than wait_ms"), "{log}");
}

/// One call slower than `timeout_ms` is a network failure (timed out),
/// not a fault: "unavailable", logged as a timeout.
#[test]
fn a_call_past_timeout_ms_is_unavailable_not_a_fault() {
    let dir0 = tempfile::tempdir().unwrap();
    let server = Server::start(dir0.path());
    server.mode("slow 30");
    let (dir, cfg) = setup(&server.url(), TOKEN, "wait_ms = 60000\ntimeout_ms = 300\n");
    let (code, events) = replay(dir.path(), &cfg, "replay.log");
    assert_eq!((code, events.len()), (0, CHARGES));
    for e in &events {
        assert_eq!(e["data"]["enrichment"], "unavailable", "{e}");
    }
    let log = std::fs::read_to_string(dir.path().join("replay.log")).unwrap();
    assert!(log.contains("PaperCut unreachable: timed out"), "{log}");
    assert!(!log.contains("slower than wait_ms"), "{log}");
    assert!(!log.contains("PaperCut fault"), "{log}");
}

/// `on_unavailable = "hold"`: while PaperCut is down nothing is sent and
/// every charge is held (counted, listed, its reason kept); once PaperCut
/// answers again each is released enriched, once.
#[test]
fn papercut_down_with_hold_keeps_charges_until_it_answers_again() {
    let dir0 = tempfile::tempdir().unwrap();
    let server = Server::start(dir0.path());
    server.mode("down");
    let (dir, cfg) = setup(
        &server.url(),
        TOKEN,
        "on_unavailable = \"hold\"\nretry_secs = 1\nwait_ms = 1000\n",
    );
    let d = Daemon::start(dir.path(), &cfg, "run.log");
    let m = d.metrics_when("not all held", |m| {
        metric(m, "chargetail_papercut_held") == Some(CHARGES as f64)
    });
    assert_eq!(metric(&m, "chargetail_billing_held"), Some(CHARGES as f64));
    assert_eq!(metric(&m, "chargetail_delivered_total"), Some(0.0), "{m}");
    assert_eq!(metric(&m, "chargetail_papercut_down"), Some(1.0), "{m}");
    assert!(
        metric(&m, "chargetail_papercut_errors_total").unwrap() >= 1.0,
        "{m}"
    );
    // Asked again while down (every retry_secs), still held.
    let before = server.total("down");
    assert!(before >= 1);
    let m = d.metrics_when("not asked again", |_| server.total("down") > before);
    assert_eq!(metric(&m, "chargetail_papercut_held"), Some(CHARGES as f64));
    // /status: a minor problem, and the counts.
    let st: serde_json::Value =
        serde_json::from_str(&support::http_request(d.port, "/status", "").body).unwrap();
    assert_eq!(st["billing"]["held_papercut"], CHARGES as u64, "{st}");
    assert_eq!(st["billing"]["papercut_down"], true, "{st}");
    assert_eq!(st["service_status"], "degraded", "{st}");
    assert!(st["active_problems"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["description"]
            .as_str()
            .unwrap()
            .contains("held until PaperCut answers")));
    let list = held_list(dir.path(), &cfg);
    assert_eq!(list.len(), CHARGES);
    assert!(list.iter().all(|h| h["reason"] == "papercut"), "{list:?}");
    let st = status(dir.path(), &cfg);
    assert_eq!(
        (st["held"].as_u64(), st["held_papercut"].as_u64()),
        (Some(CHARGES as u64), Some(CHARGES as u64))
    );

    server.mode("normal");
    let m = d.metrics_when("not all released", |m| {
        metric(m, "chargetail_delivered_total") == Some(CHARGES as f64)
    });
    assert_eq!(metric(&m, "chargetail_papercut_held"), Some(0.0), "{m}");
    assert_eq!(metric(&m, "chargetail_billing_held"), Some(0.0), "{m}");
    assert_eq!(metric(&m, "chargetail_papercut_down"), Some(0.0), "{m}");
    let st = support::http_get(d.port, "/status");
    assert!(!st.contains("PaperCut"), "{st}");
    assert_eq!(
        metric(&m, "chargetail_billing_released_total"),
        Some(CHARGES as f64)
    );
    let events = d.stop();
    assert_eq!(events.len(), CHARGES, "each sent once");
    let ids: std::collections::BTreeSet<&str> =
        events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), CHARGES);
    for e in &events {
        let d = &e["data"];
        let want = if d["user"] == "noah.kim@harbourworks.com.au" {
            "unknown"
        } else {
            "ok"
        };
        assert_eq!(d["enrichment"], want, "{e}");
        if d["user"] == "liam.ng@harbourworks.com.au" && d["account_type"] == "personal" {
            assert_eq!(d["billing"]["customer_id"], "cus_liam_pc", "{e}");
            assert_eq!(d["billing"]["via"], "papercut", "{e}");
        }
        if d["account"] == "Acme Design" {
            assert_eq!(d["billing"]["customer_id"], "cus_acme", "{e}");
            assert_eq!(d["papercut"]["shared_account"]["account-id"], "1001");
        }
    }
    assert!(held_list(dir.path(), &cfg).is_empty());
    // reconcile: everything read is delivered, with its customer.
    let out = Command::new(bin())
        .args([
            "reconcile",
            "--json",
            "--by",
            "customer",
            "--config",
            cfg.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let rep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        rep["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["key"] == "cus_liam_pc"),
        "{rep}"
    );
    assert_no_token(dir.path(), "run.log");
}

/// Held for PaperCut, but never longer than `hold_max_secs`: then sent
/// unenriched, saying so.
#[test]
fn charges_held_for_papercut_go_unenriched_after_hold_max_secs() {
    let dir0 = tempfile::tempdir().unwrap();
    let server = Server::start(dir0.path());
    server.mode("down");
    let (dir, cfg) = setup(
        &server.url(),
        TOKEN,
        "on_unavailable = \"hold\"\nretry_secs = 1\nhold_max_secs = 2\n",
    );
    let d = Daemon::start(dir.path(), &cfg, "run.log");
    let m = d.metrics_when("not all delivered", |m| {
        metric(m, "chargetail_delivered_total") == Some(CHARGES as f64)
    });
    assert_eq!(metric(&m, "chargetail_papercut_held"), Some(0.0), "{m}");
    assert_eq!(
        metric(&m, "chargetail_billing_released_total"),
        Some(CHARGES as f64),
        "{m}"
    );
    assert_eq!(
        metric(&m, "chargetail_papercut_unenriched_total"),
        Some(CHARGES as f64),
        "{m}"
    );
    let events = d.stop();
    assert_eq!(events.len(), CHARGES);
    for e in &events {
        assert_eq!(e["data"]["enrichment"], "unavailable", "{e}");
        if e["data"]["account"] == "Acme Design" {
            assert_eq!(e["data"]["billing"]["customer_id"], "cus_acme");
        }
    }
    let log = std::fs::read_to_string(dir.path().join("run.log")).unwrap();
    assert!(
        log.contains("PaperCut unavailable (on_unavailable"),
        "{log}"
    );
    assert!(server.total("down") >= 1);
}

/// The bytes of a message are fixed before its first send: the webhook
/// refuses every attempt at first, PaperCut then goes down, and the
/// redeliveries still carry the enrichment read at ingest, byte for byte.
#[test]
fn a_redelivery_carries_the_bytes_of_the_first_attempt() {
    let dir0 = tempfile::tempdir().unwrap();
    let server = Server::start(dir0.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let refuse = Arc::new(AtomicBool::new(true));
    let hook = {
        let refuse = refuse.clone();
        rt.block_on(webhook_support::serve(move |_| {
            if refuse.load(Ordering::SeqCst) {
                webhook_support::Reply::status(500)
            } else {
                webhook_support::Reply::status(204)
            }
        }))
    };
    let (dir, cfg) = setup(&server.url(), TOKEN, "");
    let secret = dir.path().join("webhook-secret");
    std::fs::write(&secret, format!("{}\n", webhook_support::new_secret())).unwrap();
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "[sink]\nkind = \"stdout\"\n",
        &format!(
            "[sink]\nkind = \"webhook\"\n\n[sink.webhook]\nurl = \"{}\"\nsecret_file = \"{}\"\n\n[delivery]\nretry_initial_ms = 100\nretry_max_ms = 300\n",
            hook.url("/hook"),
            secret.display()
        ),
    );
    std::fs::write(&cfg, text).unwrap();
    let d = Daemon::start(dir.path(), &cfg, "run.log");
    // Everything read (and enriched) while PaperCut is up, and the head
    // refused at least twice.
    d.metrics_when("not all read", |m| {
        metric(m, "chargetail_charges_read_total") == Some(CHARGES as f64) && hook.count() >= 2
    });
    server.mode("down");
    let before = hook.count();
    d.metrics_when("no redelivery", |_| hook.count() > before + 1);
    refuse.store(false, Ordering::SeqCst);
    d.metrics_when("not all delivered", |m| {
        metric(m, "chargetail_delivered_total") == Some(CHARGES as f64)
    });
    d.stop();
    let mut bodies: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for h in hook.hits() {
        bodies
            .entry(h.id().to_string())
            .or_default()
            .push(h.body.to_vec());
    }
    assert_eq!(bodies.len(), CHARGES);
    let retried: Vec<_> = bodies.values().filter(|v| v.len() > 1).collect();
    assert!(!retried.is_empty());
    for v in bodies.values() {
        assert!(
            v.iter().all(|b| b == &v[0]),
            "a redelivery changed the bytes"
        );
        let e: serde_json::Value = serde_json::from_slice(&v[0]).unwrap();
        let want = if e["data"]["user"] == "noah.kim@harbourworks.com.au" {
            "unknown"
        } else {
            "ok"
        };
        assert_eq!(e["data"]["enrichment"], want, "{e}");
    }
}
