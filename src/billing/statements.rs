//! Daily statements (`[billing] statements = true`): after each local
//! midnight plus `statement_grace_secs`, one `papercut.statement` CloudEvent
//! per account that had charges that day, queued in the same outbox as the
//! charges (so it goes through the same sink with the same guarantees).
//!
//! - `id` = `stm_` + the first 16 bytes (hex) of
//!   SHA-256(`"chargetail/statement/v1\0" source "\0" account "\0" day`):
//!   the same statement queued again has the same id.
//! - `data.charge_ids_digest` = `"sha256:"` + hex SHA-256 of the day's charge
//!   ids sorted ascending (byte order), each followed by `"\n"`. A consumer
//!   recomputes it over the ids it received for that account and day.
//! - The day is the local date in the source's zone: `data.from` and
//!   `data.to` are its local midnights, 23 or 25 hours apart on DST days.
//! - It counts every charge read for that account and day (refunded,
//!   cancelled and denied ones too, at their billed amount, usually 0)
//!   until the statement is queued; a charge read later (a late replay) is
//!   not in it.

use chrono::{Duration as ChronoDuration, NaiveDate, SecondsFormat, TimeZone};
use chrono_tz::Tz;
use rust_decimal::Decimal;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{BillingError, Ledger};
use crate::store::{NewCharge, Store};

pub fn statement_id(source: &str, account: &str, day: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"chargetail/statement/v1\0");
    h.update(source.as_bytes());
    h.update(b"\0");
    h.update(account.as_bytes());
    h.update(b"\0");
    h.update(day.as_bytes());
    format!("stm_{}", hex::encode(&h.finalize()[..16]))
}

