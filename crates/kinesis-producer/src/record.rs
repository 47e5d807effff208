//! What goes in (`Record`) and what comes out (`PutOutcome`, `Attempt`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

/// A record to put: partition key, optional explicit hash key, data.
///
/// Nothing is checked here; [`Producer::put`](crate::Producer::put) validates and returns a
/// typed [`PutError`](crate::PutError) at once (with the record) if Kinesis would refuse it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub(crate) partition_key: String,
    pub(crate) explicit_hash_key: Option<String>,
    pub(crate) data: Bytes,
}

impl Record {
    /// A record routed by MD5(`partition_key`).
    pub fn new(partition_key: impl Into<String>, data: impl Into<Bytes>) -> Self {
        Record {
            partition_key: partition_key.into(),
            explicit_hash_key: None,
            data: data.into(),
        }
    }

    /// Routes the record by an explicit hash key: the decimal form of a 128-bit integer.
    pub fn with_explicit_hash_key(mut self, explicit_hash_key: impl Into<String>) -> Self {
        self.explicit_hash_key = Some(explicit_hash_key.into());
        self
    }

    /// The partition key.
    pub fn partition_key(&self) -> &str {
        &self.partition_key
    }

    /// The explicit hash key, if any.
    pub fn explicit_hash_key(&self) -> Option<&str> {
        self.explicit_hash_key.as_deref()
    }

    /// The data.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// `(partition_key, explicit_hash_key, data)`.
    pub fn into_parts(self) -> (String, Option<String>, Bytes) {
        (self.partition_key, self.explicit_hash_key, self.data)
    }
}

/// One `PutRecords` attempt that carried the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub(crate) started: std::time::Instant,
    pub(crate) delay: Duration,
    pub(crate) duration: Duration,
    pub(crate) error: Option<AttemptError>,
}

impl Attempt {
    /// When the request was sent.
    pub fn started(&self) -> std::time::Instant {
        self.started
    }

    /// Time from the put (first attempt) or from the previous attempt's end (retries) to
    /// this attempt's start: buffering, rate limiting and backoff.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// How long the request took.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// Why the attempt failed for this record; `None` if it succeeded.
    pub fn error(&self) -> Option<&AttemptError> {
        self.error.as_ref()
    }

    /// Whether the attempt succeeded.
    pub fn is_success(&self) -> bool {
        self.error.is_none()
    }
}

/// Why an attempt failed: the Kinesis error code and message, or one of the producer's own
/// codes (`Timeout`, `DispatchFailure`, `WrongShard`, `ResultCountMismatch`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptError {
    pub(crate) code: Arc<str>,
    pub(crate) message: Arc<str>,
}

impl AttemptError {
    /// The error code, e.g. `ProvisionedThroughputExceededException`.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The error message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Where a record went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    pub(crate) landing: Arc<Landing>,
    pub(crate) sub_sequence_number: u64,
    pub(crate) attempts: Attempts,
}

/// What every user record of one Kinesis record shares once it is in the stream, with the
/// request that put it there: allocated once per Kinesis record (one per few hundred user
/// records when aggregating), so that an outcome costs one reference count, not two strings.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Landing {
    pub(crate) shard_id: Arc<str>,
    pub(crate) sequence_number: Arc<str>,
    pub(crate) aggregated: bool,
    /// The successful request's start and duration.
    pub(crate) started: std::time::Instant,
    pub(crate) duration: Duration,
}

impl PutOutcome {
    /// The outcome of a record whose only attempt succeeded, `delay` after it was put.
    pub(crate) fn first_try(landing: Arc<Landing>, sub: u32, delay: Duration) -> PutOutcome {
        let attempt = Attempt {
            started: landing.started,
            delay,
            duration: landing.duration,
            error: None,
        };
        PutOutcome {
            landing,
            sub_sequence_number: u64::from(sub),
            attempts: Attempts::One(attempt),
        }
    }
}

/// A record's attempt history. Almost every record succeeds at its first attempt: that one
/// is kept inline, so that a success costs no allocation; retried records carry a vector.
#[derive(Clone)]
pub(crate) enum Attempts {
    One(Attempt),
    Many(Vec<Attempt>),
}

impl Attempts {
    pub(crate) fn as_slice(&self) -> &[Attempt] {
        match self {
            Attempts::One(a) => std::slice::from_ref(a),
            Attempts::Many(v) => v,
        }
    }
}

impl std::fmt::Debug for Attempts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_slice().fmt(f)
    }
}

impl PartialEq for Attempts {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for Attempts {}

impl PutOutcome {
    /// The shard that holds the record.
    pub fn shard_id(&self) -> &str {
        &self.landing.shard_id
    }

    /// The sequence number of the Kinesis record that carries it (shared by every user record
    /// of an aggregate).
    pub fn sequence_number(&self) -> &str {
        &self.landing.sequence_number
    }

    /// The record's position inside the aggregate (0 when it went alone): with the sequence
    /// number, what a KCL consumer checkpoints.
    pub fn sub_sequence_number(&self) -> u64 {
        self.sub_sequence_number
    }

    /// Whether the record went inside an aggregate.
    pub fn is_aggregated(&self) -> bool {
        self.landing.aggregated
    }

    /// Every attempt, the last one successful.
    pub fn attempts(&self) -> &[Attempt] {
        self.attempts.as_slice()
    }
}
