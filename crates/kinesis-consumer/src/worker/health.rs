//! Worker health: what a `/health` endpoint, an ECS container health check or a Kubernetes
//! liveness probe asks a running worker.
//!
//! ```text
//!  Worker::run loop ── renewal pass answered / lease-table scan / shard sync ──► HealthBoard
//!        │              (a stamp each, under a short std mutex)                 (status, stamps,
//!        └── leases held after every pass ─────────────────────────────────────► held shards)
//!                                                                                    │
//!  shard consumer ── processor calls ─── Tracked<P> (wraps the user's processor) ─┐  │
//!                 ── next_batch() ────── TrackedSource (wraps the record source) ─┴► ShardActivity
//!                                                            (atomics, one per held lease)
//!
//!  WorkerHandle::health() ── snapshot: ages = now − stamps ──► WorkerHealth
//!                                                   └── is_healthy(&HealthPolicy) / problems()
//! ```
//!
//! Nothing on the record path takes a lock: a shard consumer only stores into its own
//! atomics. [`WorkerHandle::health`](super::WorkerHandle::health) takes the board's mutex for
//! the time of a copy, so it can be called on every request of a health endpoint.
//!
//! What counts as progress for a shard: the start of reading, every batch received (empty
//! reads included: the polling reader delivers one at least every idle interval), every
//! processor call that returned `Ok`, and every request for the next batch (the previous one
//! is then done). A shard makes no progress when its processor call hangs, when the
//! processor fails the same batch again and again, or when its reads stop coming back
//! (throttled or failing without end). A shard waiting for its parent shards to finish is
//! not expected to progress and is never reported stalled.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::processor::{
    Checkpointer, InitInput, ProcessInput, ProcessorError, RecordProcessor, ShardEndedInput,
};
use crate::retrieval::{
    Batch, RecordSource, RecordSourceFactory, RetrievalError, ShardRef, StartingPoint,
};

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkerStatus {
    /// [`Worker::run`](super::Worker::run) has not been called.
    NotStarted,
    /// Creating the lease table if needed and listing the shards for the first time.
    Starting,
    /// Holding, renewing and taking leases.
    Running,
    /// Graceful shutdown in progress: processors finish and leases are released.
    ShuttingDown,
    /// `run` returned (after a shutdown or a start-up failure).
    Stopped,
}

impl WorkerStatus {
    /// A short lower-case name (`not_started`, `starting`, `running`, `shutting_down`,
    /// `stopped`), for health endpoints and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerStatus::NotStarted => "not_started",
            WorkerStatus::Starting => "starting",
            WorkerStatus::Running => "running",
            WorkerStatus::ShuttingDown => "shutting_down",
            WorkerStatus::Stopped => "stopped",
        }
    }

    fn from_u8(v: u8) -> WorkerStatus {
        match v {
            1 => WorkerStatus::Starting,
            2 => WorkerStatus::Running,
            3 => WorkerStatus::ShuttingDown,
            4 => WorkerStatus::Stopped,
            _ => WorkerStatus::NotStarted,
        }
    }

    fn to_u8(self) -> u8 {
        match self {
            WorkerStatus::NotStarted => 0,
            WorkerStatus::Starting => 1,
            WorkerStatus::Running => 2,
            WorkerStatus::ShuttingDown => 3,
            WorkerStatus::Stopped => 4,
        }
    }
}

impl fmt::Display for WorkerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A [`RecordProcessor`] method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProcessorCall {
    /// `initialize`.
    Initialize,
    /// `process_records`.
    ProcessRecords,
    /// `shard_ended`.
    ShardEnded,
    /// `shutdown_requested`.
    ShutdownRequested,
    /// `lease_lost`.
    LeaseLost,
}

