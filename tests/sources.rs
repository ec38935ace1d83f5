//! Several `[[source]]` tables in one daemon: each source its own files,
//! positions, zone and currency, and its own order, through one outbox and
//! one sink (the stdout sink here).

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::*;

const T: Duration = Duration::from_secs(30);

/// A config with one `[[source]]` per (name, directory, zone, currency).
fn sources_config(dir: &Path, sources: &[(&str, &Path, &str, &str)]) -> PathBuf {
    let mut text = String::new();
    for (name, d, tz, cur) in sources {
        text.push_str(&format!(
            "[[source]]\nname = \"{name}\"\npath = \"{}\"\ntimezone = \"{tz}\"\ncurrency = \"{cur}\"\n\
             poll_interval_ms = 200\nrotate_grace_ms = 300\n\n",
            d.join("*.log").display()
        ));
    }
    text.push_str(&format!(
        "[state]\npath = \"{}\"\n",
        dir.join("state/state.db").display()
    ));
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// Two sources, "site-a" (AUD, in zone `tz_a`) and "site-b" (EUR, `tz_b`),
/// each following its own directory: (the directory, site-a's, site-b's,
/// the config).
fn two_sites(tz_a: &str, tz_b: &str) -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("site-a"), dir.path().join("site-b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let cfg = sources_config(
        dir.path(),
        &[("site-a", &a, tz_a, "AUD"), ("site-b", &b, tz_b, "EUR")],
    );
    (dir, a, b, cfg)
}

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap()
}

