//! The billing ledger: what every charge read was, kept beside the outbox
//! (whose delivered rows drop their message) so that `reconcile` and the
//! daily statements can count and sum by account, user, customer and day
//! long after delivery; and the charges held for want of a mapping.
//!
//! Tables (in the state database; the store creates them, see
//! `store::schema`, and writes a batch's rows in its commit, see
//! `store::Rows`):
//! - `billing_ledger`: one row per charge id (a charge read again is one
//!   row), written in the same transaction as the outbox rows and the
//!   position of the batch.
//! - `billing_held`: charges kept back, with the message as rendered
//!   without billing, and why (`reason`): `unmapped` (`unmapped = "hold"`:
//!   released, message completed with `data.billing`, as soon as a mapping
//!   names the account) or `papercut` (`[papercut] on_unavailable =
//!   "hold"`: PaperCut could not be asked; released enriched when it
//!   answers, or unenriched after `hold_max_secs`).
//! - `billing_statements`: which daily statements were queued.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use crate::store::{id_key, now_ms, NewCharge};
pub use crate::store::{Held, HoldReason, LedgerEntry as Entry};

#[derive(Debug, thiserror::Error)]
#[error("state database {path} (billing ledger): {source}")]
pub struct LedgerError {
    pub path: PathBuf,
    pub source: rusqlite::Error,
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
        Ok(Ledger {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// Open for reading only what is there (reconcile): `None` when the
    /// state has no ledger yet. A state that exists must have been opened
    /// (migrated) by a `Store` first: an older one has the old tables.
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
                    "UPDATE billing_ledger SET customer_id = ?3, team_id = ?4
                     WHERE id_key = ?1 AND id = ?2",
                )
                .map_err(err)?;
            for (id, customer, team) in done {
                del.execute([id]).map_err(err)?;
                upd.execute(params![id_key(id), id, customer, team])
                    .map_err(err)?;
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
