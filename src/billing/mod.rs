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
pub mod ledger;
pub mod mapping;
pub mod statements;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::store::{NewCharge, Store, StoreError};
pub use ledger::{Entry, Held, Ledger, LedgerError};
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
        let held = ledger.held_count()?;
        stats.held.store(held, Ordering::Relaxed);
        Ok(Billing {
            enricher: None,
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

    /// The billing step for a batch of charges about to be committed: records
    /// their ledger entries, completes their messages with `data.billing`,
    /// keeps back the ones to hold, and returns the rest for the outbox.
    pub fn prepare(
        &mut self,
        store: &Store,
        source: &str,
        charges: Vec<NewCharge>,
    ) -> Result<Vec<NewCharge>, BillingError> {
        let mut entries = Vec::with_capacity(charges.len());
        let mut held = Vec::new();
        let mut out = Vec::with_capacity(charges.len());
        let hold = self
            .cfg
            .as_ref()
            .is_some_and(|c| c.unmapped == Unmapped::Hold);
        // Enrichment first, for the batch's users at once (bounded wait).
        let outcomes = match self.enricher.as_mut() {
            Some(e) => {
                let users: Vec<String> = charges.iter().map(|c| user_of(&c.payload)).collect();
                Some(e.lookup(&users)?)
            }
            None => None,
        };
        let billed = self.configured();
        for mut c in charges {
            let mut event: Value =
                serde_json::from_slice(&c.payload).map_err(|e| BillingError::Message {
                    id: c.id.clone(),
                    reason: e.to_string(),
                })?;
            let mut entry = entry_of(&c, &event, source)?;
            if billed {
                let mut customer = self.lookup(&entry.account, &entry.account_type, &entry.user);
                let mut via = customer.as_ref().map(|_| "mapping");
                if let Some(outcome) = outcomes.as_ref().and_then(|o| o.get(&entry.user)) {
                    set_enrichment(&mut event, outcome);
                    if !matches!(outcome, enrich::Outcome::Ok(_)) {
                        crate::stats::Stats::add(&self.stats.papercut_unenriched, 1);
                    }
                    if customer.is_none() {
                        if let (enrich::Outcome::Ok(p), Some(key)) = (
                            outcome,
                            self.enricher.as_ref().and_then(|e| e.customer_property()),
                        ) {
                            if let Some(v) = p.get(key).filter(|v| !v.trim().is_empty()) {
                                customer = Some(Customer {
                                    customer_id: v.clone(),
                                    team_id: None,
                                });
                                via = Some("papercut");
                            }
                        }
                    }
                }
                if customer.is_none() && hold && store.known(&c.id)?.is_none() {
                    // Kept back, unbilled. Already queued/sent ids go on to
                    // the outbox, where they are ignored as duplicates.
                    held.push(Held {
                        charge: c,
                        user: entry.user.clone(),
                        created_ms: 0,
                    });
                    entries.push(entry);
                    continue;
                }
                if customer.is_none() {
                    crate::stats::Stats::add(&self.stats.unmapped_delivered, 1);
                }
                let info = BillingInfo { via, customer };
                entry.customer_id = info.customer.as_ref().map(|c| c.customer_id.clone());
                entry.team_id = info.customer.as_ref().and_then(|c| c.team_id.clone());
                set_billing(&mut event, &info);
                c.payload = serde_json::to_vec(&event).map_err(|e| BillingError::Message {
                    id: c.id.clone(),
                    reason: e.to_string(),
                })?;
            }
            entries.push(entry);
            out.push(c);
        }
        self.ledger.record(&entries, &held)?;
        if !held.is_empty() {
            let mut new = 0;
            for h in &held {
                if self.ledger.is_held(&h.charge.id)? {
                    new += 1;
                }
            }
            tracing::info!(
                count = new,
                "charges held: no mapping for their account (unmapped = \"hold\")"
            );
            self.stats
                .held
                .store(self.ledger.held_count()?, Ordering::Relaxed);
        }
        Ok(out)
    }

    /// Reload the mapping if its file changed (looked at once a second) or
    /// a SIGHUP asked; then release held charges a new mapping covers.
    /// Returns how many were released into the outbox.
    pub fn tick(&mut self, store: &mut Store) -> Result<u64, BillingError> {
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
                        crate::stats::Stats::add(&self.stats.mapping_reloads, 1);
                        self.mapping = Some(m);
                        self.generation += 1;
                    }
                    Err(e) => {
                        crate::stats::Stats::add(&self.stats.mapping_errors, 1);
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

    /// Queue every held charge whose account is now mapped.
    pub fn release(&mut self, store: &mut Store) -> Result<u64, BillingError> {
        let mut after = 0i64;
        let mut total = 0u64;
        loop {
            let batch = self.ledger.held(after, 1000)?;
            let Some((last, _)) = batch.last() else { break };
            after = *last;
            let mut ready = Vec::new();
            let mut done = Vec::new();
            for (_, h) in batch {
                let Some(customer) =
                    self.lookup(&h.charge.account, &h.charge.account_type, &h.user)
                else {
                    continue;
                };
                let mut c = h.charge;
                let mut event: Value =
                    serde_json::from_slice(&c.payload).map_err(|e| BillingError::Message {
                        id: c.id.clone(),
                        reason: e.to_string(),
                    })?;
                let info = BillingInfo {
                    customer: Some(customer.clone()),
                    via: Some("mapping"),
                };
                set_billing(&mut event, &info);
                c.payload = serde_json::to_vec(&event).map_err(|e| BillingError::Message {
                    id: c.id.clone(),
                    reason: e.to_string(),
                })?;
                done.push((c.id.clone(), Some(customer.customer_id), customer.team_id));
                ready.push(c);
            }
            if ready.is_empty() {
                continue;
            }
            // Outbox first: a crash before the held rows go leaves them to
            // be released again, and the outbox ignores the repeat.
            store.commit(None, &ready, &[])?;
            self.ledger.released(&done)?;
            total += ready.len() as u64;
        }
        if total > 0 {
            tracing::info!(
                count = total,
                "held charges released: their account is mapped now"
            );
            crate::stats::Stats::add(&self.stats.released, total);
        }
        self.stats
            .held
            .store(self.ledger.held_count()?, Ordering::Relaxed);
        Ok(total)
    }
}

/// The user named in a rendered message (`data.user`).
fn user_of(payload: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Ev {
        data: Data,
    }
    #[derive(Deserialize)]
    struct Data {
        #[serde(default)]
        user: String,
    }
    serde_json::from_slice::<Ev>(payload)
        .map(|e| e.data.user)
        .unwrap_or_default()
}

/// Put `data.enrichment` (and `data.papercut` when read) in the event.
fn set_enrichment(event: &mut Value, outcome: &enrich::Outcome) {
    if let Some(data) = event.get_mut("data").and_then(Value::as_object_mut) {
        data.insert("enrichment".into(), Value::String(outcome.label().into()));
        if let Some(p) = outcome.properties() {
            data.insert("papercut".into(), p);
        }
    }
}

/// Put `data.billing` in the event.
fn set_billing(event: &mut Value, info: &BillingInfo) {
    if let Some(data) = event.get_mut("data").and_then(Value::as_object_mut) {
        data.insert("billing".into(), info.to_value());
    }
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// The ledger entry of a charge, from its message.
fn entry_of(c: &NewCharge, event: &Value, source: &str) -> Result<Entry, BillingError> {
    let bad = |reason: &str| BillingError::Message {
        id: c.id.clone(),
        reason: reason.into(),
    };
    let data = event.get("data").ok_or_else(|| bad("no data"))?;
    let time = str_at(event, "time").ok_or_else(|| bad("no time"))?;
    // The time carries the source zone's offset for that instant, so its
    // date part is the local day, DST or not.
    let day = time.get(..10).ok_or_else(|| bad("time too short"))?;
    Ok(Entry {
        id: c.id.clone(),
        source: source.to_string(),
        time: time.to_string(),
        day: day.to_string(),
        user: str_at(data, "user").unwrap_or_default().to_string(),
        account: c.account.clone(),
        account_type: c.account_type.clone(),
        status: str_at(data, "status").unwrap_or("charged").to_string(),
        amount: c.amount.clone(),
        cost: str_at(data, "cost").map(str::to_string),
        currency: c.currency.clone(),
        customer_id: None,
        team_id: None,
        transaction_id: str_at(data, "transaction_id").map(str::to_string),
    })
}
