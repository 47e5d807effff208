//! The assignment rules as tables of scenarios, and simulations of many passes.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::position::Position;

const FAILOVER: Duration = Duration::from_secs(10);

struct Spec {
    owner: Option<String>,
    /// Time since the counter last changed.
    idle: Duration,
    finished: bool,
}

/// A lease table as seen by one worker: leases with owners and idle times.
#[derive(Default)]
struct World {
    specs: Vec<Spec>,
}

impl World {
    fn add(mut self, owner: Option<&str>, n: usize, idle_secs: u64, finished: bool) -> Self {
        for _ in 0..n {
            self.specs.push(Spec {
                owner: owner.map(str::to_owned),
                idle: Duration::from_secs(idle_secs),
                finished,
            });
        }
        self
    }
    /// `n` leases `owner` renews (last change 1 s ago).
    fn held(self, owner: &str, n: usize) -> Self {
        self.add(Some(owner), n, 1, false)
    }
    /// `n` leases of `owner` whose counter has not changed for `idle_secs`.
    fn idle(self, owner: &str, n: usize, idle_secs: u64) -> Self {
        self.add(Some(owner), n, idle_secs, false)
    }
    fn unowned(self, n: usize) -> Self {
        self.add(None, n, 1, false)
    }
    fn finished(self, owner: Option<&str>, n: usize) -> Self {
        self.add(owner, n, 1, true)
    }

    /// The final snapshot, and a tracker that watched the table long enough to have seen
    /// each lease's counter change last at `now - idle`.
    fn observe(&self) -> (Vec<Lease>, LeaseTracker, Instant) {
        let mut idles: Vec<Duration> = self.specs.iter().map(|s| s.idle).collect();
        idles.sort_by(|a, b| b.cmp(a));
        idles.dedup();
        let rank = |idle: Duration| idles.iter().position(|i| *i == idle).unwrap() as u64;
        let now = Instant::now() + Duration::from_secs(3600);
        let snapshot_at = |step: u64| -> Vec<Lease> {
            self.specs
                .iter()
                .enumerate()
                .map(|(i, spec)| {
                    let checkpoint = if spec.finished {
                        Position::ShardEnd
                    } else {
                        Position::TrimHorizon
                    };
                    let mut lease = Lease::new(format!("shardId-{i:06}"), checkpoint);
                    lease.owner = spec.owner.clone();
                    lease.counter = step.min(rank(spec.idle));
                    lease
                })
                .collect()
        };
        let mut tracker = LeaseTracker::new();
        for (step, idle) in idles.iter().enumerate() {
            tracker.observe(&snapshot_at(step as u64), now - *idle);
        }
        (snapshot_at(idles.len() as u64), tracker, now)
    }
}

struct Expect {
    take: usize,
    steal: usize,
    target: usize,
    workers: usize,
}

fn expect(take: usize, steal: usize, target: usize, workers: usize) -> Expect {
    Expect {
        take,
        steal,
        target,
        workers,
    }
}

fn owners(leases: &[Lease]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for lease in leases {
        *out.entry(lease.owner.clone().unwrap_or_default())
            .or_default() += 1;
    }
    out
}

