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
    pub truncations: AtomicU64,
    pub rotations: AtomicU64,
    pub backlog: AtomicU64,
    pub last_delivery_ms: AtomicI64,
    pub reading_paused: AtomicU64,
    pub sink: Mutex<SinkHealth>,
}

impl Stats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
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
