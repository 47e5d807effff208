//! Which leases a worker should take: pure decisions, no I/O and no clock of their own.
//!
//! ```text
//!   list_leases() ──▶ LeaseTracker::observe(snapshot, now)      per lease: the instant its
//!                          │                                      counter last changed
//!                          ▼
//!   plan(snapshot, me, &tracker, now, &config) ──▶ Plan { take, steal, target, .. }
//!                                                     │
//!                          the worker: take_lease(observed, me) for each, in order
//! ```
//!
//! # Expiry
//! A lease is alive while its counter keeps changing: its owner renews it every
//! failover/3. The [`LeaseTracker`] stamps each lease with the local monotonic instant at
//! which a scan first saw its current counter; the lease is expired once that stamp is older
//! than the failover time. No wall clock is ever compared, so clock skew between workers is
//! irrelevant. A lease seen for the first time counts as just changed (a worker that starts
//! cannot tell a dead owner from a live one before watching for one failover time); an
//! unowned lease is free at once.
//!
//! # Rules
//! Finished leases (checkpoint `SHARD_END`) are ignored: they have no work left, so taking
//! one would waste a slot and counting them would skew the balance. Leases whose parents are
//! not finished are taken like any other (the KCL does the same): the shard consumer waits
//! for the parents, and holding the child early means it starts the moment they finish.
//!
//! With `N` unfinished leases and `W` workers (the distinct owners of live leases, plus this
//! one), the target is `min(ceil(N / W), max_leases_per_worker)`. Below the target:
//! 1. **Take** expired and unowned leases, up to the target. Leases unowned or expired for
//!    more than 3 × the failover time first (as the KCL), then in an order that is
//!    pseudo-random per worker (a hash of worker id and lease key), so that workers that
//!    take at the same moment mostly pick different leases instead of colliding.
//! 2. Only when nothing is free, **steal**, one lease at a time from the currently most
//!    loaded worker, as long as that worker holds at least two more than this one would
//!    before the steal, and at most `max_leases_to_steal_at_one_time` per pass.
//!
//! # Why it converges and does not oscillate
//! - A fair assignment (every lease held, counts differing by at most one) is a fixed
//!   point: nothing is free, and no worker holds two more than another, so nobody steals.
//! - Each steal moves one lease from a worker with `v` to one with `m <= v - 2`: the sum of
//!   squared counts drops by `2 (v - m - 1) >= 2`. A quantity that only decreases cannot
//!   cycle, so a single worker acting on fresh snapshots converges.
//! - Any unfair assignment makes its least-loaded worker steal: when the most-loaded holds
//!   `M >= m + 2`, the average exceeds `m`, so `m` is below the target.
//! - Stealing several leases per pass gets a new worker to its share in one pass (the KCL
//!   steals one per pass: minutes of imbalance on scale-out). Workers acting on the same
//!   snapshot can overshoot (two new, still invisible, workers both compute a share with
//!   `W` too small); the next pass corrects it by the same rules, and conditional takes make
//!   sure each lease still has one owner.
//!
//! The tests check these claims as tables of scenarios and by simulation.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::time::Instant;

use super::Lease;

/// Configuration of the assignment. The defaults are the KCL's, except stealing (see
/// [`max_leases_to_steal_at_one_time`](AssignmentConfig::max_leases_to_steal_at_one_time)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AssignmentConfig {
    /// A lease whose counter did not change for this long is expired
    /// (`failoverTimeMillis`, default 10 s).
    pub failover_time: Duration,
    /// The most leases one worker takes (`maxLeasesForWorker`, default unlimited).
    pub max_leases_per_worker: usize,
    /// The most leases one pass steals (`maxLeasesToStealAtOneTime`). Default unlimited:
    /// the balance rule alone bounds a pass, so a new worker reaches its share in one pass.
    /// The KCL's default of 1 makes scale-out take minutes; set a small value to move
    /// leases more gradually.
    pub max_leases_to_steal_at_one_time: usize,
}

impl Default for AssignmentConfig {
    fn default() -> Self {
        AssignmentConfig {
            failover_time: Duration::from_secs(10),
            max_leases_per_worker: usize::MAX,
            max_leases_to_steal_at_one_time: usize::MAX,
        }
    }
}

impl AssignmentConfig {
    /// With this failover time.
    pub fn with_failover_time(mut self, failover_time: Duration) -> Self {
        self.failover_time = failover_time;
        self
    }

    /// With this cap on leases per worker.
    pub fn with_max_leases_per_worker(mut self, max: usize) -> Self {
        self.max_leases_per_worker = max;
        self
    }

    /// With this cap on steals per pass.
    pub fn with_max_leases_to_steal_at_one_time(mut self, max: usize) -> Self {
        self.max_leases_to_steal_at_one_time = max;
        self
    }
}

/// When each lease's counter last changed, on the local monotonic clock.
#[derive(Debug, Clone, Default)]
pub struct LeaseTracker {
    seen: HashMap<String, Seen>,
}

#[derive(Debug, Clone)]
struct Seen {
    counter: u64,
    owner: Option<String>,
    changed_at: Instant,
}

