//! Driving one shard's processor: the state machine of a shard lease.
//!
//! ```text
//!   spawn() ──► WAITING_ON_PARENTS ── parents' future resolves ──► INITIALIZING
//!                  │ (stop signals honoured;                          │ initialize() (retried per policy)
//!                  │  the processor is never called)                  ▼
//!                  ▼                                               PROCESSING ◄─┐ next_batch()
//!               finished                                              │         │ deaggregate (hash range)
//!                                                                     │         │ drop ≤ checkpoint (resume)
//!                                                                     │         │ process_records (policy)
//!                                                                     │         └──────────────┘
//!            ┌───────────────────────┬────────────────────────────────┼───────────────────┐
//!            ▼ shard closed           ▼ request_shutdown()              ▼ lease_lost()      ▼ StopShard / fatal read
//!        SHARD_ENDING             SHUTTING_DOWN                     LEASE_LOST          stop (no calls)
//!        shard_ended()            (in-flight batch finished)        (checkpointer
//!        SHARD_END recorded       shutdown_requested()               refuses at once)
//!        by the library                                              lease_lost()
//! ```
//!
//! A worker creates a [`ShardConsumer`] per lease it holds ([`ShardConsumer::new`] with the
//! lease's shard and checkpoint, a processor from the factory, a [`CheckpointSink`] over the
//! lease table and the worker's shared [`RecordSources`]), optionally
//! [`wait_for_parents`](ShardConsumer::wait_for_parents), and [`spawn`](ShardConsumer::spawn)s
//! it. The [`ShardConsumerHandle`] signals graceful shutdown or lease loss and yields the
//! [`ShardConsumerOutcome`], which tells the worker what to do with the lease (release it,
//! create the children's leases, …).
//!
//! Processor calls are never cancelled: user code runs to completion (a lease loss makes the
//! checkpointer refuse at once, and no further batch is delivered).
//!
//! A read with nothing new is not delivered, unless
//! [`ShardConsumerOptions::call_processor_on_empty_batches`] asks for it: then the processor
//! gets an empty batch (without metrics or retries), so that it can act on time alone.
//!
//! Metrics (label `ShardId`, the KCL's dimension name), named as the KCL names them:
//! `RecordsProcessed`, `DataBytesProcessed`, `MillisBehindLatest` (gauge),
//! `RecordProcessor.processRecords.Time` (ms), `RecordProcessor.Errors`,
//! `RecordProcessor.SkippedBatches`, `DeaggregationDroppedRecords`; the reader adds
//! `GetRecords.Success`, `GetRecords.Time`, `GetRecords.Throttled`, `GetRecords.Errors`,
//! `ExpiredIterator`. The full table is in docs/OPERATIONS.md.

#[cfg(test)]
mod tests;

use std::cmp::Ordering;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kinesis_aggregation::{HashKeyRange, ReceivedRecord, deaggregate, deaggregate_in_range};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{Instrument, debug, error, info, warn};

use crate::position::{Position, SequenceNumber};
use crate::processor::{
    CheckpointError, CheckpointSink, Checkpointer, ChildShard, Closed, InitInput,
    PendingCheckpoint, ProcessInput, ProcessorError, ProcessorErrorPolicy, Record, RecordProcessor,
    RetryBackoff, ShardEndedInput,
};
use crate::retrieval::{ReadRecord, RecordSources, RetrievalError, ShardRef, StartingPoint};

/// The lease a shard consumer works for.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ShardLease {
    /// The stream's name.
    pub stream_name: String,
    /// The shard.
    pub shard_id: String,
    /// The shard's hash-key range, when known: aggregated sub-records outside it are left
    /// out (see `kinesis_aggregation::deaggregate_in_range`).
    pub hash_key_range: Option<HashKeyRange>,
    /// The lease's checkpoint: processing resumes right after it.
    pub checkpoint: Position,
    /// The lease's pending checkpoint, passed to `initialize`.
    pub pending_checkpoint: Option<PendingCheckpoint>,
}

