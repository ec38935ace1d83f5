//! Sink stage: hand charges' messages to where they go and say, per charge,
//! whether it is delivered. The deliver stage owns ordering, retry timing and
//! state; a sink only talks to its endpoint.

pub mod amqp;
mod envelope;
pub mod stdout;
pub mod webhook;

pub use envelope::{Envelope, MessageAttrs};

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// Which sink charges go to (`[sink] kind`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    Amqp,
    Webhook,
    #[default]
    Stdout,
}

/// The sink's settings (`[sink]`, `[sink.amqp]`, `[sink.webhook]`), as read
/// from the configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    #[serde(default)]
    pub kind: SinkKind,
    #[serde(default)]
    pub amqp: Option<amqp::AmqpConfig>,
    #[serde(default)]
    pub webhook: Option<toml::Table>,
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
    /// Not attempted (held back behind an older charge that failed in the
    /// same round, or not reached): no attempt is counted for it.
    NotSent,
}

/// The sink's view of its endpoint, for health and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkHealth {
    pub connected: bool,
    /// A problem an operator must fix (unroutable messages, endpoint gone).
    pub alert: Option<String>,
}

/// A sink. Every call answers outcomes in the order the envelopes were
/// handed over, exactly one per envelope over the sink's life. It must not
/// hang forever: every wait on the network has a timeout, after which the
/// affected envelopes are `Retry`.
///
/// Two ways to hand envelopes over:
/// - [`Sink::send`]: the batch goes out and every envelope of it is
///   answered before it returns.
/// - [`Sink::submit`] and [`Sink::flush`], for a sink that keeps messages in
///   flight across calls (the AMQP confirm window): `submit` answers only
///   the oldest envelopes it can already answer (its confirmed prefix) and
///   carries the rest, published and awaiting their confirms, into the next
///   call; `flush` waits for everything carried and answers it all. After a
///   failure a sink answers everything it carries in the same call (the
///   outbox is read again after a failure, so nothing may stay in flight
///   behind it). The defaults are `send` and nothing carried.
#[allow(async_fn_in_trait)]
pub trait Sink {
    /// Send `batch` and answer each of its envelopes. Called with nothing
    /// carried (after a `flush`, or on a sink that never carries).
    async fn send(&mut self, batch: &[Envelope]) -> Vec<Outcome>;
    /// Hand `batch` over after the envelopes carried from earlier calls and
    /// answer the oldest of all those not answered yet, in order: perhaps
    /// none, at most all of them.
    async fn submit(&mut self, batch: &[Envelope]) -> Vec<Outcome> {
        self.send(batch).await
    }
    /// Answer every envelope still carried (waiting for the endpoint,
    /// within the sink's timeouts).
    async fn flush(&mut self) -> Vec<Outcome> {
        Vec::new()
    }
    /// Resolves once `submit(&[])` can answer at least one envelope carried
    /// (the oldest one's confirm came, or it failed), or at once when
    /// nothing is carried. Waits on no timeout of its own: the caller bounds
    /// it and falls back to `flush`. Cancel-safe: dropping it before it
    /// resolves loses nothing (the worker waits on it beside new work).
    async fn answerable(&mut self) {}
    /// Reach the endpoint and verify it is usable (`chargetail check`);
    /// `Ok` carries a one-line description of what was checked.
    async fn check(&mut self) -> anyhow::Result<String>;
    fn health(&self) -> SinkHealth;
    /// Whether the sink stopped itself until an operator acts (a webhook
    /// answering 410, 401 or 403). The worker sends nothing meanwhile and
    /// calls [`Sink::resume`] on `dead-letters retry`; SIGHUP and a restart
    /// make the sink anew.
    fn is_paused(&self) -> bool {
        false
    }
    /// Close connections cleanly (on shutdown). Whatever is still carried
    /// is not answered: `flush` first.
    async fn close(&mut self) {}
    /// SIGHUP: take what can change without a restart (secrets, timeouts)
    /// from the re-read settings (relative paths resolve against `dir`, the
    /// config's directory). Returns a line per change applied.
    fn reload(&mut self, _settings: &SinkConfig, _dir: &Path) -> anyhow::Result<Vec<String>> {
        Ok(Vec::new())
    }
    /// An operator asked to try again (`dead-letters retry`): lift any pause
    /// the sink imposed on itself (a webhook answering 410, 401 or 403).
    fn resume(&mut self) {}
}

/// The configured sink, chosen at run time. An enum rather than a trait
/// object: `Sink` has async methods, and the set of sinks is closed.
pub enum AnySink {
    Stdout(stdout::StdoutSink),
    Webhook(Box<webhook::WebhookSink>),
    Amqp(Box<amqp::AmqpSink>),
}

