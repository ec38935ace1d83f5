//! WAL checkpoints off the commit path.
//!
//! With SQLite's automatic checkpoints, the commit that takes the WAL past
//! `wal_autocheckpoint` pages runs the checkpoint itself: it copies the WAL
//! into the database and fsyncs both before it returns, so the appended
//! line behind that commit waits for a disk flush (tens of milliseconds,
//! far more beside a busy disk neighbour). The daemon's writing connections
//! therefore have automatic checkpoints off (`wal_autocheckpoint = 0`) and
//! a [`Checkpointer`] thread with its own connection does them instead:
//!
//! - **between bursts**: once no commit has come for [`QUIET`], a PASSIVE
//!   checkpoint, which never blocks a writer (a commit arriving meanwhile
//!   just appends to the WAL). Once everything is copied, the next commit
//!   starts the WAL from its beginning again.
//! - **during a steady stream** (never quiet for that long): a PASSIVE one
//!   every [`BUSY_EVERY`], still off the commit path. Under steady writes a
//!   passive checkpoint alone never lets the WAL restart: some commit always
//!   lands while it runs, so the WAL is never fully copied when the next
//!   writer starts, and it grows without limit (what a passive-only thread
//!   did in an earlier release). Hence:
//! - **the size bound**: when the WAL holds more than the bound after a
//!   passive pass, a RESTART checkpoint. It blocks writers, but only while
//!   it copies the few frames the passive pass left and waits for readers
//!   (at most [`FORCED_WAIT`]); the next commit then restarts the WAL, so
//!   the WAL file stays near the bound. That costs one commit a short wait
//!   once per bound's worth of writes, instead of every commit a chance of
//!   a full checkpoint.
//!
//! Idle, the thread sleeps on a condition variable with no timeout: it is
//! woken by the commit hook of the connections it is attached to.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Store, StoreError};

/// No commit for this long: the burst is over, checkpoint now.
pub const QUIET: Duration = Duration::from_millis(250);
/// During an unbroken stream of commits, a passive checkpoint this often.
pub const BUSY_EVERY: Duration = Duration::from_secs(1);
/// WAL size past which the checkpointer forces a restart of the WAL.
pub const WAL_BOUND_BYTES: u64 = 16 << 20;
/// How long a forced checkpoint waits for readers (and so holds writers)
/// before it gives up until the next round.
pub const FORCED_WAIT: Duration = Duration::from_millis(200);

#[derive(Default)]
struct State {
    /// Commits since the last checkpoint started.
    dirty: bool,
    last_commit: Option<Instant>,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    cond: Condvar,
    counts: CheckpointCounts,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the checkpointer did, for metrics and tests.
#[derive(Debug, Default)]
pub struct CheckpointCounts {
    /// Passive checkpoints run.
    pub passive: AtomicU64,
    /// Restart checkpoints forced by the size bound.
    pub forced: AtomicU64,
    /// Checkpoints that failed or found the database busy.
    pub busy: AtomicU64,
    /// WAL frames at the last checkpoint.
    pub wal_frames: AtomicU64,
}

/// The checkpoint thread. Dropping it stops the thread (the last
/// connection to close checkpoints the rest, as SQLite always does).
pub struct Checkpointer {
    shared: Arc<Shared>,
    bound_bytes: u64,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Start the thread with its own connection to the database at `path`.
    pub fn start(path: &Path) -> Result<Checkpointer, StoreError> {
        Checkpointer::start_with(path, WAL_BOUND_BYTES)
    }

    /// `start` with another size bound (tests).
    pub fn start_with(path: &Path, bound_bytes: u64) -> Result<Checkpointer, StoreError> {
        let store = Store::open_unchecked(path)?;
        store
            .conn
            .busy_timeout(FORCED_WAIT)
            .map_err(|e| store.err(e))?;
        let page: i64 = store
            .conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(|e| store.err(e))?;
        let bound_frames = (bound_bytes / page.max(512) as u64).max(1);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            cond: Condvar::new(),
            counts: CheckpointCounts::default(),
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("chargetail-checkpoint".into())
                .spawn(move || run(&store, &shared, bound_frames))
                .map_err(|e| StoreError::Dir {
                    path: path.to_path_buf(),
                    source: e,
                })?
        };
        Ok(Checkpointer {
            shared,
            bound_bytes,
            thread: Some(thread),
        })
    }

    /// Turn automatic checkpoints off on `store` and have its commits wake
    /// this thread.
    pub fn attach(&self, store: &Store) -> Result<(), StoreError> {
        store.set_wal_autocheckpoint(0)?;
        // When a commit restarts the WAL, cut the file back to the bound
        // (a catch-up burst may have grown it well past).
        store
            .conn
            .pragma_update(None, "journal_size_limit", self.bound_bytes as i64)
            .map_err(|e| store.err(e))?;
        let shared = self.shared.clone();
        store.conn.commit_hook(Some(move || {
            let mut st = shared.lock();
            st.dirty = true;
            st.last_commit = Some(Instant::now());
            drop(st);
            shared.cond.notify_one();
            // false: let the commit go ahead.
            false
        }));
        Ok(())
    }