impl ShardLease {
    /// A lease on `shard_id` of `stream_name` checkpointed at `checkpoint`.
    pub fn new(
        stream_name: impl Into<String>,
        shard_id: impl Into<String>,
        checkpoint: Position,
    ) -> Self {
        ShardLease {
            stream_name: stream_name.into(),
            shard_id: shard_id.into(),
            hash_key_range: None,
            checkpoint,
            pending_checkpoint: None,
        }
    }

    /// Sets the shard's hash-key range.
    pub fn hash_key_range(mut self, range: HashKeyRange) -> Self {
        self.hash_key_range = Some(range);
        self
    }

    /// Sets the pending checkpoint.
    pub fn pending_checkpoint(mut self, pending: PendingCheckpoint) -> Self {
        self.pending_checkpoint = Some(pending);
        self
    }
}

/// Per-consumer settings.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ShardConsumerOptions {
    /// What to do when the processor fails. Default: retry the same batch with backoff.
    pub error_policy: ProcessorErrorPolicy,
    /// The timestamp an `AT_TIMESTAMP` checkpoint reads from.
    pub initial_timestamp: Option<SystemTime>,
    /// Backoff between retries of the library's own SHARD_END write when the store
    /// throttles or fails.
    pub checkpoint_backoff: RetryBackoff,
    /// Call `process_records` with no records when a read returns nothing new (the KCL's
    /// `callProcessRecordsEvenForEmptyRecordList`), so that a processor can act on time
    /// alone, e.g. flush a buffer on a quiet shard. Default false.
    pub call_processor_on_empty_batches: bool,
}

/// Where a shard consumer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConsumerState {
    /// Waiting for the parent shards to be finished.
    WaitingOnParents,
    /// Calling `initialize`.
    Initializing,
    /// Delivering batches.
    Processing,
    /// The shard ended: calling `shard_ended`, recording SHARD_END.
    ShardEnding,
    /// Graceful shutdown: calling `shutdown_requested`.
    ShuttingDown,
    /// The lease was lost: calling `lease_lost`.
    LeaseLost,
    /// Finished; the outcome is available from [`ShardConsumerHandle::join`].
    Finished,
}

/// How a shard consumer ended, and so what the worker does with the lease.
#[derive(Debug)]
#[non_exhaustive]
pub enum ShardConsumerOutcome {
    /// Every record was delivered, `shard_ended` returned and SHARD_END is recorded. The
    /// worker creates the children's leases (if absent) and may clean the lease up later.
    ShardEnded {
        /// The closed shard's children.
        children: Vec<ChildShard>,
    },
    /// Graceful shutdown completed (`shutdown_requested` was called, or the processor had
    /// not started yet): release the lease.
    ShutDown,
    /// The lease was lost; `lease_lost` was called if the processor had been initialized.
    LeaseLost,
    /// The processor failed under [`ProcessorErrorPolicy::StopShard`]: release the lease so
    /// that the shard is retried from its last checkpoint.
    ProcessorFailed {
        /// The processor's error.
        error: ProcessorError,
    },
    /// The shard cannot be read (stream gone, access denied, bad configuration).
    RetrievalFailed {
        /// Why.
        error: RetrievalError,
    },
    /// The processor panicked.
    Panicked {
        /// The panic message, if it was a string.
        message: String,
    },
}

/// What the worker tells a consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    Run,
    Shutdown,
    LeaseLost,
}

type ParentsFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Drives one shard lease's [`RecordProcessor`] through its states (waiting on parents,
/// initializing, processing, shard end / shutdown / lease lost).
pub struct ShardConsumer {
    lease: ShardLease,
    processor: Box<dyn RecordProcessor>,
    sink: Arc<dyn CheckpointSink>,
    retrieval: RecordSources,
    options: ShardConsumerOptions,
    parents: Option<ParentsFuture>,
}

impl std::fmt::Debug for ShardConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardConsumer")
            .field("lease", &self.lease)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Controls a spawned [`ShardConsumer`]. Dropping it counts as losing the lease: the
/// consumer stops after the in-flight batch without checkpointing.
#[derive(Debug)]
pub struct ShardConsumerHandle {
    control: watch::Sender<Control>,
    state: watch::Receiver<ConsumerState>,
    checkpointer: Checkpointer,
    task: JoinHandle<ShardConsumerOutcome>,
}

