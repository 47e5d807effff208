//! Lease balancing at scale, simulated: N shards × M workers sharing the in-memory lease
//! store (the real `LeaseStore` implementation), each worker running the real lease taker
//! (`kinesis_consumer::lease::assignment::Taker`: scan, plan, conditional takes) and a
//! renewer, on tokio's paused clock, so that an hour of a fleet runs in seconds. Figures and
//! how to read them: `docs/BENCHMARKS.md`, "Lease balancing".
//!
//! ```text
//! cargo run --release -p kinesis-consumer --example sim_balance                 # 1000 × 50
//! cargo run --release -p kinesis-consumer --example sim_balance -- --shards 64 --workers 4
//! cargo run -p kinesis-consumer --example sim_balance -- --quick   # CI: checks the harness
//! ```
//!
//! Each configuration plays the same story:
//! 1. **cold start**: every worker starts within one taker interval (random phases) on a
//!    table of unowned leases;
//! 2. **steady**: ten minutes with nothing changing; lease-table requests per minute by
//!    kind, priced in DynamoDB capacity units for KCL 2.x lease items;
//! 3. **join**: one more worker; then **scale-out**: a fifth more workers at once;
//! 4. **graceful leave**: a worker shuts down (this crate releases its leases; the KCL 2.x
//!    model, as the KCL 2.x, just stops renewing them);
//! 5. **kill**: a worker stops without a word.
//!
//! A change is over when the table is fair (every lease held by a live worker, counts
//! differing by at most one) and no lease moved during 5 passes of every worker. Reported:
//! the passes it took (per worker, counted from its first pass that could see the change,
//! the largest), the simulated time to the last move, and the leases moved (against the
//! fewest possible).
//!
//! The configurations: this crate with its default 1 s taker, with a 20 s taker (the
//! KCL's scan cost), with a taker that backs off from 1 s to 20 s while nothing changes,
//! and a model of the KCL 2.x taker (target `ceil(N / W)`; take expired leases, else steal
//! from the most loaded worker, one per pass; taker every 2 × (failover + 25 ms)), written
//! from the published description of its behaviour, not from its code.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kinesis_consumer::Position;
use kinesis_consumer::lease::assignment::{AssignmentConfig, LeaseTracker, Taker};
use kinesis_consumer::lease::{InMemoryLeaseStore, Lease, LeaseError, LeaseStore, LeaseUpdate};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

const USAGE: &str = "\
Usage: sim_balance [OPTIONS]

