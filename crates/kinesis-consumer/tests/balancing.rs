//! Lease balancing with real workers, through the real SDK against the local stack: 64
//! shards on 4 workers, then a 5th joins, one shuts down gracefully, one is killed. Counted
//! in lease-taker passes (each worker reports its passes through a test hook), and in lease
//! moves read from the lease table, not in seconds.
//!
//! The processor never checkpoints (the shards are idle), so `ownerSwitchesSinceCheckpoint`
//! counts every change of owner since the lease was created: comparing it between two scans
//! tells whether a lease moved more than once in between (ping-pong), which comparing owners
//! alone would miss.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kinesis_consumer::lease::assignment::TakePass;
use kinesis_consumer::lease::{DynamoLeaseStore, Lease, LeaseStore};
use kinesis_consumer::{ProcessInput, ProcessorError, RecordProcessor, Worker, WorkerHandle};
use local_aws::{LocalAws, testing};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const FAILOVER: Duration = Duration::from_secs(4);
const TAKE_INTERVAL: Duration = Duration::from_millis(500);
/// Passes every worker makes, after a phase converged, during which nothing may move.
const QUIET_PASSES: u64 = 6;
/// A bound on each wait, for a clear message instead of a hung test; no figure is derived
/// from it.
const PATIENCE: Duration = Duration::from_secs(30);

/// Idle shards: nothing to process, never a checkpoint.
struct Idle;

#[async_trait]
impl RecordProcessor for Idle {
    async fn process_records(&mut self, _input: ProcessInput<'_>) -> Result<(), ProcessorError> {
        Ok(())
    }
}

/// One pass of one worker, as its hook reported it.
#[derive(Debug, Clone)]
struct PassRecord {
    worker: String,
    started: Instant,
    /// Leases taken or stolen in the pass.
    moved: usize,
    /// Leases the first plan saw unowned or expired.
    available: usize,
    /// Workers the first plan counted (itself included).
    workers: usize,
    /// What the pass planned and did, for failure messages.
    summary: String,
}

#[derive(Default)]
struct PassLog {
    passes: Mutex<Vec<PassRecord>>,
    changed: Notify,
}

impl PassLog {
    fn record(&self, worker: &str, pass: &TakePass) {
        self.passes.lock().unwrap().push(PassRecord {
            worker: worker.to_owned(),
            started: pass.started,
            moved: pass.moved(),
            available: pass.plan.available,
            workers: pass.plan.workers,
            summary: summary(pass),
        });
        self.changed.notify_waiters();
    }

    /// The passes of `worker` that started after `since`, in order.
    fn of(&self, worker: &str, since: Instant) -> Vec<PassRecord> {
        self.passes
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.worker == worker && p.started > since)
            .cloned()
            .collect()
    }

    /// Every pass since `since`, one per line, in the order they were reported.
    fn describe(&self, since: Instant) -> String {
        let passes = self.passes.lock().unwrap();
        let mut out = String::new();
        for p in passes.iter().filter(|p| p.started > since) {
            let at = p.started.duration_since(since).as_millis();
            out.push_str(&format!("  {} +{at} ms {}\n", p.worker, p.summary));
        }
        out
    }

    /// Waits until every worker in `workers` made `n` passes that started after `since`.
    async fn until_passes(&self, workers: &[&str], since: Instant, n: usize) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let notified = self.changed.notified();
            if workers.iter().all(|w| self.of(w, since).len() >= n) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let counts: Vec<_> = workers.iter().map(|w| self.of(w, since).len()).collect();
                panic!("workers {workers:?} did not make {n} passes: {counts:?}");
            }
        }
    }
}

fn summary(pass: &TakePass) -> String {
    let plan = |p: &kinesis_consumer::lease::Plan| {
        format!(
            "held {} target {} of {} workers, free {}, take {} steal {}",
            p.held,
            p.target,
            p.workers,
            p.available,
            p.take.len(),
            p.steal.len()
        )
    };
    let mut out = format!(
        "pass {}: {}; moved {} (stolen {}), lost races {}, failed {}",
        pass.number,
        plan(&pass.plan),
        pass.moved(),
        pass.stolen,
        pass.lost_races,
        pass.failed
    );
    if let Some(replan) = &pass.replan {
        out.push_str(&format!("; replan: {}", plan(replan)));
    }
    out
}

/// Owner and `ownerSwitchesSinceCheckpoint` per lease key.
type Ownership = BTreeMap<String, (Option<String>, u64)>;

struct Fleet {
    aws: LocalAws,
    stream: String,
    shards: usize,
    /// `lease_taker_interval_when_stable`, if set.
    slow_down_to: Option<Duration>,
    app: String,
    log: Arc<PassLog>,
    workers: BTreeMap<String, (WorkerHandle, JoinHandle<()>)>,
}