/// (source, transaction id) of each charge line, in the order received.
fn by_source(lines: &[String]) -> Vec<(String, String)> {
    lines
        .iter()
        .map(|l| json(l))
        .filter(|v| v["type"] == "papercut.charge")
        .map(|v| {
            (
                v["source"].as_str().unwrap_or("").to_string(),
                v["data"]["transaction_id"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect()
}

fn txs_of(seen: &[(String, String)], source: &str) -> Vec<String> {
    seen.iter()
        .filter(|(s, _)| s == source)
        .map(|(_, t)| t.clone())
        .collect()
}

fn expected(range: std::ops::Range<u64>) -> Vec<String> {
    range.map(|n| format!("tx-{n:06}")).collect()
}

#[test]
fn two_sources_each_in_order_with_own_zone_currency_and_positions() {
    let (_dir, a, b, cfg) = two_sites("Australia/Melbourne", "Europe/Madrid");
    // The same transaction ids in both files: the source name keeps the
    // charge ids apart.
    let (fa, fb) = (a.join("tx.log"), b.join("tx.log"));
    append(&fa, HEADER);
    append(&fb, HEADER);
    for n in 0..300 {
        append(&fa, &tx_line(n));
        if n < 200 {
            append(&fb, &tx_line(n));
        }
    }
    let mut d = Daemon::start(&cfg);
    assert_eq!(d.wait_for(500, T), 500);
    for n in 300..400 {
        append(&fa, &tx_line(n));
        append(&fb, &tx_line(n - 100));
    }
    assert_eq!(d.wait_for(700, T), 700);
    let (code, lines) = d.stop();
    assert_eq!(code, Some(0));
    let seen = by_source(&lines);
    assert_eq!(txs_of(&seen, "papercut/site-a"), expected(0..400));
    assert_eq!(txs_of(&seen, "papercut/site-b"), expected(0..300));
    let ids: std::collections::HashSet<String> = ids(&lines).into_iter().collect();
    assert_eq!(
        ids.len(),
        700,
        "one id per charge, none shared by the sources"
    );
    // Each source's own zone and currency.
    let first = |src: &str| {
        lines
            .iter()
            .map(|l| json(l))
            .find(|v| v["source"] == src)
            .unwrap()
    };
    let (va, vb) = (first("papercut/site-a"), first("papercut/site-b"));
    assert_eq!(va["time"], "2026-11-20T09:00:00+11:00");
    assert_eq!(va["data"]["currency"], "AUD");
    assert_eq!(vb["time"], "2026-11-20T09:00:00+01:00");
    assert_eq!(vb["data"]["currency"], "EUR");

    // Positions per source: status lists each source's own file.
    let out = run_cli(&["status", "--config", cfg.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{out:?}");
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let srcs = st["sources"].as_array().unwrap();
    assert_eq!(srcs.len(), 2, "{st}");
    for (s, file, size) in [(&srcs[0], &fa, &fa), (&srcs[1], &fb, &fb)] {
        let files = s["files"].as_array().unwrap();
        assert_eq!(files.len(), 1, "{s}");
        assert_eq!(files[0]["path"], file.to_str().unwrap());
        assert_eq!(
            files[0]["offset"].as_u64().unwrap(),
            std::fs::metadata(size).unwrap().len()
        );
        assert_eq!(s["lag_bytes"], 0);
    }

    // A restart resumes each source at its own position: only the new
    // lines, of both sources.
    append(&fb, &tx_line(300));
    append(&fa, &tx_line(400));
    let mut d = Daemon::start(&cfg);
    assert_eq!(d.wait_for(2, T), 2);
    d.drain(Duration::from_millis(700));
    let (code, lines) = d.stop();
    assert_eq!(code, Some(0));
    let mut seen = by_source(&lines);
    seen.sort();
    assert_eq!(
        seen,
        [
            ("papercut/site-a".to_string(), "tx-000400".to_string()),
            ("papercut/site-b".to_string(), "tx-000300".to_string())
        ]
    );
}

#[test]
fn a_source_added_later_starts_from_its_files_and_the_first_keeps_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let file = tx_file(dir.path(), 50);
    // The single-[source] config of before.
    let cfg = write_config(dir.path(), "*.log", "");
    let mut d = Daemon::start(&cfg);
    assert_eq!(d.wait_for(50, T), 50);
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));

    // Now the same source as [[source]] beside a new one.
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    append(&other.join("tx.log"), HEADER);
    for n in 0..20 {
        append(&other.join("tx.log"), &tx_line(n));
    }
    append(&file, &tx_line(50));
    let text = std::fs::read_to_string(&cfg).unwrap().replacen(
        "[source]",
        &format!(
            "[[source]]\nname = \"other\"\npath = \"{}\"\n\n[[source]]",
            other.join("*.log").display()
        ),
        1,
    );
    std::fs::write(&cfg, text).unwrap();
    let mut d = Daemon::start(&cfg);
    assert_eq!(d.wait_for(21, T), 21);
    d.drain(Duration::from_millis(700));
    let (code, lines) = d.stop();
    assert_eq!(code, Some(0));
    let seen = by_source(&lines);
    assert_eq!(
        txs_of(&seen, "papercut/test"),
        ["tx-000050"],
        "no line read twice"
    );
    assert_eq!(txs_of(&seen, "papercut/other"), expected(0..20));
}

#[test]
fn overlapping_sources_are_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = sources_config(
        dir.path(),
        &[
            ("a", dir.path(), "UTC", "AUD"),
            ("b", dir.path(), "UTC", "AUD"),
        ],
    );
    let out = run_cli(&["run", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config.toml") && err.contains("#1 (\"a\") and #2 (\"b\")"),
        "{err}"
    );
}

#[test]
fn replay_takes_the_source_whose_path_matches_or_the_one_named() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, elsewhere) = (
        dir.path().join("site-a"),
        dir.path().join("site-b"),
        dir.path().join("backup"),
    );
    for d in [&a, &b, &elsewhere] {
        std::fs::create_dir_all(d).unwrap();
    }
    let cfg = sources_config(
        dir.path(),
        &[("site-a", &a, "UTC", "AUD"), ("site-b", &b, "UTC", "EUR")],
    );
    let c = cfg.to_str().unwrap();
    let write = |path: &Path, from: u64, to: u64| {
        append(path, HEADER);
        for n in from..to {
            append(path, &tx_line(n));
        }
    };
    let in_b = b.join("old.log");
    write(&in_b, 0, 5);
    let old = elsewhere.join("2026-10.log");
    write(&old, 100, 103);
    let replay = |args: &[&str]| {
        let mut all = vec!["replay", "--config", c];
        all.extend_from_slice(args);
        run_cli(&all)
    };
    let stdout = |out: &std::process::Output| -> Vec<String> {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect()
    };
    // A file under site-b's path: site-b's, unasked.
    let out = replay(&[in_b.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let seen = by_source(&stdout(&out));
    assert_eq!(txs_of(&seen, "papercut/site-b"), expected(0..5), "{seen:?}");
    assert_eq!(seen.len(), 5);
    // A file no source's path matches: which one is not guessed.
    let out = replay(&[old.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--source") && err.contains("site-a"), "{err}");
    assert!(out.stdout.is_empty());
    // Named: read as site-a's, in its currency.
    let out = replay(&["--source", "site-a", old.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let lines = stdout(&out);
    assert_eq!(
        txs_of(&by_source(&lines), "papercut/site-a"),
        expected(100..103)
    );
    assert!(lines.iter().all(|l| json(l)["data"]["currency"] == "AUD"));
    let out = replay(&["--source", "nope", old.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// The value of the series `name{source="SRC"...}`.
fn series(metrics: &str, name: &str, source: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{source=\"{source}\"")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn status_metrics_page_and_health_per_source() {
    let (_dir, a, b, cfg) = two_sites("UTC", "UTC");
    let port = free_http_port();
    append(&cfg, &format!("\n[http]\nlisten = \"127.0.0.1:{port}\"\n"));
    let (fa, fb) = (a.join("tx.log"), b.join("tx.log"));
    append(&fa, HEADER);
    for n in 0..30 {
        append(&fa, &tx_line(n));
    }
    append(&fb, HEADER);
    for n in 0..12 {
        append(&fb, &tx_line(n));
    }
    append(&fb, "not a line of this profile\n");
    let mut d = Daemon::start(&cfg);
    assert_eq!(d.wait_for(42, T), 42);

    // Delivery is counted once recorded (maybe a round after the output).
    let until = std::time::Instant::now() + T;
    let mut m = http_get(port, "/metrics");
    while series(&m, "chargetail_delivered_total", "site-b") != Some(12.0)
        && std::time::Instant::now() < until
    {
        std::thread::sleep(Duration::from_millis(50));
        m = http_get(port, "/metrics");
    }
    // Delivery-side series by each charge's own source.
    for (name, src, want) in [
        ("chargetail_delivered_total", "site-a", 30.0),
        ("chargetail_delivered_total", "site-b", 12.0),
        ("chargetail_delivery_latency_seconds_count", "site-a", 30.0),
        ("chargetail_delivery_latency_seconds_count", "site-b", 12.0),
        ("chargetail_delivery_failures_total", "site-b", 0.0),
        ("chargetail_sink_connected", "site-a", 1.0),
        ("chargetail_sink_connected", "site-b", 1.0),
        // Reading-side series, by the source that read them.
        ("chargetail_charges_read_total", "site-a", 30.0),
        ("chargetail_charges_read_total", "site-b", 12.0),
        ("chargetail_parse_errors_total", "site-a", 0.0),
        ("chargetail_parse_errors_total", "site-b", 1.0),
        ("chargetail_file_lag_bytes", "site-a", 0.0),
    ] {
        assert_eq!(series(&m, name, src), Some(want), "{name} {src}: {m}");
    }
    assert!(
        m.contains("chargetail_dead_lettered_total{source=\"site-b\",reason=\"unparsable\"} 1"),
        "{m}"
    );
    // No series carries a made-up joined name: what belongs to the daemon
    // as a whole (one state database, one outbox, one source loop, one
    // deliverer) carries no source label.
    assert!(!m.contains("site-a+site-b"), "{m}");
    for name in [
        "chargetail_state_readable",
        "chargetail_outbox_backlog",
        "chargetail_outbox_oldest_pending_age_seconds",
        "chargetail_source_wakeups_total",
        "chargetail_deliver_store_reads_total",
    ] {
        assert!(
            m.lines().any(|l| l.starts_with(&format!("{name} "))),
            "{name} without labels: {m}"
        );
    }
    assert_eq!(
        series(&m, "chargetail_file_position_bytes", "site-b"),
        Some(std::fs::metadata(&fb).unwrap().len() as f64),
        "{m}"
    );
    assert!(
        m.contains(&format!(
            "chargetail_file_position_bytes{{source=\"site-a\",file=\"{}\"}}",
            fa.display()
        )),
        "{m}"
    );

    let body = |raw: String| raw.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    let st: serde_json::Value = serde_json::from_str(&body(http_get(port, "/status"))).unwrap();
    let names: Vec<&str> = st["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["site-a", "site-b"], "{st}");
    assert_eq!(st["sources"][1]["files"][0]["path"], fb.to_str().unwrap());
    assert_eq!(st["sources"][1]["lag_bytes"], 0);
    assert_eq!(st["sources"][0]["counts"]["delivered"], 30, "{st}");
    assert_eq!(st["sources"][1]["counts"]["delivered"], 12, "{st}");
    assert_eq!(st["sources"][1]["counts"]["dead_lettered"], 1, "{st}");

    let page = http_get(port, "/");
    for needle in [
        "site-a",
        "site-b",
        fa.to_str().unwrap(),
        fb.to_str().unwrap(),
    ] {
        assert!(page.contains(needle), "page lacks {needle}");
    }

    // One site's files gone: /healthz names that source; the other reads on.
    std::fs::remove_file(&fb).unwrap();
    let mut health = String::new();
    for _ in 0..50 {
        health = http_get(port, "/healthz");
        if health.contains("site-b") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(health.contains("503"), "{health}");
    assert!(health.contains("source \\\"site-b\\\" missing"), "{health}");
    assert!(!health.contains("site-a"), "{health}");
    append(&fa, &tx_line(30));
    assert_eq!(d.wait_for(43, T), 43);
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn kill9_with_two_sources_loses_nothing_and_keeps_each_order() {
    let (_dir, a, b, cfg) = two_sites("UTC", "UTC");
    let (fa, fb) = (a.join("tx.log"), b.join("tx.log"));
    append(&fa, HEADER);
    append(&fb, HEADER);
    let (rounds, per) = (8u64, 250u64);
    let mut all: Vec<String> = Vec::new();
    for round in 0..rounds {
        let d = Daemon::start(&cfg);
        for n in round * per..(round + 1) * per {
            append(&fa, &tx_line(n));
            if n % 2 == 0 {
                append(&fb, &tx_line(n));
            }
        }
        std::thread::sleep(Duration::from_millis(20 + (round * 41) % 120));
        all.extend(d.kill9());
    }
    let total_a = rounds * per;
    let total_b = total_a / 2;
    let mut d = Daemon::start(&cfg);
    let got: std::collections::HashSet<(String, String)> = by_source(&all).into_iter().collect();
    let missing = (total_a + total_b) as usize - got.len();
    d.wait_for(missing, T);
    d.drain(Duration::from_millis(500));
    let (code, rest) = d.stop();
    assert_eq!(code, Some(0));
    all.extend(rest);
    let seen = by_source(&all);
    // Every charge of each source; a repeat is only ever a redelivery of
    // the same id; and, first deliveries taken, each source's file order.
    let first = |src: &str| {
        let mut out: Vec<String> = Vec::new();
        let mut have = std::collections::HashSet::new();
        for t in txs_of(&seen, src) {
            if have.insert(t.clone()) {
                out.push(t);
            }
        }
        out
    };
    assert_eq!(first("papercut/site-a"), expected(0..total_a));
    let want_b: Vec<String> = (0..total_a)
        .filter(|n| n % 2 == 0)
        .map(|n| format!("tx-{n:06}"))
        .collect();
    assert_eq!(first("papercut/site-b"), want_b);
    let mut id_of: std::collections::HashMap<(String, String), String> = Default::default();
    for (key, id) in seen.iter().zip(ids(&all)) {
        let prev = id_of.entry(key.clone()).or_insert_with(|| id.clone());
        assert_eq!(*prev, id, "one id per charge: {key:?}");
    }
    eprintln!(
        "kill -9 x{rounds}, two sources: {} lines for {} charges",
        all.len(),
        total_a + total_b
    );
}

#[test]
fn parse_and_inspect_take_the_named_source() {
    let (dir, _a, _b, cfg) = two_sites("UTC", "Europe/Madrid");
    let file = dir.path().join("sample.log");
    append(&file, HEADER);
    append(&file, &tx_line(3));
    let (c, f) = (cfg.to_str().unwrap(), file.to_str().unwrap());
    for cmd in ["parse", "inspect"] {
        let out = run_cli(&[cmd, "--config", c, f]);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--source"), "{cmd}: {err}");
    }
    let out = run_cli(&["parse", "--config", c, "--source", "site-b", f]);
    assert!(out.status.success(), "{out:?}");
    let v = json(String::from_utf8_lossy(&out.stdout).lines().next().unwrap());
    assert_eq!(v["source"], "papercut/site-b");
    assert_eq!(v["data"]["currency"], "EUR");
    assert_eq!(v["time"], "2026-11-20T09:00:03+01:00");
    let out = run_cli(&["inspect", "--config", c, "--source", "site-a", f]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn a_renamed_source_resumes_its_files_instead_of_billing_them_again() {
    let dir = tempfile::tempdir().unwrap();
    let file = tx_file(dir.path(), 20);
    let cfg = write_config(dir.path(), "*.log", "");
    let mut d = Daemon::start(&cfg);
    assert_eq!(d.wait_for(20, T), 20);
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("name = \"test\"", "name = \"renamed\"");
    std::fs::write(&cfg, text).unwrap();
    append(&file, &tx_line(20));
    let mut d = Daemon::start(&cfg);
    assert_eq!(d.wait_for(1, T), 1);
    d.drain(Duration::from_millis(700));
    let (code, lines) = d.stop();
    assert_eq!(code, Some(0));
    assert_eq!(
        by_source(&lines),
        [("papercut/renamed".to_string(), "tx-000020".to_string())],
        "the old lines are not read again under the new name"
    );
    let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap();
    assert!(
        log.contains("no longer names matches this source's path"),
        "{log}"
    );
}

#[test]
fn amqp_routing_key_names_each_message_s_own_source() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ex = unique("ct-src-x");
    let (qa, qb) = (unique("ct-src-a"), unique("ct-src-b"));
    rt.block_on(declare(
        &shared_url(),
        &ex,
        Some((&qa, false, "charge.site-a")),
    ));
    rt.block_on(declare(
        &shared_url(),
        &ex,
        Some((&qb, false, "charge.site-b")),
    ));
    let (_dir, a, b, cfg) = two_sites("UTC", "UTC");
    append(
        &cfg,
        &format!(
            "\n[sink]\nkind = \"amqp\"\n\n[sink.amqp]\nurl = \"{}\"\nexchange = \"{ex}\"\n\
             routing_key = \"charge.{{source}}\"\n",
            shared_url()
        ),
    );
    for (d, n) in [(&a, 30), (&b, 20)] {
        append(&d.join("tx.log"), HEADER);
        for i in 0..n {
            append(&d.join("tx.log"), &tx_line(i));
        }
    }
    let d = Daemon::start(&cfg);
    let deadline = std::time::Instant::now() + T;
    while rt.block_on(message_count(&shared_url(), &qa)) < 30
        || rt.block_on(message_count(&shared_url(), &qb)) < 20
    {
        assert!(std::time::Instant::now() < deadline, "not all routed");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
    for (q, src, n) in [(&qa, "site-a", 30), (&qb, "site-b", 20)] {
        let got = rt.block_on(drain(&shared_url(), q));
        assert_eq!(got.len(), n, "{q}");
        for m in &got {
            assert_eq!(m.routing_key.as_str(), format!("charge.{src}"));
            let v: serde_json::Value = serde_json::from_slice(&m.data).unwrap();
            assert_eq!(v["source"], format!("papercut/{src}"));
        }
    }
    rt.block_on(cleanup(&shared_url(), &ex, Some(&qa)));
    rt.block_on(cleanup(&shared_url(), &ex, Some(&qb)));
}