Options:
  --shards N      leases in the table (default 1000)
  --workers M     workers at the start (default 50)
  --failover S    failover time in seconds (default 10, the KCL's)
  --steady MIN    minutes of the steady phase (default 10)
  --seed X        seed of the random phases and the KCL model's choices (default 1)
  --quick         64 × 4, one minute steady: checks the harness runs (CI), no figures
  -h, --help      this help
";

/// Size in bytes of a KCL 2.x lease item as DynamoDB counts it (attribute names plus
/// values; a number is 1 byte plus 1 per two significant digits): leaseKey
/// `shardId-000000000999`, a 40-character leaseOwner, a 6-digit leaseCounter, a 56-digit
/// checkpoint, checkpointSubSequenceNumber and ownerSwitchesSinceCheckpoint 0, 39-digit
/// startingHashKey and endingHashKey (no parentShardId: an original shard).
fn lease_item_bytes() -> usize {
    let string = |name: &str, len: usize| name.len() + len;
    let number = |name: &str, digits: usize| name.len() + 1 + digits.div_ceil(2);
    string("leaseKey", "shardId-000000000999".len())
        + string("leaseOwner", 40)
        + number("leaseCounter", 6)
        + string("checkpoint", 56)
        + number("checkpointSubSequenceNumber", 1)
        + number("ownerSwitchesSinceCheckpoint", 1)
        + string("startingHashKey", 39)
        + string("endingHashKey", 39)
}

const SCAN_PAGE_BYTES: usize = 1 << 20;

// ---------------------------------------------------------------------------------------------
// The store: the in-memory one, with every request counted and priced.

#[derive(Debug, Default, Clone, Copy)]
struct Ops {
    scans: u64,
    scan_pages: u64,
    /// Read units of the scans: per page, 0.5 per started 4 KB (eventually consistent).
    scan_rcu: f64,
    renewals: u64,
    takes: u64,
    evictions: u64,
    /// Conditional writes whose condition failed (billed like the others).
    failed_conditions: u64,
    other: u64,
}

impl Ops {
    fn writes(&self) -> u64 {
        self.renewals + self.takes + self.evictions + self.other
    }

    fn minus(&self, earlier: &Ops) -> Ops {
        Ops {
            scans: self.scans - earlier.scans,
            scan_pages: self.scan_pages - earlier.scan_pages,
            scan_rcu: self.scan_rcu - earlier.scan_rcu,
            renewals: self.renewals - earlier.renewals,
            takes: self.takes - earlier.takes,
            evictions: self.evictions - earlier.evictions,
            failed_conditions: self.failed_conditions - earlier.failed_conditions,
            other: self.other - earlier.other,
        }
    }
}

#[derive(Debug)]
struct Metered {
    inner: InMemoryLeaseStore,
    ops: Mutex<Ops>,
    item_bytes: usize,
}

impl Metered {
    fn ops(&self) -> Ops {
        *self.ops.lock().unwrap()
    }
}

#[async_trait]
impl LeaseStore for Metered {
    async fn ensure_table(&self) -> Result<bool, LeaseError> {
        self.inner.ensure_table().await
    }

    async fn list_leases(&self) -> Result<Vec<Lease>, LeaseError> {
        let leases = self.inner.list_leases().await?;
        let bytes = leases.len() * self.item_bytes;
        let mut ops = self.ops.lock().unwrap();
        ops.scans += 1;
        let full_pages = bytes / SCAN_PAGE_BYTES;
        let last = bytes % SCAN_PAGE_BYTES;
        let pages = (full_pages + usize::from(last > 0)).max(1);
        ops.scan_pages += pages as u64;
        let units = |b: usize| b.div_ceil(4096).max(1) as f64 * 0.5;
        ops.scan_rcu += full_pages as f64 * units(SCAN_PAGE_BYTES) + units(last);
        Ok(leases)
    }

    async fn get_lease(&self, lease_key: &str) -> Result<Option<Lease>, LeaseError> {
        self.inner.get_lease(lease_key).await
    }

    async fn create_lease_if_absent(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        self.ops.lock().unwrap().other += 1;
        self.inner.create_lease_if_absent(lease).await
    }

    async fn update_lease(
        &self,
        observed: &Lease,
        update: &LeaseUpdate,
    ) -> Result<Lease, LeaseError> {
        let result = self.inner.update_lease(observed, update).await;
        let mut ops = self.ops.lock().unwrap();
        match update {
            LeaseUpdate::Renew => ops.renewals += 1,
            LeaseUpdate::Take { .. } => ops.takes += 1,
            LeaseUpdate::Evict => ops.evictions += 1,
            _ => ops.other += 1,
        }
        if matches!(&result, Err(e) if e.is_lease_lost()) {
            ops.failed_conditions += 1;
        }
        result
    }

    async fn delete_lease(&self, observed: &Lease) -> Result<(), LeaseError> {
        self.ops.lock().unwrap().other += 1;
        self.inner.delete_lease(observed).await
    }
}

// ---------------------------------------------------------------------------------------------
// Takers: ours, and a model of the KCL 2.x one.

/// One pass of one worker.
#[derive(Debug, Clone)]
struct PassRecord {
    worker: String,
    started: Instant,
    ended: Instant,
    moved: usize,
    /// Unowned or expired leases the (first) plan saw.
    available: usize,
    /// Workers the (first) plan counted, itself included.
    workers: usize,
    lost_races: usize,
}

/// What a pass hands back to the worker loop.
struct PassOutcome {
    record: PassRecord,
    taken: Vec<Lease>,
    /// Keys the table says are no longer ours.
    lost: Vec<String>,
    /// Nothing changed and nothing to do (for the backing-off taker).
    quiet: bool,
}

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// The KCL 2.x lease taker as described in `../shared/reference/kcl.md` and the KCL's
/// documentation: target `ceil(N / W)` (1 when there are more workers than leases); take
/// expired or unowned leases (shuffled, those expired for more than 3 × the failover time
/// first) up to the target; only when none is free, steal from the single most loaded
/// worker if it holds at least the target: as many as it holds above the target, or one
/// when more than one is needed, at most `max_leases_to_steal_at_one_time` (1). Takes are
/// sequential; a lost race is simply skipped.
struct Kcl2Taker {
    me: String,
    tracker: LeaseTracker,
    failover: Duration,
    max_steal: usize,
    rng: Rng,
}

impl Kcl2Taker {
    async fn pass(
        &mut self,
        store: &Arc<dyn LeaseStore>,
    ) -> (usize, usize, Vec<Lease>, Vec<Lease>) {
        let snapshot = store.list_leases().await.expect("in-memory scan");
        let now = Instant::now();
        self.tracker.observe(&snapshot, now);
        let mut loads: BTreeMap<&str, Vec<&Lease>> = BTreeMap::new();
        loads.insert(&self.me, Vec::new());
        let mut expired = Vec::new();
        let mut leases = 0;
        for lease in snapshot.iter().filter(|l| !l.is_finished()) {
            leases += 1;
            match (
                self.tracker.expired_for(lease, now, self.failover),
                &lease.owner,
            ) {
                (None, Some(owner)) => loads.entry(owner).or_default().push(lease),
                (free, _) => expired.push((free.unwrap_or(Duration::MAX), lease)),
            }
        }
        let workers = loads.len();
        let available = expired.len();
        let target = if workers >= leases {
            usize::from(leases > 0)
        } else {
            leases.div_ceil(workers)
        };
        let mine = loads[self.me.as_str()].len();
        let mut chosen: Vec<Lease> = Vec::new();
        if mine < target {
            let needed = target - mine;
            if !expired.is_empty() {
                self.rng.shuffle(&mut expired);
                let very_old = self.failover * 2;
                expired.sort_by_key(|(free, _)| *free <= very_old);
                chosen = expired
                    .iter()
                    .take(needed)
                    .map(|(_, l)| (*l).clone())
                    .collect();
            } else if let Some((_, most)) = loads
                .iter()
                .filter(|(w, _)| **w != self.me)
                .max_by_key(|(_, l)| l.len())
                && most.len() >= target
            {
                let mut steal = needed.min(most.len() - target);
                if needed > 1 && steal == 0 {
                    steal = 1;
                }
                let mut victims = most.clone();
                self.rng.shuffle(&mut victims);
                chosen = victims
                    .into_iter()
                    .take(steal.min(self.max_steal))
                    .cloned()
                    .collect();
            }
        }
        let mut taken = Vec::new();
        for lease in chosen {
            if let Ok(t) = store.take_lease(&lease, &self.me).await {
                taken.push(t);
            }
        }
        (workers, available, taken, snapshot)
    }
}

enum Algo {
    Ours(Box<Taker>),
    Kcl2(Box<Kcl2Taker>),
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Ours,
    Kcl2,
}

#[derive(Debug, Clone)]
struct Config {
    name: &'static str,
    kind: Kind,
    /// The taker interval (the fastest, when backing off).
    take_interval: Duration,
    /// Backing off while quiet, up to this interval (`None`: a fixed interval).
    back_off_to: Option<Duration>,
    failover: Duration,
    /// Graceful shutdown releases the leases (this crate) or just stops (the KCL 2.x).
    releases: bool,
}

impl Config {
    fn renew_interval(&self) -> Duration {
        (self.failover / 3).saturating_sub(Duration::from_millis(25))
    }
}

// ---------------------------------------------------------------------------------------------
// A simulated worker.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Run,
    Graceful,
    Kill,
}

