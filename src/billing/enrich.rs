//! Enrichment from PaperCut's Web Services API (XML-RPC, `[papercut]`).
//!
//! For each charge, the configured user properties of its user are read
//! with `api.getUserProperties(token, user, [props])` and put in
//! `data.papercut`; `data.enrichment` says how that went. Answers are
//! cached in the state database (`papercut_cache`) for `cache_ttl_secs`:
//! one call per user per TTL, not one per charge.
//!
//! Enrichment runs at ingest, on the source thread, before the message's
//! bytes are fixed, so the time spent there is bounded: the calls a batch
//! needs run together (at most `concurrency` at once) and the batch waits
//! for them at most `wait_ms`. When PaperCut is down, slow past that bound
//! or refuses the token, the charges go on unenriched
//! (`data.enrichment = "unavailable"` or `"rejected"`) and no call is tried
//! again for `retry_secs`, so an outage costs ingest one bound, not one per
//! batch. A charge is never held or lost for want of enrichment.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dxr::{MethodCall, TryFromValue, TryToValue};
use futures_util::StreamExt;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::BillingStats;

/// The environment variable that holds the token (wins over `token_file`).
pub const TOKEN_ENV: &str = "CHARGETAIL_PAPERCUT_TOKEN";

/// `[papercut]` in the config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PapercutConfig {
    /// `http(s)://server:9191|9192/rpc/api/xmlrpc`
    pub url: String,
    /// A file holding the auth token; relative to the config file.
    /// `CHARGETAIL_PAPERCUT_TOKEN` in the environment wins.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// User properties read into `data.papercut`.
    #[serde(default = "default_properties")]
    pub user_properties: Vec<String>,
    /// The property that gives `customer_id` when the mapping has none.
    #[serde(default)]
    pub customer_property: Option<String>,
    #[serde(default = "default_ttl")]
    pub cache_ttl_secs: u64,
    /// How long a batch of charges waits for PaperCut at most.
    #[serde(default = "default_wait_ms")]
    pub wait_ms: u64,
    /// Timeout of one call.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Calls in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// After PaperCut failed (down, slow, token refused), no call for this long.
    #[serde(default = "default_retry_secs")]
    pub retry_secs: u64,
}

fn default_properties() -> Vec<String> {
    vec!["full-name".into(), "email".into(), "department".into()]
}
fn default_ttl() -> u64 {
    3600
}
fn default_wait_ms() -> u64 {
    2000
}
fn default_timeout_ms() -> u64 {
    2000
}
fn default_concurrency() -> usize {
    4
}
fn default_retry_secs() -> u64 {
    30
}

impl PapercutConfig {
    /// Resolve relative paths and check values; the error names the key.
    pub fn resolve(&mut self, base: &Path) -> Result<(), String> {
        if let Some(p) = &self.token_file {
            if p.is_relative() {
                self.token_file = Some(base.join(p));
            }
        }
        match url::Url::parse(&self.url) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            Ok(u) => {
                return Err(format!(
                    "[papercut] url: scheme {:?} is not http or https",
                    u.scheme()
                ))
            }
            Err(e) => return Err(format!("[papercut] url: {e}")),
        }
        if self.cache_ttl_secs == 0 {
            return Err("[papercut] cache_ttl_secs: must be at least 1".into());
        }
        if self.wait_ms == 0 {
            return Err("[papercut] wait_ms: must be at least 1".into());
        }
        if self.timeout_ms == 0 {
            return Err("[papercut] timeout_ms: must be at least 1".into());
        }
        if self.concurrency == 0 || self.concurrency > 64 {
            return Err("[papercut] concurrency: must be 1 to 64".into());
        }
        if self.user_properties.iter().any(|p| p.trim().is_empty()) {
            return Err("[papercut] user_properties: an empty property name".into());
        }
        if let Some(c) = &self.customer_property {
            if c.trim().is_empty() {
                return Err("[papercut] customer_property: must not be empty".into());
            }
            if !self.user_properties.contains(c) {
                return Err(format!(
                    "[papercut] customer_property: {c:?} is not one of user_properties"
                ));
            }
        }
        let env_token = std::env::var(TOKEN_ENV)
            .map(|t| !t.trim().is_empty())
            .unwrap_or(false);
        match &self.token_file {
            // The environment wins: the file is not read at all.
            _ if env_token => {}
            None => {
                return Err(format!(
                    "[papercut] token_file: not set and {TOKEN_ENV} is not in the environment"
                ))
            }
            // Read now, so that a missing or unreadable file is a config
            // error at start (and in `check`), not a failure at the first
            // charge. The token itself is never put in the message.
            Some(p) => match std::fs::read_to_string(p) {
                Err(e) => {
                    return Err(format!(
                        "[papercut] token_file: cannot read {}: {e}",
                        p.display()
                    ))
                }
                Ok(t) if t.trim().is_empty() => {
                    return Err(format!("[papercut] token_file: {} is empty", p.display()))
                }
                Ok(_) => {}
            },
        }
        Ok(())
    }
}

