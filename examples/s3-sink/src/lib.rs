//! A [`RecordProcessor`] that writes a Kinesis stream to S3: [`S3Sink`].
//!
//! ```text
//!  Worker ─► one S3Sink per shard lease
//!              │ process_records: skip what is already buffered (a retried batch),
//!              │ encode each record, append to the shard's buffer
//!              │ cut when the buffer reaches max_records or max_bytes (checked per record),
//!              │ or when its oldest record is older than max_age (checked per input batch),
//!              │ and at shutdown_requested / shard_ended
//!              ▼
//!            PutObject s3://bucket/prefix/stream/shard/<first>_<last>.ndjson  (retried: backon)
//!              │ only after it succeeded
//!              ▼
//!            checkpoint_at(last record of the object)  ─► lease table
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
//!
//! Objects are written with one `PutObject` each (no multipart upload, no compression), so
//! `max_bytes` should stay well under 5 GiB; the buffer is held in memory.
//!
//! # Durability contract: effectively-once content
//!
//! - A record is checkpointed only after the object containing it was written
//!   (`PutObject` returned success, which in S3 means durably stored). A crash at any moment
//!   therefore loses nothing: processing resumes after the last checkpoint, i.e. after the
//!   last object written *and* checkpointed.
//! - Object keys are a function of (stream, shard, first position, last position), and batches
//!   of records are cut from the checkpoint by **record count and encoded size only**, record
//!   by record, never by how GetRecords happened to batch them. Since every checkpoint is
//!   at the end of an object, a replay starts at a batch boundary and cuts the same batches:
//!   an object written but not checkpointed before a crash is rewritten with the same key
//!   and the same bytes. No duplicates appear in S3.
//! - A retried `process_records` (the worker's default error policy re-delivers a failed
//!   batch) does not buffer the same record twice: records at or before the last buffered
//!   position are skipped.
//!
//! ## Limits
//!
//! - **Age cuts and shutdown cuts are not deterministic.** A batch cut because its oldest
//!   record reached `max_age`, or because the worker shut down / the shard ended, ends at a
//!   point that depends on timing. If its object is written and the process dies before the
//!   checkpoint lands, the replay cuts that range differently (by count/size, or by another
//!   age cut), and the records of that range appear in two objects with overlapping key
//!   ranges. Every NDJSON line carries its `(seq, subseq)`, so a reader can drop such
//!   duplicates; the window is one `PutObject` → checkpoint round trip. Set `max_age` large
//!   (and rely on count/size) when you need strict effectively-once.
//! - The age is checked when a batch arrives: a buffer on a shard that receives no more
//!   records is written at the next batch, at shutdown, or at the end of the shard.
//! - Changing `max_records`, `max_bytes` or the format between runs changes the cuts: the
//!   guarantee holds for replays under the same configuration.
//! - A lost lease drops the buffer without writing: the new owner replays from the
//!   checkpoint and writes the same objects.
//!
//! # Errors
//!
//! `PutObject` failures that may pass (throttling such as `SlowDown`, 5xx, timeouts,
//! connection failures) are retried with exponential backoff and jitter, on top of the SDK's
//! own retries, up to [`SinkConfig::put_attempts`]. Past that, or for any other error,
//! `process_records` fails and the worker's error policy re-delivers the batch later. A
//! bucket that does not exist is found at startup by [`SinkConfig::check_bucket`].

#![warn(missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use kinesis_consumer::{
    CheckpointError, Checkpointer, InitInput, Position, ProcessInput, ProcessorError, Record,
    RecordProcessor, SequenceNumber, ShardEndedInput,
};
use tokio::time::Instant;

/// How records are written into an object. See the [crate docs](crate#object-layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Newline-delimited JSON, one line per record (`.ndjson`). The default.
    #[default]
    Ndjson,
    /// Each record's data preceded by its length as a big-endian `u32` (`.bin`).
    LengthPrefixed,
}

