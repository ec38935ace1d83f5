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

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use futures_util::stream::{self, StreamExt};
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use sha2::Sha256;

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

/// `[sink.webhook]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// One or several `whsec_...` secrets, one per line (several while a
    /// secret is being rotated: every active one signs).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Environment variable holding space-separated secrets.
    #[serde(default)]
    pub secrets_env: Option<String>,
    /// Extra static headers, e.g. an API key; a value is a string or
    /// `{ env = "VAR" }` / `{ file = "/path" }` to keep it out of the config.
    #[serde(default)]
    pub headers: BTreeMap<String, HeaderSetting>,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Whole request, answer included.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// PEM file of CA certificates trusted in addition to the built-in roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Requests in flight. 1 keeps strict order; more gives it up.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// A 4xx other than 401/403/408/410/429 is a dead letter after this many.
    #[serde(default = "default_max_4xx_attempts")]
    pub max_4xx_attempts: u32,
    /// Off by default: a redirect would carry signed charges elsewhere.
    #[serde(default)]
    pub follow_redirects: bool,
}

/// A header value, literal or read at startup from the environment or a file.
#[derive(Clone, Deserialize)]
#[serde(untagged)]
pub enum HeaderSetting {
    Value(String),
    From(HeaderFrom),
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderFrom {
    #[serde(default)]
    pub env: Option<String>,
    #[serde(default)]
    pub file: Option<PathBuf>,
}

fn default_connect_timeout_ms() -> u64 {
    10_000
}
fn default_timeout_ms() -> u64 {
    30_000
}
fn default_concurrency() -> usize {
    1
}
fn default_max_4xx_attempts() -> u32 {
    3
}

// Header values may be API keys and URLs may carry credentials: Debug shows
// neither.
impl fmt::Debug for HeaderSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderSetting::Value(_) => f.write_str("<redacted>"),
            HeaderSetting::From(h) => h.fmt(f),
        }
    }
}

impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &shown_url_str(&self.url))
            .field("secret_file", &self.secret_file)
            .field("secrets_env", &self.secrets_env)
            .field("headers", &self.headers)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("timeout_ms", &self.timeout_ms)
            .field("ca_file", &self.ca_file)
            .field("concurrency", &self.concurrency)
            .field("max_4xx_attempts", &self.max_4xx_attempts)
            .field("follow_redirects", &self.follow_redirects)
            .finish()
    }
}

