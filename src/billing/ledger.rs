//! The billing ledger: what every charge read was, kept beside the outbox
//! (whose delivered rows drop their message) so that `reconcile` and the
//! daily statements can count and sum by account, user, customer and day
//! long after delivery; and the charges held for want of a mapping.
//!
//! Tables (in the state database, created when missing):
//! - `billing_ledger`: one row per charge id (`INSERT OR IGNORE`: a charge
//!   read again is one row), written *before* the outbox commit of the same
//!   batch. A crash in between leaves a ledger row without its outbox row;
//!   the position was not committed either, so the line is read again and
//!   its outbox row follows (same id).
//! - `billing_held`: charges kept back, with the message as rendered
//!   without billing, and why (`reason`): `unmapped` (`unmapped = "hold"`:
//!   released, message completed with `data.billing`, as soon as a mapping
//!   names the account) or `papercut` (`[papercut] on_unavailable =
//!   "hold"`: PaperCut could not be asked; released enriched when it
//!   answers, or unenriched after `hold_max_secs`). `reason` was added
//!   after the table: an older database gains it (as `unmapped`) on open.
//! - `billing_statements`: which daily statements were queued.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::store::{now_ms, NewCharge};

#[derive(Debug, thiserror::Error)]
#[error("state database {path} (billing ledger): {source}")]
pub struct LedgerError {
    pub path: PathBuf,
    pub source: rusqlite::Error,
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS billing_ledger (
    id           TEXT PRIMARY KEY,
    source       TEXT NOT NULL,
    time         TEXT NOT NULL,   -- RFC 3339 with the source zone's offset
    day          TEXT NOT NULL,   -- local date in the source's zone, YYYY-MM-DD
    user         TEXT NOT NULL,
    account      TEXT NOT NULL,
    account_type TEXT NOT NULL,
    status       TEXT NOT NULL,   -- charged | refunded | cancelled | denied
    amount       TEXT,            -- decimal string as billed
    cost         TEXT,
    currency     TEXT NOT NULL,
    customer_id  TEXT,
    team_id      TEXT,
    transaction_id TEXT,
    created_ms   INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS billing_ledger_day ON billing_ledger (day);
CREATE INDEX IF NOT EXISTS billing_ledger_created ON billing_ledger (created_ms);
CREATE TABLE IF NOT EXISTS billing_held (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    payload      BLOB NOT NULL,
    job_type     TEXT NOT NULL,
    account_type TEXT NOT NULL,
    account      TEXT NOT NULL,
    user         TEXT NOT NULL,
    amount       TEXT,
    currency     TEXT NOT NULL,
    file         TEXT NOT NULL,
    offset       INTEGER NOT NULL,
    line         INTEGER NOT NULL,
    run          INTEGER NOT NULL,
    created_ms   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS billing_held_created ON billing_held (created_ms);
CREATE TABLE IF NOT EXISTS billing_statements (
    source     TEXT NOT NULL,
    account    TEXT NOT NULL,
    day        TEXT NOT NULL,
    id         TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (source, account, day)
) WITHOUT ROWID;
"#;

/// The billing facts of one charge, as read from its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub source: String,
    pub time: String,
    pub day: String,
    pub user: String,
    pub account: String,
    pub account_type: String,
    pub status: String,
    pub amount: Option<String>,
    pub cost: Option<String>,
    pub currency: String,
    pub customer_id: Option<String>,
    pub team_id: Option<String>,
    pub transaction_id: Option<String>,
}

/// Why a charge is held (`billing_held.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldReason {
    /// No mapping names its account (`unmapped = "hold"`).
    Unmapped,
    /// PaperCut could not be asked (`on_unavailable = "hold"`).
    Papercut,
}

impl HoldReason {
    pub fn as_str(self) -> &'static str {
        match self {
            HoldReason::Unmapped => "unmapped",
            HoldReason::Papercut => "papercut",
        }
    }

    fn parse(s: &str) -> HoldReason {
        match s {
            "papercut" => HoldReason::Papercut,
            _ => HoldReason::Unmapped,
        }
    }
}

/// A held charge.
#[derive(Debug, Clone)]
pub struct Held {
    pub charge: NewCharge,
    pub user: String,
    pub created_ms: i64,
    pub reason: HoldReason,
}

