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

mod checkpoint;
mod commit;
mod dead;
mod ledger;
mod outbox;
mod reports;
mod schema;

pub use checkpoint::{CheckpointCounts, Checkpointer};
pub use commit::{BadLine, Committed, NewCharge, Rows};
pub use dead::DeadLetter;
pub use ledger::{id_key, Held, HoldReason, LedgerEntry};
pub use outbox::{Pending, Record};
pub use reports::Totals;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::source::Checkpoint;
use schema::{MIGRATIONS, SCHEMA_VERSION};

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

pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl Store {
    /// Open (creating if needed) and migrate. Refuses a damaged database
    /// rather than starting over, which would silently re-bill or skip.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_inner(path, true, SCHEMA_VERSION)
    }

    /// `open` without the `quick_check` scan, which reads the whole file
    /// (about a second per GB): for a process's further connections once
    /// its first `open` has checked, and for `status`, which must stay quick
    /// with a large backlog. Damage it runs into is still `Corrupt`.
    pub fn open_unchecked(path: &Path) -> Result<Store, StoreError> {
        Store::open_inner(path, false, SCHEMA_VERSION)
    }

    /// Open, migrating only up to schema `version` (at most the current):
    /// for tests that build the state an older release left behind
    /// (tests/migration.rs), then open it as today's release does.
    #[doc(hidden)]
    pub fn open_at_version(path: &Path, version: i64) -> Result<Store, StoreError> {
        Store::open_inner(path, true, version.min(SCHEMA_VERSION))
    }

    fn open_inner(path: &Path, check: bool, target: i64) -> Result<Store, StoreError> {
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
            // 4 MiB page cache per connection, by measurement (300,000 lines,
            // two alternating pairs against 16 MiB, load 1.1-1.5): peak RSS of
            // run 62-65 -> 42-47 MB, ingest 51 -> 38 MB, replay 52 -> 34 MB;
            // run CPU +5-7 %, ingest -2-6 %, replay -10-21 %. At 2 MiB ingest
            // lost up to a quarter. Checkpoints (each an fsync) every 32 MiB
            // of WAL instead of 4 MiB.
            .conn
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;
                 PRAGMA cache_size = -4096; PRAGMA wal_autocheckpoint = 8192;",
            )
            .map_err(|e| store.err(e))?;
        store.migrate(target)?;
        Ok(store)
    }

    fn check_integrity(&self) -> Result<(), StoreError> {
        let result: Result<String, _> = self.conn.query_row("PRAGMA quick_check", [], |r| r.get(0));
        match result {
            Ok(s) if s == "ok" => Ok(()),
            Ok(s) => Err(StoreError::Corrupt {
                path: self.path.clone(),
                detail: s,
            }),
            Err(e) => Err(self.err(e)),
        }
    }

    fn migrate(&mut self, target: i64) -> Result<(), StoreError> {
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: self.path.clone(),
                found: version,
                known: SCHEMA_VERSION,
            });
        }
        if version >= target {
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
        let todo = MIGRATIONS.iter().enumerate().take(target as usize);
        for (i, m) in todo.skip(version as usize) {
            match m {
                schema::Migration::Sql(sql) => tx.execute_batch(sql),
                schema::Migration::Code(f) => f(&tx),
            }
            .and_then(|_| tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1)))
            .map_err(sq)?;
        }
        tx.commit().map_err(sq)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// WAL pages after which a commit on this connection checkpoints (and
    /// fsyncs) before it returns. `open` sets 8192 (32 MiB) for throughput
    /// (replay, the CLI tools); the daemon's connections have 0 (none) and a
    /// [`Checkpointer`] instead, see `checkpoint.rs`.
    pub fn set_wal_autocheckpoint(&self, pages: u32) -> Result<(), StoreError> {
        self.conn
            .pragma_update(None, "wal_autocheckpoint", pages)
            .map_err(|e| self.err(e))
    }

    /// The one mapping of SQLite errors for this database (see [`classify_with`]).
    fn err(&self, source: rusqlite::Error) -> StoreError {
        classify_with(&self.path, source)
    }

    /// Every known file generation (finished ones too: they are never read
    /// again, and their ids must not be reused).
    pub fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT generation, path, dev, ino, fp_len, fingerprint, offset, line, size, finished,
                        coalesce(source, '')
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
                    source: r.get(10)?,
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.err(e));
        rows
    }
}

/// A file generation given to another source by [`Store::adopt_files`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adopted {
    /// The source it belonged to; `None`: written before sources had names.
    pub from: Option<String>,
    pub to: String,
    pub file: String,
}

impl Store {
    /// Give file generations no configured source owns to the source whose
    /// path matches theirs: rows written before sources had names (with one
    /// source, all of them are its own), and rows of a source the config no
    /// longer names (renamed) where another's path matches. Otherwise that
    /// source would read the file again from the start, billing its old
    /// lines a second time under new ids. `sources` is (name, glob) in
    /// config order.
    pub fn adopt_files(
        &mut self,
        sources: &[(String, String)],
    ) -> Result<Vec<Adopted>, StoreError> {
        let path = self.path.clone();
        let sq = |e| classify_with(&path, e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sq)?;
        let rows: Vec<(i64, String, Option<String>)> = {
            let mut st = tx
                .prepare("SELECT generation, path, source FROM files")
                .map_err(sq)?;
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(sq)?;
            rows
        };
        let mut given = Vec::new();
        for (generation, file, from) in rows {
            if from
                .as_ref()
                .is_some_and(|f| sources.iter().any(|(n, _)| n == f))
            {
                continue;
            }
            let owner = match (sources, &from) {
                ([(name, _)], None) => Some(name),
                _ => sources
                    .iter()
                    .find(|(_, glob)| {
                        glob::Pattern::new(glob).is_ok_and(|p| p.matches_with(&file, SCAN_MATCH))
                    })
                    .map(|(name, _)| name),
            };
            if let Some(name) = owner {
                tx.execute(
                    "UPDATE files SET source = ?1 WHERE generation = ?2",
                    rusqlite::params![name, generation],
                )
                .map_err(sq)?;
                given.push(Adopted {
                    from,
                    to: name.clone(),
                    file,
                });
            }
        }
        tx.commit().map_err(sq)?;
        Ok(given)
    }
}

/// As the follower's scan (`glob::glob`) matches: `*` stays in a directory.
const SCAN_MATCH: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// A damaged file is `Corrupt` (the daemon refuses to start rather than
/// reset it); anything else is a plain SQLite error naming the database.
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