impl ShardConsumer {
    /// A consumer for `lease`, delivering to `processor` and checkpointing into `sink`.
    pub fn new(
        lease: ShardLease,
        processor: impl RecordProcessor,
        sink: Arc<dyn CheckpointSink>,
        retrieval: RecordSources,
        options: ShardConsumerOptions,
    ) -> Self {
        ShardConsumer {
            lease,
            processor: Box::new(processor),
            sink,
            retrieval,
            options,
            parents: None,
        }
    }

    /// Do not start before `parents` resolves (the worker resolves it when every parent
    /// lease is at SHARD_END or gone).
    pub fn wait_for_parents(mut self, parents: impl Future<Output = ()> + Send + 'static) -> Self {
        self.parents = Some(Box::pin(parents));
        self
    }

    /// Starts the consumer on the current Tokio runtime.
    pub fn spawn(self) -> ShardConsumerHandle {
        let (control_tx, control_rx) = watch::channel(Control::Run);
        let (state_tx, state_rx) = watch::channel(if self.parents.is_some() {
            ConsumerState::WaitingOnParents
        } else {
            ConsumerState::Initializing
        });
        let checkpointer = Checkpointer::new(
            self.lease.shard_id.clone(),
            self.sink.clone(),
            self.lease.checkpoint.clone(),
        );
        let run = Run {
            consumer: self,
            control: control_rx,
            state: state_tx,
            checkpointer: checkpointer.clone(),
        };
        ShardConsumerHandle {
            control: control_tx,
            state: state_rx,
            checkpointer,
            task: tokio::spawn(run.run()),
        }
    }
}

impl ShardConsumerHandle {
    /// Graceful shutdown: the in-flight batch completes, then `shutdown_requested` is
    /// called. Await [`join`](Self::join) for the end.
    pub fn request_shutdown(&self) {
        self.control.send_if_modified(|c| {
            if *c == Control::Run {
                *c = Control::Shutdown;
                true
            } else {
                false
            }
        });
    }

    /// The lease is lost: from now on checkpoints fail with `LeaseLost`, no further batch
    /// is delivered, and `lease_lost` is called once the in-flight call returns.
    pub fn lease_lost(&self) {
        self.checkpointer.close(Closed::LeaseLost);
        self.control.send_replace(Control::LeaseLost);
    }

    /// The consumer's state now.
    pub fn state(&self) -> ConsumerState {
        *self.state.borrow()
    }

    /// Waits until the state satisfies `f` (or the consumer finished).
    pub async fn wait_for_state(
        &mut self,
        mut f: impl FnMut(ConsumerState) -> bool,
    ) -> ConsumerState {
        match self
            .state
            .wait_for(|s| f(*s) || *s == ConsumerState::Finished)
            .await
        {
            Ok(s) => *s,
            Err(_) => ConsumerState::Finished,
        }
    }

    /// The consumer's checkpointer (for the worker's view of the last checkpoint).
    pub fn checkpointer(&self) -> &Checkpointer {
        &self.checkpointer
    }

    /// Whether the consumer has finished.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits for the consumer to finish. Cancel-safe only in the sense that dropping the
    /// future drops the handle (= lease lost).
    pub async fn join(self) -> ShardConsumerOutcome {
        let control = self.control;
        let outcome = match self.task.await {
            Ok(outcome) => outcome,
            Err(e) => ShardConsumerOutcome::Panicked {
                message: match e.try_into_panic() {
                    Ok(panic) => panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default(),
                    Err(e) => e.to_string(),
                },
            },
        };
        drop(control);
        outcome
    }
}

/// What one processor call came to under the error policy.
enum Attempted {
    Done,
    Skipped,
    Stop(ProcessorError),
    Interrupted(Control),
}

struct Run {
    consumer: ShardConsumer,
    control: watch::Receiver<Control>,
    state: watch::Sender<ConsumerState>,
    checkpointer: Checkpointer,
}

/// Waits until the worker asks to stop; a dropped handle means lease lost.
async fn stop_signal(control: &mut watch::Receiver<Control>) -> Control {
    match control.wait_for(|c| *c != Control::Run).await {
        Ok(c) => *c,
        Err(_) => Control::LeaseLost,
    }
}

