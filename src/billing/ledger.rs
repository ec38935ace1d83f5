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
//! - `billing_held`: charges `unmapped = "hold"` kept back, with the message
//!   as rendered without billing; released into the outbox (message
//!   completed with `data.billing`) as soon as a mapping names the account.
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

/// A held charge.
#[derive(Debug, Clone)]
pub struct Held {
    pub charge: NewCharge,
    pub user: String,
    pub created_ms: i64,
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
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(60)).map_err(err)?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
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
        let conn = Connection::open(path).map_err(err)?;
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
                     amount, currency, file, offset, line, run, created_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
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
                    now
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

    /// Held charges, oldest first, after `after_seq`.
    pub fn held(&self, after_seq: i64, limit: usize) -> Result<Vec<(i64, Held)>, LedgerError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT seq, id, payload, job_type, account_type, account, user, amount, currency,
                 file, offset, line, run, created_ms FROM billing_held WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![after_seq, limit as i64], |r| {
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
                    },
                ))
            })
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
