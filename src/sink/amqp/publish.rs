//! Publishing: the confirm window carried across calls, waiting on
//! confirms, and judging each answer (see the module doc, "The window
//! across calls").

use super::*;

/// A publish whose frames may not be written yet. It owns what it needs
/// (the channel, a copy of the bytes), so it can be carried into the next
/// call with its message.
pub(super) type WriteFut = Pin<Box<dyn Future<Output = lapin::Result<PublisherConfirm>> + Send>>;

/// A published message not yet settled.
pub(super) enum InFlight {
    /// Frames queued in lapin, not yet known to be written. In a mutex only
    /// so that the sink stays `Sync` (its `&self` methods are held across
    /// awaits of a `Send` future); it is reached through `&mut` alone and
    /// never locked.
    Writing(std::sync::Mutex<WriteFut>),
    Confirming(PublisherConfirm),
    /// Its answer came while nothing was taking it (`front_settled`, which
    /// must not consume it: it may be dropped at any await); taken once.
    /// `None`: spent. Every future here ends in this state once it has
    /// answered, since a future polled again after completing panics (a
    /// slot put back after a stop is looked at again by `conclude`).
    Settled(Option<Box<lapin::Result<Confirmation>>>),
}

/// The write future of a `Writing` message (never locked: see there).
fn write_fut(w: &mut std::sync::Mutex<WriteFut>) -> &mut WriteFut {
    match w.get_mut() {
        Ok(f) => f,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl InFlight {
    /// The confirm if it is already there, without waiting.
    pub(super) fn try_settle(&mut self) -> Option<lapin::Result<Confirmation>> {
        if let InFlight::Writing(w) = self {
            match write_fut(w).now_or_never()? {
                Ok(c) => *self = InFlight::Confirming(c),
                Err(e) => {
                    *self = InFlight::Settled(None);
                    return Some(Err(e));
                }
            }
        }
        match self {
            InFlight::Confirming(c) => {
                let r = c.now_or_never()?;
                *self = InFlight::Settled(None);
                Some(r)
            }
            InFlight::Settled(r) => r.take().map(|b| *b),
            InFlight::Writing(_) => None,
        }
    }

    /// Polls the write, then the confirm, in place: `Ready` once the answer
    /// is kept in `Settled` (or was already), which `try_settle` then takes.
    /// Nothing is consumed on `Pending`, so a caller may stop polling at any
    /// time.
    fn poll_settled(&mut self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        loop {
            match self {
                InFlight::Writing(w) => match write_fut(w).as_mut().poll(cx) {
                    Poll::Ready(Ok(c)) => *self = InFlight::Confirming(c),
                    Poll::Ready(Err(e)) => *self = InFlight::Settled(Some(Box::new(Err(e)))),
                    Poll::Pending => return Poll::Pending,
                },
                InFlight::Confirming(c) => match Pin::new(c).poll(cx) {
                    Poll::Ready(r) => *self = InFlight::Settled(Some(Box::new(r))),
                    Poll::Pending => return Poll::Pending,
                },
                InFlight::Settled(_) => return Poll::Ready(()),
            }
        }
    }
}

/// An envelope handed to the sink and not answered yet, in hand-over
/// order: published and awaiting its confirm, or already answered (a
/// reject, or a confirm that came) but behind one that is still awaited.
pub(super) struct Slot {
    /// Its routing key, for the texts of a nack or a return.
    key: String,
    state: SlotState,
}

enum SlotState {
    Answered(Outcome),
    Published(InFlight),
}

pub(super) enum Waited<T> {
    Done(T),
    /// The broker blocked the connection while we waited.
    Blocked(String),
    TimedOut,
}

/// The confirm window (see the module doc, "Order through nacks"): one
/// message in flight while probing; an ack opens it, a nack closes it and
/// ends publishing until the next call.
#[derive(Debug, Clone, Copy)]
pub(super) struct Window {
    pub(super) probe: bool,
    pub(super) nacked: bool,
}

impl Window {
    pub(super) fn saw(&mut self, r: &lapin::Result<Confirmation>) {
        match r {
            Ok(Confirmation::Nack(None)) => {
                self.probe = true;
                self.nacked = true;
            }
            // An ack settled after a nack (it was already in flight) does
            // not reopen the window.
            Ok(Confirmation::Ack(None)) if !self.nacked => self.probe = false,
            _ => {}
        }
    }

    pub(super) fn limit(&self, window: usize) -> usize {
        if self.probe {
            1
        } else {
            window
        }
    }
}

/// Why publishing stopped early; everything not yet confirmed is `Retry`.
pub(super) struct Stop {
    pub(super) error: String,
    pub(super) retry_after: Option<Duration>,
    /// The connection is not to be trusted any more.
    pub(super) drop_connection: bool,
}

impl AmqpSink {
    /// Waits for `fut` up to the timeout, giving up early (after a short
    /// grace) when the broker blocks the connection.
    pub(super) async fn wait_on<F: Future + Unpin>(
        &self,
        fut: &mut F,
        blocked: &Live,
    ) -> Waited<F::Output> {
        let start = Instant::now();
        let mut blocked_since: Option<Instant> = None;
        loop {
            if let Ok(v) = tokio::time::timeout(WAIT_SLICE, &mut *fut).await {
                return Waited::Done(v);
            }
            if let Some(reason) = blocked.blocked() {
                let since = *blocked_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= BLOCKED_GRACE {
                    return Waited::Blocked(reason);
                }
            } else {
                blocked_since = None;
            }
            if start.elapsed() >= self.timeout {
                return Waited::TimedOut;
            }
        }
    }

    pub(super) fn blocked_stop(&self, reason: &str) -> Stop {
        Stop {
            error: format!("broker {} blocked publishing: {reason}", self.res.shown_url),
            retry_after: Some(Duration::from_millis(self.cfg.blocked_retry_ms)),
            drop_connection: false,
        }
    }

    pub(super) fn error_stop(&self, what: &str, e: &lapin::Error) -> Stop {
        let mut error = format!("{what}: {}", self.lapin_err(e));
        if matches!(e.kind(), ErrorKind::InvalidChannelState(..)) {
            error.push_str(" (channel closed by the broker or connection lost)");
        }
        Stop {
            error,
            retry_after: None,
            drop_connection: true,
        }
    }

    pub(super) fn timeout_stop(&self, what: &'static str) -> Stop {
        Stop {
            error: self.timeout_err(what).to_string(),
            retry_after: None,
            drop_connection: true,
        }
    }

    /// Turns one resolved confirm into an outcome. `Err` means the channel
    /// or connection failed (and publishing must stop).
    pub(super) fn judge(
        &self,
        res: lapin::Result<Confirmation>,
        routing_key: &str,
        returned: &mut Vec<String>,
    ) -> Result<Outcome, Stop> {
        match res {
            Ok(Confirmation::Ack(None)) => Ok(Outcome::Delivered),
            Ok(Confirmation::Ack(Some(ret))) | Ok(Confirmation::Nack(Some(ret))) => {
                Ok(self.unroutable(&ret, routing_key, returned))
            }
            Ok(Confirmation::Nack(None)) => Ok(Outcome::Retry {
                error: format!(
                    "broker nacked the message (exchange '{}', routing key '{routing_key}')",
                    self.cfg.exchange
                ),
                retry_after: None,
            }),
            Ok(Confirmation::NotRequested) => Ok(Outcome::Retry {
                error: "publisher confirms not enabled on the channel".into(),
                retry_after: None,
            }),
            Err(e) => Err(self.error_stop("waiting for publisher confirm", &e)),
        }
    }

    pub(super) fn unroutable(
        &self,
        ret: &BasicReturnMessage,
        routing_key: &str,
        returned: &mut Vec<String>,
    ) -> Outcome {
        let error = format!(
            "unroutable: exchange '{}' routed routing key '{}' to no queue \
             (basic.return {} {}); bind a queue to the exchange",
            ret.delivery.exchange, routing_key, ret.reply_code, ret.reply_text
        );
        if !returned.iter().any(|k| k == routing_key) {
            returned.push(routing_key.to_string());
        }
        Outcome::Retry {
            error,
            retry_after: None,
        }
    }

    /// Resolves one in-flight message: its frames written, then its confirm.
    pub(super) async fn settle(
        &self,
        m: &mut InFlight,
        live: &Live,
    ) -> Result<lapin::Result<Confirmation>, Stop> {
        if let InFlight::Writing(w) = m {
            match self.wait_on(write_fut(w), live).await {
                Waited::Done(Ok(c)) => *m = InFlight::Confirming(c),
                Waited::Done(Err(e)) => {
                    *m = InFlight::Settled(None);
                    return Err(self.error_stop("basic.publish", &e));
                }
                Waited::Blocked(reason) => return Err(self.blocked_stop(&reason)),
                Waited::TimedOut => return Err(self.timeout_stop("basic.publish")),
            }
        }
        match m {
            InFlight::Confirming(c) => match self.wait_on(c, live).await {
                Waited::Done(r) => {
                    *m = InFlight::Settled(None);
                    Ok(r)
                }
                Waited::Blocked(reason) => Err(self.blocked_stop(&reason)),
                Waited::TimedOut => Err(self.timeout_stop("publisher confirm")),
            },
            // Judged like any confirm (an error there stops publishing).
            InFlight::Settled(r) => match r.take() {
                Some(r) => Ok(*r),
                None => Err(self.timeout_stop("publisher confirm")),
            },
            InFlight::Writing(_) => Err(self.timeout_stop("basic.publish")),
        }
    }

    /// The routing key of each envelope, or why no broker could ever take
    /// it: AMQP short strings (routing key, message id) hold 255 bytes.
    fn keys(&self, batch: &[Envelope]) -> Vec<Result<String, String>> {
        batch
            .iter()
            .map(|e| {
                // With several sources one sink carries them all: the
                // message's own `source` (papercut/NAME) names it.
                let own = if self.res.template.uses_source() {
                    e.attrs().source_name()
                } else {
                    None
                };
                let k = self.res.template.render(
                    &e.job_type,
                    &e.account_type,
                    own.unwrap_or(&self.source),
                );
                if k.len() > MAX_SHORT_STRING {
                    Err(format!(
                        "routing key from template '{}' is longer than {MAX_SHORT_STRING} bytes",
                        self.cfg.routing_key
                    ))
                } else if e.id.len() > MAX_SHORT_STRING {
                    Err(format!(
                        "charge id is longer than {MAX_SHORT_STRING} bytes (AMQP message_id)"
                    ))
                } else {
                    Ok(k)
                }
            })
            .collect()
    }

    /// An answered envelope: straight to `ready` when nothing older waits,
    /// else behind the older ones in the tail.
    fn answered(&mut self, key: String, o: Outcome) {
        if self.tail.is_empty() {
            self.ready.push(o);
        } else {
            self.tail.push_back(Slot {
                key,
                state: SlotState::Answered(o),
            });
        }
    }

    /// Settles the oldest slot of the tail (the front always awaits a
    /// confirm: answered ones move to `ready` as soon as nothing older
    /// waits). `wait = false` only takes a confirm already there. Returns
    /// whether it settled one; `Err` means publishing must stop (the slot
    /// stays in the tail).
    async fn settle_front(&mut self, live: &Live, wait: bool) -> Result<bool, Stop> {
        let Some(mut slot) = self.tail.pop_front() else {
            return Ok(false);
        };
        let res = match &mut slot.state {
            SlotState::Answered(_) => None,
            SlotState::Published(m) if wait => match self.settle(m, live).await {
                Ok(r) => Some(r),
                Err(stop) => {
                    self.tail.push_front(slot);
                    return Err(stop);
                }
            },
            SlotState::Published(m) => match m.try_settle() {
                Some(r) => Some(r),
                None => {
                    self.tail.push_front(slot);
                    return Ok(false);
                }
            },
        };
        let o = match res {
            None => match slot.state {
                SlotState::Answered(o) => o,
                SlotState::Published(_) => unreachable!("settled above"),
            },
            Some(r) => {
                self.win.saw(&r);
                let mut returned = std::mem::take(&mut self.returned);
                let judged = self.judge(r, &slot.key, &mut returned);
                self.returned = returned;
                match judged {
                    Ok(o) => o,
                    Err(stop) => {
                        // The confirm is spent: the stop path answers the
                        // slot from the error (put back unresolved).
                        self.tail.push_front(slot);
                        return Err(stop);
                    }
                }
            }
        };
        self.ready.push(o);
        while let Some(Slot {
            state: SlotState::Answered(_),
            ..
        }) = self.tail.front()
        {
            if let Some(Slot {
                state: SlotState::Answered(o),
                ..
            }) = self.tail.pop_front()
            {
                self.ready.push(o);
            }
        }
        Ok(true)
    }

    /// `Sink::answerable`: resolves once the oldest slot of the tail has
    /// its answer (kept in the slot for the next call to take), or at once
    /// when the tail is empty. Cancel-safe: it only polls in place.
    pub(super) async fn front_settled(&mut self) {
        std::future::poll_fn(|cx| match self.tail.front_mut() {
            Some(Slot {
                state: SlotState::Published(m),
                ..
            }) => m.poll_settled(cx),
            _ => Poll::Ready(()),
        })
        .await
    }

    /// Waits for every slot of the tail.
    async fn settle_all(&mut self, live: &Live) -> Result<(), Stop> {
        while !self.tail.is_empty() {
            self.settle_front(live, true).await?;
        }
        Ok(())
    }

    /// `Sink::submit`: publish `batch` behind the tail, keeping up to
    /// `window` messages unconfirmed, and answer the prefix already
    /// settled.
    pub(super) async fn submit_batch(&mut self, batch: &[Envelope]) -> Vec<Outcome> {
        let keys = self.keys(batch);
        self.win.nacked = false;
        if batch.is_empty() && self.tail.is_empty() {
            return std::mem::take(&mut self.ready);
        }
        let connected = if !self.tail.is_empty() {
            // The tail was published on this connection; a new one could
            // not confirm it.
            match self.live.as_ref() {
                Some(l) if l.usable() => Ok(()),
                _ => Err(Stop {
                    error: format!(
                        "connection to {} lost before the broker confirmed {} message(s)",
                        self.res.shown_url,
                        self.tail.len()
                    ),
                    retry_after: None,
                    drop_connection: true,
                }),
            }
        } else {
            self.ensure_connected(true).await.map_err(|e| Stop {
                retry_after: match &e {
                    AmqpError::Backoff { wait, .. } => Some(*wait),
                    _ => self.backoff.remaining(),
                },
                error: e.to_string(),
                drop_connection: false,
            })
        };
        let (taken, stop) = match connected {
            Ok(()) => match self.live.take() {
                Some(live) => {
                    let r = self.publish(batch, &keys, &live).await;
                    self.live = Some(live);
                    r
                }
                None => (0, Some(self.gone())),
            },
            Err(stop) => (0, Some(stop)),
        };
        self.conclude(stop, &keys[taken..])
    }

    /// `Sink::flush`: wait for every confirm carried and answer all.
    pub(super) async fn flush_tail(&mut self) -> Vec<Outcome> {
        self.win.nacked = false;
        if self.tail.is_empty() {
            return std::mem::take(&mut self.ready);
        }
        let stop = match self.live.take() {
            Some(live) => {
                let r = self.settle_all(&live).await.err();
                self.live = Some(live);
                r
            }
            None => Some(self.gone()),
        };
        self.conclude(stop, &[])
    }

    fn gone(&self) -> Stop {
        Stop {
            error: "not connected".into(),
            retry_after: None,
            drop_connection: true,
        }
    }

    /// Publishes what it can of `batch` behind the tail. Returns how many
    /// envelopes of `batch` were handed to the tail, and why it stopped
    /// early, if it did. A nack (or the broker blocking us with messages in
    /// flight) ends publishing: the tail is then waited for whole, and what
    /// was not taken is answered `NotSent` by `conclude`.
    async fn publish(
        &mut self,
        batch: &[Envelope],
        keys: &[Result<String, String>],
        live: &Live,
    ) -> (usize, Option<Stop>) {
        if let Some(reason) = live.blocked() {
            if self.tail.is_empty() {
                return (0, Some(self.blocked_stop(&reason)));
            }
            // What is in flight may still be confirmed: wait for it (with
            // the blocked grace) and publish nothing more; the batch is
            // then answered as if the call had started blocked.
            let stop = self.settle_all(live).await.err();
            return (0, Some(stop.unwrap_or_else(|| self.blocked_stop(&reason))));
        }
        let window = self.cfg.window.max(1);
        let opts = BasicPublishOptions {
            mandatory: true,
            immediate: false,
        };
        for (i, (e, key)) in batch.iter().zip(keys).enumerate() {
            let rk = match key {
                Ok(rk) => rk,
                Err(error) => {
                    let error = error.clone();
                    self.answered(String::new(), Outcome::Reject { error });
                    continue;
                }
            };
            while self.tail.len() >= self.win.limit(window) {
                match self.settle_front(live, true).await {
                    // Nothing more after a nack: the failure is the nacked
                    // charge's, the rest wait (see "Order through nacks").
                    Ok(_) if self.win.nacked => return (i, self.settle_all(live).await.err()),
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(stop) => return (i, Some(stop)),
                }
            }
            // One poll of basic_publish registers the message's confirm and
            // queues its frames, in call order: that fixes the publish order.
            // The write completion is collected later with the confirm, so
            // lapin's I/O thread writes many messages per wake-up instead of
            // one round trip to it per message.
            let chan = live.chan.clone();
            let (exchange, routing_key) = (self.exchange.clone(), ShortString::from(rk.as_str()));
            let (payload, props) = (e.payload.clone(), self.properties(e));
            let mut w: WriteFut = Box::pin(async move {
                chan.basic_publish(exchange, routing_key, opts, &payload, props)
                    .await
            });
            let first = std::future::poll_fn(|cx| {
                Poll::Ready(match w.as_mut().poll(cx) {
                    Poll::Ready(r) => Some(r),
                    Poll::Pending => None,
                })
            })
            .await;
            let m = match first {
                None => InFlight::Writing(std::sync::Mutex::new(w)),
                Some(Ok(c)) => InFlight::Confirming(c),
                Some(Err(err)) => return (i, Some(self.error_stop("basic.publish", &err))),
            };
            self.tail.push_back(Slot {
                key: rk.clone(),
                state: SlotState::Published(m),
            });
        }
        // The confirms already there are answered now; the rest are carried
        // into the next call.
        loop {
            match self.settle_front(live, false).await {
                Ok(_) if self.win.nacked => {
                    return (batch.len(), self.settle_all(live).await.err())
                }
                Ok(true) => {}
                Ok(false) => return (batch.len(), None),
                Err(stop) => return (batch.len(), Some(stop)),
            }
        }
    }

    /// Ends a call: after a stop every envelope carried is answered (what
    /// was confirmed before the stop keeps its outcome; the first
    /// unresolved one is `Retry` with the stop's reason, those after it
    /// `NotSent`) and the connection is dropped if it cannot be trusted;
    /// `untaken` (the envelopes of the batch not handed over) are answered
    /// likewise, or `NotSent` after a nack. Returns the answers ready.
    fn conclude(&mut self, stop: Option<Stop>, untaken: &[Result<String, String>]) -> Vec<Outcome> {
        let mut orphans = Vec::new();
        let mut stop = stop;
        let mut unresolved: Vec<Option<Outcome>> = Vec::new();
        if let Some(cur) = stop.as_mut() {
            let mut returned = std::mem::take(&mut self.returned);
            for slot in std::mem::take(&mut self.tail) {
                let o = match slot.state {
                    SlotState::Answered(o) => Some(o),
                    // Confirms that already arrived still count; the rest
                    // are retried, never assumed delivered, and their
                    // confirms stay tracked (by us if the connection stays,
                    // else lapin fails them with the connection).
                    SlotState::Published(mut m) => match m.try_settle() {
                        Some(r) => {
                            self.win.saw(&r);
                            match self.judge(r, &slot.key, &mut returned) {
                                Ok(o) => Some(o),
                                Err(s) => {
                                    // Prefer the broker's own reason (e.g. a
                                    // channel closed with NOT_FOUND) over ours.
                                    if !operator_text(&cur.error) && operator_text(&s.error) {
                                        cur.error = s.error;
                                    }
                                    None
                                }
                            }
                        }
                        None => {
                            if let InFlight::Confirming(c) = m {
                                orphans.push(c);
                            }
                            None
                        }
                    },
                };
                unresolved.push(o);
            }
            self.returned = returned;
        }
        for k in untaken {
            unresolved.push(match k {
                Err(error) => Some(Outcome::Reject {
                    error: error.clone(),
                }),
                // Not published after a nack: not attempted.
                Ok(_) if stop.is_none() => Some(Outcome::NotSent),
                Ok(_) => None,
            });
        }
        // The interruption is charged to the first charge it left
        // unresolved; the ones after it are not attempted (the deliver
        // stage retries them behind it without counting an attempt).
        let mut blamed = false;
        for o in unresolved {
            let o = o.unwrap_or_else(|| {
                if std::mem::replace(&mut blamed, true) {
                    return Outcome::NotSent;
                }
                match &stop {
                    Some(s) => Outcome::Retry {
                        error: s.error.clone(),
                        retry_after: s.retry_after,
                    },
                    None => Outcome::Retry {
                        error: "not published".into(),
                        retry_after: None,
                    },
                }
            });
            self.ready.push(o);
        }

        let out = std::mem::take(&mut self.ready);
        let delivered = out.iter().any(|o| matches!(o, Outcome::Delivered));
        if delivered {
            self.backoff.reset();
        }
        if let Some(s) = &stop {
            if s.drop_connection {
                tracing::warn!(error = %s.error, "AMQP publishing interrupted; dropping the connection");
                self.live = None;
                self.last_error = Some(s.error.clone());
                if operator_text(&s.error) {
                    tracing::error!(error = %s.error, "AMQP sink needs attention");
                    self.alert = Some(s.error.clone());
                }
                if !delivered {
                    self.backoff
                        .fail(self.cfg.reconnect_initial_ms, self.cfg.reconnect_max_ms);
                }
            } else if let Some(live) = self.live.as_mut() {
                live.orphans.extend(orphans);
            }
        }
        if let Some(live) = self.live.as_mut() {
            live.orphans.retain_mut(|c| c.now_or_never().is_none());
        }
        let returned = std::mem::take(&mut self.returned);
        if !returned.is_empty() {
            let keys = returned.join("', '");
            let alert = format!(
                "unroutable: exchange '{}' has no queue bound for routing key(s) '{keys}'; \
                 charges stay pending until a binding exists",
                self.cfg.exchange
            );
            tracing::error!(exchange = %self.cfg.exchange, routing_keys = %keys, "{alert}");
            self.alert = Some(alert);
        } else if stop.is_none() && !out.is_empty() && self.alert.is_some() {
            self.alert = None;
        }
        out
    }
}
