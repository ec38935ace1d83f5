//! Billing: who pays for a charge (`[billing] mapping_file`), charges held
//! until someone does (`unmapped = "hold"`), the ledger that `reconcile`
//! and the daily statements read.
//!
//! **Where billing is applied.** Between format and store: the message is
//! rendered, completed with `data.billing` here, and only then written to
//! the outbox. The outbox row's bytes are what every attempt sends, so a
//! redelivery carries the same bytes, and a later change of the mapping
//! never changes a charge already queued or sent. A held charge is not in
//! the outbox at all: it waits in `billing_held` with its message rendered
//! without billing; when a mapping for its account appears, the message is
//! completed then (the first and only time its bytes are fixed) and queued.
//!
//! The ledger (every charge's facts: time, local day, user, account,
//! status, amounts, customer) is written for every charge read, configured
//! or not, because delivered outbox rows drop their message.

pub mod enrich;
mod held;
pub mod ledger;
pub mod mapping;
mod message;
pub mod statements;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::stats::Stats;
use crate::store::{Committed, NewCharge, Store, StoreError};
use enrich::{ChargeEnrichment, Subject};
pub use ledger::{Entry, Held, HoldReason, Ledger, LedgerError};
pub use mapping::{Customer, Mapping, MappingError};

/// `[billing]` in the config.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingConfig {
    /// CSV `papercut,customer_id[,team_id]`; relative to the config file.
    #[serde(default)]
    pub mapping_file: Option<PathBuf>,
    #[serde(default)]
    pub unmapped: Unmapped,
    /// One `papercut.statement` per account after each local midnight.
    #[serde(default)]
    pub statements: bool,
    #[serde(default = "default_grace")]
    pub statement_grace_secs: u64,
}