impl Format {
    /// The object key's extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Ndjson => "ndjson",
            Format::LengthPrefixed => "bin",
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Ndjson => "application/x-ndjson",
            Format::LengthPrefixed => "application/octet-stream",
        }
    }

    /// The bytes `record` contributes to an object.
    pub fn encode(self, record: &Record) -> Vec<u8> {
        match self {
            Format::Ndjson => {
                let mut line = format!(
                    "{{\"seq\":{},\"subseq\":{},\"key\":{},",
                    json_string(&record.sequence_number),
                    record.sub_sequence_number,
                    json_string(&record.partition_key),
                );
                match std::str::from_utf8(&record.data) {
                    Ok(text) => {
                        line.push_str("\"data\":");
                        line.push_str(&json_string(text));
                    }
                    Err(_) => {
                        line.push_str("\"data\":\"");
                        line.push_str(&base64(&record.data));
                        line.push_str("\",\"encoding\":\"base64\"");
                    }
                }
                line.push_str("}\n");
                line.into_bytes()
            }
            Format::LengthPrefixed => {
                // Kinesis records are at most 10 MiB: the length always fits.
                let len = u32::try_from(record.data.len()).unwrap_or(u32::MAX);
                let mut out = Vec::with_capacity(4 + record.data.len());
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&record.data);
                out
            }
        }
    }
}

fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// Standard base64 with padding (RFC 4648 §4).
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The object key of the batch `first..=last` of `shard`. See the
/// [crate docs](crate#object-layout).
pub fn object_key(
    prefix: &str,
    stream: &str,
    shard: &str,
    first: &SequenceNumber,
    last: &SequenceNumber,
    format: Format,
) -> String {
    let prefix = prefix.trim_matches('/');
    let lead = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    format!(
        "{lead}{stream}/{shard}/{}-{}_{}-{}.{}",
        first.sequence(),
        first.sub_sequence(),
        last.sequence(),
        last.sub_sequence(),
        format.extension()
    )
}

/// Why the sink failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The bucket does not exist (checked at startup).
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
    /// Writing an object failed, after the retries for errors that may pass.
    #[error("writing s3://{bucket}/{key} failed: {source}")]
    Put {
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
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
/// Defaults: prefix empty, [`Format::Ndjson`], 64 MiB or 100 000 records or 60 s per object,
/// 6 attempts per `PutObject` (backoff from 200 ms to 10 s, with jitter).
#[derive(Debug, Clone)]
pub struct SinkConfig {
    s3: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    stream: String,
    format: Format,
    max_bytes: usize,
    max_records: usize,
    max_age: Duration,
    put_attempts: usize,
    min_delay: Duration,
    max_delay: Duration,
}

impl SinkConfig {
    /// Records of `stream` go to `bucket` through `s3`.
    pub fn new(
        s3: aws_sdk_s3::Client,
        bucket: impl Into<String>,
        stream: impl Into<String>,
    ) -> Self {
        SinkConfig {
            s3,
            bucket: bucket.into(),
            prefix: String::new(),
            stream: stream.into(),
            format: Format::default(),
            max_bytes: 64 * 1024 * 1024,
            max_records: 100_000,
            max_age: Duration::from_secs(60),
            put_attempts: 6,
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

    /// Cut an object once its encoded size reaches this many bytes (at least 1). A record
    /// that would push a non-empty buffer past it starts the next object instead.
    pub fn max_bytes(mut self, max: usize) -> Self {
        self.max_bytes = max.max(1);
        self
    }

    /// Cut an object once it holds this many records (at least 1).
    pub fn max_records(mut self, max: usize) -> Self {
        self.max_records = max.max(1);
        self
    }

    /// Cut an object once its oldest record was buffered this long ago (checked when a batch
    /// arrives; see the [limits](crate#limits)).
    pub fn max_age(mut self, max: Duration) -> Self {
        self.max_age = max;
        self
    }

    /// Attempts per `PutObject` for errors that may pass (at least 1), each one itself
    /// retried by the SDK's retry policy; and the backoff between them.
    pub fn put_attempts(
        mut self,
        attempts: usize,
        min_delay: Duration,
        max_delay: Duration,
    ) -> Self {
        self.put_attempts = attempts.max(1);
        self.min_delay = min_delay;
        self.max_delay = max_delay.max(min_delay);
        self
    }

    /// Fails with [`SinkError::BucketNotFound`] when the bucket does not exist. Call it
    /// before starting the worker.
    pub async fn check_bucket(&self) -> Result<(), SinkError> {
        match self.s3.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let not_found = e.as_service_error().is_some_and(|s| s.is_not_found())
                    || e.raw_response().is_some_and(|r| r.status().as_u16() == 404);
                if not_found {
                    Err(SinkError::BucketNotFound {
                        bucket: self.bucket.clone(),
                    })
                } else {
                    Err(SinkError::HeadBucket {
                        bucket: self.bucket.clone(),
                        source: aws_sdk_s3::error::DisplayErrorContext(e).to_string().into(),
                    })
                }
            }
        }
    }

    /// A processor factory for [`kinesis_consumer::Worker::builder`].
    pub fn factory(self) -> impl Fn() -> S3Sink + Send + Sync + 'static {
        let shared = Arc::new(self);
        move || S3Sink::new(shared.clone())
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<(), SinkError> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.put_attempts - 1)
            .with_jitter();
        let send = || async {
            self.s3
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .content_type(self.format.content_type())
                .body(ByteStream::from(body.clone()))
                .send()
                .await
        };
        send.retry(backoff)
            .when(is_transient)
            .notify(|e, delay| {
                tracing::warn!(
                    key,
                    ?delay,
                    error = %aws_sdk_s3::error::DisplayErrorContext(e),
                    "PutObject failed; retrying"
                );
            })
            .await
            .map(|_| ())
            .map_err(|e| SinkError::Put {
                bucket: self.bucket.clone(),
                key: key.to_owned(),
                source: aws_sdk_s3::error::DisplayErrorContext(e).to_string().into(),
            })
    }
}