struct Sim {
    store: Arc<Metered>,
    config: Config,
    log: Arc<Mutex<Vec<PassRecord>>>,
    workers: BTreeMap<String, (watch::Sender<Stop>, tokio::task::JoinHandle<()>)>,
    rng: Rng,
    next_id: usize,
}

impl Sim {
    fn store(&self) -> Arc<dyn LeaseStore> {
        self.store.clone()
    }

    /// Starts a worker whose first pass comes within one taker interval.
    fn start_worker(&mut self) -> String {
        let id = format!("worker-{:03}", self.next_id);
        self.next_id += 1;
        let phase =
            Duration::from_micros(self.rng.below(self.config.take_interval.as_micros() as u64));
        let renew_phase = Duration::from_micros(
            self.rng
                .below(self.config.renew_interval().as_micros() as u64),
        );
        let (stop_tx, stop) = watch::channel(Stop::Run);
        let algo = match self.config.kind {
            Kind::Ours => Algo::Ours(Box::new(Taker::new(
                id.clone(),
                AssignmentConfig::default().with_failover_time(self.config.failover),
            ))),
            Kind::Kcl2 => Algo::Kcl2(Box::new(Kcl2Taker {
                me: id.clone(),
                tracker: LeaseTracker::new(),
                failover: self.config.failover,
                max_steal: 1,
                rng: Rng(self.rng.next()),
            })),
        };
        let task = tokio::spawn(run_worker(
            id.clone(),
            self.store(),
            self.config.clone(),
            algo,
            stop,
            self.log.clone(),
            (phase, renew_phase),
        ));
        self.workers.insert(id.clone(), (stop_tx, task));
        id
    }

