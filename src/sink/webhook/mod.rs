//! The webhook sink: each charge is one signed HTTP `POST` (Standard
//! Webhooks) of its CloudEvents JSON.
//!
//! What an answer means:
//! - 2xx: delivered.
//! - 3xx (redirects are not followed by default), 408, 429, 5xx, timeouts,
//!   connection errors: retry later, at the time `Retry-After` names if the
//!   endpoint sent one, else on the worker's backoff.
//! - 410 Gone, 401 Unauthorized, 403 Forbidden: the endpoint as a whole
//!   refuses us (asked us to stop, or our API key or secret is wrong or
//!   revoked). No charge is to blame, so none becomes a dead letter: the sink
//!   *pauses*. The charge that got the answer is kept for a retry (on the
//!   worker's backoff, or the endpoint's `Retry-After`), the worker sends
//!   nothing while [`WebhookSink::is_paused`], and the health alert is
//!   raised (logs, `/healthz`, `/status`, `/metrics`). The pause ends with
//!   `chargetail dead-letters retry` (which also makes the waiting charges
//!   due at once), SIGHUP (which re-reads the secrets and headers, so a
//!   corrected API key file takes effect), or a restart. A receiver that
//!   wants to refuse one charge must answer another 4xx (400, 422).
//! - any other 4xx: retried, then rejected (a dead letter carrying the status
//!   and the start of the answer) after `max_4xx_attempts` such answers.
//!
//! Order: with `concurrency = 1` (the default) one request is in flight and
//! a batch stops at its first failure, so the receiver sees charges in outbox
//! order. `concurrency > 1` sends that many at once and gives up strict order.
//!
//! Secrets (the `whsec_` keys, header values, URL user info and query) are
//! never logged: `Debug` redacts them, header values are marked sensitive,
//! and messages show the URL without user info or query.

mod config;
mod secrets;
#[cfg(test)]
mod tests;

use config::*;
pub use config::{HeaderFrom, HeaderSetting, WebhookConfig, WebhookError};
use secrets::*;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::stream::{self, StreamExt};
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};

use super::{Envelope, Outcome, Sink, SinkHealth};

/// Where secrets are looked for when neither `secret_file` nor `secrets_env`
/// is set: a systemd credential (`LoadCredential=webhook-secret:...`), then
/// this environment variable.
pub const DEFAULT_SECRETS_ENV: &str = "CHARGETAIL_WEBHOOK_SECRET";
pub const CREDENTIAL_NAME: &str = "webhook-secret";
/// The longest `Retry-After` we follow; a larger one is clamped so that a
/// misconfigured receiver cannot park charges for months.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// How much of a rejected answer's body goes into the dead letter.
const BODY_HEAD: usize = 200;
/// How much of an answer's body is read (so the connection can be reused);
/// past this the connection is dropped instead.
const BODY_DRAIN: usize = 64 * 1024;

const CONTENT_TYPE_CE: &str = "application/cloudevents+json";
const RESERVED_HEADERS: [&str; 5] = [
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
    "content-length",
];

/// `Retry-After`: delta-seconds or an HTTP-date, clamped to
/// [`MAX_RETRY_AFTER`]; a date in the past means now.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    let d = if let Ok(secs) = v.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        let when = httpdate::parse_http_date(v).ok()?;
        when.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(d.min(MAX_RETRY_AFTER))
}

/// What one attempt produced, before it is judged.
enum Answer {
    /// An HTTP answer.
    Status {
        status: StatusCode,
        retry_after: Option<Duration>,
        body_head: String,
    },
    /// No HTTP answer: connect error, timeout, broken connection.
    Transport(String),
    /// Not sent: the charge itself cannot be put in a request.
    Unsendable(String),
}

/// Shared, lock-briefly state: `send` futures run concurrently.
#[derive(Debug, Default)]
struct State {
    /// Set by 410/401/403: why.
    paused: Option<String>,
    /// 4xx answers per charge id (the worker's `attempts` also counts
    /// 5xx and transport failures).
    four_xx: HashMap<String, u32>,
    last_error: Option<String>,
    connected: bool,
}

