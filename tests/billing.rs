//! Billing: account mapping (`data.billing`), its reload (on change and on
//! SIGHUP), held charges, daily statements and their digest. Real files,
//! real processes, a real state database (the rig: tests/billing_support).
//! `reconcile`: tests/reconcile.rs.

mod billing_support;
mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use billing_support::*;
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use support::{free_http_port, http_get, metric};

#[test]
fn unmapped_charges_are_held_until_a_mapping_names_them() {
    let raw = raw_lines();
    let port = free_http_port();
    let (dir, cfg) = setup(
        "papercut,customer_id\nAcme Design,cus_acme\n",
        &format!("[sink]\nkind = \"stdout\"\n\n[http]\nlisten = \"127.0.0.1:{port}\""),
        "unmapped = \"hold\"",
    );
    let acme = raw.iter().filter(|r| r.account == "Acme Design").count();
    let mut run = Run::start(dir.path(), &cfg);
    run.wait_until(Duration::from_secs(30), |s| charges(s).len() >= acme);
    std::thread::sleep(Duration::from_millis(800));
    run.wait_until(Duration::from_secs(1), |_| true);
    assert_eq!(
        charges(&run.seen).len(),
        acme,
        "only the mapped account is sent"
    );
    assert!(charges(&run.seen)
        .iter()
        .all(|e| e["data"]["account"] == "Acme Design"
            && e["data"]["billing"]["customer_id"] == "cus_acme"
            && e["data"]["billing"]["team_id"].is_null()));

    // Held: counted by status, listed by `held list`, and in reconcile.
    let c = cfg.to_str().unwrap();
    let (_, status) = cli(dir.path(), &["status", "--config", c, "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["held"], (raw.len() - acme) as u64);
    let (code, list) = cli(dir.path(), &["held", "list", "--config", c, "--json"]);
    assert_eq!(code, 0);
    let list: Vec<serde_json::Value> = serde_json::from_str(&list).unwrap();
    assert_eq!(list.len(), raw.len() - acme);
    assert!(list.iter().all(|h| h["account"] != "Acme Design"));
    let (code, rep) = reconcile(dir.path(), &cfg, &[]);
    assert_eq!(code, 1);
    assert_eq!(rep["totals"]["held"], (raw.len() - acme) as u64);
    // ...and by /metrics (the billing step is the daemon's, shared by every
    // source: no source label).
    let metrics = http_get(port, "/metrics");
    assert!(
        metrics.contains(&format!("\nchargetail_billing_held {}\n", raw.len() - acme)),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "chargetail_billing_released_total"),
        Some(0.0)
    );

    // A broken mapping (a duplicate) is refused, naming file and line; the
    // one in force stays and nothing is released or lost.
    std::fs::write(
        dir.path().join("accounts.csv"),
        "papercut,customer_id\nAcme Design,cus_acme\nKoala Labs,cus_koala\nkoala labs,cus_other\n",
    )
    .unwrap();
    run.signal("-HUP");
    std::thread::sleep(Duration::from_millis(1500));
    run.wait_until(Duration::from_millis(10), |_| true);
    assert_eq!(charges(&run.seen).len(), acme);
    let log = std::fs::read_to_string(&run.log).unwrap();
    assert!(
        log.contains("accounts.csv, line 4") && log.contains("mapped twice"),
        "{log}"
    );

    // Everyone but noah mapped: released at once (the file changed), each
    // with its customer, each sent once.
    std::fs::write(
        dir.path().join("accounts.csv"),
        FULL_MAPPING.replace("noah.kim@harbourworks.com.au,cus_noah,\n", ""),
    )
    .unwrap();
    let noah = raw
        .iter()
        .filter(|r| r.account == "noah.kim@harbourworks.com.au")
        .count();
    assert!(noah > 0);
    run.wait_until(Duration::from_secs(20), |s| {
        charges(s).len() >= raw.len() - noah
    });
    let sent = charges(&run.seen);
    let ids: BTreeSet<&str> = sent.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), sent.len(), "no charge sent twice");
    for e in &sent {
        assert_eq!(
            e["data"]["billing"]["customer_id"].as_str(),
            customer_of(e["data"]["account"].as_str().unwrap()),
            "{e}"
        );
    }
    let (_, status) = cli(dir.path(), &["status", "--config", c, "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["held"], noah as u64);
    let metrics = http_get(port, "/metrics");
    assert_eq!(
        metric(&metrics, "chargetail_billing_held"),
        Some(noah as f64),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "chargetail_billing_released_total"),
        Some((raw.len() - acme - noah) as f64),
        "{metrics}"
    );
    assert_eq!(run.stop(), Some(0));

    // After a restart noah's charges are still held, and a mapping read at
    // start releases them.
    std::fs::write(dir.path().join("accounts.csv"), FULL_MAPPING).unwrap();
    let mut run = Run::start(dir.path(), &cfg);
    run.wait_until(Duration::from_secs(20), |s| charges(s).len() >= noah);
    assert!(charges(&run.seen)
        .iter()
        .all(|e| e["data"]["billing"]["customer_id"] == "cus_noah"));
    assert_eq!(run.stop(), Some(0));
    let (code, rep) = reconcile(dir.path(), &cfg, &[]);
    assert_eq!(code, 0, "{rep}");
    assert_eq!(rep["totals"]["delivered"], raw.len() as u64);
}

