//! `chargetail run` as a real process over real files with the stdout sink.

mod support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use support::*;

const T: Duration = Duration::from_secs(20);

#[test]
fn follows_appends_in_order_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let file = tx_file(dir.path(), 50);
    let cfg = write_config(dir.path(), "*.log", "");
    let mut d = Daemon::start(&cfg);
    assert_eq!(d.wait_for(50, T), 50);
    for n in 50..120 {
        append(&file, &tx_line(n));
    }
    assert_eq!(d.wait_for(120, T), 120);
    let (code, lines) = d.stop();
    assert_eq!(code, Some(0), "clean exit on SIGTERM");
    let expected: Vec<String> = (0..120).map(|n| format!("tx-{n:06}")).collect();
    assert_eq!(tx_ids(&lines), expected, "every charge once, in file order");
    // The event is the contract's CloudEvent.
    let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(v["specversion"], "1.0");
    assert_eq!(v["source"], "papercut/test");
    assert_eq!(v["type"], "papercut.charge");
    assert_eq!(v["data"]["amount"], "0.00", "-0.00 is billed 0.00");
    let v1: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(
        v1["data"]["amount"], "1.01",
        "a debit of -1.01 is billed 1.01"
    );
    assert_eq!(v["data"]["currency"], "AUD");
    assert_eq!(v["time"], "2026-11-20T09:00:00+11:00");
    assert_eq!(v["data"]["origin"]["line"], 2);
}

#[test]
fn partial_last_line_waits_for_its_end_even_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tx.log");
    append(&file, HEADER);
    append(&file, &tx_line(1));
    let full = tx_line(2);
    let (head, tail) = full.split_at(20);
    append(&file, head);
    let cfg = write_config(dir.path(), "tx.log", "");
    let mut d = Daemon::start(&cfg);
    assert_eq!(d.wait_for(1, T), 1);
    d.drain(Duration::from_millis(700));
    assert_eq!(d.seen.len(), 1, "the partial line must not be emitted");
    let (code, lines) = d.stop();
    assert_eq!(code, Some(0));
    append(&file, tail);
    let mut d = Daemon::start(&cfg);
    assert_eq!(d.wait_for(1, T), 1);
    d.drain(Duration::from_millis(500));
    let (_, lines2) = d.stop();
    assert_eq!(tx_ids(&lines), ["tx-000001"]);
    assert_eq!(
        tx_ids(&lines2),
        ["tx-000002"],
        "completed line emitted once, nothing repeated"
    );
}

/// `chargetail_deliver_store_reads_total` of a daemon on `port`.
fn store_reads(port: u16) -> f64 {
    let m = http_get(port, "/metrics");
    metric(&m, "chargetail_deliver_store_reads_total").expect("the store-reads series")
}

