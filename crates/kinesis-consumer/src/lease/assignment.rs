//! Which leases a worker should take: a pure planner, and the taker that carries a plan out.
//!
//! ```text
//!   Taker::pass ── list_leases() ──▶ LeaseTracker::observe(snapshot, now)   per lease: the instant
//!                                          │                                  its counter last changed
//!                                          ▼
//!          plan(snapshot, me, &tracker, now, &config) ──▶ Plan { take, steal, target, .. }
//!                                          │   pure: no I/O, no clock of its own
//!                                          ▼
//!          take_lease(observed, me), each conditional ── a race lost? scan again, plan once more
//!                                          │
//!                                          ▼
//!          TakePass { taken, snapshot, .. } ──▶ the worker starts a shard consumer per taken lease
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
//! # One assignment, computed the same way by every worker
//! Finished leases (checkpoint `SHARD_END`) are ignored: they have no work left. Leases whose
//! parents are not finished count like any other (the shard consumer waits for the parents).
//! From a snapshot, every worker computes the whole fleet's assignment, by rules that do not
//! depend on who computes, and carries out its own part:
//! 1. **Workers**: the distinct owners of live leases, plus the planning worker. `N`
//!    unfinished leases, `W` workers.
//! 2. **Targets**: `floor(N / W)` each, and one more for `N mod W` of them: first those
//!    already holding more than `floor(N / W)`, so that as few leases as possible move, then
//!    in the order of a hash of the worker id. With `max_leases_per_worker` = `C` and
//!    `N >= W × C`, every target is `C`.
//! 3. **Pool**: the free leases (unowned or expired; expired for more than 3 × the failover
//!    time first, as in the KCL), then the leases that workers above their target give up:
//!    their first ones in the order of a hash of the lease key.
//! 4. **Hand-out**: the workers below their target, in the order of a hash of their id, each
//!    take what they lack from the pool, free leases first, each in its own order (a hash of
//!    its id and the lease key), stealing (taking a live lease) at most
//!    `max_leases_to_steal_at_one_time` times per pass.
//!
//! The planning worker's share of step 4 is its [`Plan`]. The pool holds exactly what the
//! workers below target lack (free leases plus surplus), so one pass can reach a fair
//! assignment: the KCL steals one lease per pass, from the most loaded worker only, and only
//! when nothing is free (minutes of imbalance after a scale-out: KCL issues #708, #332).
//! Each receiver's own order changes nothing when the views agree, and makes workers that
//! act on different pictures (a fleet starting together) pick mostly different leases
//! instead of racing for the same ones in the same order.
//!
//! The [`Taker`] carries the plan out 16 takes at a time (a pass of hundreds of takes must
//! not hold up the worker's renewals). A steal that lost only to the owner's renewal (same
//! owner, newer counter, as the failed write returns it) is tried again at once. Any other
//! lost race means the snapshot was stale: the rest of the plan is dropped, and the taker
//! scans again and plans from what it now sees, once per pass.
//!
//! # Why it converges within two passes and then stays put
//! - **Fixed point.** In a fair assignment (every lease held, counts `floor` or `ceil`),
//!   the `N mod W` workers holding `ceil` are exactly the ones holding more than `floor`,
//!   so they get the `ceil` targets: every target equals what is held, and nothing moves
//!   (no churn on idle shards).
//! - **No overshoot.** A plan never takes its worker beyond its own target, and takes from
//!   a worker only what exceeds that worker's target in the same view.
//! - **Every worker visible, one snapshot**: all plans are parts of one assignment, disjoint,
//!   and applying them gives that assignment: fair after one pass.
//! - **One invisible worker.** A worker that holds nothing does not appear in the table (it
//!   has no lease to own), so its plan counts one worker more than the others' (a worker
//!   joining). Donors give up leases in an order that does not depend on the planner, so what
//!   the two views take from a donor are nested sets and it keeps at least the smaller of its
//!   two targets (at least one lease when `N > W`). If any of the newcomer's takes succeeds,
//!   everybody sees everybody at the next pass: fair after two. If all of them lose races,
//!   the others' plans were applied undisturbed (fair without the newcomer), and the
//!   newcomer's next plan is the only one left: fair after two as well.
//! - **Several invisible workers** (a fleet starting at once) each plan as the only
//!   newcomer, from the same pool: the first writes win and the others lose races, then scan
//!   again and plan with the newcomers before them; the last one's plan completes the
//!   assignment. Donors still give up only nested sets, so nobody is left below its share.
//!
//! The unit tests check these claims by proptest (any table of up to 80 leases, 8 live
//! workers, some invisible, and dead ones; every worker's pass applied in turn, from one
//! snapshot or each from the table as the previous one left it: fair within two rounds,
//! then not a single move), running the real [`Taker`] on the in-memory store.
//! `examples/sim_balance.rs` measures it with 1 000 leases and 50 workers acting at
//! independent times, and `tests/balancing.rs` with real workers.
//!
//! # Sharing a table with Java KCL 2.x workers
//! Nothing here writes anything but the KCL 2.x attributes (a take is the KCL's conditional
//! `leaseOwner`/`leaseCounter` update). A fair assignment is also a fixed point of the KCL's
//! rule (target `ceil(N / W)`; a worker one short of it steals only from a worker above
//! it), so a mixed fleet settles instead of fighting; a Java worker still moves at most its
//! one lease per pass.
//!
//! # Why balancing counts leases, not throughput
//! The KCL 3.x balances by per-lease throughput and worker CPU. Not here, on purpose: the
//! other workers would have to learn each lease's throughput, which means an extra attribute
//! written at every renewal and a fleet-wide opinion of it; a Java KCL 2.x worker sharing the
//! table balances by count and would steal back whatever a throughput rule moved (ping-pong);
//! a shard's read rate is capped at 2 MB/s, so counts are a fair proxy once a worker holds
//! more than a few shards; and throughput changes over time, so a rule that follows it moves
//! leases (each move restarts a shard consumer and replays from the checkpoint) on shards
//! that are merely idle now and then (the KCL 3.x's own churn on idle shards, PR #1814).

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{Instrument, debug, info, warn};

