//! `[http] listen`: `/healthz`, `/metrics` (Prometheus text) and `/status`
//! (JSON modelled on PaperCut's System Health Monitoring API).
//!
//! `GET /` is the operator's status page (see [`page`]). With `[http]
//! token_file`, all but `/healthz` need the bearer token (see [`auth`]).
//!
//! `/healthz` answers from the in-memory stats alone. The other handlers
//! query SQLite on a blocking thread, each request through a connection of
//! its own ([`pool`]), so a slow query stalls neither delivery nor another
//! request. A figure that cannot be read is absent (metrics) or null
//! (status), never a made-up 0.

pub mod auth;
mod billing;
pub mod page;
pub mod pool;
pub mod rate;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use rust_decimal::Decimal;
use serde_json::json;

use crate::config::Config;
use crate::shutdown::Shutdown;
use crate::stats::{SourceStats, Stats, LATENCY_BUCKETS};
use crate::store::{now_ms, Store, StoreError};
use pool::StorePool;

pub struct HttpState {
    pub stats: Arc<Stats>,
    pub store: StorePool,
    /// The last read of the state database by a handler failed (cleared by
    /// the next that succeeds): `/healthz` reports it without a query.
    pub store_unreadable: AtomicBool,
    pub cfg: Config,
    pub started_ms: i64,
    /// Charges delivered per minute (sampled from `stats.delivered`).
    pub rate: rate::DeliveryRate,
    /// `[http] token_file`'s token: needed by all but `/healthz`.
    pub token: Option<Vec<u8>>,
    /// The billing step's counters (held charges, PaperCut enrichment).
    pub billing: Option<Arc<crate::billing::BillingStats>>,
}

impl HttpState {
    pub fn new(stats: Arc<Stats>, store: Store, cfg: Config, token: Option<Vec<u8>>) -> HttpState {
        HttpState {
            stats,
            store: StorePool::new(store),
            store_unreadable: AtomicBool::new(false),
            cfg,
            started_ms: now_ms(),
            rate: rate::DeliveryRate::default(),
            token,
            billing: None,
        }
    }

    /// Export the billing step's counters too.
    pub fn with_billing(mut self, stats: Arc<crate::billing::BillingStats>) -> HttpState {
        self.billing = Some(stats);
        self
    }
}

impl HttpState {
    /// Run `f` on a connection of this request's own; `None` (logged, and
    /// remembered for `/healthz`) when the state database cannot be read.
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Store) -> Result<T, StoreError>) -> Option<T> {
        let r = self.store.get().and_then(|store| f(&store));
        self.store_unreadable.store(r.is_err(), Ordering::Relaxed);
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!("{e}");
                None
            }
        }
    }
}

/// Bind now (so a taken port fails the start with a clear error), serve
/// until shutdown.
pub async fn bind(listen: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("[http] listen = {listen:?}: cannot listen there"))
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<HttpState>,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let protected = Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    let app = Router::new()
        .route("/healthz", get(healthz))
        .merge(protected)
        .with_state(state.clone());
    // Feed the per-minute delivery chart: once at the end of each minute
    // (the page samples too when it is drawn), not every second while idle.
    let sampler = {
        let (state, mut shutdown) = (state.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                let end = (now_ms().div_euclid(60_000) + 1) * 60_000;
                let wait =
                    std::time::Duration::from_millis((end - now_ms()).clamp(1, 60_000) as u64);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {
                        // Counted in the minute that just ended.
                        state.rate.sample(Stats::get(&state.stats.delivered), end - 1)
                    }
                    _ = shutdown.wait() => break,
                }
            }
        })
    };
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
        .context("HTTP server");
    sampler.abort();
    served
}

/// What is wrong, if anything: each entry a short reason.
pub struct Problems {
    pub major: Vec<String>,
    pub minor: Vec<String>,
}