impl ProcessorCall {
    /// The method's name.
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessorCall::Initialize => "initialize",
            ProcessorCall::ProcessRecords => "process_records",
            ProcessorCall::ShardEnded => "shard_ended",
            ProcessorCall::ShutdownRequested => "shutdown_requested",
            ProcessorCall::LeaseLost => "lease_lost",
        }
    }

    fn from_u8(v: u8) -> Option<ProcessorCall> {
        Some(match v {
            1 => ProcessorCall::Initialize,
            2 => ProcessorCall::ProcessRecords,
            3 => ProcessorCall::ShardEnded,
            4 => ProcessorCall::ShutdownRequested,
            5 => ProcessorCall::LeaseLost,
            _ => return None,
        })
    }

    fn to_u8(self) -> u8 {
        match self {
            ProcessorCall::Initialize => 1,
            ProcessorCall::ProcessRecords => 2,
            ProcessorCall::ShardEnded => 3,
            ProcessorCall::ShutdownRequested => 4,
            ProcessorCall::LeaseLost => 5,
        }
    }
}

impl fmt::Display for ProcessorCall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One held lease's shard consumer, as seen by
/// [`WorkerHandle::health`](super::WorkerHandle::health).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardHealth {
    /// The shard.
    pub shard_id: String,
    /// False while the consumer waits for its parent shards (the processor has not been
    /// initialized yet): such a shard is not expected to progress.
    pub started: bool,
    /// The processor method running now, if any.
    pub processor_call: Option<ProcessorCall>,
    /// For how long it has been running.
    pub processor_call_running_for: Option<Duration>,
    /// Time since the shard last made progress (see the module docs); `None` until it
    /// started.
    pub since_progress: Option<Duration>,
    /// Processor calls that failed since the last one that succeeded.
    pub consecutive_failures: u32,
    /// `MillisBehindLatest` of the last read, when the service said.
    pub millis_behind_latest: Option<i64>,
    /// User records delivered to a `process_records` call that returned `Ok`.
    pub records_processed: u64,
}

/// A snapshot of a worker's health; see [`WorkerHealth::is_healthy`].
///
/// The `since_*` ages count from the worker's start while nothing has succeeded yet, so
/// that a worker that never manages to renew or scan becomes unhealthy too.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerHealth {
    /// The worker's id in the lease table.
    pub worker_id: String,
    /// Where the worker is in its life.
    pub status: WorkerStatus,
    /// Leases held (one shard consumer each).
    pub leases_held: usize,
    /// The shard consumers, in lease order.
    pub shards: Vec<ShardHealth>,
    /// Time since the last renewal pass in which the lease table answered every renewal
    /// (a pass with no lease to renew counts). `None` before the worker started.
    pub since_last_renewal: Option<Duration>,
    /// Time since the last successful scan of the lease table (the lease taker's pass).
    pub since_last_lease_scan: Option<Duration>,
    /// Time since the last successful shard sync (`ListShards`, leases created for new
    /// shards).
    pub since_last_shard_sync: Option<Duration>,
    /// The worker's failover time (what the default limits are multiples of).
    pub failover_time: Duration,
}

/// Why a worker is not healthy; see [`WorkerHealth::problems`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HealthProblem {
    /// The worker is not running (not started yet, or `run` returned).
    NotRunning {
        /// Its status.
        status: WorkerStatus,
    },
    /// The worker is shutting down (only when the policy counts that as unhealthy).
    ShuttingDown,
    /// Leases are held but the lease table has not answered a renewal pass for too long:
    /// other workers may take them at any moment.
    RenewalStale {
        /// Time since the last answered pass.
        age: Duration,
        /// The policy's limit.
        limit: Duration,
    },
    /// The lease table has not been scanned successfully for too long: the worker neither
    /// takes free leases nor notices stolen ones.
    LeaseScanStale {
        /// Time since the last successful scan.
        age: Duration,
        /// The policy's limit.
        limit: Duration,
    },
    /// No successful shard sync for too long (checked only when the policy sets a limit).
    ShardSyncStale {
        /// Time since the last successful sync.
        age: Duration,
        /// The policy's limit.
        limit: Duration,
    },
    /// A processor call has been running for too long.
    ProcessorCallStalled {
        /// The shard.
        shard_id: String,
        /// The method.
        call: ProcessorCall,
        /// For how long it has been running.
        running_for: Duration,
        /// The policy's limit.
        limit: Duration,
    },
    /// A started shard has made no progress for too long (reads not coming back, or the
    /// processor failing the same batch again and again).
    NoProgress {
        /// The shard.
        shard_id: String,
        /// Time since its last progress.
        age: Duration,
        /// Processor calls failed since the last success.
        consecutive_failures: u32,
        /// The policy's limit.
        limit: Duration,
    },
}

