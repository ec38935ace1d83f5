//! Deliver stage: the outbox worker. Takes pending charges oldest first,
//! hands them to the sink, and records each outcome. A charge is marked
//! delivered only when the sink says so; everything else stays pending with
//! its next attempt time (which survives restarts) or becomes a dead letter.
//!
//! Order: the worker never sends a charge before an older pending one is
//! due, so charges leave in outbox order, which is file order per file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::Notify;

use crate::shutdown::Shutdown;
use crate::sink::{Envelope, Outcome, Sink, SinkConfig};
use crate::stats::Stats;
use crate::store::{now_ms, RetrySchedule, Store, StoreError};

pub struct Deliverer<S: Sink> {
    pub store: Store,
    pub sink: S,
    pub policy: RetryPolicy,
    pub batch: usize,
    /// Poked by the reader after each commit, so delivery starts at once.
    pub wake: Arc<Notify>,
    pub stats: Arc<Stats>,
    /// Re-read settings (SIGHUP) to apply without a restart.
    pub reload: Option<UnboundedReceiver<DeliverSettings>>,
    /// Last seen `resume_token` (see `Store::bump_resume_token`).
    pub resume_seen: Option<i64>,
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

impl RetrySchedule for RetryPolicy {
    fn next_delay(
        &self,
        attempts: u32,
        failing_for: Duration,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        if self.give_up_after.is_some_and(|limit| failing_for >= limit) {
            return None;
        }
        Some(retry_after.unwrap_or_else(|| self.delay(attempts)))
    }
}

/// How long to idle when nothing is pending and nobody pokes us (a replay or
/// `dead-letters retry` in another process may have added work).
const IDLE: Duration = Duration::from_secs(1);

impl<S: Sink> Deliverer<S> {
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
                    self.apply(&cfg)?;
                }
            }
            self.check_resume()?;
            let sent = self.step().await?;
            let wait = match sent {
                Step::Sent => continue,
                // Look at the resume token again in a while.
                Step::Idle | Step::Paused => IDLE,
                Step::WaitUntil(ms) => Duration::from_millis((ms - now_ms()).clamp(1, 1000) as u64),
            };
            let next_config = async {
                match reload.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.wake.notified(), if sent == Step::Idle => {}
                _ = tokio::time::sleep(wait) => {}
                Some(cfg) = next_config => self.apply(&cfg)?,
                _ = shutdown.wait() => break,
            }
        }
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
            let n = self.store.make_due_now()?;
            tracing::info!(charges = n, "sink resumed: waiting charges are due now");
        }
        self.stats.set_sink_health(self.sink.health());
        Ok(())
    }

    fn check_resume(&mut self) -> Result<(), StoreError> {
        let token = self.store.resume_token()?;
        if self.resume_seen.is_some_and(|seen| seen != token) {
            tracing::info!(
                "dead letters put back by an operator: resuming the sink if it was paused"
            );
            let was_paused = self.sink.is_paused();
            self.sink.resume();
            self.after_resume(was_paused)?;
        }
        self.resume_seen = Some(token);
        Ok(())
    }

    /// One round: send the due prefix of the pending charges. Sends nothing
    /// while the sink is paused.
    pub async fn step(&mut self) -> Result<Step, StoreError> {
        if self.sink.is_paused() {
            return Ok(Step::Paused);
        }
        let t_fetch = std::time::Instant::now();
        let pending = self.store.pending(self.batch)?;
        let Some(head) = pending.first() else {
            return Ok(Step::Idle);
        };
        let now = now_ms();
        if head.next_ms > now {
            return Ok(Step::WaitUntil(head.next_ms));
        }
        let due: Vec<Envelope> = pending
            .iter()
            .take_while(|p| p.next_ms <= now)
            .map(|p| p.envelope.clone())
            .collect();
        let t_send = std::time::Instant::now();
        let mut outcomes = self.sink.send(&due).await;
        let t_record = std::time::Instant::now();
        // A sink that answers fewer outcomes than envelopes is a bug; treat
        // the missing ones as not delivered rather than guessing.
        outcomes.resize(
            due.len(),
            Outcome::Retry {
                error: "sink returned no outcome".into(),
                retry_after: None,
            },
        );
        let retried = outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Retry { .. }))
            .count() as u64;
        if let Some(Outcome::Retry { error, .. }) =
            outcomes.iter().find(|o| matches!(o, Outcome::Retry { .. }))
        {
            tracing::warn!(retrying = retried, error = %error, "delivery failed; will retry");
        }
        let rejected = outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Reject { .. }))
            .count() as u64;
        let now = now_ms();
        for (p, o) in pending.iter().zip(&outcomes) {
            if *o == Outcome::Delivered {
                self.stats
                    .latency
                    .observe_ms((now - p.created_ms).max(0) as u64);
                if p.envelope.attempts > 0 {
                    Stats::add(&self.stats.redelivered, 1);
                }
            }
        }
        let results: Vec<(&Envelope, Outcome)> = due.iter().zip(outcomes).collect();
        let (delivered, dead) = self.store.record(&results, &self.policy)?;
        tracing::trace!(
            sent = due.len(),
            delivered,
            fetch_us = (t_send - t_fetch).as_micros() as u64,
            send_us = (t_record - t_send).as_micros() as u64,
            record_us = t_record.elapsed().as_micros() as u64,
            "batch"
        );
        for (env, o) in &results {
            if let Outcome::Reject { error } = o {
                tracing::error!(charge = %env.id, error = %error, "charge rejected: now a dead letter");
            }
        }
        if dead > 0 {
            tracing::error!(
                count = dead,
                "charges became dead letters (see `chargetail dead-letters list`)"
            );
        }
        Stats::add(&self.stats.delivered, delivered);
        Stats::add(&self.stats.retried, retried);
        Stats::add(&self.stats.dead_lettered, dead);
        Stats::add(&self.stats.dead_rejected, rejected.min(dead));
        if delivered > 0 {
            self.stats
                .last_delivery_ms
                .store(now_ms(), std::sync::atomic::Ordering::Relaxed);
        }
        self.stats.set_sink_health(self.sink.health());
        Ok(Step::Sent)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Sent,
    Idle,
    WaitUntil(i64),
    /// The sink paused itself (see [`Sink::is_paused`]): nothing is sent
    /// until it is resumed.
    Paused,
}
