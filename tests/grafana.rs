//! packaging/grafana/chargetail.json queries only metrics (and labels) a
//! running daemon exports on /metrics.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use support::*;

/// Every `expr` and template query in the dashboard.
fn queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => queries(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| queries(v, out)),
        _ => {}
    }
}

fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("chargetail_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        names.insert(text[start..end].to_string());
        i = end;
    }
    names
}

#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/grafana/chargetail.json"
    ))
    .unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut qs = Vec::new();
    queries(&dash, &mut qs);
    assert!(qs.len() >= 10, "{qs:?}");
    let wanted: BTreeSet<String> = qs.iter().flat_map(|q| metric_names(q)).collect();
    // What the issue asks the dashboard to show.
    for m in [
        "chargetail_file_lag_bytes",
        "chargetail_outbox_oldest_pending_age_seconds",
        "chargetail_delivered_total",
        "chargetail_delivery_latency_seconds_bucket",
        "chargetail_dead_lettered_total",
        "chargetail_sink_connected",
    ] {
        assert!(wanted.contains(m), "dashboard does not show {m}");
    }

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tx.log");
    append(&file, HEADER);
    append(&file, &tx_line(1));
    let (cfg, port) = http_config(dir.path());
    let mut d = Daemon::start(&cfg);
    assert_eq!(d.wait_for(1, Duration::from_secs(30)), 1);
    let metrics = http_get(port, "/metrics");
    // Series names as exported: each sample line's name, and whether it
    // carries the `source` label (a source's series) or none at all (the
    // daemon's own: backlog, state, billing).
    let (mut exported, mut daemon_wide) = (BTreeSet::new(), BTreeSet::new());
    for l in metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name_end = l.find(['{', ' ']).unwrap_or(l.len());
        let name = &l[..name_end];
        if name.starts_with("chargetail_") {
            if !l.contains("source=\"test\"") {
                assert!(
                    !l.contains("source="),
                    "a source label not the source's: {l}"
                );
                daemon_wide.insert(name.to_string());
            }
            exported.insert(name.to_string());
        }
    }
    assert!(
        daemon_wide.contains("chargetail_outbox_backlog"),
        "{metrics}"
    );
    let missing: Vec<_> = wanted.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "queried but not exported: {missing:?}\n{metrics}"
    );
    // A panel filtering a daemon-wide series by source would show nothing.
    for q in &qs {
        for m in metric_names(q).intersection(&daemon_wide) {
            assert!(
                !q.contains(&format!("{m}{{source")),
                "the dashboard filters {m} (no source label) by source: {q}"
            );
        }
    }
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
}
