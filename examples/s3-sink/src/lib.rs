//! A [`RecordProcessor`] that writes a Kinesis stream to S3: [`S3Sink`].
//!
//! ```text
//!  Worker (call_processor_on_empty_batches) ─► one S3Sink per shard lease
//!    process_records(batch, possibly empty)
//!      │ skip what is already buffered (a re-delivered batch)
//!      │ per record: encode (NDJSON or length-prefixed), offer to the cut rule,
//!      │             append (gzip: compressed as it is appended)
//!      │ cut at max_records / max_bytes / a record arriving max_age after the first,
//!      │ after the batch: the quiet-shard flush (age, at the tip of the shard),
//!      │ and at shutdown_requested / shard_ended
//!      ▼
//!    write_object: PutObject, or a multipart upload above part_size (retried: backon)
//!      │ only after it succeeded
//!      ▼
//!    checkpoint_at(last record of the object) ─► lease table
//! ```
//!
//! # Object layout
//!
//! One object per cut batch, at
//! `{prefix}/{stream}/{shard}/{first seq}-{first subseq}_{last seq}-{last subseq}.{ext}`
//! (no leading `{prefix}/` when the prefix is empty). Sequence numbers are decimal without
//! leading zeros; within one shard they have the same length in practice, so a listing is in
//! stream order.
//!
//! - [`Format::Ndjson`] (`.ndjson`): one line per user record,
//!   `{"seq":"<sequence number>","subseq":<n>,"key":"<partition key>","data":"<data>"}`.
//!   `seq` is a string (sequence numbers exceed a JSON number's precision). `data` is the
//!   record's bytes as text when they are valid UTF-8; otherwise it is standard base64 (with
//!   padding) and the line carries `"encoding":"base64"` after `data`. A reader can therefore
//!   always tell the two apart.
//! - [`Format::LengthPrefixed`] (`.bin`): per record, its length as a 4-byte big-endian
//!   integer, then its bytes. Only the data: the positions are in the object key.
//! - [`Compression::Gzip`] appends `.gz` (`.ndjson.gz`, `.bin.gz`) and sets
//!   `Content-Encoding: gzip` (the `Content-Type` stays the format's).
//!
//! Objects up to [`SinkConfig::part_size`] are written with one `PutObject`, larger ones with
//! a multipart upload in parts of that size. The object being built is held in memory
//! (compressed, with gzip): about `max_bytes` per shard lease at most.
//!
//! # Durability contract: effectively-once content
//!
//! - A record is checkpointed only after the object containing it was written (`PutObject`
//!   or `CompleteMultipartUpload` succeeded, which in S3 means durably stored). A crash at
//!   any moment therefore loses nothing: processing resumes after the last checkpoint, i.e.
//!   after the last object written *and* checkpointed.
//! - Object keys are a function of (stream, shard, first position, last position), and
//!   batches are cut from the checkpoint record by record by a rule that looks only at the
//!   records since the last cut: their count, their encoded size, and their Kinesis
//!   `ApproximateArrivalTimestamp` (a record that arrived `max_age` or more after the
//!   batch's first starts the next batch). Never by how reads happened to batch them, nor by
//!   the time they were read. Since every checkpoint is at the end of an object, a replay
//!   starts at a batch boundary and cuts the same batches: an object written but not
//!   checkpointed before a crash is rewritten with the same key and the same bytes. No
//!   duplicates appear in S3.
//! - A shard that goes quiet is still written within about `max_age + age_grace` (plus one
//!   read interval): the worker delivers empty batches
//!   ([`call_processor_on_empty_batches`](kinesis_consumer::WorkerBuilder::call_processor_on_empty_batches)),
//!   and when a read at the tip of the shard finds the clock past the first record's arrival
//!   plus `max_age` plus [`age_grace`](SinkConfig::age_grace), the batch is written. Every
//!   record that arrived before `arrival + max_age` has been read by then, so the cut is the
//!   one the rule makes on a replay, which sees the next record arrive after the deadline.
//! - A retried `process_records` (the worker's default error policy re-delivers a failed
//!   batch) does not buffer the same record twice: records at or before the last buffered
//!   position are skipped. A batch cut but not written yet takes no more records.
//!
//! ## Limits: when a replay cuts differently
//!
//! Overlapping objects (the same records under two keys whose ranges overlap) need both a
//! crash (or lease loss) between an object's write and its checkpoint, *and* a cut that the
//! replay does not repeat. Cuts that a replay may not repeat:
//!
//! - **Shutdown and lease-end cuts.** At a graceful shutdown the buffer is written as it is
//!   (the next owner then starts after it). Only if the process dies between that write and
//!   its checkpoint does the replay cut the range differently.
//! - **A quiet-shard flush under delay.** If a record that arrived before the deadline was
//!   not delivered within `age_grace` after it (reads throttled or failing, the processor
//!   slow, Kinesis' propagation delay, or this host's clock off from Kinesis' by more than
//!   the grace), the flush ends the batch earlier than the rule does.
//! - **Records without an arrival time** (never from Kinesis itself) age by the local clock.
//! - **Another configuration.** Changing `max_records`, `max_bytes`, `max_age`, the format
//!   or the compression between runs changes the cuts: the guarantee holds for replays under
//!   the same configuration. Identical bytes under gzip also assume the same `flate2`
//!   version (the compressed stream is not specified byte for byte).
//!
//! Every NDJSON line carries its `(seq, subseq)` and every key its range, so a reader that
//! must not see duplicates keeps, per shard, the records above the highest position already
//! read (or drops objects whose range is inside another's). See the README.
//!
//! With `LATEST` as the initial position, a shard with no checkpoint yet restarts at the
//! *new* tip: records between the old tip and the first checkpoint are skipped after a crash
//! (the KCL behaves the same). `TRIM_HORIZON` does not have that gap.
//!
//! # Errors
//!
//! Every S3 request (`HeadBucket`, `PutObject`, the multipart calls) is retried on errors
//! that may pass — throttling (`503 SlowDown`, 429), 5xx, timeouts of one attempt
//! ([`SinkConfig::attempt_timeout`]), connection failures — with exponential backoff and
//! jitter, up to [`SinkConfig::attempts`] requests. The SDK's own retries are turned off on
//! the sink's client, so that one loop with one bound decides. What is left surfaces as a
//! [`SinkError`]: [`RetriesExhausted`](SinkError::RetriesExhausted) for errors that may still
//! pass, [`Rejected`](SinkError::Rejected) for the others (access denied, invalid request),
//! [`BucketNotFound`](SinkError::BucketNotFound). `process_records` then fails and the
//! worker's error policy re-delivers the batch later (the buffer is kept: nothing is read
//! twice from Kinesis, nothing is lost). A failed multipart upload is aborted. A bucket that
//! does not exist is found at startup by [`SinkConfig::check_bucket`].

