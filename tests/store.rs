//! The state database: real SQLite files in a temp dir.

use std::path::PathBuf;
use std::time::Duration;

use chargetail::source::Checkpoint;
use chargetail::store::{
    id_key, now_ms, BadLine, Held, HoldReason, LedgerEntry, NewCharge, Record, Rows, Store,
    StoreError,
};

fn charge(id: &str, line: u64) -> NewCharge {
    NewCharge {
        id: id.into(),
        payload: format!("{{\"id\":\"{id}\"}}").into_bytes(),
        job_type: "print".into(),
        account_type: "shared".into(),
        account: "Acme".into(),
        amount: Some("1.20".into()),
        currency: "AUD".into(),
        file: "/x/tx.log".into(),
        offset: line * 10,
        line,
        run: 0,
    }
}

fn entry(id: &str) -> LedgerEntry {
    LedgerEntry {
        id: id.into(),
        source: "pc".into(),
        time: "2026-11-20T09:00:00+11:00".into(),
        day: "2026-11-20".into(),
        user: "bob".into(),
        account: "Acme".into(),
        account_type: "shared".into(),
        status: "charged".into(),
        amount: Some("1.20".into()),
        cost: None,
        currency: "AUD".into(),
        customer_id: None,
        team_id: None,
        transaction_id: None,
    }
}

/// The ids of the first `limit` pending charges, in outbox order.
fn pending_ids(s: &Store, limit: usize) -> Vec<String> {
    s.pending(limit)
        .unwrap()
        .into_iter()
        .map(|p| p.envelope.id)
        .collect()
}

fn checkpoint(offset: u64) -> Checkpoint {
    Checkpoint {
        generation: 1,
        source: "pc".into(),
        path: PathBuf::from("/x/tx.log"),
        dev: 1,
        ino: 2,
        fp_len: 10,
        fingerprint: "ab".into(),
        offset,
        line: offset / 10,
        size: offset,
        finished: false,
    }
}

#[test]
fn commit_stores_charges_and_position_together_and_ignores_known_ids() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut s = Store::open(&path).unwrap();
    let done = s
        .commit(
            Some(&checkpoint(20)),
            &[charge("chg_a", 1), charge("chg_b", 2)],
            &[],
        )
        .unwrap();
    assert_eq!((done.inserted, done.duplicates), (2, 0));
    // The same ids again (a copy of the file, a replay): nothing new.
    let done = s
        .commit(None, &[charge("chg_b", 2), charge("chg_c", 3)], &[])
        .unwrap();
    assert_eq!((done.inserted, done.duplicates), (1, 1));
    drop(s);
    let s = Store::open(&path).unwrap();
    assert_eq!(s.checkpoints().unwrap(), vec![checkpoint(20)]);
    let pending = pending_ids(&s, 10);
    assert_eq!(pending, ["chg_a", "chg_b", "chg_c"]);
}

#[test]
fn outcomes_are_recorded_and_delivered_ids_stay_known() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("state.db")).unwrap();
    s.commit(
        None,
        &[charge("chg_a", 1), charge("chg_b", 2), charge("chg_c", 3)],
        &[],
    )
    .unwrap();
    let p = s.pending(10).unwrap();
    let now = now_ms();
    let results = vec![
        (&p[0].envelope, Record::Delivered),
        (
            &p[1].envelope,
            Record::Retry {
                error: "503".into(),
                next_ms: now + 30_000,
                wait_ms: 30_000,
                first_fail_ms: now,
            },
        ),
        (
            &p[2].envelope,
            Record::Dead {
                error: "400 bad".into(),
                first_fail_ms: now,
            },
        ),
    ];
    assert_eq!(s.record(&results).unwrap(), (1, 1));
    let p = s.pending(10).unwrap();
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].envelope.id, "chg_b");
    assert_eq!(p[0].envelope.attempts, 1);
    // The schedule and the failure clock are kept for a restart.
    assert_eq!(p[0].next_ms, now + 30_000);
    assert_eq!(p[0].first_fail_ms, Some(now));
    assert_eq!(s.known("chg_a").unwrap().as_deref(), Some("delivered"));
    // A delivered id read again is not queued again.
    let done = s.commit(None, &[charge("chg_a", 1)], &[]).unwrap();
    assert_eq!(done.inserted, 0);
    let dead = s.dead_letters().unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, "chg_c");
    assert!(dead[0].reason.contains("400"));
    assert_eq!(s.retry_dead(&[]).unwrap(), 1);
    assert_eq!(s.pending(10).unwrap().len(), 2);
}