#[test]
fn scenarios() {
    let base = AssignmentConfig::default().with_failover_time(FAILOVER);
    let four_by_sixteen = World::default()
        .held("a", 16)
        .held("b", 16)
        .held("c", 16)
        .held("d", 16);
    #[rustfmt::skip]
    let table: Vec<(&str, World, &str, AssignmentConfig, Expect)> = vec![
        ("empty table: nothing to do",
            World::default(), "a", base.clone(), expect(0, 0, 0, 1)),
        ("a lone worker takes every unowned lease at once",
            World::default().unowned(8), "a", base.clone(), expect(8, 0, 8, 1)),
        ("balanced 4/4 does not move (a)",
            World::default().held("a", 4).held("b", 4), "a", base.clone(), expect(0, 0, 4, 2)),
        ("balanced 4/4 does not move (b)",
            World::default().held("a", 4).held("b", 4), "b", base.clone(), expect(0, 0, 4, 2)),
        ("fair 4/3/3 does not move (a)",
            World::default().held("a", 4).held("b", 3).held("c", 3), "a", base.clone(), expect(0, 0, 4, 3)),
        ("fair 4/3/3 does not move (b, below target but nobody has 2 more)",
            World::default().held("a", 4).held("b", 3).held("c", 3), "b", base.clone(), expect(0, 0, 4, 3)),
        ("4/3 does not move: stealing would only swap the counts",
            World::default().held("a", 4).held("b", 3), "b", base.clone(), expect(0, 0, 4, 2)),
        ("5/3: the smaller steals one",
            World::default().held("a", 5).held("b", 3), "b", base.clone(), expect(0, 1, 4, 2)),
        ("a new worker joins 4 workers with 64 leases: 12 stolen in one pass",
            four_by_sixteen, "e", base.clone(), expect(0, 12, 13, 5)),
        ("max leases to steal at one time",
            World::default().held("a", 16).held("b", 16), "c", base.clone().with_max_leases_to_steal_at_one_time(2),
            expect(0, 2, 11, 3)),
        ("a silent worker within the failover time is alive",
            World::default().held("a", 4).idle("b", 4, 9), "a", base.clone(), expect(0, 0, 4, 2)),
        ("a dead worker's leases expire and a lone survivor takes them all",
            World::default().held("a", 4).idle("b", 4, 11), "a", base.clone(), expect(4, 0, 8, 1)),
        ("two survivors share a dead worker's leases: each takes up to its share",
            World::default().held("a", 3).held("c", 3).idle("b", 6, 30), "a", base.clone(), expect(3, 0, 6, 2)),
        ("max leases per worker caps taking",
            World::default().unowned(10), "a", base.clone().with_max_leases_per_worker(3), expect(3, 0, 3, 1)),
        ("max leases per worker caps stealing",
            World::default().held("a", 10), "b", base.clone().with_max_leases_per_worker(2), expect(0, 2, 2, 2)),
        ("at the cap nothing is taken",
            World::default().held("a", 3).unowned(5), "a", base.clone().with_max_leases_per_worker(3), expect(0, 0, 3, 1)),
        ("free leases are taken first; no steal in the same pass",
            World::default().held("a", 6).unowned(2), "b", base.clone(), expect(2, 0, 4, 2)),
        ("finished leases are neither taken nor counted",
            World::default().finished(None, 3).finished(Some("a"), 5).held("a", 2), "b", base.clone(), expect(0, 1, 1, 2)),
        ("only finished leases: nothing to do",
            World::default().finished(None, 3).finished(Some("zombie"), 2), "a", base.clone(), expect(0, 0, 0, 1)),
        ("one's own lease that expired (renewals failing) is taken back",
            World::default().idle("a", 2, 20), "a", base.clone(), expect(2, 0, 2, 1)),
    ];

    for (name, world, me, config, want) in table {
        let (snapshot, tracker, now) = world.observe();
        let plan = plan(&snapshot, me, &tracker, now, &config);
        let got = (plan.take.len(), plan.steal.len(), plan.target, plan.workers);
        assert_eq!(
            got,
            (want.take, want.steal, want.target, want.workers),
            "{name}: (take, steal, target, workers) in {plan:#?}"
        );
        for lease in plan.take.iter().chain(&plan.steal) {
            assert!(!lease.is_finished(), "{name}: took a finished lease");
            assert!(snapshot.contains(lease), "{name}: not as observed");
        }
        for lease in &plan.steal {
            assert!(lease.owner.is_some() && !lease.is_owned_by(me), "{name}");
        }
        let mut keys: Vec<_> = plan
            .take
            .iter()
            .chain(&plan.steal)
            .map(|l| &l.lease_key)
            .collect();
        keys.sort();
        keys.dedup();
        assert_eq!(
            keys.len(),
            plan.take.len() + plan.steal.len(),
            "{name}: duplicates"
        );
    }
}

#[test]
fn a_new_worker_steals_evenly_from_the_most_loaded() {
    let world = World::default()
        .held("a", 16)
        .held("b", 16)
        .held("c", 16)
        .held("d", 16);
    let (snapshot, tracker, now) = world.observe();
    let plan = plan(&snapshot, "e", &tracker, now, &AssignmentConfig::default());
    // 64 leases, 5 workers: 13/13/13/13/12 afterwards, 3 from each.
    let from = owners(&plan.steal);
    assert_eq!(from.values().copied().collect::<Vec<_>>(), [3, 3, 3, 3]);
}

#[test]
fn steals_come_from_the_most_loaded_first() {
    let world = World::default().held("a", 9).held("b", 5).held("c", 1);
    let (snapshot, tracker, now) = world.observe();
    // 15 leases, 3 workers, target 5: c takes 4 from a (9 -> 5), none from b.
    let plan = plan(&snapshot, "c", &tracker, now, &AssignmentConfig::default());
    assert_eq!(owners(&plan.steal), BTreeMap::from([("a".to_owned(), 4)]));
}