impl fmt::Display for HealthProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HealthProblem::NotRunning { status } => write!(f, "worker not running ({status})"),
            HealthProblem::ShuttingDown => f.write_str("worker shutting down"),
            HealthProblem::RenewalStale { age, limit } => write!(
                f,
                "no lease renewal answered for {age:?} (limit {limit:?}) while holding leases"
            ),
            HealthProblem::LeaseScanStale { age, limit } => {
                write!(f, "no lease-table scan for {age:?} (limit {limit:?})")
            }
            HealthProblem::ShardSyncStale { age, limit } => {
                write!(f, "no shard sync for {age:?} (limit {limit:?})")
            }
            HealthProblem::ProcessorCallStalled {
                shard_id,
                call,
                running_for,
                limit,
            } => write!(
                f,
                "shard {shard_id}: {call} running for {running_for:?} (limit {limit:?})"
            ),
            HealthProblem::NoProgress {
                shard_id,
                age,
                consecutive_failures,
                limit,
            } => write!(
                f,
                "shard {shard_id}: no progress for {age:?} (limit {limit:?}), \
                 {consecutive_failures} consecutive processor failures"
            ),
        }
    }
}

/// When a [`WorkerHealth`] counts as healthy. The defaults:
///
/// | check | default limit |
/// |---|---|
/// | renewal pass answered (only while holding leases) | 2 × failover time |
/// | lease-table scan | 2 × failover time |
/// | shard sync | not checked |
/// | one processor call | 5 minutes |
/// | progress of a started shard | 5 minutes |
/// | shutting down | healthy (the process is on its way out anyway) |
///
/// Two failover times: a lease survives one failed renewal pass (renewals run every third
/// of the failover time), and a worker whose renewals have not been answered for twice that
/// has certainly lost its leases. Five minutes: a shard iterator expires after five
/// minutes, so a consumer that has not read for that long has stopped in a way the library
/// does not recover from by itself; raise it if your processor legitimately blocks longer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthPolicy {
    max_renewal_age: Option<Duration>,
    max_lease_scan_age: Option<Duration>,
    max_shard_sync_age: Option<Duration>,
    max_processor_call: Duration,
    max_time_without_progress: Duration,
    unhealthy_when_shutting_down: bool,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            max_renewal_age: None,
            max_lease_scan_age: None,
            max_shard_sync_age: None,
            max_processor_call: Duration::from_secs(300),
            max_time_without_progress: Duration::from_secs(300),
            unhealthy_when_shutting_down: false,
        }
    }
}

impl HealthPolicy {
    /// Longest time without an answered renewal pass while leases are held. Default twice
    /// the worker's failover time.
    pub fn max_renewal_age(mut self, limit: Duration) -> Self {
        self.max_renewal_age = Some(limit);
        self
    }

    /// Longest time without a successful lease-table scan. Default twice the failover time.
    pub fn max_lease_scan_age(mut self, limit: Duration) -> Self {
        self.max_lease_scan_age = Some(limit);
        self
    }

    /// Longest time without a successful shard sync. Default: not checked (a failing
    /// `ListShards` only delays leases for new shards).
    pub fn max_shard_sync_age(mut self, limit: Duration) -> Self {
        self.max_shard_sync_age = Some(limit);
        self
    }

    /// Longest a single processor call may run. Default 5 minutes.
    pub fn max_processor_call(mut self, limit: Duration) -> Self {
        self.max_processor_call = limit;
        self
    }

    /// Longest a started shard may go without progress. Default 5 minutes.
    pub fn max_time_without_progress(mut self, limit: Duration) -> Self {
        self.max_time_without_progress = limit;
        self
    }

