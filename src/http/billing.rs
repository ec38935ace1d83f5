//! The billing step's series on `/metrics`: charges held (for want of a
//! mapping, or for PaperCut), and (with `[papercut]`) the enrichment
//! counters; its part of `/status` and of the active problems.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use crate::billing::BillingStats;
use crate::stats::Stats;

/// `billing` in `/status`.
pub(super) fn status(b: &BillingStats, papercut: bool) -> serde_json::Value {
    let mut v = serde_json::json!({
        "held": Stats::get(&b.held),
        "held_papercut": Stats::get(&b.held_papercut),
        "released": Stats::get(&b.released),
        "mapping_entries": Stats::get(&b.mapping_entries),
    });
    if papercut {
        v["papercut_down"] = serde_json::Value::Bool(Stats::get(&b.papercut_down) > 0);
    }
    v
}

/// PaperCut left alone after a failure, or charges waiting for it: minor
/// problems (charges still go out, or will within `hold_max_secs`).
pub(super) fn problems(b: &BillingStats, p: &mut super::Problems) {
    if Stats::get(&b.papercut_down) > 0 {
        p.minor.push(
            "PaperCut's Web Services API unavailable: charges go unenriched or are held".into(),
        );
    }
    let held = Stats::get(&b.held_papercut);
    if held > 0 {
        p.minor
            .push(format!("{held} charge(s) held until PaperCut answers"));
    }
}

/// Append the billing series. The billing step (one mapping, one PaperCut
/// server, one held table) is shared by every source: its series carry no
/// source label. `papercut`: `[papercut]` is configured, so its series are
/// exported too.
pub(super) fn render(out: &mut String, b: &BillingStats, papercut: bool) {
    let mut series = |kind: &str, name: &str, help: &str, v: String| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    };
    let g = |a: &std::sync::atomic::AtomicU64| Stats::get(a).to_string();
    series(
        "gauge",
        "chargetail_billing_held",
        "Charges held back: for want of an account mapping (unmapped = \"hold\") or for PaperCut (on_unavailable = \"hold\").",
        g(&b.held),
    );
    series(
        "counter",
        "chargetail_billing_released_total",
        "Held charges released to the outbox.",
        g(&b.released),
    );
    series(
        "counter",
        "chargetail_billing_unmapped_delivered_total",
        "Charges delivered with customer_id null (unmapped = \"deliver\").",
        g(&b.unmapped_delivered),
    );
    series(
        "gauge",
        "chargetail_billing_mapping_entries",
        "Rows of the account mapping in force.",
        g(&b.mapping_entries),
    );
    series(
        "counter",
        "chargetail_billing_mapping_reloads_total",
        "Mapping file reloads that took effect.",
        g(&b.mapping_reloads),
    );
    series(
        "counter",
        "chargetail_billing_mapping_errors_total",
        "Mapping file reloads refused (the old mapping stayed in force).",
        g(&b.mapping_errors),
    );
    if !papercut {
        return;
    }
    series(
        "counter",
        "chargetail_papercut_cache_hits_total",
        "PaperCut properties answered from the cache.",
        g(&b.papercut_cache_hits),
    );
    series(
        "counter",
        "chargetail_papercut_calls_total",
        "Calls made to PaperCut's Web Services API.",
        g(&b.papercut_calls),
    );
    series(
        "counter",
        "chargetail_papercut_errors_total",
        "PaperCut calls that failed (fault, network, timeout) or waits past the bound.",
        g(&b.papercut_errors),
    );
    series(
        "counter",
        "chargetail_papercut_unenriched_total",
        "Charges delivered without PaperCut properties (data.enrichment not \"ok\").",
        g(&b.papercut_unenriched),
    );
    series(
        "gauge",
        "chargetail_papercut_down",
        "1 while PaperCut is left alone after a failure.",
        g(&b.papercut_down),
    );
    series(
        "gauge",
        "chargetail_papercut_held",
        "Charges held because PaperCut could not be asked (on_unavailable = \"hold\"; also in chargetail_billing_held).",
        g(&b.held_papercut),
    );
    let us = b.papercut_call_us.load(Ordering::Relaxed);
    let calls = Stats::get(&b.papercut_calls);
    let _ = writeln!(
        out,
        "# HELP chargetail_papercut_call_seconds Time spent in PaperCut calls.\n# TYPE chargetail_papercut_call_seconds summary\n\
         chargetail_papercut_call_seconds_sum {}\nchargetail_papercut_call_seconds_count {calls}",
        us as f64 / 1_000_000.0
    );
}