/// The auth token; its `Debug` never shows it.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// From `CHARGETAIL_PAPERCUT_TOKEN`, else the token file.
    pub fn load(cfg: &PapercutConfig) -> Result<Token, EnrichError> {
        if let Ok(t) = std::env::var(TOKEN_ENV) {
            let t = t.trim().to_string();
            if !t.is_empty() {
                return Ok(Token(t));
            }
        }
        let Some(p) = &cfg.token_file else {
            return Err(EnrichError::Token(format!(
                "no token_file and {TOKEN_ENV} is empty"
            )));
        };
        let t = std::fs::read_to_string(p)
            .map_err(|e| EnrichError::Token(format!("cannot read {}: {e}", p.display())))?;
        let t = t.trim().to_string();
        if t.is_empty() {
            return Err(EnrichError::Token(format!("{} is empty", p.display())));
        }
        Ok(Token(t))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    #[error("[papercut] token: {0}")]
    Token(String),
    #[error("[papercut] cache in the state database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("[papercut]: {0}")]
    Setup(String),
}

/// What a call to PaperCut gave, short of an answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// An XML-RPC fault: PaperCut answered, and said no.
    #[error("PaperCut fault {code}: {message}")]
    Fault { code: i32, message: String },
    /// No answer: refused, reset, timed out, not HTTP 200.
    #[error("PaperCut unreachable: {0}")]
    Network(String),
    /// An answer that is not the XML-RPC expected.
    #[error("PaperCut answer not understood: {0}")]
    Protocol(String),
}

impl CallError {
    /// A fault about the user or account asked for (not the token).
    pub fn is_unknown(&self) -> bool {
        match self {
            CallError::Fault { message, .. } => {
                let m = message.to_ascii_lowercase();
                !is_auth(&m)
                    && (m.contains("not exist")
                        || m.contains("unknown user")
                        || m.contains("no such")
                        || m.contains("not found"))
            }
            _ => false,
        }
    }

    /// A fault refusing the token (or the calling address).
    pub fn is_auth(&self) -> bool {
        match self {
            CallError::Fault { message, .. } => is_auth(&message.to_ascii_lowercase()),
            _ => false,
        }
    }
}

fn is_auth(m: &str) -> bool {
    m.contains("auth") || m.contains("token") || m.contains("permission")
}

/// An XML-RPC client of PaperCut's Web Services API (dxr for the XML,
/// reqwest for HTTP).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    url: String,
    token: Token,
}

impl Client {
    pub fn new(cfg: &PapercutConfig, token: Token) -> Result<Client, EnrichError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .connect_timeout(Duration::from_millis(cfg.timeout_ms))
            .user_agent(concat!("chargetail/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| EnrichError::Setup(e.to_string()))?;
        Ok(Client {
            http,
            url: cfg.url.clone(),
            token,
        })
    }

    async fn call(&self, method: &str, args: Vec<dxr::Value>) -> Result<dxr::Value, CallError> {
        let mut params = vec![dxr::Value::String(self.token.0.clone())];
        params.extend(args);
        let call = MethodCall {
            name: method.into(),
            params,
        };
        let body = dxr_client::utils::request_to_body(&call)
            .map_err(|e| CallError::Protocol(e.to_string()))?;
        let resp = self
            .http
            .post(&self.url)
            .header("Content-Type", "text/xml")
            .body(body)
            .send()
            .await
            .map_err(|e| CallError::Network(net_reason(&e)))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| CallError::Network(net_reason(&e)))?;
        if !status.is_success() {
            return Err(CallError::Network(format!("HTTP {status}")));
        }
        match dxr_client::utils::response_to_result(&text) {
            Ok(Ok(r)) => Ok(r.value),
            Ok(Err(f)) => Err(CallError::Fault {
                code: f.fault.code(),
                message: f.fault.string().to_string(),
            }),
            Err(e) => Err(CallError::Protocol(shorten(&e.to_string()))),
        }
    }

