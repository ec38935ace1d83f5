//! Charges delivered per minute over the last hour, for the status page: a
//! small in-memory ring fed by sampling the `delivered` counter (so the
//! deliver stage needs no hook and the store no query). It starts empty at
//! each start of the daemon.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Minutes kept (and drawn).
pub const MINUTES: usize = 60;

#[derive(Debug, Default)]
pub struct DeliveryRate {
    inner: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    /// The counter value at the last sample.
    last_total: u64,
    /// (minute since the epoch, charges delivered in it), oldest first.
    minutes: VecDeque<(i64, u64)>,
}

impl DeliveryRate {
    /// Take the counter's value at `now_ms`: what it grew by since the last
    /// sample counts in the current minute.
    pub fn sample(&self, delivered_total: u64, now_ms: i64) {
        let mut r = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let delta = delivered_total.saturating_sub(r.last_total);
        r.last_total = delivered_total;
        let minute = now_ms.div_euclid(60_000);
        match r.minutes.back_mut() {
            Some((m, n)) if *m == minute => *n += delta,
            _ => r.minutes.push_back((minute, delta)),
        }
        while r
            .minutes
            .front()
            .is_some_and(|(m, _)| *m <= minute - MINUTES as i64)
        {
            r.minutes.pop_front();
        }
    }

    /// The last [`MINUTES`] minutes up to the one of `now_ms`, oldest first,
    /// zeros where nothing was delivered.
    pub fn per_minute(&self, now_ms: i64) -> Vec<u64> {
        let r = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = now_ms.div_euclid(60_000);
        let first = now - MINUTES as i64 + 1;
        let mut out = vec![0u64; MINUTES];
        for (m, n) in &r.minutes {
            if (first..=now).contains(m) {
                out[(m - first) as usize] += n;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_land_in_their_minute_and_age_out() {
        let r = DeliveryRate::default();
        let t0 = 1_000 * 60_000;
        r.sample(0, t0);
        r.sample(5, t0 + 1_000);
        r.sample(12, t0 + 30_000);
        r.sample(20, t0 + 61_000);
        let v = r.per_minute(t0 + 61_000);
        assert_eq!(v.len(), MINUTES);
        assert_eq!(v[MINUTES - 1], 8);
        assert_eq!(v[MINUTES - 2], 12);
        // An hour later the first minutes are gone.
        r.sample(20, t0 + 60 * 60_000 + 1);
        let v = r.per_minute(t0 + 60 * 60_000 + 1);
        assert_eq!(v.iter().sum::<u64>(), 8);
    }
}
