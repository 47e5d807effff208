//! Positions in a shard: what a checkpoint records and where a consumer resumes.
//!
//! The KCL calls this an *extended sequence number*: a Kinesis sequence number plus the
//! sub-sequence number of a user record inside a KPL aggregate, or one of the sentinels
//! `TRIM_HORIZON`, `LATEST`, `AT_TIMESTAMP` and `SHARD_END`. The lease table stores it in two
//! attributes, `checkpoint` (S) and `checkpointSubSequenceNumber` (N); [`Position::to_attributes`]
//! and [`Position::from_attributes`] convert exactly as the Java KCL does, so either can read
//! what the other wrote.
//!
//! Order (the KCL's): `AT_TIMESTAMP` < `TRIM_HORIZON` < `LATEST` < every real sequence number
//! (as unbounded integers, then by sub-sequence number) < `SHARD_END`.

use std::cmp::Ordering;
use std::fmt;

/// A position in a shard. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Position {
    /// Before the oldest record still in the shard.
    TrimHorizon,
    /// After the newest record at the time the shard was first read.
    Latest,
    /// At a point in time (the time itself is configuration, not part of the checkpoint).
    AtTimestamp,
    /// A user record: the Kinesis record's sequence number and the index inside its
    /// aggregate (0 for a record that was not aggregated).
    Sequence(SequenceNumber),
    /// The shard is closed and every record in it was processed.
    ShardEnd,
}

/// A Kinesis sequence number with a sub-sequence number: the position of one user record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SequenceNumber {
    /// The Kinesis sequence number: a decimal integer of up to 128 digits. Kept as text,
    /// validated to be digits without leading zeros so that ordering by (length, text) is
    /// numeric ordering.
    sequence: String,
    /// Index of the user record inside its aggregate.
    sub_sequence: u64,
}

/// A sequence number that is not a decimal integer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a Kinesis sequence number (a decimal integer)")]
pub struct InvalidSequenceNumber(pub String);

impl SequenceNumber {
    /// The position of sub-record `sub_sequence` of the Kinesis record `sequence`.
    pub fn new(sequence: &str, sub_sequence: u64) -> Result<Self, InvalidSequenceNumber> {
        let digits = sequence.trim_start_matches('0');
        let digits = if digits.is_empty() && !sequence.is_empty() {
            "0"
        } else {
            digits
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidSequenceNumber(sequence.to_owned()));
        }
        Ok(SequenceNumber {
            sequence: digits.to_owned(),
            sub_sequence,
        })
    }

    /// The Kinesis sequence number.
    pub fn sequence(&self) -> &str {
        &self.sequence
    }

    /// The sub-sequence number.
    pub fn sub_sequence(&self) -> u64 {
        self.sub_sequence
    }
}

impl Ord for SequenceNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        // Digits without leading zeros: a longer number is larger; equal lengths compare
        // as text. Then the position inside the aggregate.
        self.sequence
            .len()
            .cmp(&other.sequence.len())
            .then_with(|| self.sequence.cmp(&other.sequence))
            .then_with(|| self.sub_sequence.cmp(&other.sub_sequence))
    }
}

impl PartialOrd for SequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.sequence, self.sub_sequence)
    }
}

/// Sentinel strings as the KCL writes them into `checkpoint`.
const TRIM_HORIZON: &str = "TRIM_HORIZON";
const LATEST: &str = "LATEST";
const AT_TIMESTAMP: &str = "AT_TIMESTAMP";
const SHARD_END: &str = "SHARD_END";

impl Position {
    /// A user record's position.
    pub fn sequence(sequence: &str, sub_sequence: u64) -> Result<Self, InvalidSequenceNumber> {
        SequenceNumber::new(sequence, sub_sequence).map(Position::Sequence)
    }

    /// The KCL's numeric rank of the sentinels; real sequence numbers rank between
    /// `LATEST` and `SHARD_END`.
    fn rank(&self) -> i8 {
        match self {
            Position::AtTimestamp => -3,
            Position::TrimHorizon => -2,
            Position::Latest => -1,
            Position::Sequence(_) => 0,
            Position::ShardEnd => 1,
        }
    }

