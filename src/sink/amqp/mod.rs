//! AMQP 0-9-1 (RabbitMQ) sink: publisher confirms are the proof of delivery.
//!
//! One connection, one confirm-mode channel. Messages are published in
//! outbox order with up to `window` unconfirmed in flight, and the window
//! slides across calls (below). Each confirm is judged on its own: ack →
//! `Delivered`; nack, `basic.return` (unroutable), channel/connection
//! error, timeout → `Retry`. Nothing is ever `Delivered` without its own
//! ack. A charge whose ack was lost (connection died) may arrive twice,
//! same id and bytes; one retried after a return is published again after
//! the ones that followed it.
//!
//! The window across calls: `submit` publishes its batch behind the
//! messages still unconfirmed from earlier calls, waits for the oldest
//! confirm only while `window` messages are in flight, and answers the
//! envelopes settled so far, oldest first (perhaps none); the rest stay in
//! flight into the next call. So while the deliver stage records one
//! round's outcomes and fetches the next charges, the broker still holds
//! up to `window` messages to confirm: it is not left idle between
//! batches. `flush` waits for every confirm carried (the deliver stage
//! calls it when it has nothing more to send, before a re-read of the
//! outbox and before closing). When publishing stops (connection lost,
//! timeout, broker blocking us) everything carried is answered in that
//! same call: what was confirmed keeps its outcome, the first unconfirmed
//! is `Retry` and those after it `NotSent`.
//!
//! Order through nacks: a quorum queue electing a leader (its node just
//! died) nacks some publishes and takes later ones of the same channel, so a
//! nacked charge would arrive after charges written after it. So after a
//! nack nothing more is published in that call (the messages already in
//! flight are waited for and answered, the rest of the batch is `NotSent`),
//! and on every new connection and after a nack the sink publishes one
//! message at a time until the broker acks one; only then is the full
//! `window` in flight again.
//!
//! Reconnection: the sink never sleeps. A failed connect (or a batch lost
//! to a dead connection) schedules the next attempt with exponential backoff
//! and full jitter (`reconnect_initial_ms`..`reconnect_max_ms`); until then
//! `submit` answers `Retry` at once with `retry_after` = the time left, so the
//! outbox worker's schedule drives the loop and shutdown is never held up.
//! There is no attempt limit: billing data is never dropped.
//!
//! Every wait on the broker has a timeout (`timeout_ms`), because a
//! half-dead connection can leave lapin futures pending forever (lapin #409);
//! a timed-out connection is abandoned and its unconfirmed messages retried.
//! While the broker blocks publishing (memory/disk alarm) `submit` publishes
//! nothing, waits briefly for what is in flight, answers `Retry` with
//! `retry_after = blocked_retry_ms` and keeps the connection.
//!
//! ```toml
//! [sink.amqp]
//! url = "amqps://chargetail@rabbit.example:5671/billing"  # password: URL, password_file or $CHARGETAIL_AMQP_PASSWORD
//! exchange = "papercut.charges"
//! routing_key = "charge.{job_type}"        # also {account_type}, {source}
//! password_file = "/etc/chargetail/amqp-password"
//! ca_file = "/etc/chargetail/rabbit-ca.pem"  # + client_cert_file, client_key_file
//! window = 1000                # unconfirmed messages in flight, across batches
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
mod connection;
mod properties;
mod publish;
mod routing;
mod secrets;

use connection::*;

use publish::*;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

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

use config::Resolved;
pub use config::{AmqpConfig, QueueType, PASSWORD_ENV};
pub use secrets::mask_url;

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
    /// The confirm window: one message at a time until the broker acks
    /// one, set on every new connection and after a nack (see `publish`).
    win: Window,
    /// Envelopes handed over and not answered yet, oldest first: published
    /// on the live connection and awaiting confirms, or answered behind one
    /// that is (see "The window across calls").
    tail: VecDeque<Slot>,
    /// Outcomes settled and not yet returned, in hand-over order.
    ready: Vec<Outcome>,
    /// Routing keys returned unroutable since the last call ended.
    returned: Vec<String>,
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
            win: Window {
                probe: true,
                nacked: false,
            },
            tail: VecDeque::new(),
            ready: Vec::new(),
            returned: Vec::new(),
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
}

impl Sink for AmqpSink {
    /// `submit` then `flush`: every envelope of the batch answered.
    async fn send(&mut self, batch: &[Envelope]) -> Vec<Outcome> {
        let mut out = self.submit_batch(batch).await;
        out.extend(self.flush_tail().await);
        out
    }

    async fn submit(&mut self, batch: &[Envelope]) -> Vec<Outcome> {
        self.submit_batch(batch).await
    }

    async fn flush(&mut self) -> Vec<Outcome> {
        self.flush_tail().await
    }

    async fn answerable(&mut self) {
        self.front_settled().await
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
    fn window_probes_until_an_ack_and_closes_on_a_nack() {
        let nack = || Ok(Confirmation::Nack(None));
        let ack = || Ok(Confirmation::Ack(None));
        let mut w = Window {
            probe: true,
            nacked: false,
        };
        assert_eq!(w.limit(1000), 1);
        w.saw(&ack());
        assert_eq!(w.limit(1000), 1000, "an ack opens the window");
        w.saw(&nack());
        assert!(w.nacked);
        assert_eq!(w.limit(1000), 1, "a nack closes it");
        w.saw(&ack());
        assert_eq!(
            w.limit(1000),
            1,
            "an ack already in flight behind the nack does not reopen it"
        );
        let mut w = Window {
            probe: false,
            nacked: false,
        };
        w.saw(&Err(lapin::Error::from(ErrorKind::ChannelsLimitReached)));
        assert_eq!(w.limit(1000), 1000, "an error is not the broker's answer");
    }

    #[test]
    fn properties_carry_cloudevents_headers() {
        let sink = AmqpSink::new(
            AmqpConfig::new("amqp://guest:guest@127.0.0.1:5672/%2f", "x"),
            "pc1".into(),
        )
        .unwrap();
        let payload = br#"{"specversion":"1.0","id":"chg_1","source":"papercut/pc1","type":"papercut.charge","subject":"Acme","time":"2026-11-20T09:14:03+11:00","data":{"x":1}}"#;
        let e = Envelope::new(
            1,
            "chg_1".into(),
            payload.to_vec(),
            "print".into(),
            "shared".into(),
            0,
        );
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
