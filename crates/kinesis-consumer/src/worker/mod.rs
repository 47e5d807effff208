//! The worker: holds shard leases in the lease table and runs a shard consumer per lease.
//!
//! ```text
//!                       ┌──────────────────────── Worker::run (one task) ───────────────────────┐
//!  every take_interval  │ Scan lease table ─► LeaseTracker (expiry on the monotonic clock)       │
//!                       │   └─► snapshot ─► parents-done futures of waiting children             │
//!                       │   └─► plan(): take expired/unowned, steal to balance ─► take (cond.)  │
//!                       │                                         └─► ShardConsumer::spawn ───┐ │
//!  every renew_interval │ renew every held lease (cond. on counter) ── lost? ─► lease_lost()  │ │
//!  every shard_sync     │ ListShards ─► create missing leases (children at TRIM_HORIZON),     │ │
//!  (and after SHARD_END)│               delete finished leases whose children started         │ │
//!  consumer finished    │ ShardEnded ─► record children, sync now · ShutDown/failed ─► release │ │
//!  shutdown()           │ request_shutdown() on all ─► join ─► release (evict) every lease    │ │
//!                       └──────────────────────────────────────────────────────────────────────┘ │
//!         ShardConsumer per lease: GetRecords ─► deaggregate ─► RecordProcessor ─► Checkpointer ◄┘
//!         (or SubscribeToShard: Retrieval)                 (LeaseSink: conditional writes)
//! ```
//!
//! With [`Retrieval::FanOut`], `run` registers the application's stream consumer (or finds
//! it) before it takes any lease, and fails with [`WorkerError::Retrieval`] if it cannot.
//!
//! Timing defaults are the KCL's where they exist (`failover_time` 10 s, renew every third of
//! it, shard sync every 60 s); the lease taker runs every second instead of every 20 s, so that
//! a released lease is picked up at once and a fair assignment is reached within a few seconds.
//! A scan per second per worker costs a few read units for tables of tens of leases.

mod health;
mod sink;
pub(crate) mod sync;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kinesis_aggregation::{HashKey, HashKeyRange};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{Instrument, debug, info, warn};

use crate::lease::{
    AssignmentConfig, DynamoLeaseStore, Lease, LeaseError, LeaseStore,
    assignment::{TakePass, Taker},
};
use crate::position::Position;
use crate::processor::{PendingCheckpoint, ProcessorErrorPolicy, ProcessorFactory};
use crate::retrieval::{RecordSources, Retrieval, RetrievalError};
use crate::shard_consumer::{
    ShardConsumer, ShardConsumerHandle, ShardConsumerOptions, ShardConsumerOutcome, ShardLease,
};
use sink::{LeaseSink, SharedLease};
use sync::ShardInfo;

use health::{HealthBoard, ShardActivity, Tracked, TrackedSources};
pub use health::{
    HealthPolicy, HealthProblem, ProcessorCall, ShardHealth, WorkerHealth, WorkerStatus,
};

/// Where a new application starts reading (the KCL's `initialPositionInStream`). Children of
/// a resharded shard always start at their first record, whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum InitialPosition {
    /// Only records written after the application first starts (the KCL's default).
    #[default]
    Latest,
    /// The oldest records still in the stream.
    TrimHorizon,
    /// Records written at or after this time.
    AtTimestamp(SystemTime),
}

impl InitialPosition {
    fn checkpoint(self) -> Position {
        match self {
            InitialPosition::Latest => Position::Latest,
            InitialPosition::TrimHorizon => Position::TrimHorizon,
            InitialPosition::AtTimestamp(_) => Position::AtTimestamp,
        }
    }
}

