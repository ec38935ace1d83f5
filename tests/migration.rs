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

use chargetail::store::{id_key, NewCharge, Store};
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

/// The billing tables as releases before the store owned them made them
/// (`Ledger::open`, `CREATE TABLE IF NOT EXISTS`): the ledger WITHOUT
/// ROWID on the text id, and a `billing_held` from before `reason`.
const OLD_BILLING: &str = r#"
CREATE TABLE billing_ledger (
    id TEXT PRIMARY KEY, source TEXT NOT NULL, time TEXT NOT NULL, day TEXT NOT NULL,
    user TEXT NOT NULL, account TEXT NOT NULL, account_type TEXT NOT NULL, status TEXT NOT NULL,
    amount TEXT, cost TEXT, currency TEXT NOT NULL, customer_id TEXT, team_id TEXT,
    transaction_id TEXT, created_ms INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX billing_ledger_day ON billing_ledger (day);
CREATE INDEX billing_ledger_created ON billing_ledger (created_ms);
CREATE TABLE billing_held (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, payload BLOB NOT NULL,
    job_type TEXT NOT NULL, account_type TEXT NOT NULL, account TEXT NOT NULL, user TEXT NOT NULL,
    amount TEXT, currency TEXT NOT NULL, file TEXT NOT NULL, offset INTEGER NOT NULL,
    line INTEGER NOT NULL, run INTEGER NOT NULL, created_ms INTEGER NOT NULL
);
CREATE TABLE billing_statements (
    source TEXT NOT NULL, account TEXT NOT NULL, day TEXT NOT NULL, id TEXT NOT NULL,
    created_ms INTEGER NOT NULL, PRIMARY KEY (source, account, day)
) WITHOUT ROWID;
"#;

#[test]
fn an_old_ledger_moves_to_the_keyed_table_and_still_reconciles() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, log) = install(dir.path());
    let c = cfg.to_str().unwrap();
    let db = dir.path().join("state/state.db");
    // The old ledger: a row for each charge the fixture's outbox holds (as
    // the daemon wrote them), and one held charge.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch(OLD_BILLING).unwrap();
    let n = conn
        .execute(
            "INSERT INTO billing_ledger (id, source, time, day, user, account, account_type, status,
             amount, cost, currency, transaction_id, created_ms)
             SELECT id, 'site', '2026-11-20T09:00:00+11:00', '2026-11-20', 'member1', account,
                    account_type, 'charged', amount, amount, currency, 'tx-' || seq, created_ms
             FROM outbox",
            [],
        )
        .unwrap();
    assert_eq!(n, 50, "40 delivered, 9 pending, 1 dead");
    conn.execute(
        "INSERT INTO billing_ledger (id, source, time, day, user, account, account_type, status,
         amount, currency, created_ms)
         VALUES ('chg_held', 'site', '2026-11-20T09:30:00+11:00', '2026-11-20', 'bob', 'Unknown',
                 'shared', 'charged', '-2.00', 'AUD', 5)",
        [],
    )
    .unwrap();
    conn.execute(
        "INSERT INTO billing_held (id, payload, job_type, account_type, account, user, amount,
         currency, file, offset, line, run, created_ms)
         VALUES ('chg_held', x'7b7d', 'print', 'shared', 'Unknown', 'bob', '-2.00', 'AUD', 'f', 0, 1, 0, 5)",
        [],
    )
    .unwrap();
    drop(conn);

    // Reconcile (it migrates): every charge is there, with its outbox state
    // (exit 1: some are not delivered; pending counts the held one too).
    let out = run_cli(&["reconcile", "--config", c, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let rep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rep["totals"]["read"], 51, "{rep}");
    assert_eq!(rep["totals"]["delivered"], 40, "{rep}");
    assert_eq!(rep["totals"]["held"], 1, "{rep}");
    assert_eq!(rep["totals"]["pending"], 10, "{rep}");
    assert_eq!(rep["totals"]["dead"], 1, "{rep}");
    let out = run_cli(&["held", "list", "--config", c, "--json"]);
    assert!(out.status.success(), "{out:?}");
    let held: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(held[0]["id"], "chg_held", "{held}");
    assert_eq!(held[0]["reason"], "unmapped", "{held}");

    // The new table: a rowid table with the integer key, same rows.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (rows, keyed): (i64, i64) = conn
        .query_row(
            "SELECT count(*), count(DISTINCT id_key) FROM billing_ledger",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((rows, keyed), (51, 51));
    let without_rowid: String = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE name = 'billing_ledger'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(!without_rowid.contains("WITHOUT ROWID"), "{without_rowid}");
    drop(conn);

    // The daemon goes on from there: new lines get their ledger rows, the
    // old ones are not written twice.
    for n in 50..55 {
        append(&log, &tx_line(n));
    }
    let mut d = Daemon::start(&cfg);
    assert_eq!(d.wait_for(14, T), 14);
    d.drain(Duration::from_millis(700));
    let (code, _) = d.stop();
    assert_eq!(code, Some(0));
    let out = run_cli(&["reconcile", "--config", c, "--json"]);
    let rep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rep["totals"]["read"], 56, "{rep}");
    assert_eq!(rep["totals"]["delivered"], 54, "{rep}");
    assert_eq!(rep["totals"]["pending"], 1, "{rep}");
}