use super::{Lease, LeaseError, LeaseStore};

/// Takes a [`Taker`] has in flight at once.
const TAKES_IN_FLIGHT: usize = 16;

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
    /// a plan never takes more than its worker's share, so a new worker reaches its share
    /// in one pass. The KCL's default of 1 makes scale-out take minutes; set a small value
    /// to move leases more gradually (convergence then takes more passes).
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
    /// Live leases to steal from workers above their target.
    pub steal: Vec<Lease>,
    /// The worker's share: `floor(N / W)` or `ceil(N / W)`, at most `max_leases_per_worker`.
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
    // Live leases per owner, and the free ones with how long they have been free.
    let mut loads: BTreeMap<&str, Vec<&Lease>> = BTreeMap::new();
    loads.insert(me, Vec::new());
    let mut free = Vec::new();
    let mut unfinished = 0usize;
    for lease in snapshot.iter().filter(|l| !l.is_finished()) {
        unfinished += 1;
        match (tracker.expired_for(lease, now, failover), &lease.owner) {
            (None, Some(owner)) => loads.entry(owner).or_default().push(lease),
            (expired, _) => free.push((expired.unwrap_or(Duration::MAX), lease)),
        }
    }
    let targets = targets(&loads, unfinished, config.max_leases_per_worker);
    let held = loads[me].len();
    let mut plan = Plan {
        target: targets[me],
        workers: loads.len(),
        held,
        available: free.len(),
        ..Plan::default()
    };
    if held >= plan.target {
        return plan;
    }

    // 3. The pool: free leases, then what workers above their target give up (each its
    // first leases by `rank`: the same ones whoever plans, so that different views of the
    // fleet take nested sets from a donor).
    let very_old = failover.saturating_mul(2); // expired_for counts from the expiry
    let mut free: Vec<(bool, &Lease)> = free
        .into_iter()
        .map(|(expired_for, lease)| (expired_for > very_old, lease))
        .collect();
    let mut surplus: Vec<&Lease> = Vec::new();
    for (owner, leases) in &loads {
        let give = leases.len().saturating_sub(targets[owner]);
        if give > 0 {
            let mut leases = leases.clone();
            leases.sort_by_key(|l| rank(&l.lease_key));
            surplus.extend(leases.into_iter().take(give));
        }
    }

    // 4. The hand-out, receivers in the same order for every planner, up to `me`. Each
    // receiver picks in its own pseudo-random order (a hash of its id and the lease key):
    // still the same whoever plans, and workers acting on different pictures of the table
    // (a fleet starting together) mostly pick different leases instead of racing for the
    // same ones in the same order.
    let mut receivers: Vec<(&str, usize)> = loads
        .iter()
        .filter(|(owner, leases)| leases.len() < targets[*owner])
        .map(|(owner, leases)| (*owner, targets[owner] - leases.len()))
        .collect();
    receivers.sort_by_key(|(owner, _)| (rank(owner), *owner));
    for (owner, need) in receivers {
        let takes = need.min(free.len());
        let taken = pick(&mut free, takes, |(very_old, l)| {
            (
                !*very_old,
                spread(owner, &l.lease_key),
                l.lease_key.as_str(),
            )
        });
        let steals = (need - takes)
            .min(config.max_leases_to_steal_at_one_time)
            .min(surplus.len());
        let stolen = pick(&mut surplus, steals, |l| {
            (spread(owner, &l.lease_key), l.lease_key.as_str())
        });
        if owner == me {
            plan.take = taken.into_iter().map(|(_, l)| l.clone()).collect();
            plan.steal = stolen.into_iter().cloned().collect();
            break;
        }
    }
    plan
}

