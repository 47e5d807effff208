//! The seam between the pipeline and Kinesis: two calls, in our own types.
//!
//! ```text
//!  engine ──► KinesisApi::{list_shards, put_records} ──► SdkApi ──► aws-sdk-kinesis ──► Kinesis
//!                         ▲
//!                         └── tests: an in-memory fake (src/engine tests)
//! ```
//!
//! The pipeline never sees SDK types, so its logic can run against a fake with tokio's paused
//! clock; the integration tests still go through [`SdkApi`] and the real SDK.
//!
//! SDK retries versus ours: `PutRecords` is sent with the SDK's retries **disabled** (a
//! per-operation config override). The producer's retrier owns the whole budget: it knows the
//! record TTL, re-predicts shards, slows the shard's limiter on throttling, and retries only
//! the failed entries of a partially failed request, none of which the SDK can do. Stacking
//! the SDK's three attempts under ours would triple the worst-case request count and hide
//! attempts from the per-record history. `ListShards` keeps the SDK's standard retries: it is
//! rare, and the map refresher backs off on top with its own, slower schedule.

use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use kinesis_aggregation::{HashKey, HashKeyRange, KinesisRecord};

/// A stream, by name or by ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StreamId {
    Name(String),
    Arn(String),
}

impl StreamId {
    pub(crate) fn parse(s: &str) -> StreamId {
        if s.starts_with("arn:") {
            StreamId::Arn(s.to_owned())
        } else {
            StreamId::Name(s.to_owned())
        }
    }

    /// What logs and metrics call the stream.
    pub(crate) fn display_name(&self) -> &str {
        match self {
            StreamId::Name(n) => n,
            // arn:aws:kinesis:region:account:stream/NAME
            StreamId::Arn(a) => a.rsplit_once('/').map_or(a.as_str(), |(_, n)| n),
        }
    }
}

/// One shard as `ListShards` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShardDesc {
    pub id: Arc<str>,
    pub range: HashKeyRange,
    pub parent: Option<String>,
    pub adjacent_parent: Option<String>,
    /// Whether the shard still accepts writes (no ending sequence number).
    pub open: bool,
}

/// One page of `ListShards`.
#[derive(Debug, Clone, Default)]
pub(crate) struct ShardPage {
    pub shards: Vec<ShardDesc>,
    /// More shards follow (the service returned a `NextToken`).
    pub more: bool,
}

/// The result of one `PutRecords` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EntryResult {
    Ok {
        shard_id: Arc<str>,
        sequence_number: Arc<str>,
    },
    Failed {
        code: Arc<str>,
        message: Arc<str>,
    },
}

/// How a whole call failed, classified at the seam so that the engine never inspects SDK
/// errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallErrorKind {
    /// The service asked us to slow down.
    Throttling,
    /// Worth retrying: 5xx, connection failures, timeouts, unparseable answers.
    Transient,
    /// The stream does not exist (deleted, or never created).
    StreamNotFound,
    /// Retrying cannot help: bad arguments, access denied, KMS key disabled, ...
    Permanent,
}

/// A failed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CallError {
    pub kind: CallErrorKind,
    pub code: Arc<str>,
    pub message: Arc<str>,
}

impl CallError {
    pub(crate) fn new(kind: CallErrorKind, code: &str, message: impl AsRef<str>) -> Self {
        CallError {
            kind,
            code: code.into(),
            message: message.as_ref().into(),
        }
    }
}

/// The two Kinesis calls the producer makes.
#[async_trait]
pub(crate) trait KinesisApi: Send + Sync + 'static {
    /// One page of shards, starting after `exclusive_start_shard_id`.
    async fn list_shards(
        &self,
        stream: &StreamId,
        exclusive_start_shard_id: Option<&str>,
        max_results: Option<i32>,
    ) -> Result<ShardPage, CallError>;

    /// Puts `records`; on success, one result per record, in order. The records are given
    /// by value: the engine does not need them afterwards (a retry re-aggregates the user
    /// records), and the SDK wants owned bytes, which a unique `Bytes` yields without a copy.
    async fn put_records(
        &self,
        stream: &StreamId,
        records: Vec<KinesisRecord>,
    ) -> Result<Vec<EntryResult>, CallError>;
}

/// [`KinesisApi`] over the AWS SDK.
pub(crate) struct SdkApi {
    client: aws_sdk_kinesis::Client,
}

impl SdkApi {
    pub(crate) fn new(client: aws_sdk_kinesis::Client) -> Self {
        SdkApi { client }
    }
}

#[async_trait]
impl KinesisApi for SdkApi {
    async fn list_shards(
        &self,
        stream: &StreamId,
        exclusive_start_shard_id: Option<&str>,
        max_results: Option<i32>,
    ) -> Result<ShardPage, CallError> {
        // Paged by ExclusiveStartShardId with the stream named on every call, not by
        // NextToken alone: both work on AWS, and the local emulator only supports the former.
        let mut req = self.client.list_shards().set_max_results(max_results);
        req = match stream {
            StreamId::Name(n) => req.stream_name(n),
            StreamId::Arn(a) => req.stream_arn(a),
        };
        if let Some(start) = exclusive_start_shard_id {
            req = req.exclusive_start_shard_id(start);
        }
        let out = req.send().await.map_err(classify_sdk_error)?;
        let mut shards = Vec::with_capacity(out.shards().len());
        for s in out.shards() {
            let Some(range) = s.hash_key_range() else {
                continue;
            };
            let (Ok(start), Ok(end)) = (
                range.starting_hash_key().parse::<HashKey>(),
                range.ending_hash_key().parse::<HashKey>(),
            ) else {
                continue;
            };
            shards.push(ShardDesc {
                id: s.shard_id().into(),
                range: HashKeyRange::new(start, end),
                parent: s.parent_shard_id().map(str::to_owned),
                adjacent_parent: s.adjacent_parent_shard_id().map(str::to_owned),
                open: s
                    .sequence_number_range()
                    .is_none_or(|r| r.ending_sequence_number().is_none()),
            });
        }
        Ok(ShardPage {
            shards,
            more: out.next_token().is_some_and(|t| !t.is_empty()),
        })
    }