    pub fn counts(&self) -> &CheckpointCounts {
        &self.shared.counts
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.cond.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(store: &Store, shared: &Shared, bound_frames: u64) {
    let mut last_checkpoint = Instant::now();
    loop {
        let mut st = shared.lock();
        // Idle: no timeout, nothing wakes us but a commit or the stop.
        while !st.dirty && !st.stop {
            st = shared.cond.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        if st.stop {
            return;
        }
        // A burst: wait for a quiet moment, or checkpoint anyway now and
        // then during a stream that never pauses.
        let busy_at = last_checkpoint.max(Instant::now() - BUSY_EVERY) + BUSY_EVERY;
        loop {
            let quiet_at = st.last_commit.map_or_else(Instant::now, |t| t + QUIET);
            let at = quiet_at.min(busy_at);
            let now = Instant::now();
            if st.stop || now >= at {
                break;
            }
            st = shared
                .cond
                .wait_timeout(st, at - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        }
        // Commits from here on call for another round.
        st.dirty = false;
        drop(st);
        last_checkpoint = Instant::now();
        let counts = &shared.counts;
        match store.wal_checkpoint("PASSIVE") {
            Ok((busy, log, done)) => {
                Stats::add(&counts.passive);
                counts.wal_frames.store(log, Ordering::Relaxed);
                if busy {
                    Stats::add(&counts.busy);
                }
                tracing::trace!(log, done, "passive checkpoint");
                if log >= bound_frames {
                    match store.wal_checkpoint("RESTART") {
                        Ok((busy, log, done)) => {
                            Stats::add(&counts.forced);
                            if busy {
                                Stats::add(&counts.busy);
                            }
                            tracing::debug!(
                                log,
                                done,
                                busy,
                                "WAL over its bound: restart checkpoint"
                            );
                        }
                        Err(e) => {
                            Stats::add(&counts.busy);
                            tracing::debug!("restart checkpoint: {e}");
                        }
                    }
                }
            }
            Err(e) => {
                // Not fatal: commits go on, the WAL just grows until a
                // later round succeeds; a failing database shows up on the
                // commit path itself.
                Stats::add(&counts.busy);
                tracing::warn!("checkpoint: {e}");
            }
        }
    }
}

struct Stats;
impl Stats {
    fn add(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

impl Store {
    /// `PRAGMA wal_checkpoint(mode)`: (busy, frames in the WAL, frames
    /// copied into the database).
    pub(super) fn wal_checkpoint(&self, mode: &str) -> Result<(bool, u64, u64), StoreError> {
        self.conn
            .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                Ok((
                    r.get::<_, i64>(0)? != 0,
                    r.get::<_, i64>(1)?.max(0) as u64,
                    r.get::<_, i64>(2)?.max(0) as u64,
                ))
            })
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal_len(db: &Path) -> u64 {
        let mut p = db.as_os_str().to_owned();
        p.push("-wal");
        std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
    }

    fn write(store: &Store, n: usize) {
        for i in 0..n {
            store
                .conn
                .execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
                    rusqlite::params![format!("k{}", i % 50), "x".repeat(3000)],
                )
                .unwrap();
        }
    }

    #[test]
    fn attached_commits_never_checkpoint_and_a_quiet_spell_does() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let store = Store::open(&db).unwrap();
        let c = Checkpointer::start(&db).unwrap();
        c.attach(&store).unwrap();
        write(&store, 300);
        // Wait (bounded) for the quiet-spell checkpoint.
        let deadline = Instant::now() + Duration::from_secs(20);
        while c.counts().passive.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(c.counts().passive.load(Ordering::Relaxed) >= 1);
        // Everything was copied: the next commit starts the WAL over, so it
        // does not grow past what it was.
        let before = wal_len(&db);
        write(&store, 20);
        assert!(wal_len(&db) <= before, "{} > {before}", wal_len(&db));
    }

    #[test]
    fn steady_writes_stay_within_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let store = Store::open(&db).unwrap();
        // The deliverer reads between the source's commits; so does this.
        let reader = Store::open_unchecked(&db).unwrap();
        // Never quiet for QUIET: a commit every millisecond or so. Counted
        // in commits, not seconds, so a loaded machine (a slow writer) does
        // not change what the two runs are compared on.
        const COMMITS: usize = 3000;
        let stream = || {
            let mut max_wal = 0;
            for _ in 0..COMMITS {
                write(&store, 2);
                let _: i64 = reader
                    .conn
                    .query_row("SELECT count(*) FROM meta", [], |r| r.get(0))
                    .unwrap();
                max_wal = max_wal.max(wal_len(&db));
                std::thread::sleep(Duration::from_millis(1));
            }
            max_wal
        };
        // Baseline: how much WAL the same commits add with no checkpoint.
        store.set_wal_autocheckpoint(0).unwrap();
        let start_len = wal_len(&db);
        let growth = stream() - start_len;
        store.wal_checkpoint("TRUNCATE").unwrap();
        let bound = 1 << 20;
        assert!(
            growth > 4 * bound,
            "the baseline must pass the bound: {growth}"
        );
        let c = Checkpointer::start_with(&db, bound).unwrap();
        c.attach(&store).unwrap();
        let max_wal = stream();
        // Without checkpoints the WAL reaches `growth`; with them it is
        // brought back under the bound again and again, so it stays well
        // below that even if the checkpoint thread is scheduled late.
        assert!(
            max_wal < bound + growth / 2,
            "WAL reached {max_wal} bytes (the same commits without checkpoints: {growth}; {:?})",
            c.counts()
        );
        assert!(c.counts().forced.load(Ordering::Relaxed) >= 1);
    }
}