fn default_grace() -> u64 {
    600
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unmapped {
    /// Deliver with `customer_id` null.
    #[default]
    Deliver,
    /// Keep the charge back until a mapping names its account.
    Hold,
}

impl BillingConfig {
    /// Resolve relative paths against the config's directory and check
    /// that the mapping loads (a config error at start).
    pub fn resolve(&mut self, base: &Path) -> Result<(), String> {
        if let Some(p) = &self.mapping_file {
            if p.is_relative() {
                self.mapping_file = Some(base.join(p));
            }
        }
        if self.unmapped == Unmapped::Hold && self.mapping_file.is_none() {
            return Err("[billing] unmapped = \"hold\" needs a mapping_file (nothing would ever be released)".into());
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Mapping(#[from] MappingError),
    #[error(transparent)]
    Enrich(#[from] enrich::EnrichError),
    #[error("charge {id}: its message is not the JSON chargetail renders: {reason}")]
    Message { id: String, reason: String },
}

/// Counters for status and metrics.
#[derive(Debug, Default)]
pub struct BillingStats {
    pub held: AtomicU64,
    pub released: AtomicU64,
    pub unmapped_delivered: AtomicU64,
    pub mapping_reloads: AtomicU64,
    pub mapping_errors: AtomicU64,
    pub mapping_entries: AtomicU64,
    /// `[papercut]`: answers taken from the cache, calls made, their total
    /// time (µs), failed calls and waits past the bound, 1 while PaperCut
    /// is being left alone after a failure.
    pub papercut_cache_hits: AtomicU64,
    pub papercut_calls: AtomicU64,
    pub papercut_call_us: AtomicU64,
    pub papercut_errors: AtomicU64,
    pub papercut_down: AtomicU64,
    /// Charges held because PaperCut could not be asked
    /// (`on_unavailable = "hold"`; also in `held`).
    pub held_papercut: AtomicU64,
    /// Charges delivered with `data.enrichment` other than "ok".
    pub papercut_unenriched: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime: Option<std::time::SystemTime>,
    ino: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: m.len(),
        mtime: m.modified().ok(),
        ino: m.ino(),
    })
}

/// The billing step of the pipeline, one per process that reads charges.
pub struct Billing {
    cfg: Option<BillingConfig>,
    mapping: Option<Mapping>,
    stamp: Option<Stamp>,
    last_look: Instant,
    /// Set by SIGHUP: reload the mapping at the next `tick`.
    reload: Arc<AtomicBool>,
    /// Bumps on every mapping (re)load; held charges are looked at again
    /// when it moves.
    generation: u64,
    released_generation: u64,
    pub ledger: Ledger,
    pub stats: Arc<BillingStats>,
    enricher: Option<enrich::Enricher>,
    /// When PaperCut was last asked about the charges held for it.
    papercut_asked: Option<Instant>,
}

/// A batch as billing leaves it, for the commit.
#[derive(Debug, Default)]
pub struct Prepared {
    /// For the outbox (messages completed).
    pub charges: Vec<NewCharge>,
    /// One entry per charge read, held ones too.
    pub ledger: Vec<Entry>,
    pub held: Vec<Held>,
}

/// What `data.billing` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillingInfo {
    pub customer: Option<Customer>,
    pub via: Option<&'static str>,
}

impl BillingInfo {
    fn to_value(&self) -> Value {
        let mut m = Map::new();
        m.insert(
            "customer_id".into(),
            self.customer
                .as_ref()
                .map(|c| Value::String(c.customer_id.clone()))
                .unwrap_or(Value::Null),
        );
        m.insert(
            "team_id".into(),
            self.customer
                .as_ref()
                .and_then(|c| c.team_id.clone())
                .map(Value::String)
                .unwrap_or(Value::Null),
        );
        m.insert(
            "via".into(),
            self.via
                .map(|v| Value::String(v.into()))
                .unwrap_or(Value::Null),
        );
        Value::Object(m)
    }
}

impl Billing {
    /// `state` is the state database, already opened (and migrated) by a
    /// `Store`. A mapping that does not load is an error here (at start);
    /// later reloads keep the old mapping instead.
    pub fn open(cfg: Option<&BillingConfig>, state: &Path) -> Result<Billing, BillingError> {
        let ledger = Ledger::open(state)?;
        let stats = Arc::new(BillingStats::default());
        let (mapping, st) = match cfg.and_then(|c| c.mapping_file.as_deref()) {
            Some(p) => {
                let st = stamp(p);
                let m = Mapping::load(p)?;
                stats
                    .mapping_entries
                    .store(m.len() as u64, Ordering::Relaxed);
                (Some(m), st)
            }
            None => (None, None),
        };
        let (unmapped, papercut) = ledger.held_by_reason()?;
        stats.held.store(unmapped + papercut, Ordering::Relaxed);
        stats.held_papercut.store(papercut, Ordering::Relaxed);
        Ok(Billing {
            enricher: None,
            papercut_asked: None,
            cfg: cfg.cloned(),
            mapping,
            stamp: st,
            last_look: Instant::now(),
            reload: Arc::new(AtomicBool::new(false)),
            generation: 1,
            released_generation: 0,
            ledger,
            stats,
        })
    }

    /// Turn on enrichment from PaperCut's Web Services API (`[papercut]`).
    pub fn with_papercut(
        mut self,
        cfg: Option<&enrich::PapercutConfig>,
        state: &Path,
    ) -> Result<Billing, BillingError> {
        if let Some(c) = cfg {
            self.enricher = Some(enrich::Enricher::open(c, state, self.stats.clone())?);
        }
        Ok(self)
    }

    /// Set it (from a SIGHUP handler) to reload the mapping file.
    pub fn reload_flag(&self) -> Arc<AtomicBool> {
        self.reload.clone()
    }

    pub fn configured(&self) -> bool {
        self.cfg.is_some() || self.enricher.is_some()
    }

    pub fn config(&self) -> Option<&BillingConfig> {
        self.cfg.as_ref()
    }

    fn lookup(&self, account: &str, account_type: &str, user: &str) -> Option<Customer> {
        let m = self.mapping.as_ref()?;
        // A shared account bills its owner; a personal one the user.
        // A personal account is named after its user; fall back to the
        // user if it is not.
        let name = if account_type == "shared" || m.get(account).is_some() {
            account
        } else {
            user
        };
        m.get(name).cloned()
    }

    /// What PaperCut is asked about for a charge: its user, and its
    /// account when that is shared (and shared accounts are asked about).
    fn subjects(&self, account: &str, account_type: &str, user: &str) -> Vec<Subject> {
        let mut v = vec![Subject::User(user.to_string())];
        if account_type == "shared" && self.enricher.as_ref().is_some_and(|e| e.asks_shared()) {
            v.push(Subject::Shared(account.to_string()));
        }
        v
    }

    /// The billing step for a batch of charges about to be committed: makes
    /// their ledger entries, completes their messages with `data.billing`,
    /// keeps back the ones to hold, and returns the rest for the outbox.
    /// The store writes all three in the batch's one commit
    /// (`Store::commit_rows`); then call [`Billing::committed`].
    pub fn prepare(
        &mut self,
        store: &Store,
        source: &str,
        charges: Vec<NewCharge>,
    ) -> Result<Prepared, BillingError> {
        let mut entries = Vec::with_capacity(charges.len());
        let mut held = Vec::new();
        let mut out = Vec::with_capacity(charges.len());
        let hold_unmapped = self
            .cfg
            .as_ref()
            .is_some_and(|c| c.unmapped == Unmapped::Hold);
        let hold_unavailable = self
            .enricher
            .as_ref()
            .is_some_and(|e| e.config().on_unavailable == enrich::OnUnavailable::Hold);
        // Enrichment first, for the batch's users and accounts at once
        // (bounded wait).
        let outcomes = match self.enricher.is_some() {
            true => {
                let mut subjects = Vec::new();
                for c in &charges {
                    let user = message::user_of(&c.payload);
                    subjects.extend(self.subjects(&c.account, &c.account_type, &user));
                }
                self.enricher
                    .as_mut()
                    .map(|e| e.lookup(&subjects))
                    .transpose()?
            }
            false => None,
        };
        let billed = self.configured();
        for mut c in charges {
            if !billed {
                // Without [billing] or [papercut] the message stays as
                // rendered: only its ledger entry is read from it.
                entries.push(message::entry_of_bytes(&c, source)?);
                out.push(c);
                continue;
            }
            let mut event = message::parse(&c)?;
            let mut entry = message::entry_of(&c, &event, source)?;
            let enrichment = outcomes.as_ref().and_then(|o| {
                Some(ChargeEnrichment {
                    user: o.get(&Subject::User(entry.user.clone()))?,
                    shared: self
                        .subjects(&entry.account, &entry.account_type, &entry.user)
                        .get(1)
                        .and_then(|s| o.get(s)),
                })
            });
            if let Some(e) = &enrichment {
                if hold_unavailable
                    && *e.worst() == enrich::Outcome::Unavailable
                    && store.known(&c.id)?.is_none()
                {
                    // Kept back as read; asked about again by `tick`.
                    held.push(Held {
                        charge: c,
                        user: entry.user.clone(),
                        created_ms: 0,
                        reason: HoldReason::Papercut,
                    });
                    entries.push(entry);
                    continue;
                }
                message::set_enrichment(&mut event, e);
            }
            let (customer, via) = self.customer(&entry, enrichment.as_ref());
            if customer.is_none() && hold_unmapped && store.known(&c.id)?.is_none() {
                // Kept back, unbilled (enriched, if it was). Already
                // queued/sent ids go on to the outbox, where they are
                // ignored as duplicates.
                message::store(&mut c, &event)?;
                held.push(Held {
                    charge: c,
                    user: entry.user.clone(),
                    created_ms: 0,
                    reason: HoldReason::Unmapped,
                });
                entries.push(entry);
                continue;
            }
            self.finish(
                &mut c,
                &mut event,
                &mut entry,
                enrichment.as_ref(),
                customer,
                via,
            )?;
            entries.push(entry);
            out.push(c);
        }
        Ok(Prepared {
            charges: out,
            ledger: entries,
            held,
        })
    }

    /// After the commit of a batch `prepare` made: log and count the
    /// charges newly held (`Committed::held`).
    pub fn committed(&self, done: &Committed) -> Result<(), BillingError> {
        let [unmapped, papercut] = done.held;
        if unmapped > 0 {
            tracing::info!(
                count = unmapped,
                "charges held: no mapping for their account (unmapped = \"hold\")"
            );
        }
        if papercut > 0 {
            tracing::info!(
                count = papercut,
                "charges held: PaperCut unavailable (on_unavailable = \"hold\")"
            );
        }
        if unmapped + papercut > 0 {
            self.count_held()?;
        }
        Ok(())
    }

    /// Who pays for a charge: the mapping, else `customer_property` from
    /// what PaperCut said.
    fn customer(
        &self,
        entry: &Entry,
        enrichment: Option<&ChargeEnrichment<'_>>,
    ) -> (Option<Customer>, Option<&'static str>) {
        if let Some(c) = self.lookup(&entry.account, &entry.account_type, &entry.user) {
            return (Some(c), Some("mapping"));
        }
        let key = self.enricher.as_ref().and_then(|e| e.customer_property());
        match (enrichment, key) {
            (Some(e), Some(key)) => match e.customer(key) {
                Some(id) => (
                    Some(Customer {
                        customer_id: id,
                        team_id: None,
                    }),
                    Some("papercut"),
                ),
                None => (None, None),
            },
            _ => (None, None),
        }
    }

    /// Complete a charge for the outbox: `data.billing` in its message and
    /// its ledger entry, counted when it goes unmapped or unenriched.
    fn finish(
        &self,
        c: &mut NewCharge,
        event: &mut Value,
        entry: &mut Entry,
        enrichment: Option<&ChargeEnrichment<'_>>,
        customer: Option<Customer>,
        via: Option<&'static str>,
    ) -> Result<(), BillingError> {
        if enrichment.is_some_and(|e| e.label() != "ok") {
            Stats::add(&self.stats.papercut_unenriched, 1);
        }
        if customer.is_none() {
            Stats::add(&self.stats.unmapped_delivered, 1);
        }
        let info = BillingInfo { via, customer };
        entry.customer_id = info.customer.as_ref().map(|c| c.customer_id.clone());
        entry.team_id = info.customer.as_ref().and_then(|c| c.team_id.clone());
        message::set_billing(event, &info);
        message::store(c, event)
    }

    fn count_held(&self) -> Result<(), BillingError> {
        let (unmapped, papercut) = self.ledger.held_by_reason()?;
        self.stats
            .held
            .store(unmapped + papercut, Ordering::Relaxed);
        self.stats.held_papercut.store(papercut, Ordering::Relaxed);
        Ok(())
    }

    /// Reload the mapping if its file changed (looked at once a second) or
    /// a SIGHUP asked, then release held charges a new mapping covers; ask
    /// PaperCut again about charges held for it. Returns how many were
    /// released into the outbox.
    pub fn tick(&mut self, store: &mut Store) -> Result<u64, BillingError> {
        let n = self.tick_mapping(store)?;
        Ok(n + self.retry_papercut(store)?)
    }

    /// When `tick` next has something to do (`None`: only on a SIGHUP): the
    /// source loop sleeps until then, not on a short tick.
    pub fn next_due(&self) -> Option<Instant> {
        let mapping = self
            .cfg
            .as_ref()
            .and_then(|c| c.mapping_file.as_ref())
            .map(|_| self.last_look + Duration::from_secs(1));
        let papercut = self.enricher.as_ref().and_then(|e| {
            let pc = e.config();
            (pc.on_unavailable == enrich::OnUnavailable::Hold
                && Stats::get(&self.stats.held_papercut) > 0)
                .then(|| match self.papercut_asked {
                    Some(t) => t + Duration::from_secs(pc.retry_secs),
                    None => Instant::now(),
                })
        });
        mapping.into_iter().chain(papercut).min()
    }

    fn tick_mapping(&mut self, store: &mut Store) -> Result<u64, BillingError> {
        let Some(cfg) = self.cfg.clone() else {
            return Ok(0);
        };
        let Some(path) = cfg.mapping_file.as_deref() else {
            return Ok(0);
        };
        let asked = self.reload.swap(false, Ordering::Relaxed);
        if asked || self.last_look.elapsed() >= Duration::from_secs(1) {
            self.last_look = Instant::now();
            let now = stamp(path);
            if asked || now != self.stamp {
                self.stamp = now;
                match Mapping::load(path) {
                    Ok(m) => {
                        tracing::info!(
                            file = %path.display(),
                            entries = m.len(),
                            "account mapping (re)loaded"
                        );
                        self.stats
                            .mapping_entries
                            .store(m.len() as u64, Ordering::Relaxed);
                        Stats::add(&self.stats.mapping_reloads, 1);
                        self.mapping = Some(m);
                        self.generation += 1;
                    }
                    Err(e) => {
                        Stats::add(&self.stats.mapping_errors, 1);
                        tracing::error!("{e}; the account mapping in force stays");
                    }
                }
            }
        }
        if cfg.unmapped != Unmapped::Hold || self.released_generation == self.generation {
            return Ok(0);
        }
        self.released_generation = self.generation;
        self.release(store)
    }
}