/// Why a worker could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The lease table could not be created or read.
    #[error("lease table: {0}")]
    LeaseTable(#[from] LeaseError),
    /// The stream does not exist.
    #[error("stream {stream} not found")]
    StreamNotFound {
        /// The stream's name.
        stream: String,
    },
    /// Listing the stream's shards failed.
    #[error("listing the shards of {stream} failed: {source}")]
    ListShards {
        /// The stream's name.
        stream: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The shards cannot be read: with enhanced fan-out, the stream consumer could not be
    /// registered (e.g. [`RetrievalError::ConsumerLimitExceeded`]).
    #[error("retrieval: {0}")]
    Retrieval(#[from] RetrievalError),
}

/// Settings of a [`Worker`]; see [`Worker::builder`].
#[derive(Debug)]
pub struct WorkerBuilder<F> {
    application_name: String,
    stream: String,
    kinesis: aws_sdk_kinesis::Client,
    dynamodb: aws_sdk_dynamodb::Client,
    factory: F,
    worker_id: Option<String>,
    table_name: Option<String>,
    lease_store: Option<Arc<dyn LeaseStore>>,
    failover_time: Duration,
    take_interval: Duration,
    take_interval_when_stable: Option<Duration>,
    shard_sync_interval: Duration,
    initial_position: InitialPosition,
    retrieval: Retrieval,
    max_leases_for_worker: usize,
    max_leases_to_steal_at_one_time: usize,
    error_policy: ProcessorErrorPolicy,
    cleanup_leases: bool,
    call_processor_on_empty_batches: bool,
    take_pass_hook: Option<TakePassHook>,
}

/// Called after every lease-taker pass; see [`WorkerBuilder::on_take_pass`].
#[derive(Clone)]
struct TakePassHook(Arc<dyn Fn(&TakePass) + Send + Sync>);

impl std::fmt::Debug for TakePassHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TakePassHook")
    }
}

impl<F: ProcessorFactory> WorkerBuilder<F> {
    /// This worker's id in the lease table (`leaseOwner`). Default: host name, process id and
    /// a random suffix, unique per process start.
    pub fn worker_id(mut self, id: impl Into<String>) -> Self {
        self.worker_id = Some(id.into());
        self
    }

    /// The lease table's name. Default: the application name (as the KCL).
    pub fn table_name(mut self, table: impl Into<String>) -> Self {
        self.table_name = Some(table.into());
        self
    }

    /// How long a lease may go without renewal before other workers take it (the KCL's
    /// `failoverTimeMillis`). Default 10 s. Leases are renewed every third of it.
    pub fn failover_time(mut self, failover: Duration) -> Self {
        self.failover_time = failover.max(Duration::from_millis(300));
        self
    }

    /// How often the lease table is scanned to take and balance leases. Default 1 s.
    pub fn lease_taker_interval(mut self, interval: Duration) -> Self {
        self.take_interval = interval.max(Duration::from_millis(50));
        self
    }

    /// Lets the lease taker slow down while nothing changes: after each pass that finds
    /// nothing to take, no lease free and no race lost, the wait doubles, up to `max`; a
    /// pass with anything to do, or a lease lost (a newcomer stealing), brings it back to
    /// [`lease_taker_interval`](Self::lease_taker_interval). Every pass scans the whole
    /// table (read units grow with leases × workers / interval), so this is for large
    /// tables: a worker joining still gets its share within a pass of its own, but leases
    /// released by a graceful shutdown or expired after a crash wait up to `max` longer.
    /// Default: no slowing down.
    pub fn lease_taker_interval_when_stable(mut self, max: Duration) -> Self {
        self.take_interval_when_stable = Some(max);
        self
    }

    /// How often the stream's shards are listed to create leases for new ones (the KCL's
    /// `shardSyncIntervalMillis`). Default 60 s; a shard end triggers one at once.
    pub fn shard_sync_interval(mut self, interval: Duration) -> Self {
        self.shard_sync_interval = interval.max(Duration::from_millis(100));
        self
    }

    /// Where a new application starts. Default [`InitialPosition::Latest`].
    pub fn initial_position(mut self, position: InitialPosition) -> Self {
        self.initial_position = position;
        self
    }

    /// How shards are read: [`Retrieval::Polling`] (the default) or
    /// [`Retrieval::FanOut`] (enhanced fan-out; the consumer is registered when the worker
    /// starts, named after the application). Replaces the polling settings made so far.
    pub fn retrieval(mut self, retrieval: Retrieval) -> Self {
        self.retrieval = retrieval;
        self
    }

    /// Records per `GetRecords` call (the KCL's `maxRecords`). Default 10 000. Polling
    /// only (no effect with enhanced fan-out).
    pub fn max_records(mut self, max: u32) -> Self {
        if let Retrieval::Polling(polling) = &mut self.retrieval {
            polling.max_records = max;
        }
        self
    }

    /// Pause after a read that returned nothing (the KCL's `idleTimeBetweenReadsInMillis`).
    /// Default 1.5 s; at least 200 ms (5 reads per second per shard is the Kinesis limit).
    /// Polling only (no effect with enhanced fan-out).
    pub fn idle_time_between_reads(mut self, idle: Duration) -> Self {
        if let Retrieval::Polling(polling) = &mut self.retrieval {
            polling.idle_time_between_reads = idle;
        }
        self
    }

