//! The narrow view of Kinesis that enhanced fan-out needs (consumer registration and
//! `SubscribeToShard`), its error classification, and [`SdkFanOutApi`], the real one. Tests
//! use a scripted fake (`fanout/tests.rs`).

use std::fmt;

use async_trait::async_trait;
use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::types::{ConsumerStatus, StartingPosition, SubscribeToShardEventStream};

use crate::processor::ChildShard;
use crate::retrieval::api::{child_shard, is_fatal_code, read_record, sdk_starting_point};
use crate::retrieval::{BoxError, ReadRecord, StartingPoint};

/// What a failed call means here ("retry, wait, or give up?"). Kept apart from the polling
/// classification: the same codes mean different things for these operations (a
/// `LimitExceededException` from `RegisterStreamConsumer` may be the consumer limit, a
/// `ResourceInUseException` from `SubscribeToShard` is a subscription still open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// `ResourceInUseException`: the consumer exists or is being registered, or another
    /// subscription to the shard is still open (Kinesis refuses a new one for 5 s).
    InUse,
    /// `LimitExceededException`: a rate limit (one `SubscribeToShard` per second per shard
    /// and consumer; 5 registrations per second) or, from `RegisterStreamConsumer`, the
    /// limit on registered consumers.
    LimitExceeded,
    /// Other throttling (KMS).
    Throttled,
    /// The stream, shard or consumer does not exist.
    NotFound,
    /// Retrying cannot help (bad request, permissions, KMS key unusable).
    Fatal,
    /// Anything else (internal failure, 5xx, connection dropped, timed out): retry.
    Transient,
}

#[derive(Debug)]
pub(crate) struct FanOutError {
    pub kind: Failure,
    pub source: BoxError,
}

impl fmt::Display for FanOutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.source)
    }
}

impl FanOutError {
    pub(crate) fn new(kind: Failure, message: impl Into<String>) -> FanOutError {
        FanOutError {
            kind,
            source: message.into().into(),
        }
    }
}

fn classify<E, R>(err: SdkError<E, R>) -> FanOutError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: fmt::Debug + Send + Sync + 'static,
{
    let kind = match err.code() {
        Some("ResourceInUseException") => Failure::InUse,
        Some("LimitExceededException") => Failure::LimitExceeded,
        Some(
            "ProvisionedThroughputExceededException"
            | "KMSThrottlingException"
            | "ThrottlingException"
            | "RequestLimitExceeded",
        ) => Failure::Throttled,
        Some("ResourceNotFoundException") => Failure::NotFound,
        Some(code) if is_fatal_code(code) => Failure::Fatal,
        _ => Failure::Transient,
    };
    FanOutError {
        kind,
        source: DisplayErrorContext(err).to_string().into(),
    }
}

/// A registered consumer as `DescribeStreamConsumer` / `RegisterStreamConsumer` return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Consumer {
    pub arn: String,
    pub status: Status,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Creating,
    Active,
    Deleting,
}

impl Consumer {
    fn from_sdk(arn: &str, status: &ConsumerStatus) -> Consumer {
        Consumer {
            arn: arn.to_owned(),
            status: status.into(),
        }
    }
}

impl From<&ConsumerStatus> for Status {
    fn from(s: &ConsumerStatus) -> Status {
        match s {
            ConsumerStatus::Active => Status::Active,
            ConsumerStatus::Deleting => Status::Deleting,
            // CREATING, and anything newer than this SDK: wait for ACTIVE.
            _ => Status::Creating,
        }
    }
}

/// One `SubscribeToShardEvent`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ShardEvent {
    pub records: Vec<ReadRecord>,
    /// `None` when Kinesis sent none (null): the shard has ended.
    pub continuation: Option<String>,
    pub millis_behind_latest: i64,
    /// Set at the shard's end.
    pub child_shards: Vec<ChildShard>,
}

impl ShardEvent {
    /// Whether this is the shard's last event. Kinesis says so with a null continuation
    /// (and the children); an emulator that always sends a continuation says it with an
    /// event that names the children and carries no record (after the last ones).
    pub(crate) fn ends_shard(&self) -> bool {
        self.continuation.is_none() || (!self.child_shards.is_empty() && self.records.is_empty())
    }
}

/// An open subscription: events until it ends (`Ok(None)`, after about 5 minutes) or fails.
#[async_trait]
pub(crate) trait EventStream: Send {
    async fn next_event(&mut self) -> Result<Option<ShardEvent>, FanOutError>;
}

