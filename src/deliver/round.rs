//! One round of delivery: hand the next charges to the sink while earlier
//! ones are still in flight, turn the outcomes answered into records (the
//! blame rule), and write them on a blocking thread.

use super::*;

/// A charge handed to the sink and not answered yet. Its envelope moved
/// (not copied) out of the queue into the sink's call and then here.
pub(super) struct Handed {
    pub(super) envelope: Envelope,
    pub(super) created_ms: i64,
    pub(super) first_fail_ms: Option<i64>,
}

/// What ended `await_inflight`'s wait.
enum Woke {
    Answerable,
    Work,
    Stalled,
}

/// Delivered, dead-lettered, and the change tokens read after.
type Recorded = (u64, u64, (i64, i64));

/// A round's outcomes being written (see `Deliverer::settle`).
pub(super) struct Recording {
    handle: tokio::task::JoinHandle<Result<Recorded, StoreError>>,
    rejected: u64,
    /// Its outcomes by each charge's source (counted once recorded).
    by_source: SourceTally,
    /// The highest seq it writes.
    pub(super) last_seq: i64,
    sent: usize,
    started: Instant,
}

impl<S: Sink> Deliverer<S> {
    /// One round: hand the pending charges from the head on to the sink,
    /// once the head is due, and record what it answered. Sends nothing
    /// while the sink is paused.
    ///
    /// The sink may answer only the oldest of the charges it holds (the
    /// AMQP confirm window carries the rest into the next round), so a
    /// round fetches and submits the next charges while earlier confirms
    /// are outstanding. When there is nothing more to send, the round
    /// waits for everything in flight (`finish_inflight`).
    ///
    /// Only the head of the outbox has a retry schedule. The charges behind
    /// it wait for it without being attempted: a failure is charged to the
    /// oldest charge the sink failed on, and every later charge the sink did
    /// not deliver is left as it was (no attempt counted, no failure clock
    /// started), whatever the sink says about it, in this round's batch or
    /// carried from earlier ones. When the head gives up it alone becomes a
    /// dead letter, and the next charge starts its own schedule from its
    /// first real attempt.
    pub async fn step(&mut self) -> Result<Step, StoreError> {
        if std::mem::take(&mut self.reread_due) {
            // Nothing in flight may be read back as pending and sent again.
            self.finish_inflight().await?;
            self.reread();
        }
        if self.sink.is_paused() {
            if !self.inflight.is_empty() {
                self.finish_inflight().await?;
                return Ok(Step::Sent);
            }
            return Ok(Step::Paused);
        }
        let t_fetch = Instant::now();
        self.fill().await?;
        let Some(front) = self.queue.front() else {
            if !self.inflight.is_empty() {
                // The caller waits for the next confirm or new work,
                // whichever comes first (`await_inflight`).
                return Ok(Step::InFlight);
            }
            self.head = None;
            return Ok(Step::Idle);
        };
        // With charges in flight the front is not the head: it goes out
        // behind them, as it would have in one batch with them.
        if self.inflight.is_empty() {
            let clock = self.head_clock(front);
            self.head = Some(clock.clone());
            if clock.next > Instant::now() {
                return Ok(Step::WaitUntil(clock.next));
            }
        }
        let n = self.queue.len().min(self.batch);
        let mut due = Vec::with_capacity(n);
        let mut marks = Vec::with_capacity(n);
        for p in self.queue.drain(..n) {
            marks.push((p.created_ms, p.first_fail_ms));
            due.push(p.envelope);
        }
        let t_send = Instant::now();
        let outcomes = self.sink.submit(&due).await;
        let sent = due.len();
        self.inflight.extend(due.into_iter().zip(marks).map(
            |(envelope, (created_ms, first_fail_ms))| Handed {
                envelope,
                created_ms,
                first_fail_ms,
            },
        ));
        tracing::trace!(
            sent,
            answered = outcomes.len(),
            in_flight = self.inflight.len().saturating_sub(outcomes.len()),
            fetch_us = (t_send - t_fetch).as_micros() as u64,
            send_us = t_send.elapsed().as_micros() as u64,
            "batch"
        );
        self.answer(outcomes).await?;
        Ok(Step::Sent)
    }

    /// Nothing to send and charges in flight: answer those the sink can
    /// answer as soon as it can (`Sink::answerable`), unless new charges
    /// come first (they go out behind the ones in flight, so the confirm
    /// window never drains while work waits). A sink that answers nothing
    /// for `STALL` is waited for whole (`finish_inflight`, within the
    /// sink's own timeouts).
    pub(super) async fn await_inflight(&mut self) -> Result<(), StoreError> {
        /// Confirms come within milliseconds; a second without one is a
        /// broker in trouble, left to the sink's timeouts and blocked grace.
        const STALL: Duration = Duration::from_secs(1);
        let woke = tokio::select! {
            _ = self.sink.answerable() => Woke::Answerable,
            _ = self.handoff.notified() => Woke::Work,
            _ = tokio::time::sleep(STALL) => Woke::Stalled,
        };
        match woke {
            Woke::Answerable => {
                let outcomes = self.sink.submit(&[]).await;
                self.answer(outcomes).await
            }
            // Taken on the next round.
            Woke::Work => Ok(()),
            Woke::Stalled => self.finish_inflight().await,
        }
    }