    async fn put_records(
        &self,
        stream: &StreamId,
        records: Vec<KinesisRecord>,
    ) -> Result<Vec<EntryResult>, CallError> {
        let mut entries = Vec::with_capacity(records.len());
        for r in records {
            // An aggregate's bytes are uniquely owned here: `Vec::from` takes them without
            // copying (a lone user record's data may be shared with the caller: then it copies).
            let entry = PutRecordsRequestEntry::builder()
                .data(Blob::new(Vec::from(r.data)))
                .partition_key(r.partition_key)
                .set_explicit_hash_key(r.explicit_hash_key.map(|k| k.to_string()))
                .build()
                .map_err(|e| {
                    CallError::new(CallErrorKind::Permanent, "BuildError", e.to_string())
                })?;
            entries.push(entry);
        }
        let mut req = self.client.put_records().set_records(Some(entries));
        req = match stream {
            StreamId::Name(n) => req.stream_name(n),
            StreamId::Arn(a) => req.stream_arn(a),
        };
        let out = req
            .customize()
            .config_override(
                aws_sdk_kinesis::config::Config::builder()
                    .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled()),
            )
            .send()
            .await
            .map_err(classify_sdk_error)?;
        // Entries of one request land on a few shards: one shard id string for a run of them.
        let mut last_shard: Option<Arc<str>> = None;
        Ok(out
            .records()
            .iter()
            .map(
                |e| match (e.shard_id(), e.sequence_number(), e.error_code()) {
                    (Some(shard), Some(seq), None) => EntryResult::Ok {
                        shard_id: match &last_shard {
                            Some(last) if **last == *shard => last.clone(),
                            _ => last_shard.insert(Arc::from(shard)).clone(),
                        },
                        sequence_number: seq.into(),
                    },
                    (_, _, code) => EntryResult::Failed {
                        code: code.unwrap_or("MissingResult").into(),
                        message: e.error_message().unwrap_or_default().into(),
                    },
                },
            )
            .collect())
    }
}

/// Sorts an SDK error into the engine's classes.
fn classify_sdk_error<E, R>(err: SdkError<E, R>) -> CallError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match &err {
        SdkError::ServiceError(se) => {
            let e = se.err();
            let code = e.code().unwrap_or("Unknown");
            let message = e.message().unwrap_or_default();
            CallError::new(classify_error_code(code, None), code, message)
        }
        SdkError::TimeoutError(_) => {
            CallError::new(CallErrorKind::Transient, "Timeout", err.to_string())
        }
        SdkError::DispatchFailure(d) => {
            let code = if d.is_timeout() {
                "Timeout"
            } else {
                "DispatchFailure"
            };
            CallError::new(CallErrorKind::Transient, code, format!("{err}: {d:?}"))
        }
        SdkError::ResponseError(_) => CallError::new(
            CallErrorKind::Transient,
            "ResponseError",
            format!("{err:?}"),
        ),
        // Could not even build the request: a bug or bad input, not worth a retry.
        _ => CallError::new(
            CallErrorKind::Permanent,
            "ConstructionFailure",
            format!("{err:?}"),
        ),
    }
}

/// Sorts a Kinesis error code (of a whole call, or of one `PutRecords` entry) into classes.
///
/// Unknown codes count as transient: retrying an unknown error until the TTL costs a little
/// time, failing a record that would have gone through costs data.
pub(crate) fn classify_error_code(code: &str, _status: Option<u16>) -> CallErrorKind {
    match code {
        "ProvisionedThroughputExceededException"
        | "ThrottlingException"
        | "LimitExceededException"
        | "KMSThrottlingException"
        | "RequestLimitExceeded"
        | "SlowDown"
        | "TooManyRequestsException" => CallErrorKind::Throttling,
        "ResourceNotFoundException" => CallErrorKind::StreamNotFound,
        "InvalidArgumentException"
        | "ValidationException"
        | "AccessDeniedException"
        | "UnrecognizedClientException"
        | "InvalidSignatureException"
        | "MissingAuthenticationToken"
        | "KMSAccessDeniedException"
        | "KMSDisabledException"
        | "KMSInvalidStateException"
        | "KMSNotFoundException"
        | "KMSOptInRequired"
        | "SerializationException" => CallErrorKind::Permanent,
        _ => CallErrorKind::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_classified() {
        use CallErrorKind::*;
        for (code, kind) in [
            ("ProvisionedThroughputExceededException", Throttling),
            ("KMSThrottlingException", Throttling),
            ("LimitExceededException", Throttling),
            ("InternalFailure", Transient),
            ("ServiceUnavailable", Transient),
            ("SomethingNew", Transient),
            ("ResourceNotFoundException", StreamNotFound),
            ("InvalidArgumentException", Permanent),
            ("KMSDisabledException", Permanent),
            ("AccessDeniedException", Permanent),
        ] {
            assert_eq!(classify_error_code(code, None), kind, "{code}");
        }
    }

    #[test]
    fn stream_ids() {
        assert_eq!(StreamId::parse("orders"), StreamId::Name("orders".into()));
        let arn = StreamId::parse("arn:aws:kinesis:us-east-1:123456789012:stream/orders");
        assert!(matches!(arn, StreamId::Arn(_)));
        assert_eq!(arn.display_name(), "orders");
    }
}