#[test]
fn leases_expired_longest_are_taken_first() {
    let world = World::default()
        .idle("a", 3, 15) // expired 5 s ago
        .idle("b", 3, 45); // expired for more than 3 x failover
    let (snapshot, tracker, now) = world.observe();
    let config = AssignmentConfig::default()
        .with_failover_time(FAILOVER)
        .with_max_leases_per_worker(3);
    let plan = plan(&snapshot, "c", &tracker, now, &config);
    assert_eq!(owners(&plan.take), BTreeMap::from([("b".to_owned(), 3)]));
}

#[test]
fn workers_taking_at_once_mostly_pick_different_leases() {
    let (snapshot, tracker, now) = World::default().unowned(100).observe();
    let config = AssignmentConfig::default().with_max_leases_per_worker(10);
    let a = plan(&snapshot, "worker-a", &tracker, now, &config);
    let b = plan(&snapshot, "worker-b", &tracker, now, &config);
    let overlap = a.take.iter().filter(|l| b.take.contains(l)).count();
    assert!(overlap <= 4, "{overlap} of 10 in common");
    // And the order is stable for one worker.
    assert_eq!(a, plan(&snapshot, "worker-a", &tracker, now, &config));
}

#[test]
fn tracker_expires_by_counter_changes_on_the_local_clock() {
    let t0 = Instant::now();
    let mut lease = Lease::new("shardId-0", Position::TrimHorizon);
    lease.owner = Some("a".into());
    let mut tracker = LeaseTracker::new();

    // First sight: alive, whatever the lease says, until a failover time passes.
    tracker.observe(std::slice::from_ref(&lease), t0);
    assert_eq!(tracker.last_change("shardId-0"), Some(t0));
    assert!(!tracker.is_expired(&lease, t0 + FAILOVER, FAILOVER));
    assert!(tracker.is_expired(&lease, t0 + FAILOVER + Duration::from_millis(1), FAILOVER));

    // Seen again unchanged: the stamp stays. Renewed: the stamp moves.
    tracker.observe(std::slice::from_ref(&lease), t0 + Duration::from_secs(5));
    assert_eq!(tracker.last_change("shardId-0"), Some(t0));
    lease.counter += 1;
    let t1 = t0 + Duration::from_secs(8);
    tracker.observe(std::slice::from_ref(&lease), t1);
    assert_eq!(tracker.last_change("shardId-0"), Some(t1));
    assert!(!tracker.is_expired(&lease, t0 + Duration::from_secs(15), FAILOVER));
    assert_eq!(
        tracker.expired_for(&lease, t1 + Duration::from_secs(13), FAILOVER),
        Some(Duration::from_secs(3))
    );

    // A lease newer than the tracker's view changed: alive.
    let mut newer = lease.clone();
    newer.counter += 1;
    assert!(!tracker.is_expired(&newer, t1 + Duration::from_secs(60), FAILOVER));

    // Taken by someone else with the same counter value (cannot happen with the KCL's
    // writes, but the owner is compared too): a change.
    let mut other = lease.clone();
    other.owner = Some("b".into());
    tracker.observe(std::slice::from_ref(&other), t1 + Duration::from_secs(20));
    assert_eq!(
        tracker.last_change("shardId-0"),
        Some(t1 + Duration::from_secs(20))
    );

    // Unowned: free at once. Gone: forgotten.
    let free = Lease::new("shardId-1", Position::TrimHorizon);
    assert_eq!(
        tracker.expired_for(&free, t0, FAILOVER),
        Some(Duration::MAX)
    );
    tracker.observe(&[], t1);
    assert_eq!(tracker.last_change("shardId-0"), None);
}

/// The table in a simulation: owners and counters, with conditional takes.
#[derive(Clone, Debug)]
struct Table {
    leases: Vec<Lease>,
}

impl Table {
    fn new(owners: &[Option<usize>]) -> Table {
        let leases = owners
            .iter()
            .enumerate()
            .map(|(i, owner)| {
                let mut lease = Lease::new(format!("shardId-{i:04}"), Position::TrimHorizon);
                lease.owner = owner.map(worker);
                lease
            })
            .collect();
        Table { leases }
    }

