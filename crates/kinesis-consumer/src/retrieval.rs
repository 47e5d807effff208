//! Reading one shard: the [`RecordSource`] seam and its two implementations, polling and
//! enhanced fan-out, chosen per worker with [`Retrieval`].
//!
//! ```text
//!   shard consumer                       polling source (one background task per shard)
//!   ──────────────                       ──────────────────────────────────────────────
//!   next_batch().await ◄── bounded ◄──── wait for room (records, bytes) ── pace the calls
//!        ▲                 channel        GetShardIterator(from the checkpoint)
//!        │ Batch { records,               GetRecords(limit) ── throttled? back off (backon)
//!        │         millis_behind_latest,                    ── expired?  new iterator AFTER
//!        │         shard_end }                                           the last record
//!        │                                NextShardIterator null ── shard end: ChildShards,
//!        │                                   or ListShards(parent = this shard) when absent
//!        │
//!        │                               fan-out source (one background task per shard)
//!        │                               ──────────────────────────────────────────────
//!        └──────────────── bounded ◄──── SubscribeToShard(consumer, from the checkpoint)
//!                          channel        events pushed by Kinesis ── renewed every ~5 min
//!                          (events)       (the worker registers the consumer once at start)
//! ```
//!
//! The seam is [`RecordSource`] (one `next_batch` at a time, cancel-safe): both sources hand
//! the shard consumer the same [`Batch`]es of Kinesis records, so deaggregation, the resume
//! filter and the shard-end path are shared. [`RecordSources`] is the opaque factory the
//! worker hands to each shard consumer. Below it, [`api::KinesisApi`] and
//! `fanout::api::FanOutApi` are narrow views of the Kinesis client, so that the sources'
//! timing is tested with fakes on tokio's paused clock. Fan-out specifics (registration,
//! renewals, backpressure) are in the `fanout` module.
//!
//! # Where a shard is resumed
//! | checkpoint              | iterator                                                  |
//! |-------------------------|-----------------------------------------------------------|
//! | `TRIM_HORIZON`/`LATEST` | the same                                                  |
//! | `AT_TIMESTAMP`          | `AT_TIMESTAMP` with the configured initial timestamp      |
//! | `(seq, sub)`            | `AT_SEQUENCE_NUMBER seq`, then the consumer drops the user records ≤ `(seq, sub)` |
//!
//! `AT_SEQUENCE_NUMBER`, not `AFTER`, for every real checkpoint: a checkpoint `(seq, sub)`
//! inside a KPL aggregate (sub-sequence 0 included — it may be the first of many
//! sub-records) leaves later sub-records of the same Kinesis record to process, and the
//! checkpoint alone cannot tell whether it was the aggregate's last. Reading the
//! checkpointed record again and filtering is exact in every case, at the cost of one record
//! read twice per restart (the KCL does the same).
//!
//! # Errors
//! - Throttling (`ProvisionedThroughputExceeded`, KMS throttling) and transient failures
//!   (5xx, timeouts, connection errors — after the SDK's own retries) are retried with
//!   exponential backoff and jitter, without limit: a shard consumer never gives up on a
//!   throttled shard. Logged at `warn`, counted in `GetRecords.Throttled` / `GetRecords.Errors`.
//! - `ExpiredIteratorException`: a new iterator `AFTER_SEQUENCE_NUMBER` the last record
//!   received (or at the starting point if none was), without delay. `ExpiredIterator`.
//! - `ResourceNotFoundException`: the source lists the stream's shards. If the stream
//!   exists but the shard is not listed (a closed shard past the retention period), that is
//!   the shard's end, with its children taken from the listing — never a stuck lease. If
//!   the stream itself is gone, [`RetrievalError::StreamNotFound`]: the consumer stops
//!   without recording SHARD_END (a deleted or misnamed stream is not a finished shard).
//! - Other client errors (invalid argument, access denied, KMS access): [`RetrievalError::Fatal`].

pub(crate) mod api;
mod fanout;
mod polling;
#[cfg(test)]
pub(crate) mod tests;

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::position::Position;
use crate::processor::ChildShard;

