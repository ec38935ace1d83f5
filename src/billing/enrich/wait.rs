//! The wait policy: what a batch of charges may cost ingest in time.
//!
//! The users and shared accounts a batch needs that the cache does not
//! answer are asked together, at most `concurrency` calls in flight, and
//! the batch waits for them at most `wait_ms`. After a failure (down, slow
//! past the bound, token refused) PaperCut is left alone for `retry_secs`:
//! meanwhile whatever the cache does not answer gets the failure's outcome
//! without a call.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use super::cache::Cache;
use super::{CallError, Client, EnrichError, Outcome, PapercutConfig, Subject, Token};
use crate::billing::BillingStats;
use crate::stats::Stats;

/// The enrichment step: client, cache, bound.
pub struct Enricher {
    cfg: PapercutConfig,
    client: Client,
    rt: tokio::runtime::Runtime,
    cache: Cache,
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
        Ok(Enricher {
            cache: Cache::open(cfg, state)?,
            cfg: cfg.clone(),
            client,
            rt,
            quiet_until: None,
            stats,
        })
    }

    pub fn config(&self) -> &PapercutConfig {
        &self.cfg
    }

    pub fn customer_property(&self) -> Option<&str> {
        self.cfg.customer_property.as_deref()
    }

    /// Whether shared accounts are asked about at all.
    pub fn asks_shared(&self) -> bool {
        !self.cfg.shared_account_properties.is_empty()
    }

    /// The outcome for each distinct subject of a batch, within the bound.
    pub fn lookup(
        &mut self,
        subjects: &[Subject],
    ) -> Result<HashMap<Subject, Outcome>, EnrichError> {
        let now_ms = crate::store::now_ms();
        let mut out = HashMap::new();
        let mut missing: Vec<Subject> = Vec::new();
        for s in subjects {
            if out.contains_key(s) || missing.contains(s) {
                continue;
            }
            if s.name().is_empty() {
                out.insert(s.clone(), Outcome::Unknown);
                continue;
            }
            match self.cache.get(s, now_ms)? {
                Some(o) => {
                    Stats::add(&self.stats.papercut_cache_hits, 1);
                    out.insert(s.clone(), o);
                }
                None => missing.push(s.clone()),
            }
        }
        if missing.is_empty() {
            return Ok(out);
        }
        if let Some((until, why)) = &self.quiet_until {
            if Instant::now() < *until {
                for s in missing {
                    out.insert(s, why.clone());
                }
                return Ok(out);
            }
        }
        self.quiet_until = None;
        let (answers, timed_out) = self.ask(&missing);
        let mut failed = timed_out.then_some(Outcome::Unavailable);
        for (s, props, r) in answers {
            let o = match r {
                Ok(values) => Outcome::Ok(props.iter().cloned().zip(values).collect()),
                Err(e) if e.is_unknown() => {
                    tracing::info!(
                        kind = s.kind(),
                        name = %s.name(),
                        "PaperCut knows no such {}: its charges go unenriched",
                        if s.kind() == "user" { "user" } else { "shared account" }
                    );
                    Outcome::Unknown
                }
                Err(e) => {
                    Stats::add(&self.stats.papercut_errors, 1);
                    let o = if e.is_auth() {
                        tracing::error!(url = %self.cfg.url, "PaperCut refused the token: {e}");
                        Outcome::Rejected
                    } else if matches!(e, CallError::Fault { .. }) {
                        tracing::warn!(kind = s.kind(), name = %s.name(), "PaperCut: {e}");
                        Outcome::Rejected
                    } else {
                        tracing::warn!(url = %self.cfg.url, "{e}");
                        Outcome::Unavailable
                    };
                    failed = Some(o.clone());
                    o
                }
            };
            self.cache.put(&s, &o, now_ms)?;
            out.insert(s, o);
        }
        if timed_out {
            Stats::add(&self.stats.papercut_errors, 1);
            tracing::warn!(
                url = %self.cfg.url,
                wait_ms = self.cfg.wait_ms,
                "PaperCut slower than wait_ms: charges go unenriched"
            );
        }
        for s in missing {
            out.entry(s).or_insert(Outcome::Unavailable);
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

    /// Ask PaperCut about `subjects`, at most `concurrency` calls at once,
    /// for at most `wait_ms`: the answers in by then (with the property
    /// list asked), and whether the bound cut the rest off.
    #[allow(clippy::type_complexity)]
    fn ask(
        &self,
        subjects: &[Subject],
    ) -> (
        Vec<(Subject, Vec<String>, Result<Vec<String>, CallError>)>,
        bool,
    ) {
        let client = self.client.clone();
        let user_props = self.cfg.user_properties.clone();
        let shared_props = self.cfg.shared_account_properties.clone();
        let wait = Duration::from_millis(self.cfg.wait_ms);
        let stats = self.stats.clone();
        let mut answers = Vec::new();
        let timed_out = self.rt.block_on(async {
            let mut calls = futures_util::stream::iter(subjects.iter().cloned().map(|s| {
                let client = client.clone();
                let props = match s {
                    Subject::User(_) => user_props.clone(),
                    Subject::Shared(_) => shared_props.clone(),
                };
                let stats = stats.clone();
                async move {
                    let t0 = Instant::now();
                    let r = match &s {
                        Subject::User(u) => client.user_properties(u, &props).await,
                        Subject::Shared(a) => client.shared_account_properties(a, &props).await,
                    };
                    Stats::add(&stats.papercut_calls, 1);
                    Stats::add(&stats.papercut_call_us, t0.elapsed().as_micros() as u64);
                    (s, props, r)
                }
            }))
            .buffer_unordered(self.cfg.concurrency);
            let collect = async {
                while let Some(a) = calls.next().await {
                    answers.push(a);
                }
            };
            tokio::time::timeout(wait, collect).await.is_err()
        });
        (answers, timed_out)
    }
}