/// From memory only (no query): `/healthz` must answer even while the
/// state database is slow or locked.
pub(crate) fn problems(s: &HttpState) -> Problems {
    let mut p = Problems {
        major: Vec::new(),
        minor: Vec::new(),
    };
    let stats = &s.stats;
    if s.store_unreadable.load(Ordering::Relaxed) || Stats::get(&stats.store_failed) > 0 {
        p.major.push("state database not usable".into());
    }
    let per_source = stats.source_stats();
    if per_source.is_empty() && Stats::get(&stats.source_files) == 0 {
        let paths: Vec<&str> = s.cfg.sources.iter().map(|s| s.path.as_str()).collect();
        p.major.push(format!(
            "source missing: no readable file matches {}",
            paths.join(" or ")
        ));
    }
    // Per source: one site's files gone is an outage of that site even
    // while the others read on.
    for (own, src) in per_source.iter().zip(&s.cfg.sources) {
        if Stats::get(&own.files) == 0 {
            let what = if s.cfg.sources.len() > 1 {
                format!("source {:?} missing", own.name)
            } else {
                "source missing".to_string()
            };
            p.major
                .push(format!("{what}: no readable file matches {}", src.path));
        }
    }
    if Stats::get(&stats.source_unreadable) > 0 {
        p.minor.push(format!(
            "{} source file(s) unreadable",
            Stats::get(&stats.source_unreadable)
        ));
    }
    let sink = stats.sink_health();
    if let Some(alert) = sink.alert {
        p.major.push(format!("sink: {alert}"));
    }
    let last = stats
        .last_delivery_ms
        .load(std::sync::atomic::Ordering::Relaxed);
    // The source loop's figure (from its commits and the deliverer's).
    let backlog = Stats::get(&stats.backlog);
    // Down means: there is work, the sink is not connected, and nothing has
    // gone out for a minute.
    if backlog > 0 && !sink.connected && now_ms() - last.max(s.started_ms) > 60_000 {
        p.major
            .push(format!("sink down: {backlog} charges waiting"));
    }
    if Stats::get(&stats.reading_paused) > 0 {
        let paused: Vec<String> = per_source
            .iter()
            .zip(&s.cfg.sources)
            .filter(|(own, _)| Stats::get(&own.reading_paused) > 0)
            .map(|(own, src)| format!("{} at {}", own.name, src.backlog_limit))
            .collect();
        p.minor.push(if s.cfg.sources.len() > 1 {
            format!(
                "outbox backlog over the bound of {}: reading paused",
                paused.join(", ")
            )
        } else {
            format!(
                "outbox backlog over its bound ({}): reading paused",
                s.cfg.sources[0].backlog_limit
            )
        });
    }
    if let Some(b) = &s.billing {
        billing::problems(b, &mut p);
    }
    p
}

async fn blocking<T: Send + 'static>(
    state: Arc<HttpState>,
    f: impl FnOnce(&HttpState) -> T + Send + 'static,
) -> Result<T, StatusCode> {
    tokio::task::spawn_blocking(move || f(&state))
        .await
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)
}

/// Answered on the runtime from memory: no blocking thread, no store.
async fn healthz(State(state): State<Arc<HttpState>>) -> Response {
    let p = problems(&state);
    if p.major.is_empty() && p.minor.is_empty() {
        return (StatusCode::OK, axum::Json(json!({"status": "ok"}))).into_response();
    }
    let reasons: Vec<String> = p.major.into_iter().chain(p.minor).collect();
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({"status": "unhealthy", "reasons": reasons})),
    )
        .into_response()
}