    /// Whether this is a real record position rather than a sentinel.
    pub fn as_sequence(&self) -> Option<&SequenceNumber> {
        match self {
            Position::Sequence(s) => Some(s),
            _ => None,
        }
    }

    /// The lease table's `(checkpoint, checkpointSubSequenceNumber)` for this position. The
    /// KCL writes sub-sequence 0 for sentinels.
    pub fn to_attributes(&self) -> (String, u64) {
        match self {
            Position::TrimHorizon => (TRIM_HORIZON.to_owned(), 0),
            Position::Latest => (LATEST.to_owned(), 0),
            Position::AtTimestamp => (AT_TIMESTAMP.to_owned(), 0),
            Position::ShardEnd => (SHARD_END.to_owned(), 0),
            Position::Sequence(s) => (s.sequence.clone(), s.sub_sequence),
        }
    }

    /// Reads `checkpoint` and `checkpointSubSequenceNumber` (absent reads as 0, as in the
    /// KCL).
    pub fn from_attributes(
        checkpoint: &str,
        sub_sequence: Option<u64>,
    ) -> Result<Self, InvalidSequenceNumber> {
        Ok(match checkpoint {
            TRIM_HORIZON => Position::TrimHorizon,
            LATEST => Position::Latest,
            AT_TIMESTAMP => Position::AtTimestamp,
            SHARD_END => Position::ShardEnd,
            other => Position::sequence(other, sub_sequence.unwrap_or(0))?,
        })
    }
}

impl Ord for Position {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Position::Sequence(a), Position::Sequence(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for Position {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Sequence(s) => s.fmt(f),
            sentinel => f.write_str(&sentinel.to_attributes().0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seq(s: &str, sub: u64) -> Position {
        Position::sequence(s, sub).unwrap()
    }

    #[test]
    fn order_follows_the_kcl() {
        let ordered = [
            Position::AtTimestamp,
            Position::TrimHorizon,
            Position::Latest,
            seq("9", 0),
            seq("10", 0),
            seq("10", 1),
            seq(
                "49590338271490256608559692538361571095921575989136588898",
                0,
            ),
            seq(
                "49590338271490256608559692538361571095921575989136588899",
                7,
            ),
            Position::ShardEnd,
        ];
        for pair in ordered.windows(2) {
            assert!(pair[0] < pair[1], "{} < {}", pair[0], pair[1]);
        }
    }

    #[test]
    fn attributes_round_trip_like_the_kcl_writes_them() {
        for (text, sub, position) in [
            ("TRIM_HORIZON", Some(0), Position::TrimHorizon),
            ("LATEST", None, Position::Latest),
            ("AT_TIMESTAMP", Some(0), Position::AtTimestamp),
            ("SHARD_END", Some(0), Position::ShardEnd),
            ("4959033827", Some(3), seq("4959033827", 3)),
            ("4959033827", None, seq("4959033827", 0)),
        ] {
            let read = Position::from_attributes(text, sub).unwrap();
            assert_eq!(read, position);
            assert_eq!(read.to_attributes().0, text);
        }
    }

    #[test]
    fn rejects_what_is_not_a_sequence_number() {
        for bad in ["", "-1", "12a", "1.5", " 1", "SHARD_END_"] {
            assert!(Position::from_attributes(bad, None).is_err(), "{bad:?}");
        }
        // Leading zeros are the same number.
        assert_eq!(seq("007", 1), seq("7", 1));
        assert_eq!(seq("000", 0), seq("0", 0));
    }

    proptest! {
        #[test]
        fn sequence_order_is_numeric(a in any::<u128>(), b in any::<u128>(), x in 0u64..5, y in 0u64..5) {
            let (pa, pb) = (seq(&a.to_string(), x), seq(&b.to_string(), y));
            prop_assert_eq!(pa.cmp(&pb), (a, x).cmp(&(b, y)));
        }
    }
}
