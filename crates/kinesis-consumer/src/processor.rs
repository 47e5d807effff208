//! The user's side: [`RecordProcessor`], what it is given, and the [`Checkpointer`].
//!
//! ```text
//!  worker ── ProcessorFactory::create() ──► one RecordProcessor per shard lease
//!
//!  shard consumer (one task per lease)             your RecordProcessor
//!  ───────────────────────────────────             ────────────────────
//!  WAITING_ON_PARENTS (parents at SHARD_END)
//!  INITIALIZING ─────────────────────────────────► initialize(InitInput)
//!  PROCESSING   ── one batch at a time, in order ─► process_records(ProcessInput)
//!       │            records deaggregated,             └─ input.checkpointer.checkpoint()
//!       │            already-checkpointed filtered
//!       ├─ shard closed ─────────────────────────► shard_ended(ShardEndedInput)
//!       │                 then the LIBRARY records SHARD_END
//!       ├─ graceful shutdown (in-flight batch done) ► shutdown_requested(&Checkpointer)
//!       └─ lease lost (stop promptly) ───────────► lease_lost()
//! ```
//!
//! # Guarantees
//! - Records of one shard are delivered in sequence order (then sub-sequence order inside
//!   KPL aggregates), one batch at a time; `process_records` is never called concurrently
//!   for one shard.
//! - At least once: after a restart or a lease move, processing resumes right after the last
//!   checkpoint, exactly at the sub-record level (a checkpoint inside an aggregate resumes
//!   with the next sub-record of that aggregate).
//! - **SHARD_END is recorded by the library** once [`RecordProcessor::shard_ended`] has
//!   returned `Ok`. You do not need to (and the KCL's footgun of forgetting it, which
//!   blocks the child shards forever, does not exist here). Checkpoint in `shard_ended`
//!   only if you want to record progress before returning.
//!
//! # When the processor fails
//! An `Err` from [`RecordProcessor::process_records`] is handled by the shard's
//! [`ProcessorErrorPolicy`], never silently skipped as in the KCL:
//! - [`Retry`](ProcessorErrorPolicy::Retry) (the default): the same batch is delivered
//!   again after a backoff, forever, until it succeeds or the shard consumer is shut down
//!   or loses its lease. Records the processor had already checkpointed inside the failed
//!   batch are not redelivered (the checkpoint says they are done); nothing else is
//!   skipped.
//! - [`SkipAfter`](ProcessorErrorPolicy::SkipAfter): like `Retry`, but after the given
//!   number of failed attempts the batch is skipped (logged at `error` with its first and
//!   last position, counted in `RecordProcessor.SkippedBatches`).
//! - [`StopShard`](ProcessorErrorPolicy::StopShard): the shard consumer stops at once
//!   without any further processor call or checkpoint; the lease is given up so that the
//!   shard is picked up again from its last checkpoint.
//!
//! `initialize` and `shard_ended` failures are retried with the policy's backoff
//! (`SkipAfter` applies to `shard_ended`: after that many attempts SHARD_END is recorded
//! anyway, because children must not stay blocked; `initialize` cannot be skipped);
//! under `StopShard` they stop the consumer. A `shutdown_requested` failure is logged: the
//! consumer is shutting down either way.

mod checkpointer;

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use kinesis_aggregation::{HashKey, HashKeyRange};
use std::sync::Arc;

use crate::position::{Position, SequenceNumber};

pub(crate) use checkpointer::Closed;
pub use checkpointer::{CheckpointError, Checkpointer, PreparedCheckpoint};
#[doc(hidden)]
pub use checkpointer::{CheckpointSink, MemoryCheckpointSink, SinkEvent};

/// An error returned by a [`RecordProcessor`]: any error type, boxed (`?` converts).
pub type ProcessorError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// One user record: a plain Kinesis record, or one sub-record of a KPL aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The user data.
    pub data: Bytes,
    /// The user record's partition key (the user's key, not the aggregate's `"a"`).
    pub partition_key: String,
    /// The explicit hash key, when the producer set one inside an aggregate (Kinesis does
    /// not return it for plain records).
    pub explicit_hash_key: Option<HashKey>,
    /// The Kinesis sequence number of the record that carried it. Shared by every
    /// sub-record of an aggregate.
    pub sequence_number: Arc<str>,
    /// Index inside the aggregate (0 for a plain record). Sub-sequence numbers can have
    /// gaps when sub-records outside the shard's hash-key range were left out.
    pub sub_sequence_number: u64,
    /// When Kinesis accepted the carrying record.
    pub approximate_arrival_timestamp: Option<SystemTime>,
    /// Whether it came out of a KPL aggregate.
    pub aggregated: bool,
}

