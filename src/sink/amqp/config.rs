//! `[sink.amqp]`: the table, and what it resolves to before any connection
//! (URL + password, TLS material, routing-key template). Everything that can
//! be wrong in the config fails here, at start-up, not at the first publish.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::uri::{AMQPScheme, AMQPUri, SASLMechanism};
use serde::Deserialize;

use super::routing::RoutingTemplate;
use super::secrets::{mask_url, PlainAuth, Redactor};
use super::AmqpError;

/// Environment variable that supplies the broker password (after
/// `password_file`, before the URL's own).
pub const PASSWORD_ENV: &str = "CHARGETAIL_AMQP_PASSWORD";

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpConfig {
    /// `amqp://user:pass@host:port/vhost` or `amqps://…`; lapin's query
    /// parameters (`heartbeat`, `frame_max`, …) pass through.
    #[serde(default)]
    pub url: String,
    /// The nodes of a RabbitMQ cluster, instead of `url`: on a lost
    /// connection the sink goes on with the next one (in list order, round
    /// and round, with the reconnect backoff between attempts).
    #[serde(default)]
    pub urls: Vec<String>,
    /// Exchange to publish to (`""` is the default exchange).
    pub exchange: String,
    /// Template over `{job_type}`, `{account_type}`, `{source}`.
    #[serde(default = "default_routing_key")]
    pub routing_key: String,
    /// File holding the password (trailing newline ignored); overrides the
    /// environment and the URL.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// PEM CA certificate(s) trusted for `amqps://` on top of the system store.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain and private key (both or neither).
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
    /// Most unconfirmed messages in flight on the channel.
    #[serde(default = "default_window")]
    pub window: usize,
    /// Limit on every single wait on the broker (connect, publish, confirm).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Reconnect backoff bounds (exponential, full jitter).
    #[serde(default = "default_reconnect_initial_ms")]
    pub reconnect_initial_ms: u64,
    #[serde(default = "default_reconnect_max_ms")]
    pub reconnect_max_ms: u64,
    /// `retry_after` given while the broker blocks the connection.
    #[serde(default = "default_blocked_retry_ms")]
    pub blocked_retry_ms: u64,
    /// Declare `exchange` as a durable topic exchange.
    #[serde(default)]
    pub declare_exchange: bool,
    /// Declare this durable queue and bind it to `exchange`.
    #[serde(default)]
    pub queue: Option<String>,
    #[serde(default)]
    pub queue_type: QueueType,
    /// `x-dead-letter-exchange` of the declared queue.
    #[serde(default)]
    pub dead_letter_exchange: Option<String>,
    #[serde(default = "default_binding_key")]
    pub binding_key: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    Classic,
    /// Replicated, and the RabbitMQ recommendation for data that must not be lost.
    #[default]
    Quorum,
}

impl QueueType {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        }
    }
}

fn default_routing_key() -> String {
    "charge.{job_type}".into()
}
fn default_window() -> usize {
    1000
}
fn default_timeout_ms() -> u64 {
    15_000
}
fn default_reconnect_initial_ms() -> u64 {
    500
}
fn default_reconnect_max_ms() -> u64 {
    30_000
}
fn default_blocked_retry_ms() -> u64 {
    5_000
}
fn default_binding_key() -> String {
    "charge.#".into()
}

impl AmqpConfig {
    /// A config with every optional key at its default.
    pub fn new(url: impl Into<String>, exchange: impl Into<String>) -> AmqpConfig {
        AmqpConfig {
            url: url.into(),
            urls: Vec::new(),
            exchange: exchange.into(),
            routing_key: default_routing_key(),
            password_file: None,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            window: default_window(),
            timeout_ms: default_timeout_ms(),
            reconnect_initial_ms: default_reconnect_initial_ms(),
            reconnect_max_ms: default_reconnect_max_ms(),
            blocked_retry_ms: default_blocked_retry_ms(),
            declare_exchange: false,
            queue: None,
            queue_type: QueueType::default(),
            dead_letter_exchange: None,
            binding_key: default_binding_key(),
        }
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }
}