fn current(control: &watch::Receiver<Control>) -> Control {
    if control.has_changed().is_err() {
        return Control::LeaseLost;
    }
    *control.borrow()
}

impl Run {
    fn shard_id(&self) -> &str {
        &self.consumer.lease.shard_id
    }

    fn lease_lost(&self) -> bool {
        current(&self.control) == Control::LeaseLost
            || self.checkpointer.closed() == Some(Closed::LeaseLost)
    }

    fn set_state(&self, state: ConsumerState) {
        debug!(shard_id = %self.shard_id(), ?state, "shard consumer state");
        self.state.send_replace(state);
    }

    async fn run(mut self) -> ShardConsumerOutcome {
        let outcome = self.drive().await;
        self.checkpointer.close(Closed::ShutDown);
        info!(shard_id = %self.shard_id(), ?outcome, "shard consumer finished");
        self.set_state(ConsumerState::Finished);
        outcome
    }

    /// Waits `delay` unless the worker asks to stop first.
    async fn pause(&mut self, delay: Duration) -> Option<Control> {
        tokio::select! {
            biased;
            c = stop_signal(&mut self.control) => Some(c),
            _ = tokio::time::sleep(delay) => None,
        }
    }

    /// The policy's answer to failed attempt number `attempt`.
    async fn after_failure(
        &mut self,
        what: &str,
        attempt: u32,
        error: ProcessorError,
        can_skip: bool,
    ) -> Attempted {
        let shard_id = self.shard_id().to_owned();
        metrics::counter!("RecordProcessor.Errors", "ShardId" => shard_id.clone()).increment(1);
        let backoff = match &self.consumer.options.error_policy {
            ProcessorErrorPolicy::StopShard => {
                error!(shard_id, what, %error, "processor failed; stopping the shard consumer (policy StopShard)");
                return Attempted::Stop(error);
            }
            ProcessorErrorPolicy::SkipAfter { attempts, .. }
                if can_skip && attempt >= *attempts =>
            {
                error!(shard_id, what, %error, attempt, "processor failed; skipping (policy SkipAfter)");
                return Attempted::Skipped;
            }
            ProcessorErrorPolicy::SkipAfter { backoff, .. }
            | ProcessorErrorPolicy::Retry { backoff } => *backoff,
        };
        let delay = backoff.delay(attempt);
        warn!(shard_id, what, %error, attempt, ?delay, "processor failed; retrying");
        match self.pause(delay).await {
            Some(c) => Attempted::Interrupted(c),
            None => Attempted::Done,
        }
    }

