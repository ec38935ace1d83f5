//! The connection: connecting (node by node), the reconnect backoff, and
//! declaring the topology.

use super::*;

/// What the sink keeps of a live connection.
pub(super) struct Live {
    pub(super) conn: Connection,
    /// Shared with the publishes in flight (each owns what it needs).
    pub(super) chan: Arc<Channel>,
    /// `Some(reason)` between `connection.blocked` and `connection.unblocked`.
    pub(super) blocked: Arc<Mutex<Option<String>>>,
    pub(super) events: tokio::task::JoinHandle<()>,
    /// Confirms we stopped waiting for while the broker blocked us (their
    /// envelopes were answered `Retry`). Kept, not dropped, until they
    /// resolve or the connection goes, so none is ever lost track of.
    pub(super) orphans: Vec<PublisherConfirm>,
}

impl Live {
    pub(super) fn usable(&self) -> bool {
        self.conn.status().connected() && self.chan.status().connected()
    }

    pub(super) fn blocked(&self) -> Option<String> {
        self.blocked.lock().map(|b| b.clone()).unwrap_or(None)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        // Dropping the lapin handles closes the connection in the
        // background; the events task would otherwise outlive it.
        self.events.abort();
    }
}

#[derive(Debug, Default)]
pub(super) struct Backoff {
    pub(super) failures: u32,
    pub(super) not_before: Option<Instant>,
}

impl Backoff {
    pub(super) fn fail(&mut self, initial_ms: u64, max_ms: u64) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let exp = initial_ms.saturating_mul(1u64 << (self.failures - 1).min(30));
        let cap = exp.min(max_ms);
        // Full jitter: spreads the reconnects of many daemons after an outage.
        let wait = Duration::from_millis(rand::rng().random_range(0..=cap));
        self.not_before = Some(Instant::now() + wait);
        wait
    }

    pub(super) fn reset(&mut self) {
        self.failures = 0;
        self.not_before = None;
    }

    pub(super) fn remaining(&self) -> Option<Duration> {
        self.not_before
            .and_then(|t| t.checked_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
    }
}

impl AmqpSink {
    /// A usable connection, connecting if there is none and the backoff
    /// allows; `respect_backoff = false` for `check`.
    pub(super) async fn ensure_connected(
        &mut self,
        respect_backoff: bool,
    ) -> Result<(), AmqpError> {
        if self.live.as_ref().is_some_and(Live::usable) {
            return Ok(());
        }
        if self.live.take().is_some() {
            tracing::warn!(url = %self.res.shown_url, "AMQP connection lost; reconnecting");
        }
        if respect_backoff {
            if let Some(wait) = self.backoff.remaining() {
                return Err(AmqpError::Backoff {
                    url: self.res.shown_url.clone(),
                    last: self.last_error.clone().unwrap_or_default(),
                    wait,
                });
            }
        }
        // A cluster: a lost node is tried last; each node once per round.
        if std::mem::take(&mut self.was_live) {
            self.next_node();
        }
        let mut result = self.connect().await;
        for _ in 0..self.spare.len() {
            let Err(e) = &result else { break };
            tracing::warn!(url = %self.res.shown_url, error = %e, "AMQP node unreachable; trying the next");
            self.next_node();
            result = self.connect().await;
        }
        match result {
            Ok(live) => {
                tracing::info!(url = %self.res.shown_url, exchange = %self.cfg.exchange, "AMQP connected");
                self.live = Some(live);
                self.was_live = true;
                // A node just taken over may still be electing queue leaders.
                self.win.probe = true;
                self.last_error = None;
                // A fixed auth/TLS/topology problem clears its alert; an
                // unroutable alert waits for a clean batch.
                if self
                    .alert
                    .as_deref()
                    .is_some_and(|a| !a.starts_with("unroutable"))
                {
                    self.alert = None;
                }
                Ok(())
            }
            Err(e) => {
                let wait = self
                    .backoff
                    .fail(self.cfg.reconnect_initial_ms, self.cfg.reconnect_max_ms);
                let text = e.to_string();
                tracing::warn!(error = %text, retry_in_ms = wait.as_millis() as u64, "AMQP connect failed");
                if e.needs_operator() {
                    tracing::error!(error = %text, "AMQP sink needs attention");
                    self.alert = Some(text.clone());
                }
                self.last_error = Some(text);
                Err(e)
            }
        }
    }

    /// Make the next node of `urls` the current one.
    pub(super) fn next_node(&mut self) {
        if let Some(next) = self.spare.pop_front() {
            let prev = std::mem::replace(&mut self.res, next);
            self.spare.push_back(prev);
        }
    }