// By hand so that a `{:?}` of the whole config (which derives Debug) can
// never print the URL's password.
impl fmt::Debug for AmqpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpConfig")
            .field("url", &mask_url(&self.url))
            .field(
                "urls",
                &self.urls.iter().map(|u| mask_url(u)).collect::<Vec<_>>(),
            )
            .field("exchange", &self.exchange)
            .field("routing_key", &self.routing_key)
            .field("password_file", &self.password_file)
            .field("ca_file", &self.ca_file)
            .field("client_cert_file", &self.client_cert_file)
            .field("client_key_file", &self.client_key_file)
            .field("window", &self.window)
            .field("timeout_ms", &self.timeout_ms)
            .field("reconnect_initial_ms", &self.reconnect_initial_ms)
            .field("reconnect_max_ms", &self.reconnect_max_ms)
            .field("blocked_retry_ms", &self.blocked_retry_ms)
            .field("declare_exchange", &self.declare_exchange)
            .field("queue", &self.queue)
            .field("queue_type", &self.queue_type)
            .field("dead_letter_exchange", &self.dead_letter_exchange)
            .field("binding_key", &self.binding_key)
            .finish()
    }
}

/// The config turned into what a connection needs.
pub struct Resolved {
    /// The URI without the password when `auth` carries it.
    pub uri: AMQPUri,
    /// PLAIN credentials handed to lapin apart from the URI, so the
    /// password is in no URI that a library might log or Debug-print.
    pub auth: Option<PlainAuth>,
    /// For messages: the URL without its password.
    pub shown_url: String,
    pub redactor: Redactor,
    pub tls: OwnedTLSConfig,
    pub template: RoutingTemplate,
}

impl AmqpConfig {
    /// The broker URLs: `urls`, or the one `url`.
    pub fn nodes(&self) -> Result<Vec<String>, AmqpError> {
        match (self.url.is_empty(), self.urls.is_empty()) {
            (false, true) => Ok(vec![self.url.clone()]),
            (true, false) => Ok(self.urls.clone()),
            (true, true) => Err(AmqpError::Config(
                "url (one broker) or urls (the nodes of a cluster) is needed".into(),
            )),
            (false, false) => Err(AmqpError::Config("give url or urls, not both".into())),
        }
    }
}

/// The first node resolved (tests).
#[cfg(test)]
fn resolve(cfg: &AmqpConfig) -> Result<Resolved, AmqpError> {
    let mut all = resolve_all(cfg)?;
    Ok(all.remove(0))
}

/// One [`Resolved`] per node, in the configured order (at least one).
pub fn resolve_all(cfg: &AmqpConfig) -> Result<Vec<Resolved>, AmqpError> {
    let env = std::env::var(PASSWORD_ENV).ok();
    cfg.nodes()?
        .into_iter()
        .map(|url| {
            let mut one = cfg.clone();
            one.url = url;
            one.urls.clear();
            resolve_with(&one, env.clone())
        })
        .collect()
}