impl Fleet {
    async fn new(shards: usize, slow_down_to: Option<Duration>) -> Fleet {
        let aws = LocalAws::start().await.unwrap();
        let stream = testing::unique_name("balance");
        testing::create_stream(&aws.kinesis_client(), &stream, shards as i32)
            .await
            .unwrap();
        Fleet {
            aws,
            stream,
            shards,
            slow_down_to,
            app: testing::unique_name("balance-app"),
            log: Arc::default(),
            workers: BTreeMap::new(),
        }
    }

    fn start(&mut self, name: &str) {
        let log = self.log.clone();
        let id = name.to_owned();
        let mut builder = Worker::builder(
            &self.app,
            &self.stream,
            self.aws.kinesis_client(),
            self.aws.dynamodb_client(),
            || Idle,
        )
        .worker_id(name)
        .failover_time(FAILOVER)
        .lease_taker_interval(TAKE_INTERVAL)
        .on_take_pass(move |pass| log.record(&id, pass));
        if let Some(max) = self.slow_down_to {
            builder = builder.lease_taker_interval_when_stable(max);
        }
        let worker = builder.build();
        let handle = worker.handle();
        let task = tokio::spawn(async move { worker.run().await.expect("worker runs") });
        self.workers.insert(name.to_owned(), (handle, task));
    }

    fn live(&self) -> Vec<&str> {
        self.workers.keys().map(String::as_str).collect()
    }

    async fn leases(&self) -> Vec<Lease> {
        DynamoLeaseStore::new(self.aws.dynamodb_client(), &self.app)
            .list_leases()
            .await
            .unwrap_or_default()
    }

    async fn ownership(&self) -> Ownership {
        self.leases()
            .await
            .into_iter()
            .map(|l| {
                let switches = l.owner_switches_since_checkpoint;
                (l.lease_key, (l.owner, switches))
            })
            .collect()
    }