#[test]
fn bad_lines_are_dead_letters_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("state.db")).unwrap();
    let bad = BadLine {
        file: "/x/tx.log".into(),
        offset: 40,
        line: 5,
        raw: b"2026-11-20\tbob\tabc".to_vec(),
        reason: "column \"amount\" (3): \"abc\" is not an amount".into(),
    };
    assert_eq!(
        s.commit(None, &[], std::slice::from_ref(&bad))
            .unwrap()
            .bad_lines,
        1
    );
    // The same line read again (after a crash, by a replay): still one.
    assert_eq!(
        s.commit(None, &[], std::slice::from_ref(&bad))
            .unwrap()
            .bad_lines,
        0
    );
    let dead = s.dead_letters().unwrap();
    assert_eq!(dead.len(), 1);
    // An equal bad line in another file is its own dead letter.
    let other = BadLine {
        file: "/x/tx-2.log".into(),
        ..bad
    };
    assert_eq!(s.commit(None, &[], &[other]).unwrap().bad_lines, 1);
    assert_eq!(s.dead_letters().unwrap().len(), 2);
    assert_eq!(
        (dead[0].kind, dead[0].line, dead[0].offset),
        ("line", 5, 40)
    );
    assert!(dead[0].reason.contains("amount"));
    assert_eq!(s.drop_dead(&[dead[0].id.clone()]).unwrap(), 1);
}

#[test]
fn a_damaged_database_is_refused_not_reset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    std::fs::write(&path, vec![0u8; 8192]).unwrap();
    let err = Store::open(&path).err().expect("must refuse");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("refusing to start"), "{err}");
    // Garbage that is not even zeros.
    std::fs::write(
        &path,
        b"this is not a database, it is a text file ".repeat(200),
    )
    .unwrap();
    let err = Store::open(&path).err().expect("must refuse");
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    // And the file was left as it was.
    assert!(std::fs::read(&path).unwrap().starts_with(b"this is not"));
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    drop(Store::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch("PRAGMA user_version = 99").unwrap();
    drop(conn);
    let err = Store::open(&path).err().expect("must refuse");
    assert!(matches!(err, StoreError::TooNew { found: 99, .. }), "{err}");
}

#[test]
fn retry_backoff_is_capped_full_jitter() {
    let p = chargetail::deliver::RetryPolicy {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(10),
        give_up_after: None,
    };
    for attempts in 0..40 {
        let d = p.delay(attempts);
        let cap = (100u64 << attempts.min(20)).min(10_000);
        assert!(
            d.as_millis() as u64 <= cap,
            "attempt {attempts}: {d:?} > {cap}"
        );
    }
}

#[test]
fn prune_forgets_old_delivered_ids_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut s = Store::open(&path).unwrap();
    let charges: Vec<NewCharge> = (0..5).map(|i| charge(&format!("chg_{i}"), i)).collect();
    s.commit(None, &charges, &[]).unwrap();
    let p = s.pending(10).unwrap();
    let results: Vec<_> = p.iter().map(|p| (&p.envelope, Record::Delivered)).collect();
    s.record(&results).unwrap();
    // Three were delivered long ago, two just now.
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute(
        "UPDATE outbox SET delivered_ms = 1000 WHERE id IN ('chg_0', 'chg_1', 'chg_2')",
        [],
    )
    .unwrap();
    drop(db);
    let day = Duration::from_secs(86_400);
    assert_eq!(s.prune(day, 2).unwrap(), 2);
    assert_eq!(s.prune(day, 2).unwrap(), 1);
    assert_eq!(s.prune(day, 2).unwrap(), 0);
    assert_eq!(
        s.known("chg_0").unwrap(),
        None,
        "forgotten past the retention"
    );
    assert_eq!(s.known("chg_4").unwrap().as_deref(), Some("delivered"));
}

