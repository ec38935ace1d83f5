//! Store stage: one SQLite file holding file positions, the outbox, the
//! delivered-ids ledger and dead letters.
//!
//! The charges parsed from a batch of lines and the position after those
//! lines are committed in ONE transaction: after a crash at any instant
//! either both are there or neither is, so a line is never skipped and never
//! turned into a second, different charge.
//!
//! Durability: WAL with `synchronous = NORMAL`. A commit survives a process
//! crash (`kill -9`) because WAL pages are in the OS page cache; after a
//! power failure the last commits may be lost. That is safe here: the
//! PaperCut file still holds the lines, our position rolls back with them,
//! and they are read again into charges with the *same* ids — at worst a
//! redelivery the receiver de-duplicates, never a lost charge. `FULL` would
//! add an fsync to every commit (several ms each on common disks), which
//! buys nothing that the source file does not already give us.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

use crate::sink::{Envelope, Outcome};
use crate::source::Checkpoint;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "state database {path} is damaged ({detail}); refusing to start. Restore it from a \
         backup or move it away (chargetail will then read every file from the start, and \
         charges already delivered are sent again with the same ids)"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "state database {path} has schema version {found}, newer than this chargetail \
         understands ({known}); upgrade chargetail"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("cannot create the directory for the state database {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A parsed charge ready for the outbox.
#[derive(Debug, Clone)]
pub struct NewCharge {
    pub id: String,
    pub payload: Vec<u8>,
    pub job_type: String,
    pub account_type: String,
    pub account: String,
    /// Decimal string of the billed amount, if the file had one.
    pub amount: Option<String>,
    pub currency: String,
    pub file: String,
    pub offset: u64,
    pub line: u64,
    /// The replay run that queues it (0: the daemon).
    pub run: i64,
}

/// A line that could not be parsed.
#[derive(Debug, Clone)]
pub struct BadLine {
    pub file: String,
    pub offset: u64,
    pub line: u64,
    pub raw: Vec<u8>,
    pub reason: String,
}

/// What a committed batch did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Committed {
    /// New charges put in the outbox.
    pub inserted: u64,
    /// Charges whose id was already known (re-read copy, replay): ignored.
    pub duplicates: u64,
    pub bad_lines: u64,
    /// Indexes (into the committed slice) of the ignored charges.
    pub ignored: Vec<usize>,
}

/// When a charge whose delivery failed is tried again. The deliver stage
/// owns the policy (`deliver::RetryPolicy`); the store only asks it, inside
/// the transaction that records the outcome.
pub trait RetrySchedule {
    /// The delay before the next attempt after `attempts` earlier ones, the
    /// charge failing for `failing_for` since its first failure, the
    /// endpoint asking for `retry_after`; `None`: give up (a dead letter).
    fn next_delay(
        &self,
        attempts: u32,
        failing_for: Duration,
        retry_after: Option<Duration>,
    ) -> Option<Duration>;
}

const SCHEMA_VERSION: i64 = 1;

/// Migrations, applied in order; `user_version` records how many ran. Never
/// edit a released one: add a new one.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE files (
    generation  INTEGER PRIMARY KEY,
    path        TEXT NOT NULL,
    dev         INTEGER NOT NULL,
    ino         INTEGER NOT NULL,
    fp_len      INTEGER NOT NULL,
    fingerprint TEXT NOT NULL,
    offset      INTEGER NOT NULL,
    line        INTEGER NOT NULL,
    size        INTEGER NOT NULL,
    finished    INTEGER NOT NULL DEFAULT 0,
    updated_ms  INTEGER NOT NULL
);
-- The outbox and the delivered-ids ledger in one table: a charge id is
-- inserted once (UNIQUE), whatever file or replay it is read from again.
-- Delivered rows drop their payload and stay as the ledger until pruned.
CREATE TABLE outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    state        TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    payload      BLOB,
    job_type     TEXT NOT NULL,
    account_type TEXT NOT NULL,
    account      TEXT NOT NULL,
    amount       TEXT,
    currency     TEXT NOT NULL,
    file         TEXT NOT NULL,
    offset       INTEGER NOT NULL,
    line         INTEGER NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_ms      INTEGER NOT NULL DEFAULT 0,
    first_fail_ms INTEGER,
    last_error   TEXT,
    created_ms   INTEGER NOT NULL,
    delivered_ms INTEGER,
    -- Which replay run queued it (0: the daemon), for a replay's reckoning.
    run          INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX outbox_run ON outbox (run) WHERE run != 0;
