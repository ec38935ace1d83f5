//! `chargetail reconcile`: what was read over a period, grouped by account,
//! user, customer or day, against what was delivered — to the cent.
//!
//! It reads the billing ledger (every charge read, with its local day) and
//! how each charge stands in the outbox (pending, delivered, dead) or
//! whether it is held for want of a mapping (counted as pending, and as
//! `held`). A ledger row without an outbox row is counted pending (it was
//! being committed, or it is older than `retention_days` and its delivered
//! id was pruned: reconcile periods within the retention).
//!
//! `--against FILE`: a PaperCut CSV export of the same period (the admin
//! console's job log / transaction export, or any CSV whose header names a
//! time, a user and a cost or amount column): each row is matched with a
//! charge read, by transaction id when both have one, else by local time
//! to the second, user and amount; the rows of each side left unmatched
//! are listed, and the totals set side by side (`against`). `table` renders
//! the report for a terminal.

use std::collections::BTreeMap;
use std::path::Path;

use rust_decimal::Decimal;
use serde::Serialize;

use crate::billing::Ledger;

mod against;
mod table;

pub use against::{Against, AgainstTotal, ExportRow};
pub use table::print_table;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupBy {
    Account,
    User,
    Customer,
    Day,
}

#[derive(Debug, Clone, Default)]
pub struct Period {
    /// Inclusive local dates `YYYY-MM-DD`.
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("state database {path}: {source}")]
    Sqlite {
        path: String,
        source: rusqlite::Error,
    },
    #[error("{path}: {reason}")]
    Against { path: String, reason: String },
}

/// One row of the report (a group, or the totals), in one currency.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Row {
    pub key: String,
    pub read: u64,
    pub delivered: u64,
    pub pending: u64,
    pub dead: u64,
    pub held: u64,
    pub not_billed: u64,
    pub amount_read: String,
    pub amount_delivered: String,
    pub amount_pending: String,
    pub currency: String,
}

#[derive(Debug, Default)]
struct Acc {
    read: u64,
    delivered: u64,
    pending: u64,
    dead: u64,
    held: u64,
    not_billed: u64,
    amount_read: Decimal,
    amount_delivered: Decimal,
    amount_pending: Decimal,
}

fn cents(d: Decimal) -> String {
    let mut r = d.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointNearestEven);
    r.rescale(2);
    r.to_string()
}

impl Acc {
    fn row(&self, key: &str, currency: &str) -> Row {
        Row {
            key: key.to_string(),
            read: self.read,
            delivered: self.delivered,
            pending: self.pending,
            dead: self.dead,
            held: self.held,
            not_billed: self.not_billed,
            amount_read: cents(self.amount_read),
            amount_delivered: cents(self.amount_delivered),
            amount_pending: cents(self.amount_pending),
            currency: currency.to_string(),
        }
    }
}

/// A charge not (yet) delivered, to name in the report.
#[derive(Debug, Clone, Serialize)]
pub struct Undelivered {
    pub id: String,
    pub state: String,
    pub time: String,
    pub user: String,
    pub account: String,
    pub amount: Option<String>,
    pub currency: String,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub by: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub groups: Vec<Row>,
    /// One currency: these; several: only counts (amounts are per currency
    /// in `totals_by_currency`).
    pub totals: Row,
    pub totals_by_currency: Vec<Row>,
    /// Charges read in the period and not delivered (at most 100 listed).
    pub undelivered: Vec<Undelivered>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub against: Option<Against>,
}

impl Report {
    /// Everything read in the period is delivered.
    pub fn complete(&self) -> bool {
        self.totals.read == self.totals.delivered
            && self.against.as_ref().is_none_or(Against::matches)
    }
}

/// One charge's facts as reconcile needs them.
#[derive(Debug, Clone)]
struct Fact {
    id: String,
    time: String,
    day: String,
    user: String,
    account: String,
    customer: Option<String>,
    status: String,
    amount: Option<Decimal>,
    currency: String,
    transaction_id: Option<String>,
    state: String,
    last_error: Option<String>,
}

impl Undelivered {
    /// How a charge is listed in the report.
    fn of(f: &Fact) -> Undelivered {
        Undelivered {
            id: f.id.clone(),
            state: f.state.clone(),
            time: f.time.clone(),
            user: f.user.clone(),
            account: f.account.clone(),
            amount: f.amount.map(cents),
            currency: f.currency.clone(),
            last_error: f.last_error.clone(),
        }
    }
}