    /// Leases per owner ("" for none).
    async fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for lease in self.leases().await {
            *counts.entry(lease.owner.unwrap_or_default()).or_default() += 1;
        }
        counts
    }

    /// Every lease held by a live worker, each holding floor or ceil of its share.
    async fn is_fair(&self) -> bool {
        let counts = self.counts().await;
        let live = self.live();
        let held: usize = live
            .iter()
            .map(|w| counts.get(*w).copied().unwrap_or(0))
            .sum();
        let (floor, ceil) = (self.shards / live.len(), self.shards.div_ceil(live.len()));
        held == self.shards
            && live.iter().all(|w| {
                let n = counts.get(*w).copied().unwrap_or(0);
                n == floor || n == ceil
            })
    }

    async fn until_fair(&self, what: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.is_fair().await {
            assert!(
                Instant::now() < deadline,
                "{what}: never fair: {:?}",
                self.counts().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// After a change at `since`: the table becomes fair, nothing moves for `QUIET_PASSES`
    /// more passes of every worker, and every lease move since the change happened in a
    /// pass numbered 1 or 2 (per worker, counting its passes that started after `since`, or
    /// from the one `first_pass` picks). Returns the passes each worker needed (the number
    /// of its last pass with a move).
    async fn converged_within_two_passes(
        &self,
        what: &str,
        since: Instant,
        first_pass: impl Fn(&[PassRecord]) -> usize,
    ) -> BTreeMap<String, usize> {
        self.until_fair(what).await;
        self.stays_put(what).await;
        let live = self.live();
        let mut needed = BTreeMap::new();
        for w in &live {
            let passes = self.log.of(w, since);
            let first = first_pass(&passes);
            for (i, pass) in passes.iter().enumerate() {
                // Pass numbers: the `first`-th pass since the change is pass 1; earlier
                // ones are pass 0.
                let number = if i + 1 >= first { i + 2 - first } else { 0 };
                if pass.moved > 0 {
                    assert!(
                        number <= 2,
                        "{what}: {w} moved {} leases in its pass {number}; passes since the change:\n{}",
                        pass.moved,
                        self.log.describe(since)
                    );
                    needed.insert(w.to_string(), number);
                }
            }
        }
        assert!(self.is_fair().await, "{what}: {:?}", self.counts().await);
        needed
    }

    /// Nothing moves while every worker makes `QUIET_PASSES` passes.
    async fn stays_put(&self, what: &str) {
        let before = self.ownership().await;
        let since = Instant::now();
        let live = self.live();
        self.log
            .until_passes(&live, since, QUIET_PASSES as usize)
            .await;
        let after = self.ownership().await;
        assert_eq!(before, after, "{what}: leases moved after convergence");
        for w in &live {
            let moved: usize = self.log.of(w, since).iter().map(|p| p.moved).sum();
            assert_eq!(moved, 0, "{what}: {w} took leases after convergence");
        }
    }
}

/// Leases whose owner differs between two scans, and the growth of
/// `ownerSwitchesSinceCheckpoint` (each switch to another owner adds one).
fn moves(before: &Ownership, after: &Ownership) -> (usize, u64) {
    let changed = before
        .iter()
        .filter(|(k, (owner, _))| after.get(*k).map(|a| &a.0) != Some(owner))
        .count();
    let switches =
        after.values().map(|a| a.1).sum::<u64>() - before.values().map(|b| b.1).sum::<u64>();
    (changed, switches)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balancing_converges_within_two_passes_and_stays_put() {
    let mut fleet = Fleet::new(64, None).await;

    // Four workers start together on a new application.
    let start = Instant::now();
    for w in ["w1", "w2", "w3", "w4"] {
        fleet.start(w);
    }
    let needed = fleet
        .converged_within_two_passes("start", start, |_| 1)
        .await;
    eprintln!("start: passes needed per worker {needed:?}");
    assert_eq!(
        fleet.counts().await,
        BTreeMap::from(
            [("w1", 16), ("w2", 16), ("w3", 16), ("w4", 16)].map(|(w, n)| (w.to_owned(), n))
        )
    );

    // A fifth joins: it steals its 12, 3 from each, in its first pass; nobody else moves.
    let before = fleet.ownership().await;
    let join = Instant::now();
    fleet.start("w5");
    let needed = fleet.converged_within_two_passes("join", join, |_| 1).await;
    eprintln!("join: passes needed per worker {needed:?}");
    assert_eq!(needed, BTreeMap::from([("w5".to_owned(), 1)]));
    assert_eq!(
        moves(&before, &fleet.ownership().await),
        (12, 12),
        "join: each lease moved once"
    );

    // One leaves gracefully: its leases are released, the others take them at once.
    let before = fleet.ownership().await;
    let leaving = fleet.counts().await["w2"];
    let (handle, task) = fleet.workers.remove("w2").unwrap();
    handle.shutdown().await;
    task.await.unwrap();
    let released = Instant::now();
    let needed = fleet
        .converged_within_two_passes("graceful leave", released, |_| 1)
        .await;
    eprintln!("graceful leave: passes needed per worker {needed:?}");
    let (changed, switches) = moves(&before, &fleet.ownership().await);
    assert_eq!(
        changed, leaving,
        "graceful leave: w2's leases, each moved once"
    );
    // Released then taken is not a switch; a second move would be.
    assert_eq!(switches, 0, "graceful leave: a lease moved twice");

    // One is killed: no release. Counted from each survivor's first pass that sees all
    // its leases expired (it no longer counts the dead worker; a scan can catch some of
    // the last renewals and not others, so expiry is seen lease by lease).
    let before = fleet.ownership().await;
    let victim = fleet.counts().await["w3"];
    let (_handle, task) = fleet.workers.remove("w3").unwrap();
    task.abort();
    let killed = Instant::now();
    let needed = fleet
        .converged_within_two_passes("kill", killed, |passes| {
            passes
                .iter()
                .position(|p| p.available > 0 && p.workers == 3)
                .map_or(usize::MAX, |i| i + 1)
        })
        .await;
    eprintln!("kill: passes needed per worker after expiry {needed:?}");
    assert_eq!(
        moves(&before, &fleet.ownership().await),
        (victim, victim as u64),
        "kill: each of w3's leases moved once"
    );

    for (_, (handle, task)) in std::mem::take(&mut fleet.workers) {
        handle.shutdown().await;
        task.await.unwrap();
    }
}

/// The same guarantees, counted in passes, when the taker slows down while nothing changes
/// (`lease_taker_interval_when_stable`): a newcomer still converges in its first passes, and
/// leases released by a graceful shutdown are taken at the next pass of each worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowing_taker_still_converges_within_two_passes() {
    let mut fleet = Fleet::new(16, Some(Duration::from_secs(2))).await;
    let start = Instant::now();
    for w in ["w1", "w2"] {
        fleet.start(w);
    }
    fleet
        .converged_within_two_passes("start", start, |_| 1)
        .await;

    let before = fleet.ownership().await;
    let join = Instant::now();
    fleet.start("w3");
    let needed = fleet.converged_within_two_passes("join", join, |_| 1).await;
    assert_eq!(needed, BTreeMap::from([("w3".to_owned(), 1)]));
    assert_eq!(moves(&before, &fleet.ownership().await), (5, 5));

    let leaving = fleet.counts().await["w1"];
    let before = fleet.ownership().await;
    let (handle, task) = fleet.workers.remove("w1").unwrap();
    handle.shutdown().await;
    task.await.unwrap();
    let released = Instant::now();
    fleet
        .converged_within_two_passes("graceful leave", released, |_| 1)
        .await;
    assert_eq!(moves(&before, &fleet.ownership().await), (leaving, 0));

    for (_, (handle, task)) in std::mem::take(&mut fleet.workers) {
        handle.shutdown().await;
        task.await.unwrap();
    }
}
