//! Per-shard rate limiting: two token buckets and throttling feedback.
//!
//! ```text
//!  Kinesis record ──► records bucket (1000/s × rate% × factor) ──┐
//!                └──► bytes bucket (1 MiB/s × rate% × factor)  ──┴─► both have tokens? ─► collector
//!  new shard                     ──► factor = ceiling = 1 ÷ rate% (the nominal capacity) if
//!                                    100 % < rate% ≤ 200 %, else factor = 1; the buckets
//!                                    hold 0.05 s of tokens (0.2 s once refilled)
//!  ProvisionedThroughputExceeded ──► ceiling = factor; factor × 0.9 (at most once per second;
//!                                    × 0.99 if near the last ceiling after 2 quiet seconds,
//!                                    × 0.97 in the second after that or if the ceiling is
//!                                    still the nominal capacity)
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
//! that the rate just crossed the capacity it was found at: the decrease is then gentle, 1 %
//! (3 % if the next second is throttled too: the full decrease there cost the shard 10 % for
//! two seconds). Throttling in consecutive seconds beyond that (the capacity dropped: another
//! writer started) gets the full decrease each second.
//!
//! A new shard starts at its nominal capacity, taken as a ceiling, rather than at the cap: a
//! lone writer is then at the shard's capacity from its first second. Its first throttling
//! says how far the capacity really is below the nominal one (whole records: 20 aggregated
//! records of 51 200 bytes fill 97.7 % of 1 MiB), a guess that gets a 3 % decrease. A writer
//! sharing the shard converges down from 100 % rather than 150 %, and a shard that accepts
//! more is found by the fast growth past the ceiling, up to the cap. (Started at the cap, each
//! of the first seconds was filled early, then throttled to its end, until five decreases
//! had brought the rate down.) A cap above twice the nominal capacity says the limiter was
//! opened on purpose (an emulator without limits, records sent before the shard map is
//! known): the factor starts at 1. The buckets start with a twentieth of a second of tokens,
//! not full: Kinesis counts a shard's writes per second (ferrokinesis in seconds that begin
//! with a request), and a burst at the start fills part of the first one's allowance at once.
//!
//! With one shard at its limit (100-byte records, aggregated), this keeps it 95 % busy over a
//! whole run, the first seconds included, with a throttled request every 4 seconds; starting
//! at 150 % got 94–95 % (95–96 % from the sixth second on) with throttling in each of the
//! first five seconds, and plain AIMD 93–95 % (`docs/BENCHMARKS.md`).
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
const DECREASE_NEAR: f64 = 0.99;
/// The decrease for a throttling in the second after a `DECREASE_NEAR` (that was not quite
/// enough), and for the first throttling near the nominal capacity a new shard starts at
/// (that ceiling was a guess, not a measure).
const DECREASE_AGAIN: f64 = 0.97;
const QUIET: Duration = Duration::from_secs(2);
/// Kinesis enforces its limits per second, and one throttled second reports many throttled
/// entries over several requests: one decrease per second, not one per entry.
const DECREASE_WINDOW: Duration = Duration::from_secs(1);
/// Seconds of tokens a shard's buckets hold. Small, so that records go out evenly: a burst
/// of a whole second's tokens at once fills the shard's per-second allowance early and gets
/// the rest of the second throttled.
const BURST_SECS: f64 = 0.2;
/// Seconds of tokens a new shard's buckets hold at first: one aggregated record of the
/// default 51 200 bytes at the nominal 1 MiB/s, not a burst.
const START_SECS: f64 = 0.05;
/// A cap up to this multiple of the nominal capacity is one the shard is expected to enforce
/// (the KPL's default is 1.5): the factor starts at the nominal capacity. Above it, at the cap.
const START_AT_NOMINAL_UP_TO: f64 = 2.0;

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
        Self::starting_with(rate, 1.0, 1.0, now)
    }

    /// A bucket refilling at `rate` tokens per second up to `burst` seconds of tokens, that
    /// holds `start` seconds' worth now.
    pub(crate) fn starting_with(rate: f64, burst: f64, start: f64, now: Instant) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: rate * start.min(burst),
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
    /// Whether the last decrease was the gentlest, [`DECREASE_NEAR`].
    last_gentle: bool,
    /// Since when the factor has been growing (the last success or decrease).
    last_increase: Instant,
}

