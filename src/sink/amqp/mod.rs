//! AMQP 0-9-1 (RabbitMQ) sink: publisher confirms are the proof of delivery.
//!
//! One connection, one confirm-mode channel. `send` publishes the batch in
//! order with up to `window` unconfirmed messages in flight, then waits for
//! the confirms: ack → `Delivered`; nack, `basic.return` (unroutable),
//! channel/connection error, timeout → `Retry`. Nothing is ever `Delivered`
//! without its own ack. A message retried after a nack or a return is
//! published again after the ones that followed it in its batch; a charge
//! whose ack was lost (connection died) may arrive twice, same id and bytes.
//!
//! Reconnection: the sink never sleeps. A failed connect (or a batch lost
//! to a dead connection) schedules the next attempt with exponential backoff
//! and full jitter (`reconnect_initial_ms`..`reconnect_max_ms`); until then
//! `send` answers `Retry` at once with `retry_after` = the time left, so the
//! outbox worker's schedule drives the loop and shutdown is never held up.
//! There is no attempt limit: billing data is never dropped.
//!
//! Every wait on the broker has a timeout (`timeout_ms`), because a
//! half-dead connection can leave lapin futures pending forever (lapin #409);
//! a timed-out connection is abandoned and its unconfirmed messages retried.
//! While the broker blocks publishing (memory/disk alarm) `send` answers
//! `Retry` with `retry_after = blocked_retry_ms` and keeps the connection.
//!
//! ```toml
//! [sink.amqp]
//! url = "amqps://chargetail@rabbit.example:5671/billing"  # password: URL, password_file or $CHARGETAIL_AMQP_PASSWORD
//! exchange = "papercut.charges"
//! routing_key = "charge.{job_type}"        # also {account_type}, {source}
//! password_file = "/etc/chargetail/amqp-password"
//! ca_file = "/etc/chargetail/rabbit-ca.pem"  # + client_cert_file, client_key_file
//! window = 1000                # unconfirmed messages in flight
//! timeout_ms = 15000           # any single wait on the broker
//! reconnect_initial_ms = 500   # backoff bounds (exponential, full jitter)
//! reconnect_max_ms = 30000
//! blocked_retry_ms = 5000      # retry_after while the broker blocks us
//! declare_exchange = true      # durable topic exchange
//! queue = "papercut.charges"   # declare a durable queue and bind it
//! queue_type = "quorum"        # or "classic"
//! dead_letter_exchange = "papercut.dead"
//! binding_key = "charge.#"
//! ```

mod config;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{FutureExt, StreamExt};
use lapin::message::BasicReturnMessage;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties,
    DefaultConnectionBuilder, ErrorKind, Event, ExchangeKind, PublisherConfirm,
};
use rand::Rng;
use serde::Deserialize;

use config::Resolved;
pub use config::{mask_url, AmqpConfig, QueueType, PASSWORD_ENV};

use super::{Envelope, Outcome, Sink, SinkHealth};

/// A published message must carry this to be read as a CloudEvent.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";
pub const APP_ID: &str = "chargetail";

/// AMQP short strings (routing key, message id, names) hold 255 bytes.
pub(crate) const MAX_SHORT_STRING: usize = 255;
/// While the broker blocks us, how long a pending confirm may still take
/// before we stop waiting and hand the rest back as `Retry`.
const BLOCKED_GRACE: Duration = Duration::from_secs(1);
/// Granularity of waits, so a `connection.blocked` is noticed promptly.
const WAIT_SLICE: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    #[error("[sink.amqp] {0}")]
    Config(String),
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("{what} on {url}: no answer within {ms} ms")]
    Timeout {
        what: &'static str,
        url: String,
        ms: u64,
    },
    #[error("broker topology does not match [sink.amqp]: {0}")]
    Topology(String),
    #[error("{0}")]
    Broker(String),
    #[error("not connected to {url} (last error: {last}); next attempt in {} ms", .wait.as_millis())]
    Backoff {
        url: String,
        last: String,
        wait: Duration,
    },
}

impl AmqpError {
    /// Problems that reconnecting will not fix: an operator must act.
    fn needs_operator(&self) -> bool {
        match self {
            AmqpError::Config(_) | AmqpError::Topology(_) => true,
            AmqpError::Connect { reason, .. } | AmqpError::Broker(reason) => operator_text(reason),
            AmqpError::Timeout { .. } | AmqpError::Backoff { .. } => false,
        }
    }
}

