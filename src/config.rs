//! The TOML configuration (docs/config.md). Parsing is strict: an unknown
//! key is an error naming it, so a typo cannot silently disable a setting.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::deliver::{DeliverSettings, RetryPolicy};
use crate::format::{
    parse_delimiter, AmountSign, ColumnRef, FormatSettings, Profile, TextEncoding,
};
use crate::sink::AnySink;
use crate::source::FollowOptions;
pub use crate::sink::{SinkConfig, SinkKind};

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
    #[serde(rename = "source", deserialize_with = "one_or_many")]
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
pub struct SourceConfig {
    /// Stable id of this PaperCut server; part of every charge id.
    pub name: String,
    /// A file or a glob.
    pub path: String,
    #[serde(default)]
    pub profile: Profile,
    /// Default: the system's zone (`TZ`, else `/etc/localtime`), since
    /// PaperCut writes the server's local time.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// `timezone` was not in the config: it is the system's.
    #[serde(skip)]
    pub timezone_from_system: bool,
    #[serde(default = "default_currency")]
    pub currency: String,
    /// Overrides of the profile's defaults.
    #[serde(default)]
    pub delimiter: Option<String>,
    #[serde(default)]
    pub header: Option<bool>,
    /// Field name → column header name or 1-based position.
    #[serde(default)]
    pub columns: BTreeMap<String, ColumnRef>,
    #[serde(default)]
    pub encoding: Option<TextEncoding>,
    #[serde(default)]
    pub amount_sign: Option<AmountSign>,
    /// Amounts written with a decimal comma (`1,20`).
    #[serde(default)]
    pub decimal_comma: bool,
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// Stat poll period; alone suffices where inotify is silent (NFS/SMB).
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
    /// A file not grown for this long is idle: looked at every
    /// `idle_poll_secs` instead of on every poll (inotify still reports a
    /// write to it at once).
    #[serde(default = "default_idle_after_secs")]
    pub idle_after_secs: u64,
    #[serde(default = "default_idle_poll_secs")]
    pub idle_poll_secs: u64,
    /// How long a renamed or deleted file stays open for late writes.
    #[serde(default = "default_grace_ms")]
    pub rotate_grace_ms: u64,
    /// Reading pauses while this many charges wait in the outbox.
    #[serde(default = "default_backlog_limit")]
    pub backlog_limit: u64,
}

/// `[source]` (a table) or `[[source]]` (an array of tables). A visitor
/// rather than `#[serde(untagged)]`, which would replace the real error (an
/// unknown key, a wrong type) with "did not match any variant".
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<SourceConfig>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<SourceConfig>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a [source] table or [[source]] tables")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            SourceConfig::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                .map(|s| vec![s])
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
            Vec::<SourceConfig>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
        }
    }
    d.deserialize_any(V)
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

impl SourceConfig {
    /// The format stage's settings: the profile's defaults with this
    /// source's overrides applied.
    pub fn format_settings(&self) -> Result<FormatSettings, String> {
        self.format_settings_as(self.profile)
    }

    /// As `format_settings` but with another profile (`parse --profile`).
    pub fn format_settings_as(&self, profile: Profile) -> Result<FormatSettings, String> {
        let d = FormatSettings::defaults(profile, &self.name);
        let delimiter = match &self.delimiter {
            Some(x) => Some(parse_delimiter(x)?),
            None => d.delimiter,
        };
        Ok(FormatSettings {
            delimiter,
            header: self.header.unwrap_or(d.header),
            columns: self.columns.clone(),
            encoding: self.encoding.unwrap_or_default(),
            amount_sign: self.amount_sign.unwrap_or(d.amount_sign),
            decimal_comma: self.decimal_comma,
            currency: self.currency.clone(),
            timezone: self
                .timezone
                .parse()
                .map_err(|_| format!("unknown time zone {:?}", self.timezone))?,
            ..d
        })
    }
}