    async fn drive(&mut self) -> ShardConsumerOutcome {
        if let Some(parents) = self.consumer.parents.take() {
            self.set_state(ConsumerState::WaitingOnParents);
            tokio::select! {
                biased;
                c = stop_signal(&mut self.control) => return self.stopped_uninitialized(c),
                _ = parents => {}
            }
        }
        let lease = self.consumer.lease.clone();
        let from = match StartingPoint::resume_after(
            &lease.checkpoint,
            self.consumer.options.initial_timestamp,
            &lease.shard_id,
        ) {
            Ok(Some(from)) => from,
            // Already finished: nothing to deliver, SHARD_END is recorded.
            Ok(None) => {
                return ShardConsumerOutcome::ShardEnded {
                    children: Vec::new(),
                };
            }
            Err(error) => return ShardConsumerOutcome::RetrievalFailed { error },
        };

        // INITIALIZING
        self.set_state(ConsumerState::Initializing);
        let input = InitInput {
            shard_id: lease.shard_id.clone(),
            starting_position: lease.checkpoint.clone(),
            pending_checkpoint: lease.pending_checkpoint.clone(),
        };
        let mut attempt = 0;
        loop {
            let c = current(&self.control);
            if c != Control::Run {
                return self.stopped_uninitialized(c);
            }
            attempt += 1;
            match self.consumer.processor.initialize(input.clone()).await {
                Ok(()) => break,
                Err(e) => match self.after_failure("initialize", attempt, e, false).await {
                    Attempted::Stop(error) => {
                        return ShardConsumerOutcome::ProcessorFailed { error };
                    }
                    Attempted::Interrupted(c) => return self.stopped_uninitialized(c),
                    Attempted::Done | Attempted::Skipped => {}
                },
            }
        }

        // PROCESSING
        self.set_state(ConsumerState::Processing);
        let mut source = self.consumer.retrieval.0.start(
            ShardRef {
                stream_name: lease.stream_name.clone(),
                shard_id: lease.shard_id.clone(),
            },
            from,
        );
        let mut resume = lease.checkpoint.as_sequence().cloned();
        // Consecutive failed calls with an empty batch (for the backoff).
        let mut empty_failures = 0;
        loop {
            let next = tokio::select! {
                biased;
                c = stop_signal(&mut self.control) => return self.stop(c).await,
                batch = source.next_batch() => batch,
            };
            let batch = match next {
                Ok(batch) => batch,
                Err(error) => {
                    error!(shard_id = %lease.shard_id, %error, "cannot read the shard; stopping");
                    return ShardConsumerOutcome::RetrievalFailed { error };
                }
            };
            if let Some(millis) = batch.millis_behind_latest {
                metrics::gauge!("MillisBehindLatest", "ShardId" => lease.shard_id.clone())
                    .set(millis as f64);
            }
            let mut records = to_user_records(batch.records, lease.hash_key_range, &lease.shard_id);
            if let Some(checkpoint) = &resume {
                records = after_checkpoint(records, checkpoint);
                if !records.is_empty() {
                    // Everything after the first record past the checkpoint is past it too.
                    resume = None;
                }
            }
            if !records.is_empty() {
                match self.deliver(records, batch.millis_behind_latest).await {
                    Attempted::Done | Attempted::Skipped => {}
                    Attempted::Stop(error) => {
                        return ShardConsumerOutcome::ProcessorFailed { error };
                    }
                    Attempted::Interrupted(c) => return self.stop(c).await,
                }
            } else if self.consumer.options.call_processor_on_empty_batches
                && batch.shard_end.is_none()
            {
                // (At a shard end, `shard_ended` follows at once instead.)
                match self
                    .deliver_empty(batch.millis_behind_latest, &mut empty_failures)
                    .await
                {
                    Attempted::Done | Attempted::Skipped => {}
                    Attempted::Stop(error) => {
                        return ShardConsumerOutcome::ProcessorFailed { error };
                    }
                    Attempted::Interrupted(c) => return self.stop(c).await,
                }
            }
            // The store may have reported the loss to a checkpoint the processor ignored.
            if self.lease_lost() {
                return self.stop(Control::LeaseLost).await;
            }
            if let Some(children) = batch.shard_end {
                drop(source);
                return self.shard_end(children).await;
            }
        }
    }

    /// Delivers one batch under the error policy.
    async fn deliver(
        &mut self,
        records: Vec<Record>,
        millis_behind_latest: Option<i64>,
    ) -> Attempted {
        let shard_id = self.shard_id().to_owned();
        let previous = self.checkpointer.last_delivered();
        let last = records.last().map(Record::position);
        let mut first = 0;
        let mut attempt = 0;
        loop {
            attempt += 1;
            if let Some(last) = &last {
                self.checkpointer.set_delivered(last.clone());
            }
            let slice = &records[first..];
            let started = Instant::now();
            // Counts and positions only: record data and partition keys are payload.
            let span = tracing::info_span!(
                "shard.process_batch",
                shard_id = %shard_id,
                records = slice.len(),
                millis_behind_latest,
                attempt,
                ok = tracing::field::Empty,
            );
            let result = self
                .consumer
                .processor
                .process_records(ProcessInput {
                    shard_id: &shard_id,
                    records: slice,
                    millis_behind_latest,
                    checkpointer: &self.checkpointer,
                })
                .instrument(span.clone())
                .await;
            span.record("ok", result.is_ok());
            metrics::histogram!("RecordProcessor.processRecords.Time", "ShardId" => shard_id.clone())
                .record(started.elapsed().as_secs_f64() * 1000.0);
            let error = match result {
                Ok(()) => {
                    metrics::counter!("RecordsProcessed", "ShardId" => shard_id.clone())
                        .increment(slice.len() as u64);
                    metrics::counter!("DataBytesProcessed", "ShardId" => shard_id.clone())
                        .increment(slice.iter().map(|r| r.data.len() as u64).sum());
                    return Attempted::Done;
                }
                Err(e) => e,
            };
            // Until the batch succeeds, checkpoint() must not cover it.
            self.checkpointer.reset_delivered(previous.clone());
            if self.checkpointer.closed() == Some(Closed::LeaseLost) {
                return Attempted::Interrupted(Control::LeaseLost);
            }
            match self
                .after_failure("process_records", attempt, error, true)
                .await
            {
                Attempted::Done => {}
                Attempted::Skipped => {
                    if let Some(last) = &last {
                        self.checkpointer.set_delivered(last.clone());
                    }
                    metrics::counter!("RecordProcessor.SkippedBatches", "ShardId" => shard_id.clone()).increment(1);
                    error!(
                        shard_id,
                        first = %slice[0].position(),
                        last = ?last,
                        records = slice.len(),
                        "batch skipped after repeated processor failures"
                    );
                    return Attempted::Skipped;
                }
                other => return other,
            }
            // Records checkpointed during the failed attempt are done; redeliver the rest.
            let checkpoint = self.checkpointer.last_checkpoint();
            first = records
                .iter()
                .position(|r| r.position() > checkpoint)
                .unwrap_or(records.len());
            if first == records.len() {
                return Attempted::Done;
            }
        }
    }