    /// Whether a worker that is shutting down is unhealthy. Default false.
    pub fn unhealthy_when_shutting_down(mut self, unhealthy: bool) -> Self {
        self.unhealthy_when_shutting_down = unhealthy;
        self
    }
}

impl WorkerHealth {
    /// True when [`problems`](Self::problems) finds none.
    pub fn is_healthy(&self, policy: &HealthPolicy) -> bool {
        self.problems(policy).is_empty()
    }

    /// Everything that makes this worker unhealthy under `policy` (empty: healthy).
    pub fn problems(&self, policy: &HealthPolicy) -> Vec<HealthProblem> {
        let mut problems = Vec::new();
        match self.status {
            WorkerStatus::NotStarted | WorkerStatus::Stopped => {
                problems.push(HealthProblem::NotRunning {
                    status: self.status,
                });
                return problems;
            }
            WorkerStatus::ShuttingDown if policy.unhealthy_when_shutting_down => {
                problems.push(HealthProblem::ShuttingDown);
            }
            _ => {}
        }
        let twice_failover = self.failover_time.saturating_mul(2);
        // The run loop stops renewing and scanning on purpose while shutting down.
        if self.status != WorkerStatus::ShuttingDown {
            let limit = policy.max_renewal_age.unwrap_or(twice_failover);
            if self.leases_held > 0
                && let Some(age) = self.since_last_renewal
                && age > limit
            {
                problems.push(HealthProblem::RenewalStale { age, limit });
            }
            let limit = policy.max_lease_scan_age.unwrap_or(twice_failover);
            if let Some(age) = self.since_last_lease_scan
                && age > limit
            {
                problems.push(HealthProblem::LeaseScanStale { age, limit });
            }
            if let Some(limit) = policy.max_shard_sync_age
                && let Some(age) = self.since_last_shard_sync
                && age > limit
            {
                problems.push(HealthProblem::ShardSyncStale { age, limit });
            }
        }
        for shard in &self.shards {
            if let (Some(call), Some(running_for)) =
                (shard.processor_call, shard.processor_call_running_for)
            {
                // A running call is judged by its own limit, not as missing progress.
                if running_for > policy.max_processor_call {
                    problems.push(HealthProblem::ProcessorCallStalled {
                        shard_id: shard.shard_id.clone(),
                        call,
                        running_for,
                        limit: policy.max_processor_call,
                    });
                }
                continue;
            }
            if shard.started
                && let Some(age) = shard.since_progress
                && age > policy.max_time_without_progress
            {
                problems.push(HealthProblem::NoProgress {
                    shard_id: shard.shard_id.clone(),
                    age,
                    consecutive_failures: shard.consecutive_failures,
                    limit: policy.max_time_without_progress,
                });
            }
        }
        problems
    }
}

/// Nanoseconds since the board's epoch, plus one so that 0 means "never".
type Tick = u64;

#[derive(Debug, Clone, Copy)]
struct Clock {
    epoch: Instant,
}

impl Clock {
    fn tick(&self, at: Instant) -> Tick {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX - 1)
            + 1
    }

    /// Time from `tick` to `now`; `None` for "never".
    fn age(&self, tick: Tick, now: Tick) -> Option<Duration> {
        (tick != 0).then(|| Duration::from_nanos(now.saturating_sub(tick)))
    }
}

/// What one held lease's shard consumer last did. Written by the consumer's task (through
/// [`Tracked`] and [`TrackedSources`]), read by health snapshots: atomics only.
#[derive(Debug)]
pub(crate) struct ShardActivity {
    shard_id: String,
    clock: Clock,
    started: AtomicBool,
    call: AtomicU8,
    call_since: AtomicU64,
    progress: AtomicU64,
    failures: AtomicU32,
    behind: AtomicI64,
    records: AtomicU64,
}

const BEHIND_UNKNOWN: i64 = i64::MIN;

impl ShardActivity {
    fn now(&self) -> Tick {
        self.clock.tick(Instant::now())
    }