pub struct WebhookSink {
    client: reqwest::Client,
    url: Url,
    shown: String,
    signer: Signer,
    headers: HeaderMap,
    concurrency: usize,
    max_4xx: u32,
    /// Outer guard over reqwest's own timeouts, so `send` can never hang.
    guard: Duration,
    state: Mutex<State>,
    paused: AtomicBool,
}

impl fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSink")
            .field("url", &self.shown)
            .field("signer", &self.signer)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("concurrency", &self.concurrency)
            .field("max_4xx_attempts", &self.max_4xx)
            .field("paused", &self.paused.load(Ordering::Relaxed))
            .finish()
    }
}

impl WebhookSink {
    /// Read the secrets and extra headers, and build the HTTP client (once:
    /// connections are reused across sends).
    pub fn new(cfg: WebhookConfig) -> Result<WebhookSink, WebhookError> {
        Self::with_env(cfg, &|k| std::env::var(k).ok())
    }

    fn with_env(
        cfg: WebhookConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<WebhookSink, WebhookError> {
        cfg.validate().map_err(WebhookError::Config)?;
        let url = Url::parse(&cfg.url).map_err(|e| WebhookError::Config(e.to_string()))?;
        let shown = shown_url(&url);
        let signer = load_signer(&cfg, env)?;
        let headers = load_headers(&cfg, env)?;

        let connect = Duration::from_millis(cfg.connect_timeout_ms);
        let total = Duration::from_millis(cfg.timeout_ms);
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(connect)
            .timeout(total)
            .redirect(if cfg.follow_redirects {
                reqwest::redirect::Policy::limited(5)
            } else {
                reqwest::redirect::Policy::none()
            })
            .user_agent(concat!("chargetail/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(cfg.concurrency.max(1))
            .tcp_nodelay(true);
        if let Some(ca) = &cfg.ca_file {
            let what = format!("[sink.webhook] ca_file {}", ca.display());
            let pem = std::fs::read(ca).map_err(|e| WebhookError::Read {
                what: what.clone(),
                source: e,
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| WebhookError::Config(format!("{what}: {e}")))?;
            if certs.is_empty() {
                return Err(WebhookError::Config(format!(
                    "{what}: no PEM certificate in it"
                )));
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let client = b
            .build()
            .map_err(|e| WebhookError::Client(error_chain(&e)))?;

        if url.scheme() == "http"
            && !url
                .host_str()
                .is_some_and(|h| h == "localhost" || h.starts_with("127.") || h == "[::1]")
        {
            tracing::warn!(url = %shown, "webhook over plain http: charges travel unencrypted (signed, but readable)");
        }
        if cfg.concurrency > 1 {
            tracing::info!(
                concurrency = cfg.concurrency,
                "webhook concurrency above 1: charges may arrive out of order"
            );
        }
        Ok(WebhookSink {
            client,
            url,
            shown,
            signer,
            headers,
            concurrency: cfg.concurrency,
            max_4xx: cfg.max_4xx_attempts,
            guard: connect + total + Duration::from_secs(1),
            state: Mutex::new(State {
                connected: true,
                ..State::default()
            }),
            paused: AtomicBool::new(false),
        })
    }

    /// End a pause (410/401/403) (`dead-letters retry`, SIGHUP).
    pub fn resume(&mut self) {
        let mut st = self.lock();
        if st.paused.take().is_some() {
            tracing::info!(url = %self.shown, "webhook endpoint resumed");
        }
        self.paused.store(false, Ordering::SeqCst);
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data; keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What a send while paused says (the worker does not send while
    /// paused; this is for other callers). No request is made; the retry
    /// time is the worker's backoff, so a restart, which ends the pause,
    /// finds the charges due soon.
    fn paused_outcome(&self) -> Outcome {
        let why = self
            .lock()
            .paused
            .clone()
            .unwrap_or_else(|| "endpoint paused".into());
        Outcome::Retry {
            error: format!("not sent: {why}"),
            retry_after: None,
        }
    }

    /// One signed POST.
    async fn post(&self, env: &Envelope) -> Answer {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let sig = self.signer.sign(&env.id, ts, &env.payload);
        let (Ok(id), Ok(mut sig)) = (HeaderValue::from_str(&env.id), HeaderValue::from_str(&sig))
        else {
            // Charge ids are ASCII by construction; guard anyway. No retry
            // can fix this charge.
            return Answer::Unsendable(format!(
                "charge id {:?} cannot be sent as a webhook-id header",
                env.id
            ));
        };
        sig.set_sensitive(true);
        let req = self
            .client
            .post(self.url.clone())
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, CONTENT_TYPE_CE)
            .header("webhook-id", id)
            .header("webhook-timestamp", ts)
            .header("webhook-signature", sig)
            .body(env.payload.clone());
        match tokio::time::timeout(self.guard, self.exchange(req)).await {
            Ok(a) => a,
            Err(_) => Answer::Transport(format!("no answer within {:?}", self.guard)),
        }
    }

    async fn exchange(&self, req: reqwest::RequestBuilder) -> Answer {
        let mut resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return Answer::Transport(describe(&e)),
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        // Read the body (bounded) so the connection can be reused; a failure
        // here does not change what the status said.
        let mut head = Vec::new();
        let mut read = 0usize;
        while read < BODY_DRAIN {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    read += c.len();
                    if head.len() < BODY_HEAD {
                        let n = (BODY_HEAD - head.len()).min(c.len());
                        head.extend_from_slice(&c[..n]);
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        Answer::Status {
            status,
            retry_after,
            body_head: printable(&head),
        }
    }

    /// Judge an answer; records 4xx counts, the pause and health.
    fn judge(&self, env: &Envelope, answer: Answer) -> Outcome {
        let mut st = self.lock();
        match answer {
            Answer::Unsendable(error) => Outcome::Reject { error },
            Answer::Transport(error) => {
                st.connected = false;
                st.last_error = Some(error.clone());
                Outcome::Retry {
                    error: format!("{}: {error}", self.shown),
                    retry_after: None,
                }
            }
            Answer::Status {
                status,
                retry_after,
                body_head,
            } => {
                st.connected = true;
                let code = status.as_u16();
                let said = format!("{} answered HTTP {status}", self.shown);
                if status.is_success() {
                    st.four_xx.remove(&env.id);
                    st.last_error = None;
                    return Outcome::Delivered;
                }
                st.last_error = Some(said.clone());
                let refusal = match status {
                    StatusCode::GONE => Some("410 Gone: the receiver asks us to stop"),
                    StatusCode::UNAUTHORIZED => {
                        Some("401 Unauthorized: check the secret and the API key header")
                    }
                    StatusCode::FORBIDDEN => {
                        Some("403 Forbidden: check the API key header and its rights")
                    }
                    _ => None,
                };
                if let Some(refusal) = refusal {
                    let why = format!(
                        "endpoint paused: {said} ({refusal}); fix it, then `chargetail dead-letters retry`, SIGHUP or a restart resumes"
                    );
                    if st.paused.is_none() {
                        tracing::error!(
                            url = %self.shown,
                            status = code,
                            "webhook endpoint refused us ({refusal}): delivery paused until resumed (dead-letters retry, SIGHUP, restart); no charge is dead-lettered for it"
                        );
                    }
                    st.paused = Some(why.clone());
                    self.paused.store(true, Ordering::SeqCst);
                    // Kept for a retry once resumed, on the normal schedule
                    // (or the endpoint's own Retry-After).
                    return Outcome::Retry {
                        error: why,
                        retry_after,
                    };
                }
                let retryable = status.is_redirection()
                    || status.is_server_error()
                    || code == 408
                    || code == 429
                    || !status.is_client_error(); // 1xx and nonsense codes
                if retryable {
                    let mut error = said;
                    if status.is_redirection() {
                        error.push_str(" (redirects are not followed)");
                    }
                    return Outcome::Retry { error, retry_after };
                }
                // Ids given up on elsewhere (worker deadline) never come
                // back to clear their entry; bound the map.
                if st.four_xx.len() >= 100_000 {
                    st.four_xx.clear();
                }
                let n = st.four_xx.entry(env.id.clone()).or_insert(0);
                *n += 1;
                if *n >= self.max_4xx {
                    st.four_xx.remove(&env.id);
                    Outcome::Reject {
                        error: format!("{said} {} time(s); answer: {body_head:?}", self.max_4xx),
                    }
                } else {
                    Outcome::Retry {
                        error: said,
                        retry_after,
                    }
                }
            }
        }
    }

    async fn attempt(&self, env: &Envelope) -> Outcome {
        if self.is_paused() {
            return self.paused_outcome();
        }
        let answer = self.post(env).await;
        self.judge(env, answer)
    }
}

impl WebhookSink {
    async fn attempt_unless_stopped(
        &self,
        env: &Envelope,
        stop: &Mutex<Option<Outcome>>,
    ) -> Outcome {
        // Held back behind a failure: not attempted.
        if stop.lock().unwrap_or_else(|p| p.into_inner()).is_some() {
            return Outcome::NotSent;
        }
        let o = self.attempt(env).await;
        if matches!(o, Outcome::Retry { .. }) {
            let mut s = stop.lock().unwrap_or_else(|p| p.into_inner());
            if s.is_none() {
                *s = Some(o.clone());
            }
        }
        o
    }
}

impl Sink for WebhookSink {
    async fn send(&mut self, batch: &[Envelope]) -> Vec<Outcome> {
        let mut out = Vec::with_capacity(batch.len());
        if self.concurrency <= 1 {
            // Strict order: stop at the first failure, hold back the rest.
            for env in batch {
                let o = self.attempt(env).await;
                let failed = matches!(o, Outcome::Retry { .. });
                out.push(o);
                if failed {
                    break;
                }
            }
            out.resize(batch.len(), Outcome::NotSent);
            return out;
        }
        // Up to N in flight. After a failure, charges not yet started are
        // held back (same Retry-After) instead of hammering the endpoint.
        let stop: Mutex<Option<Outcome>> = Mutex::new(None);
        // Futures built up front (they start only when polled): a closure
        // inside the stream would make the future not provably Send.
        let futs: Vec<_> = batch
            .iter()
            .map(|env| self.attempt_unless_stopped(env, &stop))
            .collect();
        let results: Vec<Outcome> = stream::iter(futs)
            .buffered(self.concurrency)
            .collect()
            .await;
        out.extend(results);
        out
    }

    async fn check(&mut self) -> anyhow::Result<String> {
        let req = self
            .client
            .request(Method::OPTIONS, self.url.clone())
            .headers(self.headers.clone());
        let answer = tokio::time::timeout(self.guard, req.send()).await;
        let mut st = self.lock();
        match answer {
            Ok(Ok(resp)) => {
                st.connected = true;
                let mut s = format!(
                    "webhook {}: reachable (OPTIONS answered HTTP {})",
                    self.shown,
                    resp.status()
                );
                if resp.status() == StatusCode::GONE {
                    s.push_str("; 410 Gone: the receiver asks us to stop sending");
                }
                if let Some(why) = &st.paused {
                    s.push_str(&format!("; delivery is paused ({why})"));
                }
                Ok(s)
            }
            Ok(Err(e)) => {
                st.connected = false;
                Err(anyhow::anyhow!("webhook {}: {}", self.shown, describe(&e)))
            }
            Err(_) => {
                st.connected = false;
                Err(anyhow::anyhow!(
                    "webhook {}: no answer within {:?}",
                    self.shown,
                    self.guard
                ))
            }
        }
    }

    fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    fn health(&self) -> SinkHealth {
        let st = self.lock();
        SinkHealth {
            connected: st.connected && st.paused.is_none(),
            alert: st.paused.clone(),
        }
    }

    async fn close(&mut self) {
        // Nothing is held open beyond idle pooled connections, dropped with
        // the client.
    }
}

/// A reqwest error without its URL (which may carry a token), with causes.
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let chain = error_chain(e);
    if chain.is_empty() {
        kind.into()
    } else {
        format!("{kind}: {chain}")
    }
}

/// The sources of an error (the top reqwest message names the URL).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// Body bytes as one printable line.
fn printable(b: &[u8]) -> String {
    String::from_utf8_lossy(b)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
