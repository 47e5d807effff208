//! One error enum per concern: building, configuring, putting, and the final failure of a
//! put record.

use crate::record::{Attempt, Record};

/// `ProducerBuilder::build` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// No stream was given to the builder.
    #[error("no stream given: call ProducerBuilder::stream")]
    NoStream,
    /// The stream does not exist.
    #[error("stream {stream:?} not found")]
    StreamNotFound {
        /// The stream, as given.
        stream: String,
    },
    /// `ListShards` was refused for a reason retrying cannot fix (access denied, invalid
    /// argument...). Throttling and transient failures do not fail the build: the producer
    /// starts without a shard map (records go unaggregated) and keeps loading it.
    #[error("cannot list the shards of stream {stream:?}: {code}: {message}")]
    ListShards {
        /// The stream, as given.
        stream: String,
        /// The error code.
        code: String,
        /// The error message.
        message: String,
    },
    /// Two settings contradict each other, or one is out of range.
    #[error("invalid producer configuration: {0}")]
    InvalidConfig(String),
}

/// An environment variable given to `ProducerBuilder::from_env` could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The value is not what the variable takes.
    #[error("{name}={value:?}: expected {expected}")]
    Invalid {
        /// The variable.
        name: String,
        /// Its value.
        value: String,
        /// What it should look like.
        expected: &'static str,
    },
}

/// `put` or `try_put` refused the record at once. The record is handed back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PutError {
    /// The partition key is empty or longer than 256 characters.
    #[error("invalid partition key: {reason}")]
    InvalidPartitionKey {
        /// The record.
        record: Record,
        /// Why.
        reason: kinesis_aggregation::Error,
    },
    /// The explicit hash key is not a decimal integer in 0 ..= 2^128 − 1.
    #[error("invalid explicit hash key: {reason}")]
    InvalidExplicitHashKey {
        /// The record.
        record: Record,
        /// Why.
        reason: kinesis_aggregation::Error,
    },
    /// Data plus partition key exceed the maximum user record size.
    #[error("record of {size} bytes (data + partition key) exceeds the limit of {limit} bytes")]
    RecordTooLarge {
        /// The record.
        record: Record,
        /// Its size.
        size: usize,
        /// The configured maximum user record size.
        limit: usize,
    },
    /// `try_put` only: the buffer limits are reached.
    #[error("the producer's buffer is full")]
    Full {
        /// The record.
        record: Record,
    },
    /// The producer was closed.
    #[error("the producer is closed")]
    Closed {
        /// The record.
        record: Record,
    },
}

impl PutError {
    /// The record that was refused.
    pub fn record(&self) -> &Record {
        match self {
            PutError::InvalidPartitionKey { record, .. }
            | PutError::InvalidExplicitHashKey { record, .. }
            | PutError::RecordTooLarge { record, .. }
            | PutError::Full { record }
            | PutError::Closed { record } => record,
        }
    }

    /// The record that was refused.
    pub fn into_record(self) -> Record {
        match self {
            PutError::InvalidPartitionKey { record, .. }
            | PutError::InvalidExplicitHashKey { record, .. }
            | PutError::RecordTooLarge { record, .. }
            | PutError::Full { record }
            | PutError::Closed { record } => record,
        }
    }
}

/// A put record that did not make it. Every variant but `Lost` hands the record back with
/// every attempt made for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PutFailure {
    /// The record TTL passed (or the next retry would start after it). The KPL's "Expired"
    /// failure, but with the reasons: see the attempts.
    #[error("record expired after {} attempts{}", attempts.len(), last_error(attempts))]
    Expired {
        /// The record.
        record: Record,
        /// Every attempt.
        attempts: Vec<Attempt>,
    },
    /// The stream does not exist any more.
    #[error("stream {stream:?} not found")]
    StreamNotFound {
        /// The record.
        record: Record,
        /// Every attempt.
        attempts: Vec<Attempt>,
        /// The stream.
        stream: String,
    },
    /// Kinesis refused the record for a reason retrying cannot fix (access denied, KMS key
    /// disabled, invalid argument).
    #[error("rejected: {code}: {message}")]
    Rejected {
        /// The record.
        record: Record,
        /// Every attempt.
        attempts: Vec<Attempt>,
        /// The error code.
        code: String,
        /// The error message.
        message: String,
    },
    /// The producer stopped before the record could be sent (only when its task was
    /// cancelled, e.g. by a runtime shutdown; `close` sends everything first).
    #[error("the producer stopped before the record was sent")]
    Closed {
        /// The record.
        record: Record,
        /// Every attempt.
        attempts: Vec<Attempt>,
    },
    /// The producer's task ended without reporting (the runtime shut down while the record
    /// was in flight): the record may or may not be in the stream.
    #[error("the producer's task ended before the record's outcome was known")]
    Lost,
    /// [`Producer::put_batch`](crate::Producer::put_batch) only: the record was refused at
    /// once, as [`Producer::put`](crate::Producer::put) would have refused it (invalid, or
    /// the producer closed). It was never buffered, and no attempt was made.
    #[error("refused: {error}")]
    Refused {
        /// Why, with the record.
        error: PutError,
    },
}

fn last_error(attempts: &[Attempt]) -> String {
    attempts
        .iter()
        .rev()
        .find_map(|a| a.error())
        .map(|e| format!("; last error {}: {}", e.code(), e.message()))
        .unwrap_or_default()
}

impl PutFailure {
    /// The record, unless it was lost.
    pub fn record(&self) -> Option<&Record> {
        match self {
            PutFailure::Expired { record, .. }
            | PutFailure::StreamNotFound { record, .. }
            | PutFailure::Rejected { record, .. }
            | PutFailure::Closed { record, .. } => Some(record),
            PutFailure::Refused { error } => Some(error.record()),
            PutFailure::Lost => None,
        }
    }

    /// Takes the record back, unless it was lost.
    pub fn into_record(self) -> Option<Record> {
        match self {
            PutFailure::Expired { record, .. }
            | PutFailure::StreamNotFound { record, .. }
            | PutFailure::Rejected { record, .. }
            | PutFailure::Closed { record, .. } => Some(record),
            PutFailure::Refused { error } => Some(error.into_record()),
            PutFailure::Lost => None,
        }
    }

    /// Every attempt made.
    pub fn attempts(&self) -> &[Attempt] {
        match self {
            PutFailure::Expired { attempts, .. }
            | PutFailure::StreamNotFound { attempts, .. }
            | PutFailure::Rejected { attempts, .. }
            | PutFailure::Closed { attempts, .. } => attempts,
            PutFailure::Refused { .. } | PutFailure::Lost => &[],
        }
    }
}
