//! The narrow view of Kinesis that reading a shard needs, and its error classification.
//! [`SdkApi`] is the real one; tests use a scripted fake.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::ShardIteratorType;
use bytes::Bytes;
use kinesis_aggregation::{HashKey, HashKeyRange};

use super::{BoxError, ReadRecord, StartingPoint};
use crate::processor::ChildShard;

/// What a failed call means for the caller ("is it retryable, is it throttling?").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// The service asked us to slow down.
    Throttled,
    /// The iterator is older than five minutes.
    ExpiredIterator,
    /// The stream or shard does not exist.
    NotFound,
    /// Retrying cannot help (bad request, permissions).
    Fatal,
    /// Anything else: retry with backoff.
    Transient,
}

#[derive(Debug)]
pub(crate) struct ApiError {
    pub kind: ErrorKind,
    pub source: BoxError,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.source)
    }
}

impl ApiError {
    #[cfg(test)]
    pub(crate) fn new(kind: ErrorKind, message: &str) -> ApiError {
        ApiError {
            kind,
            source: message.to_owned().into(),
        }
    }
}

/// A page of `GetRecords`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Page {
    pub records: Vec<ReadRecord>,
    pub next_iterator: Option<String>,
    pub millis_behind_latest: Option<i64>,
    pub child_shards: Vec<ChildShard>,
}

/// A shard as `ListShards` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListedShard {
    pub shard_id: String,
    pub parent_shard_id: Option<String>,
    pub adjacent_parent_shard_id: Option<String>,
    pub hash_key_range: Option<HashKeyRange>,
}

impl ListedShard {
    pub(crate) fn is_child_of(&self, shard_id: &str) -> bool {
        self.parent_shard_id.as_deref() == Some(shard_id)
            || self.adjacent_parent_shard_id.as_deref() == Some(shard_id)
    }

    pub(crate) fn into_child(self) -> ChildShard {
        ChildShard {
            shard_id: self.shard_id,
            parent_shard_ids: self
                .parent_shard_id
                .into_iter()
                .chain(self.adjacent_parent_shard_id)
                .collect(),
            hash_key_range: self.hash_key_range,
        }
    }
}

#[async_trait]
pub(crate) trait KinesisApi: Send + Sync + 'static {
    async fn get_shard_iterator(
        &self,
        stream: &str,
        shard_id: &str,
        from: &StartingPoint,
    ) -> Result<Option<String>, ApiError>;

    async fn get_records(&self, iterator: &str, limit: i32) -> Result<Page, ApiError>;

    /// Every shard of the stream (all pages).
    async fn list_shards(&self, stream: &str) -> Result<Vec<ListedShard>, ApiError>;
}

#[async_trait]
impl<A: KinesisApi + ?Sized> KinesisApi for Arc<A> {
    async fn get_shard_iterator(
        &self,
        stream: &str,
        shard_id: &str,
        from: &StartingPoint,
    ) -> Result<Option<String>, ApiError> {
        (**self).get_shard_iterator(stream, shard_id, from).await
    }
    async fn get_records(&self, iterator: &str, limit: i32) -> Result<Page, ApiError> {
        (**self).get_records(iterator, limit).await
    }
    async fn list_shards(&self, stream: &str) -> Result<Vec<ListedShard>, ApiError> {
        (**self).list_shards(stream).await
    }
}

/// Kinesis through the AWS SDK. Streams are addressed by name (what every emulator
/// accepts).
pub(crate) struct SdkApi {
    client: aws_sdk_kinesis::Client,
}

impl SdkApi {
    pub(crate) fn new(client: aws_sdk_kinesis::Client) -> Self {
        SdkApi { client }
    }
}

/// Error codes that retrying cannot fix (bad request, permissions, KMS key unusable), for
/// every Kinesis operation: polling and enhanced fan-out classify them alike.
pub(crate) fn is_fatal_code(code: &str) -> bool {
    matches!(
        code,
        "InvalidArgumentException"
            | "ValidationException"
            | "AccessDeniedException"
            | "UnrecognizedClientException"
            | "KMSAccessDeniedException"
            | "KMSDisabledException"
            | "KMSInvalidStateException"
            | "KMSNotFoundException"
            | "KMSOptInRequired"
    )
}

/// Classification by error code, shared by all operations.
fn classify<E, R>(err: SdkError<E, R>) -> ApiError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: fmt::Debug + Send + Sync + 'static,
{
    let kind = match err.code() {
        Some(
            "ProvisionedThroughputExceededException"
            | "KMSThrottlingException"
            | "LimitExceededException"
            | "ThrottlingException"
            | "RequestLimitExceeded",
        ) => ErrorKind::Throttled,
        Some("ExpiredIteratorException") => ErrorKind::ExpiredIterator,
        Some("ResourceNotFoundException") => ErrorKind::NotFound,
        Some(code) if is_fatal_code(code) => ErrorKind::Fatal,
        _ => ErrorKind::Transient,
    };
    ApiError {
        kind,
        source: DisplayErrorContext(err).to_string().into(),
    }
}