impl SourceConfig {
    /// This source's own checks; `label` names it in errors (`[source]`, or
    /// `[[source]] #2 ("site-b")` when there are several).
    fn validate(&self, label: &str) -> Result<(), String> {
        let s = self;
        if s.name.trim().is_empty() {
            return Err(format!(
                "{label} name: must not be empty (it is part of every charge id)"
            ));
        }
        if s.timezone.parse::<chrono_tz::Tz>().is_err() {
            return Err(format!(
                "{label} timezone: unknown IANA time zone {:?}",
                s.timezone
            ));
        }
        if s.currency.len() != 3 || !s.currency.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(format!(
                "{label} currency: {:?} is not an ISO 4217 code like \"AUD\"",
                s.currency
            ));
        }
        if let Some(d) = &s.delimiter {
            parse_delimiter(d).map_err(|e| format!("{label} delimiter: {e}"))?;
        }
        if glob::Pattern::new(&s.path).is_err() {
            return Err(format!(
                "{label} path: {:?} is not a valid file name or glob",
                s.path
            ));
        }
        if s.max_line_bytes < 256 {
            return Err(format!("{label} max_line_bytes: must be at least 256"));
        }
        if s.poll_interval_ms == 0 {
            return Err(format!("{label} poll_interval_ms: must be above 0"));
        }
        if s.idle_after_secs == 0 {
            return Err(format!(
                "{label} idle_after_secs: must be at least 1 (0 would back off on a file \
                 the moment it was read)"
            ));
        }
        if !(1..=MAX_IDLE_POLL_SECS).contains(&s.idle_poll_secs) {
            return Err(format!(
                "{label} idle_poll_secs: must be from 1 to {MAX_IDLE_POLL_SECS} (without inotify \
                 a write to an idle file is seen this late; it is seconds, not milliseconds)"
            ));
        }
        for key in s.columns.keys() {
            if !crate::format::FIELD_NAMES.contains(&key.as_str()) {
                return Err(format!(
                    "{label} columns {key:?}: not a charge field (known: {})",
                    crate::format::FIELD_NAMES.join(", ")
                ));
            }
        }
        if s.backlog_limit == 0 {
            return Err(format!(
                "{label} backlog_limit: must be at least 1 (0 would pause reading forever)"
            ));
        }
        Ok(())
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms)
    }

    /// The source stage's settings for following this source's files.
    pub fn follow_options(&self) -> FollowOptions {
        FollowOptions {
            source: self.name.clone(),
            pattern: self.path.clone(),
            poll_interval: self.poll_interval(),
            idle_after: Duration::from_secs(self.idle_after_secs),
            idle_poll_interval: Duration::from_secs(self.idle_poll_secs),
            rotate_grace: Duration::from_millis(self.rotate_grace_ms),
            max_line_bytes: self.max_line_bytes,
            read_chunk: 256 * 1024,
            max_batch_lines: 2000,
        }
    }

    pub fn timezone(&self) -> chrono_tz::Tz {
        // Validated when the config was read.
        self.timezone.parse().unwrap_or(chrono_tz::UTC)
    }
}