#![warn(missing_docs)]

mod buffer;
mod format;
pub mod health;
mod upload;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use kinesis_consumer::{
    CheckpointError, Checkpointer, InitInput, Position, ProcessInput, ProcessorError,
    RecordProcessor, SequenceNumber, ShardEndedInput,
};
use tokio::time::Instant;

use buffer::{Buffer, Limits, Offer};
pub use format::{Compression, Format, object_key};

/// Why the sink failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The bucket does not exist (found at startup, or by a write).
    #[error("bucket {bucket} does not exist")]
    BucketNotFound {
        /// The bucket.
        bucket: String,
    },
    /// The bucket could not be checked (no access, no connection, ...).
    #[error("cannot access bucket {bucket}: {source}")]
    HeadBucket {
        /// The bucket.
        bucket: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// S3 refused a request in a way retrying does not fix (access denied, invalid
    /// request, ...).
    #[error("{operation} s3://{bucket}/{key} rejected: {source}")]
    Rejected {
        /// The S3 operation, e.g. `"PutObject"` or `"UploadPart"`.
        operation: &'static str,
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
        /// The HTTP status, when there was an answer.
        status: Option<u16>,
        /// The S3 error code, e.g. `"AccessDenied"`.
        code: Option<String>,
        /// The error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A request kept failing with errors that may pass (throttling, 5xx, timeouts) for
    /// all its attempts.
    #[error("{operation} s3://{bucket}/{key} failed {attempts} times: {source}")]
    RetriesExhausted {
        /// The S3 operation.
        operation: &'static str,
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
        /// Requests sent.
        attempts: usize,
        /// The last error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A record's sequence number is not a decimal integer (Kinesis never sends one).
    #[error("record with invalid sequence number {0:?}")]
    InvalidSequenceNumber(String),
}

/// What every [`S3Sink`] of a worker shares: the client, the destination and the thresholds.
///
/// Defaults: prefix empty, [`Format::Ndjson`], [`Compression::None`]; an object per 64 MiB
/// (before compression), 100 000 records or 60 s of arrivals, quiet shards written 5 s after
/// that; multipart above 16 MiB; 6 attempts per S3 request (backoff from 200 ms to 10 s,
/// with jitter), 60 s per attempt.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    s3: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    stream: String,
    format: Format,
    compression: Compression,
    limits: Limits,
    part_size: usize,
    attempts: usize,
    min_delay: Duration,
    max_delay: Duration,
}

/// The sink's retry policy on the client: its own loop only, and a bound per attempt.
fn sink_client(s3: &aws_sdk_s3::Client, attempt_timeout: Duration) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        s3.config()
            .to_builder()
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(attempt_timeout)
                    .build(),
            )
            .build(),
    )
}