/// Add `billing_held.reason` to a database made before it existed. In
/// one immediate transaction, so two processes opening an old database at
/// once do not both add it.
fn add_reason_column(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let has: bool = tx
        .prepare("SELECT 1 FROM pragma_table_info('billing_held') WHERE name = 'reason'")?
        .exists([])?;
    if !has {
        tx.execute_batch(
            "ALTER TABLE billing_held ADD COLUMN reason TEXT NOT NULL DEFAULT 'unmapped'",
        )?;
    }
    tx.commit()
}

pub struct Ledger {
    conn: Connection,
    path: PathBuf,
}

impl Ledger {
    /// Open the ledger tables in the state database (the store has created
    /// and migrated it: open the `Store` first).
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        let err = |source| LedgerError {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(60)).map_err(err)?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        add_reason_column(&mut conn).map_err(err)?;
        Ok(Ledger {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// Open for reading only what is there (reconcile): `None` when the
    /// state has no ledger yet.
    pub fn open_existing(path: &Path) -> Result<Option<Ledger>, LedgerError> {
        let err = |source| LedgerError {
            path: path.to_path_buf(),
            source,
        };
        if !path.exists() {
            return Ok(None);
        }
        let mut conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(60)).map_err(err)?;
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'billing_ledger'",
                [],
                |r| r.get(0),
            )
            .map_err(err)?;
        if n == 0 {
            return Ok(None);
        }
        // The ledger tables are created together: billing_held is there.
        add_reason_column(&mut conn).map_err(err)?;
        Ok(Some(Ledger {
            conn,
            path: path.to_path_buf(),
        }))
    }

