//! The outbox as the deliver stage sees it: pending charges oldest first,
//! outcomes recorded, replay runs adopting charges, the resume token.

use std::time::Duration;

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{classify_with, now_ms, RetrySchedule, Store, StoreError};
use crate::sink::{Envelope, Outcome};

/// A pending charge as the deliver stage needs it.
#[derive(Debug, Clone)]
pub struct Pending {
    pub envelope: Envelope,
    pub next_ms: i64,
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
                "SELECT seq, id, payload, job_type, account_type, attempts, next_ms, created_ms
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
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.err(e));
        rows
    }

    /// Record what the sink said, in one transaction. Returns how many were
    /// delivered and how many became dead letters.
    pub fn record(
        &mut self,
        results: &[(&Envelope, Outcome)],
        policy: &impl RetrySchedule,
    ) -> Result<(u64, u64), StoreError> {
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
                     first_fail_ms = COALESCE(first_fail_ms, ?4) WHERE seq = ?1 AND state = 'pending'",
                )
                .map_err(|e| classify_with(&self.path, e))?;
            let mut kill = tx
                .prepare_cached(
                    "UPDATE outbox SET state = 'dead', attempts = attempts + 1, last_error = ?2,
                     first_fail_ms = COALESCE(first_fail_ms, ?3), next_ms = ?3 WHERE seq = ?1 AND state = 'pending'",
                )
                .map_err(|e| classify_with(&self.path, e))?;
            let mut first_fail = tx
                .prepare_cached("SELECT first_fail_ms FROM outbox WHERE seq = ?1")
                .map_err(|e| classify_with(&self.path, e))?;
            for (env, outcome) in results {
                match outcome {
                    Outcome::Delivered => {
                        delivered += ok
                            .execute(params![env.seq, now])
                            .map_err(|e| classify_with(&self.path, e))?
                            as u64;
                    }
                    Outcome::Retry { error, retry_after } => {
                        let since: Option<i64> = first_fail
                            .query_row([env.seq], |r| r.get(0))
                            .map_err(|e| classify_with(&self.path, e))?;
                        let failing_for =
                            Duration::from_millis((now - since.unwrap_or(now)).max(0) as u64);
                        match policy.next_delay(env.attempts, failing_for, *retry_after) {
                            None => {
                                let msg = format!(
                                    "gave up after {}s of retries: {error}",
                                    failing_for.as_secs()
                                );
                                dead += kill
                                    .execute(params![env.seq, msg, now])
                                    .map_err(|e| classify_with(&self.path, e))?
                                    as u64;
                            }
                            Some(delay) => {
                                let next = now + delay.as_millis() as i64;
                                retry
                                    .execute(params![env.seq, next, error, now])
                                    .map_err(|e| classify_with(&self.path, e))?;
                            }
                        }
                    }
                    Outcome::Reject { error } => {
                        dead += kill
                            .execute(params![env.seq, error, now])
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