    fn progressed(&self) {
        self.progress.store(self.now(), Ordering::Relaxed);
    }

    fn enter(&self, call: ProcessorCall) -> CallGuard<'_> {
        if call == ProcessorCall::Initialize && !self.started.swap(true, Ordering::Relaxed) {
            // Waiting for the parents is over: progress is expected from now on.
            self.progressed();
        }
        self.call_since.store(self.now(), Ordering::Relaxed);
        self.call.store(call.to_u8(), Ordering::Release);
        CallGuard { activity: self }
    }

    fn finished<T>(&self, result: &Result<T, ProcessorError>) {
        if result.is_ok() {
            self.failures.store(0, Ordering::Relaxed);
            self.progressed();
        } else {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn snapshot(&self, now: Tick) -> ShardHealth {
        let call = ProcessorCall::from_u8(self.call.load(Ordering::Acquire));
        let behind = self.behind.load(Ordering::Relaxed);
        ShardHealth {
            shard_id: self.shard_id.clone(),
            started: self.started.load(Ordering::Relaxed),
            processor_call: call,
            processor_call_running_for: call
                .and_then(|_| self.clock.age(self.call_since.load(Ordering::Relaxed), now)),
            since_progress: self.clock.age(self.progress.load(Ordering::Relaxed), now),
            consecutive_failures: self.failures.load(Ordering::Relaxed),
            millis_behind_latest: (behind != BEHIND_UNKNOWN).then_some(behind),
            records_processed: self.records.load(Ordering::Relaxed),
        }
    }
}

/// Clears the running call when the call returns (or its future is dropped).
struct CallGuard<'a> {
    activity: &'a ShardActivity,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        self.activity.call.store(0, Ordering::Release);
    }
}

/// The worker's health board: the run loop's stamps and the held leases' activities.
#[derive(Debug)]
pub(crate) struct HealthBoard {
    worker_id: String,
    failover_time: Duration,
    clock: Clock,
    status: AtomicU8,
    stamps: Mutex<Stamps>,
}

#[derive(Debug, Default)]
struct Stamps {
    started: Tick,
    renewal: Tick,
    scan: Tick,
    shard_sync: Tick,
    shards: Vec<Arc<ShardActivity>>,
}

impl HealthBoard {
    pub(crate) fn new(worker_id: String, failover_time: Duration) -> HealthBoard {
        HealthBoard {
            worker_id,
            failover_time,
            clock: Clock {
                epoch: Instant::now(),
            },
            status: AtomicU8::new(WorkerStatus::NotStarted.to_u8()),
            stamps: Mutex::default(),
        }
    }

    fn stamps(&self) -> std::sync::MutexGuard<'_, Stamps> {
        // The stamps stay consistent whatever panicked while holding the lock.
        self.stamps.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> Tick {
        self.clock.tick(Instant::now())
    }

    pub(crate) fn set_status(&self, status: WorkerStatus) {
        if status == WorkerStatus::Starting {
            let now = self.now();
            let mut stamps = self.stamps();
            *stamps = Stamps {
                started: now,
                ..Stamps::default()
            };
        }
        self.status.store(status.to_u8(), Ordering::Release);
    }

    /// A renewal pass in which the table answered every renewal.
    pub(crate) fn renewed(&self) {
        let now = self.now();
        self.stamps().renewal = now;
    }

    /// A successful lease-table scan.
    pub(crate) fn scanned(&self) {
        let now = self.now();
        self.stamps().scan = now;
    }

    /// A successful shard sync.
    pub(crate) fn synced(&self) {
        let now = self.now();
        self.stamps().shard_sync = now;
    }

    /// The leases held now (after a pass of the run loop).
    pub(crate) fn set_shards(&self, shards: impl IntoIterator<Item = Arc<ShardActivity>>) {
        let shards = shards.into_iter().collect();
        self.stamps().shards = shards;
    }

