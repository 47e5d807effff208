//! Per-shard rate limiting: two token buckets and throttling feedback.
//!
//! ```text
//!  Kinesis record ──► records bucket (1000/s × rate%) ──┐
//!                └──► bytes bucket (1 MiB/s × rate%)  ──┴─► both have tokens? ─► collector
//!  ProvisionedThroughputExceeded ──► ceiling = factor; factor × 0.9 (at most once per second;
//!                                    × 0.97 if near the last ceiling after 2 quiet seconds)
//!  successful request            ──► factor + 0.05 per second since the last change (≤ 1;
//!                                    none in the second after a decrease), a twentieth
//!                                    of that within [0.97, 1.05] × ceiling
//! ```
//!
//! The KPL limits at 150 % of the shard's nominal capacity by default and never reacts to
//! throttling; a shard shared with other writers then throttles forever. Here the effective
//! rate is `nominal × rate% × factor`, and the factor follows additive-increase /
//! multiplicative-decrease, so a producer converges to what the shard actually accepts.
//!
//! Plain AIMD spends half of each cycle well below the capacity it found. So the rate at the
//! last throttling is kept as a ceiling: after a decrease the factor climbs back quickly to
//! just under it, then probes slowly around it (as TCP CUBIC does around its last maximum),
//! and quickly again once well past it (the shard's capacity grew: another writer stopped).
//! A throttling that comes while probing near the ceiling, after quiet seconds, only says
//! that the rate just crossed the capacity it was found at: the decrease is then gentle.
//! Throttling in consecutive seconds (the capacity dropped: another writer started) gets the
//! full decrease each second. With one shard at its limit, this keeps it 95–96 % busy with
//! a throttled request every second or two, where plain AIMD got 93–95 % with two or three
//! per second (`docs/BENCHMARKS.md`).
//!
//! Time is passed in, never read, so the arithmetic is tested without a clock.

use std::time::Duration;

use tokio::time::Instant;

/// Kinesis' per-shard write limits.
pub(crate) const SHARD_RECORDS_PER_SEC: f64 = 1000.0;
pub(crate) const SHARD_BYTES_PER_SEC: f64 = 1024.0 * 1024.0;

/// Lowest factor the feedback can reach: never stop a shard entirely.
const MIN_FACTOR: f64 = 0.05;
/// Multiplicative decrease on throttling. Gentle: the mean rate of an AIMD sawtooth is about
/// `(1 + DECREASE) / 2` of the shard's capacity, so halving would waste a quarter of it.
const DECREASE: f64 = 0.9;
/// Additive increase per second without throttling, in units of the factor (time-based, so
/// that it does not depend on how many requests carry a shard's records).
const INCREASE_PER_SEC: f64 = 0.05;
/// Within `[PROBE_FROM, PROBE_TO] × ceiling`, the increase is `PROBE_SHARE` of the above.
const PROBE_FROM: f64 = 0.97;
const PROBE_TO: f64 = 1.05;
const PROBE_SHARE: f64 = 0.05;
/// The decrease for a throttling while probing near the ceiling after `QUIET` without one.
const DECREASE_NEAR: f64 = 0.97;
const QUIET: Duration = Duration::from_secs(2);
/// Kinesis enforces its limits per second, and one throttled second reports many throttled
/// entries over several requests: one decrease per second, not one per entry.
const DECREASE_WINDOW: Duration = Duration::from_secs(1);
/// Seconds of tokens a shard's buckets hold. Small, so that records go out evenly: a burst
/// of a whole second's tokens at once fills the shard's per-second allowance early and gets
/// the rest of the second throttled.
const BURST_SECS: f64 = 0.2;