    /// Most leases this worker holds (the KCL's `maxLeasesForWorker`). Default unlimited.
    pub fn max_leases_for_worker(mut self, max: usize) -> Self {
        self.max_leases_for_worker = max.max(1);
        self
    }

    /// Most leases stolen in one pass when balancing (the KCL's
    /// `maxLeasesToStealAtOneTime`; it defaults to 1 there, which makes balancing take
    /// minutes). Default unlimited: the planner never steals more than a fair share.
    pub fn max_leases_to_steal_at_one_time(mut self, max: usize) -> Self {
        self.max_leases_to_steal_at_one_time = max.max(1);
        self
    }

    /// What happens when the processor returns an error. Default: retry the same batch.
    pub fn processor_error_policy(mut self, policy: ProcessorErrorPolicy) -> Self {
        self.error_policy = policy;
        self
    }

    /// Call `process_records` with an empty batch after a read that found nothing new (the
    /// KCL's `callProcessRecordsEvenForEmptyRecordList`): a processor that buffers can then
    /// flush by age on a quiet shard. Default false: processors see only non-empty batches.
    pub fn call_processor_on_empty_batches(mut self, call: bool) -> Self {
        self.call_processor_on_empty_batches = call;
        self
    }

    /// Delete finished shards' leases once their children have started (the KCL's
    /// `cleanupLeasesUponShardCompletion`). Default true.
    pub fn cleanup_leases_upon_shard_completion(mut self, cleanup: bool) -> Self {
        self.cleanup_leases = cleanup;
        self
    }

    /// Use this lease store instead of the DynamoDB table (tests, or a custom store).
    #[doc(hidden)]
    pub fn lease_store(mut self, store: Arc<dyn LeaseStore>) -> Self {
        self.lease_store = Some(store);
        self
    }

    /// Calls `hook` after every lease-taker pass with what the pass saw and did (tests and
    /// benchmarks count passes and lease moves with it). Not a stable API.
    #[doc(hidden)]
    pub fn on_take_pass(mut self, hook: impl Fn(&TakePass) + Send + Sync + 'static) -> Self {
        self.take_pass_hook = Some(TakePassHook(Arc::new(hook)));
        self
    }

    /// The worker. Nothing is contacted until [`Worker::run`].
    pub fn build(self) -> Worker<F> {
        let table = self
            .table_name
            .unwrap_or_else(|| self.application_name.clone());
        let store = self
            .lease_store
            .unwrap_or_else(|| Arc::new(DynamoLeaseStore::new(self.dynamodb, table)));
        let (shutdown, _) = watch::channel(false);
        let (done, _) = watch::channel(false);
        let worker_id = self.worker_id.unwrap_or_else(default_worker_id);
        let health = HealthBoard::new(worker_id.clone(), self.failover_time);
        let retrieval = RecordSources::new(
            self.retrieval,
            self.kinesis.clone(),
            &self.application_name,
            &self.stream,
        );
        Worker {
            shared: Arc::new(Shared {
                shutdown,
                done,
                health,
            }),
            worker_id,
            stream: self.stream,
            retrieval,
            kinesis: self.kinesis,
            store,
            factory: self.factory,
            assignment: AssignmentConfig::default()
                .with_failover_time(self.failover_time)
                .with_max_leases_per_worker(self.max_leases_for_worker)
                .with_max_leases_to_steal_at_one_time(self.max_leases_to_steal_at_one_time),
            take_interval: self.take_interval,
            take_interval_when_stable: self
                .take_interval_when_stable
                .map(|max| max.max(self.take_interval)),
            shard_sync_interval: self.shard_sync_interval,
            initial_position: self.initial_position,
            error_policy: self.error_policy,
            cleanup_leases: self.cleanup_leases,
            call_processor_on_empty_batches: self.call_processor_on_empty_batches,
            take_pass_hook: self.take_pass_hook,
        }
    }
}

#[derive(Debug)]
struct Shared {
    shutdown: watch::Sender<bool>,
    done: watch::Sender<bool>,
    health: HealthBoard,
}

/// A KCL-class consumer worker; see the [module docs](self).
pub struct Worker<F> {
    shared: Arc<Shared>,
    worker_id: String,
    stream: String,
    kinesis: aws_sdk_kinesis::Client,
    retrieval: RecordSources,
    store: Arc<dyn LeaseStore>,
    factory: F,
    assignment: AssignmentConfig,
    take_interval: Duration,
    take_interval_when_stable: Option<Duration>,
    shard_sync_interval: Duration,
    initial_position: InitialPosition,
    error_policy: ProcessorErrorPolicy,
    cleanup_leases: bool,
    call_processor_on_empty_batches: bool,
    take_pass_hook: Option<TakePassHook>,
}

