//! The TOML configuration (docs/config.md). Parsing is strict: an unknown
//! key is an error naming it, so a typo cannot silently disable a setting.

mod source;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::deliver::{DeliverSettings, RetryPolicy};
use crate::sink::AnySink;
pub use crate::sink::{SinkConfig, SinkKind};
pub use source::{describe_timezone, system_timezone, SourceConfig};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// One `[source]` table or several `[[source]]` tables, in config order.
    #[serde(rename = "source", deserialize_with = "source::one_or_many")]
    pub sources: Vec<SourceConfig>,
    pub state: StateConfig,
    #[serde(default)]
    pub sink: SinkConfig,
    #[serde(default)]
    pub delivery: DeliveryConfig,
    #[serde(default)]
    pub http: Option<HttpConfig>,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub billing: Option<crate::billing::BillingConfig>,
    #[serde(default)]
    pub papercut: Option<crate::billing::enrich::PapercutConfig>,
    /// Where the config was read from (relative paths in it resolve against
    /// its directory).
    #[serde(skip)]
    pub file: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    pub path: PathBuf,
    /// How long delivered ids are kept to recognise a replayed charge.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
}

/// Retry schedule for failed deliveries: exponential from `initial` to `max`
/// with full jitter; after `give_up_after` a charge becomes a dead letter.
/// `give_up_after = 0` retries forever (the AMQP default: a broker outage
/// never drops billing data).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    #[serde(default = "default_retry_initial_ms")]
    pub retry_initial_ms: u64,
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    #[serde(default)]
    pub give_up_after_secs: u64,
    /// Charges handed to the sink at once.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Committed charges held in memory for delivery; beyond, delivery
    /// reads them back from the outbox.
    #[serde(default = "default_queue")]
    pub queue: usize,
}

