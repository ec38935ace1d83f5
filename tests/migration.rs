//! State written by the FIRST release opens unchanged with today's binary.
//! The fixture (tests/fixtures/first-release/, made by its make.sh with the
//! first release's own binary) holds a position after 52 lines, 40
//! delivered charges, 9 pending ones, a refused charge and an unparsable
//! line. Today's daemon must resume at that position (no line read twice,
//! none lost), deliver the pending charges, and list both dead letters.

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::*;

const T: Duration = Duration::from_secs(30);

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/first-release")
        .join(name)
}

/// The fixture copied into `dir`, its file row pointed at the copy of
/// tx.log: the same bytes at another path and inode, as after moving the
/// state to a new machine. Only path, device and inode change; the
/// fingerprint (the first bytes' hash) must still match the copy.
fn install(dir: &Path) -> (PathBuf, PathBuf) {
    let (db, log) = (dir.join("state/state.db"), dir.join("site/tx.log"));
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    std::fs::copy(fixture("state.db"), &db).unwrap();
    std::fs::copy(fixture("tx.log"), &log).unwrap();
    let m = std::fs::metadata(&log).unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 1, "the fixture is the first release's schema");
    let n = conn
        .execute(
            "UPDATE files SET path = ?1, dev = ?2, ino = ?3 WHERE path = '/tmp/chargetail-first-release/tx.log'",
            rusqlite::params![log.to_str().unwrap(), m.dev() as i64, m.ino() as i64],
        )
        .unwrap();
    assert_eq!(n, 1);
    drop(conn);
    let cfg = dir.join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[source]\nname = \"site\"\npath = \"{}\"\ntimezone = \"Australia/Melbourne\"\n\
             currency = \"AUD\"\npoll_interval_ms = 200\n\n[state]\npath = \"{}\"\n",
            dir.join("site/*.log").display(),
            db.display()
        ),
    )
    .unwrap();
    (cfg, log)
}

fn txs(range: std::ops::Range<u64>) -> Vec<String> {
    range.map(|n| format!("tx-{n:06}")).collect()
}

#[test]
fn first_release_state_resumes_delivers_pending_and_lists_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, log) = install(dir.path());
    let c = cfg.to_str().unwrap();

    // Dead letters as the first release left them: the refused charge and
    // the unparsable line.
    let dead = dead_letters(&cfg);
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert!(
        dead.iter()
            .any(|d| d["id"].as_str().unwrap().starts_with("chg_")
                && d["reason"].as_str().unwrap().contains("400")),
        "{dead:?}"
    );
    assert!(
        dead.iter()
            .any(|d| d["line"] == 42 && d["reason"].as_str().unwrap().contains("not-money")),
        "{dead:?}"
    );
    // Status: the one file, at the first release's position, the source's.
    let out = run_cli(&["status", "--config", c, "--json"]);
    assert!(out.status.success(), "{out:?}");
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let size = std::fs::metadata(&log).unwrap().len();
    assert_eq!(st["outbox"]["pending"], 9, "{st}");
    let files = st["sources"][0]["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{st}");
    assert_eq!(files[0]["offset"], size, "{st}");
    assert_eq!(files[0]["source"], "site");

    // Run: the 9 pending charges go out, then the lines written since, and
    // nothing the first release had read already.
    for n in 50..60 {
        append(&log, &tx_line(n));
    }
    let mut d = Daemon::start(&cfg);
    assert_eq!(d.wait_for(19, T), 19);
    d.drain(Duration::from_millis(700));
    let (code, lines) = d.stop();
    assert_eq!(code, Some(0));
    let mut want = txs(41..50);
    want.extend(txs(50..60));
    assert_eq!(
        tx_ids(&lines),
        want,
        "pending first, then new lines, once each"
    );
    // The pending ones are the very charges the first release queued: the
    // ids it stored.
    let conn = rusqlite::Connection::open(dir.path().join("state/state.db")).unwrap();
    let delivered: i64 = conn
        .query_row(
            "SELECT count(*) FROM outbox WHERE state = 'delivered'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(delivered, 40 + 19);
    let owner: String = conn
        .query_row("SELECT source FROM files", [], |r| r.get(0))
        .unwrap();
    assert_eq!(owner, "site", "the old position now belongs to the source");
    drop(conn);

    // And again: nothing new, nothing sent.
    let mut d = Daemon::start(&cfg);
    d.drain(Duration::from_millis(1500));
    let (code, lines) = d.stop();
    assert_eq!(code, Some(0));
    assert!(lines.is_empty(), "{lines:?}");
    assert_eq!(dead_letters(&cfg).len(), 2);
}

#[test]
fn first_release_state_under_a_second_source_keeps_its_place() {
    // The old [source] becomes one of two [[source]] tables: its position
    // is adopted by the source whose path matches, the other starts fresh.
    let dir = tempfile::tempdir().unwrap();
    let (cfg, log) = install(dir.path());
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    append(&other.join("tx.log"), HEADER);
    append(&other.join("tx.log"), &tx_line(7));
    let text = std::fs::read_to_string(&cfg).unwrap().replacen(
        "[source]",
        &format!(
            "[[source]]\nname = \"other\"\npath = \"{}\"\n\n[[source]]",
            other.join("*.log").display()
        ),
        1,
    );
    std::fs::write(&cfg, text).unwrap();
    append(&log, &tx_line(50));
    let mut d = Daemon::start(&cfg);
    assert_eq!(d.wait_for(11, T), 11);
    d.drain(Duration::from_millis(700));
    let (code, lines) = d.stop();
    assert_eq!(code, Some(0));
    let mut site: Vec<String> = Vec::new();
    let mut others: Vec<String> = Vec::new();
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let tx = v["data"]["transaction_id"].as_str().unwrap().to_string();
        match v["source"].as_str().unwrap() {
            "papercut/site" => site.push(tx),
            _ => others.push(tx),
        }
    }
    assert_eq!(site, txs(41..51));
    assert_eq!(others, ["tx-000007"]);
}
