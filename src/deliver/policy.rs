//! When the head of the outbox is tried again: the retry policy and the
//! head's monotonic clock.

use std::time::{Duration, Instant};

use crate::store::{now_ms, Pending};

/// How retries are scheduled: exponential backoff with full jitter from
/// `[delivery] retry_initial_ms` to `retry_max_ms`; after `give_up_after`
/// of failing a charge becomes a dead letter. An endpoint's own
/// Retry-After wins over the backoff.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
    /// After this long since the first failure, a charge is a dead letter.
    /// `None`: retry forever.
    pub give_up_after: Option<Duration>,
}

impl RetryPolicy {
    /// Exponential backoff with full jitter: a random delay in
    /// `[0, min(max, initial * 2^attempts)]`, so that many daemons (or many
    /// charges) do not retry in lockstep.
    pub fn delay(&self, attempts: u32) -> Duration {
        let cap = self
            .initial
            .saturating_mul(1u32.checked_shl(attempts.min(31)).unwrap_or(u32::MAX))
            .min(self.max);
        let ms = cap.as_millis() as u64;
        Duration::from_millis(if ms == 0 {
            0
        } else {
            rand::random_range(0..=ms)
        })
    }

    /// The head's failure clock, in monotonic time, made from the stored
    /// schedule when a charge first becomes the head in this process: the
    /// stored next attempt capped by the policy's maximum (or the longest
    /// wait the endpoint asked for), so a wall clock stepped back cannot
    /// stall delivery.
    pub(super) fn clock_of(&self, head: &Pending) -> HeadClock {
        let (now, wall) = (Instant::now(), now_ms());
        let cap = self
            .max
            .max(Duration::from_millis(head.wait_ms.max(0) as u64));
        let wait = Duration::from_millis((head.next_ms - wall).max(0) as u64).min(cap);
        let first_fail = head.first_fail_ms.map(|f| {
            let ago = Duration::from_millis((wall - f).max(0) as u64);
            now.checked_sub(ago).unwrap_or(now)
        });
        HeadClock {
            seq: head.envelope.seq,
            next: now + wait,
            first_fail,
        }
    }
}

/// When the head of the outbox is tried next, and since when it fails.
#[derive(Debug, Clone)]
pub struct HeadClock {
    pub(super) seq: i64,
    pub(super) next: Instant,
    pub(super) first_fail: Option<Instant>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::Envelope;

    fn pending(next_ms: i64, wait_ms: i64, first_fail_ms: Option<i64>) -> Pending {
        Pending {
            envelope: Envelope::new(7, "c7".into(), vec![], "PRINT".into(), "shared".into(), 3),
            next_ms,
            first_fail_ms,
            wait_ms,
            created_ms: 0,
        }
    }

    #[test]
    fn a_stored_wait_is_capped_by_the_policy_or_the_endpoints_own_ask() {
        let p = RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(60),
            give_up_after: None,
        };
        let day = 86_400_000;
        let t0 = Instant::now();
        let c = p.clock_of(&pending(now_ms() + day, 0, Some(now_ms() - 5_000)));
        assert_eq!(c.seq, 7);
        assert!(c.next <= Instant::now() + Duration::from_secs(60));
        assert!(c.next >= t0 + Duration::from_secs(59));
        let failing = c.first_fail.map(|f| t0.saturating_duration_since(f));
        assert!(failing.is_some_and(|d| d >= Duration::from_secs(4)));
        let c = p.clock_of(&pending(now_ms() + day, 120_000, None));
        assert!(
            c.next >= t0 + Duration::from_secs(119),
            "Retry-After of 120 s kept"
        );
        assert!(c.first_fail.is_none());
        for a in 0..40 {
            assert!(p.delay(a) <= p.max);
        }
    }
}