fn parse_range(range: Option<aws_sdk_kinesis::types::HashKeyRange>) -> Option<HashKeyRange> {
    let range = range?;
    let start: HashKey = range.starting_hash_key.parse().ok()?;
    let end: HashKey = range.ending_hash_key.parse().ok()?;
    Some(HashKeyRange::new(start, end))
}

/// `from` as the SDK spells it (`GetShardIterator` and `SubscribeToShard` alike): the
/// iterator type, and the timestamp or sequence number that type needs.
pub(crate) fn sdk_starting_point(
    from: &StartingPoint,
) -> (ShardIteratorType, Option<DateTime>, Option<String>) {
    match from {
        StartingPoint::TrimHorizon => (ShardIteratorType::TrimHorizon, None, None),
        StartingPoint::Latest => (ShardIteratorType::Latest, None, None),
        StartingPoint::AtTimestamp(t) => (
            ShardIteratorType::AtTimestamp,
            Some(DateTime::from(*t)),
            None,
        ),
        StartingPoint::AtSequence(s) => {
            (ShardIteratorType::AtSequenceNumber, None, Some(s.clone()))
        }
        StartingPoint::AfterSequence(s) => (
            ShardIteratorType::AfterSequenceNumber,
            None,
            Some(s.clone()),
        ),
    }
}

/// A record as the SDK returns it (GetRecords and SubscribeToShard alike).
pub(crate) fn read_record(r: aws_sdk_kinesis::types::Record) -> ReadRecord {
    ReadRecord {
        sequence_number: r.sequence_number.into(),
        partition_key: r.partition_key.unwrap_or_default(),
        data: Bytes::from(r.data.into_inner()),
        approximate_arrival_timestamp: r
            .approximate_arrival_timestamp
            .and_then(|t| SystemTime::try_from(t).ok()),
    }
}

/// A child shard as the SDK returns it at a shard's end.
pub(crate) fn child_shard(c: aws_sdk_kinesis::types::ChildShard) -> ChildShard {
    ChildShard {
        shard_id: c.shard_id,
        parent_shard_ids: c.parent_shards,
        hash_key_range: parse_range(c.hash_key_range),
    }
}

#[async_trait]
impl KinesisApi for SdkApi {
    async fn get_shard_iterator(
        &self,
        stream: &str,
        shard_id: &str,
        from: &StartingPoint,
    ) -> Result<Option<String>, ApiError> {
        let (iterator_type, timestamp, sequence_number) = sdk_starting_point(from);
        let out = self
            .client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(shard_id)
            .shard_iterator_type(iterator_type)
            .set_timestamp(timestamp)
            .set_starting_sequence_number(sequence_number)
            .send()
            .await
            .map_err(classify)?;
        Ok(out.shard_iterator)
    }

    async fn get_records(&self, iterator: &str, limit: i32) -> Result<Page, ApiError> {
        let out = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(limit)
            .send()
            .await
            .map_err(classify)?;
        let records = out.records.into_iter().map(read_record).collect();
        let child_shards = out
            .child_shards
            .unwrap_or_default()
            .into_iter()
            .map(child_shard)
            .collect();
        Ok(Page {
            records,
            next_iterator: out.next_shard_iterator,
            millis_behind_latest: out.millis_behind_latest,
            child_shards,
        })
    }

    async fn list_shards(&self, stream: &str) -> Result<Vec<ListedShard>, ApiError> {
        // Paged with StreamName + ExclusiveStartShardId rather than NextToken alone: valid
        // on Kinesis, and the only form some emulators page correctly.
        let mut shards: Vec<ListedShard> = Vec::new();
        loop {
            let mut request = self.client.list_shards().stream_name(stream);
            if let Some(last) = shards.last() {
                request = request.exclusive_start_shard_id(&last.shard_id);
            }
            let out = request.send().await.map_err(classify)?;
            let page = out.shards.unwrap_or_default();
            let more = out.next_token.is_some() && !page.is_empty();
            shards.extend(page.into_iter().map(|s| ListedShard {
                shard_id: s.shard_id,
                parent_shard_id: s.parent_shard_id,
                adjacent_parent_shard_id: s.adjacent_parent_shard_id,
                hash_key_range: parse_range(s.hash_key_range),
            }));
            if !more {
                return Ok(shards);
            }
        }
    }
}
