//! Deliver stage: the outbox worker. Takes pending charges oldest first,
//! hands them to the sink, and records each outcome. A charge is marked
//! delivered only when the sink says so; everything else stays pending with
//! its next attempt time (which survives restarts) or becomes a dead letter.
//!
//! Order: the worker never sends a charge before an older pending one is
//! due, so charges leave in outbox order, which is file order per file.
//!
//! Charges the reader commits reach the worker in memory ([`Handoff`]); it
//! reads the outbox back only at start, after a failed attempt, when the
//! hand-off overflowed or skipped a `seq`, and when another process changed
//! the outbox.
//!
//! Rounds overlap: a sink may keep charges in flight across rounds (the
//! AMQP confirm window) and answer only the oldest; the worker keeps those
//! charges (`inflight`) and fetches and submits the next ones meanwhile.
//! With nothing more to send it waits for the next answer or new charges,
//! whichever comes first (`await_inflight`: the window never drains while
//! work waits); it waits for them all (`finish_inflight`) before the outbox
//! is read again from the start, on a reload and before closing. One
//! round's outcomes are written on a blocking thread while the next round
//! is sent; every SQLite call runs on a blocking thread, never on the
//! runtime's, and another process's change is learnt from the source's
//! poll (`Handoff::others_changed`), not by asking the database.
//!
//! Files: `fetch` (where the next charges come from), `round` (submitting
//! them, the blame rule, recording), `policy` (the retry schedule and the
//! head's clock), `handoff`.

mod fetch;
mod handoff;
mod policy;
mod round;

pub use handoff::{Handoff, OtherWriters};
pub use policy::{HeadClock, RetryPolicy};

use round::{Handed, Recording};

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedReceiver;

use crate::shutdown::Shutdown;
use crate::sink::{Envelope, Outcome, Sink, SinkConfig};
use crate::stats::{SourceTally, Stats};
use crate::store::{now_ms, Pending, Record, Store, StoreError};

pub struct Deliverer<S: Sink> {
    /// Shared with the blocking thread that records a round's outcomes
    /// (never locked on the runtime while a record runs: see `recording`).
    store: Arc<Mutex<Store>>,
    /// The last round's outcomes being written on a blocking thread while
    /// the next round is sent; settled before the store is used again.
    recording: Option<Recording>,
    /// A second connection, to read the outbox after `known_to` while a
    /// record runs (those rows are not the record's).
    reader: Option<Arc<Mutex<Store>>>,
    pub sink: S,
    pub policy: RetryPolicy,
    pub batch: usize,
    /// Charges the reader committed, in memory; its notify wakes delivery.
    pub handoff: Arc<Handoff>,
    pub stats: Arc<Stats>,
    /// Re-read settings (SIGHUP) to apply without a restart.
    pub reload: Option<UnboundedReceiver<DeliverSettings>>,
    /// Last seen change tokens (see `Store::change_tokens`).
    tokens_seen: Option<(i64, i64)>,
    /// The head's retry clock (`None`: made from the store when needed).
    head: Option<HeadClock>,
    /// The pending charges known, in outbox order, from the head on.
    queue: VecDeque<Pending>,
    /// Every pending charge with a `seq` up to this is in `queue`.
    known_to: i64,
    /// The outbox may hold pending charges after `known_to` that the
    /// hand-off does not have: read it before taking from the hand-off.
    behind: bool,
    /// Charges handed to the sink and not answered yet, oldest first (all
    /// after the queue's: their seqs are up to `known_to`).
    inflight: VecDeque<Handed>,
    /// An operator or another process changed the outbox: read it again
    /// from the start once nothing is in flight (next round).
    reread_due: bool,
}

/// What the deliver stage takes from the configuration: at start, and again
/// on SIGHUP (the retry policy, the batch and the sink's secrets apply
/// without a restart).
#[derive(Debug, Clone)]
pub struct DeliverSettings {
    pub policy: RetryPolicy,
    pub batch: usize,
    pub sink: SinkConfig,
    /// The config's directory: relative paths in the sink settings resolve
    /// against it.
    pub dir: PathBuf,
}