/// Removes and returns the `k` first items of `pool` by `key` (keys are unique, so the
/// choice does not depend on the pool's order).
fn pick<T, K: Ord>(pool: &mut Vec<T>, k: usize, key: impl FnMut(&T) -> K) -> Vec<T> {
    if k == 0 {
        return Vec::new();
    }
    if k < pool.len() {
        pool.select_nth_unstable_by_key(k - 1, key);
    }
    pool.drain(..k.min(pool.len())).collect()
}

/// Step 2 of the [module docs](self): every worker's target.
fn targets<'a>(
    loads: &BTreeMap<&'a str, Vec<&Lease>>,
    leases: usize,
    cap: usize,
) -> BTreeMap<&'a str, usize> {
    let workers = loads.len();
    if leases >= workers.saturating_mul(cap) {
        return loads.keys().map(|w| (*w, cap)).collect();
    }
    // Below the cap, so `ceil(N / W) <= cap`.
    let (base, extra) = (leases / workers, leases % workers);
    // The extra leases go to workers that already hold more than `base` (they would give
    // them up otherwise), then by rank. Not "the most loaded first": a worker that just
    // took up to `base` must not move ahead of its peers, or the next planner hands the
    // extra lease to it instead of to the one it was planned for, and a pass is lost.
    let mut order: Vec<(&str, usize)> = loads.iter().map(|(w, l)| (*w, l.len())).collect();
    order.sort_by_key(|(w, held)| (Reverse(*held > base), rank(w), *w));
    order
        .into_iter()
        .enumerate()
        .map(|(i, (w, _))| (w, base + usize::from(i < extra)))
        .collect()
}

/// A stable pseudo-random order of keys that does not depend on who computes it: workers
/// planning from one snapshot agree on every choice.
fn rank(key: &str) -> u64 {
    spread("", key)
}