impl<F> std::fmt::Debug for Worker<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("worker_id", &self.worker_id)
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

/// Asks a running [`Worker`] to shut down gracefully. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WorkerHandle {
    shared: Arc<Shared>,
}

impl WorkerHandle {
    /// Graceful shutdown: every shard consumer finishes its in-flight batch, its processor's
    /// `shutdown_requested` is called (checkpoint there), and every lease is released so
    /// that other workers take them at their next pass (about a second) instead of after the
    /// failover time. Returns when that is done (or at once if the worker is not running).
    pub async fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
        let mut done = self.shared.done.subscribe();
        // `run` flips `done` when it returns; a worker that never ran has no receiver to
        // wait for, and then `run` would return at once anyway.
        let _ = done.wait_for(|d| *d).await;
    }

    /// The worker's health now: leases held, the age of the last answered renewal pass,
    /// lease-table scan and shard sync, and per shard the running processor call and the
    /// time since the last progress. Cheap (a short lock and a copy): call it on every
    /// request of a health endpoint, and judge it with [`WorkerHealth::is_healthy`].
    pub fn health(&self) -> WorkerHealth {
        self.shared.health.snapshot()
    }
}

impl Worker<()> {
    /// A worker for `application_name` (the lease table's name) consuming `stream`, with
    /// one processor per shard lease from `factory`. Every setting has the KCL's default.
    pub fn builder<F: ProcessorFactory>(
        application_name: impl Into<String>,
        stream: impl Into<String>,
        kinesis: aws_sdk_kinesis::Client,
        dynamodb: aws_sdk_dynamodb::Client,
        factory: F,
    ) -> WorkerBuilder<F> {
        WorkerBuilder {
            application_name: application_name.into(),
            stream: stream.into(),
            kinesis,
            dynamodb,
            factory,
            worker_id: None,
            table_name: None,
            lease_store: None,
            failover_time: Duration::from_secs(10),
            take_interval: Duration::from_secs(1),
            take_interval_when_stable: None,
            shard_sync_interval: Duration::from_secs(60),
            initial_position: InitialPosition::default(),
            retrieval: Retrieval::default(),
            max_leases_for_worker: usize::MAX,
            max_leases_to_steal_at_one_time: usize::MAX,
            error_policy: ProcessorErrorPolicy::default(),
            cleanup_leases: true,
            call_processor_on_empty_batches: false,
            take_pass_hook: None,
        }
    }
}

impl<F: ProcessorFactory> Worker<F> {
    /// This worker's id in the lease table.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// A handle to shut the worker down gracefully.
    pub fn handle(&self) -> WorkerHandle {
        WorkerHandle {
            shared: self.shared.clone(),
        }
    }

    /// Runs until [`WorkerHandle::shutdown`]. Creates the lease table if needed and fails
    /// only at start (no table access, no such stream); later errors are logged and retried.
    ///
    /// Dropping the future stops everything without releasing leases: other workers take
    /// them after the failover time, as after a crash.
    pub async fn run(self) -> Result<(), WorkerError> {
        self.shared.health.set_status(WorkerStatus::Starting);
        let result = self.run_inner().await;
        self.shared.health.set_status(WorkerStatus::Stopped);
        self.shared.done.send_replace(true);
        result
    }

    async fn run_inner(&self) -> Result<(), WorkerError> {
        self.store.ensure_table().await?;
        // Enhanced fan-out: the stream consumer exists and is ACTIVE before any lease is
        // taken, and a worker that cannot register one fails here, once. Registering can
        // take a while on AWS: a shutdown meanwhile ends the run (nothing is held yet).
        let mut stop = self.shared.shutdown.subscribe();
        tokio::select! {
            prepared = self.retrieval.prepare() => prepared?,
            _ = stop.wait_for(|stop| *stop) => return Ok(()),
        }
        let mut state = State::new(self);
        state.shard_sync().await?;
        info!(worker = %self.worker_id, stream = %self.stream, "worker started");
        self.shared.health.set_status(WorkerStatus::Running);

        let mut shutdown = self.shared.shutdown.subscribe();
        let renew_interval = renew_interval(self.assignment.failover_time);
        let mut renew = tokio::time::interval(renew_interval);
        let mut take = tokio::time::interval(self.take_interval);
        let mut sync = tokio::time::interval(self.shard_sync_interval);
        for timer in [&mut renew, &mut take, &mut sync] {
            timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
        }
        sync.reset(); // the first sync just ran
        loop {
            if *shutdown.borrow() {
                break;
            }
            tokio::select! {
                biased;
                _ = shutdown.changed() => {}
                _ = renew.tick() => state.renew().await,
                _ = take.tick() => {
                    state.reap().await;
                    state.take_pass().await;
                    if state.sync_requested {
                        let _ = state.shard_sync().await;
                    }
                }
                _ = sync.tick() => {
                    if let Err(e) = state.shard_sync().await {
                        warn!(error = %e, "shard sync failed; retrying at the next interval");
                    }
                }
            }
            state.publish_health();
            if let Some(wait) = state.next_take.take() {
                take.reset_after(wait);
            }
        }
        self.shared.health.set_status(WorkerStatus::ShuttingDown);
        state.shut_down().await;
        info!(worker = %self.worker_id, "worker shut down; leases released");
        Ok(())
    }
}