    /// A conditional take: applied only if the lease is as observed.
    fn take(&mut self, observed: &Lease, me: &str) -> bool {
        let lease = self
            .leases
            .iter_mut()
            .find(|l| l.lease_key == observed.lease_key)
            .unwrap();
        if lease.counter != observed.counter || lease.owner != observed.owner {
            return false;
        }
        lease.counter += 1;
        lease.owner = Some(me.to_owned());
        true
    }

    fn counts(&self, workers: usize) -> Vec<usize> {
        (0..workers)
            .map(|w| {
                let name = worker(w);
                self.leases.iter().filter(|l| l.is_owned_by(&name)).count()
            })
            .collect()
    }

    fn is_fair(&self, workers: usize) -> bool {
        let counts = self.counts(workers);
        let all_owned = self.leases.iter().all(|l| l.owner.is_some());
        let (min, max) = (counts.iter().min(), counts.iter().max());
        all_owned && max.zip(min).is_none_or(|(max, min)| max - min <= 1)
    }
}

fn worker(i: usize) -> String {
    format!("worker-{i}")
}

/// One pass of every worker. Concurrent: all plan from the same snapshot, then write in
/// `order` (conflicting takes fail). Sequential: each plans from the table as the previous
/// one left it. Returns how many leases moved.
fn pass(table: &mut Table, workers: usize, order: &[usize], concurrent: bool) -> usize {
    let config = AssignmentConfig::default();
    let now = Instant::now();
    let plan_for = |table: &Table, w: usize| {
        // Every owner is alive: the tracker has just seen every lease change.
        let mut tracker = LeaseTracker::new();
        tracker.observe(&table.leases, now);
        plan(&table.leases, &worker(w), &tracker, now, &config)
    };
    let snapshot = table.clone();
    let mut moved = 0;
    for &w in order {
        let plan = if concurrent {
            plan_for(&snapshot, w)
        } else {
            plan_for(table, w)
        };
        let before: usize = table.counts(workers).iter().map(|c| c * c).sum();
        let stealing = !plan.steal.is_empty();
        for lease in plan.take.iter().chain(&plan.steal) {
            if table.take(lease, &worker(w)) {
                moved += 1;
            }
        }
        if stealing && !concurrent {
            // One worker acting on a fresh snapshot: the imbalance strictly decreases.
            let after: usize = table.counts(workers).iter().map(|c| c * c).sum();
            assert!(after < before, "steal did not reduce the imbalance");
        }
    }
    moved
}

fn arbitrary_table() -> impl Strategy<Value = (usize, Vec<Option<usize>>, Vec<usize>)> {
    (1usize..=7).prop_flat_map(|workers| {
        (
            Just(workers),
            prop::collection::vec(prop::option::weighted(0.8, 0..workers), 0..=60),
            Just((0..workers).collect::<Vec<_>>()).prop_shuffle(),
        )
    })
}

/// Passes until every worker acting on the same snapshot reaches a fair assignment. 5000
/// random tables of up to 7 workers and 60 leases (some unowned) needed at most 5: the
/// overshoot of workers that could not yet see each other is corrected within a few passes.
/// The bound leaves a margin so that the test is not flaky.
const MAX_CONCURRENT_PASSES: usize = 8;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn a_fair_assignment_never_moves((workers, owners, order) in arbitrary_table()) {
        // Deal the leases round robin: fair by construction.
        let owners: Vec<_> = (0..owners.len()).map(|i| Some(i % workers)).collect();
        let mut table = Table::new(&owners);
        prop_assert!(table.is_fair(workers));
        prop_assert_eq!(pass(&mut table, workers, &order, true), 0);
    }

    #[test]
    fn sequential_passes_converge_and_stay((workers, owners, order) in arbitrary_table()) {
        let mut table = Table::new(&owners);
        // Free leases in one pass, then balance: a worker that acts after the others have
        // taken sees the final picture.
        for _ in 0..2 {
            pass(&mut table, workers, &order, false);
        }
        prop_assert!(table.is_fair(workers), "not fair: {:?}", table.counts(workers));
        prop_assert_eq!(pass(&mut table, workers, &order, false), 0);
    }

    #[test]
    fn concurrent_passes_converge_and_stay((workers, owners, order) in arbitrary_table()) {
        let mut table = Table::new(&owners);
        let mut passes = 0;
        while !table.is_fair(workers) {
            prop_assert!(passes < MAX_CONCURRENT_PASSES, "not fair after {passes} passes: {:?}", table.counts(workers));
            pass(&mut table, workers, &order, true);
            passes += 1;
        }
        prop_assert_eq!(pass(&mut table, workers, &order, true), 0);
    }
}