impl Record {
    /// The record's position, for [`Checkpointer::checkpoint_at`].
    pub fn position(&self) -> Position {
        match SequenceNumber::new(&self.sequence_number, self.sub_sequence_number) {
            Ok(s) => Position::Sequence(s),
            // Kinesis sequence numbers are decimal; a record whose number is not cannot be
            // checkpointed anyway, and SHARD_END would be wrong, so report the oldest.
            Err(_) => Position::TrimHorizon,
        }
    }
}

/// A two-phase checkpoint found in the lease when the processor starts: a previous owner
/// prepared it but did not commit it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCheckpoint {
    /// The prepared position.
    pub position: Position,
    /// The application state stored with it.
    pub state: Option<Bytes>,
}

/// What [`RecordProcessor::initialize`] is told.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct InitInput {
    /// The shard this processor will process.
    pub shard_id: String,
    /// The checkpoint processing resumes after (a sentinel such as `TRIM_HORIZON` for a
    /// shard never checkpointed).
    pub starting_position: Position,
    /// A prepared but uncommitted checkpoint, if the lease holds one.
    pub pending_checkpoint: Option<PendingCheckpoint>,
}

/// What [`RecordProcessor::process_records`] is given: one batch.
#[derive(Debug)]
#[non_exhaustive]
pub struct ProcessInput<'a> {
    /// The shard.
    pub shard_id: &'a str,
    /// The user records, in order. Never empty, unless the worker was built with
    /// [`call_processor_on_empty_batches`](crate::WorkerBuilder::call_processor_on_empty_batches):
    /// then a read that found nothing new is delivered as an empty batch. Borrowed: when the
    /// error policy retries, the same records are delivered again without copying (clone
    /// what you keep).
    pub records: &'a [Record],
    /// How far behind the tip of the shard this batch was read (`None` when the service
    /// did not say).
    pub millis_behind_latest: Option<i64>,
    /// Checkpoints for this shard. Clone it to checkpoint later from another task.
    pub checkpointer: &'a Checkpointer,
}

/// What [`RecordProcessor::shard_ended`] is given.
#[derive(Debug)]
#[non_exhaustive]
pub struct ShardEndedInput<'a> {
    /// The shard that ended.
    pub shard_id: &'a str,
    /// The shards that continue it (one or two for a split, one for a merge).
    pub child_shards: &'a [ChildShard],
    /// Checkpoints for this shard. SHARD_END is recorded by the library after
    /// `shard_ended` returns; checkpoint here only to record earlier progress.
    pub checkpointer: &'a Checkpointer,
}

/// A shard that continues a closed one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildShard {
    /// The child's id.
    pub shard_id: String,
    /// Its parents: the closed shard, and for a merge the adjacent parent too.
    pub parent_shard_ids: Vec<String>,
    /// Its hash-key range, when known.
    pub hash_key_range: Option<HashKeyRange>,
}

/// Your code: processes the records of one shard. See the [module docs](self).
///
/// One instance per shard lease, created by a [`ProcessorFactory`]; the methods are called
/// one at a time, in the order of the module diagram.
#[async_trait]
pub trait RecordProcessor: Send + 'static {
    /// Called once before the first batch. An `Err` is retried per the error policy.
    async fn initialize(&mut self, input: InitInput) -> Result<(), ProcessorError> {
        let _ = input;
        Ok(())
    }

    /// Processes one batch. On `Err`, the shard's [`ProcessorErrorPolicy`] decides (by
    /// default the batch is delivered again after a backoff).
    async fn process_records(&mut self, input: ProcessInput<'_>) -> Result<(), ProcessorError>;

    /// The lease was lost (another worker took it, or it expired): stop, and do not
    /// checkpoint (the checkpointer answers [`CheckpointError::LeaseLost`]). Records after
    /// the last checkpoint will be processed again by the new owner.
    async fn lease_lost(&mut self) {}

    /// The shard is closed and every record in it was delivered. SHARD_END is recorded by
    /// the library after this returns `Ok` (an `Err` is retried per the policy).
    async fn shard_ended(&mut self, input: ShardEndedInput<'_>) -> Result<(), ProcessorError> {
        let _ = input;
        Ok(())
    }

    /// The worker is shutting down gracefully and will release the lease: the in-flight
    /// batch has completed; checkpoint what you have processed. The default does not
    /// checkpoint (a processor that finishes its work inside `process_records` should
    /// call `checkpointer.checkpoint()` here).
    async fn shutdown_requested(
        &mut self,
        checkpointer: &Checkpointer,
    ) -> Result<(), ProcessorError> {
        let _ = checkpointer;
        Ok(())
    }
}