CREATE INDEX outbox_pending ON outbox (seq) WHERE state = 'pending';
CREATE INDEX outbox_dead ON outbox (seq) WHERE state = 'dead';
CREATE INDEX outbox_delivered_ms ON outbox (delivered_ms) WHERE state = 'delivered';
-- Lines that could not be parsed. `key` (file, line number, bytes) makes a
-- re-read of the same line (after a crash, a replay) not a second one.
CREATE TABLE bad_lines (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    key        TEXT NOT NULL UNIQUE,
    file       TEXT NOT NULL,
    offset     INTEGER NOT NULL,
    line       INTEGER NOT NULL,
    raw        BLOB NOT NULL,
    reason     TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"#];

pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// A pending charge as the deliver stage needs it.
#[derive(Debug, Clone)]
pub struct Pending {
    pub envelope: Envelope,
    pub next_ms: i64,
    /// When the line was committed to the outbox (for delivery latency).
    pub created_ms: i64,
}

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

impl Store {
    /// Open (creating if needed) and migrate. Refuses a damaged database
    /// rather than starting over, which would silently re-bill or skip.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_inner(path, true)
    }

    /// `open` without the `quick_check` scan, which reads the whole file
    /// (about a second per GB): for a process's further connections once
    /// its first `open` has checked, and for `status`, which must stay quick
    /// with a large backlog. Damage it runs into is still `Corrupt`.
    pub fn open_unchecked(path: &Path) -> Result<Store, StoreError> {
        Store::open_inner(path, false)
    }

    fn open_inner(path: &Path, check: bool) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() && !dir.exists() {
                std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                    path: path.to_path_buf(),
                    source,
                })?;
            }
        }
        let sq = |source| StoreError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sq)?;
        // Concurrent writers (daemon, replay, dead-letters tools) wait for
        // each other instead of failing with SQLITE_BUSY.
        conn.busy_timeout(Duration::from_secs(60)).map_err(sq)?;
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
        };
        if check {
            store.check_integrity()?;
        }
        store
            // 16 MiB page cache: the outbox's hot pages stay in memory while a
            // large backlog drains (the default 2 MiB keeps re-reading them);
            // checkpoints (each an fsync) every 32 MiB of WAL instead of 4 MiB.
            .conn
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;
                 PRAGMA cache_size = -16384; PRAGMA wal_autocheckpoint = 8192;",
            )
            .map_err(|e| store.classify(e))?;
        store.migrate()?;
        Ok(store)
    }

    fn classify(&self, e: rusqlite::Error) -> StoreError {
        use rusqlite::ErrorCode::*;
        match e.sqlite_error_code() {
            Some(DatabaseCorrupt) | Some(NotADatabase) => StoreError::Corrupt {
                path: self.path.clone(),
                detail: e.to_string(),
            },
            _ => StoreError::Sqlite {
                path: self.path.clone(),
                source: e,
            },
        }
    }

    fn check_integrity(&self) -> Result<(), StoreError> {
        let result: Result<String, _> = self.conn.query_row("PRAGMA quick_check", [], |r| r.get(0));
        match result {
            Ok(s) if s == "ok" => Ok(()),
            Ok(s) => Err(StoreError::Corrupt {
                path: self.path.clone(),
                detail: s,
            }),
            Err(e) => Err(self.classify(e)),
        }
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.classify(e))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found: version,
                known: SCHEMA_VERSION,
            });
        }
        if version == SCHEMA_VERSION {
            return Ok(());
        }
        let path = self.path.clone();
        let sq = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        // Read the version again under the write lock: another process (the
        // daemon starting while `status` runs) may have migrated meanwhile,
        // and running a migration twice fails ("table already exists").
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sq)?;
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sq)?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            tx.execute_batch(sql)
                .and_then(|_| tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1)))
                .map_err(sq)?;
        }
        tx.commit().map_err(sq)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// WAL pages after which a commit on this connection checkpoints (and
    /// fsyncs) before it returns. `open` sets 8192 (32 MiB) for throughput;
    /// the daemon lowers it on its connections: the checkpoint runs inside
    /// the commit of the reading or delivering thread, and its fsync of up
    /// to 32 MiB of WAL stalls that thread for tens of milliseconds.
    pub fn set_wal_autocheckpoint(&self, pages: u32) -> Result<(), StoreError> {
        self.conn
            .pragma_update(None, "wal_autocheckpoint", pages)
            .map_err(|e| self.err(e))
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        self.classify(source)
    }

    /// Every known file generation (finished ones too: they are never read
    /// again, and their ids must not be reused).
    pub fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT generation, path, dev, ino, fp_len, fingerprint, offset, line, size, finished
                 FROM files ORDER BY generation",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Checkpoint {
                    generation: r.get::<_, i64>(0)? as u64,
                    path: PathBuf::from(r.get::<_, String>(1)?),
                    dev: r.get::<_, i64>(2)? as u64,
                    ino: r.get::<_, i64>(3)? as u64,
                    fp_len: r.get::<_, i64>(4)? as u64,
                    fingerprint: r.get(5)?,
                    offset: r.get::<_, i64>(6)? as u64,
                    line: r.get::<_, i64>(7)? as u64,
                    size: r.get::<_, i64>(8)? as u64,
                    finished: r.get(9)?,
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.err(e));
        rows
    }

    /// Commit a batch: the charges and bad lines read, and (when following)
    /// the position after them, in one transaction.
    pub fn commit(
        &mut self,
        checkpoint: Option<&Checkpoint>,
        charges: &[NewCharge],
        bad: &[BadLine],
    ) -> Result<Committed, StoreError> {
        let now = now_ms();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| classify_with(&self.path, e))?;
        let mut done = Committed::default();
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO outbox
                     (id, state, payload, job_type, account_type, account, amount, currency, file, offset, line, created_ms, run)
                     VALUES (?1, 'pending', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )
                .map_err(|e| classify_with(&self.path, e))?;
            for (i, c) in charges.iter().enumerate() {
                let n = ins
                    .execute(params![
                        c.id,
                        c.payload,
                        c.job_type,
                        c.account_type,
                        c.account,
                        c.amount,
                        c.currency,
                        c.file,
                        c.offset as i64,
                        c.line as i64,
                        now,
                        c.run
                    ])
                    .map_err(|e| classify_with(&self.path, e))?;
                if n == 1 {
                    done.inserted += 1;
                } else {
                    done.duplicates += 1;
                    done.ignored.push(i);
                }
            }
            let mut ins_bad = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO bad_lines (key, file, offset, line, raw, reason, created_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(|e| classify_with(&self.path, e))?;
            for b in bad {
                // The same line of the same file read again (after a crash,
                // by a replay): one dead letter. Another file with an equal
                // bad line is its own dead letter: better two than none.
                let key = bad_line_key(&b.file, &b.raw, b.line);
                let n = ins_bad
                    .execute(params![
                        key,
                        b.file,
                        b.offset as i64,
                        b.line as i64,
                        b.raw,
                        b.reason,
                        now
                    ])
                    .map_err(|e| classify_with(&self.path, e))?;
                done.bad_lines += n as u64;
            }
            if let Some(cp) = checkpoint {
                tx.prepare_cached(
                    "INSERT INTO files (generation, path, dev, ino, fp_len, fingerprint, offset, line, size, finished, updated_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                     ON CONFLICT (generation) DO UPDATE SET path = ?2, dev = ?3, ino = ?4, fp_len = ?5,
                       fingerprint = ?6, offset = ?7, line = ?8, size = ?9, finished = ?10, updated_ms = ?11",
                )
                .and_then(|mut st| {
                    st.execute(params![
                        cp.generation as i64,
                        cp.path.to_string_lossy(),
                        cp.dev as i64,
                        cp.ino as i64,
                        cp.fp_len as i64,
                        cp.fingerprint,
                        cp.offset as i64,
                        cp.line as i64,
                        cp.size as i64,
                        cp.finished,
                        now
                    ])
                })
                .map_err(|e| classify_with(&self.path, e))?;
            }
        }
        tx.commit().map_err(|e| classify_with(&self.path, e))?;
        Ok(done)
    }

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
            .prepare_cached("SELECT job_type, amount, currency FROM outbox WHERE created_ms >= ?1")
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
            .query_row(
                "SELECT count(*) FROM outbox WHERE state = 'pending'",
                [],
                |r| r.get::<_, i64>(0),
            )
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
        t.pending = count("SELECT count(*) FROM outbox WHERE state = 'pending'")?;
        t.delivered = count("SELECT count(*) FROM outbox WHERE state = 'delivered'")?;
        t.dead_charges = count("SELECT count(*) FROM outbox WHERE state = 'dead'")?;
        t.bad_lines = count("SELECT count(*) FROM bad_lines")?;
        t.oldest_pending_ms = self
            .conn
            .query_row(
                "SELECT created_ms FROM outbox WHERE state = 'pending' ORDER BY seq LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        t.last_delivered_ms = self
            .conn
            .query_row(
                "SELECT max(delivered_ms) FROM outbox WHERE state = 'delivered'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        t.last_error = self
            .conn
            .query_row(
                "SELECT last_error FROM outbox WHERE state = 'pending' AND last_error IS NOT NULL ORDER BY seq LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(t)
    }

    /// Dead letters of both kinds, oldest first.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        let mut out = Vec::new();
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, file, offset, line, COALESCE(last_error, ''), attempts, next_ms, payload
                 FROM outbox WHERE state = 'dead' ORDER BY seq",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
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
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, file, offset, line, reason, created_ms, raw FROM bad_lines ORDER BY id",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
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

    /// Put dead charges back in the outbox (all when `ids` is empty).
    /// Returns how many. Unparsable lines cannot be retried as they are:
    /// fix the profile and `replay` the file.
    pub fn retry_dead(&mut self, ids: &[String]) -> Result<u64, StoreError> {
        let sql =
            "UPDATE outbox SET state = 'pending', attempts = 0, next_ms = 0, first_fail_ms = NULL
                   WHERE state = 'dead'";
        if ids.is_empty() {
            return self
                .conn
                .execute(sql, [])
                .map(|n| n as u64)
                .map_err(|e| self.err(e));
        }
        let mut n = 0;
        for id in ids {
            n += self
                .conn
                .execute(&format!("{sql} AND id = ?1"), [id])
                .map_err(|e| self.err(e))? as u64;
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
                self.conn
                    .execute("DELETE FROM outbox WHERE state = 'dead' AND id = ?1", [id])
            }
            .map_err(|e| self.err(e))? as u64;
        }
        Ok(n)
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

fn classify_with(path: &Path, e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::*;
    match e.sqlite_error_code() {
        Some(DatabaseCorrupt) | Some(NotADatabase) => StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: e.to_string(),
        },
        _ => StoreError::Sqlite {
            path: path.to_path_buf(),
            source: e,
        },
    }
}

fn bad_line_key(file: &str, raw: &[u8], line: u64) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(file.as_bytes());
    h.update(b"\0");
    h.update(raw);
    h.update(b"\0");
    h.update(line.to_string());
    hex::encode(&h.finalize()[..16])
}

fn preview(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(120)]);
    s.replace(['\t', '\r', '\n'], " ")
}
