//! `[source]` / `[[source]]`: what to read and how; the format and source
//! stages' settings built from it, and the checks on one source and across
//! sources.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::format::{
    parse_delimiter, AmountSign, ColumnRef, FormatSettings, Profile, TextEncoding,
};
use crate::source::FollowOptions;

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
pub(super) fn one_or_many<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<SourceConfig>, D::Error> {
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

/// Every source's own checks, then the checks across sources: unique
/// names, paths that do not overlap.
pub(super) fn validate_all(sources: &[SourceConfig]) -> Result<(), String> {
    if sources.is_empty() {
        return Err("[[source]]: at least one source is needed".into());
    }
    let several = sources.len() > 1;
    for (i, s) in sources.iter().enumerate() {
        let label = if several {
            format!("[[source]] #{} ({:?})", i + 1, s.name)
        } else {
            "[source]".to_string()
        };
        s.validate(&label)?;
    }
    let mut names = std::collections::HashMap::new();
    let mut paths = std::collections::HashMap::new();
    for (i, s) in sources.iter().enumerate() {
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
                sources[j].name,
                i + 1,
                s.name,
                s.path
            ));
        }
    }
    for (i, a) in sources.iter().enumerate() {
        for (j, b) in sources.iter().enumerate().skip(i + 1) {
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
    Ok(())
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
