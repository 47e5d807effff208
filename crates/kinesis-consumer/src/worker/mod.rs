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
//!                                                          (LeaseSink: conditional writes)
//! ```
//!
//! Timing defaults are the KCL's where they exist (`failover_time` 10 s, renew every third of
//! it, shard sync every 60 s); the lease taker runs every second instead of every 20 s, so that
//! a released lease is picked up at once and a fair assignment is reached within a few seconds.
//! A scan per second per worker costs a few read units for tables of tens of leases.

mod sink;
pub(crate) mod sync;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kinesis_aggregation::{HashKey, HashKeyRange};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use crate::lease::{
    AssignmentConfig, DynamoLeaseStore, Lease, LeaseError, LeaseStore, LeaseTracker, plan,
};
use crate::position::Position;
use crate::processor::{PendingCheckpoint, ProcessorErrorPolicy, ProcessorFactory};
use crate::retrieval::{PollingConfig, Retrieval};
use crate::shard_consumer::{
    ShardConsumer, ShardConsumerHandle, ShardConsumerOptions, ShardConsumerOutcome, ShardLease,
};
use sink::{LeaseSink, SharedLease};
use sync::ShardInfo;

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
    shard_sync_interval: Duration,
    initial_position: InitialPosition,
    polling: PollingConfig,
    max_leases_for_worker: usize,
    max_leases_to_steal_at_one_time: usize,
    error_policy: ProcessorErrorPolicy,
    cleanup_leases: bool,
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

    /// Records per `GetRecords` call (the KCL's `maxRecords`). Default 10 000.
    pub fn max_records(mut self, max: u32) -> Self {
        self.polling.max_records = max;
        self
    }

    /// Pause after a read that returned nothing (the KCL's `idleTimeBetweenReadsInMillis`).
    /// Default 1.5 s; at least 200 ms (5 reads per second per shard is the Kinesis limit).
    pub fn idle_time_between_reads(mut self, idle: Duration) -> Self {
        self.polling.idle_time_between_reads = idle;
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
        Worker {
            shared: Arc::new(Shared { shutdown, done }),
            worker_id: self.worker_id.unwrap_or_else(default_worker_id),
            stream: self.stream,
            retrieval: Retrieval::polling(self.kinesis.clone(), self.polling),
            kinesis: self.kinesis,
            store,
            factory: self.factory,
            assignment: AssignmentConfig::default()
                .with_failover_time(self.failover_time)
                .with_max_leases_per_worker(self.max_leases_for_worker)
                .with_max_leases_to_steal_at_one_time(self.max_leases_to_steal_at_one_time),
            take_interval: self.take_interval,
            shard_sync_interval: self.shard_sync_interval,
            initial_position: self.initial_position,
            error_policy: self.error_policy,
            cleanup_leases: self.cleanup_leases,
        }
    }
}

#[derive(Debug)]
struct Shared {
    shutdown: watch::Sender<bool>,
    done: watch::Sender<bool>,
}

/// A KCL-class consumer worker; see the [module docs](self).
pub struct Worker<F> {
    shared: Arc<Shared>,
    worker_id: String,
    stream: String,
    kinesis: aws_sdk_kinesis::Client,
    retrieval: Retrieval,
    store: Arc<dyn LeaseStore>,
    factory: F,
    assignment: AssignmentConfig,
    take_interval: Duration,
    shard_sync_interval: Duration,
    initial_position: InitialPosition,
    error_policy: ProcessorErrorPolicy,
    cleanup_leases: bool,
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
            shard_sync_interval: Duration::from_secs(60),
            initial_position: InitialPosition::default(),
            polling: PollingConfig::default(),
            max_leases_for_worker: usize::MAX,
            max_leases_to_steal_at_one_time: usize::MAX,
            error_policy: ProcessorErrorPolicy::default(),
            cleanup_leases: true,
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
        let result = self.run_inner().await;
        self.shared.done.send_replace(true);
        result
    }

    async fn run_inner(&self) -> Result<(), WorkerError> {
        self.store.ensure_table().await?;
        let mut state = State::new(self);
        state.shard_sync().await?;
        info!(worker = %self.worker_id, stream = %self.stream, "worker started");

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
        }
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
}

/// The run loop's state.
struct State<'w, F> {
    worker: &'w Worker<F>,
    held: BTreeMap<String, Held>,
    /// Consumers told their lease is lost, finishing their in-flight call.
    stopping: Vec<ShardConsumerHandle>,
    tracker: LeaseTracker,
    /// The latest lease-table scan, for children waiting on their parents. `None` until
    /// the first scan, so that "no parent lease" is never read from an empty start.
    snapshot: watch::Sender<Option<Arc<Vec<Lease>>>>,
    sync_requested: bool,
}