    /// Wait for the sink to answer every charge in flight, and record them
    /// (before closing, before the outbox is read again from the start, and
    /// when there is nothing more to send).
    pub(super) async fn finish_inflight(&mut self) -> Result<(), StoreError> {
        if self.inflight.is_empty() {
            return Ok(());
        }
        let mut outcomes = self.sink.flush().await;
        // A sink that answers fewer outcomes than envelopes is a bug; treat
        // the missing ones as not sent rather than guessing.
        outcomes.resize(self.inflight.len(), Outcome::NotSent);
        self.answer(outcomes).await
    }

    /// The sink answered `outcomes` for the oldest charges in flight:
    /// decide each one's record and write them beside the next round.
    async fn answer(&mut self, mut outcomes: Vec<Outcome>) -> Result<(), StoreError> {
        outcomes.truncate(self.inflight.len());
        // A charge left pending ends the run in flight: the outbox is read
        // again from it, so nothing may stay in flight behind it. (A sink
        // answers everything it carries after a failure; this holds even
        // if one did not.)
        let left_pending = outcomes
            .iter()
            .any(|o| matches!(o, Outcome::Retry { .. } | Outcome::NotSent));
        if left_pending && outcomes.len() < self.inflight.len() {
            outcomes.extend(self.sink.flush().await);
            outcomes.truncate(self.inflight.len());
            outcomes.resize(self.inflight.len(), Outcome::NotSent);
        }
        let answered: Vec<Handed> = self.inflight.drain(..outcomes.len()).collect();
        Stats::set(&self.stats.delivery_in_flight, self.inflight.len() as u64);
        self.stats.set_sink_health(self.sink.health());
        if answered.is_empty() {
            return Ok(());
        }
        let t_record = Instant::now();
        let (now, wall) = (Instant::now(), now_ms());
        // The head's clock, if the oldest charge answered was the head when
        // it was handed over.
        let clock = self.head.clone();
        let mut records: Vec<(&Envelope, Record)> = Vec::with_capacity(answered.len());
        let mut failed: Option<(&Envelope, String)> = None;
        let (mut retried, mut rejected) = (0u64, 0u64);
        let mut by_source = SourceTally::default();
        for (h, o) in answered.iter().zip(outcomes) {
            let env = &h.envelope;
            let own = self.stats.source_of(&env.payload);
            match o {
                Outcome::Delivered => {
                    let ms = (wall - h.created_ms).max(0) as u64;
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
                            first_fail_ms: h.first_fail_ms.unwrap_or(wall),
                        },
                    ));
                }
                // Behind the first failure: not this charge's fault.
                Outcome::Retry { .. } | Outcome::NotSent if failed.is_some() => {}
                Outcome::NotSent => {}
                Outcome::Retry { error, retry_after } => {
                    retried += 1;
                    own.iter().for_each(|s| Stats::add(&s.retried, 1));
                    let first_fail = match &clock {
                        Some(c) if c.seq == env.seq => c.first_fail.unwrap_or(now),
                        // Not the head when it was handed over: its first
                        // failure (a charge that was never the head was
                        // never failed on).
                        _ => now,
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
            let waiting = answered.iter().filter(|h| h.envelope.seq > env.seq).count();
            tracing::warn!(charge = %env.id, attempts = env.attempts + 1, waiting, error = %error, "delivery failed; will retry");
        }
        // What is still pending after this round (a retry, or held back
        // behind one) is read back from the outbox with its new schedule;
        // the rows after it in memory are dropped with it (nothing is in
        // flight behind it: see above).
        let mut recs = records.iter().peekable();
        let left = answered.iter().find(|h| match recs.peek() {
            Some((e, r)) if e.seq == h.envelope.seq => {
                recs.next();
                matches!(r, Record::Retry { .. })
            }
            _ => true,
        });
        if let Some(first) = left {
            debug_assert!(self.inflight.is_empty());
            self.queue.clear();
            self.known_to = first.envelope.seq - 1;
            self.behind = true;
        }
        // Written on a blocking thread while the next round is sent (one
        // record outstanding at most).
        let by_seq: Vec<(i64, Record)> = records.into_iter().map(|(e, r)| (e.seq, r)).collect();
        let last_seq = by_seq.iter().map(|(seq, _)| *seq).max().unwrap_or(0);
        self.settle().await?;
        self.recording = Some(Recording {
            handle: spawn_on(&self.store, move |st| {
                let (delivered, dead) = st.record_seqs(&by_seq)?;
                Ok((delivered, dead, st.change_tokens()?))
            }),
            rejected,
            by_source,
            last_seq,
            sent: answered.len(),
            started: t_record,
        });
        Stats::add(&self.stats.retried, retried);
        Ok(())
    }

    /// Wait for the last round's record (on its blocking thread) and count
    /// what it did; the change tokens read with it are looked at too.
    pub(super) async fn settle(&mut self) -> Result<(), StoreError> {
        let Some(r) = self.recording.take() else {
            return Ok(());
        };
        let (delivered, dead, tokens) = joined(r.handle).await?;
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
        self.see_tokens(tokens).await
    }

    /// The head's failure clock: made from the stored schedule when a
    /// charge first becomes the head in this process (`RetryPolicy::clock_of`),
    /// kept in memory after that.
    fn head_clock(&self, head: &Pending) -> HeadClock {
        match &self.head {
            Some(c) if c.seq == head.envelope.seq => c.clone(),
            _ => self.policy.clock_of(head),
        }
    }
}