impl<S: Sink> Deliverer<S> {
    pub fn new(
        store: Store,
        sink: S,
        policy: RetryPolicy,
        batch: usize,
        handoff: Arc<Handoff>,
        stats: Arc<Stats>,
    ) -> Deliverer<S> {
        Deliverer {
            store: Arc::new(Mutex::new(store)),
            recording: None,
            reader: None,
            sink,
            policy,
            batch,
            handoff,
            stats,
            reload: None,
            tokens_seen: None,
            head: None,
            queue: VecDeque::new(),
            known_to: 0,
            behind: true,
            inflight: VecDeque::new(),
            reread_due: false,
        }
    }

    /// The state database (no record may be running: see `settle`).
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Read the outbox on `reader` (another connection to the same
    /// database) while the last round is being recorded.
    pub fn with_reader(mut self, reader: Store) -> Deliverer<S> {
        self.reader = Some(Arc::new(Mutex::new(reader)));
        self
    }

    /// Apply re-read settings (SIGHUP) sent on `reload`.
    pub fn with_reload(mut self, reload: UnboundedReceiver<DeliverSettings>) -> Deliverer<S> {
        self.reload = Some(reload);
        self
    }

    /// Run until shutdown. Returns an error only when the state database
    /// fails; the daemon then stops (a delivery we cannot record must not be
    /// repeated blindly forever).
    pub async fn run(mut self, mut shutdown: Shutdown) -> Result<(), StoreError> {
        let mut reload = self.reload.take();
        // What later changes are told from.
        self.check_tokens().await?;
        loop {
            if shutdown.is_triggered() {
                break;
            }
            if let Some(rx) = reload.as_mut() {
                while let Ok(cfg) = rx.try_recv() {
                    // The new settings apply to charges handed over after.
                    self.finish_inflight().await?;
                    self.settle().await?;
                    self.apply(&cfg).await?;
                }
            }
            // Another process's change, seen on the source's poll (the
            // tokens also come with every record: `settle`).
            if self.handoff.take_others_changed() {
                self.check_tokens().await?;
            }
            let sent = self.step().await?;
            // Idle and paused wait for a commit, a poke from the reader (an
            // operator's or another process's change, which it notices on
            // its poll), a reload or shutdown: no timer.
            let wait_for_work = matches!(sent, Step::Idle | Step::Paused);
            let until = match sent {
                Step::Sent => continue,
                Step::InFlight => {
                    self.await_inflight().await?;
                    continue;
                }
                Step::Idle | Step::Paused => None,
                Step::WaitUntil(at) => Some(at),
            };
            // Nothing to send (and nothing in flight: `step` finished it):
            // finish the last record before waiting.
            self.settle().await?;
            let next_config = async {
                match reload.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            let head_due = async {
                match until {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.handoff.notified(), if wait_for_work => {}
                _ = head_due => {}
                Some(cfg) = next_config => self.apply(&cfg).await?,
                _ = shutdown.wait() => break,
            }
        }
        self.finish_inflight().await?;
        self.settle().await?;
        self.sink.close().await;
        Ok(())
    }

    /// SIGHUP: take the retry settings and let the sink re-read its secrets
    /// (which also ends a pause).
    async fn apply(&mut self, next: &DeliverSettings) -> Result<(), StoreError> {
        let was_paused = self.sink.is_paused();
        let policy = &next.policy;
        if format!("{:?}", policy) != format!("{:?}", self.policy) {
            tracing::info!(?policy, "reload: retry settings applied");
            self.policy = policy.clone();
        }
        if next.batch != self.batch {
            tracing::info!(batch = next.batch, "reload: delivery batch applied");
            self.batch = next.batch;
        }
        match self.sink.reload(&next.sink, &next.dir) {
            Ok(changes) => {
                for c in changes {
                    tracing::info!("reload: {c}");
                }
            }
            Err(e) => {
                tracing::error!("reload: sink settings not applied, keeping the old ones: {e:#}")
            }
        }
        self.after_resume(was_paused).await
    }

    /// After an operator's resume: a pause that ended makes the waiting
    /// charges due now (the operator fixed something; do not sit out the
    /// backoff), and health shows the end of the alert at once.
    async fn after_resume(&mut self, was_paused: bool) -> Result<(), StoreError> {
        if was_paused && !self.sink.is_paused() {
            let n = self.blocking(|st| st.make_due_now()).await?;
            self.reread_due = true;
            tracing::info!(charges = n, "sink resumed: waiting charges are due now");
        }
        self.stats.set_sink_health(self.sink.health());
        Ok(())
    }

    /// The tokens other processes bump (`Store::change_tokens`): an
    /// operator's `dead-letters retry` resumes a paused sink; either change
    /// means pending charges we do not hold, maybe before those we do.
    async fn check_tokens(&mut self) -> Result<(), StoreError> {
        let tokens = self.blocking(|st| st.change_tokens()).await?;
        self.see_tokens(tokens).await
    }

    /// Runs `f` on the state database (`on_blocking`).
    fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
    ) -> impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static {
        on_blocking(&self.store, f)
    }

    async fn see_tokens(&mut self, (resume, outbox): (i64, i64)) -> Result<(), StoreError> {
        if let Some((seen_resume, seen_outbox)) = self.tokens_seen {
            if seen_resume != resume {
                tracing::info!(
                    "dead letters put back by an operator: resuming the sink if it was paused"
                );
                let was_paused = self.sink.is_paused();
                self.sink.resume();
                self.reread_due = true;
                self.after_resume(was_paused).await?;
            } else if seen_outbox != outbox {
                tracing::debug!("outbox changed by another process: reading it again");
                self.reread_due = true;
            }
        }
        self.tokens_seen = Some((resume, outbox));
        Ok(())
    }

    /// Deliver until nothing is pending (a replay's way to run the worker):
    /// the same rounds as [`Deliverer::run`], ending when the outbox is empty,
    /// when the sink pauses itself, or when nothing was delivered or
    /// dead-lettered for `stall` (the charges then stay in the outbox).
    pub async fn drain(&mut self, stall: Duration) -> Result<Drained, StoreError> {
        // Progress comes from the worker's own counters: asking the database
        // how things stand after every round would scan the outbox each time.
        let mut last_done = u64::MAX;
        let mut last_progress = Instant::now();
        let end = loop {
            let done = Stats::get(&self.stats.delivered) + Stats::get(&self.stats.dead_lettered);
            if done != last_done {
                last_done = done;
                last_progress = Instant::now();
            } else if last_progress.elapsed() > stall {
                break Drained::Stalled;
            }
            let step = self.step().await?;
            if !matches!(step, Step::Sent | Step::InFlight) {
                self.settle().await?;
            }
            match step {
                Step::Sent => {}
                // Nothing more to read: what is in flight is the end.
                Step::InFlight => self.finish_inflight().await?,
                Step::Idle => break Drained::Empty,
                Step::Paused => break Drained::Paused,
                Step::WaitUntil(at) => {
                    let wait = at
                        .saturating_duration_since(Instant::now())
                        .clamp(Duration::from_millis(1), Duration::from_secs(1));
                    tokio::time::sleep(wait).await;
                }
            }
        };
        self.finish_inflight().await?;
        self.settle().await?;
        self.sink.close().await;
        Ok(end)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Sent,
    /// Nothing more to send now; charges are in flight (see
    /// `Deliverer::await_inflight`).
    InFlight,
    Idle,
    /// The head's next attempt (monotonic).
    WaitUntil(Instant),
    /// The sink paused itself (see [`Sink::is_paused`]): nothing is sent
    /// until it is resumed.
    Paused,
}

/// How [`Deliverer::drain`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Nothing is pending any more.
    Empty,
    /// The sink paused itself (an endpoint refusing us); the rest waits.
    Paused,
    /// No progress for the stall bound; the rest waits in the outbox.
    Stalled,
}

/// Runs `f` on `store` on a blocking thread (started now) and answers
/// what it returns.
fn on_blocking<T: Send + 'static>(
    store: &Arc<Mutex<Store>>,
    f: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
) -> impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static {
    joined(spawn_on(store, f))
}

/// Starts `f` on `store` on a blocking thread (SQLite never runs on the
/// runtime's threads); it waits there for the lock, e.g. for a record
/// still running.
fn spawn_on<T: Send + 'static>(
    store: &Arc<Mutex<Store>>,
    f: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
) -> tokio::task::JoinHandle<Result<T, StoreError>> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || {
        let mut st = store.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut st)
    })
}

/// What a job of `spawn_on` returned; its panic is the caller's.
async fn joined<T>(job: tokio::task::JoinHandle<T>) -> T {
    match job.await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("state database job: {e}"),
    }
}
