//! The crate's one error type.

/// Why a value was rejected.
///
/// Only constructors fail: once a [`UserRecord`](crate::UserRecord) or a
/// [`HashKey`](crate::HashKey) exists it is valid, so encoding never fails and decoding
/// never fails either (anything undecodable is passed through as a plain record).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Kinesis rejects an empty partition key.
    #[error("the partition key is empty; Kinesis requires 1 to 256 characters")]
    EmptyPartitionKey,

    /// Kinesis rejects partition keys longer than 256 Unicode characters.
    #[error("the partition key has {chars} characters; Kinesis allows at most 256")]
    PartitionKeyTooLong {
        /// Length of the rejected key, in Unicode scalar values.
        chars: usize,
    },

    /// An explicit hash key must be the decimal form of an integer in 0 ..= 2^128 − 1.
    #[error("invalid explicit hash key {value:?}: {reason}")]
    InvalidHashKey {
        /// The rejected text (truncated to 64 bytes so a hostile input cannot bloat logs).
        value: String,
        /// What is wrong with it.
        reason: HashKeyErrorReason,
    },
}

/// What is wrong with a rejected explicit hash key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HashKeyErrorReason {
    /// The text is empty.
    #[error("it is empty")]
    Empty,
    /// The text holds something other than the ASCII digits 0-9 (a sign, a space, …).
    #[error("it contains a character other than the digits 0-9")]
    NotDecimal,
    /// The number is larger than 2^128 − 1.
    #[error("it is larger than 2^128 - 1")]
    OutOfRange,
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