#[test]
fn delivered_runs_are_marked_by_range_and_only_the_seqs_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("state.db")).unwrap();
    let ids: Vec<String> = (0..8).map(|i| format!("chg_{i}")).collect();
    let charges: Vec<NewCharge> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| charge(id, i as u64))
        .collect();
    let done = s.commit(None, &charges, &[]).unwrap();
    let seq = done.seqs.clone();
    assert_eq!(seq.len(), 8);
    assert!(seq.windows(2).all(|w| w[1] == w[0] + 1), "{seq:?}");
    let now = now_ms();
    // 0..=2 delivered (one range), 3 retried, 4 and 6 delivered (5 is not
    // named: it stays pending although it lies between them), 7 delivered.
    let results = vec![
        (seq[0], Record::Delivered),
        (seq[1], Record::Delivered),
        (seq[2], Record::Delivered),
        (
            seq[3],
            Record::Retry {
                error: "503".into(),
                next_ms: now + 1000,
                wait_ms: 1000,
                first_fail_ms: now,
            },
        ),
        (seq[4], Record::Delivered),
        (seq[6], Record::Delivered),
        (seq[7], Record::Delivered),
    ];
    assert_eq!(s.record_seqs(&results).unwrap(), (6, 0));
    let left = pending_ids(&s, 10);
    assert_eq!(left, ["chg_3", "chg_5"]);
    for i in [0, 1, 2, 4, 6, 7] {
        assert_eq!(
            s.known(&ids[i]).unwrap().as_deref(),
            Some("delivered"),
            "{i}"
        );
    }
    // Recorded again (a repeat): nothing is delivered twice.
    assert_eq!(s.record_seqs(&results[..3]).unwrap(), (0, 0));
}

/// Two ids whose integer key is the same (their first 15 hex digits) are
/// two charges: neither's outbox row nor ledger row is taken for the
/// other's, and each is still recognised when read again.
#[test]
fn ids_that_share_a_key_keep_a_row_each() {
    let a = "chg_0123456789abcde00000000000000000";
    let b = "chg_0123456789abcdeffffffffffffffff1";
    assert_eq!(id_key(a), id_key(b), "the test needs a collision");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut s = Store::open(&path).unwrap();
    let first = [charge(a, 1)];
    let done = s
        .commit_rows(
            Some(&checkpoint(10)),
            Rows {
                charges: &first,
                ledger: &[entry(a)],
                ..Rows::default()
            },
        )
        .unwrap();
    assert_eq!((done.inserted, done.duplicates), (1, 0));
    let again = [charge(b, 2), charge(a, 1), charge(b, 2)];
    let done = s
        .commit_rows(
            Some(&checkpoint(20)),
            Rows {
                charges: &again,
                ledger: &[entry(b), entry(a), entry(b)],
                ..Rows::default()
            },
        )
        .unwrap();
    assert_eq!((done.inserted, done.duplicates), (1, 2));
    assert_eq!(done.ignored, [1, 2]);
    let pending = pending_ids(&s, 10);
    assert_eq!(pending, [a, b]);
    assert_eq!(s.known(a).unwrap().as_deref(), Some("pending"));
    assert_eq!(s.known(b).unwrap().as_deref(), Some("pending"));
    let other = "chg_0123456789abcde11111111111111111";
    assert_eq!(s.known(other).unwrap(), None, "same key, unknown id");
    drop(s);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let ids: Vec<String> = conn
        .prepare("SELECT id FROM billing_ledger ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(ids, [a, b]);
}

/// Held charges are written in the batch's commit, once each, and
/// counted by reason when new.
#[test]
fn held_charges_commit_with_the_batch_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut s = Store::open(&path).unwrap();
    let held = [Held {
        charge: charge("chg_h", 1),
        user: "bob".into(),
        created_ms: 0,
        reason: HoldReason::Papercut,
    }];
    let rows = Rows {
        charges: &[],
        bad: &[],
        ledger: &[entry("chg_h")],
        held: &held,
    };
    let done = s.commit_rows(Some(&checkpoint(10)), rows).unwrap();
    assert_eq!(done.held, [0, 1]);
    assert_eq!(done.inserted, 0);
    let done = s.commit_rows(Some(&checkpoint(10)), rows).unwrap();
    assert_eq!(done.held, [0, 0], "read again: held already");
    drop(s);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let n: (i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM billing_held WHERE reason = 'papercut'),
                    (SELECT count(*) FROM billing_ledger)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(n, (1, 1));
}