fn esc(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn render_metrics(s: &HttpState) -> String {
    let st = &s.stats;
    let mut out = String::new();
    // Every series carries the source it belongs to.
    let src = format!("source=\"{}\"", esc(&s.cfg.sink_source_name()));
    // Counters are per source (each its own label; a delivered charge counts
    // for the source its message names); what the one outbox and the one
    // sink hold carries the names of all.
    let per_source = st.source_stats();
    // Each source's label; without registered sources (tests), the joined one.
    let labels: Vec<String> = if per_source.is_empty() {
        vec![src.clone()]
    } else {
        per_source
            .iter()
            .map(|p| format!("source=\"{}\"", esc(&p.name)))
            .collect()
    };
    let reading = |out: &mut String,
                   kind: &str,
                   name: &str,
                   help: &str,
                   total: &AtomicU64,
                   own: fn(&SourceStats) -> &AtomicU64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        if per_source.is_empty() {
            let _ = writeln!(out, "{name}{{{src}}} {}", Stats::get(total));
        }
        for p in &per_source {
            let _ = writeln!(
                out,
                "{name}{{source=\"{}\"}} {}",
                esc(&p.name),
                Stats::get(own(p))
            );
        }
    };
    reading(
        &mut out,
        "counter",
        "chargetail_lines_read_total",
        "Lines read from source files.",
        &st.lines_read,
        |p| &p.lines_read,
    );
    reading(
        &mut out,
        "counter",
        "chargetail_charges_read_total",
        "New charges put in the outbox.",
        &st.charges_read,
        |p| &p.charges_read,
    );
    reading(
        &mut out,
        "counter",
        "chargetail_duplicates_ignored_total",
        "Charges read again whose id was already known.",
        &st.duplicates_ignored,
        |p| &p.duplicates_ignored,
    );
    reading(
        &mut out,
        "counter",
        "chargetail_parse_errors_total",
        "Lines that could not be parsed.",
        &st.bad_lines,
        |p| &p.bad_lines,
    );
    reading(
        &mut out,
        "counter",
        "chargetail_truncations_total",
        "Source files truncated.",
        &st.truncations,
        |p| &p.truncations,
    );
    reading(
        &mut out,
        "counter",
        "chargetail_rotations_total",
        "Source files rotated.",
        &st.rotations,
        |p| &p.rotations,
    );
    reading(
        &mut out,
        "gauge",
        "chargetail_reading_paused",
        "1 while reading is paused by backpressure.",
        &st.reading_paused,
        |p| &p.reading_paused,
    );
    let mut counter = |name: &str, help: &str, v: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{{src}}} {v}"
        );
    };
    counter(
        "chargetail_source_wakeups_total",
        "Wake-ups of the source loop (inotify events, polls, other deadlines).",
        Stats::get(&st.source_wakeups),
    );
    counter(
        "chargetail_deliver_store_reads_total",
        "Times delivery read pending charges back from the outbox (start, retries, overflow, another process's change); new charges reach it in memory.",
        Stats::get(&st.deliver_store_reads),
    );
    reading(
        &mut out,
        "counter",
        "chargetail_delivered_total",
        "Charges delivered.",
        &st.delivered,
        |p| &p.delivered,
    );
    reading(
        &mut out,
        "counter",
        "chargetail_redelivered_total",
        "Charges delivered after a failed attempt.",
        &st.redelivered,
        |p| &p.redelivered,
    );
    reading(
        &mut out,
        "counter",
        "chargetail_delivery_failures_total",
        "Failed delivery attempts.",
        &st.retried,
        |p| &p.retried,
    );
    let _ = writeln!(
        out,
        "# HELP chargetail_dead_lettered_total Dead letters by reason.\n# TYPE chargetail_dead_lettered_total counter"
    );
    // (dead, rejected, unparsable) per label, in the order of `labels`.
    let dead: Vec<(u64, u64, u64)> = if per_source.is_empty() {
        vec![(&st.dead_lettered, &st.dead_rejected, &st.bad_lines)]
    } else {
        per_source
            .iter()
            .map(|p| (&p.dead_lettered, &p.dead_rejected, &p.bad_lines))
            .collect()
    }
    .into_iter()
    .map(|(d, r, u)| (Stats::get(d), Stats::get(r), Stats::get(u)))
    .collect();
    for (l, (dead, rejected, unparsable)) in labels.iter().zip(dead) {
        let _ = writeln!(
            out,
            "chargetail_dead_lettered_total{{{l},reason=\"rejected\"}} {rejected}\n\
             chargetail_dead_lettered_total{{{l},reason=\"retries_exhausted\"}} {}\n\
             chargetail_dead_lettered_total{{{l},reason=\"unparsable\"}} {unparsable}",
            dead.saturating_sub(rejected),
        );
    }
    // What the state database holds; on a read error these series are left
    // out (an absent series, not a 0) and chargetail_state_readable says so.
    let read = s.read(|store| Ok((store.totals()?, store.checkpoints()?)));
    let mut gauge = |name: &str, help: &str, v: Option<String>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        if let Some(v) = v {
            let _ = writeln!(out, "{name}{{{src}}} {v}");
        }
    };
    gauge(
        "chargetail_state_readable",
        "1 when this scrape could read the state database (else its series are absent).",
        Some(u8::from(read.is_some()).to_string()),
    );
    gauge(
        "chargetail_outbox_backlog",
        "Charges waiting for delivery.",
        read.as_ref().map(|(t, _)| t.pending.to_string()),
    );
    gauge(
        "chargetail_outbox_oldest_pending_age_seconds",
        "Age of the oldest pending charge (0 when none is pending).",
        read.as_ref().map(|(t, _)| {
            t.oldest_pending_ms
                .map(|t| ((now_ms() - t).max(0) as f64 / 1000.0).to_string())
                .unwrap_or_else(|| "0".into())
        }),
    );
    // The one sink's health, repeated for every source it delivers for (so
    // a per-source panel finds it; aggregate with max, not sum).
    let sink = st.sink_health();
    let mut each = |name: &str, help: &str, v: &dyn Fn(usize) -> String| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (i, l) in labels.iter().enumerate() {
            let _ = writeln!(out, "{name}{{{l}}} {}", v(i));
        }
    };
    each(
        "chargetail_sink_connected",
        "1 when the sink is connected (one sink: the same for every source).",
        &|_| u8::from(sink.connected).to_string(),
    );
    each(
        "chargetail_sink_alert",
        "1 when the sink needs an operator (unroutable, endpoint gone; the same for every source).",
        &|_| u8::from(sink.alert.is_some()).to_string(),
    );
    each(
        "chargetail_last_delivery_timestamp_seconds",
        "Unix time of the source's last delivery.",
        &|i| {
            let ms = per_source
                .get(i)
                .map_or(&st.last_delivery_ms, |p| &p.last_delivery_ms);
            (ms.load(Ordering::Relaxed) / 1000).to_string()
        },
    );
    let _ = writeln!(
        out,
        "# HELP chargetail_file_position_bytes Committed read position per followed file.\n# TYPE chargetail_file_position_bytes gauge"
    );
    let live: Vec<_> = read
        .map(|(_, files)| files)
        .unwrap_or_default()
        .into_iter()
        .filter(|c| !c.finished)
        .collect();
    // A file's series carry its own source (the others, all of them).
    let file_src =
        |c: &crate::source::Checkpoint| match (c.source.as_str(), s.cfg.sources.as_slice()) {
            ("", [one]) => format!("source=\"{}\"", esc(&one.name)),
            (name, _) => format!("source=\"{}\"", esc(name)),
        };
    for c in &live {
        let _ = writeln!(
            out,
            "chargetail_file_position_bytes{{{},file=\"{}\"}} {}",
            file_src(c),
            esc(&c.path.to_string_lossy()),
            c.offset
        );
    }
    let _ = writeln!(
        out,
        "# HELP chargetail_file_lag_bytes Bytes in the file past the committed position.\n# TYPE chargetail_file_lag_bytes gauge"
    );
    for c in &live {
        // A file we cannot stat has no known lag: no series for it.
        let Ok(size) = std::fs::metadata(&c.path).map(|m| m.len()) else {
            continue;
        };
        let _ = writeln!(
            out,
            "chargetail_file_lag_bytes{{{},file=\"{}\"}} {}",
            file_src(c),
            esc(&c.path.to_string_lossy()),
            size.saturating_sub(c.offset)
        );
    }
    let _ = writeln!(
        out,
        "# HELP chargetail_delivery_latency_seconds From line read to delivered.\n# TYPE chargetail_delivery_latency_seconds histogram"
    );
    for (i, l) in labels.iter().enumerate() {
        let h = per_source.get(i).map_or(&st.latency, |p| &p.latency);
        let (buckets, count, sum) = h.snapshot();
        for (le, n) in LATENCY_BUCKETS.iter().zip(buckets) {
            let _ = writeln!(
                out,
                "chargetail_delivery_latency_seconds_bucket{{{l},le=\"{le}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "chargetail_delivery_latency_seconds_bucket{{{l},le=\"+Inf\"}} {count}\nchargetail_delivery_latency_seconds_sum{{{l}}} {sum}\nchargetail_delivery_latency_seconds_count{{{l}}} {count}"
        );
    }
    if let Some(b) = &s.billing {
        billing::render(&mut out, &src, b, s.cfg.papercut.is_some());
    }
    out
}

async fn metrics(State(state): State<Arc<HttpState>>) -> Response {
    match blocking(state, render_metrics).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(code) => code.into_response(),
    }
}

/// Local midnight today, in the source's time zone, as Unix ms.
fn start_of_today_ms(tz: chrono_tz::Tz) -> i64 {
    use chrono::{TimeZone, Utc};
    let now = Utc::now().with_timezone(&tz);
    let midnight = now.date_naive().and_hms_opt(0, 0, 0).unwrap_or_default();
    tz.from_local_datetime(&midnight)
        .earliest()
        .map(|t| t.timestamp_millis())
        .unwrap_or_else(|| now.timestamp_millis() - 86_400_000)
}

fn job_stats(store: &Store, since_ms: i64) -> Result<serde_json::Value, StoreError> {
    let mut per: BTreeMap<String, (u64, BTreeMap<String, Decimal>)> = BTreeMap::new();
    for job in ["print", "copy", "scan", "fax", "other"] {
        per.insert(job.into(), (0, BTreeMap::new()));
    }
    store.created_since(since_ms, |job, amount, currency| {
        let e = per.entry(job.to_string()).or_default();
        e.0 += 1;
        if let Some(a) = amount.and_then(|a| a.parse::<Decimal>().ok()) {
            crate::charge::add_saturating(e.1.entry(currency.to_string()).or_default(), a);
        }
    })?;
    Ok(json!(per
        .into_iter()
        .map(|(job, (count, amounts))| {
            let amounts: BTreeMap<String, String> = amounts
                .into_iter()
                .map(|(c, a)| (c, a.to_string()))
                .collect();
            (job, json!({"count": count, "amount": amounts}))
        })
        .collect::<serde_json::Map<_, _>>()))
}

/// PaperCut's System Health Monitoring vocabulary.
pub(crate) fn service_status(p: &Problems) -> &'static str {
    if p.major
        .iter()
        .any(|m| m.starts_with("state") || m.starts_with("source missing"))
    {
        "major_outage"
    } else if !p.major.is_empty() {
        "partial_outage"
    } else if !p.minor.is_empty() {
        "degraded"
    } else {
        "operational"
    }
}

