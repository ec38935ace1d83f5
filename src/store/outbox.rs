//! The outbox as the deliver stage sees it: pending charges oldest first,
//! outcomes recorded, replay runs adopting charges, the resume token.

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{classify_with, now_ms, Store, StoreError};
use crate::sink::Envelope;

/// What to write for one attempted charge (decided by the deliver stage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Delivered,
    /// Failed; try again at `next_ms` (wall clock, for restarts: read back
    /// capped by the policy's maximum). `first_fail_ms` starts the give-up
    /// clock.
    Retry {
        next_ms: i64,
        /// The delay asked for (`next_ms` minus now).
        wait_ms: i64,
        first_fail_ms: i64,
        error: String,
    },
    /// Rejected, or retried for longer than the policy allows.
    Dead {
        error: String,
        first_fail_ms: i64,
    },
}

/// A pending charge as the deliver stage needs it.
#[derive(Debug, Clone)]
pub struct Pending {
    pub envelope: Envelope,
    pub next_ms: i64,
    /// When its first failed attempt was (its give-up clock), if any.
    pub first_fail_ms: Option<i64>,
    /// The delay asked for at its last failure.
    pub wait_ms: i64,
    /// When the line was committed to the outbox (for delivery latency).
    pub created_ms: i64,
}

impl Store {
    /// Make a pending charge part of replay run `run`, so that run delivers
    /// (or waits for) it: a charge queued by an interrupted replay is still
    /// owed, and the replay that reads it again must see it through.
    pub fn adopt(&mut self, id: &str, run: i64) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE outbox SET run = ?2 WHERE id = ?1 AND state = 'pending' AND run != ?2",
            )
            .and_then(|mut st| st.execute(params![id, run]))
            .map(|n| n == 1)
            .map_err(|e| self.err(e))
    }

    /// A dead charge read again by a replay: it was never delivered, so it
    /// goes back in the outbox as part of run `run`, with a fresh schedule.
    /// The stored message bytes are kept; `payload` (the charge as read
    /// now, same id) only fills in if none are stored.
    pub fn requeue_dead(&mut self, id: &str, run: i64, payload: &[u8]) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE outbox SET state = 'pending', run = ?2, attempts = 0, next_ms = 0,
                 first_fail_ms = NULL, payload = COALESCE(payload, ?3) WHERE id = ?1 AND state = 'dead'",
            )
            .and_then(|mut st| st.execute(params![id, run, payload]))
            .map(|n| n == 1)
            .map_err(|e| self.err(e))
    }

    /// Whether a charge id is already in the outbox or ledger.
    pub fn known(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .prepare_cached("SELECT state FROM outbox WHERE id = ?1")
            .and_then(|mut st| st.query_row([id], |r| r.get(0)).optional())
            .map_err(|e| self.err(e))
    }

    /// The oldest pending charges, in outbox order.
    pub fn pending(&self, limit: usize) -> Result<Vec<Pending>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, id, payload, job_type, account_type, attempts, next_ms, created_ms, first_fail_ms, wait_ms
                 FROM outbox WHERE state = 'pending' ORDER BY seq LIMIT ?1",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                Ok(Pending {
                    envelope: Envelope {
                        seq: r.get(0)?,
                        id: r.get(1)?,
                        payload: r.get::<_, Option<Vec<u8>>>(2)?.unwrap_or_default(),
                        job_type: r.get(3)?,
                        account_type: r.get(4)?,
                        attempts: r.get::<_, i64>(5)? as u32,
                    },
                    next_ms: r.get(6)?,
                    created_ms: r.get(7)?,
                    first_fail_ms: r.get(8)?,
                    wait_ms: r.get(9)?,
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.err(e));
        rows
    }

    /// Record what became of the charges attempted, in one transaction
    /// (the deliver stage decides; charges it did not attempt are not
    /// listed and stay as they are). Returns how many were delivered and
    /// how many became dead letters.
    pub fn record(&mut self, results: &[(&Envelope, Record)]) -> Result<(u64, u64), StoreError> {
        let now = now_ms();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| classify_with(&self.path, e))?;
        let (mut delivered, mut dead) = (0, 0);
        {
            let mut ok = tx
                .prepare_cached(
                    "UPDATE outbox SET state = 'delivered', payload = NULL, delivered_ms = ?2,
                     attempts = attempts + 1, last_error = NULL WHERE seq = ?1 AND state = 'pending'",
                )
                .map_err(|e| classify_with(&self.path, e))?;
            let mut retry = tx
                .prepare_cached(
                    "UPDATE outbox SET attempts = attempts + 1, next_ms = ?2, last_error = ?3,
                     first_fail_ms = ?4, wait_ms = ?5 WHERE seq = ?1 AND state = 'pending'",
                )
                .map_err(|e| classify_with(&self.path, e))?;
            let mut kill = tx
                .prepare_cached(
                    "UPDATE outbox SET state = 'dead', attempts = attempts + 1, last_error = ?2,
                     first_fail_ms = ?3, next_ms = ?4 WHERE seq = ?1 AND state = 'pending'",
                )
                .map_err(|e| classify_with(&self.path, e))?;
            for (env, rec) in results {
                match rec {
                    Record::Delivered => {
                        delivered += ok
                            .execute(params![env.seq, now])
                            .map_err(|e| classify_with(&self.path, e))?
                            as u64;
                    }
                    Record::Retry {
                        next_ms,
                        wait_ms,
                        first_fail_ms,
                        error,
                    } => {
                        retry
                            .execute(params![env.seq, next_ms, error, first_fail_ms, wait_ms])
                            .map_err(|e| classify_with(&self.path, e))?;
                    }
                    Record::Dead {
                        error,
                        first_fail_ms,
                    } => {
                        dead += kill
                            .execute(params![env.seq, error, first_fail_ms, now])
                            .map_err(|e| classify_with(&self.path, e))?
                            as u64;
                    }
                }
            }
        }
        tx.commit().map_err(|e| classify_with(&self.path, e))?;
        Ok((delivered, dead))
    }

    /// A counter `dead-letters retry` bumps so that a running daemon (another
    /// process) lifts a pause its sink imposed (410 Gone).
    pub fn resume_token(&self) -> Result<i64, StoreError> {
        self.conn
            .prepare_cached("SELECT value FROM meta WHERE key = 'resume_token'")
            .and_then(|mut st| st.query_row([], |r| r.get::<_, String>(0)).optional())
            .map(|v| v.and_then(|v| v.parse().ok()).unwrap_or(0))
            .map_err(|e| self.err(e))
    }

    pub fn bump_resume_token(&mut self) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES ('resume_token', '1')
                 ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
                [],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Make every pending charge due now (a paused sink was resumed by an
    /// operator). Returns how many were waiting.
    pub fn make_due_now(&mut self) -> Result<u64, StoreError> {
        let now = now_ms();
        self.conn
            .execute(
                "UPDATE outbox SET next_ms = ?1 WHERE state = 'pending' AND next_ms > ?1",
                [now],
            )
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }
}