pub use fanout::FanOutConfig;
pub use polling::PollingConfig;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A Kinesis record as read from the shard (before deaggregation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReadRecord {
    pub sequence_number: Arc<str>,
    pub partition_key: String,
    pub data: Bytes,
    pub approximate_arrival_timestamp: Option<SystemTime>,
}

/// One read from a shard.
#[derive(Debug, Clone, Default)]
pub(crate) struct Batch {
    /// The Kinesis records, in order (possibly none).
    pub records: Vec<ReadRecord>,
    /// How far behind the tip of the shard this read was.
    pub millis_behind_latest: Option<i64>,
    /// Set on the last batch of a closed shard: its children.
    pub shard_end: Option<Vec<ChildShard>>,
}

impl Batch {
    pub(crate) fn data_bytes(&self) -> usize {
        self.records.iter().map(|r| r.data.len()).sum()
    }
}

/// Why a shard cannot be read any further.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RetrievalError {
    /// The stream does not exist (deleted, or the wrong name, account or region).
    #[error("stream {stream} not found")]
    StreamNotFound {
        /// The stream name.
        stream: String,
    },
    /// A request failed in a way retrying will not fix.
    #[error("{operation} on shard {shard_id} failed: {source}")]
    Fatal {
        /// The Kinesis operation.
        operation: &'static str,
        /// The shard.
        shard_id: String,
        /// The error.
        #[source]
        source: BoxError,
    },
    /// The configuration cannot start a read (e.g. `AT_TIMESTAMP` without a timestamp).
    #[error("cannot read shard {shard_id}: {reason}")]
    Config {
        /// The shard.
        shard_id: String,
        /// What is wrong.
        reason: String,
    },
    /// The source stopped (its background task ended unexpectedly).
    #[error("the record source of shard {shard_id} stopped")]
    Stopped {
        /// The shard.
        shard_id: String,
    },
    /// Enhanced fan-out: Kinesis refuses to register another consumer on the stream (at
    /// most 20 per stream; 50 for on-demand Advantage streams). Deregister an unused consumer
    /// (`aws kinesis list-stream-consumers`), or use polling.
    #[error(
        "cannot register enhanced fan-out consumer {consumer} on stream {stream}: the stream \
         has as many registered consumers as Kinesis allows (deregister one, or use polling)"
    )]
    ConsumerLimitExceeded {
        /// The stream name.
        stream: String,
        /// The consumer name.
        consumer: String,
    },
    /// Enhanced fan-out: the stream consumer could not be found or registered, or did not
    /// become `ACTIVE` within the registration timeout.
    #[error("enhanced fan-out consumer {consumer} on stream {stream}: {reason}")]
    ConsumerRegistration {
        /// The stream name.
        stream: String,
        /// The consumer name.
        consumer: String,
        /// What went wrong.
        reason: String,
    },
}

/// Where to start reading a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StartingPoint {
    TrimHorizon,
    Latest,
    AtTimestamp(SystemTime),
    AtSequence(String),
    AfterSequence(String),
}

impl StartingPoint {
    /// Where to read from to resume after `checkpoint` (see the module docs). `None` for
    /// `SHARD_END`: there is nothing left to read.
    pub(crate) fn resume_after(
        checkpoint: &Position,
        initial_timestamp: Option<SystemTime>,
        shard_id: &str,
    ) -> Result<Option<StartingPoint>, RetrievalError> {
        Ok(Some(match checkpoint {
            Position::TrimHorizon => StartingPoint::TrimHorizon,
            Position::Latest => StartingPoint::Latest,
            Position::AtTimestamp => match initial_timestamp {
                Some(t) => StartingPoint::AtTimestamp(t),
                None => {
                    return Err(RetrievalError::Config {
                        shard_id: shard_id.to_owned(),
                        reason: "checkpoint AT_TIMESTAMP but no initial timestamp configured"
                            .into(),
                    });
                }
            },
            Position::Sequence(s) => StartingPoint::AtSequence(s.sequence().to_owned()),
            Position::ShardEnd => return Ok(None),
        }))
    }
}

/// The shard being read.
#[derive(Debug, Clone)]
pub(crate) struct ShardRef {
    pub stream_name: String,
    pub shard_id: String,
}

/// A stream of batches from one shard.
#[async_trait]
pub(crate) trait RecordSource: Send {
    /// The next batch, in order. After a batch with `shard_end` set, or an error, it is not
    /// called again. Must be cancel-safe (the consumer selects on it): a batch is either
    /// returned or stays queued.
    async fn next_batch(&mut self) -> Result<Batch, RetrievalError>;
}

/// The consumer's end of a shard's background reader (polling or a fan-out subscription):
/// the batches and errors it queues, in order. Dropping it stops the reader.
pub(crate) struct ReaderQueue {
    rx: mpsc::Receiver<Result<Batch, RetrievalError>>,
    task: JoinHandle<()>,
    shard_id: String,
}

impl Drop for ReaderQueue {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ReaderQueue {
    pub(crate) fn new(
        shard_id: String,
        rx: mpsc::Receiver<Result<Batch, RetrievalError>>,
        task: JoinHandle<()>,
    ) -> Self {
        ReaderQueue { rx, task, shard_id }
    }