/// Whether an S3 error may pass on a retry: throttling, 5xx, timeouts, connection failures.
fn is_transient<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> bool {
    match error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(e) => {
            let status = e.raw().status().as_u16();
            status >= 500
                || status == 429
                || matches!(
                    e.err().code(),
                    Some("SlowDown" | "Throttling" | "ThrottlingException" | "RequestTimeout")
                )
        }
        _ => false,
    }
}

/// The records of one shard not yet written: the next object's body.
#[derive(Debug, Default)]
struct Buffer {
    body: Vec<u8>,
    count: usize,
    first: Option<SequenceNumber>,
    last: Option<SequenceNumber>,
    since: Option<Instant>,
}

/// What [`Buffer::offer`] decided.
#[derive(Debug, PartialEq, Eq)]
enum Offer {
    /// Not taken: write the buffer first, then offer the record again.
    CutFirst,
    /// Taken; `full` means the buffer must be written now.
    Taken { full: bool },
}

impl Buffer {
    /// The cut rule: a function of the records since the last cut only, so that a replay
    /// from a checkpoint (always at a cut) cuts the same batches.
    fn offer(
        &mut self,
        position: SequenceNumber,
        encoded: &[u8],
        max_records: usize,
        max_bytes: usize,
        now: Instant,
    ) -> Offer {
        // A full buffer is one whose write failed (the batch is being re-delivered): it is
        // written before anything is added, so that the cut stays where the rule put it.
        if self.count >= max_records
            || self.body.len() >= max_bytes
            || (self.count > 0 && self.body.len() + encoded.len() > max_bytes)
        {
            return Offer::CutFirst;
        }
        self.body.extend_from_slice(encoded);
        self.count += 1;
        self.first.get_or_insert_with(|| position.clone());
        self.last = Some(position);
        self.since.get_or_insert(now);
        Offer::Taken {
            full: self.count >= max_records || self.body.len() >= max_bytes,
        }
    }

    fn is_empty(&self) -> bool {
        self.count == 0
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
        S3Sink {
            config,
            shard_id: String::new(),
            buffer: Buffer::default(),
            last_taken: None,
        }
    }