    async fn stop_worker(&mut self, id: &str, how: Stop) {
        if let Some((stop, task)) = self.workers.remove(id) {
            stop.send_replace(how);
            let _ = task.await;
        }
    }

    async fn counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for lease in self.store.inner.list_leases().await.unwrap() {
            *counts.entry(lease.owner.unwrap_or_default()).or_default() += 1;
        }
        counts
    }

    async fn is_fair(&self) -> bool {
        let counts = self.counts().await;
        let live: Vec<usize> = self
            .workers
            .keys()
            .map(|w| counts.get(w).copied().unwrap_or(0))
            .collect();
        let total: usize = counts.values().sum();
        let (min, max) = (live.iter().min(), live.iter().max());
        live.iter().sum::<usize>() == total && min.zip(max).is_none_or(|(a, b)| b - a <= 1)
    }

    /// Runs until the table is fair and no lease moved for 5 passes of every worker (or
    /// for `limit`). `first_pass` picks, per worker, its pass that counts as the first one
    /// after the change.
    async fn until_settled(
        &self,
        since: Instant,
        limit: Duration,
        first_pass: impl Fn(&[PassRecord]) -> usize,
    ) -> Outcome {
        let deadline = since + limit;
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let (quiet_after, quiet) = {
                let log = self.log.lock().unwrap();
                let last_move = log
                    .iter()
                    .rev()
                    .take_while(|p| p.started >= since)
                    .filter(|p| p.moved > 0)
                    .map(|p| p.ended)
                    .max();
                let quiet_after = last_move.unwrap_or(since);
                let mut quiet_passes: BTreeMap<&str, usize> = BTreeMap::new();
                for p in log.iter().rev().take_while(|p| p.started > quiet_after) {
                    *quiet_passes.entry(p.worker.as_str()).or_default() += 1;
                }
                let quiet = self
                    .workers
                    .keys()
                    .all(|w| quiet_passes.get(w.as_str()).copied().unwrap_or(0) >= 5);
                (quiet_after, quiet)
            };
            let fair = self.is_fair().await;
            if !((fair && quiet) || Instant::now() >= deadline) {
                continue;
            }
            let log = self.log.lock().unwrap();
            let mut passes = 0;
            let mut moves = 0;
            let mut lost = 0;
            for w in self.workers.keys() {
                let mine: Vec<PassRecord> = log
                    .iter()
                    .filter(|p| &p.worker == w && p.started >= since)
                    .cloned()
                    .collect();
                let first = first_pass(&mine);
                for (i, p) in mine.iter().enumerate() {
                    if p.moved > 0 {
                        let number = if i + 1 >= first { i + 2 - first } else { 0 };
                        passes = passes.max(number);
                    }
                }
            }
            // Moves and races of every worker, the stopped ones included.
            for p in log.iter().filter(|p| p.started >= since) {
                moves += p.moved;
                lost += p.lost_races;
            }
            return Outcome {
                settled: fair && quiet,
                passes,
                time: quiet_after.saturating_duration_since(since),
                moves,
                lost_races: lost,
            };
        }
    }
}

