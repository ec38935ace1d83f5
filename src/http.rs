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
mod metrics;
pub mod page;
pub mod pool;
pub mod rate;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
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
use crate::stats::Stats;
use crate::store::{now_ms, Store, StoreError};
use metrics::render_metrics;
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
        stats.add_source("t").files.store(1, Ordering::Relaxed);
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
        assert!(text.contains("\nchargetail_state_readable 0\n"), "{text}");
        for series in [
            "\nchargetail_outbox_backlog ",
            "\nchargetail_outbox_oldest_pending_age_seconds ",
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
        assert!(text.contains("\nchargetail_outbox_backlog 0\n"), "{text}");
        assert!(problems(&s).major.is_empty());
    }
}
