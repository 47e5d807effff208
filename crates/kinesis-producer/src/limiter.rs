//! Per-shard rate limiting: two token buckets and throttling feedback.
//!
//! ```text
//!  Kinesis record ──► records bucket (1000/s × rate%) ──┐
//!                └──► bytes bucket (1 MiB/s × rate%)  ──┴─► both have tokens? ─► collector
//!  ProvisionedThroughputExceeded ──► factor × 0.5 (at most once per 100 ms)
//!  successful request            ──► factor + 0.05 (up to 1.0)
//! ```
//!
//! The KPL limits at 150 % of the shard's nominal capacity by default and never reacts to
//! throttling; a shard shared with other writers then throttles forever. Here the effective
//! rate is `nominal × rate% × factor`, and the factor follows additive-increase /
//! multiplicative-decrease, so a producer converges to what the shard actually accepts.
//!
//! Time is passed in, never read, so the arithmetic is tested without a clock.

use std::time::Duration;

use tokio::time::Instant;

/// Kinesis' per-shard write limits.
pub(crate) const SHARD_RECORDS_PER_SEC: f64 = 1000.0;
pub(crate) const SHARD_BYTES_PER_SEC: f64 = 1024.0 * 1024.0;

/// Lowest factor the feedback can reach: never stop a shard entirely.
const MIN_FACTOR: f64 = 0.05;
const DECREASE: f64 = 0.5;
const INCREASE: f64 = 0.05;
/// One throttled request reports many throttled entries and several requests may be in
/// flight: one decrease per window, not one per entry.
const DECREASE_WINDOW: Duration = Duration::from_millis(100);

/// A token bucket holding up to one second of tokens.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket refilling at `rate` tokens per second.
    pub(crate) fn new(rate: f64, now: Instant) -> Self {
        TokenBucket {
            rate,
            tokens: rate,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.rate);
        self.last = now;
    }

    /// Takes `cost` tokens, or says when enough will be there.
    ///
    /// A cost above the bucket's capacity (a 1 MiB record on a slowed shard) is allowed once
    /// the bucket is full, leaving it in debt: otherwise such a record could never go.
    pub(crate) fn try_take(&mut self, now: Instant, cost: f64) -> Result<(), Instant> {
        self.refill(now);
        let need = cost.min(self.rate);
        if self.tokens >= need {
            self.tokens -= cost;
            Ok(())
        } else {
            let wait = (need - self.tokens) / self.rate;
            Err(now + Duration::from_secs_f64(wait.max(0.000_1)))
        }
    }

    /// Gives back tokens taken by `try_take` (when the other bucket refused).
    fn give_back(&mut self, cost: f64) {
        self.tokens = (self.tokens + cost).min(self.rate);
    }

    fn set_rate(&mut self, now: Instant, rate: f64) {
        self.refill(now);
        self.rate = rate;
        self.tokens = self.tokens.min(rate);
    }

    #[cfg(test)]
    pub(crate) fn rate(&self) -> f64 {
        self.rate
    }
}

/// The limiter of one shard.
#[derive(Debug, Clone)]
pub(crate) struct ShardLimiter {
    records: TokenBucket,
    bytes: TokenBucket,
    /// `rate_limit / 100`: the configured share of the shard's nominal capacity.
    base: f64,
    /// Throttling feedback, in [`MIN_FACTOR`, 1].
    factor: f64,
    last_decrease: Option<Instant>,
}

impl ShardLimiter {
    /// `rate_limit_percent`: 150 means 150 % of 1000 records/s and 1 MiB/s.
    pub(crate) fn new(rate_limit_percent: u32, now: Instant) -> Self {
        let base = f64::from(rate_limit_percent.max(1)) / 100.0;
        ShardLimiter {
            records: TokenBucket::new(SHARD_RECORDS_PER_SEC * base, now),
            bytes: TokenBucket::new(SHARD_BYTES_PER_SEC * base, now),
            base,
            factor: 1.0,
            last_decrease: None,
        }
    }

    /// Takes the tokens for one Kinesis record of `bytes` billed bytes, or says when to try
    /// again.
    pub(crate) fn try_take(&mut self, now: Instant, bytes: usize) -> Result<(), Instant> {
        self.records.try_take(now, 1.0)?;
        if let Err(at) = self.bytes.try_take(now, bytes as f64) {
            self.records.give_back(1.0);
            return Err(at);
        }
        Ok(())
    }

    /// The shard said ProvisionedThroughputExceeded: slow down.
    pub(crate) fn on_throttled(&mut self, now: Instant) {
        if self
            .last_decrease
            .is_some_and(|t| now.saturating_duration_since(t) < DECREASE_WINDOW)
        {
            return;
        }
        self.last_decrease = Some(now);
        self.factor = (self.factor * DECREASE).max(MIN_FACTOR);
        self.apply(now);
    }