#[derive(Debug)]
struct Outcome {
    settled: bool,
    passes: usize,
    time: Duration,
    moves: usize,
    lost_races: usize,
}

async fn run_worker(
    me: String,
    store: Arc<dyn LeaseStore>,
    config: Config,
    mut algo: Algo,
    mut stop: watch::Receiver<Stop>,
    log: Arc<Mutex<Vec<PassRecord>>>,
    (phase, renew_phase): (Duration, Duration),
) {
    let start = Instant::now();
    let mut renew = tokio::time::interval_at(start + renew_phase, config.renew_interval());
    renew.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let next_pass = tokio::time::sleep_until(start + phase);
    tokio::pin!(next_pass);
    let mut interval = config.take_interval;
    let mut held: BTreeMap<String, Lease> = BTreeMap::new();
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => {
                if *stop.borrow() == Stop::Graceful && config.releases {
                    for lease in held.values() {
                        let _ = store.evict_lease(lease).await;
                    }
                }
                return;
            }
            _ = renew.tick() => {
                let keys: Vec<String> = held.keys().cloned().collect();
                for key in keys {
                    match store.renew_lease(&held[&key]).await {
                        Ok(lease) => { held.insert(key, lease); }
                        Err(e) if e.is_lease_lost() => {
                            held.remove(&key);
                            // As the worker: a lease lost means the fleet changes.
                            if config.back_off_to.is_some() && interval > config.take_interval {
                                interval = config.take_interval;
                                next_pass.as_mut().reset(Instant::now() + interval);
                            }
                        }
                        Err(_) => {}
                    }
                }
            }
            _ = &mut next_pass => {
                let started = Instant::now();
                let outcome = pass(&me, &store, &mut algo, &held, started).await;
                for key in &outcome.lost {
                    held.remove(key);
                }
                for lease in outcome.taken {
                    held.insert(lease.lease_key.clone(), lease);
                }
                interval = match config.back_off_to {
                    Some(max) if outcome.quiet => (interval * 2).min(max),
                    _ => config.take_interval,
                };
                log.lock().unwrap().push(outcome.record);
                next_pass.as_mut().reset(Instant::now() + interval);
            }
        }
    }
}

async fn pass(
    me: &str,
    store: &Arc<dyn LeaseStore>,
    algo: &mut Algo,
    held: &BTreeMap<String, Lease>,
    started: Instant,
) -> PassOutcome {
    let (workers, available, lost_races, taken, snapshot, quiet) = match algo {
        Algo::Ours(taker) => {
            let pass = taker.pass(store).await.expect("in-memory scan");
            let quiet = pass.plan.is_empty() && pass.plan.available == 0 && pass.lost_races == 0;
            let snapshot = pass.latest_snapshot().to_vec();
            (
                pass.plan.workers,
                pass.plan.available,
                pass.lost_races,
                pass.taken,
                snapshot,
                quiet,
            )
        }
        Algo::Kcl2(taker) => {
            let (workers, available, taken, snapshot) = taker.pass(store).await;
            (workers, available, 0, taken, snapshot, false)
        }
    };
    let lost: Vec<String> = snapshot
        .iter()
        .filter(|l| held.contains_key(&l.lease_key) && !l.is_owned_by(me))
        .map(|l| l.lease_key.clone())
        .collect();
    let quiet = quiet && lost.is_empty();
    PassOutcome {
        record: PassRecord {
            worker: me.to_owned(),
            started,
            ended: Instant::now(),
            moved: taken.len(),
            available,
            workers,
            lost_races,
        },
        taken,
        lost,
        quiet,
    }
}

// ---------------------------------------------------------------------------------------------
// The story, per configuration.

