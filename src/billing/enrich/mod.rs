//! Enrichment from PaperCut's Web Services API (XML-RPC, `[papercut]`).
//!
//! For each charge, the configured user properties of its user are read
//! with `api.getUserProperties(token, user, [props])`, and for a charge on
//! a shared account the configured properties of that account with
//! `api.getSharedAccountProperties(token, account, [props])`; both go in
//! `data.papercut` (the account's under `shared_account`), and
//! `data.enrichment` says how that went. Answers are cached in the state
//! database (`papercut_cache`) for `cache_ttl_secs`: one call per user or
//! account per TTL, not one per charge.
//!
//! - `client`: the XML-RPC client (dxr + reqwest), the token, `check`.
//! - `cache`: the answers kept in SQLite with their TTL.
//! - `wait`: the bound: the calls a batch needs, run together (at most
//!   `concurrency` at once), waited for at most `wait_ms`, and PaperCut
//!   left alone for `retry_secs` after a failure, so an outage costs ingest
//!   one bound, not one per batch.
//!
//! Enrichment runs at ingest, on the source thread, before the message's
//! bytes are fixed. When PaperCut is down or slow past the bound, a charge
//! goes on unenriched (`data.enrichment = "unavailable"`), or with
//! `on_unavailable = "hold"` waits in `billing_held` and is asked about
//! again (see `super::held`); it is never lost.

mod cache;
mod client;
mod wait;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

pub use client::{check, CallError, Client, Token, TOKEN_ENV};
pub use wait::Enricher;

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
    /// Shared-account properties read into `data.papercut.shared_account`
    /// for a charge on a shared account (empty: none asked).
    #[serde(default = "default_shared_properties")]
    pub shared_account_properties: Vec<String>,
    /// A charge PaperCut could not answer for (down, slow past `wait_ms`).
    #[serde(default)]
    pub on_unavailable: OnUnavailable,
    /// `on_unavailable = "hold"`: the longest a charge waits for PaperCut;
    /// then it goes on unenriched.
    #[serde(default = "default_hold_max_secs")]
    pub hold_max_secs: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnavailable {
    /// Deliver at once, `data.enrichment = "unavailable"`.
    #[default]
    Deliver,
    /// Keep the charge back and ask PaperCut again every `retry_secs`, up
    /// to `hold_max_secs`.
    Hold,
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
fn default_shared_properties() -> Vec<String> {
    vec!["account-id".into(), "notes".into()]
}
fn default_hold_max_secs() -> u64 {
    3600
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
        if self
            .shared_account_properties
            .iter()
            .any(|p| p.trim().is_empty())
        {
            return Err("[papercut] shared_account_properties: an empty property name".into());
        }
        if self.hold_max_secs == 0 {
            return Err("[papercut] hold_max_secs: must be at least 1".into());
        }
        if let Some(c) = &self.customer_property {
            if c.trim().is_empty() {
                return Err("[papercut] customer_property: must not be empty".into());
            }
            if !self.user_properties.contains(c) && !self.shared_account_properties.contains(c) {
                return Err(format!(
                    "[papercut] customer_property: {c:?} is not one of user_properties or shared_account_properties"
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

#[derive(Debug, thiserror::Error)]
pub enum EnrichError {
    #[error("[papercut] token: {0}")]
    Token(String),
    #[error("[papercut] cache in the state database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("[papercut]: {0}")]
    Setup(String),
}

/// What PaperCut is asked about: a user or a shared account.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    User(String),
    Shared(String),
}

impl Subject {
    /// `papercut_cache.kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Subject::User(_) => "user",
            Subject::Shared(_) => "shared",
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Subject::User(n) | Subject::Shared(n) => n,
        }
    }
}

/// How enrichment went for one user or account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Properties read (now or from the cache).
    Ok(BTreeMap<String, String>),
    /// PaperCut says there is no such user (or shared account).
    Unknown,
    /// PaperCut refused the token (or another fault).
    Rejected,
    /// PaperCut down, or slow past `wait_ms`.
    Unavailable,
}

impl Outcome {
    /// How bad it is, for the one `data.enrichment` of a charge that asked
    /// about a user and a shared account: the worse of the two is said.
    fn rank(&self) -> u8 {
        match self {
            Outcome::Ok(_) => 0,
            Outcome::Unknown => 1,
            Outcome::Rejected => 2,
            Outcome::Unavailable => 3,
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Ok(_) => "ok",
            Outcome::Unknown => "unknown",
            Outcome::Rejected => "rejected",
            Outcome::Unavailable => "unavailable",
        }
    }

    pub fn properties(&self) -> Option<&BTreeMap<String, String>> {
        match self {
            Outcome::Ok(p) => Some(p),
            _ => None,
        }
    }
}

/// Enrichment of one charge: its user's outcome and, on a shared
/// account, the account's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeEnrichment<'a> {
    pub user: &'a Outcome,
    pub shared: Option<&'a Outcome>,
}

impl ChargeEnrichment<'_> {
    /// The worse of the two outcomes.
    pub fn worst(&self) -> &Outcome {
        match self.shared {
            Some(s) if s.rank() > self.user.rank() => s,
            _ => self.user,
        }
    }

    /// `data.enrichment`.
    pub fn label(&self) -> &'static str {
        self.worst().label()
    }

    /// `data.papercut`: the user's properties read, and the shared
    /// account's under `shared_account`; `None` when nothing was read.
    pub fn value(&self) -> Option<Value> {
        let mut m: Map<String, Value> = self
            .user
            .properties()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        if let Some(p) = self.shared.and_then(Outcome::properties) {
            m.insert(
                "shared_account".into(),
                Value::Object(
                    p.iter()
                        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                        .collect(),
                ),
            );
        }
        (!m.is_empty()).then_some(Value::Object(m))
    }

    /// The customer `customer_property` names: the shared account's value
    /// for a shared-account charge (the account is billed, not the user),
    /// the user's otherwise.
    pub fn customer(&self, property: &str) -> Option<String> {
        let from = match self.shared {
            Some(s) => s,
            None => self.user,
        };
        from.properties()?
            .get(property)
            .filter(|v| !v.trim().is_empty())
            .cloned()
    }
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
    fn a_charge_says_the_worse_outcome_and_bills_the_shared_account() {
        let props = |pairs: &[(&str, &str)]| {
            Outcome::Ok(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        let user = props(&[("notes", "cus_user"), ("email", "a@b")]);
        let shared = props(&[("notes", "cus_team")]);
        let e = ChargeEnrichment {
            user: &user,
            shared: Some(&shared),
        };
        assert_eq!(e.label(), "ok");
        assert_eq!(e.customer("notes").as_deref(), Some("cus_team"));
        let v = e.value().unwrap();
        assert_eq!(v["email"], "a@b");
        assert_eq!(v["shared_account"]["notes"], "cus_team");
        // An unknown account: said, the user's properties kept, and the
        // user is not billed for the account's charge.
        let e = ChargeEnrichment {
            user: &user,
            shared: Some(&Outcome::Unknown),
        };
        assert_eq!(e.label(), "unknown");
        assert_eq!(e.customer("notes"), None);
        assert!(e.value().unwrap().get("shared_account").is_none());
        let e = ChargeEnrichment {
            user: &Outcome::Unavailable,
            shared: Some(&shared),
        };
        assert_eq!(e.label(), "unavailable");
        let e = ChargeEnrichment {
            user: &Outcome::Unknown,
            shared: None,
        };
        assert_eq!((e.label(), e.value()), ("unknown", None));
    }
}
