//! `[sink.webhook]`: the settings, their checks and the sink's errors.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::Url;
use serde::Deserialize;

use super::*;

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

pub(super) fn default_connect_timeout_ms() -> u64 {
    10_000
}
pub(super) fn default_timeout_ms() -> u64 {
    30_000
}
pub(super) fn default_concurrency() -> usize {
    1
}
pub(super) fn default_max_4xx_attempts() -> u32 {
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

    pub(super) fn validate(&self) -> Result<(), String> {
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

/// The URL as it may appear in logs: no user info, no query (either may
/// hold a token).
pub(super) fn shown_url(u: &Url) -> String {
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

pub(super) fn shown_url_str(s: &str) -> String {
    match Url::parse(s) {
        Ok(u) => shown_url(&u),
        Err(_) => "<unparsable URL>".into(),
    }
}
