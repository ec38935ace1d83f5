//! Read-only reckonings for status, metrics and replay, and pruning.

use std::time::Duration;

use rusqlite::{params, OptionalExtension};

use super::{now_ms, Store, StoreError};

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Totals {
    pub pending: u64,
    pub delivered: u64,
    pub dead_charges: u64,
    pub bad_lines: u64,
    pub oldest_pending_ms: Option<i64>,
    pub last_delivered_ms: Option<i64>,
    pub last_error: Option<String>,
}

/// Queries behind `/status`, the status page and `/metrics` (each must be
/// an index lookup: the test below checks their plans).
const CREATED_SINCE: &str = "SELECT job_type, amount, currency FROM outbox WHERE created_ms >= ?1";
const OLDEST_PENDING: &str =
    "SELECT created_ms FROM outbox WHERE state = 'pending' ORDER BY seq LIMIT 1";
const LAST_DELIVERED: &str = "SELECT max(delivered_ms) FROM outbox WHERE state = 'delivered'";
const LAST_ERROR: &str = "SELECT last_error FROM outbox WHERE state = 'pending' AND last_error IS NOT NULL ORDER BY seq LIMIT 1";
const COUNTS: [&str; 4] = [
    "SELECT count(*) FROM outbox WHERE state = 'pending'",
    "SELECT count(*) FROM outbox WHERE state = 'delivered'",
    "SELECT count(*) FROM outbox WHERE state = 'dead'",
    "SELECT count(*) FROM bad_lines",
];

impl Store {
    /// How a replay run's charges stand: (pending, delivered, dead).
    pub fn run_states(&self, run: i64) -> Result<(u64, u64, u64), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT state, count(*) FROM outbox WHERE run = ?1 GROUP BY state")
            .map_err(|e| self.err(e))?;
        let mut out = (0, 0, 0);
        let rows = stmt
            .query_map([run], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })
            .map_err(|e| self.err(e))?;
        for row in rows {
            match row.map_err(|e| self.err(e))? {
                (s, n) if s == "pending" => out.0 = n,
                (s, n) if s == "delivered" => out.1 = n,
                (_, n) => out.2 += n,
            }
        }
        Ok(out)
    }

    /// Call `each(amount, currency, account)` for every charge of a replay
    /// run that was delivered (amounts summed by the caller in decimal).
    pub fn run_delivered(
        &self,
        run: i64,
        mut each: impl FnMut(Option<String>, String, String),
    ) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT amount, currency, account FROM outbox WHERE run = ?1 AND state = 'delivered'")
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query([run]).map_err(|e| self.err(e))?;
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            each(
                r.get(0).map_err(|e| self.err(e))?,
                r.get(1).map_err(|e| self.err(e))?,
                r.get(2).map_err(|e| self.err(e))?,
            );
        }
        Ok(())
    }

    /// Charges created since `since_ms`, for job statistics: calls
    /// `each(job_type, amount, currency)`.
    pub fn created_since(
        &self,
        since_ms: i64,
        mut each: impl FnMut(&str, Option<&str>, &str),
    ) -> Result<(), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(CREATED_SINCE)
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query([since_ms]).map_err(|e| self.err(e))?;
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let job: String = r.get(0).map_err(|e| self.err(e))?;
            let amount: Option<String> = r.get(1).map_err(|e| self.err(e))?;
            let currency: String = r.get(2).map_err(|e| self.err(e))?;
            each(&job, amount.as_deref(), &currency);
        }
        Ok(())
    }

    /// Charges waiting for delivery.
    pub fn backlog(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row(COUNTS[0], [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    pub fn totals(&self) -> Result<Totals, StoreError> {
        let mut t = Totals::default();
        let count = |sql: &str| -> Result<u64, StoreError> {
            self.conn
                .query_row(sql, [], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
                .map_err(|e| self.err(e))
        };
        t.pending = count(COUNTS[0])?;
        t.delivered = count(COUNTS[1])?;
        t.dead_charges = count(COUNTS[2])?;
        t.bad_lines = count(COUNTS[3])?;
        t.oldest_pending_ms = self
            .conn
            .query_row(OLDEST_PENDING, [], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?;
        t.last_delivered_ms = self
            .conn
            .query_row(LAST_DELIVERED, [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        t.last_error = self
            .conn
            .query_row(LAST_ERROR, [], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(t)
    }

    /// Forget delivered ids older than the retention, and finished file
    /// generations not seen for as long. Returns rows removed.
    pub fn prune(&mut self, retention: Duration, max_rows: u64) -> Result<u64, StoreError> {
        // At most `max_rows` per call, each call its own short transaction:
        // a first prune after the retention was lowered may have millions of
        // rows, and one huge delete would stall the daemon (and its
        // watchdog pings) and be redone after every restart.
        let cutoff = now_ms() - retention.as_millis() as i64;
        let limit = max_rows as i64;
        let a = self
            .conn
            .execute(
                "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox
                 WHERE state = 'delivered' AND delivered_ms < ?1 LIMIT ?2)",
                params![cutoff, limit],
            )
            .map_err(|e| self.err(e))?;
        let b = self
            .conn
            .execute(
                "DELETE FROM files WHERE generation IN (SELECT generation FROM files
                 WHERE finished = 1 AND updated_ms < ?1 LIMIT ?2)",
                params![cutoff, limit],
            )
            .map_err(|e| self.err(e))?;
        Ok((a + b) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_queries_never_scan_the_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).unwrap();
        let all = [CREATED_SINCE, OLDEST_PENDING, LAST_DELIVERED, LAST_ERROR]
            .into_iter()
            .chain(COUNTS);
        for sql in all {
            let mut stmt = store
                .conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap();
            let plan: Vec<String> = stmt
                .query_map(
                    rusqlite::params_from_iter(std::iter::repeat_n(0i64, sql.matches('?').count())),
                    |r| r.get::<_, String>(3),
                )
                .unwrap()
                .map(Result::unwrap)
                .collect();
            // "SCAN outbox" alone reads every row; "USING ... INDEX" or a
            // "SEARCH" does not.
            for step in &plan {
                assert!(
                    !step.starts_with("SCAN outbox") || step.contains("INDEX"),
                    "{sql}: {plan:?}"
                );
                assert!(!step.contains("TEMP B-TREE"), "{sql}: {plan:?}");
            }
        }
    }
}