    /// A fresh activity record for a lease about to start.
    pub(crate) fn activity(&self, shard_id: &str) -> Arc<ShardActivity> {
        Arc::new(ShardActivity {
            shard_id: shard_id.to_owned(),
            clock: self.clock,
            started: AtomicBool::new(false),
            call: AtomicU8::new(0),
            call_since: AtomicU64::new(0),
            progress: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            behind: AtomicI64::new(BEHIND_UNKNOWN),
            records: AtomicU64::new(0),
        })
    }

    pub(crate) fn snapshot(&self) -> WorkerHealth {
        let status = WorkerStatus::from_u8(self.status.load(Ordering::Acquire));
        let (started, renewal, scan, shard_sync, shards) = {
            let s = self.stamps();
            (s.started, s.renewal, s.scan, s.shard_sync, s.shards.clone())
        };
        let now = self.now();
        // Before the first success, an age counts from the start.
        let age = |tick: Tick| self.clock.age(if tick == 0 { started } else { tick }, now);
        let shards: Vec<ShardHealth> = shards.iter().map(|a| a.snapshot(now)).collect();
        WorkerHealth {
            worker_id: self.worker_id.clone(),
            status,
            leases_held: shards.len(),
            shards,
            since_last_renewal: age(renewal),
            since_last_lease_scan: age(scan),
            since_last_shard_sync: age(shard_sync),
            failover_time: self.failover_time,
        }
    }
}

/// The user's processor, with its calls recorded in the lease's [`ShardActivity`].
///
/// Forwards every [`RecordProcessor`] method: a method added to the trait must be added
/// here too, or the user's implementation of it would be bypassed.
pub(crate) struct Tracked<P> {
    pub(crate) inner: P,
    pub(crate) activity: Arc<ShardActivity>,
}

#[async_trait]
impl<P: RecordProcessor> RecordProcessor for Tracked<P> {
    async fn initialize(&mut self, input: InitInput) -> Result<(), ProcessorError> {
        let _call = self.activity.enter(ProcessorCall::Initialize);
        let result = self.inner.initialize(input).await;
        self.activity.finished(&result);
        result
    }

    async fn process_records(&mut self, input: ProcessInput<'_>) -> Result<(), ProcessorError> {
        let records = input.records.len() as u64;
        let _call = self.activity.enter(ProcessorCall::ProcessRecords);
        let result = self.inner.process_records(input).await;
        if result.is_ok() {
            self.activity.records.fetch_add(records, Ordering::Relaxed);
        }
        self.activity.finished(&result);
        result
    }

    async fn lease_lost(&mut self) {
        let _call = self.activity.enter(ProcessorCall::LeaseLost);
        self.inner.lease_lost().await;
    }

    async fn shard_ended(&mut self, input: ShardEndedInput<'_>) -> Result<(), ProcessorError> {
        let _call = self.activity.enter(ProcessorCall::ShardEnded);
        let result = self.inner.shard_ended(input).await;
        self.activity.finished(&result);
        result
    }

    async fn shutdown_requested(
        &mut self,
        checkpointer: &Checkpointer,
    ) -> Result<(), ProcessorError> {
        let _call = self.activity.enter(ProcessorCall::ShutdownRequested);
        let result = self.inner.shutdown_requested(checkpointer).await;
        self.activity.finished(&result);
        result
    }
}

/// The worker's record sources, with reads recorded in one lease's [`ShardActivity`].
pub(crate) struct TrackedSources {
    pub(crate) inner: Arc<dyn RecordSourceFactory>,
    pub(crate) activity: Arc<ShardActivity>,
}

impl RecordSourceFactory for TrackedSources {
    fn start(&self, shard: ShardRef, from: StartingPoint) -> Box<dyn RecordSource> {
        self.activity.progressed();
        Box::new(TrackedSource {
            inner: self.inner.start(shard, from),
            activity: self.activity.clone(),
        })
    }
}

struct TrackedSource {
    inner: Box<dyn RecordSource>,
    activity: Arc<ShardActivity>,
}