#[async_trait]
pub(crate) trait FanOutApi: Send + Sync + 'static {
    /// The stream's ARN (registration needs it; the stream is addressed by name elsewhere).
    async fn stream_arn(&self, stream: &str) -> Result<String, FanOutError>;

    async fn describe_consumer(
        &self,
        stream_arn: &str,
        name: &str,
    ) -> Result<Consumer, FanOutError>;

    async fn register_consumer(
        &self,
        stream_arn: &str,
        name: &str,
    ) -> Result<Consumer, FanOutError>;

    async fn subscribe(
        &self,
        consumer_arn: &str,
        shard_id: &str,
        from: &StartingPoint,
    ) -> Result<Box<dyn EventStream>, FanOutError>;
}

/// Enhanced fan-out through the AWS SDK. `SubscribeToShard` uses whatever HTTP version the
/// client negotiates: HTTP/2 against AWS (ALPN), HTTP/1.1 against the local emulators.
pub(crate) struct SdkFanOutApi {
    client: aws_sdk_kinesis::Client,
}

impl SdkFanOutApi {
    pub(crate) fn new(client: aws_sdk_kinesis::Client) -> Self {
        SdkFanOutApi { client }
    }
}

fn starting_position(from: &StartingPoint) -> Result<StartingPosition, FanOutError> {
    let (iterator_type, timestamp, sequence_number) = sdk_starting_point(from);
    StartingPosition::builder()
        .r#type(iterator_type)
        .set_timestamp(timestamp)
        .set_sequence_number(sequence_number)
        .build()
        .map_err(|e| FanOutError::new(Failure::Fatal, e.to_string()))
}

#[async_trait]
impl FanOutApi for SdkFanOutApi {
    async fn stream_arn(&self, stream: &str) -> Result<String, FanOutError> {
        let out = self
            .client
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await
            .map_err(classify)?;
        out.stream_description_summary()
            .map(|s| s.stream_arn().to_owned())
            .ok_or_else(|| FanOutError::new(Failure::Transient, "no stream description"))
    }

    async fn describe_consumer(
        &self,
        stream_arn: &str,
        name: &str,
    ) -> Result<Consumer, FanOutError> {
        let out = self
            .client
            .describe_stream_consumer()
            .stream_arn(stream_arn)
            .consumer_name(name)
            .send()
            .await
            .map_err(classify)?;
        out.consumer_description()
            .map(|c| Consumer::from_sdk(c.consumer_arn(), c.consumer_status()))
            .ok_or_else(|| FanOutError::new(Failure::Transient, "no consumer description"))
    }

    async fn register_consumer(
        &self,
        stream_arn: &str,
        name: &str,
    ) -> Result<Consumer, FanOutError> {
        let out = self
            .client
            .register_stream_consumer()
            .stream_arn(stream_arn)
            .consumer_name(name)
            .send()
            .await
            .map_err(classify)?;
        out.consumer()
            .map(|c| Consumer::from_sdk(c.consumer_arn(), c.consumer_status()))
            .ok_or_else(|| FanOutError::new(Failure::Transient, "no consumer in the answer"))
    }

    async fn subscribe(
        &self,
        consumer_arn: &str,
        shard_id: &str,
        from: &StartingPoint,
    ) -> Result<Box<dyn EventStream>, FanOutError> {
        let out = self
            .client
            .subscribe_to_shard()
            .consumer_arn(consumer_arn)
            .shard_id(shard_id)
            .starting_position(starting_position(from)?)
            .send()
            .await
            .map_err(classify)?;
        Ok(Box::new(SdkEventStream { out }))
    }
}

/// The open subscription (the SDK's event receiver lives in the operation's output).
struct SdkEventStream {
    out: aws_sdk_kinesis::operation::subscribe_to_shard::SubscribeToShardOutput,
}

#[async_trait]
impl EventStream for SdkEventStream {
    async fn next_event(&mut self) -> Result<Option<ShardEvent>, FanOutError> {
        loop {
            let event = match self.out.event_stream.recv().await.map_err(classify)? {
                None => return Ok(None),
                Some(SubscribeToShardEventStream::SubscribeToShardEvent(event)) => event,
                // An event type newer than this SDK: nothing we can read in it.
                Some(_) => continue,
            };
            // The SDK turns a missing (null) continuation into "".
            let continuation = Some(event.continuation_sequence_number).filter(|c| !c.is_empty());
            return Ok(Some(ShardEvent {
                records: event.records.into_iter().map(read_record).collect(),
                continuation,
                millis_behind_latest: event.millis_behind_latest,
                child_shards: event
                    .child_shards
                    .unwrap_or_default()
                    .into_iter()
                    .map(child_shard)
                    .collect(),
            }));
        }
    }
}
