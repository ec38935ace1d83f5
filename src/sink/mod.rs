//! Sink stage: hand charges' messages to where they go and say, per charge,
//! whether it is delivered. The deliver stage owns ordering, retry timing and
//! state; a sink only talks to its endpoint.

pub mod amqp;
pub mod stdout;
pub mod webhook;

use std::time::Duration;

/// One charge taken from the outbox for delivery.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// Outbox order (file order within a file).
    pub seq: i64,
    /// The charge id (message id, webhook id).
    pub id: String,
    /// The exact CloudEvents JSON bytes, identical on every attempt.
    pub payload: Vec<u8>,
    /// For routing-key templates.
    pub job_type: String,
    pub account_type: String,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// What became of one envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint took responsibility for it (broker confirm, 2xx).
    Delivered,
    /// Not delivered; try again later. `retry_after` is the endpoint's own
    /// request (Retry-After), which the worker honours over its backoff.
    Retry {
        error: String,
        retry_after: Option<Duration>,
    },
    /// Will never be accepted as it is: becomes a dead letter.
    Reject { error: String },
}

/// The sink's view of its endpoint, for health and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkHealth {
    pub connected: bool,
    /// A problem an operator must fix (unroutable messages, endpoint gone).
    pub alert: Option<String>,
}

/// A sink. `send` returns exactly one outcome per envelope, in order. It
/// must not hang forever: every wait on the network has a timeout, after
/// which the affected envelopes are `Retry`.
#[allow(async_fn_in_trait)]
pub trait Sink {
    async fn send(&mut self, batch: &[Envelope]) -> Vec<Outcome>;
    /// Reach the endpoint and verify it is usable (`chargetail check`);
    /// `Ok` carries a one-line description of what was checked.
    async fn check(&mut self) -> anyhow::Result<String>;
    fn health(&self) -> SinkHealth;
    /// Close connections cleanly (on shutdown).
    async fn close(&mut self) {}
}
