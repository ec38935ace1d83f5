//! `/metrics`: the Prometheus text exposition, rendered from the in-memory
//! stats and one read of the store. A figure the store cannot give is left
//! out (with `chargetail_state_readable 0`), never written as 0.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use super::*;
use crate::stats::{SourceStats, Stats, LATENCY_BUCKETS};
use crate::store::now_ms;

pub(super) fn esc(label: &str) -> String {
    label
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub(super) fn render_metrics(s: &HttpState) -> String {
    let st = &s.stats;
    let mut out = String::new();
    // A series that belongs to one source carries `source="NAME"`, one per
    // registered source (the daemon registers each `[[source]]` at start; a
    // delivered charge counts for the source its message names). What
    // belongs to the daemon as a whole (the one state database and outbox,
    // the one source loop, the one deliverer, the billing step) carries no
    // source label, with one source or several.
    let per_source = st.source_stats();
    let labels: Vec<String> = per_source
        .iter()
        .map(|p| format!("source=\"{}\"", esc(&p.name)))
        .collect();
    let reading = |out: &mut String,
                   kind: &str,
                   name: &str,
                   help: &str,
                   own: fn(&SourceStats) -> &AtomicU64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (p, l) in per_source.iter().zip(&labels) {
            let _ = writeln!(out, "{name}{{{l}}} {}", Stats::get(own(p)));
        }
    };
    reading(
        &mut out,
        "counter",
        "chargetail_lines_read_total",
        "Lines read from source files.",
        |p| &p.lines_read,
    );
    reading(
        &mut out,
        "counter",
        "chargetail_charges_read_total",
        "New charges put in the outbox.",
        |p| &p.charges_read,
    );
    reading(
        &mut out,
        "counter",
        "chargetail_duplicates_ignored_total",
        "Charges read again whose id was already known.",
        |p| &p.duplicates_ignored,
    );
    reading(
        &mut out,
        "counter",
        "chargetail_parse_errors_total",
        "Lines that could not be parsed.",
        |p| &p.bad_lines,
    );
    reading(
        &mut out,
        "counter",
        "chargetail_truncations_total",
        "Source files truncated.",
        |p| &p.truncations,
    );
    reading(
        &mut out,
        "counter",
        "chargetail_rotations_total",
        "Source files rotated.",
        |p| &p.rotations,
    );
    reading(
        &mut out,
        "gauge",
        "chargetail_reading_paused",
        "1 while reading is paused by backpressure.",
        |p| &p.reading_paused,
    );
    // The daemon's own series: no source label.
    let mut counter = |name: &str, help: &str, v: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
        );
    };
    counter(
        "chargetail_source_wakeups_total",
        "Wake-ups of the source loop (inotify events, polls, other deadlines).",
        Stats::get(&st.source_wakeups),
    );
    counter(
        "chargetail_deliver_store_reads_total",
        "Times delivery read pending charges back from the outbox (start, retries, overflow, another process's change); new charges reach it in memory.",
        Stats::get(&st.deliver_store_reads),
    );
    let _ = writeln!(
        out,
        "# HELP chargetail_delivery_in_flight Charges handed to the sink and not answered yet (AMQP: published, awaiting the broker's confirms).\n# TYPE chargetail_delivery_in_flight gauge\nchargetail_delivery_in_flight {}",
        Stats::get(&st.delivery_in_flight)
    );
    reading(
        &mut out,
        "counter",
        "chargetail_delivered_total",
        "Charges delivered.",
        |p| &p.delivered,
    );
    reading(
        &mut out,
        "counter",
        "chargetail_redelivered_total",
        "Charges delivered after a failed attempt.",
        |p| &p.redelivered,
    );
    reading(
        &mut out,
        "counter",
        "chargetail_delivery_failures_total",
        "Failed delivery attempts.",
        |p| &p.retried,
    );
    let _ = writeln!(
        out,
        "# HELP chargetail_dead_lettered_total Dead letters by reason.\n# TYPE chargetail_dead_lettered_total counter"
    );
    for (p, l) in per_source.iter().zip(&labels) {
        let (dead, rejected, unparsable) = (
            Stats::get(&p.dead_lettered),
            Stats::get(&p.dead_rejected),
            Stats::get(&p.bad_lines),
        );
        let _ = writeln!(
            out,
            "chargetail_dead_lettered_total{{{l},reason=\"rejected\"}} {rejected}\n\
             chargetail_dead_lettered_total{{{l},reason=\"retries_exhausted\"}} {}\n\
             chargetail_dead_lettered_total{{{l},reason=\"unparsable\"}} {unparsable}",
            dead.saturating_sub(rejected),
        );
    }
    // What the state database holds; on a read error these series are left
    // out (an absent series, not a 0) and chargetail_state_readable says so.
    // The outbox has no source column: its backlog and oldest pending age
    // are the daemon's, for all sources together.
    let read = s.read(|store| Ok((store.totals()?, store.checkpoints()?)));
    let mut gauge = |name: &str, help: &str, v: Option<String>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        if let Some(v) = v {
            let _ = writeln!(out, "{name} {v}");
        }
    };
    gauge(
        "chargetail_state_readable",
        "1 when this scrape could read the state database (else its series are absent).",
        Some(u8::from(read.is_some()).to_string()),
    );
    gauge(
        "chargetail_outbox_backlog",
        "Charges waiting for delivery (the one outbox: all sources together).",
        read.as_ref().map(|(t, _)| t.pending.to_string()),
    );
    gauge(
        "chargetail_outbox_oldest_pending_age_seconds",
        "Age of the oldest pending charge of any source (0 when none is pending).",
        read.as_ref().map(|(t, _)| {
            t.oldest_pending_ms
                .map(|t| ((now_ms() - t).max(0) as f64 / 1000.0).to_string())
                .unwrap_or_else(|| "0".into())
        }),
    );
    // The one sink's health, repeated for every source it delivers for (so
    // a per-source panel finds it; aggregate with max, not sum).
    let sink = st.sink_health();
    let mut each = |name: &str, help: &str, v: &dyn Fn(usize) -> String| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (i, l) in labels.iter().enumerate() {
            let _ = writeln!(out, "{name}{{{l}}} {}", v(i));
        }
    };
    each(
        "chargetail_sink_connected",
        "1 when the sink is connected (one sink: the same for every source).",
        &|_| u8::from(sink.connected).to_string(),
    );
    each(
        "chargetail_sink_alert",
        "1 when the sink needs an operator (unroutable, endpoint gone; the same for every source).",
        &|_| u8::from(sink.alert.is_some()).to_string(),
    );
    each(
        "chargetail_last_delivery_timestamp_seconds",
        "Unix time of the source's last delivery.",
        &|i| (per_source[i].last_delivery_ms.load(Ordering::Relaxed) / 1000).to_string(),
    );
    let _ = writeln!(
        out,
        "# HELP chargetail_file_position_bytes Committed read position per followed file.\n# TYPE chargetail_file_position_bytes gauge"
    );
    let live: Vec<_> = read
        .map(|(_, files)| files)
        .unwrap_or_default()
        .into_iter()
        .filter(|c| !c.finished)
        .collect();
    // A file's series carry its own source (the others, all of them).
    let file_src =
        |c: &crate::source::Checkpoint| match (c.source.as_str(), s.cfg.sources.as_slice()) {
            ("", [one]) => format!("source=\"{}\"", esc(&one.name)),
            (name, _) => format!("source=\"{}\"", esc(name)),
        };
    for c in &live {
        let _ = writeln!(
            out,
            "chargetail_file_position_bytes{{{},file=\"{}\"}} {}",
            file_src(c),
            esc(&c.path.to_string_lossy()),
            c.offset
        );
    }
    let _ = writeln!(
        out,
        "# HELP chargetail_file_lag_bytes Bytes in the file past the committed position.\n# TYPE chargetail_file_lag_bytes gauge"
    );
    for c in &live {
        // A file we cannot stat has no known lag: no series for it.
        let Ok(size) = std::fs::metadata(&c.path).map(|m| m.len()) else {
            continue;
        };
        let _ = writeln!(
            out,
            "chargetail_file_lag_bytes{{{},file=\"{}\"}} {}",
            file_src(c),
            esc(&c.path.to_string_lossy()),
            size.saturating_sub(c.offset)
        );
    }
    let _ = writeln!(
        out,
        "# HELP chargetail_delivery_latency_seconds From line read to delivered.\n# TYPE chargetail_delivery_latency_seconds histogram"
    );
    for (p, l) in per_source.iter().zip(&labels) {
        let (buckets, count, sum) = p.latency.snapshot();
        for (le, n) in LATENCY_BUCKETS.iter().zip(buckets) {
            let _ = writeln!(
                out,
                "chargetail_delivery_latency_seconds_bucket{{{l},le=\"{le}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "chargetail_delivery_latency_seconds_bucket{{{l},le=\"+Inf\"}} {count}\nchargetail_delivery_latency_seconds_sum{{{l}}} {sum}\nchargetail_delivery_latency_seconds_count{{{l}}} {count}"
        );
    }
    if let Some(b) = &s.billing {
        billing::render(&mut out, b, s.cfg.papercut.is_some());
    }
    out
}