#[async_trait]
impl<P: RecordProcessor + ?Sized> RecordProcessor for Box<P> {
    async fn initialize(&mut self, input: InitInput) -> Result<(), ProcessorError> {
        (**self).initialize(input).await
    }
    async fn process_records(&mut self, input: ProcessInput<'_>) -> Result<(), ProcessorError> {
        (**self).process_records(input).await
    }
    async fn lease_lost(&mut self) {
        (**self).lease_lost().await
    }
    async fn shard_ended(&mut self, input: ShardEndedInput<'_>) -> Result<(), ProcessorError> {
        (**self).shard_ended(input).await
    }
    async fn shutdown_requested(
        &mut self,
        checkpointer: &Checkpointer,
    ) -> Result<(), ProcessorError> {
        (**self).shutdown_requested(checkpointer).await
    }
}

/// Creates one [`RecordProcessor`] per shard lease. Any `Fn() -> P` closure is a factory.
pub trait ProcessorFactory: Send + Sync + 'static {
    /// The processor type.
    type Processor: RecordProcessor;
    /// A fresh processor for a newly acquired shard lease.
    fn create(&self) -> Self::Processor;
}

impl<F, P> ProcessorFactory for F
where
    F: Fn() -> P + Send + Sync + 'static,
    P: RecordProcessor,
{
    type Processor = P;
    fn create(&self) -> P {
        self()
    }
}

/// What the shard consumer does when the processor returns an error. See the
/// [module docs](self#when-the-processor-fails).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProcessorErrorPolicy {
    /// Deliver the same batch again after a backoff, until it succeeds (default).
    Retry {
        /// Delays between attempts.
        backoff: RetryBackoff,
    },
    /// Retry, and skip the batch after `attempts` failed attempts (at least 1).
    SkipAfter {
        /// Failed attempts before the batch is skipped.
        attempts: u32,
        /// Delays between attempts.
        backoff: RetryBackoff,
    },
    /// Stop this shard's consumer at the first error.
    StopShard,
}

impl Default for ProcessorErrorPolicy {
    fn default() -> Self {
        ProcessorErrorPolicy::Retry {
            backoff: RetryBackoff::default(),
        }
    }
}

impl ProcessorErrorPolicy {
    /// Retry with the default backoff, skipping after `attempts` failed attempts.
    pub fn skip_after(attempts: u32) -> Self {
        ProcessorErrorPolicy::SkipAfter {
            attempts: attempts.max(1),
            backoff: RetryBackoff::default(),
        }
    }
}

/// Exponential backoff between processor retries: `min`, doubling per failed attempt up to
/// `max`. Default 500 ms (the KCL's `taskBackoffTimeMillis`) to 30 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBackoff {
    /// Delay after the first failure.
    pub min: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Default for RetryBackoff {
    fn default() -> Self {
        RetryBackoff {
            min: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

impl RetryBackoff {
    /// The delay after failed attempt number `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(32);
        self.min
            .checked_mul(1u32 << doublings.min(31))
            .unwrap_or(self.max)
            .min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_backoff_doubles_up_to_its_cap() {
        let b = RetryBackoff {
            min: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let delays: Vec<_> = (1..=6).map(|a| b.delay(a).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.delay(1000), Duration::from_secs(1));
    }

    #[test]
    fn closures_are_factories() {
        struct Nop;
        #[async_trait]
        impl RecordProcessor for Nop {
            async fn process_records(&mut self, _: ProcessInput<'_>) -> Result<(), ProcessorError> {
                Ok(())
            }
        }
        fn take<F: ProcessorFactory>(f: F) -> F::Processor {
            f.create()
        }
        let _p: Nop = take(|| Nop);
    }
}