#[async_trait]
impl RecordSource for TrackedSource {
    async fn next_batch(&mut self) -> Result<Batch, RetrievalError> {
        // Asking for the next batch means the previous one is done with.
        self.activity.progressed();
        let batch = self.inner.next_batch().await;
        if let Ok(batch) = &batch {
            self.activity.progressed();
            if let Some(behind) = batch.millis_behind_latest {
                self.activity.behind.store(behind, Ordering::Relaxed);
            }
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str) -> ShardHealth {
        ShardHealth {
            shard_id: id.to_owned(),
            started: true,
            processor_call: None,
            processor_call_running_for: None,
            since_progress: Some(Duration::from_secs(1)),
            consecutive_failures: 0,
            millis_behind_latest: Some(0),
            records_processed: 0,
        }
    }

    fn running(leases: usize) -> WorkerHealth {
        WorkerHealth {
            worker_id: "w".into(),
            status: WorkerStatus::Running,
            leases_held: leases,
            shards: (0..leases)
                .map(|i| shard(&format!("shardId-{i}")))
                .collect(),
            since_last_renewal: Some(Duration::from_secs(1)),
            since_last_lease_scan: Some(Duration::from_millis(500)),
            since_last_shard_sync: Some(Duration::from_secs(30)),
            failover_time: Duration::from_secs(10),
        }
    }

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn a_running_worker_with_fresh_stamps_is_healthy() {
        let policy = HealthPolicy::default();
        assert!(running(0).is_healthy(&policy));
        assert!(running(4).is_healthy(&policy));
    }

    #[test]
    fn not_started_and_stopped_are_unhealthy_whatever_else() {
        for status in [WorkerStatus::NotStarted, WorkerStatus::Stopped] {
            let h = WorkerHealth {
                status,
                ..running(0)
            };
            assert_eq!(
                h.problems(&HealthPolicy::default()),
                [HealthProblem::NotRunning { status }]
            );
        }
        let starting = WorkerHealth {
            status: WorkerStatus::Starting,
            ..running(0)
        };
        assert!(starting.is_healthy(&HealthPolicy::default()));
    }

    #[test]
    fn renewal_older_than_twice_the_failover_time_is_unhealthy_only_with_leases() {
        let policy = HealthPolicy::default();
        let stale = |leases| WorkerHealth {
            since_last_renewal: Some(Duration::from_secs(21)),
            ..running(leases)
        };
        assert_eq!(
            stale(2).problems(&policy),
            [HealthProblem::RenewalStale {
                age: Duration::from_secs(21),
                limit: Duration::from_secs(20)
            }]
        );
        assert!(stale(0).is_healthy(&policy), "nothing to renew");
        let at_limit = WorkerHealth {
            since_last_renewal: Some(Duration::from_secs(20)),
            ..running(2)
        };
        assert!(at_limit.is_healthy(&policy));
        // An explicit limit replaces the failover multiple.
        assert!(
            !at_limit.is_healthy(&HealthPolicy::default().max_renewal_age(Duration::from_secs(5)))
        );
    }

    #[test]
    fn a_stale_lease_scan_is_unhealthy_even_without_leases() {
        let h = WorkerHealth {
            since_last_lease_scan: Some(Duration::from_secs(25)),
            ..running(0)
        };
        assert!(matches!(
            h.problems(&HealthPolicy::default())[..],
            [HealthProblem::LeaseScanStale { .. }]
        ));
    }

    #[test]
    fn shard_sync_is_checked_only_when_asked() {
        let h = WorkerHealth {
            since_last_shard_sync: Some(10 * MIN),
            ..running(1)
        };
        assert!(h.is_healthy(&HealthPolicy::default()));
        assert!(matches!(
            h.problems(&HealthPolicy::default().max_shard_sync_age(5 * MIN))[..],
            [HealthProblem::ShardSyncStale { .. }]
        ));
    }

    #[test]
    fn a_processor_call_running_past_its_limit_is_a_stall() {
        let mut h = running(2);
        h.shards[1].processor_call = Some(ProcessorCall::ProcessRecords);
        h.shards[1].processor_call_running_for = Some(6 * MIN);
        h.shards[1].since_progress = Some(6 * MIN);
        assert_eq!(
            h.problems(&HealthPolicy::default()),
            [HealthProblem::ProcessorCallStalled {
                shard_id: "shardId-1".into(),
                call: ProcessorCall::ProcessRecords,
                running_for: 6 * MIN,
                limit: 5 * MIN,
            }],
            "judged as a long call, not also as missing progress"
        );
        assert!(
            h.is_healthy(&HealthPolicy::default().max_processor_call(10 * MIN)),
            "a long call within its limit"
        );
    }

    #[test]
    fn a_started_shard_without_progress_is_a_stall_but_a_waiting_child_is_not() {
        let mut h = running(2);
        h.shards[0].since_progress = Some(7 * MIN);
        h.shards[0].consecutive_failures = 12;
        assert_eq!(
            h.problems(&HealthPolicy::default()),
            [HealthProblem::NoProgress {
                shard_id: "shardId-0".into(),
                age: 7 * MIN,
                consecutive_failures: 12,
                limit: 5 * MIN,
            }]
        );
        h.shards[0].started = false;
        assert!(h.is_healthy(&HealthPolicy::default()));
        h.shards[0].started = true;
        assert!(h.is_healthy(&HealthPolicy::default().max_time_without_progress(10 * MIN)));
    }

    #[test]
    fn shutting_down_skips_the_loop_checks_and_is_healthy_unless_asked() {
        let h = WorkerHealth {
            status: WorkerStatus::ShuttingDown,
            since_last_renewal: Some(MIN),
            since_last_lease_scan: Some(MIN),
            ..running(2)
        };
        assert!(h.is_healthy(&HealthPolicy::default()));
        assert_eq!(
            h.problems(&HealthPolicy::default().unhealthy_when_shutting_down(true)),
            [HealthProblem::ShuttingDown]
        );
    }

    #[test]
    fn problems_say_what_is_wrong() {
        let p = HealthProblem::NoProgress {
            shard_id: "shardId-7".into(),
            age: 6 * MIN,
            consecutive_failures: 3,
            limit: 5 * MIN,
        };
        let text = p.to_string();
        assert!(
            text.contains("shardId-7") && text.contains("3 consecutive"),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn activity_records_calls_progress_and_lag() {
        let board = HealthBoard::new("w".into(), Duration::from_secs(10));
        assert_eq!(board.snapshot().status, WorkerStatus::NotStarted);
        board.set_status(WorkerStatus::Starting);
        let a = board.activity("shardId-0");
        board.set_shards([a.clone()]);
        let s = &board.snapshot().shards[0];
        assert!(!s.started && s.since_progress.is_none() && s.processor_call.is_none());

        tokio::time::advance(Duration::from_secs(3)).await;
        {
            let _call = a.enter(ProcessorCall::Initialize);
            tokio::time::advance(Duration::from_secs(2)).await;
            let s = &board.snapshot().shards[0];
            assert!(s.started);
            assert_eq!(s.processor_call, Some(ProcessorCall::Initialize));
            assert_eq!(s.processor_call_running_for, Some(Duration::from_secs(2)));
            assert_eq!(s.since_progress, Some(Duration::from_secs(2)));
            a.finished::<()>(&Err("boom".into()));
        }
        let s = &board.snapshot().shards[0];
        assert_eq!((s.processor_call, s.consecutive_failures), (None, 1));
        a.behind.store(1234, Ordering::Relaxed);
        a.finished(&Ok(()));
        let h = board.snapshot();
        assert_eq!(h.shards[0].consecutive_failures, 0);
        assert_eq!(h.shards[0].since_progress, Some(Duration::ZERO));
        assert_eq!(h.shards[0].millis_behind_latest, Some(1234));
        // Nothing succeeded yet: the loop's ages count from the start.
        assert_eq!(h.since_last_renewal, Some(Duration::from_secs(5)));
        board.renewed();
        assert_eq!(board.snapshot().since_last_renewal, Some(Duration::ZERO));
    }
}
