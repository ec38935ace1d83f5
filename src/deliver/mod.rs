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

mod handoff;

pub use handoff::{Handoff, OtherWriters};

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
    reader: Option<Store>,
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

/// How retries are scheduled: exponential backoff with full jitter from
/// `[delivery] retry_initial_ms` to `retry_max_ms`; after `give_up_after`
/// of failing a charge becomes a dead letter. An endpoint's own
/// Retry-After wins over the backoff.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
    /// After this long since the first failure, a charge is a dead letter.
    /// `None`: retry forever.
    pub give_up_after: Option<Duration>,
}

impl RetryPolicy {
    /// Exponential backoff with full jitter: a random delay in
    /// `[0, min(max, initial * 2^attempts)]`, so that many daemons (or many
    /// charges) do not retry in lockstep.
    pub fn delay(&self, attempts: u32) -> Duration {
        let cap = self
            .initial
            .saturating_mul(1u32.checked_shl(attempts.min(31)).unwrap_or(u32::MAX))
            .min(self.max);
        let ms = cap.as_millis() as u64;
        Duration::from_millis(if ms == 0 {
            0
        } else {
            rand::random_range(0..=ms)
        })
    }
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
        }
    }

    /// The state database (no record may be running: see `settle`).
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait for the last round's record (on its blocking thread) and count
    /// what it did; the change tokens read with it are looked at too.
    async fn settle(&mut self) -> Result<(), StoreError> {
        let Some(r) = self.recording.take() else {
            return Ok(());
        };
        let (delivered, dead, tokens) = match r.handle.await {
            Ok(res) => res?,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("recording deliveries: {e}"),
        };
        tracing::trace!(
            sent = r.sent,
            delivered,
            record_us = r.started.elapsed().as_micros() as u64,
            "recorded"
        );
        if dead > 0 {
            tracing::error!(
                count = dead,
                "charges became dead letters (see `chargetail dead-letters list`)"
            );
        }
        Stats::add(&self.stats.delivered, delivered);
        Stats::add(&self.stats.dead_lettered, dead);
        Stats::add(&self.stats.dead_rejected, r.rejected.min(dead));
        r.by_source.add(now_ms());
        if delivered > 0 {
            self.stats
                .last_delivery_ms
                .store(now_ms(), std::sync::atomic::Ordering::Relaxed);
        }
        self.see_tokens(tokens)
    }

    /// Read the outbox on `reader` (another connection to the same
    /// database) while the last round is being recorded.
    pub fn with_reader(mut self, reader: Store) -> Deliverer<S> {
        self.reader = Some(reader);
        self
    }

    /// Apply re-read settings (SIGHUP) sent on `reload`.
    pub fn with_reload(mut self, reload: UnboundedReceiver<DeliverSettings>) -> Deliverer<S> {
        self.reload = Some(reload);
        self
    }

    /// Forget what is known in memory: the next round reads the outbox from
    /// the start (after a failure, an operator's change, another process's).
    fn reread(&mut self) {
        self.queue.clear();
        self.known_to = 0;
        self.behind = true;
        self.head = None;
    }

    /// Fill `queue` up to a batch: from the hand-off while it continues the
    /// outbox without a gap, else from the outbox.
    async fn fill(&mut self) -> Result<(), StoreError> {
        if !self.behind {
            let room = self.batch.saturating_sub(self.queue.len());
            if room > 0 {
                let (rows, dirty) = self.handoff.take(room);
                self.behind |= dirty;
                for r in rows {
                    let seq = r.envelope.seq;
                    if seq <= self.known_to {
                        // Already read from the outbox.
                        continue;
                    }
                    if seq != self.known_to + 1 {
                        // Another writer's row may sit in the gap: the
                        // outbox has it (and these).
                        self.behind = true;
                        break;
                    }
                    self.known_to = seq;
                    self.queue.push_back(r);
                }
            }
        }
        if self.behind && self.queue.len() < self.batch {
            let limit = self.batch - self.queue.len();
            // The rows after every seq being recorded can be read beside
            // the record; anything else waits for it (a retry's schedule).
            let beside = self
                .recording
                .as_ref()
                .is_some_and(|r| r.last_seq <= self.known_to);
            let (rows, top) = match &self.reader {
                Some(reader) if beside => reader.pending_after(self.known_to, limit)?,
                _ => {
                    self.settle().await?;
                    self.store().pending_after(self.known_to, limit)?
                }
            };
            Stats::add(&self.stats.deliver_store_reads, 1);
            if rows.len() < limit {
                self.known_to = self.known_to.max(top);
                self.behind = false;
            } else if let Some(last) = rows.last() {
                self.known_to = last.envelope.seq;
            }
            self.queue.extend(rows);
        }
        Ok(())
    }

    /// Run until shutdown. Returns an error only when the state database
    /// fails; the daemon then stops (a delivery we cannot record must not be
    /// repeated blindly forever).
    pub async fn run(mut self, mut shutdown: Shutdown) -> Result<(), StoreError> {
        let mut reload = self.reload.take();
        loop {
            if shutdown.is_triggered() {
                break;
            }
            if let Some(rx) = reload.as_mut() {
                while let Ok(cfg) = rx.try_recv() {
                    self.settle().await?;
                    self.apply(&cfg)?;
                }
            }
            // While a record runs, the tokens come with it (`settle`).
            if self.recording.is_none() {
                self.check_tokens()?;
            }
            let sent = self.step().await?;
            // Idle and paused wait for a commit, a poke from the reader (an
            // operator's or another process's change, which it notices on
            // its poll), a reload or shutdown: no timer.
            let wait_for_work = matches!(sent, Step::Idle | Step::Paused);
            let until = match sent {
                Step::Sent => continue,
                Step::Idle | Step::Paused => None,
                Step::WaitUntil(at) => Some(at),
            };
            // Nothing to send: finish the last record before waiting.
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
                Some(cfg) = next_config => self.apply(&cfg)?,
                _ = shutdown.wait() => break,
            }
        }
        self.settle().await?;
        self.sink.close().await;
        Ok(())
    }

    /// SIGHUP: take the retry settings and let the sink re-read its secrets
    /// (which also ends a pause).
    fn apply(&mut self, next: &DeliverSettings) -> Result<(), StoreError> {
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
        self.after_resume(was_paused)
    }

    /// After an operator's resume: a pause that ended makes the waiting
    /// charges due now (the operator fixed something; do not sit out the
    /// backoff), and health shows the end of the alert at once.
    fn after_resume(&mut self, was_paused: bool) -> Result<(), StoreError> {
        if was_paused && !self.sink.is_paused() {
            let n = self.store().make_due_now()?;
            self.reread();
            tracing::info!(charges = n, "sink resumed: waiting charges are due now");
        }
        self.stats.set_sink_health(self.sink.health());
        Ok(())
    }

    /// The tokens other processes bump (`Store::change_tokens`): an
    /// operator's `dead-letters retry` resumes a paused sink; either change
    /// means pending charges we do not hold, maybe before those we do.
    fn check_tokens(&mut self) -> Result<(), StoreError> {
        let tokens = self.store().change_tokens()?;
        self.see_tokens(tokens)
    }

    fn see_tokens(&mut self, (resume, outbox): (i64, i64)) -> Result<(), StoreError> {
        if let Some((seen_resume, seen_outbox)) = self.tokens_seen {
            if seen_resume != resume {
                tracing::info!(
                    "dead letters put back by an operator: resuming the sink if it was paused"
                );
                let was_paused = self.sink.is_paused();
                self.sink.resume();
                self.reread();
                self.after_resume(was_paused)?;
            } else if seen_outbox != outbox {
                tracing::debug!("outbox changed by another process: reading it again");
                self.reread();
            }
        }
        self.tokens_seen = Some((resume, outbox));
        Ok(())
    }

    /// The head's failure clock, in monotonic time: made from the stored
    /// schedule when a charge first becomes the head in this process (the
    /// stored next attempt capped by the policy's maximum, so a wall clock
    /// stepped back cannot stall delivery), kept in memory after that.
    fn head_clock(&mut self, head: &Pending) -> HeadClock {
        if let Some(c) = &self.head {
            if c.seq == head.envelope.seq {
                return c.clone();
            }
        }
        let (now, wall) = (Instant::now(), now_ms());
        // Capped by the longest wait the policy or the endpoint asked for.
        let cap = self
            .policy
            .max
            .max(Duration::from_millis(head.wait_ms.max(0) as u64));
        let wait = Duration::from_millis((head.next_ms - wall).max(0) as u64).min(cap);
        let first_fail = head.first_fail_ms.map(|f| {
            let ago = Duration::from_millis((wall - f).max(0) as u64);
            now.checked_sub(ago).unwrap_or(now)
        });
        let c = HeadClock {
            seq: head.envelope.seq,
            next: now + wait,
            first_fail,
        };
        self.head = Some(c.clone());
        c
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
            if step != Step::Sent {
                self.settle().await?;
            }
            match step {
                Step::Sent => {}
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
        self.sink.close().await;
        Ok(end)
    }

    /// One round: send the pending charges from the head on, once the head
    /// is due. Sends nothing while the sink is paused.
    ///
    /// Only the head of the outbox has a retry schedule. The charges behind
    /// it wait for it without being attempted: a failure is charged to the
    /// oldest charge the sink failed on, and every later charge the sink did
    /// not deliver in that round is left as it was (no attempt counted, no
    /// failure clock started), whatever the sink says about it. When the
    /// head gives up it alone becomes a dead letter, and the next charge
    /// starts its own schedule from its first real attempt.
    pub async fn step(&mut self) -> Result<Step, StoreError> {
        if self.sink.is_paused() {
            return Ok(Step::Paused);
        }
        let t_fetch = Instant::now();
        self.fill().await?;
        let Some(head) = self.queue.front() else {
            self.head = None;
            return Ok(Step::Idle);
        };
        let head = head.clone();
        let clock = self.head_clock(&head);
        if clock.next > Instant::now() {
            return Ok(Step::WaitUntil(clock.next));
        }
        let n = self.queue.len().min(self.batch);
        let pending: Vec<Pending> = self.queue.drain(..n).collect();
        let due: Vec<Envelope> = pending.iter().map(|p| p.envelope.clone()).collect();
        let t_send = Instant::now();
        let mut outcomes = self.sink.send(&due).await;
        let t_record = Instant::now();
        // A sink that answers fewer outcomes than envelopes is a bug; treat
        // the missing ones as not sent rather than guessing.
        outcomes.resize(due.len(), Outcome::NotSent);
        let (now, wall) = (Instant::now(), now_ms());
        let mut records: Vec<(&Envelope, Record)> = Vec::with_capacity(due.len());
        let mut failed: Option<(&Envelope, String)> = None;
        let (mut retried, mut rejected) = (0u64, 0u64);
        let mut by_source = SourceTally::default();
        for (p, o) in pending.iter().zip(outcomes) {
            let env = &p.envelope;
            let own = self.stats.source_of(&env.payload);
            match o {
                Outcome::Delivered => {
                    let ms = (wall - p.created_ms).max(0) as u64;
                    self.stats.latency.observe_ms(ms);
                    by_source.count(own.as_ref(), 0);
                    if let Some(s) = &own {
                        s.latency.observe_ms(ms);
                    }
                    if env.attempts > 0 {
                        Stats::add(&self.stats.redelivered, 1);
                        own.iter().for_each(|s| Stats::add(&s.redelivered, 1));
                    }
                    records.push((env, Record::Delivered));
                }
                Outcome::Reject { error } => {
                    rejected += 1;
                    by_source.count(own.as_ref(), 1);
                    by_source.count(own.as_ref(), 2);
                    tracing::error!(charge = %env.id, error = %error, "charge rejected: now a dead letter");
                    records.push((
                        env,
                        Record::Dead {
                            error,
                            first_fail_ms: p.first_fail_ms.unwrap_or(wall),
                        },
                    ));
                }
                // Behind the first failure: not this charge's fault.
                Outcome::Retry { .. } | Outcome::NotSent if failed.is_some() => {}
                Outcome::NotSent => {}
                Outcome::Retry { error, retry_after } => {
                    retried += 1;
                    own.iter().for_each(|s| Stats::add(&s.retried, 1));
                    let first_fail = if env.seq == clock.seq {
                        clock.first_fail.unwrap_or(now)
                    } else {
                        // Not the head when the round began: its first
                        // failure (a charge that was never the head was
                        // never failed on).
                        now
                    };
                    let failing_for = now.saturating_duration_since(first_fail);
                    let first_fail_ms = wall - failing_for.as_millis() as i64;
                    if self
                        .policy
                        .give_up_after
                        .is_some_and(|limit| failing_for >= limit)
                    {
                        let error = format!(
                            "gave up after {}s of retries: {error}",
                            failing_for.as_secs()
                        );
                        by_source.count(own.as_ref(), 1);
                        records.push((
                            env,
                            Record::Dead {
                                error: error.clone(),
                                first_fail_ms,
                            },
                        ));
                        self.head = None;
                        failed = Some((env, error));
                    } else {
                        let delay = retry_after.unwrap_or_else(|| self.policy.delay(env.attempts));
                        records.push((
                            env,
                            Record::Retry {
                                next_ms: wall + delay.as_millis() as i64,
                                wait_ms: delay.as_millis() as i64,
                                first_fail_ms,
                                error: error.clone(),
                            },
                        ));
                        self.head = Some(HeadClock {
                            seq: env.seq,
                            next: now + delay,
                            first_fail: Some(first_fail),
                        });
                        failed = Some((env, error));
                    }
                }
            }
        }
        if let Some((env, error)) = &failed {
            let waiting = pending.iter().filter(|p| p.envelope.seq > env.seq).count();
            tracing::warn!(charge = %env.id, attempts = env.attempts + 1, waiting, error = %error, "delivery failed; will retry");
        }
        // What is still pending after this round (a retry, or held back
        // behind one) is read back from the outbox with its new schedule;
        // the rows after it in memory are dropped with it.
        let mut recs = records.iter().peekable();
        let left = pending.iter().find(|p| match recs.peek() {
            Some((e, r)) if e.seq == p.envelope.seq => {
                recs.next();
                matches!(r, Record::Retry { .. })
            }
            _ => true,
        });
        if let Some(first) = left {
            self.queue.clear();
            self.known_to = first.envelope.seq - 1;
            self.behind = true;
        }
        // Written on a blocking thread while the next round is sent (one
        // record outstanding at most).
        let by_seq: Vec<(i64, Record)> = records.into_iter().map(|(e, r)| (e.seq, r)).collect();
        let last_seq = by_seq.iter().map(|(seq, _)| *seq).max().unwrap_or(0);
        self.settle().await?;
        let store = self.store.clone();
        self.recording = Some(Recording {
            handle: tokio::task::spawn_blocking(move || {
                let mut st = store.lock().unwrap_or_else(|p| p.into_inner());
                let (delivered, dead) = st.record_seqs(&by_seq)?;
                Ok((delivered, dead, st.change_tokens()?))
            }),
            rejected,
            by_source,
            last_seq,
            sent: due.len(),
            started: t_record,
        });
        tracing::trace!(
            sent = due.len(),
            fetch_us = (t_send - t_fetch).as_micros() as u64,
            send_us = (t_record - t_send).as_micros() as u64,
            "batch"
        );
        Stats::add(&self.stats.retried, retried);
        self.stats.set_sink_health(self.sink.health());
        Ok(Step::Sent)
    }
}

/// Delivered, dead-lettered, and the change tokens read after.
type Recorded = (u64, u64, (i64, i64));

/// A round's outcomes being written (see `Deliverer::settle`).
struct Recording {
    handle: tokio::task::JoinHandle<Result<Recorded, StoreError>>,
    rejected: u64,
    /// Its outcomes by each charge's source (counted once recorded).
    by_source: SourceTally,
    /// The highest seq it writes.
    last_seq: i64,
    sent: usize,
    started: Instant,
}

/// When the head of the outbox is tried next, and since when it fails.
#[derive(Debug, Clone)]
pub struct HeadClock {
    seq: i64,
    next: Instant,
    first_fail: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Sent,
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