// ---------------------------------------------------------------- outbox_keyed

/// A charge for the store's commit path (library level).
fn new_charge(id: &str, line: u64) -> NewCharge {
    NewCharge {
        id: id.into(),
        payload: format!("{{\"id\":\"{id}\"}}").into_bytes(),
        job_type: "print".into(),
        account_type: "shared".into(),
        account: "Acme".into(),
        amount: Some("-1.20".into()),
        currency: "AUD".into(),
        file: "/x/tx.log".into(),
        offset: line * 10,
        line,
        run: 0,
    }
}

type Row = (i64, String, String, Option<Vec<u8>>, i64, i64);

/// Every outbox row as it matters across a migration: seq, id, state,
/// message bytes, attempts, created_ms.
fn outbox_rows(db: &Path) -> Vec<Row> {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut st = conn
        .prepare("SELECT seq, id, state, payload, attempts, created_ms FROM outbox ORDER BY seq")
        .unwrap();
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .collect::<Result<Vec<Row>, _>>()
        .unwrap();
    rows
}

/// The outbox's AUTOINCREMENT high mark (0: none).
fn seq_mark(db: &Path) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row(
            "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0)",
            [],
            |r| r.get(0),
        )
        .unwrap()
}

/// The state the first release left, brought to schema `version` by that
/// many migrations (as a release of that version left it), with the
/// outbox's high mark raised above its last row: a dead letter at seq 5000
/// dropped (`dead-letters drop`), which the next charge must not reuse.
fn state_at(dir: &Path, version: i64) -> (PathBuf, PathBuf) {
    let (cfg, _) = install(dir);
    let db = dir.join("state/state.db");
    drop(Store::open_at_version(&db, version).unwrap());
    let conn = rusqlite::Connection::open(&db).unwrap();
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, version);
    conn.execute(
        "INSERT INTO outbox (seq, id, state, payload, job_type, account_type, account, currency,
         file, offset, line, created_ms)
         VALUES (5000, 'chg_dropped', 'dead', x'7b7d', 'print', 'shared', 'Acme', 'AUD', 'f', 0, 1, 1)",
        [],
    )
    .unwrap();
    conn.execute("DELETE FROM outbox WHERE seq = 5000", [])
        .unwrap();
    drop(conn);
    assert_eq!(seq_mark(&db), 5000);
    (cfg, db)
}