    /// Writes the buffer as one object, then checkpoints at its last record.
    async fn flush(&mut self, checkpointer: &Checkpointer) -> Result<(), ProcessorError> {
        let (Some(first), Some(last)) = (&self.buffer.first, &self.buffer.last) else {
            return Ok(());
        };
        let key = object_key(
            &self.config.prefix,
            &self.config.stream,
            &self.shard_id,
            first,
            last,
            self.config.format,
        );
        // The buffer stays until the write succeeded: a failed flush is retried with it.
        self.config
            .put(&key, Bytes::copy_from_slice(&self.buffer.body))
            .await?;
        tracing::debug!(
            shard = %self.shard_id,
            key,
            records = self.buffer.count,
            bytes = self.buffer.body.len(),
            "object written"
        );
        let last = Position::Sequence(last.clone());
        self.buffer = Buffer::default();
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
        self.buffer = Buffer::default();
        self.last_taken = None;
        Ok(())
    }

    async fn process_records(&mut self, input: ProcessInput<'_>) -> Result<(), ProcessorError> {
        if self.shard_id.is_empty() {
            input.shard_id.clone_into(&mut self.shard_id);
        }
        let (max_records, max_bytes) = (self.config.max_records, self.config.max_bytes);
        for record in input.records {
            let position = SequenceNumber::new(&record.sequence_number, record.sub_sequence_number)
                .map_err(|_| {
                    SinkError::InvalidSequenceNumber(record.sequence_number.to_string())
                })?;
            if self.last_taken.as_ref().is_some_and(|l| *l >= position) {
                continue; // Re-delivered after a failed attempt: already buffered or written.
            }
            let encoded = self.config.format.encode(record);
            let now = Instant::now();
            let mut offer =
                self.buffer
                    .offer(position.clone(), &encoded, max_records, max_bytes, now);
            if offer == Offer::CutFirst {
                self.flush(input.checkpointer).await?;
                offer = self
                    .buffer
                    .offer(position.clone(), &encoded, max_records, max_bytes, now);
            }
            self.last_taken = Some(position);
            if offer == (Offer::Taken { full: true }) {
                self.flush(input.checkpointer).await?;
            }
        }
        if self
            .buffer
            .since
            .is_some_and(|since| since.elapsed() >= self.config.max_age)
        {
            self.flush(input.checkpointer).await?;
        }
        Ok(())
    }

    async fn lease_lost(&mut self) {
        // No checkpoint is possible any more: the new owner replays these records.
        self.buffer = Buffer::default();
    }

    async fn shard_ended(&mut self, input: ShardEndedInput<'_>) -> Result<(), ProcessorError> {
        self.flush(input.checkpointer).await
    }