impl WebhookConfig {
    /// Parse and validate `[sink.webhook]` without touching files or the
    /// environment (that happens in [`WebhookSink::new`]).
    pub fn from_table(t: &toml::Table) -> Result<WebhookConfig, String> {
        let cfg: WebhookConfig = toml::Value::Table(t.clone())
            .try_into()
            .map_err(|e: toml::de::Error| format!("[sink.webhook] {}", e.message()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// A config with defaults for everything but the URL (for tests and tools).
    pub fn for_url(url: &str) -> WebhookConfig {
        WebhookConfig {
            url: url.into(),
            secret_file: None,
            secrets_env: None,
            headers: BTreeMap::new(),
            connect_timeout_ms: default_connect_timeout_ms(),
            timeout_ms: default_timeout_ms(),
            ca_file: None,
            concurrency: default_concurrency(),
            max_4xx_attempts: default_max_4xx_attempts(),
            follow_redirects: false,
        }
    }

    /// Make relative file paths relative to `dir` (the config's directory).
    pub fn resolve_paths(&mut self, dir: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        };
        if let Some(p) = &mut self.secret_file {
            fix(p);
        }
        if let Some(p) = &mut self.ca_file {
            fix(p);
        }
        for h in self.headers.values_mut() {
            if let HeaderSetting::From(HeaderFrom { file: Some(p), .. }) = h {
                fix(p);
            }
        }
    }

    fn validate(&self) -> Result<(), String> {
        let url = Url::parse(&self.url).map_err(|e| {
            format!(
                "[sink.webhook] url: {:?} is not a valid URL: {e}",
                shown_url_str(&self.url)
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "[sink.webhook] url: scheme {:?} is not http or https",
                url.scheme()
            ));
        }
        if self.secret_file.is_some() && self.secrets_env.is_some() {
            return Err("[sink.webhook] set secret_file or secrets_env, not both".into());
        }
        if let Some(v) = &self.secrets_env {
            if v.is_empty() || v.contains('=') || v.contains('\0') {
                return Err(format!(
                    "[sink.webhook] secrets_env: {v:?} is not an environment variable name"
                ));
            }
        }
        if self.connect_timeout_ms == 0 || self.timeout_ms == 0 {
            return Err("[sink.webhook] connect_timeout_ms and timeout_ms must be above 0".into());
        }
        if self.concurrency == 0 || self.concurrency > 256 {
            return Err("[sink.webhook] concurrency: must be between 1 and 256".into());
        }
        if self.max_4xx_attempts == 0 {
            return Err("[sink.webhook] max_4xx_attempts: must be at least 1".into());
        }
        for (name, setting) in &self.headers {
            let hn = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                format!("[sink.webhook.headers] {name:?} is not a valid header name")
            })?;
            if RESERVED_HEADERS.contains(&hn.as_str()) {
                return Err(format!(
                    "[sink.webhook.headers] {name:?} is set by chargetail itself"
                ));
            }
            match setting {
                HeaderSetting::Value(v) => {
                    if HeaderValue::from_str(v).is_err() {
                        return Err(format!(
                            "[sink.webhook.headers] {name:?}: the value is not a valid header value"
                        ));
                    }
                }
                HeaderSetting::From(f) => {
                    if f.env.is_some() == f.file.is_some() {
                        return Err(format!(
                            "[sink.webhook.headers] {name:?}: give exactly one of env or file"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("{0}")]
    Config(String),
    #[error("cannot read {what}: {source}")]
    Read {
        what: String,
        source: std::io::Error,
    },
    /// Never carries the secret itself, only where it came from.
    #[error("{what}: {problem}")]
    BadSecret { what: String, problem: String },
    #[error("building the HTTP client: {0}")]
    Client(String),
}

/// Where the signing secrets came from, for messages.
#[derive(Debug, Clone)]
enum SecretSource {
    File(PathBuf),
    Credential(PathBuf),
    Env(String),
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::File(p) => write!(f, "[sink.webhook] secret_file {}", p.display()),
            SecretSource::Credential(p) => write!(f, "systemd credential {}", p.display()),
            SecretSource::Env(v) => write!(f, "environment variable {v}"),
        }
    }
}

/// The HMAC keys of the active secrets, keyed once and cloned per message.
#[derive(Clone)]
struct Signer {
    macs: Vec<Hmac<Sha256>>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({} secret(s), redacted)", self.macs.len())
    }
}

impl Signer {
    /// `v1,<sig>` entries, space-separated, over `id.timestamp.body`.
    fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let ts = timestamp.to_string();
        let mut out = String::new();
        for mac in &self.macs {
            let mut m = mac.clone();
            m.update(id.as_bytes());
            m.update(b".");
            m.update(ts.as_bytes());
            m.update(b".");
            m.update(body);
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str("v1,");
            base64::engine::general_purpose::STANDARD
                .encode_string(m.finalize().into_bytes(), &mut out);
        }
        out
    }
}

/// Decode `whsec_<base64>` secrets. Messages name the source and the
/// secret's position, never its content.
fn parse_secrets<'a>(
    source: &SecretSource,
    secrets: impl Iterator<Item = &'a str>,
) -> Result<Signer, WebhookError> {
    // Padding is optional in the wild; accept both.
    let b64 = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let mut macs = Vec::new();
    for (i, s) in secrets.enumerate() {
        let bad = |problem: String| WebhookError::BadSecret {
            what: source.to_string(),
            problem: format!("secret {}: {problem}", i + 1),
        };
        let Some(b) = s.strip_prefix("whsec_") else {
            return Err(bad(
                "does not start with whsec_ (expected whsec_<base64>)".into()
            ));
        };
        let key = b64
            .decode(b)
            .map_err(|_| bad("the part after whsec_ is not valid base64".into()))?;
        if key.is_empty() {
            return Err(bad("the key after whsec_ is empty".into()));
        }
        if !(24..=64).contains(&key.len()) {
            tracing::warn!(
                source = %source,
                secret = i + 1,
                bytes = key.len(),
                "webhook secret length is outside the 24-64 bytes Standard Webhooks recommends"
            );
        }
        let mac = Hmac::<Sha256>::new_from_slice(&key)
            .map_err(|_| bad("unusable as an HMAC key".into()))?;
        macs.push(mac);
    }
    if macs.is_empty() {
        return Err(WebhookError::BadSecret {
            what: source.to_string(),
            problem: "no secret found (expected whsec_<base64>)".into(),
        });
    }
    Ok(Signer { macs })
}

fn secrets_from_file(source: &SecretSource, path: &Path) -> Result<Signer, WebhookError> {
    let text = std::fs::read_to_string(path).map_err(|e| WebhookError::Read {
        what: source.to_string(),
        source: e,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(md) = std::fs::metadata(path) {
            if md.permissions().mode() & 0o004 != 0 {
                tracing::warn!(file = %path.display(), "webhook secret file is readable by everyone");
            }
        }
    }
    // One secret per line; blank lines and # comments allowed.
    parse_secrets(
        source,
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#')),
    )
}

/// Pick the secrets' source: `secret_file`, else an explicit `secrets_env`,
/// else the systemd credential, else `CHARGETAIL_WEBHOOK_SECRET`.
fn load_signer(
    cfg: &WebhookConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Signer, WebhookError> {
    if let Some(p) = &cfg.secret_file {
        return secrets_from_file(&SecretSource::File(p.clone()), p);
    }
    if cfg.secrets_env.is_none() {
        if let Some(dir) = env("CREDENTIALS_DIRECTORY") {
            let p = Path::new(&dir).join(CREDENTIAL_NAME);
            if p.exists() {
                return secrets_from_file(&SecretSource::Credential(p.clone()), &p);
            }
        }
    }
    let var = cfg.secrets_env.as_deref().unwrap_or(DEFAULT_SECRETS_ENV);
    let source = SecretSource::Env(var.into());
    match env(var) {
        Some(v) => parse_secrets(&source, v.split_whitespace()),
        None => Err(WebhookError::BadSecret {
            what: "[sink.webhook]".into(),
            problem: format!(
                "no signing secret: set secret_file, or the environment variable {var}, \
                 or a systemd credential named {CREDENTIAL_NAME}"
            ),
        }),
    }
}

fn load_headers(
    cfg: &WebhookConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<HeaderMap, WebhookError> {
    let mut map = HeaderMap::new();
    for (name, setting) in &cfg.headers {
        let hn = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
            WebhookError::Config(format!(
                "[sink.webhook.headers] {name:?} is not a valid header name"
            ))
        })?;
        let (raw, from) = match setting {
            HeaderSetting::Value(v) => (v.clone(), "the config".to_string()),
            HeaderSetting::From(HeaderFrom { env: Some(var), .. }) => (
                env(var).ok_or_else(|| {
                    WebhookError::Config(format!(
                        "[sink.webhook.headers] {name:?}: environment variable {var} is not set"
                    ))
                })?,
                format!("environment variable {var}"),
            ),
            HeaderSetting::From(HeaderFrom {
                file: Some(path), ..
            }) => (
                std::fs::read_to_string(path)
                    .map_err(|e| WebhookError::Read {
                        what: format!("[sink.webhook.headers] {name:?} file {}", path.display()),
                        source: e,
                    })?
                    .trim()
                    .to_string(),
                format!("file {}", path.display()),
            ),
            HeaderSetting::From(_) => {
                return Err(WebhookError::Config(format!(
                    "[sink.webhook.headers] {name:?}: give exactly one of env or file"
                )))
            }
        };
        let mut hv = HeaderValue::from_str(&raw).map_err(|_| {
            WebhookError::Config(format!(
                "[sink.webhook.headers] {name:?}: the value from {from} is not a valid header value"
            ))
        })?;
        // Keeps it out of reqwest's and hyper's debug output.
        hv.set_sensitive(true);
        map.insert(hn, hv);
    }
    Ok(map)
}

/// The URL as it may appear in logs: no user info, no query (either may
/// hold a token).
fn shown_url(u: &Url) -> String {
    let mut s = format!("{}://", u.scheme());
    if let Some(h) = u.host_str() {
        s.push_str(h);
    }
    if let Some(p) = u.port() {
        s.push_str(&format!(":{p}"));
    }
    s.push_str(u.path());
    if u.query().is_some() {
        s.push_str("?…");
    }
    s
}

fn shown_url_str(s: &str) -> String {
    match Url::parse(s) {
        Ok(u) => shown_url(&u),
        Err(_) => "<unparsable URL>".into(),
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn table(s: &str) -> toml::Table {
        s.parse().unwrap()
    }

    #[test]
    fn config_defaults_and_errors() {
        let c = WebhookConfig::from_table(&table("url = 'https://x.example/h'")).unwrap();
        assert_eq!(c.connect_timeout_ms, 10_000);
        assert_eq!(c.timeout_ms, 30_000);
        assert_eq!(c.concurrency, 1);
        assert_eq!(c.max_4xx_attempts, 3);
        assert!(!c.follow_redirects);
        let e =
            WebhookConfig::from_table(&table("url = 'https://x/h'\ntimout_ms = 5")).unwrap_err();
        assert!(e.contains("timout_ms"), "{e}");
        let e = WebhookConfig::from_table(&table("url = 'ftp://x/h'")).unwrap_err();
        assert!(e.contains("ftp"), "{e}");
        let e = WebhookConfig::from_table(&table(
            "url = 'https://x/h'\nsecret_file='a'\nsecrets_env='B'",
        ))
        .unwrap_err();
        assert!(e.contains("not both"), "{e}");
        let e =
            WebhookConfig::from_table(&table("url = 'https://x/h'\n[headers]\nwebhook-id = 'x'"))
                .unwrap_err();
        assert!(e.contains("webhook-id"), "{e}");
        let c = WebhookConfig::from_table(&table(
            "url = 'https://x/h'\n[headers]\nx-api-key = { env = 'K' }\nx-other = 'v'",
        ))
        .unwrap();
        assert_eq!(c.headers.len(), 2);
    }

    #[test]
    fn debug_shows_no_secret() {
        let mut cfg = WebhookConfig::from_table(&table(
            "url = 'https://user:hunter2@x.example/h?token=tok123'\n[headers]\nx-api-key = 'key-abc'",
        ))
        .unwrap();
        let d = format!("{cfg:?}");
        for s in ["hunter2", "tok123", "key-abc"] {
            assert!(!d.contains(s), "{d}");
        }
        cfg.secrets_env = Some("S".into());
        let sink = WebhookSink::with_env(cfg, &|k| (k == "S").then(|| SECRET.to_string())).unwrap();
        let d = format!("{sink:?}");
        for s in ["hunter2", "tok123", "key-abc", "MfKQ9r8", SECRET] {
            assert!(!d.contains(s), "{d}");
        }
    }

    #[test]
    fn secret_sources_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = WebhookConfig::for_url("https://x.example/h");
        // Default env var.
        let s = load_signer(&cfg, &|k| {
            (k == DEFAULT_SECRETS_ENV).then(|| format!("{SECRET} {SECRET}"))
        })
        .unwrap();
        assert_eq!(s.macs.len(), 2);
        // systemd credential wins over the default env var.
        std::fs::write(
            dir.path().join(CREDENTIAL_NAME),
            format!("# rotated\n{SECRET}\n"),
        )
        .unwrap();
        let d = dir.path().to_string_lossy().to_string();
        let env = |k: &str| match k {
            "CREDENTIALS_DIRECTORY" => Some(d.clone()),
            DEFAULT_SECRETS_ENV => Some("whsec_!!!".into()),
            _ => None,
        };
        assert_eq!(load_signer(&cfg, &env).unwrap().macs.len(), 1);
        // Malformed: names the source, never shows the secret.
        let bad = "whsec_not*base64*secretvalue";
        cfg.secrets_env = Some("MY_SECRET".into());
        let e = load_signer(&cfg, &|k| (k == "MY_SECRET").then(|| bad.to_string()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("MY_SECRET") && e.contains("base64"), "{e}");
        assert!(!e.contains("secretvalue"), "{e}");
        let e = load_signer(&cfg, &|k| {
            (k == "MY_SECRET").then(|| "plainpassword".to_string())
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("whsec_") && !e.contains("plainpassword"), "{e}");
        let e = load_signer(&cfg, &|_| None).unwrap_err().to_string();
        assert!(e.contains("MY_SECRET"), "{e}");
        // File, with the path in the message.
        cfg.secrets_env = None;
        let f = dir.path().join("secret");
        std::fs::write(&f, "whsec_????\n").unwrap();
        cfg.secret_file = Some(f.clone());
        let e = load_signer(&cfg, &|_| None).unwrap_err().to_string();
        assert!(
            e.contains(&f.display().to_string()) && !e.contains("????"),
            "{e}"
        );
        std::fs::write(&f, "\n").unwrap();
        let e = load_signer(&cfg, &|_| None).unwrap_err().to_string();
        assert!(e.contains("no secret"), "{e}");
    }

    #[test]
    fn signature_matches_standard_webhooks_example() {
        // The example from the Standard Webhooks reference libraries.
        let s = parse_secrets(
            &SecretSource::Env("T".into()),
            ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"].into_iter(),
        )
        .unwrap();
        let sig = s.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(0))
        );
        assert_eq!(
            parse_retry_after(
                "Sun, 06 Nov 1994 08:49:37 GMT",
                now - Duration::from_secs(30)
            ),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("99999999", now), Some(MAX_RETRY_AFTER));
    }

    // The daemon spawns the worker on a multi-thread runtime.
    #[allow(dead_code)]
    fn send_future_is_send(s: &mut WebhookSink, b: &[Envelope]) {
        fn is_send<T: Send>(_: T) {}
        is_send(s.send(b));
        is_send(s.check());
    }

    #[test]
    fn shown_url_hides_credentials() {
        assert_eq!(
            shown_url_str("https://u:p@h.example:8443/a/b?token=x"),
            "https://h.example:8443/a/b?…"
        );
    }
}