/// From every schema before `outbox_keyed` (7): the outbox is rebuilt with
/// the same rows under the same seqs, the same high mark, an integer key
/// per row and no unique index; pending, delivered and dead charges are
/// found by id as before, a charge read again is still a duplicate, and
/// two ids that share a key are two charges.
#[test]
fn every_older_schema_moves_to_the_keyed_outbox_with_its_seqs_and_mark() {
    for version in 1..=6 {
        let dir = tempfile::tempdir().unwrap();
        let (cfg, db) = state_at(dir.path(), version);
        let before = outbox_rows(&db);
        assert_eq!(before.len(), 50, "v{version}");
        let id_of = |state: &str| {
            before
                .iter()
                .find(|r| r.2 == state)
                .map(|r| r.1.clone())
                .unwrap()
        };
        let (pending, delivered, dead) = (id_of("pending"), id_of("delivered"), id_of("dead"));

        let mut s = Store::open(&db).unwrap();
        assert_eq!(outbox_rows(&db), before, "v{version}: same rows, same seqs");
        assert_eq!(seq_mark(&db), 5000, "v{version}: the high mark kept");
        let conn = rusqlite::Connection::open(&db).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, 7);
        let keys: Vec<(String, i64)> = conn
            .prepare("SELECT id, id_key FROM outbox")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for (id, key) in &keys {
            assert_eq!(*key, id_key(id), "v{version}: {id}");
        }
        let unique: i64 = conn
            .query_row(
                "SELECT count(*) FROM pragma_index_list('outbox') WHERE \"unique\"",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(unique, 0, "v{version}: no unique index left on the outbox");
        drop(conn);

        for (id, state) in [
            (&pending, "pending"),
            (&delivered, "delivered"),
            (&dead, "dead"),
        ] {
            assert_eq!(s.known(id).unwrap().as_deref(), Some(state), "v{version}");
        }
        // Read again: the pending and delivered charges are duplicates; a
        // new id, and one sharing the pending one's key, are new rows after
        // the mark.
        let twin = format!("{}ffff", &pending[..19]);
        assert_eq!(
            id_key(&twin),
            id_key(&pending),
            "the test needs a collision"
        );
        let batch = [
            new_charge(&pending, 1),
            new_charge(&delivered, 2),
            new_charge("chg_fresh", 3),
            new_charge(&twin, 4),
        ];
        let done = s.commit(None, &batch, &[]).unwrap();
        assert_eq!((done.inserted, done.duplicates), (2, 2), "v{version}");
        assert_eq!(done.seqs, [5001, 5002], "v{version}: no seq reused");
        assert_eq!(s.known(&twin).unwrap().as_deref(), Some("pending"));
        // The dead letter is listed, put back by id, and pending again.
        let letters = s.dead_letters().unwrap();
        assert!(letters.iter().any(|d| d.id == dead), "v{version}");
        assert_eq!(s.retry_dead(std::slice::from_ref(&dead)).unwrap(), 1);
        assert_eq!(s.known(&dead).unwrap().as_deref(), Some("pending"));
        drop(s);

        // And the daemon's own view: the 9 pending charges, the dead one
        // put back, and the two new ones.
        let out = run_cli(&["status", "--config", cfg.to_str().unwrap(), "--json"]);
        assert!(out.status.success(), "{out:?}");
        let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(st["outbox"]["pending"], 9 + 1 + 2, "v{version}: {st}");
    }
}

/// An outbox whose every row was pruned still has its high mark: the
/// rebuilt table (with no row to copy) carries it over.
#[test]
fn an_emptied_outbox_keeps_its_high_mark_through_the_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    drop(Store::open_at_version(&db, 6).unwrap());
    // Three charges queued, delivered and pruned, as schema 6 had them.
    let conn = rusqlite::Connection::open(&db).unwrap();
    for i in 1..=3 {
        conn.execute(
            "INSERT INTO outbox (id, state, job_type, account_type, account, currency, file,
             offset, line, created_ms, delivered_ms)
             VALUES (?1, 'delivered', 'print', 'shared', 'Acme', 'AUD', 'f', 0, ?2, 1, 2)",
            rusqlite::params![format!("chg_{i}"), i],
        )
        .unwrap();
    }
    conn.execute("DELETE FROM outbox", []).unwrap();
    drop(conn);
    assert_eq!(seq_mark(&db), 3);
    let mut s = Store::open(&db).unwrap();
    assert_eq!(seq_mark(&db), 3);
    let done = s.commit(None, &[new_charge("chg_9", 9)], &[]).unwrap();
    assert_eq!(done.seqs, [4]);
}