/// Renew a third of the failover time after the last renewal, a little early (the KCL's
/// `failover / 3 - 25 ms`), so that two renewals can fail before the lease expires.
fn renew_interval(failover: Duration) -> Duration {
    (failover / 3)
        .saturating_sub(Duration::from_millis(25))
        .max(Duration::from_millis(50))
}

fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_owned());
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{host}-{}-{nanos:08x}", std::process::id())
}

/// A lease this worker holds and the consumer working on it.
struct Held {
    lease: SharedLease,
    consumer: ShardConsumerHandle,
    last_renewed: Instant,
    /// What its consumer last did, for [`WorkerHandle::health`].
    activity: Arc<ShardActivity>,
}

/// The run loop's state.
struct State<'w, F> {
    worker: &'w Worker<F>,
    held: BTreeMap<String, Held>,
    /// Consumers told their lease is lost, finishing their in-flight call.
    stopping: Vec<ShardConsumerHandle>,
    /// Scans, plans (see [`crate::lease::assignment`]) and takes; keeps the expiry clock.
    taker: Taker,
    /// The latest lease-table scan, for children waiting on their parents. `None` until
    /// the first scan, so that "no parent lease" is never read from an empty start.
    snapshot: watch::Sender<Option<Arc<Vec<Lease>>>>,
    sync_requested: bool,
    /// With [`WorkerBuilder::lease_taker_interval_when_stable`]: the current wait between
    /// take passes, and a new one for the run loop to apply.
    take_wait: Duration,
    next_take: Option<Duration>,
}

impl<'w, F: ProcessorFactory> State<'w, F> {
    fn new(worker: &'w Worker<F>) -> Self {
        State {
            worker,
            held: BTreeMap::new(),
            stopping: Vec::new(),
            taker: Taker::new(worker.worker_id.clone(), worker.assignment.clone()),
            snapshot: watch::channel(None).0,
            sync_requested: false,
            take_wait: worker.take_interval,
            next_take: None,
        }
    }

    fn me(&self) -> &str {
        &self.worker.worker_id
    }

    /// Renews every held lease concurrently; a lease whose renewal fails its condition (or
    /// has not succeeded for a whole failover time) is lost.
    async fn renew(&mut self) {
        let span = tracing::info_span!(
            "lease.renew",
            held = self.held.len(),
            renewed = tracing::field::Empty,
            lost = tracing::field::Empty,
        );
        let (renewed, lost) = self.renew_all().instrument(span.clone()).await;
        span.record("renewed", renewed);
        span.record("lost", lost);
    }