    /// The next queued batch or error; [`RetrievalError::Stopped`] once the reader is gone
    /// with nothing more queued. Cancel-safe, like `mpsc::Receiver::recv`.
    pub(crate) async fn recv(&mut self) -> Result<Batch, RetrievalError> {
        match self.rx.recv().await {
            Some(batch) => batch,
            None => Err(RetrievalError::Stopped {
                shard_id: self.shard_id.clone(),
            }),
        }
    }
}

/// Starts record sources: one per shard consumer, when it starts processing.
#[async_trait]
pub(crate) trait RecordSourceFactory: Send + Sync + 'static {
    fn start(&self, shard: ShardRef, from: StartingPoint) -> Box<dyn RecordSource>;

    /// What must be done once before the first shard is read (fan-out: registering the
    /// stream consumer), so that a worker fails at start rather than on every shard.
    async fn prepare(&self) -> Result<(), RetrievalError> {
        Ok(())
    }
}

/// The children of `shard_id` in a listing of the stream's shards.
pub(crate) fn children_in(shards: Vec<api::ListedShard>, shard_id: &str) -> Vec<ChildShard> {
    shards
        .into_iter()
        .filter(|s| s.is_child_of(shard_id))
        .map(|s| s.into_child())
        .collect()
}

/// How a worker reads its shards; see [`WorkerBuilder::retrieval`](crate::WorkerBuilder::retrieval).
///
/// | | [`Polling`](Retrieval::Polling) (default) | [`FanOut`](Retrieval::FanOut) (enhanced fan-out) |
/// |---|---|---|
/// | API | `GetRecords` in a loop per shard | `SubscribeToShard`: Kinesis pushes records |
/// | read throughput | 2 MB/s per shard, shared by every consumer of the stream | 2 MB/s per shard for this application alone |
/// | latency (put → process) | up to `idle_time_between_reads` (1.5 s by default, 200 ms at least) | typically under 100 ms on AWS (pushed as they arrive) |
/// | cost | requests only | an hourly charge per consumer-shard, plus per GB read |
/// | needs | nothing | a registered stream consumer (20 per stream at most), registered at start and named after the application |
///
/// ```
/// use kinesis_consumer::{FanOutConfig, PollingConfig, Retrieval};
///
/// let polling = Retrieval::Polling(PollingConfig::default());
/// let fan_out = Retrieval::FanOut(FanOutConfig::new().consumer_name("orders-efo"));
/// assert_eq!(Retrieval::default(), polling);
/// # let _ = fan_out;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Retrieval {
    /// `GetRecords` polling (the KCL's polling mode).
    Polling(PollingConfig),
    /// Enhanced fan-out (the KCL's default mode): one registered stream consumer per
    /// application, a `SubscribeToShard` subscription per leased shard.
    FanOut(FanOutConfig),
}

impl Default for Retrieval {
    fn default() -> Self {
        Retrieval::Polling(PollingConfig::default())
    }
}

impl Retrieval {
    /// Polling with the default settings.
    pub fn polling() -> Retrieval {
        Retrieval::default()
    }

    /// Enhanced fan-out with the default settings.
    pub fn fan_out() -> Retrieval {
        Retrieval::FanOut(FanOutConfig::default())
    }
}

/// How shard consumers read their shards: an opaque handle shared by all consumers of a
/// worker, made from a [`Retrieval`].
#[doc(hidden)]
#[derive(Clone)]
pub struct RecordSources(pub(crate) Arc<dyn RecordSourceFactory>);

impl std::fmt::Debug for RecordSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecordSources")
    }
}

impl RecordSources {
    #[cfg(test)]
    pub(crate) fn with_api(api: Arc<dyn api::KinesisApi>, config: PollingConfig) -> RecordSources {
        RecordSources(Arc::new(polling::PollingFactory::new(api, config)))
    }

    /// The sources of a worker of `application_name` reading `stream` through `client`.
    pub(crate) fn new(
        retrieval: Retrieval,
        client: aws_sdk_kinesis::Client,
        application_name: &str,
        stream: &str,
    ) -> RecordSources {
        match retrieval {
            Retrieval::Polling(config) => RecordSources::polling(client, config),
            Retrieval::FanOut(config) => RecordSources(Arc::new(fanout::FanOutFactory::new(
                Arc::new(fanout::api::SdkFanOutApi::new(client.clone())),
                Arc::new(api::SdkApi::new(client)),
                stream.to_owned(),
                application_name,
                config,
            ))),
        }
    }

    /// Polling with `GetRecords` through `client`.
    pub fn polling(client: aws_sdk_kinesis::Client, config: PollingConfig) -> RecordSources {
        RecordSources(Arc::new(polling::PollingFactory::new(
            Arc::new(api::SdkApi::new(client)),
            config,
        )))
    }

    /// Work before the first shard is read: registering the enhanced fan-out consumer and
    /// waiting until it is `ACTIVE`. Nothing for polling.
    pub(crate) async fn prepare(&self) -> Result<(), RetrievalError> {
        self.0.prepare().await
    }
}