/// A file name both source paths can match, if one is found: a pattern
/// that matches the other's text (`/x/*.log` and `/x/a.log`, or
/// `/x/a*.log`), or a file on disk now that both match. Two arbitrary globs
/// can overlap in ways this misses; these are the ones a config gets wrong.
fn overlap(a: &str, b: &str) -> Option<String> {
    let (pa, pb) = (glob::Pattern::new(a).ok()?, glob::Pattern::new(b).ok()?);
    // As the follower's scan (`glob::glob`) matches: `*` stays within a
    // directory.
    let opts = glob::MatchOptions {
        require_literal_separator: true,
        ..Default::default()
    };
    if pa.matches_with(b, opts) {
        return Some(format!("{b:?}"));
    }
    if pb.matches_with(a, opts) {
        return Some(format!("{a:?}"));
    }
    let files = glob::glob(a).ok()?;
    files
        .flatten()
        .find(|f| pb.matches_path_with(f, opts))
        .map(|f| format!("{} (on disk now)", f.display()))
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

fn default_timezone() -> String {
    system_timezone()
}

/// The system's IANA zone: `TZ` (`Europe/Madrid` or `:Europe/Madrid`), else
/// what `/etc/localtime` names; UTC when neither names a known zone.
pub fn system_timezone() -> String {
    let known = |z: &str| z.parse::<chrono_tz::Tz>().is_ok();
    if let Ok(tz) = std::env::var("TZ") {
        let tz = tz.trim_start_matches(':').to_string();
        if known(&tz) {
            return tz;
        }
    }
    match iana_time_zone::get_timezone() {
        Ok(z) if known(&z) => z,
        _ => "UTC".into(),
    }
}

/// How a source's zone is described to the operator, once at start.
pub fn describe_timezone(src: &SourceConfig) -> String {
    if src.timezone_from_system {
        format!(
            "{} (the system's zone; set [source] timezone to read the files in another)",
            src.timezone
        )
    } else {
        format!("{} (from the config)", src.timezone)
    }
}
fn default_currency() -> String {
    "USD".into()
}
fn default_max_line_bytes() -> usize {
    64 * 1024
}
fn default_poll_ms() -> u64 {
    2000
}
fn default_idle_after_secs() -> u64 {
    60
}
fn default_idle_poll_secs() -> u64 {
    10
}
/// Past an hour a write to an idle file on NFS (no inotify) waits too long,
/// and a larger figure is most likely milliseconds.
const MAX_IDLE_POLL_SECS: u64 = 3600;
fn default_grace_ms() -> u64 {
    5000
}
fn default_backlog_limit() -> u64 {
    100_000
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
        if self.sources.is_empty() {
            return Err("[[source]]: at least one source is needed".into());
        }
        let several = self.sources.len() > 1;
        for (i, s) in self.sources.iter().enumerate() {
            let label = if several {
                format!("[[source]] #{} ({:?})", i + 1, s.name)
            } else {
                "[source]".to_string()
            };
            s.validate(&label)?;
        }
        let mut names = std::collections::HashMap::new();
        let mut paths = std::collections::HashMap::new();
        for (i, s) in self.sources.iter().enumerate() {
            if let Some(j) = names.insert(s.name.as_str(), i) {
                return Err(format!(
                    "[[source]] #{} and #{}: both are named {:?}; each source needs its own name \
                     (it is part of every charge id)",
                    j + 1,
                    i + 1,
                    s.name
                ));
            }
            if let Some(j) = paths.insert(s.path.as_str(), i) {
                return Err(format!(
                    "[[source]] #{} ({:?}) and #{} ({:?}): the same path {:?}; two sources \
                     reading one file would bill every line twice",
                    j + 1,
                    self.sources[j].name,
                    i + 1,
                    s.name,
                    s.path
                ));
            }
        }
        for (i, a) in self.sources.iter().enumerate() {
            for (j, b) in self.sources.iter().enumerate().skip(i + 1) {
                if let Some(p) = overlap(&a.path, &b.path) {
                    return Err(format!(
                        "[[source]] #{} ({:?}) and #{} ({:?}): both paths match {p}; two sources \
                         reading one file would bill every line twice",
                        i + 1,
                        a.name,
                        j + 1,
                        b.name
                    ));
                }
            }
        }
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
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("/etc/chargetail/config.toml"))
    }

    const MIN: &str = "[source]\nname='pc'\npath='/x/*.log'\n[state]\npath='s.db'\n";

    #[test]
    fn minimal_config_gets_defaults_and_resolves_paths() {
        let c = load(MIN).unwrap();
        assert_eq!(c.sink.kind, SinkKind::Stdout);
        assert_eq!(c.state.path, PathBuf::from("/etc/chargetail/s.db"));
        assert_eq!(c.sources[0].max_line_bytes, 65536);
    }

    #[test]
    fn settings_from_config() {
        let src: SourceConfig = toml::from_str(
            "name = 'pc'\npath = '/x'\nprofile = 'print-log'\ntimezone = 'Australia/Melbourne'\n\
             currency = 'AUD'\ndecimal_comma = true\ncolumns = { amount = 13 }\n",
        )
        .unwrap();
        let s = src.format_settings().unwrap();
        assert_eq!(s.profile, Profile::PrintLog);
        assert_eq!((s.delimiter, s.header), (Some(b'\t'), false));
        assert_eq!(s.amount_sign, AmountSign::ChargePositive);
        assert!(s.decimal_comma);
        assert_eq!(s.timezone, chrono_tz::Australia::Melbourne);
        let t = src.format_settings_as(Profile::TransactionFile).unwrap();
        assert_eq!((t.delimiter, t.header), (None, true));
        assert_eq!(t.amount_sign, AmountSign::DebitNegative);
        // The settings parse: a print log line with a decimal comma in column 13.
        let pl = "2026-11-20\t9:14:03 PM\tpc-main\tlevel1-mfd\tmaya.chen@harbourworks.com.au\tAcme Design\tmaya-laptop\tBrief.pdf\t4\t1";
        let mut lines = Vec::new();
        let mut sp = crate::source::LineSplitter::new(65536, 0, 1);
        sp.feed(format!("{pl}\t1\tx\t0,40\n").as_bytes(), &mut lines);
        let mut parser = crate::format::LineParser::new(std::sync::Arc::new(s), "/x/pl.log".into());
        let crate::format::Parsed::Charge(c) = parser.parse(&lines[0]) else {
            panic!("not a charge: {lines:?}");
        };
        assert_eq!(c.amount, Some("0.40".parse().unwrap()));
    }

    #[test]
    fn several_sources() {
        let two = "[[source]]\nname='a'\npath='/x/a/*.log'\ntimezone='Europe/Madrid'\n\
                   [[source]]\nname='b'\npath='/x/b/*.log'\ncurrency='AUD'\n[state]\npath='s.db'\n";
        let c = load(two).unwrap();
        let names: Vec<&str> = c.sources.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(!c.sources[0].timezone_from_system);
        assert!(c.sources[1].timezone_from_system);
        assert_eq!(c.sources[1].currency, "AUD");
        assert_eq!(c.source(Some("b")).unwrap().path, "/x/b/*.log");
        let e = c.source(None).unwrap_err().to_string();
        assert!(e.contains("--source") && e.contains("\"a\", \"b\""), "{e}");
        let e = c.source(Some("z")).unwrap_err().to_string();
        assert!(e.contains("\"z\""), "{e}");
        // One [source] is one source, the only one.
        let one = load(MIN).unwrap();
        assert_eq!(one.sources.len(), 1);
        assert_eq!(one.source(None).unwrap().name, "pc");
        // An unknown key inside [[source]] is named, not "no variant matched".
        let e = load(&two.replace("currency='AUD'", "curency='AUD'"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("curency"), "{e}");
        // Errors name the source by index and name.
        let e = load(&two.replace("currency='AUD'", "currency='aud'"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("[[source]] #2 (\"b\") currency"), "{e}");
    }

    #[test]
    fn sources_must_not_collide() {
        let two = |a: &str, pa: &str, b: &str, pb: &str| {
            load(&format!(
                "[[source]]\nname='{a}'\npath='{pa}'\n[[source]]\nname='{b}'\npath='{pb}'\n\
                 [state]\npath='s.db'\n"
            ))
        };
        let e = two("a", "/x/*.log", "a", "/y/*.log")
            .unwrap_err()
            .to_string();
        assert!(e.contains("both are named \"a\""), "{e}");
        let e = two("a", "/x/*.log", "b", "/x/*.log")
            .unwrap_err()
            .to_string();
        assert!(e.contains("the same path"), "{e}");
        let e = two("a", "/x/*.log", "b", "/x/tx.log")
            .unwrap_err()
            .to_string();
        assert!(e.contains("both paths match \"/x/tx.log\""), "{e}");
        let e = two("a", "/x/a*.log", "b", "/x/*.log")
            .unwrap_err()
            .to_string();
        assert!(e.contains("#1 (\"a\") and #2 (\"b\")"), "{e}");
        let e = two("", "/x/*.log", "b", "/y/*.log")
            .unwrap_err()
            .to_string();
        assert!(e.contains("#1 (\"\") name: must not be empty"), "{e}");
        // Relative paths resolve first: "a/*.log" is /etc/chargetail/a/*.log.
        let e = two("a", "a/*.log", "b", "/etc/chargetail/a/x.log")
            .unwrap_err()
            .to_string();
        assert!(e.contains("both paths match"), "{e}");
        // A file on disk both globs match.
        let dir = std::env::temp_dir().join(format!("chargetail-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("tx-2026.log"), "").unwrap();
        let (pa, pb) = (
            format!("{}/tx-*", dir.display()),
            format!("{}/*.log", dir.display()),
        );
        let e = two("a", &pa, "b", &pb).unwrap_err().to_string();
        assert!(e.contains("on disk now"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(two("a", "/x/a/*.log", "b", "/x/b/*.log").is_ok());
        assert!(two("a", "/x/*.log", "b", "/x/sub/*.log").is_ok());
    }

    #[test]
    fn errors_name_the_place() {
        let e = load(&format!("{MIN}[sourc]\n")).unwrap_err().to_string();
        assert!(e.contains("sourc"), "{e}");
        let e = load(&MIN.replace("name='pc'", "name='pc'\ntimezone='Mars/Base'"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("timezone") && e.contains("Mars/Base"), "{e}");
        let e = load(&MIN.replace("name='pc'", "name='pc'\ncolumns={ amout = 3 }"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("amout"), "{e}");
        // The back-off keys name the source and the key.
        let two = "[[source]]\nname='a'\npath='/x/a/*.log'\n[[source]]\nname='b'\npath='/x/b/*.log'\n\
                   idle_poll_secs=10000\n[state]\npath='s.db'\n";
        let e = load(two).unwrap_err().to_string();
        assert!(
            e.contains("[[source]] #2 (\"b\") idle_poll_secs: must be from 1 to 3600"),
            "{e}"
        );
        let e = load(&MIN.replace("name='pc'", "name='pc'\nidle_after_secs=0"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("[source] idle_after_secs"), "{e}");
        let c = load(&MIN.replace("name='pc'", "name='pc'\nidle_after_secs=300")).unwrap();
        let o = c.sources[0].follow_options();
        assert_eq!(o.idle_after, Duration::from_secs(300));
        assert_eq!(o.idle_poll_interval, Duration::from_secs(10));
        let e = load(&format!("{MIN}[sink]\nkind='amqp'\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("[sink.amqp]"), "{e}");
    }
}