impl DeliveryConfig {
    /// The deliver stage's retry policy from these settings.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(self.retry_initial_ms),
            max: Duration::from_millis(self.retry_max_ms),
            give_up_after: (self.give_up_after_secs > 0)
                .then(|| Duration::from_secs(self.give_up_after_secs)),
        }
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            retry_initial_ms: default_retry_initial_ms(),
            retry_max_ms: default_retry_max_ms(),
            give_up_after_secs: 0,
            batch: default_batch(),
            queue: default_queue(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `chargetail=debug,warn`.
    /// `CHARGETAIL_LOG` in the environment wins. Changes apply on SIGHUP.
    #[serde(default)]
    pub level: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: String,
    /// A file holding the bearer token `/`, `/status` and `/metrics` need
    /// (`/healthz` never does). Relative to the config file.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

fn default_retention_days() -> u32 {
    400
}
fn default_retry_initial_ms() -> u64 {
    500
}
fn default_retry_max_ms() -> u64 {
    60_000
}
fn default_queue() -> usize {
    4096
}

fn default_batch() -> usize {
    1000
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let mut cfg: Config = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        cfg.file = path.to_path_buf();
        let table = text.parse::<toml::Table>().ok();
        let raw: Vec<&toml::Value> = match table.as_ref().and_then(|t| t.get("source")) {
            Some(toml::Value::Array(a)) => a.iter().collect(),
            Some(v) => vec![v],
            None => Vec::new(),
        };
        for (i, src) in cfg.sources.iter_mut().enumerate() {
            src.timezone_from_system = raw.get(i).and_then(|t| t.get("timezone")).is_none();
        }
        // Relative paths are relative to the config file, not to the cwd,
        // so a unit file and a shell run the same config the same way; made
        // absolute so that charge origins and positions name real places.
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = std::fs::canonicalize(if base.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &base
        })
        .unwrap_or(base);
        if cfg.state.path.is_relative() {
            cfg.state.path = base.join(&cfg.state.path);
        }
        if let Some(t) = cfg.http.as_mut().and_then(|h| h.token_file.as_mut()) {
            if t.is_relative() {
                *t = base.join(&*t);
            }
        }
        for src in &mut cfg.sources {
            if Path::new(&src.path).is_relative() {
                src.path = base.join(&src.path).to_string_lossy().into_owned();
            }
        }
        if let Some(b) = cfg.billing.as_mut() {
            b.resolve(&base).map_err(invalid)?;
        }
        if let Some(p) = cfg.papercut.as_mut() {
            p.resolve(&base).map_err(invalid)?;
        }
        cfg.validate().map_err(invalid)?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        source::validate_all(&self.sources)?;
        match self.sink.kind {
            SinkKind::Amqp if self.sink.amqp.is_none() => {
                return Err("[sink] kind = \"amqp\" needs a [sink.amqp] table".into())
            }
            SinkKind::Webhook => match &self.sink.webhook {
                None => return Err("[sink] kind = \"webhook\" needs a [sink.webhook] table".into()),
                Some(t) => {
                    crate::sink::webhook::WebhookConfig::from_table(t)?;
                }
            },
            _ => {}
        }
        if self.state.retention_days == 0 {
            return Err(
                "[state] retention_days: must be at least 1 (0 would forget every delivered id at once)".into(),
            );
        }
        if let Some(level) = &self.log.level {
            tracing_subscriber::EnvFilter::try_new(level)
                .map_err(|e| format!("[log] level: {level:?} is not a log filter: {e}"))?;
        }
        if let Some(h) = &self.http {
            h.listen.parse::<std::net::SocketAddr>().map_err(|_| {
                format!(
                    "[http] listen: {:?} is not an address like \"127.0.0.1:9464\"",
                    h.listen
                )
            })?;
        }
        if self.delivery.batch == 0 {
            return Err("[delivery] batch: must be above 0".into());
        }
        Ok(())
    }

    /// The directory relative paths in the config are resolved against.
    pub fn dir(&self) -> PathBuf {
        let parent = self.file.parent().unwrap_or(Path::new("."));
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        std::fs::canonicalize(parent).unwrap_or_else(|_| parent.to_path_buf())
    }

    /// The configured sink. One that cannot be made (a secret file missing,
    /// a bad URL, an unreadable CA file) is a config error: exit 2, and
    /// systemd does not restart in a loop.
    pub fn make_sink(&self) -> Result<AnySink, ConfigError> {
        AnySink::from_config(&self.sink, &self.dir(), &self.sink_source_name()).map_err(|e| {
            ConfigError::Invalid {
                path: self.file.clone(),
                message: format!("[sink]: {e:#}"),
            }
        })
    }

    /// What the deliver stage takes from this config (at start, on SIGHUP).
    pub fn deliver_settings(&self) -> DeliverSettings {
        DeliverSettings {
            policy: self.delivery.retry_policy(),
            batch: self.delivery.batch,
            sink: self.sink.clone(),
            dir: self.dir(),
        }
    }

    /// The one source, or the one named: for the commands that read files
    /// as one source (`parse`, `inspect`, `replay`). With several sources
    /// and no name, an error listing them.
    pub fn source(&self, name: Option<&str>) -> Result<&SourceConfig, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: self.file.clone(),
            message,
        };
        let names = || {
            self.sources
                .iter()
                .map(|s| format!("{:?}", s.name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match name {
            Some(n) => self.sources.iter().find(|s| s.name == n).ok_or_else(|| {
                invalid(format!(
                    "no [[source]] named {n:?} (the sources: {})",
                    names()
                ))
            }),
            None => match self.sources.as_slice() {
                [one] => Ok(one),
                _ => Err(invalid(format!(
                    "several sources ({}): say which with --source NAME",
                    names()
                ))),
            },
        }
    }

    /// The first source's zone: where one day boundary serves all sources
    /// (the status page's and /status's "today").
    pub fn timezone(&self) -> chrono_tz::Tz {
        self.sources
            .first()
            .map(SourceConfig::timezone)
            .unwrap_or(chrono_tz::UTC)
    }

    /// The name the sink knows this daemon by (AMQP connection name, the
    /// `{source}` of a routing key): the source's, or with several the
    /// names joined by `+`.
    pub fn sink_source_name(&self) -> String {
        self.sources
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join("+")
    }
}

#[cfg(test)]
mod tests;