    /// The renewals of [`Self::renew`]; returns how many were renewed and how many lost.
    async fn renew_all(&mut self) -> (usize, usize) {
        let (mut renewed, mut lost) = (0, 0);
        let mut renewals = JoinSet::new();
        for (key, held) in &self.held {
            let (key, lease, store) = (key.clone(), held.lease.clone(), self.worker.store.clone());
            renewals.spawn(async move {
                let mut lease = lease.lock().await;
                let result = store.renew_lease(&lease).await;
                match &result {
                    Ok(renewed) => *lease = renewed.clone(),
                    // An unknown outcome (an attempt applied, then the answers lost or
                    // throttled) may have moved the counter on: re-read it, as the
                    // checkpoint sink does, or the next checkpoint reads as a lost lease.
                    Err(e) if e.is_retryable() => {
                        if let Ok(Some(current)) = store.get_lease(&lease.lease_key).await
                            && current.owner == lease.owner
                        {
                            *lease = current;
                        }
                    }
                    Err(_) => {}
                }
                (key, result.map(|_| ()))
            });
        }
        let now = Instant::now();
        let failover = self.worker.assignment.failover_time;
        // Whether the table answered every renewal (a lost lease is an answer too).
        let mut answered = true;
        while let Some(joined) = renewals.join_next().await {
            let Ok((key, result)) = joined else { continue };
            match result {
                Ok(()) => {
                    renewed += 1;
                    if let Some(held) = self.held.get_mut(&key) {
                        held.last_renewed = now;
                    }
                }
                Err(e) if e.is_lease_lost() => {
                    lost += 1;
                    self.lose(&key, "renewal found it changed", None);
                }
                Err(e) => {
                    answered = false;
                    let stale = self
                        .held
                        .get(&key)
                        .is_some_and(|h| now.duration_since(h.last_renewed) > failover);
                    if stale {
                        lost += 1;
                        self.lose(&key, "not renewed for a whole failover time", None);
                    } else {
                        warn!(lease = %key, error = %e, "renewal failed; retrying");
                    }
                }
            }
        }
        metrics::gauge!("LeasesHeld").set(self.held.len() as f64);
        if answered {
            self.worker.shared.health.renewed();
        }
        (renewed, lost)
    }

    /// Tells the health board which leases are held now.
    fn publish_health(&self) {
        self.worker
            .shared
            .health
            .set_shards(self.held.values().map(|h| h.activity.clone()));
    }

    /// Stops the consumer of a lease this worker no longer holds; `new_owner` is the owner
    /// the table names, when a scan showed it.
    fn lose(&mut self, key: &str, why: &str, new_owner: Option<&str>) {
        // Something changes in the fleet (most likely a newcomer stealing): look closely.
        self.slow_down_takes(false);
        if let Some(held) = self.held.remove(key) {
            // Info, not warn: leases move between workers as a matter of course.
            info!(lease = %key, new_owner, why, "lease lost");
            metrics::counter!("LostLeases").increment(1);
            held.consumer.lease_lost();
            self.stopping.push(held.consumer);
        }
    }

    /// Collects finished consumers and does what their outcome asks for.
    async fn reap(&mut self) {
        self.stopping.retain(|c| !c.is_finished());
        let finished: Vec<String> = self
            .held
            .iter()
            .filter(|(_, h)| h.consumer.is_finished())
            .map(|(k, _)| k.clone())
            .collect();
        for key in finished {
            if let Some(held) = self.held.remove(&key) {
                let outcome = held.consumer.join().await;
                self.settle(&key, &held.lease, outcome).await;
            }
        }
    }

    async fn settle(&mut self, key: &str, lease: &SharedLease, outcome: ShardConsumerOutcome) {
        let store = &self.worker.store;
        let mut lease = lease.lock().await;
        match outcome {
            ShardConsumerOutcome::ShardEnded { children } => {
                info!(lease = %key, children = children.len(), "shard finished");
                let ids: BTreeSet<String> = children.into_iter().map(|c| c.shard_id).collect();
                if !ids.is_empty() {
                    match store.mark_shard_end(&lease, &ids).await {
                        Ok(updated) => *lease = updated,
                        Err(e) => debug!(lease = %key, error = %e, "recording children failed"),
                    }
                }
                // Children get their leases now rather than at the next periodic sync.
                self.sync_requested = true;
            }
            ShardConsumerOutcome::LeaseLost => {}
            other => {
                if !matches!(other, ShardConsumerOutcome::ShutDown) {
                    warn!(lease = %key, outcome = ?other, "shard consumer stopped; releasing the lease");
                }
                if let Err(e) = store.evict_lease(&lease).await {
                    debug!(lease = %key, error = %e, "release failed; the lease expires instead");
                }
            }
        }
    }