    fn err(&self, source: rusqlite::Error) -> LedgerError {
        LedgerError {
            path: self.path.clone(),
            source,
        }
    }

    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Record a batch's entries and held charges in one transaction.
    pub fn record(&mut self, entries: &[Entry], held: &[Held]) -> Result<(), LedgerError> {
        let now = now_ms();
        let path = self.path.clone();
        let err = |source| LedgerError {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(err)?;
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO billing_ledger (id, source, time, day, user, account, account_type,
                     status, amount, cost, currency, customer_id, team_id, transaction_id, created_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
                )
                .map_err(err)?;
            for e in entries {
                ins.execute(params![
                    e.id,
                    e.source,
                    e.time,
                    e.day,
                    e.user,
                    e.account,
                    e.account_type,
                    e.status,
                    e.amount,
                    e.cost,
                    e.currency,
                    e.customer_id,
                    e.team_id,
                    e.transaction_id,
                    now
                ])
                .map_err(err)?;
            }
            let mut hold = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO billing_held (id, payload, job_type, account_type, account, user,
                     amount, currency, file, offset, line, run, created_ms, reason)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                )
                .map_err(err)?;
            for h in held {
                let c = &h.charge;
                hold.execute(params![
                    c.id,
                    c.payload,
                    c.job_type,
                    c.account_type,
                    c.account,
                    h.user,
                    c.amount,
                    c.currency,
                    c.file,
                    c.offset as i64,
                    c.line as i64,
                    c.run,
                    now,
                    h.reason.as_str()
                ])
                .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Whether a charge is held.
    pub fn is_held(&self, id: &str) -> Result<bool, LedgerError> {
        self.conn
            .prepare_cached("SELECT 1 FROM billing_held WHERE id = ?1")
            .and_then(|mut st| st.query_row([id], |_| Ok(())).optional())
            .map(|r| r.is_some())
            .map_err(|e| self.err(e))
    }

    /// Held charges, oldest first, after `after_seq`; only those held for
    /// `reason` if given.
    pub fn held(
        &self,
        after_seq: i64,
        limit: usize,
        reason: Option<HoldReason>,
    ) -> Result<Vec<(i64, Held)>, LedgerError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT seq, id, payload, job_type, account_type, account, user, amount, currency,
                 file, offset, line, run, created_ms, reason FROM billing_held
                 WHERE seq > ?1 AND (?3 IS NULL OR reason = ?3) ORDER BY seq LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(
                params![
                    after_seq,
                    limit.min(i64::MAX as usize) as i64,
                    reason.map(HoldReason::as_str)
                ],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        Held {
                            charge: NewCharge {
                                id: r.get(1)?,
                                payload: r.get(2)?,
                                job_type: r.get(3)?,
                                account_type: r.get(4)?,
                                account: r.get(5)?,
                                amount: r.get(7)?,
                                currency: r.get(8)?,
                                file: r.get(9)?,
                                offset: r.get::<_, i64>(10)? as u64,
                                line: r.get::<_, i64>(11)? as u64,
                                run: r.get(12)?,
                            },
                            user: r.get(6)?,
                            created_ms: r.get(13)?,
                            reason: HoldReason::parse(&r.get::<_, String>(14)?),
                        },
                    ))
                },
            )
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.err(e));
        rows
    }

    pub fn held_count(&self) -> Result<u64, LedgerError> {
        self.conn
            .query_row("SELECT count(*) FROM billing_held", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    /// Held charges (unmapped, papercut).
    pub fn held_by_reason(&self) -> Result<(u64, u64), LedgerError> {
        self.conn
            .query_row(
                "SELECT coalesce(sum(reason != 'papercut'), 0), coalesce(sum(reason = 'papercut'), 0)
                 FROM billing_held",
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
            .map_err(|e| self.err(e))
    }

    /// A charge held for PaperCut that now waits for a mapping: its message
    /// (enriched now) and reason change; it stays held.
    pub fn rehold(&self, id: &str, payload: &[u8], reason: HoldReason) -> Result<(), LedgerError> {
        self.conn
            .prepare_cached("UPDATE billing_held SET payload = ?2, reason = ?3 WHERE id = ?1")
            .and_then(|mut st| st.execute(params![id, payload, reason.as_str()]))
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Held charges now in the outbox: forget them here and record who they
    /// were billed to.
    pub fn released(
        &mut self,
        done: &[(String, Option<String>, Option<String>)],
    ) -> Result<(), LedgerError> {
        let path = self.path.clone();
        let err = |source| LedgerError {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut del = tx
                .prepare_cached("DELETE FROM billing_held WHERE id = ?1")
                .map_err(err)?;
            let mut upd = tx
                .prepare_cached(
                    "UPDATE billing_ledger SET customer_id = ?2, team_id = ?3 WHERE id = ?1",
                )
                .map_err(err)?;
            for (id, customer, team) in done {
                del.execute([id]).map_err(err)?;
                upd.execute(params![id, customer, team]).map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Whether the statement for (source, account, day) was queued.
    pub fn statement_queued(
        &self,
        source: &str,
        account: &str,
        day: &str,
    ) -> Result<bool, LedgerError> {
        self.conn
            .prepare_cached(
                "SELECT 1 FROM billing_statements WHERE source = ?1 AND account = ?2 AND day = ?3",
            )
            .and_then(|mut st| {
                st.query_row(params![source, account, day], |_| Ok(()))
                    .optional()
            })
            .map(|r| r.is_some())
            .map_err(|e| self.err(e))
    }

    pub fn mark_statement(
        &self,
        source: &str,
        account: &str,
        day: &str,
        id: &str,
    ) -> Result<(), LedgerError> {
        self.conn
            .prepare_cached(
                "INSERT OR IGNORE INTO billing_statements (source, account, day, id, created_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut st| st.execute(params![source, account, day, id, now_ms()]))
            .map(|_| ())
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database whose `billing_held` predates `reason`: opening it adds
    /// the column, the rows held then count as unmapped, and a second
    /// open (or a reader) leaves it be.
    #[test]
    fn an_old_held_table_gains_its_reason_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let old = SCHEMA.replace(
            "CREATE INDEX IF NOT EXISTS billing_held_created ON billing_held (created_ms);",
            "",
        );
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(&old).unwrap();
            c.execute(
                "INSERT INTO billing_held (id, payload, job_type, account_type, account, user, amount,
                 currency, file, offset, line, run, created_ms)
                 VALUES ('chg_1', x'7b7d', 'print', 'personal', 'bob', 'bob', '1.00', 'AUD', 'f', 0, 1, 1, 5)",
                [],
            )
            .unwrap();
        }
        let l = Ledger::open(&path).unwrap();
        let held = l.held(0, 10, None).unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].1.reason, HoldReason::Unmapped);
        assert_eq!(l.held_by_reason().unwrap(), (1, 0));
        l.rehold("chg_1", b"{\"x\":1}", HoldReason::Papercut)
            .unwrap();
        assert_eq!(l.held_by_reason().unwrap(), (0, 1));
        assert!(l
            .held(0, 10, Some(HoldReason::Unmapped))
            .unwrap()
            .is_empty());
        drop(l);
        Ledger::open(&path).unwrap();
        let r = Ledger::open_existing(&path).unwrap().unwrap();
        assert_eq!(r.held(0, 10, Some(HoldReason::Papercut)).unwrap().len(), 1);
    }
}
