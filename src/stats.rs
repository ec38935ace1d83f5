//! Counters shared by the stages, read by status, health and metrics.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::sink::SinkHealth;

#[derive(Debug, Default)]
pub struct Stats {
    pub lines_read: AtomicU64,
    pub charges_read: AtomicU64,
    pub duplicates_ignored: AtomicU64,
    pub bad_lines: AtomicU64,
    pub delivered: AtomicU64,
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Of `dead_lettered`: refused by the endpoint (the rest ran out of retries).
    pub dead_rejected: AtomicU64,
    /// Delivered after at least one failed attempt.
    pub redelivered: AtomicU64,
    /// Times the deliverer read pending charges back from the outbox (at
    /// start, for retries, after an overflow or another process's change);
    /// fresh charges reach it in memory.
    pub deliver_store_reads: AtomicU64,
    /// Charges handed to the sink and not answered yet (AMQP: published,
    /// awaiting the broker's confirms), after the last round.
    pub delivery_in_flight: AtomicU64,
    /// Line read (committed to the outbox) → delivered.
    pub latency: Histogram,
    pub truncations: AtomicU64,
    pub rotations: AtomicU64,
    pub backlog: AtomicU64,
    pub last_delivery_ms: AtomicI64,
    pub reading_paused: AtomicU64,
    /// Files matching the source path at the last look, and unreadable ones.
    pub source_files: AtomicU64,
    pub source_unreadable: AtomicU64,
    /// Turns of the source loop (each a wake-up: inotify, a deadline).
    pub source_wakeups: AtomicU64,
    /// Set when the state database failed; the daemon is stopping.
    pub store_failed: AtomicU64,
    pub sink: Mutex<SinkHealth>,
    /// Per `[[source]]`, in config order (the counters above are the sums).
    pub sources: std::sync::RwLock<Vec<std::sync::Arc<SourceStats>>>,
}

/// The reading side's counters of one source.
#[derive(Debug, Default)]
pub struct SourceStats {
    pub name: String,
    pub lines_read: AtomicU64,
    pub charges_read: AtomicU64,
    pub duplicates_ignored: AtomicU64,
    pub bad_lines: AtomicU64,
    pub truncations: AtomicU64,
    pub rotations: AtomicU64,
    pub reading_paused: AtomicU64,
    /// Readable files matching the path at the last look, and unreadable ones.
    pub files: AtomicU64,
    pub unreadable: AtomicU64,
    /// The delivering side, counted by each charge's own source (the
    /// CloudEvents `source` of its message).
    pub delivered: AtomicU64,
    pub redelivered: AtomicU64,
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub dead_rejected: AtomicU64,
    pub latency: Histogram,
    pub last_delivery_ms: AtomicI64,
}

/// Per-source counts of one delivery round, added once it is recorded.
#[derive(Debug, Default)]
pub struct SourceTally(Vec<(std::sync::Arc<SourceStats>, [u64; 3])>);

impl SourceTally {
    /// Count one for `src`: `what` is 0 delivered, 1 dead, 2 rejected.
    pub fn count(&mut self, src: Option<&std::sync::Arc<SourceStats>>, what: usize) {
        let Some(src) = src else {
            return;
        };
        match self
            .0
            .iter_mut()
            .find(|(s, _)| std::sync::Arc::ptr_eq(s, src))
        {
            Some((_, n)) => n[what] += 1,
            None => {
                let mut n = [0; 3];
                n[what] = 1;
                self.0.push((src.clone(), n));
            }
        }
    }

    /// Add the round's counts (after the outbox recorded it).
    pub fn add(&self, now_ms: i64) {
        for (s, [delivered, dead, rejected]) in &self.0 {
            Stats::add(&s.delivered, *delivered);
            Stats::add(&s.dead_lettered, *dead);
            Stats::add(&s.dead_rejected, *rejected);
            if *delivered > 0 {
                s.last_delivery_ms.store(now_ms, Ordering::Relaxed);
            }
        }
    }
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set(gauge: &AtomicU64, v: u64) {
        gauge.store(v, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Register a source's counters (the daemon, at start).
    pub fn add_source(&self, name: &str) -> std::sync::Arc<SourceStats> {
        let s = std::sync::Arc::new(SourceStats {
            name: name.to_string(),
            ..SourceStats::default()
        });
        if let Ok(mut v) = self.sources.write() {
            v.push(s.clone());
        }
        s
    }

    /// The registered source a message came from; with one source, that one
    /// (a message written before sources had names carries no match).
    pub fn source_of(&self, payload: &[u8]) -> Option<std::sync::Arc<SourceStats>> {
        let v = self.sources.read().ok()?;
        if let [one] = v.as_slice() {
            return Some(one.clone());
        }
        let name = crate::charge::message_source(payload)?;
        v.iter().find(|s| s.name == *name).cloned()
    }

    pub fn source_stats(&self) -> Vec<std::sync::Arc<SourceStats>> {
        self.sources.read().map(|v| v.clone()).unwrap_or_default()
    }

    pub fn sink_health(&self) -> SinkHealth {
        self.sink.lock().map(|h| h.clone()).unwrap_or_default()
    }

    pub fn set_sink_health(&self, h: SinkHealth) {
        if let Ok(mut g) = self.sink.lock() {
            *g = h;
        }
    }
}

/// Upper bounds (seconds) of the delivery latency histogram buckets.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// A Prometheus-style cumulative histogram of milliseconds.
#[derive(Debug)]
pub struct Histogram {
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_ms: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: LATENCY_BUCKETS.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_ms: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe_ms(&self, ms: u64) {
        let secs = ms as f64 / 1000.0;
        for (b, le) in self.buckets.iter().zip(LATENCY_BUCKETS) {
            if secs <= *le {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// (cumulative bucket counts, count, sum in seconds)
    pub fn snapshot(&self) -> (Vec<u64>, u64, f64) {
        (
            self.buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            self.count.load(Ordering::Relaxed),
            self.sum_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_is_counted_by_its_own_source() {
        let st = Stats::default();
        let (a, b) = (st.add_source("site-a"), st.add_source("si\"te-b"));
        // The renderer's order: id (here one that looks like a source
        // inside its string), then source, then data.
        let msg = |escaped_name: &str| {
            format!(
                r#"{{"specversion":"1.0","id":"x\"source\":\"papercut/site-a","source":"papercut/{escaped_name}","data":{{}}}}"#
            )
            .into_bytes()
        };
        let mut t = SourceTally::default();
        let count = |t: &mut SourceTally, m: &[u8], what| t.count(st.source_of(m).as_ref(), what);
        count(&mut t, &msg(r#"si\"te-b"#), 0);
        count(&mut t, &msg(r#"si\"te-b"#), 1);
        count(&mut t, &msg("site-a"), 0);
        count(&mut t, b"{}", 0);
        t.add(5);
        assert_eq!(Stats::get(&a.delivered), 1);
        assert_eq!(Stats::get(&b.delivered), 1);
        assert_eq!(Stats::get(&b.dead_lettered), 1);
        assert_eq!(b.last_delivery_ms.load(Ordering::Relaxed), 5);
    }
}