    /// A lease-taker pass (scan, plan, take: [`Taker::pass`]); then notes leases stolen
    /// from us, resumes leases the table says are ours, and starts a consumer per new lease.
    async fn take_pass(&mut self) {
        let mut pass = match self.taker.pass(&self.worker.store).await {
            Ok(pass) => {
                self.worker.shared.health.scanned();
                pass
            }
            Err(e) => {
                warn!(error = %e, "lease table scan failed");
                return;
            }
        };
        let snapshot = pass.latest_snapshot();

        // Held in memory but owned by someone else in the table: stolen.
        let stolen: Vec<(String, Option<String>)> = snapshot
            .iter()
            .filter(|l| self.held.contains_key(&l.lease_key) && !l.is_owned_by(self.me()))
            .map(|l| (l.lease_key.clone(), l.owner.clone()))
            .collect();
        let robbed = !stolen.is_empty();
        for (key, owner) in stolen {
            self.lose(&key, "another worker took it", owner.as_deref());
        }

        // Ours in the table but not running here (a restart under the same worker id).
        let resume: Vec<Lease> = snapshot
            .iter()
            .filter(|l| {
                l.is_owned_by(self.me())
                    && !l.is_finished()
                    && !self.held.contains_key(&l.lease_key)
                    && !pass.taken.iter().any(|t| t.lease_key == l.lease_key)
            })
            .cloned()
            .collect();
        let resumed = !resume.is_empty();
        for observed in resume {
            match self.worker.store.take_lease(&observed, self.me()).await {
                Ok(taken) => {
                    info!(lease = %taken.lease_key, "lease resumed");
                    metrics::counter!("TakenLeases").increment(1);
                    self.start(taken);
                }
                Err(e) if e.is_lease_lost() => {
                    debug!(lease = %observed.lease_key, "someone else took the lease first");
                }
                Err(e) => {
                    warn!(lease = %observed.lease_key, error = %e, "resuming the lease failed")
                }
            }
        }

        let quiet = pass.plan.is_empty()
            && pass.plan.available == 0
            && pass.lost_races == 0
            && pass.failed == 0
            && !resumed
            && !robbed;
        self.slow_down_takes(quiet);
        metrics::counter!("TakenLeases").increment(pass.moved() as u64);
        metrics::counter!("StolenLeases").increment(pass.stolen as u64);
        if let Some(hook) = &self.worker.take_pass_hook {
            (hook.0)(&pass);
        }
        // Published before the consumers start: children among them wait on their parents.
        let snapshot = pass
            .rescan
            .take()
            .unwrap_or(std::mem::take(&mut pass.snapshot));
        self.snapshot.send_replace(Some(Arc::new(snapshot)));
        for taken in std::mem::take(&mut pass.taken) {
            self.start(taken);
        }
        metrics::gauge!("LeasesHeld").set(self.held.len() as f64);
    }

    /// The wait before the next take pass, with
    /// [`WorkerBuilder::lease_taker_interval_when_stable`]: doubled after a quiet pass,
    /// back to the interval otherwise.
    fn slow_down_takes(&mut self, quiet: bool) {
        let Some(max) = self.worker.take_interval_when_stable else {
            return;
        };
        let wait = if quiet {
            (self.take_wait * 2).min(max)
        } else {
            self.worker.take_interval
        };
        // The run loop's interval ticks at the base period: every pass sets its next one.
        self.next_take = Some(wait);
        self.take_wait = wait;
    }

    fn start(&mut self, lease: Lease) {
        let worker = self.worker;
        let mut shard = ShardLease::new(
            worker.stream.clone(),
            lease.shard_id().to_owned(),
            lease.checkpoint.clone(),
        );
        if let Some(range) = lease.hash_key_range {
            shard = shard.hash_key_range(range);
        }
        if let Some(position) = lease.pending_checkpoint.clone() {
            shard = shard.pending_checkpoint(PendingCheckpoint {
                position,
                state: lease.pending_checkpoint_state.clone(),
            });
        }
        let shared: SharedLease = Arc::new(Mutex::new(lease.clone()));
        let sink = Arc::new(LeaseSink {
            store: worker.store.clone(),
            lease: shared.clone(),
        });
        let options = ShardConsumerOptions {
            error_policy: worker.error_policy.clone(),
            initial_timestamp: match worker.initial_position {
                InitialPosition::AtTimestamp(t) => Some(t),
                _ => None,
            },
            call_processor_on_empty_batches: worker.call_processor_on_empty_batches,
            ..ShardConsumerOptions::default()
        };
        // The processor and the reads report to the health board.
        let activity = worker.shared.health.activity(lease.shard_id());
        let mut consumer = ShardConsumer::new(
            shard,
            Tracked {
                inner: worker.factory.create(),
                activity: activity.clone(),
            },
            sink,
            RecordSources(Arc::new(TrackedSources {
                inner: worker.retrieval.0.clone(),
                activity: activity.clone(),
            })),
            options,
        );
        if !lease.parent_shard_ids.is_empty() {
            consumer = consumer.wait_for_parents(parents_done(
                self.snapshot.subscribe(),
                lease.parent_shard_ids.clone(),
            ));
        }
        self.held.insert(
            lease.lease_key.clone(),
            Held {
                lease: shared,
                consumer: consumer.spawn(),
                last_renewed: Instant::now(),
                activity,
            },
        );
    }

