//! `--against FILE`: a PaperCut CSV export of the period compared with what
//! was read and delivered: each export row matched with a charge read, the
//! rows of each side left unmatched, the totals side by side.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use rust_decimal::Decimal;
use serde::Serialize;

use super::{cents, Fact, ReconcileError, Undelivered};

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

pub(super) fn compare(path: &Path, facts: &[Fact]) -> Result<Against, ReconcileError> {
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
                last_error: None,
                ..Undelivered::of(f)
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

#[cfg(test)]
mod tests {
    use super::*;

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