/// A token bucket holding up to `burst` seconds of tokens.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: f64,
    /// Seconds of tokens the bucket holds at most.
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket of one second of tokens, refilling at `rate` tokens per second.
    #[cfg(test)]
    pub(crate) fn new(rate: f64, now: Instant) -> Self {
        Self::with_burst(rate, 1.0, now)
    }

    /// A full bucket of `burst` seconds of tokens, refilling at `rate` tokens per second.
    pub(crate) fn with_burst(rate: f64, burst: f64, now: Instant) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: rate * burst,
            last: now,
        }
    }

    fn capacity(&self) -> f64 {
        self.rate * self.burst
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.capacity());
        self.last = now;
    }

    /// Takes `cost` tokens, or says when enough will be there.
    ///
    /// A cost above the bucket's capacity (a 1 MiB record on a slowed shard) is allowed once
    /// the bucket is full, leaving it in debt: otherwise such a record could never go.
    pub(crate) fn try_take(&mut self, now: Instant, cost: f64) -> Result<(), Instant> {
        self.refill(now);
        let need = cost.min(self.capacity());
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
        self.tokens = (self.tokens + cost).min(self.capacity());
    }

    fn set_rate(&mut self, now: Instant, rate: f64) {
        self.refill(now);
        self.rate = rate;
        self.tokens = self.tokens.min(self.capacity());
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
    /// The factor when the shard last throttled: about where its capacity was found.
    ceiling: Option<f64>,
    last_decrease: Option<Instant>,
    /// Since when the factor has been growing (the last success or decrease).
    last_increase: Instant,
}