impl SinkConfig {
    /// Records of `stream` go to `bucket` through a client configured as `s3`, with the
    /// SDK's retries turned off (the sink retries; see the [crate docs](crate#errors)).
    pub fn new(
        s3: aws_sdk_s3::Client,
        bucket: impl Into<String>,
        stream: impl Into<String>,
    ) -> Self {
        SinkConfig {
            s3: sink_client(&s3, Duration::from_secs(60)),
            bucket: bucket.into(),
            prefix: String::new(),
            stream: stream.into(),
            format: Format::default(),
            compression: Compression::default(),
            limits: Limits {
                max_records: 100_000,
                max_bytes: 64 * 1024 * 1024,
                max_age: Duration::from_secs(60),
                age_grace: Duration::from_secs(5),
            },
            part_size: 16 * 1024 * 1024,
            attempts: 6,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }

    /// The key prefix (leading and trailing `/` are ignored).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The object format.
    pub fn format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// The objects' compression.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Cut an object once its encoded size (before compression) reaches this many bytes (at
    /// least 1). A record that would push a non-empty buffer past it starts the next object
    /// instead.
    pub fn max_bytes(mut self, max: usize) -> Self {
        self.limits.max_bytes = max.max(1);
        self
    }

    /// Cut an object once it holds this many records (at least 1).
    pub fn max_records(mut self, max: usize) -> Self {
        self.limits.max_records = max.max(1);
        self
    }

    /// A record that arrived in Kinesis this long after an object's first record starts
    /// the next object; a quiet shard's object is written once this, plus
    /// [`age_grace`](Self::age_grace), has passed since its first record arrived.
    pub fn max_age(mut self, max: Duration) -> Self {
        self.limits.max_age = max;
        self
    }

    /// How long after the age deadline a quiet shard's object is written: the allowance for
    /// reads to catch up and for clock differences, which keeps that cut the one a replay
    /// makes (see the [limits](crate#limits-when-a-replay-cuts-differently)). Default 5 s.
    pub fn age_grace(mut self, grace: Duration) -> Self {
        self.limits.age_grace = grace;
        self
    }

    /// Objects larger than this are uploaded in parts of this size (the last one shorter).
    /// Clamped to S3's limits: at least 5 MiB, at most 5 GiB (and grown when an object would
    /// need more than 10 000 parts). Default 16 MiB.
    pub fn part_size(mut self, bytes: usize) -> Self {
        self.part_size = bytes.clamp(upload::MIN_PART_SIZE, upload::MAX_PART_SIZE);
        self
    }

    /// Requests per S3 operation for errors that may pass (at least 1), and the backoff
    /// between them (exponential from `min_delay` to `max_delay`, with jitter).
    pub fn attempts(mut self, attempts: usize, min_delay: Duration, max_delay: Duration) -> Self {
        self.attempts = attempts.max(1);
        self.min_delay = min_delay;
        self.max_delay = max_delay.max(min_delay);
        self
    }

    /// How long one S3 request may take before it counts as a timeout (and is retried).
    /// Requests carry at most one part (or one object up to the part size). Default 60 s.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.s3 = sink_client(&self.s3, timeout);
        self
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Fails with [`SinkError::BucketNotFound`] when the bucket does not exist, and with
    /// [`SinkError::HeadBucket`] when it cannot be reached. Call it before starting the worker.
    pub async fn check_bucket(&self) -> Result<(), SinkError> {
        let checked = self
            .retry("HeadBucket", "", || {
                self.s3.head_bucket().bucket(&self.bucket).send()
            })
            .await;
        match checked {
            Ok(_) => Ok(()),
            Err(SinkError::Rejected {
                status: Some(404), ..
            }) => Err(SinkError::BucketNotFound {
                bucket: self.bucket.clone(),
            }),
            Err(e @ SinkError::BucketNotFound { .. }) => Err(e),
            Err(e) => Err(SinkError::HeadBucket {
                bucket: self.bucket.clone(),
                source: Box::new(e),
            }),
        }
    }

    /// A processor factory for [`kinesis_consumer::Worker::builder`]. Build the worker with
    /// `call_processor_on_empty_batches(true)`, or quiet shards are written only when more
    /// records arrive, at shutdown or at the shard's end.
    pub fn factory(self) -> impl Fn() -> S3Sink + Send + Sync + 'static {
        let shared = Arc::new(self);
        move || S3Sink::new(shared.clone())
    }
}