    /// `api.getUserProperties(token, user, [props])`: the values in order.
    pub async fn user_properties(
        &self,
        user: &str,
        props: &[String],
    ) -> Result<Vec<String>, CallError> {
        self.properties("api.getUserProperties", user, props).await
    }

    /// `api.getSharedAccountProperties(token, account, [props])`.
    pub async fn shared_account_properties(
        &self,
        account: &str,
        props: &[String],
    ) -> Result<Vec<String>, CallError> {
        self.properties("api.getSharedAccountProperties", account, props)
            .await
    }

    /// One property call (`method(token, name, [props])`): one value per
    /// property asked, in order.
    async fn properties(
        &self,
        method: &str,
        name: &str,
        props: &[String],
    ) -> Result<Vec<String>, CallError> {
        let names = props
            .to_vec()
            .try_to_value()
            .map_err(|e| CallError::Protocol(e.to_string()))?;
        let v = self
            .call(method, vec![dxr::Value::String(name.into()), names])
            .await?;
        let values =
            Vec::<String>::try_from_value(&v).map_err(|e| CallError::Protocol(e.to_string()))?;
        if values.len() != props.len() {
            return Err(CallError::Protocol(format!(
                "{} values for {} properties",
                values.len(),
                props.len()
            )));
        }
        Ok(values)
    }

    /// `api.isUserExists(token, user)`: what `chargetail check` asks.
    pub async fn user_exists(&self, user: &str) -> Result<bool, CallError> {
        let v = self
            .call("api.isUserExists", vec![dxr::Value::String(user.into())])
            .await?;
        bool::try_from_value(&v).map_err(|e| CallError::Protocol(e.to_string()))
    }
}

fn net_reason(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else {
        // reqwest's message names the URL, never the body (the token).
        shorten(&e.to_string())
    }
}

fn shorten(s: &str) -> String {
    s.chars().take(200).collect()
}

/// `chargetail check`: does PaperCut accept the token? Asks
/// `api.isUserExists` for a user name; any answer that is not a fault
/// means the token works.
pub fn check(cfg: &PapercutConfig) -> Result<(), String> {
    let token = Token::load(cfg).map_err(|e| e.to_string())?;
    let client = Client::new(cfg, token).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    match rt.block_on(client.user_exists("chargetail-check")) {
        Ok(_) => Ok(()),
        Err(e) if e.is_auth() => Err(format!("{} refused the token: {e}", cfg.url)),
        Err(e) => Err(format!("{}: {e}", cfg.url)),
    }
}

/// How enrichment went for one charge (`data.enrichment`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Properties read (now or from the cache).
    Ok(BTreeMap<String, String>),
    /// PaperCut says there is no such user.
    Unknown,
    /// PaperCut refused the token (or another fault).
    Rejected,
    /// PaperCut down, or slow past `wait_ms`.
    Unavailable,
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Ok(_) => "ok",
            Outcome::Unknown => "unknown",
            Outcome::Rejected => "rejected",
            Outcome::Unavailable => "unavailable",
        }
    }

    /// `data.papercut`, when properties were read.
    pub fn properties(&self) -> Option<Value> {
        match self {
            Outcome::Ok(p) => Some(Value::Object(
                p.iter()
                    .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                    .collect::<Map<String, Value>>(),
            )),
            _ => None,
        }
    }
}

/// The enrichment step: client, cache, bound.
pub struct Enricher {
    cfg: PapercutConfig,
    client: Client,
    rt: tokio::runtime::Runtime,
    db: Connection,
    /// The property list the cache rows were read with.
    props_key: String,
    /// No calls before this instant (PaperCut failed recently), and what
    /// the charges say meanwhile (rejected or unavailable).
    quiet_until: Option<(Instant, Outcome)>,
    stats: Arc<BillingStats>,
}

