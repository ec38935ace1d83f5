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
//! are listed, and the totals set side by side.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use rust_decimal::Decimal;
use serde::Serialize;

use crate::billing::Ledger;

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
        "(SELECT o.state FROM outbox o WHERE o.id = l.id)"
    } else {
        "NULL"
    };
    let outbox_err = if has_outbox > 0 {
        "(SELECT o.last_error FROM outbox o WHERE o.id = l.id)"
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
            undelivered.push(Undelivered {
                id: f.id.clone(),
                state: f.state.clone(),
                time: f.time.clone(),
                user: f.user.clone(),
                account: f.account.clone(),
                amount: f.amount.map(cents),
                currency: f.currency.clone(),
                last_error: f.last_error.clone(),
            });
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
        Some(p) => Some(compare(p, &facts)?),
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

/// The comparison with a PaperCut export.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Against {
    pub file: String,
    pub rows: u64,
    pub matched: u64,
    /// In the export, not read by chargetail.
    pub only_in_export: Vec<ExportRow>,
    /// Read by chargetail, not in the export.
    pub only_read: Vec<Undelivered>,
    /// Per currency: (export total, read total, delivered total).
    pub totals: Vec<AgainstTotal>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AgainstTotal {
    pub currency: String,
    pub export: String,
    pub read: String,
    pub delivered: String,
}

impl Against {
    pub fn matches(&self) -> bool {
        self.only_in_export.is_empty()
            && self.only_read.is_empty()
            && self
                .totals
                .iter()
                .all(|t| t.export == t.read && t.read == t.delivered)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ExportRow {
    pub line: u64,
    pub time: String,
    pub user: String,
    pub account: Option<String>,
    pub amount: String,
    pub transaction_id: Option<String>,
}

fn norm(h: &str) -> String {
    h.chars()
        .filter(|c| !c.is_whitespace() && *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect()
}

fn find(headers: &[String], names: &[&str]) -> Option<usize> {
    names
        .iter()
        .find_map(|n| headers.iter().position(|h| *h == norm(n)))
}

/// Local time `YYYY-MM-DD HH:MM:SS` from the export's time field(s).
fn export_time(s: &str) -> Option<String> {
    let s = s.trim();
    let formats = [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %I:%M:%S %p",
        "%d/%m/%Y %H:%M:%S",
        "%d/%m/%Y %I:%M:%S %p",
        "%Y-%m-%d %H:%M",
    ];
    for f in formats {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Some(t.format("%Y-%m-%d %H:%M:%S").to_string());
        }
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(t.naive_local().format("%Y-%m-%d %H:%M:%S").to_string());
    }
    None
}

fn compare(path: &Path, facts: &[Fact]) -> Result<Against, ReconcileError> {
    let bad = |reason: String| ReconcileError::Against {
        path: path.display().to_string(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let text = String::from_utf8_lossy(bytes);
    // A banner line before the header (as the Print Logger writes) is
    // skipped: the header is the first line naming a user column.
    let delim = if text.lines().next().is_some_and(|l| l.contains('\t')) {
        b'\t'
    } else {
        b','
    };
    let mut rd = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delim)
        .from_reader(text.as_bytes());
    let mut header: Option<Vec<String>> = None;
    let mut cols = (0, 0, None, 0, None, None);
    let mut negate = false;
    let mut export: Vec<(ExportRow, Decimal)> = Vec::new();
    let mut export_currency_total = Decimal::ZERO;
    for rec in rd.records() {
        let rec = rec.map_err(|e| bad(e.to_string()))?;
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        let Some(h) = &header else {
            let names: Vec<String> = rec.iter().map(norm).collect();
            let user = find(&names, &["user", "username", "user name", "transacted by"]);
            let time = find(
                &names,
                &[
                    "time",
                    "usage date",
                    "date",
                    "transaction date",
                    "timestamp",
                    "date time",
                ],
            );
            let cost = find(&names, &["cost", "usage cost", "charged amount"]);
            let amount = find(&names, &["amount", "charge", "transaction amount"]);
            if let (Some(u), Some(t)) = (user, time) {
                let (a, neg) = match (cost, amount) {
                    (Some(c), _) => (c, false),
                    // A transaction export writes a debit negative.
                    (None, Some(a)) => (a, true),
                    (None, None) => {
                        return Err(bad(format!(
                            "line {line}: the header has no cost or amount column"
                        )))
                    }
                };
                negate = neg;
                let account = find(
                    &names,
                    &[
                        "account",
                        "charged to",
                        "account name",
                        "shared account",
                        "account charged",
                    ],
                );
                let txid = find(
                    &names,
                    &["transaction id", "transactionid", "job id", "id", "txn id"],
                );
                let tpart = find(&names, &["usage time"]);
                cols = (t, u, account, a, txid, tpart);
                header = Some(names);
            }
            continue;
        };
        let _ = h;
        let get = |i: usize| rec.get(i).unwrap_or("").trim().to_string();
        let (t, u, acct, a, txid, tpart) = cols;
        if rec.len() <= 1 && get(0).is_empty() {
            continue;
        }
        let mut traw = get(t);
        if let Some(tp) = tpart {
            traw = format!("{} {}", traw, get(tp));
        }
        let time = export_time(&traw)
            .ok_or_else(|| bad(format!("line {line}: {traw:?} is not a time")))?;
        let raw_amount = get(a).replace(['$', ' '], "");
        let mut amount: Decimal = raw_amount
            .parse()
            .map_err(|_| bad(format!("line {line}: {raw_amount:?} is not an amount")))?;
        if negate {
            amount = -amount;
        }
        export_currency_total += amount;
        export.push((
            ExportRow {
                line,
                time,
                user: get(u),
                account: acct.map(get).filter(|s| !s.is_empty()),
                amount: cents(amount),
                transaction_id: txid.map(get).filter(|s| !s.is_empty()),
            },
            amount,
        ));
    }
    if header.is_none() {
        return Err(bad(
            "no header naming a user and a time column (expected a PaperCut CSV export)".into(),
        ));
    }
    // Match: by transaction id first, then (time, user, amount) as a multiset.
    let mut by_tx: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut by_content: HashMap<(String, String, String), Vec<usize>> = HashMap::new();
    for (i, f) in facts.iter().enumerate() {
        if let Some(tx) = &f.transaction_id {
            by_tx.entry(tx.as_str()).or_default().push(i);
        }
        let t = f.time.get(..19).unwrap_or(&f.time).replace('T', " ");
        by_content
            .entry((
                t,
                f.user.to_lowercase(),
                cents(f.amount.unwrap_or_default()),
            ))
            .or_default()
            .push(i);
    }
    let mut used = vec![false; facts.len()];
    let mut out = Against {
        file: path.display().to_string(),
        rows: export.len() as u64,
        ..Against::default()
    };
    for (row, _) in &export {
        let mut hit = None;
        if let Some(tx) = &row.transaction_id {
            hit = by_tx
                .get(tx.as_str())
                .and_then(|v| v.iter().copied().find(|&i| !used[i]));
        }
        if hit.is_none() {
            hit = by_content
                .get(&(
                    row.time.clone(),
                    row.user.to_lowercase(),
                    row.amount.clone(),
                ))
                .and_then(|v| v.iter().copied().find(|&i| !used[i]));
        }
        match hit {
            Some(i) => {
                used[i] = true;
                out.matched += 1;
            }
            None => out.only_in_export.push(row.clone()),
        }
    }
    let mut read: BTreeMap<String, (Decimal, Decimal)> = BTreeMap::new();
    for (i, f) in facts.iter().enumerate() {
        let e = read.entry(f.currency.clone()).or_default();
        let a = f.amount.unwrap_or_default();
        e.0 += a;
        if f.state == "delivered" {
            e.1 += a;
        }
        if !used[i] {
            out.only_read.push(Undelivered {
                id: f.id.clone(),
                state: f.state.clone(),
                time: f.time.clone(),
                user: f.user.clone(),
                account: f.account.clone(),
                amount: f.amount.map(cents),
                currency: f.currency.clone(),
                last_error: None,
            });
        }
    }
    // The export names no currency: its total stands beside each one read
    // (normally there is one).
    let currencies: Vec<String> = if read.is_empty() {
        vec![String::new()]
    } else {
        read.keys().cloned().collect()
    };
    for c in currencies {
        let (r, d) = read.get(&c).copied().unwrap_or_default();
        out.totals.push(AgainstTotal {
            currency: c,
            export: cents(export_currency_total),
            read: cents(r),
            delivered: cents(d),
        });
    }
    Ok(out)
}

/// The report as a table (stdout).
pub fn print_table(r: &Report, out: &mut impl std::io::Write) -> std::io::Result<()> {
    let period = match (&r.from, &r.to) {
        (None, None) => "all days".to_string(),
        (f, t) => format!(
            "{} .. {}",
            f.as_deref().unwrap_or("start"),
            t.as_deref().unwrap_or("end")
        ),
    };
    writeln!(out, "reconcile by {} ({period})", r.by)?;
    let width = r
        .groups
        .iter()
        .map(|g| g.key.chars().count())
        .max()
        .unwrap_or(5)
        .max(5);
    writeln!(
        out,
        "{:<width$}  {:>5} {:>9} {:>7} {:>4} {:>4} {:>10}  {:>12} {:>12}  cur",
        "key", "read", "delivered", "pending", "dead", "held", "not billed", "read", "delivered"
    )?;
    let line = |out: &mut dyn std::io::Write, g: &Row| {
        writeln!(
            out,
            "{:<width$}  {:>5} {:>9} {:>7} {:>4} {:>4} {:>10}  {:>12} {:>12}  {}",
            g.key,
            g.read,
            g.delivered,
            g.pending,
            g.dead,
            g.held,
            g.not_billed,
            g.amount_read,
            g.amount_delivered,
            g.currency
        )
    };
    for g in &r.groups {
        line(out, g)?;
    }
    writeln!(out, "{}", "-".repeat(width + 80))?;
    for t in &r.totals_by_currency {
        line(out, t)?;
    }
    if r.totals_by_currency.is_empty() {
        writeln!(out, "(nothing read in the period)")?;
    }
    if !r.undelivered.is_empty() {
        let missing = r.totals.read - r.totals.delivered;
        writeln!(out, "\nnot delivered ({missing}):")?;
        for u in r.undelivered.iter().take(20) {
            writeln!(
                out,
                "  {} {:<9} {} {} {} {} {}{}",
                u.id,
                u.state,
                u.time,
                u.user,
                u.account,
                u.amount.as_deref().unwrap_or("-"),
                u.currency,
                u.last_error
                    .as_deref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            )?;
        }
    }
    if r.totals.read - r.totals.delivered > 20 {
        writeln!(
            out,
            "  … and {} more (--json lists 100)",
            r.totals.read - r.totals.delivered - 20
        )?;
    }
    if let Some(a) = &r.against {
        writeln!(
            out,
            "\nagainst {}: {} rows, {} matched",
            a.file, a.rows, a.matched
        )?;
        for t in &a.totals {
            writeln!(
                out,
                "  totals {}: export {}  read {}  delivered {}",
                t.currency, t.export, t.read, t.delivered
            )?;
        }
        for e in &a.only_in_export {
            writeln!(
                out,
                "  only in the export (line {}): {} {} {} {}",
                e.line,
                e.time,
                e.user,
                e.account.as_deref().unwrap_or("-"),
                e.amount
            )?;
        }
        for u in &a.only_read {
            writeln!(
                out,
                "  only read by chargetail: {} {} {} {} {}",
                u.id,
                u.time,
                u.user,
                u.account,
                u.amount.as_deref().unwrap_or("-")
            )?;
        }
    }
    Ok(())
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

    #[test]
    fn export_times_in_common_shapes() {
        assert_eq!(
            export_time("2026-11-20 09:14:03").as_deref(),
            Some("2026-11-20 09:14:03")
        );
        assert_eq!(
            export_time("2026-11-20 1:04:47 PM").as_deref(),
            Some("2026-11-20 13:04:47")
        );
        assert_eq!(
            export_time("20/11/2026 09:14:03").as_deref(),
            Some("2026-11-20 09:14:03")
        );
        assert_eq!(export_time("soon"), None);
    }
}