#[derive(Debug)]
struct Report {
    config: Config,
    events: Vec<(&'static str, Outcome, usize)>,
    steady: Ops,
    steady_minutes: f64,
}

async fn story(
    config: Config,
    shards: usize,
    workers: usize,
    steady: Duration,
    seed: u64,
) -> Report {
    let item_bytes = lease_item_bytes();
    let store = Arc::new(Metered {
        inner: InMemoryLeaseStore::new(),
        ops: Mutex::default(),
        item_bytes,
    });
    for i in 0..shards {
        let lease = Lease::new(format!("shardId-{i:012}"), Position::TrimHorizon);
        store.inner.create_lease_if_absent(&lease).await.unwrap();
    }
    let mut sim = Sim {
        store,
        config: config.clone(),
        log: Arc::default(),
        workers: BTreeMap::new(),
        rng: Rng(seed),
        next_id: 0,
    };
    let limit = Duration::from_secs(3600);
    let mut events = Vec::new();

    // 1. Cold start.
    let t = Instant::now();
    for _ in 0..workers {
        sim.start_worker();
    }
    let outcome = sim.until_settled(t, limit, |_| 1).await;
    events.push(("cold start", outcome, shards));

    // 2. Steady.
    let before = sim.store.ops();
    tokio::time::sleep(steady).await;
    let steady_ops = sim.store.ops().minus(&before);
    let moved_in_steady: usize = sim
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|p| p.started >= Instant::now() - steady)
        .map(|p| p.moved)
        .sum();
    assert_eq!(
        moved_in_steady, 0,
        "{}: leases moved in the steady state",
        config.name
    );

    // 3. Join, then a scale-out by a fifth of the fleet at once (within one interval).
    let t = Instant::now();
    sim.start_worker();
    let outcome = sim.until_settled(t, limit, |_| 1).await;
    events.push(("join", outcome, shards / (workers + 1)));
    let more = (workers / 5).max(2);
    let t = Instant::now();
    for _ in 0..more {
        sim.start_worker();
    }
    let outcome = sim.until_settled(t, limit, |_| 1).await;
    events.push(("scale-out", outcome, more * (shards / (workers + 1 + more))));

    // 4. Graceful leave of the first worker, then 5. a kill of the second.
    for (what, how) in [("graceful leave", Stop::Graceful), ("kill", Stop::Kill)] {
        let counts = sim.counts().await;
        let victim = sim.workers.keys().next().unwrap().clone();
        let held = counts.get(&victim).copied().unwrap_or(0);
        sim.stop_worker(&victim, how).await;
        let t = Instant::now();
        let live = sim.workers.len();
        let released = how == Stop::Graceful && config.releases;
        let outcome = sim
            .until_settled(t, limit, |passes| {
                if released {
                    1
                } else {
                    // From the first pass that sees all its leases expired.
                    passes
                        .iter()
                        .position(|p| p.available > 0 && p.workers == live)
                        .map_or(usize::MAX, |i| i + 1)
                }
            })
            .await;
        events.push((what, outcome, held));
    }

    for (stop, task) in std::mem::take(&mut sim.workers).into_values() {
        stop.send_replace(Stop::Kill);
        let _ = task.await;
    }
    Report {
        config,
        events,
        steady: steady_ops,
        steady_minutes: steady.as_secs_f64() / 60.0,
    }
}

// ---------------------------------------------------------------------------------------------

struct Options {
    shards: usize,
    workers: usize,
    failover: Duration,
    steady: Duration,
    seed: u64,
    quick: bool,
}

fn parse() -> Result<Option<Options>, String> {
    let mut o = Options {
        shards: 1000,
        workers: 50,
        failover: Duration::from_secs(10),
        steady: Duration::from_secs(600),
        seed: 1,
        quick: false,
    };
    let mut args = std::env::args().skip(1);
    fn num(name: &str, v: Option<String>) -> Result<u64, String> {
        let v = v.ok_or_else(|| format!("{name} needs a value"))?;
        v.parse()
            .map_err(|_| format!("{name}: {v:?} is not a number"))
    }
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--shards" => o.shards = num(&arg, args.next())?.max(1) as usize,
            "--workers" => o.workers = num(&arg, args.next())?.max(3) as usize,
            "--failover" => o.failover = Duration::from_secs(num(&arg, args.next())?.max(1)),
            "--steady" => o.steady = Duration::from_secs(60 * num(&arg, args.next())?.max(1)),
            "--seed" => o.seed = num(&arg, args.next())?,
            "--quick" => {
                o.quick = true;
                o.shards = 64;
                o.workers = 4;
                o.steady = Duration::from_secs(60);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Some(o))
}