/// The digest of a set of charge ids (see the module docs).
pub fn ids_digest<S: AsRef<str>>(ids: &[S]) -> String {
    let mut v: Vec<&str> = ids.iter().map(AsRef::as_ref).collect();
    v.sort_unstable();
    let mut h = Sha256::new();
    for id in v {
        h.update(id.as_bytes());
        h.update(b"\n");
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// The first instant of a local day (midnight, or the first valid time
/// after it where a DST jump skips midnight).
pub fn day_start(tz: Tz, day: NaiveDate) -> chrono::DateTime<Tz> {
    let mut t = day.and_hms_opt(0, 0, 0).unwrap_or_default();
    for _ in 0..180 {
        if let Some(dt) = tz.from_local_datetime(&t).earliest() {
            return dt;
        }
        t += ChronoDuration::minutes(1);
    }
    tz.from_utc_datetime(&t)
}

/// Where the last look at due statements left off: days from
/// `pending_from` on were not due yet, and charges recorded since
/// `checked_ms` may be for any day.
#[derive(Debug, Default, Clone)]
pub struct Cursor {
    checked_ms: i64,
    pending_from: Option<String>,
    first_done: bool,
}

/// Queue the statements due at `now` for `source` (zone `tz`). Returns how
/// many were queued.
pub fn queue_due(
    ledger: &Ledger,
    cursor: &mut Cursor,
    store: &mut Store,
    source: &str,
    tz: Tz,
    grace_secs: u64,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<u64, BillingError> {
    // The latest day whose end (+ grace) has passed.
    let local_now = (now - ChronoDuration::seconds(grace_secs as i64)).with_timezone(&tz);
    let today = local_now.date_naive();
    let today_s = today.format("%Y-%m-%d").to_string();
    let conn = ledger.conn();
    let state_path = store.path().to_path_buf();
    let lerr = |e| {
        BillingError::Ledger(super::LedgerError {
            path: state_path.clone(),
            source: e,
        })
    };
    // Only the days that can have something new: those not due at the
    // last look, and the days of charges recorded since.
    let started = crate::store::now_ms();
    let recent: Option<String> = conn
        .prepare_cached(
            "SELECT min(day) FROM billing_ledger WHERE source = ?1 AND created_ms >= ?2",
        )
        .and_then(|mut st| st.query_row(rusqlite::params![source, cursor.checked_ms], |r| r.get(0)))
        .map_err(lerr)?;
    let since_day: Option<String> = if !cursor.first_done {
        None
    } else {
        match (recent, cursor.pending_from.clone()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    };
    let pairs: Vec<(String, String, String)> = {
        let mut st = conn
            .prepare(
                "SELECT account, day, min(account_type) FROM billing_ledger l WHERE source = ?1 AND day < ?2 AND (?3 IS NULL OR day >= ?3)
                 AND NOT EXISTS (SELECT 1 FROM billing_statements s
                                 WHERE s.source = l.source AND s.account = l.account AND s.day = l.day)
                 GROUP BY account, day ORDER BY day, account",
            )
            .map_err(lerr)?;
        let rows = st
            .query_map(rusqlite::params![source, today_s, since_day], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(lerr)?;
        rows
    };
    let mut queued = 0;
    for (account, day, account_type) in pairs {
        let Ok(date) = NaiveDate::parse_from_str(&day, "%Y-%m-%d") else {
            continue;
        };
        let mut ids = Vec::new();
        let mut totals: std::collections::BTreeMap<String, Decimal> = Default::default();
        let mut customers = std::collections::BTreeSet::new();
        {
            let mut st = conn
                .prepare_cached(
                    "SELECT id, amount, currency, customer_id FROM billing_ledger
                     WHERE source = ?1 AND account = ?2 AND day = ?3",
                )
                .map_err(lerr)?;
            let mut rows = st
                .query(rusqlite::params![source, account, day])
                .map_err(lerr)?;
            while let Some(r) = rows.next().map_err(lerr)? {
                ids.push(r.get::<_, String>(0).map_err(lerr)?);
                let amount: Option<String> = r.get(1).map_err(lerr)?;
                let currency: String = r.get(2).map_err(lerr)?;
                let t = totals.entry(currency).or_default();
                if let Some(a) = amount.and_then(|a| a.parse::<Decimal>().ok()) {
                    *t = t.saturating_add(a);
                }
                if let Some(c) = r.get::<_, Option<String>>(3).map_err(lerr)? {
                    customers.insert(c);
                }
            }
        }
        let id = statement_id(source, &account, &day);
        let from = day_start(tz, date);
        let to = day_start(tz, date.succ_opt().unwrap_or(date));
        let totals_json: Vec<_> = totals
            .iter()
            .map(|(cur, a)| json!({"currency": cur, "amount": a.round_dp(2).to_string()}))
            .collect();
        let event = json!({
            "specversion": "1.0",
            "id": id,
            "source": format!("papercut/{source}"),
            "type": "papercut.statement",
            "subject": account,
            "time": to.to_rfc3339_opts(SecondsFormat::Secs, true),
            "datacontenttype": "application/json",
            "data": {
                "account": account,
                "account_type": account_type,
                "day": day,
                "timezone": tz.name(),
                "from": from.to_rfc3339_opts(SecondsFormat::Secs, true),
                "to": to.to_rfc3339_opts(SecondsFormat::Secs, true),
                "count": ids.len(),
                "totals": totals_json,
                "customer_ids": customers.into_iter().collect::<Vec<_>>(),
                "charge_ids_digest": ids_digest(&ids),
            }
        });
        let currency = totals.keys().next().cloned().unwrap_or_default();
        let nc = NewCharge {
            id: id.clone(),
            payload: serde_json::to_vec(&event).unwrap_or_default(),
            job_type: "statement".into(),
            account_type: account_type.clone(),
            account: account.clone(),
            amount: None,
            currency,
            file: String::new(),
            offset: 0,
            line: 0,
            run: 0,
        };
        // Outbox first, then the mark: a crash between queues it again
        // under the same id, which the outbox ignores.
        store.commit(None, &[nc], &[])?;
        ledger
            .mark_statement(source, &account, &day, &id)
            .map_err(BillingError::Ledger)?;
        queued += 1;
    }
    if queued > 0 {
        tracing::info!(source, count = queued, "daily statements queued");
    }
    cursor.checked_ms = started;
    cursor.pending_from = Some(today_s);
    cursor.first_done = true;
    Ok(queued)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dst_days_are_23_and_25_hours() {
        let tz: Tz = "Australia/Melbourne".parse().unwrap();
        let span = |d: &str| {
            let d = NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap();
            (day_start(tz, d.succ_opt().unwrap()) - day_start(tz, d)).num_hours()
        };
        assert_eq!(span("2026-10-04"), 23);
        assert_eq!(span("2026-04-05"), 25);
        assert_eq!(span("2026-11-20"), 24);
    }

    #[test]
    fn digest_ignores_order_and_id_is_stable() {
        assert_eq!(ids_digest(&["b", "a"]), ids_digest(&["a", "b"]));
        assert_ne!(ids_digest(&["a"]), ids_digest(&["a", "b"]));
        // sha256("a\nb\n")
        assert_eq!(
            ids_digest(&["b", "a"]),
            "sha256:911169ddaaf146aff539f58c26c489af3b892dff0fe283c1c264c65ae5aa59a2"
        );
        assert_eq!(
            statement_id("pc", "Acme", "2026-11-20"),
            statement_id("pc", "Acme", "2026-11-20")
        );
        assert_ne!(
            statement_id("pc", "Acme", "2026-11-20"),
            statement_id("pc", "Acme", "2026-11-21")
        );
    }
}