/// A stable pseudo-random order of keys per `who` (FNV-1a, then a SplitMix64 finaliser).
fn spread(who: &str, key: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in who.bytes().chain([0xff]).chain(key.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// The lease taker of one worker: scans the table, plans, takes. It keeps the
/// [`LeaseTracker`] between passes, so one `Taker` lives as long as its worker.
#[derive(Debug)]
pub struct Taker {
    me: String,
    config: AssignmentConfig,
    tracker: LeaseTracker,
    passes: u64,
}

/// What one [`Taker::pass`] saw and did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TakePass {
    /// 1 for the taker's first pass, then 2, 3, ...
    pub number: u64,
    /// When the pass began, before its scan.
    pub started: Instant,
    /// The table as scanned at the start of the pass.
    pub snapshot: Vec<Lease>,
    /// The plan made from `snapshot`.
    pub plan: Plan,
    /// The second scan, made when a take of the first plan lost a race.
    pub rescan: Option<Vec<Lease>>,
    /// The plan made from `rescan`.
    pub replan: Option<Plan>,
    /// The leases this pass took or stole, as they now are in the table.
    pub taken: Vec<Lease>,
    /// How many of `taken` were stolen from a live owner.
    pub stolen: usize,
    /// Takes that failed their condition: another worker was faster, or the owner renewed.
    pub lost_races: usize,
    /// Takes that failed otherwise (throttling, network): the next pass plans again.
    pub failed: usize,
}

impl TakePass {
    /// Ownership changes this pass made (`taken.len()`).
    pub fn moved(&self) -> usize {
        self.taken.len()
    }

    /// The latest scan: `rescan` if there was one, else `snapshot`. Leases of `taken` may
    /// appear in it with their previous owner.
    pub fn latest_snapshot(&self) -> &[Lease] {
        self.rescan.as_deref().unwrap_or(&self.snapshot)
    }
}

impl Taker {
    /// The taker of worker `me`.
    pub fn new(me: impl Into<String>, config: AssignmentConfig) -> Taker {
        Taker {
            me: me.into(),
            config,
            tracker: LeaseTracker::new(),
            passes: 0,
        }
    }

    /// The worker this taker takes for.
    pub fn worker_id(&self) -> &str {
        &self.me
    }

    /// The configuration.
    pub fn config(&self) -> &AssignmentConfig {
        &self.config
    }

    /// The counter changes seen so far.
    pub fn tracker(&self) -> &LeaseTracker {
        &self.tracker
    }

    /// Passes made so far.
    pub fn passes(&self) -> u64 {
        self.passes
    }

    /// Records a scan made elsewhere, so that expiry counts from it too.
    pub fn observe(&mut self, snapshot: &[Lease]) {
        self.tracker.observe(snapshot, Instant::now());
    }

    /// One pass: scan, plan, take. A take that loses a race stops the plan (the takes in
    /// flight finish), and the taker scans and plans once more. Fails only when the first
    /// scan does; failed takes are counted in the [`TakePass`] and left to the next pass.
    pub async fn pass(&mut self, store: &Arc<dyn LeaseStore>) -> Result<TakePass, LeaseError> {
        // A span per pass, scan included; what the pass did is recorded when it ends.
        let span = tracing::info_span!(
            "lease.take",
            worker = %self.me,
            pass = self.passes + 1,
            planned = tracing::field::Empty,
            taken = tracing::field::Empty,
            stolen = tracing::field::Empty,
            lost_races = tracing::field::Empty,
            failed = tracing::field::Empty,
        );
        let result = async {
            let started = Instant::now();
            let snapshot = store.list_leases().await?;
            Ok(self.pass_on(store, snapshot, started).await)
        }
        .instrument(span.clone())
        .await;
        if let Ok(pass) = &result {
            let planned = |p: &Plan| p.take.len() + p.steal.len();
            span.record(
                "planned",
                planned(&pass.plan) + pass.replan.as_ref().map_or(0, planned),
            );
            span.record("taken", pass.taken.len());
            span.record("stolen", pass.stolen);
            span.record("lost_races", pass.lost_races);
            span.record("failed", pass.failed);
        }
        result
    }

    /// A pass on a scan the caller made, having begun at `started` (tests give several
    /// takers one snapshot).
    #[doc(hidden)]
    pub async fn pass_on(
        &mut self,
        store: &Arc<dyn LeaseStore>,
        snapshot: Vec<Lease>,
        started: Instant,
    ) -> TakePass {
        self.passes += 1;
        let now = Instant::now();
        self.tracker.observe(&snapshot, now);
        let first = plan(&snapshot, &self.me, &self.tracker, now, &self.config);
        let mut pass = TakePass {
            number: self.passes,
            started,
            snapshot,
            plan: first,
            rescan: None,
            replan: None,
            taken: Vec::new(),
            stolen: 0,
            lost_races: 0,
            failed: 0,
        };
        let first = pass.plan.clone();
        if self.execute(store, &first, &mut pass).await {
            return pass;
        }
        // Somebody acted on an older or the same picture: what is left of the plan is
        // likely stale too. Look again rather than wait a whole interval.
        match store.list_leases().await {
            Ok(snapshot) => {
                let now = Instant::now();
                self.tracker.observe(&snapshot, now);
                let replan = plan(&snapshot, &self.me, &self.tracker, now, &self.config);
                pass.rescan = Some(snapshot);
                self.execute(store, &replan, &mut pass).await;
                pass.replan = Some(replan);
            }
            Err(e) => debug!(error = %e, "second scan after a lost race failed"),
        }
        pass
    }

    /// Takes what `plan` says, [`TAKES_IN_FLIGHT`] at a time, so that a pass of hundreds
    /// of takes does not hold up the worker's renewals for long. Stops after a batch that
    /// lost a race; returns whether it got through the plan without losing one.
    async fn execute(&self, store: &Arc<dyn LeaseStore>, plan: &Plan, pass: &mut TakePass) -> bool {
        if !plan.is_empty() {
            debug!(
                target = plan.target,
                held = plan.held,
                workers = plan.workers,
                take = plan.take.len(),
                steal = plan.steal.len(),
                "lease plan"
            );
        }
        let takes = plan.take.iter().map(|l| (l, false));
        let all: Vec<(&Lease, bool)> = takes.chain(plan.steal.iter().map(|l| (l, true))).collect();
        for batch in all.chunks(TAKES_IN_FLIGHT) {
            let mut in_flight = JoinSet::new();
            for (observed, steal) in batch {
                let (store, observed, steal) = (store.clone(), (*observed).clone(), *steal);
                let me = self.me.clone();
                in_flight.spawn(async move {
                    let mut result = store.take_lease(&observed, &me).await;
                    // A steal that lost only to its owner's renewal (same owner, newer
                    // counter): the plan still holds, so steal it again from the lease the
                    // failed write returned. Without this, every steal of a lease renewed
                    // between the scan and the write waits for the next pass.
                    let renewed = match &result {
                        Err(LeaseError::LeaseLost {
                            current: Some(current),
                            ..
                        }) if steal && current.owner == observed.owner => Some(current.clone()),
                        _ => None,
                    };
                    if let Some(current) = renewed {
                        result = store.take_lease(&current, &me).await;
                    }
                    (observed, steal, result)
                });
            }
            let mut lost = false;
            while let Some(joined) = in_flight.join_next().await {
                let Ok((observed, steal, result)) = joined else {
                    pass.failed += 1;
                    continue;
                };
                match result {
                    Ok(taken) => {
                        info!(lease = %taken.lease_key, from = ?observed.owner, steal, "lease taken");
                        pass.stolen += usize::from(steal);
                        pass.taken.push(taken);
                    }
                    Err(e) if e.is_lease_lost() => {
                        debug!(lease = %observed.lease_key, "the lease changed since the scan");
                        pass.lost_races += 1;
                        lost = true;
                    }
                    Err(e) => {
                        warn!(lease = %observed.lease_key, error = %e, "taking the lease failed");
                        pass.failed += 1;
                    }
                }
            }
            if lost {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests;