#[test]
fn new_charges_reach_delivery_in_memory_without_reading_the_outbox_back() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tx.log");
    append(&file, HEADER);
    let port = free_http_port();
    let cfg = write_config(
        dir.path(),
        "tx.log",
        &format!("\n[http]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let mut d = Daemon::start(&cfg);
    // The start reads the (empty) outbox once.
    let at_start = store_reads(port);
    let total = 600u64;
    for burst in 0..30 {
        let text: String = (burst * 20..burst * 20 + 20).map(tx_line).collect();
        append(&file, &text);
        std::thread::sleep(Duration::from_millis(15));
    }
    assert_eq!(d.wait_for(total as usize, T), total as usize);
    let after = store_reads(port);
    // Idle: nothing re-reads the outbox on a timer.
    std::thread::sleep(Duration::from_millis(1500));
    let idle = store_reads(port);
    let (code, lines) = d.stop();
    assert_eq!(code, Some(0));
    let expected: Vec<String> = (0..total).map(|n| format!("tx-{n:06}")).collect();
    assert_eq!(tx_ids(&lines), expected, "every charge once, in file order");
    assert!(at_start <= 1.0, "{at_start} reads at start");
    assert_eq!(
        after, at_start,
        "{total} charges in 30 commits delivered without reading the outbox"
    );
    assert_eq!(idle, after, "no reads while idle");
}

#[test]
fn an_overflowing_hand_off_falls_back_to_the_outbox_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tx.log");
    append(&file, HEADER);
    let port = free_http_port();
    // Room for 7 charges in memory, 5 per batch: most of a burst of
    // hundreds is read back from the outbox.
    let cfg = write_config(
        dir.path(),
        "tx.log",
        &format!("\n[delivery]\nqueue = 7\nbatch = 5\n\n[http]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let mut d = Daemon::start(&cfg);
    let total = 400u64;
    for burst in 0..4 {
        let text: String = (burst * 100..burst * 100 + 100).map(tx_line).collect();
        append(&file, &text);
    }
    assert_eq!(d.wait_for(total as usize, T), total as usize);
    let reads = store_reads(port);
    let (code, lines) = d.stop();
    assert_eq!(code, Some(0));
    let expected: Vec<String> = (0..total).map(|n| format!("tx-{n:06}")).collect();
    assert_eq!(tx_ids(&lines), expected, "every charge once, in file order");
    assert!(reads > 1.0, "the outbox was read back ({reads} reads)");
}

#[test]
fn kill9_at_random_moments_loses_nothing_and_repeats_only_same_ids() {
    kill9_rounds("");
}

#[test]
fn kill9_with_an_overflowing_hand_off_loses_nothing() {
    kill9_rounds("\n[delivery]\nqueue = 7\nbatch = 50\n");
}

/// Bursts written while the daemon runs, each ended by a kill -9 at a
/// different moment; then every charge is there, repeats only same ids.
fn kill9_rounds(extra: &str) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tx.log");
    append(&file, HEADER);
    let cfg = write_config(dir.path(), "tx.log", extra);
    let total = 3000u64;
    let mut all: Vec<String> = Vec::new();
    let mut written = 0u64;
    for round in 0..12u64 {
        let d = Daemon::start(&cfg);
        // Write a burst while the daemon runs, then kill it mid-stream.
        let burst = total / 12;
        for n in written..written + burst {
            append(&file, &tx_line(n));
        }
        written += burst;
        std::thread::sleep(Duration::from_millis(30 + (round * 37) % 150));
        all.extend(d.kill9());
    }
    let mut d = Daemon::start(&cfg);
    let want_new: HashSet<String> = (0..total).map(|n| format!("tx-{n:06}")).collect();
    let got_so_far: HashSet<String> = tx_ids(&all).into_iter().collect();
    let missing = want_new.difference(&got_so_far).count();
    d.wait_for(missing, T);
    d.drain(Duration::from_millis(500));
    let (code, rest) = d.stop();
    assert_eq!(code, Some(0));
    all.extend(rest);
    let txs = tx_ids(&all);
    let got: HashSet<String> = txs.iter().cloned().collect();
    assert_eq!(got, want_new, "every charge delivered after 12 kill -9s");
    // A repeat is always the same charge id for the same transaction.
    let mut by_tx: HashMap<String, HashSet<String>> = HashMap::new();
    for (tx, id) in txs.iter().zip(ids(&all)) {
        by_tx.entry(tx.clone()).or_default().insert(id);
    }
    assert!(by_tx.values().all(|s| s.len() == 1));
    eprintln!(
        "kill -9 x12: {} lines for {} charges ({} redelivered)",
        all.len(),
        total,
        all.len() as u64 - total
    );
}

#[test]
fn a_second_daemon_on_the_same_state_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    append(&dir.path().join("tx.log"), HEADER);
    let cfg = write_config(dir.path(), "tx.log", "");
    let first = Daemon::start(&cfg);
    std::thread::sleep(Duration::from_millis(500));
    let out = std::process::Command::new(bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already using the state database"), "{err}");
    let (code, _) = first.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn a_damaged_state_database_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    append(&dir.path().join("tx.log"), HEADER);
    let cfg = write_config(dir.path(), "tx.log", "");
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    std::fs::write(dir.path().join("state/state.db"), b"garbage ".repeat(1000)).unwrap();
    let out = run_cli(&["run", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("damaged") && err.contains("refusing to start"),
        "{err}"
    );
}

#[test]
fn bad_config_exits_2_naming_the_place() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "tx.log", "[sink]\nkind = \"carrier-pigeon\"\n");
    let out = run_cli(&["run", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config.toml") && err.contains("carrier-pigeon"),
        "{err}"
    );
    let out = run_cli(&["check", "--config", "/nonexistent/config.toml"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/config.toml"));
}

#[test]
fn bad_lines_become_dead_letters_and_reading_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tx.log");
    append(&file, HEADER);
    append(&file, &tx_line(1));
    append(
        &file,
        "2026-11-20 09:00:00\ttx-bad\talice\tAcme\tabc\t1\tPRINT\t1\td\tx\n",
    );
    append(&file, &tx_line(2));
    let cfg = write_config(dir.path(), "tx.log", "");
    let mut d = Daemon::start(&cfg);
    assert_eq!(d.wait_for(2, T), 2);
    let (_, lines) = d.stop();
    assert_eq!(tx_ids(&lines), ["tx-000001", "tx-000002"]);
    let dead = dead_letters(&cfg);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["line"], 3);
    assert_eq!(dead[0]["kind"], "line");
    assert!(
        dead[0]["reason"].as_str().unwrap().contains("amount"),
        "{}",
        dead[0]["reason"]
    );
    assert!(dead[0]["file"].as_str().unwrap().ends_with("tx.log"));
    // status sees it too, and the position is at the end of the file.
    let out = run_cli(&["status", "--config", cfg.to_str().unwrap(), "--json"]);
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["outbox"]["bad_lines"], 1);
    assert_eq!(s["outbox"]["pending"], 0);
    assert_eq!(s["files"][0]["lag_bytes"], 0);
}

#[test]
fn config_values_that_would_break_the_daemon_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for (extra, place) in [
        ("[log]\nlevel = \"bogus==\"\n", "[log] level"),
        ("[http]\nlisten = \"not an address\"\n", "[http] listen"),
        (
            "[sink]\nkind = \"webhook\"\n\n[sink.webhook]\nurl = \"http://127.0.0.1:9/\"\nsecret_file = \"/nonexistent/secret\"\n",
            "/nonexistent/secret",
        ),
    ] {
        let cfg = write_config(dir.path(), "tx.log", extra);
        let out = run_cli(&["run", "--config", cfg.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{place}: {err}");
        assert!(err.contains(place), "{place}: {err}");
    }
    let cfg = write_config(dir.path(), "tx.log", "");
    let text = std::fs::read_to_string(&cfg).unwrap();
    for (key, bad) in [
        ("backlog_limit", "[source]\n"),
        ("idle_after_secs", "[source]\n"),
        ("idle_poll_secs", "[source]\n"),
        ("retention_days", "[state]\n"),
    ] {
        let t = text.replacen(bad, &format!("{bad}{key} = 0\n"), 1);
        std::fs::write(&cfg, t).unwrap();
        let out = run_cli(&["run", "--config", cfg.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{key}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(key));
    }
}