fn operator_text(reason: &str) -> bool {
    [
        "ACCESS_REFUSED",
        "NOT_FOUND",
        "PRECONDITION_FAILED",
        "NOT_ALLOWED",
        "certificate",
        "Certificate",
    ]
    .iter()
    .any(|k| reason.contains(k))
}

/// What the sink keeps of a live connection.
struct Live {
    conn: Connection,
    chan: Channel,
    /// `Some(reason)` between `connection.blocked` and `connection.unblocked`.
    blocked: Arc<Mutex<Option<String>>>,
    events: tokio::task::JoinHandle<()>,
    /// Confirms we stopped waiting for while the broker blocked us (their
    /// envelopes were answered `Retry`). Kept, not dropped, until they
    /// resolve or the connection goes, so none is ever lost track of.
    orphans: Vec<PublisherConfirm>,
}

impl Live {
    fn usable(&self) -> bool {
        self.conn.status().connected() && self.chan.status().connected()
    }

    fn blocked(&self) -> Option<String> {
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
struct Backoff {
    failures: u32,
    not_before: Option<Instant>,
}

impl Backoff {
    fn fail(&mut self, initial_ms: u64, max_ms: u64) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let exp = initial_ms.saturating_mul(1u64 << (self.failures - 1).min(30));
        let cap = exp.min(max_ms);
        // Full jitter: spreads the reconnects of many daemons after an outage.
        let wait = Duration::from_millis(rand::rng().random_range(0..=cap));
        self.not_before = Some(Instant::now() + wait);
        wait
    }

    fn reset(&mut self) {
        self.failures = 0;
        self.not_before = None;
    }

    fn remaining(&self) -> Option<Duration> {
        self.not_before
            .and_then(|t| t.checked_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
    }
}

/// The CloudEvents attributes copied into `cloudEvents_*` headers.
#[derive(Deserialize, Default)]
struct CeAttrs {
    specversion: Option<serde_json::Value>,
    id: Option<serde_json::Value>,
    source: Option<serde_json::Value>,
    #[serde(rename = "type")]
    ty: Option<serde_json::Value>,
    subject: Option<serde_json::Value>,
    time: Option<serde_json::Value>,
}

fn as_text(v: &Option<serde_json::Value>) -> Option<&str> {
    v.as_ref().and_then(|v| v.as_str())
}

pub struct AmqpSink {
    cfg: AmqpConfig,
    source: String,
    /// The node connected to (or tried next).
    res: Resolved,
    /// The other nodes of `urls`, in the order they are tried after `res`.
    spare: std::collections::VecDeque<Resolved>,
    /// Whether the connection on `res` was established (then, once lost,
    /// the next node is tried first).
    was_live: bool,
    exchange: ShortString,
    timeout: Duration,
    live: Option<Live>,
    backoff: Backoff,
    last_error: Option<String>,
    /// Operator-facing problem (unroutable, topology, auth, …).
    alert: Option<String>,
}

impl std::fmt::Debug for AmqpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpSink")
            .field("url", &self.res.shown_url)
            .field("exchange", &self.cfg.exchange)
            .field("connected", &self.live.is_some())
            .finish()
    }
}

type WriteFut<'a> = Pin<Box<dyn Future<Output = lapin::Result<PublisherConfirm>> + Send + 'a>>;

/// A published message not yet settled.
enum InFlight<'a> {
    /// Frames queued in lapin, not yet known to be written.
    Writing(WriteFut<'a>),
    Confirming(PublisherConfirm),
}