/// `resolve` with the environment's password passed in (for tests).
fn resolve_with(cfg: &AmqpConfig, env_password: Option<String>) -> Result<Resolved, AmqpError> {
    let shown_url = mask_url(&cfg.url);
    let bad = |m: String| AmqpError::Config(m);
    // Parse with `url` first: it gives IP hosts (which amq-protocol-uri
    // turns into "localhost"), and its errors never echo the input.
    let parsed = url::Url::parse(&cfg.url).map_err(|e| bad(format!("url {shown_url}: {e}")))?;
    let mut uri: AMQPUri = cfg.url.parse().map_err(|_| {
        bad(format!(
            "url {shown_url}: not a valid amqp:// or amqps:// URL"
        ))
    })?;
    match parsed.host() {
        Some(url::Host::Ipv4(a)) => uri.authority.host = a.to_string(),
        Some(url::Host::Ipv6(a)) => uri.authority.host = a.to_string(),
        Some(url::Host::Domain(_)) | None => {}
    }

    // lapin's own TCP connect limit, so an abandoned attempt (our timeout
    // fired) does not linger in its I/O thread for the OS's ~2 minutes.
    if uri.query.connection_timeout.is_none() {
        uri.query.connection_timeout = Some(cfg.timeout_ms.max(1));
    }

    let from_file = match &cfg.password_file {
        Some(p) => Some(read_password(p)?),
        None => None,
    };
    let from_env = env_password.filter(|p| !p.is_empty());
    let url_password = uri.authority.userinfo.password.clone();
    if let Some(p) = from_file.or(from_env) {
        uri.authority.userinfo.password = p;
    }
    // The URL's own password is masked too, even when overridden.
    let redactor = Redactor::new(&[&uri.authority.userinfo.password, &url_password]);
    let auth = match uri.query.auth_mechanism {
        None | Some(SASLMechanism::Plain) => {
            let auth = PlainAuth {
                user: uri.authority.userinfo.username.clone(),
                password: std::mem::take(&mut uri.authority.userinfo.password),
            };
            Some(auth)
        }
        // EXTERNAL (client certificate), AMQPLAIN, …: lapin's own provider.
        Some(_) => None,
    };

    let mut tls = OwnedTLSConfig::default();
    if let Some(ca) = &cfg.ca_file {
        let pem = read_text(ca, "ca_file")?;
        if !pem.contains("-----BEGIN CERTIFICATE-----") {
            return Err(bad(format!(
                "ca_file {}: no PEM certificate in it",
                ca.display()
            )));
        }
        tls.cert_chain = Some(pem);
    }
    match (&cfg.client_cert_file, &cfg.client_key_file) {
        (Some(c), Some(k)) => {
            tls.identity = Some(OwnedIdentity::PKCS8 {
                pem: read_text(c, "client_cert_file")?.into_bytes(),
                key: read_text(k, "client_key_file")?.into_bytes(),
            })
        }
        (None, None) => {}
        _ => {
            return Err(bad(
                "client_cert_file and client_key_file go together".into()
            ))
        }
    }
    let has_tls_settings =
        cfg.ca_file.is_some() || cfg.client_cert_file.is_some() || cfg.client_key_file.is_some();
    if has_tls_settings && uri.scheme != AMQPScheme::AMQPS {
        return Err(bad(format!(
            "ca_file/client certificate given but url {shown_url} is not amqps://"
        )));
    }

    let template = RoutingTemplate::parse(&cfg.routing_key).map_err(bad)?;
    if cfg.window == 0 {
        return Err(bad("window must be at least 1".into()));
    }
    if cfg.reconnect_initial_ms == 0 || cfg.reconnect_max_ms < cfg.reconnect_initial_ms {
        return Err(bad(
            "reconnect_initial_ms must be > 0 and <= reconnect_max_ms".into(),
        ));
    }
    for (key, value) in [
        ("exchange", Some(&cfg.exchange)),
        ("queue", cfg.queue.as_ref()),
        ("dead_letter_exchange", cfg.dead_letter_exchange.as_ref()),
        ("binding_key", Some(&cfg.binding_key)),
    ] {
        if value.is_some_and(|v| v.len() > super::MAX_SHORT_STRING) {
            return Err(bad(format!("{key} is longer than 255 bytes")));
        }
    }
    if cfg.queue.as_deref() == Some("") {
        return Err(bad("queue must not be empty (leave it out instead)".into()));
    }
    Ok(Resolved {
        uri,
        auth,
        shown_url,
        redactor,
        tls,
        template,
    })
}

fn read_text(path: &Path, key: &str) -> Result<String, AmqpError> {
    std::fs::read_to_string(path)
        .map_err(|e| AmqpError::Config(format!("{key} {}: {e}", path.display())))
}

