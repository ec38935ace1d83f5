//! Publishing a batch: the confirm window, waiting on confirms, and judging
//! each answer.

use super::*;

pub(super) type WriteFut<'a> =
    Pin<Box<dyn Future<Output = lapin::Result<PublisherConfirm>> + Send + 'a>>;

/// A published message not yet settled.
pub(super) enum InFlight<'a> {
    /// Frames queued in lapin, not yet known to be written.
    Writing(WriteFut<'a>),
    Confirming(PublisherConfirm),
}

impl InFlight<'_> {
    /// The confirm if it is already there, without waiting.
    pub(super) fn try_settle(&mut self) -> Option<lapin::Result<Confirmation>> {
        if let InFlight::Writing(w) = self {
            match w.now_or_never()? {
                Ok(c) => *self = InFlight::Confirming(c),
                Err(e) => return Some(Err(e)),
            }
        }
        match self {
            InFlight::Confirming(c) => c.now_or_never(),
            InFlight::Writing(_) => None,
        }
    }
}

pub(super) enum Waited<T> {
    Done(T),
    /// The broker blocked the connection while we waited.
    Blocked(String),
    TimedOut,
}

/// The confirm window of one batch (see the module doc, "Order through
/// nacks"): one message in flight while probing; an ack opens it, a nack
/// closes it and ends the batch.
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

/// Why a batch stopped early; everything not yet confirmed is `Retry`.
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
    /// or connection failed (and the batch must stop).
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
        m: &mut InFlight<'_>,
        live: &Live,
    ) -> Result<lapin::Result<Confirmation>, Stop> {
        if let InFlight::Writing(w) = m {
            match self.wait_on(w, live).await {
                Waited::Done(Ok(c)) => *m = InFlight::Confirming(c),
                Waited::Done(Err(e)) => return Err(self.error_stop("basic.publish", &e)),
                Waited::Blocked(reason) => return Err(self.blocked_stop(&reason)),
                Waited::TimedOut => return Err(self.timeout_stop("basic.publish")),
            }
        }
        match m {
            InFlight::Confirming(c) => match self.wait_on(c, live).await {
                Waited::Done(r) => Ok(r),
                Waited::Blocked(reason) => Err(self.blocked_stop(&reason)),
                Waited::TimedOut => Err(self.timeout_stop("publisher confirm")),
            },
            InFlight::Writing(_) => Err(self.timeout_stop("basic.publish")),
        }
    }

    pub(super) async fn publish_batch(
        &mut self,
        batch: &[Envelope],
        out: &mut [Option<Outcome>],
        keys: &[Option<String>],
    ) -> Option<Stop> {
        if let Some(live) = self.live.as_mut() {
            live.orphans.retain_mut(|c| c.now_or_never().is_none());
        }
        let Some(live) = self.live.as_ref() else {
            return Some(Stop {
                error: "not connected".into(),
                retry_after: None,
                drop_connection: true,
            });
        };
        if let Some(reason) = live.blocked() {
            return Some(self.blocked_stop(&reason));
        }
        let chan = live.chan.clone();
        let window = self.cfg.window.max(1);
        let mut win = Window {
            probe: self.probe,
            nacked: false,
        };
        let opts = BasicPublishOptions {
            mandatory: true,
            immediate: false,
        };
        let mut inflight: VecDeque<(usize, InFlight)> = VecDeque::with_capacity(window);
        let mut returned = Vec::new();
        let mut stop: Option<Stop> = None;
        let mut orphans = Vec::new();

        'publish: for (i, e) in batch.iter().enumerate() {
            let Some(rk) = keys[i].as_deref() else {
                continue;
            };
            while inflight.len() >= win.limit(window) {
                let Some((j, mut m)) = inflight.pop_front() else {
                    break;
                };
                let rkj = keys[j].as_deref().unwrap_or_default();
                let judged = self.settle(&mut m, live).await.and_then(|r| {
                    win.saw(&r);
                    self.judge(r, rkj, &mut returned)
                });
                match judged {
                    Ok(o) => {
                        out[j] = Some(o);
                        // Nothing more of the batch after a nack: the
                        // failure is the nacked charge's, the rest wait.
                        if win.nacked {
                            for (k, o) in out.iter_mut().enumerate().skip(i) {
                                if keys[k].is_some() {
                                    *o = Some(Outcome::NotSent);
                                }
                            }
                            break 'publish;
                        }
                    }
                    Err(s) => {
                        stop = Some(s);
                        break 'publish;
                    }
                }
            }
            // One poll of basic_publish registers the message's confirm and
            // queues its frames, in call order: that fixes the publish order.
            // The write completion is collected later with the confirm, so
            // lapin's I/O thread writes many messages per wake-up instead of
            // one round trip to it per message.
            let mut w: WriteFut = Box::pin(chan.basic_publish(
                self.exchange.clone(),
                rk.into(),
                opts,
                &e.payload,
                self.properties(e),
            ));
            let first = std::future::poll_fn(|cx| {
                Poll::Ready(match w.as_mut().poll(cx) {
                    Poll::Ready(r) => Some(r),
                    Poll::Pending => None,
                })
            })
            .await;
            match first {
                None => inflight.push_back((i, InFlight::Writing(w))),
                Some(Ok(c)) => inflight.push_back((i, InFlight::Confirming(c))),
                Some(Err(err)) => {
                    stop = Some(self.error_stop("basic.publish", &err));
                    break;
                }
            }
        }

        while let Some((j, mut m)) = inflight.pop_front() {
            let rkj = keys[j].as_deref().unwrap_or_default();
            if stop.is_some() {
                // Confirms that already arrived still count; the rest are
                // retried, never assumed delivered, and their confirms stay
                // tracked (by us if the connection stays, else lapin fails
                // them with the connection).
                let settled = m.try_settle().map(|r| {
                    win.saw(&r);
                    self.judge(r, rkj, &mut returned)
                });
                match settled {
                    Some(judged) => match judged {
                        Ok(o) => out[j] = Some(o),
                        Err(s) => {
                            // Prefer the broker's own reason (e.g. a
                            // channel closed with NOT_FOUND) over ours.
                            if let Some(cur) = stop.as_mut() {
                                if !operator_text(&cur.error) && operator_text(&s.error) {
                                    cur.error = s.error;
                                }
                            }
                        }
                    },
                    None => {
                        if let InFlight::Confirming(c) = m {
                            orphans.push(c);
                        }
                    }
                }
                continue;
            }
            let judged = self.settle(&mut m, live).await.and_then(|r| {
                win.saw(&r);
                self.judge(r, rkj, &mut returned)
            });
            match judged {
                Ok(o) => out[j] = Some(o),
                Err(s) => stop = Some(s),
            }
        }
        self.probe = win.probe;

        if stop.as_ref().is_some_and(|s| !s.drop_connection) {
            if let Some(live) = self.live.as_mut() {
                live.orphans.extend(orphans);
            }
        }
        if !returned.is_empty() {
            let keys = returned.join("', '");
            let alert = format!(
                "unroutable: exchange '{}' has no queue bound for routing key(s) '{keys}'; \
                 charges stay pending until a binding exists",
                self.cfg.exchange
            );
            tracing::error!(exchange = %self.cfg.exchange, routing_keys = %keys, "{alert}");
            self.alert = Some(alert);
        } else if stop.is_none() && self.alert.is_some() {
            self.alert = None;
        }
        stop
    }
}