/// Writes one shard's records to S3; see the [crate docs](crate). Create them with
/// [`SinkConfig::factory`].
#[derive(Debug)]
pub struct S3Sink {
    config: Arc<SinkConfig>,
    shard_id: String,
    buffer: Buffer,
    /// The last position taken into the buffer (or written): a re-delivered batch skips up
    /// to here.
    last_taken: Option<SequenceNumber>,
}

impl S3Sink {
    /// A sink for one shard lease.
    pub fn new(config: Arc<SinkConfig>) -> Self {
        let buffer = Buffer::new(config.compression);
        S3Sink {
            config,
            shard_id: String::new(),
            buffer,
            last_taken: None,
        }
    }

    /// Writes the buffer as one object, then checkpoints at its last record.
    async fn flush(&mut self, checkpointer: &Checkpointer) -> Result<(), ProcessorError> {
        let Some((first, last)) = self.buffer.range() else {
            return Ok(());
        };
        let config = &self.config;
        let key = object_key(
            &config.prefix,
            &config.stream,
            &self.shard_id,
            first,
            last,
            config.format,
            config.compression,
        );
        let last = Position::Sequence(last.clone());
        // Sealed until the write succeeds: a failed flush is retried with the same bytes.
        let body = self.buffer.seal();
        let bytes = body.len();
        config.write_object(&key, body).await?;
        tracing::debug!(
            shard = %self.shard_id,
            key,
            records = self.buffer.count(),
            size = self.buffer.size(),
            bytes,
            "object written"
        );
        self.buffer.clear();
        match checkpointer.checkpoint_at(last).await {
            Ok(()) => Ok(()),
            // The lease is gone or the consumer is stopping: stop.
            Err(e @ (CheckpointError::LeaseLost | CheckpointError::ShutDown)) => Err(e.into()),
            // Throttled or unknown: the object is written; the next object's checkpoint covers
            // this one too (a replay rewrites the same keys meanwhile).
            Err(e) => {
                tracing::warn!(shard = %self.shard_id, error = %e, "checkpoint failed; continuing");
                Ok(())
            }
        }
    }
}