    pub(super) async fn connect(&self) -> Result<Live, AmqpError> {
        let connect_err = |reason: String| AmqpError::Connect {
            url: self.res.shown_url.clone(),
            reason,
        };
        let mut props = ConnectionProperties::default()
            .with_connection_name(format!("chargetail {}", self.source).into());
        if let Some(auth) = &self.res.auth {
            props = props.with_auth_provider(auth.clone());
        }
        let builder = DefaultConnectionBuilder::new()
            .map_err(|e| connect_err(self.lapin_err(&e)))?
            .with_uri(self.res.uri.clone())
            .with_properties(props)
            .with_tls_config(self.res.tls.clone());
        let conn = match tokio::time::timeout(self.timeout, builder.connect()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(connect_err(self.lapin_err(&e))),
            Err(_) => return Err(self.timeout_err("connect")),
        };
        // Listen before anything else so no blocked notice is missed.
        let blocked = Arc::new(Mutex::new(None));
        let events = {
            let blocked = blocked.clone();
            let mut stream = Box::pin(conn.events_listener());
            let url = self.res.shown_url.clone();
            tokio::spawn(async move {
                while let Some(ev) = stream.next().await {
                    let new = match ev {
                        Event::ConnectionBlocked(reason) => {
                            tracing::warn!(%url, %reason, "AMQP broker blocked publishing");
                            Some(reason)
                        }
                        Event::ConnectionUnblocked => {
                            tracing::info!(%url, "AMQP broker unblocked publishing");
                            None
                        }
                        _ => continue,
                    };
                    if let Ok(mut b) = blocked.lock() {
                        *b = new;
                    }
                }
            })
        };
        let chan = self.timed("channel.open", conn.create_channel()).await?;
        self.timed(
            "confirm.select",
            chan.confirm_select(ConfirmSelectOptions::default()),
        )
        .await?;
        self.declare(&chan).await?;
        Ok(Live {
            conn,
            chan: Arc::new(chan),
            blocked,
            events,
            orphans: Vec::new(),
        })
    }

    /// Declares the configured topology; idempotent, and a mismatch with
    /// what exists is a `Topology` error saying what differs.
    pub(super) async fn declare(&self, chan: &Channel) -> Result<(), AmqpError> {
        let cfg = &self.cfg;
        if cfg.declare_exchange && !cfg.exchange.is_empty() {
            let opts = ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            };
            self.declare_step(
                "exchange.declare",
                chan.exchange_declare(
                    self.exchange.clone(),
                    ExchangeKind::Topic,
                    opts,
                    FieldTable::default(),
                ),
                || {
                    format!(
                        "exchange '{}' (declare_exchange = true wants a durable topic exchange)",
                        cfg.exchange
                    )
                },
            )
            .await?;
        }
        if let Some(queue) = &cfg.queue {
            let mut args = FieldTable::default();
            // Classic is the broker default: left implicit so that queues
            // made by other tools without the argument still match.
            if cfg.queue_type == QueueType::Quorum {
                args.insert(
                    "x-queue-type".into(),
                    AMQPValue::LongString("quorum".into()),
                );
            }
            if let Some(dlx) = &cfg.dead_letter_exchange {
                args.insert(
                    "x-dead-letter-exchange".into(),
                    AMQPValue::LongString(dlx.as_str().into()),
                );
            }
            let opts = QueueDeclareOptions {
                durable: true,
                ..Default::default()
            };
            self.declare_step(
                "queue.declare",
                chan.queue_declare(queue.as_str().into(), opts, args),
                || {
                    format!(
                        "queue '{queue}' (config: durable, queue_type = {}, dead_letter_exchange = {})",
                        cfg.queue_type.as_str(),
                        cfg.dead_letter_exchange.as_deref().unwrap_or("none")
                    )
                },
            )
            .await?;
            if !cfg.exchange.is_empty() {
                self.declare_step(
                    "queue.bind",
                    chan.queue_bind(
                        queue.as_str().into(),
                        self.exchange.clone(),
                        cfg.binding_key.as_str().into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    ),
                    || {
                        format!(
                            "binding queue '{queue}' to exchange '{}' with key '{}'",
                            cfg.exchange, cfg.binding_key
                        )
                    },
                )
                .await?;
            }
        }
        Ok(())
    }

    /// One topology step (declare, bind) within the timeout; a refusal is
    /// explained by `describe` (what the config asked for).
    async fn declare_step<T>(
        &self,
        method: &'static str,
        fut: impl std::future::Future<Output = lapin::Result<T>>,
        describe: impl FnOnce() -> String,
    ) -> Result<T, AmqpError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.topology_err(&e, describe())),
            Err(_) => Err(self.timeout_err(method)),
        }
    }

    pub(super) fn topology_err(&self, e: &lapin::Error, what: String) -> AmqpError {
        let text = self.lapin_err(e);
        if text.contains("PRECONDITION_FAILED") {
            AmqpError::Topology(format!(
                "{what} already exists with different settings: {text}; \
                 change [sink.amqp] to match it, or delete it on the broker"
            ))
        } else if text.contains("NOT_FOUND") {
            AmqpError::Topology(format!("{what}: {text}"))
        } else {
            AmqpError::Broker(format!("{what}: {text}"))
        }
    }
}
