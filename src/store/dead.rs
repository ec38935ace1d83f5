//! Dead letters: undeliverable charges and unparsable lines.

use rusqlite::params;

use super::{id_key, Store, StoreError};

/// One dead letter, of either kind.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetter {
    /// `chg_…` for an undeliverable charge, `line-N` for an unparsable line.
    pub id: String,
    pub kind: &'static str,
    pub file: String,
    pub offset: u64,
    pub line: u64,
    pub reason: String,
    pub attempts: u32,
    pub when_ms: i64,
    /// The first bytes of the message or line.
    pub preview: String,
}

impl Store {
    /// Dead letters of both kinds, oldest first (charges, then lines).
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.dead_letters_first(u64::MAX)
    }

    /// The first `limit` of [`Store::dead_letters`] (the status page shows
    /// a few and counts the rest with [`Store::dead_count`]).
    pub fn dead_letters_first(&self, limit: u64) -> Result<Vec<DeadLetter>, StoreError> {
        // SQLite's LIMIT is signed; -1 is none.
        let limit_sql = |n: u64| i64::try_from(n).unwrap_or(-1);
        let mut out = Vec::new();
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, file, offset, line, COALESCE(last_error, ''), attempts, next_ms, payload
                 FROM outbox WHERE state = 'dead' ORDER BY seq LIMIT ?1",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([limit_sql(limit)], |r| {
                Ok(DeadLetter {
                    id: r.get(0)?,
                    kind: "charge",
                    file: r.get(1)?,
                    offset: r.get::<_, i64>(2)? as u64,
                    line: r.get::<_, i64>(3)? as u64,
                    reason: r.get(4)?,
                    attempts: r.get::<_, i64>(5)? as u32,
                    when_ms: r.get(6)?,
                    preview: preview(&r.get::<_, Option<Vec<u8>>>(7)?.unwrap_or_default()),
                })
            })
            .map_err(|e| self.err(e))?;
        for row in rows {
            out.push(row.map_err(|e| self.err(e))?);
        }
        let left = limit.saturating_sub(out.len() as u64);
        if left == 0 {
            return Ok(out);
        }
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, file, offset, line, reason, created_ms, raw FROM bad_lines ORDER BY id LIMIT ?1",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([limit_sql(left)], |r| {
                Ok(DeadLetter {
                    id: format!("line-{}", r.get::<_, i64>(0)?),
                    kind: "line",
                    file: r.get(1)?,
                    offset: r.get::<_, i64>(2)? as u64,
                    line: r.get::<_, i64>(3)? as u64,
                    reason: r.get(4)?,
                    attempts: 0,
                    when_ms: r.get(5)?,
                    preview: preview(&r.get::<_, Vec<u8>>(6)?),
                })
            })
            .map_err(|e| self.err(e))?;
        for row in rows {
            out.push(row.map_err(|e| self.err(e))?);
        }
        Ok(out)
    }

    /// How many dead letters there are, of both kinds.
    pub fn dead_count(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row(
                "SELECT (SELECT count(*) FROM outbox WHERE state = 'dead')
                      + (SELECT count(*) FROM bad_lines)",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    /// Put dead charges back in the outbox (all when `ids` is empty).
    /// Returns how many. Unparsable lines cannot be retried as they are:
    /// fix the profile and `replay` the file.
    pub fn retry_dead(&mut self, ids: &[String]) -> Result<u64, StoreError> {
        let sql =
            "UPDATE outbox SET state = 'pending', attempts = 0, next_ms = 0, first_fail_ms = NULL
                   WHERE state = 'dead'";
        let mut n = 0;
        if ids.is_empty() {
            n = self.conn.execute(sql, []).map_err(|e| self.err(e))? as u64;
        }
        for id in ids {
            n += self
                .conn
                .prepare_cached(&format!("{sql} AND id_key = ?1 AND id = ?2"))
                .and_then(|mut st| st.execute(params![id_key(id), id]))
                .map_err(|e| self.err(e))? as u64;
        }
        if n > 0 {
            // A running daemon holds later charges in memory: it reads the
            // outbox again when it sees this.
            self.bump_outbox_token()?;
        }
        Ok(n)
    }

    /// Delete dead letters by id (`chg_…` or `line-N`).
    pub fn drop_dead(&mut self, ids: &[String]) -> Result<u64, StoreError> {
        let mut n = 0;
        for id in ids {
            n += if let Some(num) = id.strip_prefix("line-") {
                self.conn
                    .execute("DELETE FROM bad_lines WHERE id = ?1", [num])
            } else {
                self.conn.execute(
                    "DELETE FROM outbox WHERE state = 'dead' AND id_key = ?1 AND id = ?2",
                    params![id_key(id), id],
                )
            }
            .map_err(|e| self.err(e))? as u64;
        }
        Ok(n)
    }
}

fn preview(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(120)]);
    s.replace(['\t', '\r', '\n'], " ")
}