fn main() -> std::process::ExitCode {
    let o = match parse() {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{USAGE}");
            return std::process::ExitCode::SUCCESS;
        }
        Err(e) => {
            eprint!("{e}\n\n{USAGE}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let kcl_taker = 2 * (o.failover + Duration::from_millis(25));
    let configs = [
        Config {
            name: "this crate, taker 1 s (default)",
            kind: Kind::Ours,
            take_interval: Duration::from_secs(1),
            back_off_to: None,
            failover: o.failover,
            releases: true,
        },
        Config {
            name: "this crate, taker 1 s, `lease_taker_interval_when_stable(20 s)`",
            kind: Kind::Ours,
            take_interval: Duration::from_secs(1),
            back_off_to: Some(Duration::from_secs(20)),
            failover: o.failover,
            releases: true,
        },
        Config {
            name: "this crate, taker 2 × (failover + 25 ms)",
            kind: Kind::Ours,
            take_interval: kcl_taker,
            back_off_to: None,
            failover: o.failover,
            releases: true,
        },
        Config {
            name: "KCL 2.x model (steal 1 per pass, taker 2 × (failover + 25 ms))",
            kind: Kind::Kcl2,
            take_interval: kcl_taker,
            back_off_to: None,
            failover: o.failover,
            releases: false,
        },
    ];
    let item = lease_item_bytes();
    println!(
        "{} shards × {} workers, failover {:?}, renew every {:?}; lease item {item} bytes; \
         scan pages of 1 MB, 0.5 read unit per 4 KB (eventually consistent); 1 write unit \
         per conditional write (items < 1 KB)",
        o.shards,
        o.workers,
        o.failover,
        configs[0].renew_interval()
    );
    let mut failed = false;
    for config in configs {
        let wall = std::time::Instant::now();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime");
        let report = runtime.block_on(story(config, o.shards, o.workers, o.steady, o.seed));
        print_report(&report, o.shards, wall.elapsed());
        failed |= report.events.iter().any(|(_, e, _)| !e.settled);
    }
    if o.quick {
        println!("(--quick: harness check only; the figures above are not the benchmark)");
    }
    if failed {
        eprintln!("some change never settled within the simulated hour");
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
}

fn print_report(r: &Report, shards: usize, wall: Duration) {
    println!(
        "\n## {} (simulated in {:.1} s)",
        r.config.name,
        wall.as_secs_f64()
    );
    println!(
        "| change | settled | passes | time to last move | leases moved (fewest) | lost races |"
    );
    println!("|---|---|---|---|---|---|");
    for (what, e, fewest) in &r.events {
        println!(
            "| {what} | {} | {} | {:.1} s | {} ({fewest}) | {} |",
            if e.settled { "yes" } else { "NO" },
            e.passes,
            e.time.as_secs_f64(),
            e.moves,
            e.lost_races
        );
    }
    let per_min = |n: f64| n / r.steady_minutes;
    let s = &r.steady;
    let rcu = per_min(s.scan_rcu);
    let wcu = per_min(s.writes() as f64);
    println!(
        "steady, per minute: {:.0} scans ({:.0} pages, {:.0} read units), {:.0} renewals, \
         {:.0} takes, {:.0} failed conditions, {:.0} write units",
        per_min(s.scans as f64),
        per_min(s.scan_pages as f64),
        rcu,
        per_min(s.renewals as f64),
        per_min(s.takes as f64),
        per_min(s.failed_conditions as f64),
        wcu
    );
    println!(
        "steady, per shard-minute: {:.2} read units, {:.2} write units",
        rcu / shards as f64,
        wcu / shards as f64
    );
}