impl ShardLimiter {
    /// `rate_limit_percent`: 150 means 150 % of 1000 records/s and 1 MiB/s.
    pub(crate) fn new(rate_limit_percent: u32, now: Instant) -> Self {
        let base = f64::from(rate_limit_percent.max(1)) / 100.0;
        ShardLimiter {
            records: TokenBucket::with_burst(SHARD_RECORDS_PER_SEC * base, BURST_SECS, now),
            bytes: TokenBucket::with_burst(SHARD_BYTES_PER_SEC * base, BURST_SECS, now),
            base,
            factor: 1.0,
            ceiling: None,
            last_decrease: None,
            last_increase: now,
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
        let quiet = self
            .last_decrease
            .is_none_or(|t| now.saturating_duration_since(t) >= QUIET);
        let decrease = if quiet && self.probing() {
            DECREASE_NEAR
        } else {
            DECREASE
        };
        self.last_decrease = Some(now);
        // No increase for a second: requests sent before this one was answered are still
        // coming back throttled, and growing meanwhile would undo the decrease (converging
        // from 150 % took twice as long).
        self.last_increase = now + DECREASE_WINDOW;
        self.ceiling = Some(self.factor);
        self.factor = (self.factor * decrease).max(MIN_FACTOR);
        self.apply(now);
    }

    /// A request to this shard went through unthrottled: speed up a little.
    pub(crate) fn on_success(&mut self, now: Instant) {
        let dt = now
            .saturating_duration_since(self.last_increase)
            .as_secs_f64();
        self.last_increase = self.last_increase.max(now);
        if self.factor < 1.0 {
            let step = if self.probing() {
                INCREASE_PER_SEC * PROBE_SHARE
            } else {
                INCREASE_PER_SEC
            };
            // A long quiet spell is not a proof of capacity: at most one second's worth.
            self.factor = (self.factor + step * dt.min(1.0)).min(1.0);
            self.apply(now);
        }
    }

    /// Whether the factor is near the last ceiling, where the capacity was found.
    fn probing(&self) -> bool {
        self.ceiling
            .is_some_and(|c| (c * PROBE_FROM..c * PROBE_TO).contains(&self.factor))
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
        // The buckets hold 0.2 s: 200 records, 209715 bytes. Bytes run out first.
        l.try_take(t0, 200_000).unwrap();
        assert!(l.try_take(t0, 10_000).is_err());
        // The failed take gave its record token back: 199 remain for tiny records.
        for _ in 0..199 {
            l.try_take(t0, 1).unwrap();
        }
        assert!(l.try_take(t0, 1).is_err());
        // A second later the buckets are full again, not fuller.
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..200 {
            l.try_take(t1, 1).unwrap();
        }
        assert!(l.try_take(t1, 1).is_err());
    }

    #[test]
    fn aimd_decreases_once_per_second_and_recovers_with_time() {
        let t0 = Instant::now();
        let mut l = ShardLimiter::new(150, t0);
        assert_eq!(l.records_rate(), 1500.0);
        l.on_throttled(t0);
        l.on_throttled(t0 + Duration::from_millis(500)); // same second: ignored
        assert_eq!(l.factor(), DECREASE);
        l.on_throttled(t0 + Duration::from_millis(1000));
        assert!((l.factor() - DECREASE * DECREASE).abs() < 1e-9);
        // Successes add INCREASE_PER_SEC per second, however many there are.
        // Nothing comes back in the second after a decrease.
        let f = l.factor();
        l.on_success(t0 + Duration::from_millis(1900));
        assert_eq!(l.factor(), f);
        for i in 1..=100 {
            l.on_success(t0 + Duration::from_millis(2000 + 10 * i));
        }
        assert!(
            (l.factor() - (f + INCREASE_PER_SEC)).abs() < 1e-9,
            "{}",
            l.factor()
        );
        // An idle hour counts as one second.
        l.on_success(t0 + Duration::from_secs(3600));
        assert!((l.factor() - (f + 2.0 * INCREASE_PER_SEC)).abs() < 1e-9);
        for i in 0..100 {
            l.on_success(t0 + Duration::from_secs(3601 + i));
        }
        assert_eq!(l.factor(), 1.0);
        for i in 0..100 {
            l.on_throttled(t0 + Duration::from_secs(4000 + i));
        }
        assert_eq!(l.factor(), MIN_FACTOR);
    }

    #[test]
    fn growth_is_fast_below_the_last_ceiling_and_slow_around_it() {
        let t0 = Instant::now();
        let mut l = ShardLimiter::new(100, t0);
        for i in 0..4 {
            l.on_throttled(t0 + Duration::from_secs(i));
        }
        let ceiling = DECREASE.powi(3);
        let low = l.factor();
        assert!((low - ceiling * DECREASE).abs() < 1e-9);
        // Far below the ceiling: the full increase.
        let mut t = t0 + Duration::from_secs(4);
        t += Duration::from_secs(1);
        l.on_success(t);
        assert!((l.factor() - (low + INCREASE_PER_SEC)).abs() < 1e-9);
        // Climb until within reach of the ceiling, then a twentieth per second.
        while l.factor() < ceiling * PROBE_FROM {
            t += Duration::from_secs(1);
            l.on_success(t);
        }
        let near = l.factor();
        t += Duration::from_secs(1);
        l.on_success(t);
        assert!((l.factor() - (near + INCREASE_PER_SEC * PROBE_SHARE)).abs() < 1e-9);
        // Well past it (the shard's capacity grew): fast again.
        while l.factor() < ceiling * PROBE_TO {
            t += Duration::from_secs(1);
            l.on_success(t);
        }
        let past = l.factor();
        t += Duration::from_secs(1);
        l.on_success(t);
        assert!((l.factor() - (past + INCREASE_PER_SEC).min(1.0)).abs() < 1e-9);
    }

    #[test]
    fn an_isolated_throttling_near_the_ceiling_decreases_gently() {
        let t0 = Instant::now();
        let mut l = ShardLimiter::new(100, t0);
        l.on_throttled(t0);
        let ceiling = 1.0;
        let mut t = t0;
        while l.factor() < ceiling * PROBE_FROM {
            t += Duration::from_secs(1);
            l.on_success(t);
        }
        // Probing, quiet for more than two seconds: a gentle decrease.
        let f = l.factor();
        t += Duration::from_secs(1);
        l.on_throttled(t);
        assert!((l.factor() - f * DECREASE_NEAR).abs() < 1e-9);
        // Throttled again the next second: the capacity dropped, the full decrease.
        let f = l.factor();
        t += Duration::from_secs(1);
        l.on_throttled(t);
        assert!((l.factor() - f * DECREASE).abs() < 1e-9);
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