    async fn shutdown_requested(
        &mut self,
        checkpointer: &Checkpointer,
    ) -> Result<(), ProcessorError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        self.flush(checkpointer).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(seq: &str, sub: u64, key: &str, data: &[u8]) -> Record {
        Record {
            data: Bytes::copy_from_slice(data),
            partition_key: key.to_owned(),
            explicit_hash_key: None,
            sequence_number: seq.into(),
            sub_sequence_number: sub,
            approximate_arrival_timestamp: None,
            aggregated: false,
        }
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn ndjson_lines_carry_positions_and_tell_text_from_base64() {
        let text = Format::Ndjson.encode(&record("42", 3, "k\"1", b"hi \"there\""));
        assert_eq!(
            std::str::from_utf8(&text).unwrap(),
            "{\"seq\":\"42\",\"subseq\":3,\"key\":\"k\\\"1\",\"data\":\"hi \\\"there\\\"\"}\n"
        );
        let binary = Format::Ndjson.encode(&record("42", 0, "k", &[0xff, 0x00]));
        let v: serde_json::Value = serde_json::from_slice(&binary).unwrap();
        assert_eq!(v["data"], "/wA=");
        assert_eq!(v["encoding"], "base64");
        let raw = Format::LengthPrefixed.encode(&record("1", 0, "k", b"abc"));
        assert_eq!(raw, b"\0\0\0\x03abc");
    }

    #[test]
    fn keys_are_deterministic_and_prefix_slashes_ignored() {
        let a = SequenceNumber::new("100", 0).unwrap();
        let b = SequenceNumber::new("250", 7).unwrap();
        assert_eq!(
            object_key("/out/", "s", "shardId-000000000001", &a, &b, Format::Ndjson),
            "out/s/shardId-000000000001/100-0_250-7.ndjson"
        );
        assert_eq!(
            object_key("", "s", "sh", &a, &b, Format::LengthPrefixed),
            "s/sh/100-0_250-7.bin"
        );
    }

    /// Feeds `sizes` (record i has position i) through the cut rule, splitting the input
    /// after every `split` records as GetRecords might; returns the cut batches' positions.
    fn cuts(
        sizes: &[usize],
        split: usize,
        max_records: usize,
        max_bytes: usize,
    ) -> Vec<(u64, u64)> {
        let mut buffer = Buffer::default();
        let mut out = Vec::new();
        let now = Instant::now();
        let mut take = |buffer: &mut Buffer| {
            let b = std::mem::take(buffer);
            out.push((
                b.first.unwrap().sequence().parse().unwrap(),
                b.last.unwrap().sequence().parse().unwrap(),
            ));
        };
        for chunk in sizes.chunks(split).enumerate().map(|(c, s)| (c * split, s)) {
            for (i, size) in chunk.1.iter().enumerate() {
                let pos = SequenceNumber::new(&(chunk.0 + i).to_string(), 0).unwrap();
                let body = vec![b'x'; *size];
                let mut offer = buffer.offer(pos.clone(), &body, max_records, max_bytes, now);
                if offer == Offer::CutFirst {
                    take(&mut buffer);
                    offer = buffer.offer(pos, &body, max_records, max_bytes, now);
                }
                if offer == (Offer::Taken { full: true }) {
                    take(&mut buffer);
                }
            }
        }
        if !buffer.is_empty() {
            take(&mut buffer);
        }
        out
    }

    #[test]
    fn cuts_depend_on_records_not_on_input_batches() {
        let sizes: Vec<usize> = (0..50).map(|i| 1 + (i * 7) % 13).collect();
        let reference = cuts(&sizes, 50, 8, 40);
        for split in [1, 3, 7, 20] {
            assert_eq!(cuts(&sizes, split, 8, 40), reference, "split {split}");
        }
        // Every record exactly once, in order.
        let mut next = 0;
        for (first, last) in &reference {
            assert_eq!(*first, next);
            next = last + 1;
        }
        assert_eq!(next, 50);
    }

    #[test]
    fn a_full_buffer_whose_write_failed_is_cut_before_taking_more() {
        let now = Instant::now();
        let mut buffer = Buffer::default();
        let pos = |i: u64| SequenceNumber::new(&i.to_string(), 0).unwrap();
        assert_eq!(
            buffer.offer(pos(1), b"a", 2, 100, now),
            Offer::Taken { full: false }
        );
        assert_eq!(
            buffer.offer(pos(2), b"b", 2, 100, now),
            Offer::Taken { full: true }
        );
        // The write failed; the next record of the re-delivered batch must not join it.
        assert_eq!(buffer.offer(pos(3), b"c", 2, 100, now), Offer::CutFirst);
        assert_eq!(buffer.count, 2);
    }

    #[test]
    fn count_and_size_limits_cut() {
        assert_eq!(cuts(&[1; 5], 5, 2, 100), [(0, 1), (2, 3), (4, 4)]);
        // 4 + 4 fits in 10, a third does not: cut before it.
        assert_eq!(cuts(&[4; 5], 5, 100, 10), [(0, 1), (2, 3), (4, 4)]);
        // Reaching the limit exactly cuts at once; an oversized record is alone.
        assert_eq!(cuts(&[5, 5, 20, 1], 4, 100, 10), [(0, 1), (2, 2), (3, 3)]);
    }
}