#[async_trait]
impl RecordProcessor for S3Sink {
    async fn initialize(&mut self, input: InitInput) -> Result<(), ProcessorError> {
        self.shard_id = input.shard_id;
        self.buffer.clear();
        self.last_taken = None;
        Ok(())
    }

    async fn process_records(&mut self, input: ProcessInput<'_>) -> Result<(), ProcessorError> {
        if self.shard_id.is_empty() {
            input.shard_id.clone_into(&mut self.shard_id);
        }
        // A batch cut earlier whose write failed is finished before anything else.
        if self.buffer.is_sealed() {
            self.flush(input.checkpointer).await?;
        }
        let limits = self.config.limits;
        for record in input.records {
            let position = SequenceNumber::new(&record.sequence_number, record.sub_sequence_number)
                .map_err(|_| {
                    SinkError::InvalidSequenceNumber(record.sequence_number.to_string())
                })?;
            if self.last_taken.as_ref().is_some_and(|l| *l >= position) {
                continue; // Re-delivered after a failed attempt: already buffered or written.
            }
            let encoded = self.config.format.encode(record);
            let arrival = record.approximate_arrival_timestamp;
            let now = Instant::now();
            let mut offer = self
                .buffer
                .offer(position.clone(), &encoded, arrival, &limits, now);
            if offer == Offer::CutFirst {
                self.flush(input.checkpointer).await?;
                offer = self
                    .buffer
                    .offer(position.clone(), &encoded, arrival, &limits, now);
            }
            self.last_taken = Some(position);
            if offer == (Offer::Taken { full: true }) {
                self.flush(input.checkpointer).await?;
            }
        }
        if self.buffer.age_due(
            &limits,
            input.millis_behind_latest,
            SystemTime::now(),
            Instant::now(),
        ) {
            self.flush(input.checkpointer).await?;
        }
        Ok(())
    }

    async fn lease_lost(&mut self) {
        // No checkpoint is possible any more: the new owner replays these records.
        self.buffer.clear();
    }

    async fn shard_ended(&mut self, input: ShardEndedInput<'_>) -> Result<(), ProcessorError> {
        self.flush(input.checkpointer).await
    }

    async fn shutdown_requested(
        &mut self,
        checkpointer: &Checkpointer,
    ) -> Result<(), ProcessorError> {
        self.flush(checkpointer).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SinkConfig {
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::Config::builder()
                .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
                .region(aws_sdk_s3::config::Region::new("us-east-1"))
                .build(),
        );
        SinkConfig::new(s3, "b", "s")
    }

    #[test]
    fn part_sizes_stay_within_s3_limits() {
        assert_eq!(config().part_size(1).part_size, 5 * 1024 * 1024);
        assert_eq!(config().part_size(8 << 20).part_size, 8 << 20);
        assert_eq!(config().part_size(usize::MAX).part_size, 5 << 30);
    }

    #[test]
    fn the_sink_client_has_no_sdk_retries() {
        let c = config().attempt_timeout(Duration::from_secs(7));
        let conf = c.s3.config();
        assert_eq!(conf.retry_config().map(|r| r.max_attempts()), Some(1));
        assert_eq!(
            conf.timeout_config()
                .and_then(|t| t.operation_attempt_timeout()),
            Some(Duration::from_secs(7))
        );
    }
}