    /// Calls the processor with an empty batch. Kept cheap, as it happens after every empty
    /// read of every quiet shard: no metrics, no allocation. A failure goes through the error
    /// policy's backoff (or stops the shard under `StopShard`), but is not retried as such:
    /// there is nothing to redeliver, and the next read, empty or not, calls again.
    async fn deliver_empty(
        &mut self,
        millis_behind_latest: Option<i64>,
        failures: &mut u32,
    ) -> Attempted {
        // Debug level: every empty read of every quiet shard comes here.
        let span = tracing::debug_span!(
            "shard.process_batch",
            shard_id = %self.consumer.lease.shard_id,
            records = 0usize,
            millis_behind_latest,
        );
        let result = self
            .consumer
            .processor
            .process_records(ProcessInput {
                shard_id: &self.consumer.lease.shard_id,
                records: &[],
                millis_behind_latest,
                checkpointer: &self.checkpointer,
            })
            .instrument(span)
            .await;
        let Err(error) = result else {
            *failures = 0;
            return Attempted::Done;
        };
        if self.checkpointer.closed() == Some(Closed::LeaseLost) {
            return Attempted::Interrupted(Control::LeaseLost);
        }
        *failures += 1;
        self.after_failure("process_records (empty batch)", *failures, error, false)
            .await
    }

