//! The outbox as the deliver stage sees it: pending charges oldest first,
//! outcomes recorded, replay runs adopting charges, the resume token.

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{classify_with, id_key, now_ms, Store, StoreError};
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
                "UPDATE outbox SET run = ?3 WHERE id_key = ?1 AND id = ?2 AND state = 'pending'
                 AND run != ?3",
            )
            .and_then(|mut st| st.execute(params![id_key(id), id, run]))
            .map(|n| n == 1)
            .map_err(|e| self.err(e))
    }

    /// A dead charge read again by a replay: it was never delivered, so it
    /// goes back in the outbox as part of run `run`, with a fresh schedule.
    /// The stored message bytes are kept; `payload` (the charge as read
    /// now, same id) only fills in if none are stored.
    pub fn requeue_dead(&mut self, id: &str, run: i64, payload: &[u8]) -> Result<bool, StoreError> {
        let requeued = self
            .conn
            .prepare_cached(
                "UPDATE outbox SET state = 'pending', run = ?3, attempts = 0, next_ms = 0,
                 first_fail_ms = NULL, payload = COALESCE(payload, ?4)
                 WHERE id_key = ?1 AND id = ?2 AND state = 'dead'",
            )
            .and_then(|mut st| st.execute(params![id_key(id), id, run, payload]))
            .map(|n| n == 1)
            .map_err(|e| self.err(e))?;
        if requeued {
            // Pending again, maybe before what a running daemon holds.
            self.bump_outbox_token()?;
        }
        Ok(requeued)
    }

    /// Whether a charge id is already in the outbox or ledger.
    pub fn known(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.conn
            .prepare_cached("SELECT state FROM outbox WHERE id_key = ?1 AND id = ?2")
            .and_then(|mut st| {
                st.query_row(params![id_key(id), id], |r| r.get(0))
                    .optional()
            })
            .map_err(|e| self.err(e))
    }

    /// The oldest pending charges, in outbox order.
    pub fn pending(&self, limit: usize) -> Result<Vec<Pending>, StoreError> {
        self.pending_after(0, limit).map(|(rows, _)| rows)
    }

    /// The oldest pending charges after `seq`, in outbox order, and the
    /// highest `seq` in the outbox at that moment (one read transaction):
    /// when fewer than `limit` come back, every pending charge up to that
    /// `seq` is among them.
    pub fn pending_after(&self, seq: i64, limit: usize) -> Result<(Vec<Pending>, i64), StoreError> {
        let tx = self.conn.unchecked_transaction().map_err(|e| self.err(e))?;
        let rows = {
            let mut stmt = tx
                .prepare_cached(
                    "SELECT seq, id, payload, job_type, account_type, attempts, next_ms, created_ms, first_fail_ms, wait_ms
                     FROM outbox WHERE state = 'pending' AND seq > ?1 ORDER BY seq LIMIT ?2",
                )
                .map_err(|e| self.err(e))?;
            let rows = stmt
                .query_map(params![seq, limit as i64], |r| {
                    Ok(Pending {
                        envelope: Envelope {
                            seq: r.get(0)?,
                            id: r.get(1)?,
                            payload: r.get::<_, Option<Vec<u8>>>(2)?.unwrap_or_default(),
                            job_type: r.get(3)?,
                            account_type: r.get(4)?,
                            attempts: r.get::<_, i64>(5)? as u32,
                            attrs: Default::default(),
                        },
                        next_ms: r.get(6)?,
                        created_ms: r.get(7)?,
                        first_fail_ms: r.get(8)?,
                        wait_ms: r.get(9)?,
                    })
                })
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(|e| self.err(e))?;
            rows
        };
        let top: i64 = tx
            .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM outbox")
            .and_then(|mut st| st.query_row([], |r| r.get(0)))
            .map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok((rows, top))
    }

    /// SQLite's `data_version`: changes when another connection (thread or
    /// process) commits to the database. Reads no page.
    pub fn data_version(&self) -> Result<i64, StoreError> {
        self.conn
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Record what became of the charges attempted, in one transaction
    /// (the deliver stage decides; charges it did not attempt are not
    /// listed and stay as they are). Returns how many were delivered and
    /// how many became dead letters.
    pub fn record(&mut self, results: &[(&Envelope, Record)]) -> Result<(u64, u64), StoreError> {
        let by_seq: Vec<(i64, Record)> = results.iter().map(|(e, r)| (e.seq, r.clone())).collect();
        self.record_seqs(&by_seq)
    }

    /// [`Store::record`] by outbox `seq` (owned, for a blocking thread).
    /// Delivered charges with consecutive `seq`s are marked by one range
    /// UPDATE: a batch delivered whole is one statement.
    pub fn record_seqs(&mut self, results: &[(i64, Record)]) -> Result<(u64, u64), StoreError> {
        let now = now_ms();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| classify_with(&self.path, e))?;
        let (mut delivered, mut dead) = (0, 0);
        {
            let mut ok = tx
                .prepare_cached(
                    "UPDATE outbox SET state = 'delivered', payload = NULL, delivered_ms = ?3,
                     attempts = attempts + 1, last_error = NULL
                     WHERE seq BETWEEN ?1 AND ?2 AND state = 'pending'",
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
            // A run of delivered seqs a..=b, each one more than the last.
            let mut run: Option<(i64, i64)> = None;
            let mut flush = |run: &mut Option<(i64, i64)>| -> Result<u64, StoreError> {
                match run.take() {
                    Some((a, b)) => ok
                        .execute(params![a, b, now])
                        .map(|n| n as u64)
                        .map_err(|e| classify_with(&self.path, e)),
                    None => Ok(0),
                }
            };
            for (seq, rec) in results {
                if let Record::Delivered = rec {
                    run = match run {
                        Some((a, b)) if b + 1 == *seq => Some((a, *seq)),
                        other => {
                            let mut other = other;
                            delivered += flush(&mut other)?;
                            Some((*seq, *seq))
                        }
                    };
                    continue;
                }
                delivered += flush(&mut run)?;
                match rec {
                    Record::Delivered => {}
                    Record::Retry {
                        next_ms,
                        wait_ms,
                        first_fail_ms,
                        error,
                    } => {
                        retry
                            .execute(params![seq, next_ms, error, first_fail_ms, wait_ms])
                            .map_err(|e| classify_with(&self.path, e))?;
                    }
                    Record::Dead {
                        error,
                        first_fail_ms,
                    } => {
                        dead += kill
                            .execute(params![seq, error, first_fail_ms, now])
                            .map_err(|e| classify_with(&self.path, e))?
                            as u64;
                    }
                }
            }
            delivered += flush(&mut run)?;
        }
        tx.commit().map_err(|e| classify_with(&self.path, e))?;
        Ok((delivered, dead))
    }

    /// Counters other processes bump so that a running daemon notices what
    /// they did to the outbox without re-reading it: `resume_token`
    /// (`dead-letters retry`: also lift a pause the sink imposed, such as a
    /// 410 Gone) and `outbox_token` (a replay queued or re-queued charges,
    /// dead letters put back). One indexed read.
    pub fn change_tokens(&self) -> Result<(i64, i64), StoreError> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT key, value FROM meta WHERE key IN ('resume_token', 'outbox_token')",
            )
            .map_err(|e| self.err(e))?;
        let mut rows = st.query([]).map_err(|e| self.err(e))?;
        let (mut resume, mut outbox) = (0, 0);
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let key: String = r.get(0).map_err(|e| self.err(e))?;
            let value: String = r.get(1).map_err(|e| self.err(e))?;
            let v = value.parse().unwrap_or(0);
            if key == "resume_token" {
                resume = v;
            } else {
                outbox = v;
            }
        }
        Ok((resume, outbox))
    }

    /// See [`Store::change_tokens`].
    pub fn resume_token(&self) -> Result<i64, StoreError> {
        self.change_tokens().map(|(r, _)| r)
    }

    pub fn bump_resume_token(&mut self) -> Result<(), StoreError> {
        self.bump_token("resume_token")
    }

    /// Another process changed pending charges (see [`Store::change_tokens`]).
    pub fn bump_outbox_token(&mut self) -> Result<(), StoreError> {
        self.bump_token("outbox_token")
    }

    fn bump_token(&mut self, key: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO meta (key, value) VALUES (?1, '1')
                 ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
            )
            .and_then(|mut st| st.execute([key]))
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