fn render_status(s: &HttpState) -> serde_json::Value {
    // Read first: a failed read shows as a problem of this very answer.
    let read = s.read(|store| {
        Ok((
            job_stats(store, start_of_today_ms(s.cfg.timezone()))?,
            job_stats(store, s.started_ms)?,
            store.totals()?,
            store.checkpoints()?,
        ))
    });
    let p = problems(s);
    let service_status = service_status(&p);
    let problems: Vec<_> = p
        .major
        .iter()
        .map(|m| json!({"severity": "major", "description": m}))
        .chain(
            p.minor
                .iter()
                .map(|m| json!({"severity": "minor", "description": m})),
        )
        .collect();
    // null where the state database could not be read, never zeros.
    let (today, since_start, totals, checkpoints) = match read {
        Some((a, b, t, c)) => (a, b, Some(t), Some(c)),
        None => (serde_json::Value::Null, serde_json::Value::Null, None, None),
    };
    let known = checkpoints.is_some();
    let counters = s.stats.source_stats();
    let sources: Vec<_> = page::source_views(s, checkpoints.as_deref().unwrap_or_default())
        .into_iter()
        .map(|v| {
            let files: Vec<_> = v
                .files
                .iter()
                .map(|f| {
                    json!({"path": f.path, "offset": f.position, "size": f.size, "lag_bytes": f.lag()})
                })
                .collect();
            json!({
                "name": v.name, "path": v.path, "profile": v.profile,
                // Positions unreadable: unknown (null), not "no lag".
                "lag_bytes": known.then(|| v.files.iter().map(|f| f.lag()).sum::<u64>()),
                "files": known.then_some(files),
                // Since this daemon started, as in /metrics.
                "counts": counters.iter().find(|c| c.name == v.name).map(|c| json!({
                    "charges_read": Stats::get(&c.charges_read),
                    "delivered": Stats::get(&c.delivered),
                    "delivery_failures": Stats::get(&c.retried),
                    "dead_lettered": Stats::get(&c.dead_lettered) + Stats::get(&c.bad_lines),
                })),
            })
        })
        .collect();
    json!({
        "service_status": service_status,
        "active_problems": problems,
        "source": s.cfg.sink_source_name(),
        "sources": sources,
        "started_at_ms": s.started_ms,
        "outbox": totals,
        "job_stats": { "today": today, "since_start": since_start },
        "billing": s.billing.as_deref().map(|b| billing::status(b, s.cfg.papercut.is_some())),
    })
}

