//! /healthz, /metrics and /status from a running daemon: the values move as
//! charges flow, and health turns 503 when the source disappears.

mod support;

use std::time::Duration;

use support::*;

/// A plain HTTP/1.0 GET: (status, body).
fn get(port: u16, path: &str) -> (u16, String) {
    let r = http_request(port, path, "");
    (r.status, r.body)
}

fn metric(text: &str, name: &str) -> f64 {
    support::metric(text, name).unwrap_or_else(|| panic!("no metric {name}"))
}

#[test]
fn health_metrics_and_status_follow_the_flow() {
    let dir = tempfile::tempdir().unwrap();
    let file = tx_file(dir.path(), 10);
    let (cfg, port) = http_config(dir.path());
    let mut d = Daemon::start(&cfg);
    assert_eq!(d.wait_for(10, Duration::from_secs(20)), 10);

    let (code, body) = get(port, "/healthz");
    assert_eq!(code, 200, "{body}");
    let (_, m) = get(port, "/metrics");
    assert_eq!(metric(&m, "chargetail_delivered_total"), 10.0);
    assert_eq!(metric(&m, "chargetail_charges_read_total"), 10.0);
    assert_eq!(metric(&m, "chargetail_outbox_backlog"), 0.0);
    assert_eq!(
        metric(&m, "chargetail_delivery_latency_seconds_count"),
        10.0
    );
    assert_eq!(metric(&m, "chargetail_file_lag_bytes"), 0.0);

    for n in 10..25 {
        append(&file, &tx_line(n));
    }
    append(&file, "garbage line without enough fields\n");
    assert_eq!(d.wait_for(25, Duration::from_secs(20)), 25);
    std::thread::sleep(Duration::from_millis(300));
    let (_, m) = get(port, "/metrics");
    assert_eq!(metric(&m, "chargetail_delivered_total"), 25.0);
    assert_eq!(metric(&m, "chargetail_parse_errors_total"), 1.0);

    let (code, body) = get(port, "/status");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["service_status"], "operational", "{v}");
    assert_eq!(v["job_stats"]["today"]["print"]["count"], 25, "{v}");
    assert_eq!(v["job_stats"]["since_start"]["print"]["count"], 25, "{v}");
    assert!(
        v["job_stats"]["since_start"]["print"]["amount"]["AUD"].is_string(),
        "{v}"
    );

    // The source disappears: unhealthy, with the reason.
    std::fs::remove_file(&file).unwrap();
    let mut last = (0, String::new());
    for _ in 0..50 {
        last = get(port, "/healthz");
        if last.0 == 503 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(last.0, 503, "{}", last.1);
    assert!(last.1.contains("source missing"), "{}", last.1);
    let (_, body) = get(port, "/status");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["service_status"], "major_outage");
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn backpressure_pauses_reading_at_the_bound_and_health_says_why() {
    let dir = tempfile::tempdir().unwrap();
    tx_file(dir.path(), 3000);
    let port = free_http_port();
    // A sink that cannot be reached: nothing listens on this port.
    let dead = free_http_port();
    let cfg = write_config(
        dir.path(),
        "tx.log",
        &format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\n\n[sink]\nkind = \"amqp\"\n\n[sink.amqp]\nurl = \"amqp://guest:guest@127.0.0.1:{dead}/%2f\"\nexchange = \"x\"\ntimeout_ms = 500\n"
        ),
    );
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "rotate_grace_ms = 300",
        "rotate_grace_ms = 300\nbacklog_limit = 500",
    );
    std::fs::write(&cfg, text).unwrap();
    let d = Daemon::start(&cfg);
    let mut status = serde_json::Value::Null;
    let mut health = (0, String::new());
    for _ in 0..100 {
        std::thread::sleep(Duration::from_millis(200));
        // Health first: the status read after it sees the outbox at least
        // as full as when health said "paused".
        health = get(port, "/healthz");
        let out = run_cli(&["status", "--config", cfg.to_str().unwrap(), "--json"]);
        status = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if health.1.contains("backlog over its bound") {
            break;
        }
    }
    assert_eq!(health.0, 503, "{}", health.1);
    assert!(health.1.contains("backlog over its bound"), "{}", health.1);
    let pending = status["outbox"]["pending"].as_u64().unwrap();
    // Reading stopped near the bound (one read batch past it at most); the
    // rest waits in the PaperCut file, not in memory or SQLite.
    assert!(
        (500..3000).contains(&pending),
        "pending {pending}: {status}"
    );
    assert!(
        status["files"][0]["lag_bytes"].as_u64().unwrap() > 0,
        "{status}"
    );
    let (_, m) = get(port, "/metrics");
    assert_eq!(metric(&m, "chargetail_reading_paused"), 1.0);
    assert_eq!(metric(&m, "chargetail_sink_connected"), 0.0);
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));

    // Delivery drains the backlog and reading resumes: stdout sink now.
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text = text[..text.find("[sink]").unwrap()].to_string();
    std::fs::write(&cfg, text).unwrap();
    let mut d = Daemon::start(&cfg);
    assert_eq!(d.wait_for(3000, Duration::from_secs(60)), 3000);
    let (code, lines) = d.stop();
    assert_eq!(code, Some(0));
    assert_eq!(
        tx_ids(&lines),
        (0..3000).map(|n| format!("tx-{n:06}")).collect::<Vec<_>>()
    );
}

/// Hold every WAL read slot of `db` the way SQLite's unix VFS locks them
/// (fcntl on bytes 123..128 of the -shm file): no connection of another
/// process can start a read until the returned file is closed.
fn hold_wal_readers(db: &std::path::Path) -> std::fs::File {
    use std::os::fd::AsRawFd;
    let shm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(db.with_extension("db-shm"))
        .unwrap();
    for _ in 0..500 {
        let lock = libc::flock {
            l_type: libc::F_WRLCK as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: 123,
            l_len: 5,
            l_pid: 0,
        };
        // SAFETY: a plain fcntl on an fd we own, with a valid flock.
        if unsafe { libc::fcntl(shm.as_raw_fd(), libc::F_SETLK, &lock) } == 0 {
            return shm;
        }
        // A read of the daemon's is under way: try again.
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("could not lock the WAL read slots");
}

#[test]
fn healthz_answers_while_status_waits_on_the_state_database() {
    let dir = tempfile::tempdir().unwrap();
    tx_file(dir.path(), 3);
    let (cfg, port) = http_config(dir.path());
    let mut d = Daemon::start(&cfg);
    assert_eq!(d.wait_for(3, Duration::from_secs(20)), 3);
    assert_eq!(get(port, "/status").0, 200);

    let held = hold_wal_readers(&dir.path().join("state/state.db"));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let status = {
        let done = done.clone();
        std::thread::spawn(move || {
            let r = get(port, "/status");
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            r
        })
    };
    // /status cannot finish while the read slots are held; /healthz must.
    let (code, body) = get(port, "/healthz");
    assert_eq!(code, 200, "{body}");
    assert!(
        !done.load(std::sync::atomic::Ordering::SeqCst),
        "/status answered while the database could not be read"
    );
    drop(held);
    let (code, body) = status.join().unwrap();
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["service_status"], "operational", "{v}");
    assert_eq!(v["job_stats"]["since_start"]["print"]["count"], 3, "{v}");
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
}