fn amqp_from_config(
    settings: &SinkConfig,
    dir: &Path,
    source_name: &str,
) -> anyhow::Result<amqp::AmqpSink> {
    let mut ac = settings
        .amqp
        .clone()
        .ok_or_else(|| anyhow::anyhow!("[sink] kind = \"amqp\" needs a [sink.amqp] table"))?;
    // Files named in the config are relative to the config's directory.
    for p in [
        &mut ac.password_file,
        &mut ac.ca_file,
        &mut ac.client_cert_file,
        &mut ac.client_key_file,
    ]
    .into_iter()
    .flatten()
    {
        if p.is_relative() {
            *p = dir.join(&*p);
        }
    }
    // systemd LoadCredential=amqp-password, when no file is named.
    if ac.password_file.is_none() {
        if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
            let cred = std::path::Path::new(&dir).join("amqp-password");
            if cred.is_file() {
                ac.password_file = Some(cred);
            }
        }
    }
    Ok(amqp::AmqpSink::new(ac, source_name.to_string())?)
}

fn webhook_from_config(settings: &SinkConfig, dir: &Path) -> anyhow::Result<webhook::WebhookSink> {
    let table = settings
        .webhook
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("[sink] kind = \"webhook\" needs a [sink.webhook] table"))?;
    let mut wc = webhook::WebhookConfig::from_table(table).map_err(|e| anyhow::anyhow!("{e}"))?;
    wc.resolve_paths(dir);
    Ok(webhook::WebhookSink::new(wc)?)
}

impl AnySink {
    /// Make the configured sink. Relative paths in the settings resolve
    /// against `dir` (the config's directory); `source_name` goes into
    /// every AMQP message's properties.
    pub fn from_config(
        settings: &SinkConfig,
        dir: &Path,
        source_name: &str,
    ) -> anyhow::Result<AnySink> {
        match settings.kind {
            SinkKind::Stdout => Ok(AnySink::Stdout(stdout::StdoutSink::new())),
            SinkKind::Webhook => Ok(AnySink::Webhook(Box::new(webhook_from_config(
                settings, dir,
            )?))),
            SinkKind::Amqp => Ok(AnySink::Amqp(Box::new(amqp_from_config(
                settings,
                dir,
                source_name,
            )?))),
        }
    }

    /// Whether charges are written to our own stdout (then summaries go to
    /// stderr so they don't mix with the data).
    pub fn uses_stdout(&self) -> bool {
        matches!(self, AnySink::Stdout(_))
    }
}

/// Forward a call to whichever sink this is.
macro_rules! each_sink {
    ($self:expr, $s:ident => $e:expr) => {
        match $self {
            AnySink::Stdout($s) => $e,
            AnySink::Webhook($s) => $e,
            AnySink::Amqp($s) => $e,
        }
    };
}

impl Sink for AnySink {
    async fn send(&mut self, batch: &[Envelope]) -> Vec<Outcome> {
        each_sink!(self, s => s.send(batch).await)
    }

    async fn submit(&mut self, batch: &[Envelope]) -> Vec<Outcome> {
        each_sink!(self, s => s.submit(batch).await)
    }

    async fn flush(&mut self) -> Vec<Outcome> {
        each_sink!(self, s => s.flush().await)
    }

    async fn answerable(&mut self) {
        each_sink!(self, s => s.answerable().await)
    }

    async fn check(&mut self) -> anyhow::Result<String> {
        each_sink!(self, s => s.check().await)
    }

    fn health(&self) -> SinkHealth {
        each_sink!(self, s => s.health())
    }

    fn is_paused(&self) -> bool {
        each_sink!(self, s => s.is_paused())
    }

    async fn close(&mut self) {
        each_sink!(self, s => s.close().await)
    }

    fn reload(&mut self, settings: &SinkConfig, dir: &Path) -> anyhow::Result<Vec<String>> {
        match self {
            // Secrets, headers and timeouts are read when the sink is made:
            // make it anew (this also lifts a 410/401/403 pause).
            AnySink::Webhook(s) if settings.kind == SinkKind::Webhook => {
                **s = webhook_from_config(settings, dir)?;
                Ok(vec!["webhook secrets, headers and timeouts re-read".into()])
            }
            other => each_sink!(other, s => s.reload(settings, dir)),
        }
    }

    fn resume(&mut self) {
        match self {
            AnySink::Webhook(s) => s.resume(),
            AnySink::Stdout(s) => s.resume(),
            AnySink::Amqp(s) => s.resume(),
        }
    }
}