impl<'w, F: ProcessorFactory> State<'w, F> {
    fn new(worker: &'w Worker<F>) -> Self {
        State {
            worker,
            held: BTreeMap::new(),
            stopping: Vec::new(),
            tracker: LeaseTracker::new(),
            snapshot: watch::channel(None).0,
            sync_requested: false,
        }
    }

    fn me(&self) -> &str {
        &self.worker.worker_id
    }

    /// Renews every held lease concurrently; a lease whose renewal fails its condition (or
    /// has not succeeded for a whole failover time) is lost.
    async fn renew(&mut self) {
        let mut renewals = JoinSet::new();
        for (key, held) in &self.held {
            let (key, lease, store) = (key.clone(), held.lease.clone(), self.worker.store.clone());
            renewals.spawn(async move {
                let mut lease = lease.lock().await;
                let result = store.renew_lease(&lease).await;
                if let Ok(renewed) = &result {
                    *lease = renewed.clone();
                }
                (key, result.map(|_| ()))
            });
        }
        let now = Instant::now();
        let failover = self.worker.assignment.failover_time;
        while let Some(joined) = renewals.join_next().await {
            let Ok((key, result)) = joined else { continue };
            match result {
                Ok(()) => {
                    if let Some(held) = self.held.get_mut(&key) {
                        held.last_renewed = now;
                    }
                }
                Err(e) if e.is_lease_lost() => self.lose(&key, "renewal found it changed"),
                Err(e) => {
                    let stale = self
                        .held
                        .get(&key)
                        .is_some_and(|h| now.duration_since(h.last_renewed) > failover);
                    if stale {
                        self.lose(&key, "not renewed for a whole failover time");
                    } else {
                        warn!(lease = %key, error = %e, "renewal failed; retrying");
                    }
                }
            }
        }
        metrics::gauge!("LeasesHeld").set(self.held.len() as f64);
    }

    fn lose(&mut self, key: &str, why: &str) {
        if let Some(held) = self.held.remove(key) {
            warn!(lease = %key, why, "lease lost");
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

    /// Scans the table, notes counter changes, resumes leases the table says are ours, and
    /// takes or steals according to the plan.
    async fn take_pass(&mut self) {
        let snapshot = match self.worker.store.list_leases().await {
            Ok(leases) => leases,
            Err(e) => {
                warn!(error = %e, "lease table scan failed");
                return;
            }
        };
        let now = Instant::now();
        self.tracker.observe(&snapshot, now);
        self.snapshot.send_replace(Some(Arc::new(snapshot.clone())));

        // Held in memory but owned by someone else in the table: stolen.
        let stolen: Vec<String> = snapshot
            .iter()
            .filter(|l| self.held.contains_key(&l.lease_key) && !l.is_owned_by(self.me()))
            .map(|l| l.lease_key.clone())
            .collect();
        for key in stolen {
            self.lose(&key, "another worker took it");
        }

        // Ours in the table but not running here (a restart under the same worker id).
        let mut to_take: Vec<Lease> = snapshot
            .iter()
            .filter(|l| {
                l.is_owned_by(self.me())
                    && !l.is_finished()
                    && !self.held.contains_key(&l.lease_key)
            })
            .cloned()
            .collect();
        let plan = plan(
            &snapshot,
            self.me(),
            &self.tracker,
            now,
            &self.worker.assignment,
        );
        if !plan.is_empty() {
            debug!(
                target = plan.target,
                held = plan.held,
                take = plan.take.len(),
                steal = plan.steal.len(),
                "lease plan"
            );
        }
        to_take.extend(plan.take);
        let first_steal = to_take.len();
        to_take.extend(plan.steal);
        for (i, observed) in to_take.into_iter().enumerate() {
            match self.worker.store.take_lease(&observed, self.me()).await {
                Ok(taken) => {
                    if i >= first_steal {
                        metrics::counter!("StolenLeases").increment(1);
                    }
                    metrics::counter!("TakenLeases").increment(1);
                    info!(lease = %taken.lease_key, from = ?observed.owner, "lease taken");
                    self.start(taken);
                }
                Err(e) if e.is_lease_lost() => {
                    debug!(lease = %observed.lease_key, "someone else took the lease first");
                }
                Err(e) => warn!(lease = %observed.lease_key, error = %e, "taking the lease failed"),
            }
        }
        metrics::gauge!("LeasesHeld").set(self.held.len() as f64);
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
            ..ShardConsumerOptions::default()
        };
        let mut consumer = ShardConsumer::new(
            shard,
            worker.factory.create(),
            sink,
            worker.retrieval.clone(),
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