    async fn shard_end(&mut self, children: Vec<ChildShard>) -> ShardConsumerOutcome {
        self.set_state(ConsumerState::ShardEnding);
        let shard_id = self.shard_id().to_owned();
        info!(shard_id, children = ?children.iter().map(|c| &c.shard_id).collect::<Vec<_>>(), "shard ended");
        self.checkpointer.permit_shard_end();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self
                .consumer
                .processor
                .shard_ended(ShardEndedInput {
                    shard_id: &shard_id,
                    child_shards: &children,
                    checkpointer: &self.checkpointer,
                })
                .await;
            let Err(error) = result else { break };
            if self.checkpointer.closed() == Some(Closed::LeaseLost) {
                return self.stop(Control::LeaseLost).await;
            }
            match self
                .after_failure("shard_ended", attempt, error, true)
                .await
            {
                Attempted::Done => {}
                Attempted::Skipped => break,
                Attempted::Stop(error) => return ShardConsumerOutcome::ProcessorFailed { error },
                Attempted::Interrupted(c) => return self.stop(c).await,
            }
        }
        // The library records SHARD_END itself, so that children are never blocked by a
        // forgotten checkpoint.
        let backoff = self.consumer.options.checkpoint_backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.checkpointer.record_shard_end().await {
                Ok(()) => return ShardConsumerOutcome::ShardEnded { children },
                Err(CheckpointError::LeaseLost) => return self.stop(Control::LeaseLost).await,
                Err(error) => {
                    let delay = backoff.delay(attempt);
                    warn!(shard_id, %error, attempt, ?delay, "recording SHARD_END failed; retrying");
                    if let Some(c) = self.pause(delay).await
                        && c == Control::LeaseLost
                    {
                        return self.stop(c).await;
                    }
                }
            }
        }
    }

    /// Stop after initialization: shutdown_requested or lease_lost.
    async fn stop(&mut self, c: Control) -> ShardConsumerOutcome {
        match c {
            Control::LeaseLost => {
                self.set_state(ConsumerState::LeaseLost);
                self.checkpointer.close(Closed::LeaseLost);
                self.consumer.processor.lease_lost().await;
                ShardConsumerOutcome::LeaseLost
            }
            Control::Shutdown | Control::Run => {
                self.set_state(ConsumerState::ShuttingDown);
                if let Err(error) = self
                    .consumer
                    .processor
                    .shutdown_requested(&self.checkpointer)
                    .await
                {
                    warn!(shard_id = %self.shard_id(), %error, "shutdown_requested failed");
                }
                // A lease lost meanwhile wins: the worker must not release a lease it lost.
                if self.checkpointer.closed() == Some(Closed::LeaseLost) {
                    return ShardConsumerOutcome::LeaseLost;
                }
                ShardConsumerOutcome::ShutDown
            }
        }
    }

    /// Stop before the processor was initialized: no processor call.
    fn stopped_uninitialized(&self, c: Control) -> ShardConsumerOutcome {
        match c {
            Control::LeaseLost => ShardConsumerOutcome::LeaseLost,
            Control::Shutdown | Control::Run => ShardConsumerOutcome::ShutDown,
        }
    }
}

/// Deaggregates a read into user records, keeping only sub-records in the shard's hash
/// range when it is known.
pub(crate) fn to_user_records(
    records: Vec<ReadRecord>,
    range: Option<HashKeyRange>,
    shard_id: &str,
) -> Vec<Record> {
    let mut out = Vec::with_capacity(records.len());
    let mut dropped = 0;
    for r in records {
        let arrival = r.approximate_arrival_timestamp;
        let received = ReceivedRecord::new(r.sequence_number, r.partition_key, r.data);
        let users = match range {
            Some(range) => {
                let filtered = deaggregate_in_range(received, range);
                dropped += filtered.dropped;
                filtered.records
            }
            None => deaggregate(received),
        };
        out.extend(users.into_iter().map(|u| Record {
            data: u.data,
            partition_key: u.partition_key,
            explicit_hash_key: u.explicit_hash_key,
            sequence_number: u.sequence_number,
            sub_sequence_number: u.sub_sequence_number,
            approximate_arrival_timestamp: arrival,
            aggregated: u.aggregated,
        }));
    }
    if dropped > 0 {
        warn!(
            shard_id,
            dropped, "left out aggregated sub-records outside the shard's hash-key range"
        );
        metrics::counter!("DeaggregationDroppedRecords", "ShardId" => shard_id.to_owned())
            .increment(dropped as u64);
    }
    out
}

/// Orders a record's (sequence, sub-sequence) against a checkpoint, without allocating.
fn cmp_to(sequence: &str, sub_sequence: u64, checkpoint: &SequenceNumber) -> Ordering {
    let digits = sequence.trim_start_matches('0');
    let digits = if digits.is_empty() { "0" } else { digits };
    digits
        .len()
        .cmp(&checkpoint.sequence().len())
        .then_with(|| digits.cmp(checkpoint.sequence()))
        .then_with(|| sub_sequence.cmp(&checkpoint.sub_sequence()))
}

/// The resume filter: drops the records at or before the checkpoint (the checkpointed
/// Kinesis record is read again, `AT_SEQUENCE_NUMBER`, and only its later sub-records are
/// still to process).
pub(crate) fn after_checkpoint(
    mut records: Vec<Record>,
    checkpoint: &SequenceNumber,
) -> Vec<Record> {
    records.retain(|r| {
        cmp_to(&r.sequence_number, r.sub_sequence_number, checkpoint) == Ordering::Greater
    });
    records
}