async fn status(State(state): State<Arc<HttpState>>) -> Response {
    match blocking(state, render_status).await {
        Ok(v) => axum::Json(v).into_response(),
        Err(code) => code.into_response(),
    }
}

async fn page(State(state): State<Arc<HttpState>>) -> Response {
    match blocking(state, |s| page::render(&page::gather(s))).await {
        Ok(html) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (
                    header::CONTENT_SECURITY_POLICY,
                    page::CONTENT_SECURITY_POLICY,
                ),
                (header::CACHE_CONTROL, "no-store"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            html,
        )
            .into_response(),
        Err(code) => code.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state whose database is real and then loses its outbox table (as
    /// a damaged or foreign file would): every figure read from it fails.
    fn broken_state(dir: &std::path::Path) -> HttpState {
        let db = dir.join("state.db");
        let cfg_path = dir.join("config.toml");
        std::fs::write(
            &cfg_path,
            format!(
                "[source]\nname = \"t\"\npath = \"{}/*.log\"\ntimezone = \"UTC\"\n[state]\npath = \"{}\"\n",
                dir.display(),
                db.display()
            ),
        )
        .unwrap();
        let cfg = Config::load(&cfg_path).unwrap();
        let store = Store::open(&db).unwrap();
        let stats = Arc::new(Stats::default());
        // The source loop's figure: the metrics must not fall back to it.
        stats.backlog.store(0, Ordering::Relaxed);
        stats.source_files.store(1, Ordering::Relaxed);
        let state = HttpState::new(stats, store, cfg, None);
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute_batch("DROP TABLE outbox")
            .unwrap();
        state
    }

    #[test]
    fn unreadable_figures_are_absent_or_null_never_zero() {
        let dir = tempfile::tempdir().unwrap();
        let s = broken_state(dir.path());
        assert!(problems(&s).major.is_empty(), "nothing read yet");
        let text = render_metrics(&s);
        assert!(
            text.contains("chargetail_state_readable{source=\"t\"} 0"),
            "{text}"
        );
        for series in [
            "chargetail_outbox_backlog{",
            "chargetail_outbox_oldest_pending_age_seconds{",
        ] {
            assert!(!text.contains(series), "{series} present:\n{text}");
        }
        // In-memory counters are still there.
        assert!(text.contains("chargetail_delivered_total{source=\"t\"} 0"));
        // /healthz (memory only) now knows, as does /status.
        assert_eq!(problems(&s).major, vec!["state database not usable"]);
        let v = render_status(&s);
        assert_eq!(v["service_status"], "major_outage", "{v}");
        assert!(v["outbox"].is_null(), "{v}");
        assert!(v["job_stats"]["today"].is_null(), "{v}");
        assert!(v["sources"][0]["lag_bytes"].is_null(), "{v}");
    }

    #[test]
    fn a_good_read_clears_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let s = broken_state(dir.path());
        let _ = render_metrics(&s);
        assert!(s.store_unreadable.load(Ordering::Relaxed));
        // Repaired behind the daemon's back (all connections see it).
        drop(
            rusqlite::Connection::open(dir.path().join("state.db"))
                .unwrap()
                .execute_batch(
                    "CREATE TABLE outbox (seq INTEGER PRIMARY KEY, id TEXT, state TEXT, payload BLOB,
                     job_type TEXT, account_type TEXT, account TEXT, amount TEXT, currency TEXT,
                     file TEXT, offset INTEGER, line INTEGER, attempts INTEGER, next_ms INTEGER,
                     first_fail_ms INTEGER, last_error TEXT, created_ms INTEGER, delivered_ms INTEGER,
                     run INTEGER, wait_ms INTEGER)",
                ),
        );
        let text = render_metrics(&s);
        assert!(
            text.contains("chargetail_outbox_backlog{source=\"t\"} 0"),
            "{text}"
        );
        assert!(problems(&s).major.is_empty());
    }
}