fn load_facts(ledger: &Ledger, period: &Period, path: &Path) -> Result<Vec<Fact>, ReconcileError> {
    let err = |source| ReconcileError::Sqlite {
        path: path.display().to_string(),
        source,
    };
    let conn = ledger.conn();
    let has_outbox: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE name = 'outbox'",
            [],
            |r| r.get(0),
        )
        .map_err(err)?;
    let outbox_state = if has_outbox > 0 {
        "(SELECT o.state FROM outbox o WHERE o.id_key = l.id_key AND o.id = l.id)"
    } else {
        "NULL"
    };
    let outbox_err = if has_outbox > 0 {
        "(SELECT o.last_error FROM outbox o WHERE o.id_key = l.id_key AND o.id = l.id)"
    } else {
        "NULL"
    };
    let sql = format!(
        "SELECT l.id, l.time, l.day, l.user, l.account, l.customer_id, l.status, l.amount, l.currency,
                l.transaction_id,
                CASE WHEN EXISTS (SELECT 1 FROM billing_held h WHERE h.id = l.id) THEN 'held'
                     ELSE COALESCE({outbox_state}, 'pending') END,
                {outbox_err}
         FROM billing_ledger l
         WHERE (?1 IS NULL OR l.day >= ?1) AND (?2 IS NULL OR l.day <= ?2)
         ORDER BY l.time, l.id"
    );
    let mut st = conn.prepare(&sql).map_err(err)?;
    let rows = st
        .query_map(rusqlite::params![period.from, period.to], |r| {
            Ok(Fact {
                id: r.get(0)?,
                time: r.get(1)?,
                day: r.get(2)?,
                user: r.get(3)?,
                account: r.get(4)?,
                customer: r.get(5)?,
                status: r.get(6)?,
                amount: r
                    .get::<_, Option<String>>(7)?
                    .and_then(|a| a.parse::<Decimal>().ok()),
                currency: r.get(8)?,
                transaction_id: r.get(9)?,
                state: r.get(10)?,
                last_error: r.get(11)?,
            })
        })
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(err)?;
    Ok(rows)
}

/// Build the report from the state database at `path`.
pub fn reconcile(
    path: &Path,
    period: &Period,
    by: GroupBy,
    against: Option<&Path>,
) -> Result<Report, ReconcileError> {
    let facts = match Ledger::open_existing(path).map_err(|e| ReconcileError::Sqlite {
        path: path.display().to_string(),
        source: e.source,
    })? {
        Some(l) => load_facts(&l, period, path)?,
        None => Vec::new(),
    };
    let mut groups: BTreeMap<(String, String), Acc> = BTreeMap::new();
    let mut totals: BTreeMap<String, Acc> = BTreeMap::new();
    let mut all = Acc::default();
    let mut undelivered = Vec::new();
    for f in &facts {
        let key = match by {
            GroupBy::Account => f.account.clone(),
            GroupBy::User => f.user.clone(),
            GroupBy::Customer => f.customer.clone().unwrap_or_else(|| "(unmapped)".into()),
            GroupBy::Day => f.day.clone(),
        };
        let amount = f.amount.unwrap_or_default();
        for acc in [
            groups.entry((key, f.currency.clone())).or_default(),
            totals.entry(f.currency.clone()).or_default(),
            &mut all,
        ] {
            acc.read += 1;
            acc.amount_read += amount;
            if f.status != "charged" {
                acc.not_billed += 1;
            }
            match f.state.as_str() {
                "delivered" => {
                    acc.delivered += 1;
                    acc.amount_delivered += amount;
                }
                "dead" => acc.dead += 1,
                "held" => {
                    acc.held += 1;
                    acc.pending += 1;
                    acc.amount_pending += amount;
                }
                _ => {
                    acc.pending += 1;
                    acc.amount_pending += amount;
                }
            }
        }
        if f.state != "delivered" && undelivered.len() < 100 {
            undelivered.push(Undelivered::of(f));
        }
    }
    let totals_by_currency: Vec<Row> = totals.iter().map(|(c, a)| a.row("total", c)).collect();
    let totals_row = match totals_by_currency.as_slice() {
        [one] => one.clone(),
        _ => {
            let mut r = all.row("total", "");
            r.amount_read = String::new();
            r.amount_delivered = String::new();
            r.amount_pending = String::new();
            if totals_by_currency.is_empty() {
                r = Acc::default().row("total", "");
            }
            r
        }
    };
    let against = match against {
        Some(p) => Some(against::compare(p, &facts)?),
        None => None,
    };
    Ok(Report {
        by: format!("{by:?}").to_lowercase(),
        from: period.from.clone(),
        to: period.to.clone(),
        groups: groups.iter().map(|((k, c), a)| a.row(k, c)).collect(),
        totals: totals_row,
        totals_by_currency,
        undelivered,
        against,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cents_round_half_even_and_always_two_places() {
        assert_eq!(cents("1.2".parse().unwrap()), "1.20");
        assert_eq!(cents("-2.4".parse().unwrap()), "-2.40");
        assert_eq!(cents("0".parse().unwrap()), "0.00");
        assert_eq!(cents("1.005".parse().unwrap()), "1.00");
    }
}