impl ShardLimiter {
    /// `rate_limit_percent`: 150 means 150 % of 1000 records/s and 1 MiB/s.
    pub(crate) fn new(rate_limit_percent: u32, now: Instant) -> Self {
        let base = f64::from(rate_limit_percent.max(1)) / 100.0;
        // The nominal capacity, as if the shard had throttled there (see the module doc).
        let nominal = (base > 1.0 && base <= START_AT_NOMINAL_UP_TO).then_some(1.0 / base);
        let factor = nominal.unwrap_or(1.0);
        let bucket = |per_sec: f64| {
            TokenBucket::starting_with(per_sec * base * factor, BURST_SECS, START_SECS, now)
        };
        ShardLimiter {
            records: bucket(SHARD_RECORDS_PER_SEC),
            bytes: bucket(SHARD_BYTES_PER_SEC),
            base,
            factor,
            ceiling: nominal,
            last_decrease: None,
            last_gentle: false,
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
        let decrease = match (self.probing(), quiet) {
            // The first throttling, near the nominal capacity a new shard starts at.
            (true, true) if self.last_decrease.is_none() => DECREASE_AGAIN,
            (true, true) => DECREASE_NEAR,
            // One percent was not quite enough: the rate is still near the ceiling.
            (true, false) if self.last_gentle => DECREASE_AGAIN,
            _ => DECREASE,
        };
        self.last_gentle = decrease == DECREASE_NEAR;
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
        let start = Instant::now();
        let mut l = ShardLimiter::new(100, start);
        // Once full, the buckets hold 0.2 s: 200 records, 209715 bytes. Bytes run out first.
        let t0 = start + Duration::from_secs(1);
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
        // At 100 % the factor starts at 1 with no ceiling: plain AIMD until the first decrease.
        let mut l = ShardLimiter::new(100, t0);
        assert_eq!(l.records_rate(), 1000.0);
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
        // Throttled again the next second: one percent was not enough, three...
        let f = l.factor();
        t += Duration::from_secs(1);
        l.on_throttled(t);
        assert!((l.factor() - f * DECREASE_AGAIN).abs() < 1e-9);
        // ...and again: the capacity dropped, the full decrease every second.
        for _ in 0..3 {
            let f = l.factor();
            t += Duration::from_secs(1);
            l.on_throttled(t);
            assert!((l.factor() - f * DECREASE).abs() < 1e-9);
        }
    }

    #[test]
    fn a_new_shard_starts_at_its_nominal_capacity_and_probes_above_it() {
        let t0 = Instant::now();
        let mut l = ShardLimiter::new(150, t0);
        let nominal = 1.0 / 1.5;
        assert!((l.records_rate() - SHARD_RECORDS_PER_SEC).abs() < 1e-6);
        assert!((l.factor() - nominal).abs() < 1e-9);
        // Unthrottled, it probes slowly above the nominal capacity, as near a ceiling.
        let mut t = t0 + Duration::from_secs(1);
        l.on_success(t);
        assert!((l.factor() - (nominal + INCREASE_PER_SEC * PROBE_SHARE)).abs() < 1e-9);
        // Past it (the shard accepts more): fast again, up to the cap and no further.
        while l.factor() < nominal * PROBE_TO {
            t += Duration::from_secs(1);
            l.on_success(t);
        }
        let past = l.factor();
        t += Duration::from_secs(1);
        l.on_success(t);
        assert!((l.factor() - (past + INCREASE_PER_SEC)).abs() < 1e-9);
        for _ in 0..20 {
            t += Duration::from_secs(1);
            l.on_success(t);
        }
        assert_eq!(l.factor(), 1.0);
        assert!((l.records_rate() - 1.5 * SHARD_RECORDS_PER_SEC).abs() < 1e-6);
    }

    #[test]
    fn a_shared_shard_converges_down_from_the_nominal_capacity() {
        let t0 = Instant::now();
        let mut l = ShardLimiter::new(150, t0);
        let nominal = 1.0 / 1.5;
        // Throttled at once: where it started was only a guess near the capacity, so the
        // first decrease is a gentle one...
        l.on_throttled(t0 + Duration::from_millis(300));
        assert!((l.factor() - nominal * DECREASE_AGAIN).abs() < 1e-9);
        // ...and every further throttled second gets the full one, down to the floor.
        let mut want = nominal * DECREASE_AGAIN;
        for i in 1..=7 {
            l.on_throttled(t0 + Duration::from_millis(300 + 1000 * i));
            want *= DECREASE;
            assert!((l.factor() - want).abs() < 1e-9, "{i}: {}", l.factor());
        }
        // Half the nominal capacity after 8 throttled seconds (from 150 % it took 11).
        assert!(want < nominal / 2.0);
        for i in 8..200 {
            l.on_throttled(t0 + Duration::from_secs(i));
        }
        assert_eq!(l.factor(), MIN_FACTOR);
    }

    #[test]
    fn a_cap_at_or_below_nominal_or_above_twice_it_is_where_a_shard_starts() {
        let t0 = Instant::now();
        let rate = |percent| ShardLimiter::new(percent, t0).records_rate();
        assert_eq!(rate(50), 500.0);
        assert_eq!(rate(100), 1000.0);
        assert!((rate(101) - 1000.0).abs() < 1e-6);
        assert!((rate(200) - 1000.0).abs() < 1e-6);
        // Above: the limiter was opened on purpose (or the records' shard is unknown).
        assert!((rate(201) - 2010.0).abs() < 1e-6);
        assert_eq!(rate(100_000), 1_000_000.0);
        let unmapped = ShardLimiter::new(u32::MAX / 1000, t0);
        assert_eq!(unmapped.factor(), 1.0);
        assert_eq!(ShardLimiter::new(100, t0).ceiling, None);
    }

    #[test]
    fn a_new_shard_starts_with_a_twentieth_of_a_second_of_tokens() {
        let t0 = Instant::now();
        let mut l = ShardLimiter::new(150, t0);
        // At the nominal 1000 records/s: 50 records at once, not the 200 of a full bucket.
        for _ in 0..50 {
            l.try_take(t0, 1).unwrap();
        }
        assert!(l.try_take(t0, 1).is_err());
        // At 1 MiB/s: one aggregated record of the default 51 200 bytes (and its key) at once.
        let mut l = ShardLimiter::new(150, t0);
        l.try_take(t0, 51_456).unwrap();
        assert!(l.try_take(t0, 1_000).is_err());
        // A record above the starting tokens waits until the bucket is full (0.2 s).
        let mut l = ShardLimiter::new(150, t0);
        let at = l.try_take(t0, 1024 * 1024).unwrap_err();
        let full = t0 + Duration::from_secs_f64(BURST_SECS - START_SECS);
        assert!(
            at >= full && at <= full + Duration::from_millis(1),
            "{at:?}"
        );
        l.try_take(at, 1024 * 1024).unwrap();
        // Later, the buckets fill up to 0.2 s as before.
        let mut l = ShardLimiter::new(150, t0);
        let t1 = t0 + Duration::from_secs(5);
        for _ in 0..200 {
            l.try_take(t1, 1).unwrap();
        }
        assert!(l.try_take(t1, 1).is_err());
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
