//! How long to wait before a retry, and whether the producer can afford one.
//!
//! ```text
//!  failure ──► class (api::classify_*) ──► Permanent / StreamNotFound ──► fail the records
//!                                     └──► Throttling / Transient ──► backoff(class, attempt)
//!                                            ──► retry budget (may push the time out)
//!                                            ──► later than the record's TTL? fail as Expired
//! ```
//!
//! Classification ("is this retryable, is it throttling?") lives with the API seam; this
//! module is the strategy. Backoff is exponential with jitter from `backon`'s builder:
//! throttling starts slower than transient errors because the shard needs time, not luck.
//! The budget is a token bucket shared by the whole producer: a retry costs tokens (a
//! transient error more than throttling, as in the AWS SDKs), successes and time pay them
//! back. When it is empty a retry is not dropped but postponed until tokens are there, so an
//! outage turns into a trickle of retries instead of a storm, and records still end at their
//! TTL with an `Expired` failure that lists every attempt.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::time::Instant;

use crate::api::CallErrorKind;

/// Backoff schedules per class.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    throttling: ExponentialBuilder,
    transient: ExponentialBuilder,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            throttling: ExponentialBuilder::new()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(5))
                .with_factor(2.0)
                .with_jitter()
                .without_max_times(),
            transient: ExponentialBuilder::new()
                .with_min_delay(Duration::from_millis(100))
                .with_max_delay(Duration::from_secs(5))
                .with_factor(2.0)
                .with_jitter()
                .without_max_times(),
        }
    }
}

impl Backoff {
    /// The delay before retry number `retry` (1 for the first retry). Jittered into
    /// `[d, 2d)` where `d` doubles per retry up to the cap.
    pub(crate) fn delay(&self, kind: CallErrorKind, retry: usize) -> Duration {
        let builder = match kind {
            CallErrorKind::Throttling => &self.throttling,
            _ => &self.transient,
        };
        // Past 16 doublings every schedule sits at its cap.
        builder
            .build()
            .nth(retry.clamp(1, 16) - 1)
            .unwrap_or(Duration::from_secs(5))
    }
}

/// Producer-wide retry budget.
#[derive(Debug, Clone)]
pub(crate) struct RetryBudget {
    tokens: f64,
    capacity: f64,
    refill_per_sec: f64,
    last: Instant,
}

/// Costs, as in the AWS SDKs' standard retry mode: throttling is expected under load and
/// cheap, other errors suggest something is broken and are dear.
const THROTTLING_COST: f64 = 1.0;
const TRANSIENT_COST: f64 = 5.0;
const SUCCESS_REFUND: f64 = 1.0;

impl RetryBudget {
    pub(crate) fn new(now: Instant) -> Self {
        RetryBudget {
            tokens: 500.0,
            capacity: 500.0,
            refill_per_sec: 10.0,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.refill_per_sec).min(self.capacity);
        self.last = now;
    }

    /// Pays for one retry (of one failed request, or of the failed entries of one request).
    /// Returns the earliest time the retry may go: `now` when there were tokens.
    pub(crate) fn acquire(&mut self, now: Instant, kind: CallErrorKind) -> Instant {
        self.refill(now);
        let cost = match kind {
            CallErrorKind::Throttling => THROTTLING_COST,
            _ => TRANSIENT_COST,
        };
        let short = cost - self.tokens;
        // Tokens may go negative: later retries then wait for the debt to be paid.
        self.tokens -= cost;
        if short <= 0.0 {
            now
        } else {
            now + Duration::from_secs_f64(short / self.refill_per_sec)
        }
    }

    /// A request succeeded.
    pub(crate) fn refund(&mut self, now: Instant) {
        self.refill(now);
        self.tokens = (self.tokens + SUCCESS_REFUND).min(self.capacity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let b = Backoff::default();
        for _ in 0..50 {
            let d1 = b.delay(CallErrorKind::Transient, 1);
            assert!(
                d1 >= Duration::from_millis(100) && d1 < Duration::from_millis(200),
                "{d1:?}"
            );
            let d3 = b.delay(CallErrorKind::Transient, 3);
            assert!(
                d3 >= Duration::from_millis(400) && d3 < Duration::from_millis(800),
                "{d3:?}"
            );
            let t1 = b.delay(CallErrorKind::Throttling, 1);
            assert!(
                t1 >= Duration::from_millis(200) && t1 < Duration::from_millis(400),
                "{t1:?}"
            );
            let big = b.delay(CallErrorKind::Throttling, 1000);
            assert!(
                big >= Duration::from_secs(5) && big < Duration::from_secs(10),
                "{big:?}"
            );
        }
    }

    #[test]
    fn budget_postpones_when_exhausted_and_recovers() {
        let t0 = Instant::now();
        let mut budget = RetryBudget::new(t0);
        // 100 transient retries drain 500 tokens.
        for _ in 0..100 {
            assert_eq!(budget.acquire(t0, CallErrorKind::Transient), t0);
        }
        // The next one waits for 5 tokens at 10/s.
        let at = budget.acquire(t0, CallErrorKind::Transient);
        assert_eq!(at, t0 + Duration::from_millis(500));
        // Debt accumulates: the one after waits longer.
        let at2 = budget.acquire(t0, CallErrorKind::Throttling);
        assert!(at2 > at);
        // Successes and time repay it.
        let t1 = t0 + Duration::from_secs(10);
        for _ in 0..10 {
            budget.refund(t1);
        }
        assert_eq!(budget.acquire(t1, CallErrorKind::Throttling), t1);
    }
}