fn read_password(path: &Path) -> Result<String, AmqpError> {
    let text = read_text(path, "password_file")?;
    let p = text.trim_end_matches(['\r', '\n']);
    if p.is_empty() {
        return Err(AmqpError::Config(format!(
            "password_file {}: empty",
            path.display()
        )));
    }
    Ok(p.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_table_with_every_key() {
        let c: AmqpConfig = toml::from_str(
            r#"
            url = "amqps://u@rabbit.example:5671/billing"
            exchange = "papercut.charges"
            routing_key = "charge.{source}.{job_type}"
            password_file = "/etc/chargetail/amqp-password"
            ca_file = "/etc/chargetail/ca.pem"
            client_cert_file = "/etc/chargetail/client.pem"
            client_key_file = "/etc/chargetail/client.key"
            window = 500
            timeout_ms = 10000
            reconnect_initial_ms = 200
            reconnect_max_ms = 60000
            blocked_retry_ms = 2000
            declare_exchange = true
            queue = "billing.charges"
            queue_type = "classic"
            dead_letter_exchange = "papercut.dlx"
            binding_key = "charge.#"
            "#,
        )
        .unwrap();
        assert_eq!(c.window, 500);
        assert_eq!(c.queue_type, QueueType::Classic);
        let d: AmqpConfig = toml::from_str("url = 'amqp://h'\nexchange = 'x'\n").unwrap();
        assert_eq!(d.routing_key, "charge.{job_type}");
        assert_eq!(d.queue_type, QueueType::Quorum);
        assert_eq!(d.window, 1000);
        assert_eq!(d.timeout_ms, 15_000);
        let e = toml::from_str::<AmqpConfig>("url = 'amqp://h'\nexchange = 'x'\nqueue_typ = 'x'\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("queue_typ"), "{e}");
        assert!(toml::from_str::<AmqpConfig>(
            "url='amqp://h'\nexchange='x'\nqueue_type='stream'\n"
        )
        .is_err());
    }

    #[test]
    fn resolve_keeps_ip_host_and_takes_password_file() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "from-file\n").unwrap();
        let mut cfg = AmqpConfig::new("amqp://u:from-url@127.0.0.1:5673/v", "x");
        cfg.password_file = Some(pw);
        let r = resolve(&cfg).unwrap();
        assert_eq!(r.uri.authority.host, "127.0.0.1");
        assert_eq!(r.uri.authority.port, 5673);
        assert_eq!(r.uri.authority.userinfo.password, "");
        assert_eq!(r.auth.as_ref().unwrap().password, "from-file");
        assert!(!format!("{:?}", r.auth).contains("from-file"));
        assert_eq!(r.uri.vhost, "v");
        assert!(!r.shown_url.contains("from-url"));
    }

    #[test]
    fn password_precedence_file_env_url() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "from-file\r\n").unwrap();
        let mut cfg = AmqpConfig::new("amqp://u:from-url@h/%2f", "x");
        let pass = |c: &AmqpConfig, env: Option<&str>| {
            resolve_with(c, env.map(String::from))
                .unwrap()
                .auth
                .unwrap()
                .password
        };
        assert_eq!(pass(&cfg, None), "from-url");
        assert_eq!(pass(&cfg, Some("")), "from-url");
        assert_eq!(pass(&cfg, Some("from-env")), "from-env");
        cfg.password_file = Some(pw);
        assert_eq!(pass(&cfg, Some("from-env")), "from-file");
        // Masking covers whichever password is used.
        let r = resolve_with(&cfg, None).unwrap();
        assert_eq!(r.redactor.redact("x from-file from-url y"), "x **** **** y");
    }

    #[test]
    fn resolve_rejects_bad_settings() {
        let bad = |f: &dyn Fn(&mut AmqpConfig)| {
            let mut c = AmqpConfig::new("amqp://u:p@h/%2f", "x");
            f(&mut c);
            resolve(&c).err().map(|e| e.to_string())
        };
        assert!(bad(&|c| c.url = "http://u:topsecret@h".into())
            .is_some_and(|e| !e.contains("topsecret")));
        assert!(bad(&|c| c.url = "amqp://u:topsecret@h:notaport".into())
            .is_some_and(|e| !e.contains("topsecret")));
        assert!(bad(&|c| c.routing_key = "{nope}".into()).is_some());
        assert!(bad(&|c| c.window = 0).is_some());
        assert!(bad(&|c| c.exchange = "x".repeat(256)).is_some());
        assert!(bad(&|c| c.ca_file = Some("/nonexistent/ca.pem".into())).is_some());
        assert!(bad(&|c| c.client_cert_file = Some("/x".into())).is_some());
    }
}