impl Enricher {
    /// `state` is the state database, already migrated by a `Store`.
    pub fn open(
        cfg: &PapercutConfig,
        state: &Path,
        stats: Arc<BillingStats>,
    ) -> Result<Enricher, EnrichError> {
        let token = Token::load(cfg)?;
        let client = Client::new(cfg, token)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| EnrichError::Setup(e.to_string()))?;
        let db = Connection::open(state)?;
        db.busy_timeout(Duration::from_secs(10))?;
        Ok(Enricher {
            props_key: cfg.user_properties.join("\u{1f}"),
            cfg: cfg.clone(),
            client,
            rt,
            db,
            quiet_until: None,
            stats,
        })
    }

    pub fn customer_property(&self) -> Option<&str> {
        self.cfg.customer_property.as_deref()
    }

    fn cached(&self, user: &str, now_ms: i64) -> Result<Option<Outcome>, EnrichError> {
        let row: Option<(String, Option<String>, i64)> = self
            .db
            .query_row(
                "SELECT props_key, props, fetched_ms FROM papercut_cache WHERE kind = 'user' AND name = ?1",
                params![user],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let Some((key, props, fetched)) = row else {
            return Ok(None);
        };
        let ttl_ms = (self.cfg.cache_ttl_secs as i64).saturating_mul(1000);
        if key != self.props_key || now_ms < fetched || now_ms - fetched >= ttl_ms {
            return Ok(None);
        }
        Ok(Some(match props {
            None => Outcome::Unknown,
            Some(json) => match serde_json::from_str::<BTreeMap<String, String>>(&json) {
                Ok(p) => Outcome::Ok(p),
                Err(_) => return Ok(None),
            },
        }))
    }

    fn store(&self, user: &str, outcome: &Outcome, now_ms: i64) -> Result<(), EnrichError> {
        let props = match outcome {
            Outcome::Ok(p) => Some(serde_json::to_string(p).unwrap_or_else(|_| "{}".into())),
            Outcome::Unknown => None,
            _ => return Ok(()),
        };
        self.db.execute(
            "INSERT INTO papercut_cache (kind, name, props_key, props, fetched_ms) VALUES ('user', ?1, ?2, ?3, ?4)
             ON CONFLICT (kind, name) DO UPDATE SET props_key = excluded.props_key, props = excluded.props, fetched_ms = excluded.fetched_ms",
            params![user, self.props_key, props, now_ms],
        )?;
        Ok(())
    }

    /// The outcome for each distinct user of a batch, within the bound.
    pub fn lookup(&mut self, users: &[String]) -> Result<HashMap<String, Outcome>, EnrichError> {
        let now_ms = now_ms();
        let mut out = HashMap::new();
        let mut missing = Vec::new();
        for u in users {
            if out.contains_key(u) || missing.contains(u) {
                continue;
            }
            if u.is_empty() {
                out.insert(u.clone(), Outcome::Unknown);
                continue;
            }
            match self.cached(u, now_ms)? {
                Some(o) => {
                    crate::stats::Stats::add(&self.stats.papercut_cache_hits, 1);
                    out.insert(u.clone(), o);
                }
                None => missing.push(u.clone()),
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        if let Some((until, why)) = &self.quiet_until {
            if Instant::now() < *until {
                for u in missing {
                    out.insert(u, why.clone());
                }
                return Ok(out);
            }
        }
        self.quiet_until = None;
        let client = self.client.clone();
        let props = self.cfg.user_properties.clone();
        let conc = self.cfg.concurrency;
        let wait = Duration::from_millis(self.cfg.wait_ms);
        let stats = self.stats.clone();
        let asked = missing.clone();
        let mut answers: Vec<(String, Result<Vec<String>, CallError>)> = Vec::new();
        let timed_out = self.rt.block_on(async {
            let mut calls = futures_util::stream::iter(asked.into_iter().map(|u| {
                let client = client.clone();
                let props = props.clone();
                let stats = stats.clone();
                async move {
                    let t0 = Instant::now();
                    let r = client.user_properties(&u, &props).await;
                    crate::stats::Stats::add(&stats.papercut_calls, 1);
                    crate::stats::Stats::add(
                        &stats.papercut_call_us,
                        t0.elapsed().as_micros() as u64,
                    );
                    (u, r)
                }
            }))
            .buffer_unordered(conc);
            let collect = async {
                while let Some(a) = calls.next().await {
                    answers.push(a);
                }
            };
            tokio::time::timeout(wait, collect).await.is_err()
        });
        let mut failed = timed_out.then_some(Outcome::Unavailable);
        for (u, r) in answers {
            let o = match r {
                Ok(values) => Outcome::Ok(props.iter().cloned().zip(values).collect()),
                Err(e) if e.is_unknown() => {
                    tracing::info!(user = %u, "PaperCut knows no such user: charges go unenriched");
                    Outcome::Unknown
                }
                Err(e) => {
                    crate::stats::Stats::add(&self.stats.papercut_errors, 1);
                    let o = if e.is_auth() {
                        tracing::error!(url = %self.cfg.url, "PaperCut refused the token: {e}");
                        Outcome::Rejected
                    } else if matches!(e, CallError::Fault { .. }) {
                        tracing::warn!(user = %u, "PaperCut: {e}");
                        Outcome::Rejected
                    } else {
                        tracing::warn!(url = %self.cfg.url, "{e}");
                        Outcome::Unavailable
                    };
                    failed = Some(o.clone());
                    o
                }
            };
            self.store(&u, &o, now_ms)?;
            out.insert(u, o);
        }
        if timed_out {
            crate::stats::Stats::add(&self.stats.papercut_errors, 1);
            tracing::warn!(
                url = %self.cfg.url,
                wait_ms = self.cfg.wait_ms,
                "PaperCut slower than wait_ms: charges go unenriched"
            );
        }
        for u in missing {
            out.entry(u).or_insert(Outcome::Unavailable);
        }
        if let Some(why) = failed {
            tracing::warn!(
                retry_secs = self.cfg.retry_secs,
                "PaperCut left alone for retry_secs: charges go unenriched meanwhile"
            );
            self.quiet_until = Some((
                Instant::now() + Duration::from_secs(self.cfg.retry_secs),
                why,
            ));
            self.stats.papercut_down.store(1, Ordering::Relaxed);
        } else {
            self.stats.papercut_down.store(0, Ordering::Relaxed);
        }
        Ok(out)
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> PapercutConfig {
        toml::from_str(
            r#"url = "http://127.0.0.1:1/rpc/api/xmlrpc"
token_file = "t"
customer_property = "email""#,
        )
        .unwrap()
    }

    #[test]
    fn defaults_and_checks() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = cfg();
        assert_eq!(c.cache_ttl_secs, 3600);
        assert_eq!(c.user_properties.len(), 3);
        let err = c.resolve(dir.path()).unwrap_err();
        assert!(
            err.contains("token_file") && err.contains("cannot read"),
            "{err}"
        );
        std::fs::write(dir.path().join("t"), "\n").unwrap();
        let mut c = cfg();
        let err = c.resolve(dir.path()).unwrap_err();
        assert!(err.contains("token_file") && err.contains("empty"), "{err}");
        std::fs::write(dir.path().join("t"), "tok\n").unwrap();
        let mut c = cfg();
        c.resolve(dir.path()).unwrap();
        assert_eq!(
            c.token_file.as_deref(),
            Some(dir.path().join("t").as_path())
        );
        let mut bad = cfg();
        bad.customer_property = Some("office".into());
        assert!(bad
            .resolve(Path::new("/"))
            .unwrap_err()
            .contains("customer_property"));
        let mut bad = cfg();
        bad.url = "ftp://x".into();
        assert!(bad.resolve(Path::new("/")).unwrap_err().contains("url"));
        assert!(toml::from_str::<PapercutConfig>("url = \"http://x\"\ntokn = 1").is_err());
    }

    #[test]
    fn token_is_never_shown() {
        assert!(!format!("{:?}", Token("s3cret".into())).contains("s3cret"));
    }

    #[test]
    fn faults_are_told_apart() {
        let f = |m: &str| CallError::Fault {
            code: 1,
            message: m.into(),
        };
        assert!(f("User does not exist: bob").is_unknown());
        assert!(!f("User does not exist: bob").is_auth());
        assert!(f("Invalid authentication token").is_auth());
        assert!(!f("Invalid authentication token").is_unknown());
        assert!(!CallError::Network("x".into()).is_unknown());
    }
}