impl LeaseTracker {
    /// A tracker that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a scan made at `now`: leases that are new or whose counter or owner changed
    /// are stamped `now`; leases no longer in the snapshot are forgotten.
    pub fn observe(&mut self, snapshot: &[Lease], now: Instant) {
        let mut seen = HashMap::with_capacity(snapshot.len());
        for lease in snapshot {
            let changed_at = match self.seen.remove(&lease.lease_key) {
                Some(old) if old.counter == lease.counter && old.owner == lease.owner => {
                    old.changed_at
                }
                _ => now,
            };
            seen.insert(
                lease.lease_key.clone(),
                Seen {
                    counter: lease.counter,
                    owner: lease.owner.clone(),
                    changed_at,
                },
            );
        }
        self.seen = seen;
    }

    /// When `lease_key`'s counter last changed, if it was ever seen.
    pub fn last_change(&self, lease_key: &str) -> Option<Instant> {
        self.seen.get(lease_key).map(|s| s.changed_at)
    }

    /// For how long `lease` has been free to take at `now`: `None` while its owner keeps it
    /// alive, [`Duration::MAX`] when it is unowned.
    pub fn expired_for(&self, lease: &Lease, now: Instant, failover: Duration) -> Option<Duration> {
        if lease.owner.is_none() {
            return Some(Duration::MAX);
        }
        let seen = self.seen.get(&lease.lease_key)?;
        if seen.counter != lease.counter || seen.owner != lease.owner {
            // Newer than what was observed: it changed, so it is alive.
            return None;
        }
        let idle = now.saturating_duration_since(seen.changed_at);
        (idle > failover).then(|| idle - failover)
    }

    /// Whether `lease` is unowned or expired at `now`.
    pub fn is_expired(&self, lease: &Lease, now: Instant, failover: Duration) -> bool {
        self.expired_for(lease, now, failover).is_some()
    }
}

/// What one pass of a worker should do. Each lease is as observed: pass it to
/// [`LeaseStore::take_lease`](super::LeaseStore::take_lease), which fails harmlessly with
/// `LeaseLost` if another worker was faster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Plan {
    /// Unowned or expired leases to take.
    pub take: Vec<Lease>,
    /// Live leases to steal from the most loaded workers.
    pub steal: Vec<Lease>,
    /// The worker's share: `min(ceil(N / W), max_leases_per_worker)`.
    pub target: usize,
    /// `W`: workers with live leases, this one included.
    pub workers: usize,
    /// Unfinished leases this worker holds that are alive.
    pub held: usize,
    /// Unowned or expired unfinished leases in the snapshot.
    pub available: usize,
}

impl Plan {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.take.is_empty() && self.steal.is_empty()
    }
}

/// Decides what worker `me` should take or steal, from a snapshot of the whole table, the
/// tracker updated with that snapshot, and the current instant. See the
/// [module docs](self) for the rules.
pub fn plan(
    snapshot: &[Lease],
    me: &str,
    tracker: &LeaseTracker,
    now: Instant,
    config: &AssignmentConfig,
) -> Plan {
    let failover = config.failover_time;
    let mut loads: BTreeMap<&str, Vec<&Lease>> = BTreeMap::new();
    loads.insert(me, Vec::new());
    let mut available = Vec::new();
    let mut unfinished = 0usize;
    for lease in snapshot.iter().filter(|l| !l.is_finished()) {
        unfinished += 1;
        match (tracker.expired_for(lease, now, failover), &lease.owner) {
            (None, Some(owner)) => loads.entry(owner).or_default().push(lease),
            (expired, _) => available.push((expired.unwrap_or(Duration::MAX), lease)),
        }
    }
    let workers = loads.len();
    let target = unfinished
        .div_ceil(workers)
        .min(config.max_leases_per_worker);
    let held = loads[me].len();
    let mut plan = Plan {
        target,
        workers,
        held,
        available: available.len(),
        ..Plan::default()
    };
    if held >= target {
        return plan;
    }
    let need = target - held;

    if !available.is_empty() {
        let very_old = failover.saturating_mul(2); // expired_for counts from the expiry
        available.sort_by_key(|(expired_for, lease)| {
            (*expired_for <= very_old, spread(me, &lease.lease_key))
        });
        plan.take = available
            .into_iter()
            .take(need)
            .map(|(_, lease)| lease.clone())
            .collect();
        return plan;
    }

    // Nothing free: steal, one lease at a time from the most loaded worker.
    let mut victims: Vec<(&str, Vec<&Lease>)> = loads
        .into_iter()
        .filter(|(owner, _)| *owner != me)
        .map(|(owner, mut leases)| {
            // Popped from the end: the lowest spread value goes first.
            leases.sort_by_key(|l| std::cmp::Reverse(spread(me, &l.lease_key)));
            (owner, leases)
        })
        .collect();
    let mut mine = held;
    while mine < target && plan.steal.len() < config.max_leases_to_steal_at_one_time {
        // The most loaded; among equals, one picked per thief, so that thieves spread.
        let Some((_, leases)) = victims
            .iter_mut()
            .max_by_key(|(owner, leases)| (leases.len(), std::cmp::Reverse(spread(me, owner))))
        else {
            break;
        };
        if leases.len() < mine + 2 {
            break;
        }
        if let Some(lease) = leases.pop() {
            plan.steal.push(lease.clone());
            mine += 1;
        }
    }
    plan
}

/// A stable pseudo-random order per worker (FNV-1a, then a SplitMix64 finaliser).
fn spread(me: &str, key: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in me.bytes().chain([0xff]).chain(key.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

#[cfg(test)]
mod tests;