fn digest(ids: &[&str]) -> String {
    let mut v = ids.to_vec();
    v.sort();
    let mut h = Sha256::new();
    for id in v {
        h.update(id.as_bytes());
        h.update(b"\n");
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

#[test]
fn statements_digest_the_charge_ids_received_per_account_and_day() {
    let raw = raw_lines();
    let (dir, cfg) = setup(
        FULL_MAPPING,
        "[sink]\nkind = \"stdout\"",
        "statements = true\nstatement_grace_secs = 0",
    );
    let pairs: BTreeSet<(String, String)> = raw
        .iter()
        .map(|r| (r.account.clone(), r.day.clone()))
        .collect();
    let mut run = Run::start(dir.path(), &cfg);
    run.wait_until(Duration::from_secs(40), |s| {
        charges(s).len() >= raw.len()
            && s.iter()
                .filter(|e| e["type"] == "papercut.statement")
                .count()
                >= pairs.len()
    });
    assert_eq!(run.stop(), Some(0));
    let statements: Vec<&serde_json::Value> = run
        .seen
        .iter()
        .filter(|e| e["type"] == "papercut.statement")
        .collect();
    assert_eq!(statements.len(), pairs.len());
    let received = charges(&run.seen);
    for s in &statements {
        let d = &s["data"];
        let (account, day) = (d["account"].as_str().unwrap(), d["day"].as_str().unwrap());
        let mine: Vec<&serde_json::Value> = received
            .iter()
            .copied()
            .filter(|e| {
                e["data"]["account"] == account && e["time"].as_str().unwrap()[..10] == *day
            })
            .collect();
        let ids: Vec<&str> = mine.iter().map(|e| e["id"].as_str().unwrap()).collect();
        assert_eq!(d["charge_ids_digest"], digest(&ids), "{s}");
        assert_eq!(d["count"], ids.len() as u64);
        let sum: Decimal = raw
            .iter()
            .filter(|r| r.account == account && r.day == day)
            .map(|r| r.billed)
            .sum();
        assert_eq!(d["totals"][0]["amount"], cents(sum), "{s}");
        assert_eq!(d["totals"][0]["currency"], "AUD");
        assert_eq!(s["subject"], account);
        assert!(s["id"].as_str().unwrap().starts_with("stm_"));
    }
    // The DST day is 23 hours long.
    let dst = statements
        .iter()
        .find(|s| s["data"]["day"] == "2026-10-04")
        .unwrap();
    assert_eq!(dst["data"]["from"], "2026-10-04T00:00:00+10:00");
    assert_eq!(dst["data"]["to"], "2026-10-05T00:00:00+11:00");
    // A restart queues none again.
    let mut run = Run::start(dir.path(), &cfg);
    std::thread::sleep(Duration::from_secs(2));
    run.wait_until(Duration::from_millis(10), |_| true);
    assert!(run.seen.is_empty(), "{:?}", run.seen);
    assert_eq!(run.stop(), Some(0));
}

/// SIGHUP re-reads the mapping even when the file looks unchanged (same
/// size, inode and mtime, so the once-a-second look cannot see it): the
/// daemon is stopped (SIGSTOP) while the file is rewritten in place and its
/// mtime put back.
#[test]
fn sighup_reloads_a_mapping_the_file_watch_cannot_see() {
    use std::io::{Seek, Write};
    let raw = raw_lines();
    let (dir, cfg) = setup(
        "papercut,customer_id\nAcme Design,cus_acme\n",
        "[sink]\nkind = \"stdout\"",
        "unmapped = \"hold\"",
    );
    let acme = raw.iter().filter(|r| r.account == "Acme Design").count();
    let koala = raw.iter().filter(|r| r.account == "Koala Labs").count();
    let mut run = Run::start(dir.path(), &cfg);
    run.wait_until(Duration::from_secs(30), |s| charges(s).len() >= acme);
    let map = dir.path().join("accounts.csv");
    let before = std::fs::metadata(&map).unwrap();
    run.signal("-STOP");
    let saved = dir.path().join("mtime-ref");
    std::fs::write(&saved, "").unwrap();
    assert!(Command::new("touch")
        .arg("-r")
        .arg(&map)
        .arg(&saved)
        .status()
        .unwrap()
        .success());
    // Same length, written over in place (no truncation): same inode.
    let mut f = std::fs::OpenOptions::new().write(true).open(&map).unwrap();
    f.rewind().unwrap();
    f.write_all(b"papercut,customer_id\nKoala Labs,cus_koala\n")
        .unwrap();
    drop(f);
    assert!(Command::new("touch")
        .arg("-r")
        .arg(&saved)
        .arg(&map)
        .status()
        .unwrap()
        .success());
    let after = std::fs::metadata(&map).unwrap();
    {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            (before.len(), before.ino(), before.modified().unwrap()),
            (after.len(), after.ino(), after.modified().unwrap())
        );
    }
    run.signal("-CONT");
    // Unseen by the file watch: nothing released.
    std::thread::sleep(Duration::from_millis(2500));
    run.wait_until(Duration::from_millis(10), |_| true);
    assert_eq!(charges(&run.seen).len(), acme);
    run.signal("-HUP");
    run.wait_until(Duration::from_secs(20), |s| {
        charges(s).len() >= acme + koala
    });
    let koalas: Vec<_> = charges(&run.seen)
        .into_iter()
        .filter(|e| e["data"]["account"] == "Koala Labs")
        .collect();
    assert_eq!(koalas.len(), koala);
    assert!(koalas
        .iter()
        .all(|e| e["data"]["billing"]["customer_id"] == "cus_koala"));
    assert_eq!(run.stop(), Some(0));
    let log = std::fs::read_to_string(&run.log).unwrap();
    assert!(log.contains("account mapping (re)loaded"), "{log}");
}
