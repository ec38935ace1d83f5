//! The report as a table, for a person at a terminal (`--json` is for
//! programs).

use super::{Report, Row};

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
