//! Releasing held charges into the outbox: those held for want of a
//! mapping once a mapping names their account, and those held because
//! PaperCut could not be asked once it answers (or `hold_max_secs` has
//! passed: then they go on unenriched, saying so). The outbox commit comes
//! first: a crash before the held rows are forgotten leaves them to be
//! released again, and the outbox ignores the repeat (same id, same
//! bytes: a message is completed only here, at its one release).

use std::time::{Duration, Instant};

use super::enrich::{ChargeEnrichment, OnUnavailable, Outcome};
use super::{message, BillingError, BillingInfo, HoldReason, Unmapped};
use crate::stats::Stats;
use crate::store::Store;

/// Held rows looked at per transaction.
const CHUNK: usize = 1000;

impl super::Billing {
    /// Queue every charge held for want of a mapping whose account is
    /// now mapped.
    pub fn release(&mut self, store: &mut Store) -> Result<u64, BillingError> {
        let mut after = 0i64;
        let mut total = 0u64;
        loop {
            let batch = self.ledger.held(after, CHUNK, Some(HoldReason::Unmapped))?;
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
                let mut event = message::parse(&c)?;
                let info = BillingInfo {
                    customer: Some(customer.clone()),
                    via: Some("mapping"),
                };
                message::set_billing(&mut event, &info);
                message::store(&mut c, &event)?;
                done.push((c.id.clone(), Some(customer.customer_id), customer.team_id));
                ready.push(c);
            }
            if ready.is_empty() {
                continue;
            }
            store.commit(None, &ready, &[])?;
            self.ledger.released(&done)?;
            total += ready.len() as u64;
        }
        if total > 0 {
            tracing::info!(
                count = total,
                "held charges released: their account is mapped now"
            );
            Stats::add(&self.stats.released, total);
        }
        self.count_held()?;
        Ok(total)
    }

    /// Every `retry_secs`, ask PaperCut again about the charges held for
    /// it (`on_unavailable = "hold"`); release those it answers for, and
    /// those held `hold_max_secs` unenriched. One that then has no
    /// customer under `unmapped = "hold"` stays held, for a mapping.
    pub(super) fn retry_papercut(&mut self, store: &mut Store) -> Result<u64, BillingError> {
        let Some(e) = self.enricher.as_ref() else {
            return Ok(0);
        };
        let pc = e.config().clone();
        if pc.on_unavailable != OnUnavailable::Hold || Stats::get(&self.stats.held_papercut) == 0 {
            return Ok(0);
        }
        let every = Duration::from_secs(pc.retry_secs);
        if self.papercut_asked.is_some_and(|t| t.elapsed() < every) {
            return Ok(0);
        }
        let hold_unmapped = self
            .cfg
            .as_ref()
            .is_some_and(|c| c.unmapped == Unmapped::Hold);
        let max_ms = (pc.hold_max_secs as i64).saturating_mul(1000);
        let mut after = 0i64;
        let (mut total, mut expired, mut reheld) = (0u64, 0u64, 0u64);
        loop {
            let batch = self.ledger.held(after, CHUNK, Some(HoldReason::Papercut))?;
            let Some((last, _)) = batch.last() else { break };
            after = *last;
            let mut subjects = Vec::new();
            for (_, h) in &batch {
                subjects.extend(self.subjects(&h.charge.account, &h.charge.account_type, &h.user));
            }
            let outcomes = match self.enricher.as_mut() {
                Some(e) => e.lookup(&subjects)?,
                None => return Ok(total),
            };
            let now = crate::store::now_ms();
            let mut ready = Vec::new();
            let mut done = Vec::new();
            for (_, h) in batch {
                let subjects = self.subjects(&h.charge.account, &h.charge.account_type, &h.user);
                let unavailable = Outcome::Unavailable;
                let e = ChargeEnrichment {
                    user: outcomes.get(&subjects[0]).unwrap_or(&unavailable),
                    shared: subjects
                        .get(1)
                        .map(|s| outcomes.get(s).unwrap_or(&unavailable)),
                };
                let too_long = now.saturating_sub(h.created_ms) >= max_ms;
                if *e.worst() == Outcome::Unavailable && !too_long {
                    continue;
                }
                if *e.worst() == Outcome::Unavailable {
                    expired += 1;
                }
                let mut c = h.charge;
                let mut event = message::parse(&c)?;
                // Read for who pays only (its ledger row exists): the source
                // name is not needed.
                let mut entry = message::entry_of(&c, &event, "")?;
                message::set_enrichment(&mut event, &e);
                let (customer, via) = self.customer(&entry, Some(&e));
                if customer.is_none() && hold_unmapped {
                    message::store(&mut c, &event)?;
                    self.ledger
                        .rehold(&c.id, &c.payload, HoldReason::Unmapped)?;
                    reheld += 1;
                    continue;
                }
                self.finish(&mut c, &mut event, &mut entry, Some(&e), customer, via)?;
                done.push((c.id.clone(), entry.customer_id, entry.team_id));
                ready.push(c);
            }
            if ready.is_empty() {
                continue;
            }
            store.commit(None, &ready, &[])?;
            self.ledger.released(&done)?;
            total += ready.len() as u64;
        }
        // From the end: the quiet period a failure just started is over
        // by the next ask.
        self.papercut_asked = Some(Instant::now());
        if total > 0 || reheld > 0 {
            tracing::info!(
                released = total,
                unenriched = expired,
                now_unmapped = reheld,
                "charges held for PaperCut released (unenriched: held hold_max_secs)"
            );
            Stats::add(&self.stats.released, total);
        }
        self.count_held()?;
        Ok(total)
    }
}