    /// A request to this shard went through unthrottled: speed up a little.
    pub(crate) fn on_success(&mut self, now: Instant) {
        if self.factor < 1.0 {
            self.factor = (self.factor + INCREASE).min(1.0);
            self.apply(now);
        }
    }

    fn apply(&mut self, now: Instant) {
        let f = self.base * self.factor;
        self.records.set_rate(now, SHARD_RECORDS_PER_SEC * f);
        self.bytes.set_rate(now, SHARD_BYTES_PER_SEC * f);
    }

    #[cfg(test)]
    pub(crate) fn factor(&self) -> f64 {
        self.factor
    }

    /// Current records-per-second rate.
    #[cfg(test)]
    pub(crate) fn records_rate(&self) -> f64 {
        self.records.rate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bucket_refills_at_rate_and_caps_at_one_second() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000.0, t0);
        for _ in 0..1000 {
            b.try_take(t0, 1.0).unwrap();
        }
        let at = b.try_take(t0, 1.0).unwrap_err();
        assert!(at > t0 && at <= t0 + Duration::from_millis(2));
        // 10 ms later: 10 tokens.
        let t1 = t0 + Duration::from_millis(10);
        for _ in 0..10 {
            b.try_take(t1, 1.0).unwrap();
        }
        assert!(b.try_take(t1, 1.0).is_err());
        // A long idle period does not bank more than one second.
        let t2 = t1 + Duration::from_secs(60);
        b.try_take(t2, 1000.0).unwrap();
        assert!(b.try_take(t2, 1.0).is_err());
    }

    #[test]
    fn oversized_cost_goes_when_full_and_leaves_debt() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100.0, t0);
        b.try_take(t0, 250.0).unwrap();
        // 150 tokens of debt plus 1: 1.51 s.
        let at = b.try_take(t0, 1.0).unwrap_err();
        assert!(at >= t0 + Duration::from_millis(1500), "{at:?}");
    }

    #[test]
    fn limiter_needs_both_buckets_and_gives_back() {
        let t0 = Instant::now();
        let mut l = ShardLimiter::new(100, t0);
        // Bytes run out first: 1 MiB.
        l.try_take(t0, 1024 * 1024).unwrap();
        assert!(l.try_take(t0, 10).is_err());
        // The failed take gave its record token back: 999 remain for tiny records later.
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..1000 {
            l.try_take(t1, 1).unwrap();
        }
        assert!(l.try_take(t1, 1).is_err());
    }

    #[test]
    fn aimd_halves_once_per_window_and_recovers() {
        let t0 = Instant::now();
        let mut l = ShardLimiter::new(150, t0);
        assert_eq!(l.records_rate(), 1500.0);
        l.on_throttled(t0);
        l.on_throttled(t0 + Duration::from_millis(50)); // same window: ignored
        assert_eq!(l.factor(), 0.5);
        assert_eq!(l.records_rate(), 750.0);
        l.on_throttled(t0 + Duration::from_millis(150));
        assert_eq!(l.factor(), 0.25);
        for i in 0..100 {
            l.on_success(t0 + Duration::from_millis(200 + i));
        }
        assert_eq!(l.factor(), 1.0);
        for i in 0..100 {
            l.on_throttled(t0 + Duration::from_secs(1 + i));
        }
        assert_eq!(l.factor(), MIN_FACTOR);
    }

    proptest! {
        /// Over any schedule of takes, a bucket never hands out more than its capacity plus
        /// rate × elapsed time (no oversized costs here).
        #[test]
        fn never_exceeds_rate(steps in proptest::collection::vec((0u64..50, 1u32..20), 1..200)) {
            let t0 = Instant::now();
            let mut b = TokenBucket::new(100.0, t0);
            let mut now = t0;
            let mut taken = 0.0;
            for (dt, cost) in steps {
                now += Duration::from_millis(dt);
                if b.try_take(now, f64::from(cost)).is_ok() {
                    taken += f64::from(cost);
                }
            }
            let allowed = 100.0 + 100.0 * now.duration_since(t0).as_secs_f64();
            prop_assert!(taken <= allowed + 1e-6, "{taken} > {allowed}");
        }

        /// When the bucket says "try at t", trying at t succeeds.
        #[test]
        fn retry_time_is_honest(pre in 0u32..100, cost in 1u32..100) {
            let t0 = Instant::now();
            let mut b = TokenBucket::new(100.0, t0);
            let _ = b.try_take(t0, f64::from(pre));
            let _ = b.try_take(t0, 100.0 - f64::from(pre));
            if let Err(at) = b.try_take(t0, f64::from(cost)) {
                prop_assert!(b.try_take(at + Duration::from_micros(1), f64::from(cost)).is_ok());
            }
        }
    }
}