    /// Lists the stream's shards, creates the leases the table lacks and cleans up finished
    /// ones whose children have started.
    async fn shard_sync(&mut self) -> Result<(), WorkerError> {
        self.sync_requested = false;
        let shards = list_shards(&self.worker.kinesis, &self.worker.stream).await?;
        let existing = self.worker.store.list_leases().await?;
        let initial = self.worker.initial_position.checkpoint();
        for lease in sync::leases_to_create(&shards, &existing, &initial) {
            match self.worker.store.create_lease_if_absent(&lease).await {
                Ok(_) => {
                    info!(lease = %lease.lease_key, checkpoint = %lease.checkpoint, "lease created")
                }
                Err(LeaseError::AlreadyExists { .. }) => {}
                Err(e) => warn!(lease = %lease.lease_key, error = %e, "creating the lease failed"),
            }
        }
        if self.worker.cleanup_leases {
            for lease in sync::leases_to_clean_up(&existing, &shards) {
                match self.worker.store.delete_lease(lease).await {
                    Ok(()) => info!(lease = %lease.lease_key, "finished lease cleaned up"),
                    Err(e) => debug!(lease = %lease.lease_key, error = %e, "cleanup skipped"),
                }
            }
        }
        self.worker.shared.health.synced();
        Ok(())
    }

    /// Graceful shutdown: see [`WorkerHandle::shutdown`].
    async fn shut_down(&mut self) {
        for held in self.held.values() {
            held.consumer.request_shutdown();
        }
        let held = std::mem::take(&mut self.held);
        for (key, held) in held {
            let outcome = held.consumer.join().await;
            // A finished shard keeps its lease (SHARD_END); everything else is released.
            self.settle(&key, &held.lease, outcome).await;
        }
        for consumer in self.stopping.drain(..) {
            let _ = consumer.join().await;
        }
        metrics::gauge!("LeasesHeld").set(0.0);
        self.publish_health();
    }
}

/// Resolves when every parent lease is finished (SHARD_END) or gone from the table.
async fn parents_done(
    mut snapshot: watch::Receiver<Option<Arc<Vec<Lease>>>>,
    parents: BTreeSet<String>,
) {
    loop {
        let done = snapshot.borrow_and_update().as_ref().is_some_and(|leases| {
            parents.iter().all(|parent| {
                leases
                    .iter()
                    .find(|l| l.shard_id() == parent.as_str())
                    .is_none_or(Lease::is_finished)
            })
        });
        if done || snapshot.changed().await.is_err() {
            return;
        }
    }
}

/// Every shard of `stream`, paged by `ExclusiveStartShardId` (paging by `NextToken` alone is
/// what ferrokinesis gets wrong, and this works everywhere).
async fn list_shards(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Result<Vec<ShardInfo>, WorkerError> {
    let mut shards = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let out = kinesis
            .list_shards()
            .stream_name(stream)
            .set_exclusive_start_shard_id(after.clone())
            .send()
            .await
            .map_err(|e| {
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception())
                {
                    WorkerError::StreamNotFound {
                        stream: stream.to_owned(),
                    }
                } else {
                    WorkerError::ListShards {
                        stream: stream.to_owned(),
                        // The SDK's own Display says only "service error": keep the context.
                        source: aws_sdk_kinesis::error::DisplayErrorContext(&e)
                            .to_string()
                            .into(),
                    }
                }
            })?;
        let page = out.shards();
        for shard in page {
            let hash_key_range = shard.hash_key_range().and_then(|r| {
                let start: HashKey = r.starting_hash_key().parse().ok()?;
                let end: HashKey = r.ending_hash_key().parse().ok()?;
                Some(HashKeyRange::new(start, end))
            });
            shards.push(ShardInfo {
                shard_id: shard.shard_id().to_owned(),
                parents: shard
                    .parent_shard_id()
                    .into_iter()
                    .chain(shard.adjacent_parent_shard_id())
                    .map(str::to_owned)
                    .collect(),
                hash_key_range,
                open: shard
                    .sequence_number_range()
                    .is_none_or(|r| r.ending_sequence_number().is_none()),
            });
        }
        match (out.next_token(), page.last()) {
            (Some(_), Some(last)) => after = Some(last.shard_id().to_owned()),
            _ => return Ok(shards),
        }
    }
}