impl InFlight<'_> {
    /// The confirm if it is already there, without waiting.
    fn try_settle(&mut self) -> Option<lapin::Result<Confirmation>> {
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

enum Waited<T> {
    Done(T),
    /// The broker blocked the connection while we waited.
    Blocked(String),
    TimedOut,
}

/// Why a batch stopped early; everything not yet confirmed is `Retry`.
struct Stop {
    error: String,
    retry_after: Option<Duration>,
    /// The connection is not to be trusted any more.
    drop_connection: bool,
}

impl AmqpSink {
    /// Validates the config and reads the password/TLS files; connects
    /// lazily on the first `send` or `check`.
    pub fn new(cfg: AmqpConfig, source_name: String) -> Result<AmqpSink, AmqpError> {
        let mut nodes: std::collections::VecDeque<Resolved> = config::resolve_all(&cfg)?.into();
        let res = nodes
            .pop_front()
            .ok_or_else(|| AmqpError::Config("no broker URL".into()))?;
        Ok(AmqpSink {
            exchange: cfg.exchange.clone().into(),
            timeout: cfg.timeout(),
            cfg,
            source: source_name,
            res,
            spare: nodes,
            was_live: false,
            live: None,
            backoff: Backoff::default(),
            last_error: None,
            alert: None,
        })
    }

    /// The broker URL with its password masked.
    pub fn shown_url(&self) -> &str {
        &self.res.shown_url
    }

    fn redact(&self, text: &str) -> String {
        self.res.redactor.redact(text)
    }

    fn lapin_err(&self, e: &lapin::Error) -> String {
        self.redact(&e.to_string())
    }

    fn timeout_err(&self, what: &'static str) -> AmqpError {
        AmqpError::Timeout {
            what,
            url: self.res.shown_url.clone(),
            ms: self.timeout.as_millis() as u64,
        }
    }

    /// Runs `fut` with the sink's timeout.
    async fn timed<T>(
        &self,
        what: &'static str,
        fut: impl Future<Output = lapin::Result<T>>,
    ) -> Result<T, AmqpError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(AmqpError::Broker(format!("{what}: {}", self.lapin_err(&e)))),
            Err(_) => Err(self.timeout_err(what)),
        }
    }

    /// A usable connection, connecting if there is none and the backoff
    /// allows; `respect_backoff = false` for `check`.
    async fn ensure_connected(&mut self, respect_backoff: bool) -> Result<(), AmqpError> {
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
    fn next_node(&mut self) {
        if let Some(next) = self.spare.pop_front() {
            let prev = std::mem::replace(&mut self.res, next);
            self.spare.push_back(prev);
        }
    }

    async fn connect(&self) -> Result<Live, AmqpError> {
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
            chan,
            blocked,
            events,
            orphans: Vec::new(),
        })
    }

    /// Declares the configured topology; idempotent, and a mismatch with
    /// what exists is a `Topology` error saying what differs.
    async fn declare(&self, chan: &Channel) -> Result<(), AmqpError> {
        let cfg = &self.cfg;
        if cfg.declare_exchange && !cfg.exchange.is_empty() {
            let opts = ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            };
            let r = tokio::time::timeout(
                self.timeout,
                chan.exchange_declare(
                    self.exchange.clone(),
                    ExchangeKind::Topic,
                    opts,
                    FieldTable::default(),
                ),
            )
            .await;
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    return Err(self.topology_err(
                        &e,
                        format!(
                        "exchange '{}' (declare_exchange = true wants a durable topic exchange)",
                        cfg.exchange
                    ),
                    ))
                }
                Err(_) => return Err(self.timeout_err("exchange.declare")),
            }
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
            let r = tokio::time::timeout(
                self.timeout,
                chan.queue_declare(queue.as_str().into(), opts, args),
            )
            .await;
            match r {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    return Err(self.topology_err(
                        &e,
                        format!(
                            "queue '{queue}' (config: durable, queue_type = {}, dead_letter_exchange = {})",
                            cfg.queue_type.as_str(),
                            cfg.dead_letter_exchange.as_deref().unwrap_or("none")
                        ),
                    ))
                }
                Err(_) => return Err(self.timeout_err("queue.declare")),
            }
            if !cfg.exchange.is_empty() {
                let r = tokio::time::timeout(
                    self.timeout,
                    chan.queue_bind(
                        queue.as_str().into(),
                        self.exchange.clone(),
                        cfg.binding_key.as_str().into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    ),
                )
                .await;
                match r {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        return Err(self.topology_err(
                            &e,
                            format!(
                                "binding queue '{queue}' to exchange '{}' with key '{}'",
                                cfg.exchange, cfg.binding_key
                            ),
                        ))
                    }
                    Err(_) => return Err(self.timeout_err("queue.bind")),
                }
            }
        }
        Ok(())
    }

    fn topology_err(&self, e: &lapin::Error, what: String) -> AmqpError {
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

    fn properties(&self, e: &Envelope) -> BasicProperties {
        let ce: CeAttrs = serde_json::from_slice(&e.payload).unwrap_or_default();
        let mut headers = FieldTable::default();
        let id = as_text(&ce.id).unwrap_or(&e.id);
        for (k, v) in [
            ("cloudEvents_specversion", as_text(&ce.specversion)),
            ("cloudEvents_id", Some(id)),
            ("cloudEvents_source", as_text(&ce.source)),
            ("cloudEvents_type", as_text(&ce.ty)),
            ("cloudEvents_subject", as_text(&ce.subject)),
            ("cloudEvents_time", as_text(&ce.time)),
        ] {
            if let Some(v) = v {
                headers.insert(k.into(), AMQPValue::LongString(LongString::from(v)));
            }
        }
        // The charge's own time, so every attempt carries identical
        // properties; publish time only when the event has none.
        let ts = as_text(&ce.time)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .and_then(|t| u64::try_from(t.timestamp()).ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
            });
        BasicProperties::default()
            .with_message_id(e.id.as_str().into())
            .with_content_type(CONTENT_TYPE.into())
            .with_delivery_mode(2)
            .with_timestamp(ts)
            .with_app_id(APP_ID.into())
            .with_headers(headers)
    }

    /// Waits for `fut` up to the timeout, giving up early (after a short
    /// grace) when the broker blocks the connection.
    async fn wait_on<F: Future + Unpin>(&self, fut: &mut F, blocked: &Live) -> Waited<F::Output> {
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

    fn blocked_stop(&self, reason: &str) -> Stop {
        Stop {
            error: format!("broker {} blocked publishing: {reason}", self.res.shown_url),
            retry_after: Some(Duration::from_millis(self.cfg.blocked_retry_ms)),
            drop_connection: false,
        }
    }

    fn error_stop(&self, what: &str, e: &lapin::Error) -> Stop {
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

    fn timeout_stop(&self, what: &'static str) -> Stop {
        Stop {
            error: self.timeout_err(what).to_string(),
            retry_after: None,
            drop_connection: true,
        }
    }

    /// Turns one resolved confirm into an outcome. `Err` means the channel
    /// or connection failed (and the batch must stop).
    fn judge(
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

    fn unroutable(
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
    async fn settle(
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

    async fn publish_batch(
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
            while inflight.len() >= window {
                let Some((j, mut m)) = inflight.pop_front() else {
                    break;
                };
                let rkj = keys[j].as_deref().unwrap_or_default();
                match self.settle(&mut m, live).await {
                    Ok(r) => match self.judge(r, rkj, &mut returned) {
                        Ok(o) => out[j] = Some(o),
                        Err(s) => {
                            stop = Some(s);
                            break 'publish;
                        }
                    },
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
                match m.try_settle() {
                    Some(r) => match self.judge(r, rkj, &mut returned) {
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
            match self.settle(&mut m, live).await {
                Ok(r) => match self.judge(r, rkj, &mut returned) {
                    Ok(o) => out[j] = Some(o),
                    Err(s) => stop = Some(s),
                },
                Err(s) => stop = Some(s),
            }
        }

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

impl Sink for AmqpSink {
    async fn send(&mut self, batch: &[Envelope]) -> Vec<Outcome> {
        if batch.is_empty() {
            return Vec::new();
        }
        let mut out: Vec<Option<Outcome>> = vec![None; batch.len()];
        // Envelopes no broker could ever take are rejected up front: AMQP
        // short strings (routing key, message id) hold at most 255 bytes.
        let keys: Vec<Option<String>> = batch
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let k = self
                    .res
                    .template
                    .render(&e.job_type, &e.account_type, &self.source);
                let error = if k.len() > MAX_SHORT_STRING {
                    format!(
                        "routing key from template '{}' is longer than {MAX_SHORT_STRING} bytes",
                        self.cfg.routing_key
                    )
                } else if e.id.len() > MAX_SHORT_STRING {
                    format!("charge id is longer than {MAX_SHORT_STRING} bytes (AMQP message_id)")
                } else {
                    return Some(k);
                };
                out[i] = Some(Outcome::Reject { error });
                None
            })
            .collect();

        let stop = match self.ensure_connected(true).await {
            Ok(()) => self.publish_batch(batch, &mut out, &keys).await,
            Err(e) => Some(Stop {
                retry_after: match &e {
                    AmqpError::Backoff { wait, .. } => Some(*wait),
                    _ => self.backoff.remaining(),
                },
                error: e.to_string(),
                drop_connection: false,
            }),
        };

        let delivered = out.iter().any(|o| matches!(o, Some(Outcome::Delivered)));
        if delivered {
            self.backoff.reset();
        }
        let mut stop_error = None;
        if let Some(s) = &stop {
            if s.drop_connection {
                tracing::warn!(error = %s.error, "AMQP batch interrupted; dropping the connection");
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
            }
            stop_error = Some((s.error.clone(), s.retry_after));
        }
        // The interruption is charged to the first charge it left
        // unresolved; the ones after it are not attempted (the deliver
        // stage retries them behind it without counting an attempt).
        let mut blamed = false;
        out.into_iter()
            .map(|o| {
                o.unwrap_or_else(|| {
                    if std::mem::replace(&mut blamed, true) {
                        return Outcome::NotSent;
                    }
                    let (error, retry_after) = stop_error
                        .clone()
                        .unwrap_or_else(|| ("not published".into(), None));
                    Outcome::Retry { error, retry_after }
                })
            })
            .collect()
    }

    async fn check(&mut self) -> anyhow::Result<String> {
        self.ensure_connected(false).await?;
        let Some(live) = self.live.as_ref() else {
            anyhow::bail!("not connected to {}", self.res.shown_url);
        };
        // A failed passive declare closes its channel: use a throwaway one.
        let chan = self
            .timed("channel.open", live.conn.create_channel())
            .await?;
        let mut what = format!("connected to {}", self.res.shown_url);
        if self.cfg.exchange.is_empty() {
            what.push_str("; publishing to the default exchange");
        } else {
            let opts = ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            };
            self.timed(
                "exchange.declare (passive)",
                chan.exchange_declare(
                    self.exchange.clone(),
                    ExchangeKind::Topic,
                    opts,
                    FieldTable::default(),
                ),
            )
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "exchange '{}' on {}: {e}",
                    self.cfg.exchange,
                    self.res.shown_url
                )
            })?;
            what.push_str(&format!("; exchange '{}' exists", self.cfg.exchange));
        }
        if let Some(q) = &self.cfg.queue {
            let opts = QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            let queue = self
                .timed(
                    "queue.declare (passive)",
                    chan.queue_declare(q.as_str().into(), opts, FieldTable::default()),
                )
                .await?;
            what.push_str(&format!(
                "; queue '{q}' holds {} message(s)",
                queue.message_count()
            ));
        }
        let _ = tokio::time::timeout(self.timeout, chan.close(200, "check done".into())).await;
        Ok(what)
    }

    fn health(&self) -> SinkHealth {
        let live = self.live.as_ref();
        let blocked = live
            .and_then(Live::blocked)
            .map(|r| format!("broker blocked publishing: {r}"));
        SinkHealth {
            connected: live.is_some_and(Live::usable),
            alert: blocked.or_else(|| self.alert.clone()),
        }
    }

    async fn close(&mut self) {
        if let Some(live) = self.live.take() {
            let _ = tokio::time::timeout(
                self.timeout.min(Duration::from_secs(5)),
                live.conn.close(200, "chargetail shutting down".into()),
            )
            .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The daemon may run `send` on a spawned task.
    #[test]
    fn send_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let mut sink = AmqpSink::new(
            AmqpConfig::new("amqp://guest:guest@127.0.0.1:5672/%2f", "x"),
            "pc1".into(),
        )
        .unwrap();
        let fut = sink.send(&[]);
        assert_send(&fut);
    }

    #[test]
    fn backoff_grows_with_full_jitter_and_caps() {
        let mut b = Backoff::default();
        for _ in 0..40 {
            let w = b.fail(100, 2_000);
            assert!(w <= Duration::from_millis(2_000));
        }
        assert_eq!(b.failures, 40);
        b.reset();
        assert!(b.remaining().is_none());
    }

    #[test]
    fn properties_carry_cloudevents_headers() {
        let sink = AmqpSink::new(
            AmqpConfig::new("amqp://guest:guest@127.0.0.1:5672/%2f", "x"),
            "pc1".into(),
        )
        .unwrap();
        let payload = br#"{"specversion":"1.0","id":"chg_1","source":"papercut/pc1","type":"papercut.charge","subject":"Acme","time":"2026-11-20T09:14:03+11:00","data":{"x":1}}"#;
        let e = Envelope {
            seq: 1,
            id: "chg_1".into(),
            payload: payload.to_vec(),
            job_type: "print".into(),
            account_type: "shared".into(),
            attempts: 0,
        };
        let p = sink.properties(&e);
        assert_eq!(p.message_id().as_ref().map(|s| s.as_str()), Some("chg_1"));
        assert_eq!(p.delivery_mode(), &Some(2));
        assert_eq!(p.timestamp(), &Some(1_795_126_443));
        let h = p.headers().as_ref().unwrap();
        assert_eq!(h.inner().len(), 6);
        assert_eq!(
            h.inner().get("cloudEvents_subject"),
            Some(&AMQPValue::LongString("Acme".into()))
        );
    }
}
