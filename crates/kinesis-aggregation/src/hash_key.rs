//! 128-bit hash keys: how Kinesis maps a record to a shard.

use std::fmt;
use std::str::FromStr;

use md5::{Digest, Md5};

use crate::error::{Error, HashKeyErrorReason, Result};
use crate::md5_batch;

/// The most Unicode characters Kinesis accepts in a partition key.
pub const MAX_PARTITION_KEY_CHARS: usize = 256;

/// A position in the 128-bit hash-key space that Kinesis divides among shards.
///
/// A record's hash key is its explicit hash key if it has one, otherwise
/// MD5(partition key) read as a big-endian unsigned integer. On the wire (the
/// `ExplicitHashKey` request field and the aggregate's key table) it is a decimal string;
/// [`FromStr`] and [`Display`](fmt::Display) convert. Every `u128` is a valid hash key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HashKey(pub u128);

impl HashKey {
    /// The smallest hash key, 0.
    pub const MIN: HashKey = HashKey(0);
    /// The largest hash key, 2^128 − 1.
    pub const MAX: HashKey = HashKey(u128::MAX);

    /// MD5 of the key's UTF-8 bytes, read as a big-endian integer: the hash key Kinesis
    /// (and the KPL's shard prediction) gives a record without an explicit hash key.
    pub fn from_partition_key(partition_key: &str) -> HashKey {
        let digest: [u8; 16] = Md5::digest(partition_key.as_bytes()).into();
        HashKey(u128::from_be_bytes(digest))
    }

    /// [`from_partition_key`](Self::from_partition_key) of every key, in order.
    ///
    /// Same results, cheaper per key: on x86-64 CPUs with AVX2 (detected at run time),
    /// keys of at most 55 bytes — one MD5 block, which covers typical partition keys — are
    /// hashed eight at a time in SIMD lanes. Longer keys, and every key elsewhere, take the
    /// scalar path. Cheaper from two keys on (one key alone: use `from_partition_key`); see
    /// [`extend_from_partition_keys`](Self::extend_from_partition_keys) to reuse the
    /// output vector or hash keys that are not gathered in a slice.
    ///
    /// ```
    /// use kinesis_aggregation::HashKey;
    ///
    /// let keys = ["user-1", "user-2", "user-3"];
    /// let hashes = HashKey::from_partition_keys(&keys);
    /// assert_eq!(hashes[1], HashKey::from_partition_key("user-2"));
    /// ```
    pub fn from_partition_keys(partition_keys: &[&str]) -> Vec<HashKey> {
        let mut out = Vec::with_capacity(partition_keys.len());
        Self::extend_from_partition_keys(partition_keys.iter().copied(), &mut out);
        out
    }

    /// Appends [`from_partition_key`](Self::from_partition_key) of every key to `out`, in
    /// order: the batch hash of [`from_partition_keys`](Self::from_partition_keys) for any
    /// iterator of keys (say, the partition keys of the records without an explicit hash
    /// key), into a vector the caller may reuse from one batch to the next.
    pub fn extend_from_partition_keys<'a>(
        partition_keys: impl IntoIterator<Item = &'a str>,
        out: &mut Vec<HashKey>,
    ) {
        md5_batch::extend(md5_batch::Backend::detect(), partition_keys, out);
    }

    /// Length of the decimal form, without formatting it (the aggregator sizes the
    /// explicit-hash-key table with this).
    pub(crate) fn decimal_len(self) -> usize {
        self.0.checked_ilog10().map_or(1, |d| d as usize + 1)
    }
}

impl FromStr for HashKey {
    type Err = Error;

    /// Parses the decimal form: ASCII digits only (leading zeros allowed, as Kinesis
    /// allows them), no sign, no whitespace, at most 2^128 − 1.
    fn from_str(s: &str) -> Result<HashKey> {
        let reject = |reason| Error::InvalidHashKey {
            value: truncate_for_error(s),
            reason,
        };
        if s.is_empty() {
            return Err(reject(HashKeyErrorReason::Empty));
        }
        let mut value: u128 = 0;
        for &b in s.as_bytes() {
            let digit = b.wrapping_sub(b'0');
            if digit > 9 {
                return Err(reject(HashKeyErrorReason::NotDecimal));
            }
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(u128::from(digit)))
                .ok_or_else(|| {
                    // Report "not decimal" over "too large" when both apply.
                    if s.bytes().all(|b| b.is_ascii_digit()) {
                        reject(HashKeyErrorReason::OutOfRange)
                    } else {
                        reject(HashKeyErrorReason::NotDecimal)
                    }
                })?;
        }
        Ok(HashKey(value))
    }
}

impl fmt::Display for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<u128> for HashKey {
    fn from(value: u128) -> Self {
        HashKey(value)
    }
}

impl From<HashKey> for u128 {
    fn from(key: HashKey) -> Self {
        key.0
    }
}

/// An inclusive range of hash keys: a shard's `HashKeyRange` as `ListShards` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HashKeyRange {
    /// `StartingHashKey`, inclusive.
    pub start: HashKey,
    /// `EndingHashKey`, inclusive.
    pub end: HashKey,
}

impl HashKeyRange {
    /// The range `start ..= end`.
    pub const fn new(start: HashKey, end: HashKey) -> Self {
        HashKeyRange { start, end }
    }

    /// The whole key space, as owned by a stream's only shard.
    pub const FULL: HashKeyRange = HashKeyRange::new(HashKey::MIN, HashKey::MAX);

    /// Whether `key` lies in the range (both ends included).
    pub fn contains(&self, key: HashKey) -> bool {
        self.start <= key && key <= self.end
    }
}

/// Checks Kinesis' rule for partition keys: 1 to 256 Unicode characters (counted as
/// `char`s, not bytes: a 256-character key of 4-byte characters is 1024 bytes and valid).
pub fn validate_partition_key(partition_key: &str) -> Result<()> {
    if partition_key.is_empty() {
        return Err(Error::EmptyPartitionKey);
    }
    // Up to 256 bytes there are at most 256 chars: skip the count for the common case.
    if partition_key.len() > MAX_PARTITION_KEY_CHARS {
        let chars = partition_key.chars().count();
        if chars > MAX_PARTITION_KEY_CHARS {
            return Err(Error::PartitionKeyTooLong { chars });
        }
    }
    Ok(())
}

fn truncate_for_error(s: &str) -> String {
    const LIMIT: usize = 64;
    if s.len() <= LIMIT {
        return s.to_owned();
    }
    let mut end = LIMIT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_full_range() {
        assert_eq!("0".parse::<HashKey>().unwrap(), HashKey(0));
        assert_eq!("007".parse::<HashKey>().unwrap(), HashKey(7));
        let max = u128::MAX.to_string();
        assert_eq!(max, "340282366920938463463374607431768211455");
        assert_eq!(max.parse::<HashKey>().unwrap(), HashKey::MAX);
        assert_eq!(HashKey::MAX.to_string(), max);
    }

    #[test]
    fn rejects_bad_text_with_a_reason() {
        let reason = |s: &str| match s.parse::<HashKey>() {
            Err(Error::InvalidHashKey { reason, .. }) => reason,
            other => panic!("{s:?} gave {other:?}"),
        };
        assert_eq!(reason(""), HashKeyErrorReason::Empty);
        assert_eq!(reason("+1"), HashKeyErrorReason::NotDecimal);
        assert_eq!(reason("-1"), HashKeyErrorReason::NotDecimal);
        assert_eq!(reason(" 1"), HashKeyErrorReason::NotDecimal);
        assert_eq!(reason("1 "), HashKeyErrorReason::NotDecimal);
        assert_eq!(reason("1_000"), HashKeyErrorReason::NotDecimal);
        assert_eq!(reason("١٢"), HashKeyErrorReason::NotDecimal); // Arabic-Indic digits
        assert_eq!(
            reason("340282366920938463463374607431768211456"),
            HashKeyErrorReason::OutOfRange
        );
        assert_eq!(reason(&"9".repeat(100)), HashKeyErrorReason::OutOfRange);
        assert_eq!(
            reason(&format!("{}x", "9".repeat(100))),
            HashKeyErrorReason::NotDecimal
        );
    }

    #[test]
    fn error_text_is_bounded() {
        let long = "é".repeat(1000);
        let Err(Error::InvalidHashKey { value, .. }) = long.parse::<HashKey>() else {
            panic!()
        };
        assert!(value.len() <= 64 + "…".len());
    }

    #[test]
    fn md5_hash_key_matches_known_values() {
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e; MD5("a") = 0cc175b9c0f1b6a831c399e269772661.
        assert_eq!(
            HashKey::from_partition_key("").0,
            0xd41d8cd98f00b204e9800998ecf8427e
        );
        assert_eq!(
            HashKey::from_partition_key("a").0,
            0x0cc175b9c0f1b6a831c399e269772661
        );
    }

    #[test]
    fn decimal_len_matches_display() {
        for v in [
            0u128,
            1,
            9,
            10,
            99,
            100,
            u64::MAX as u128,
            u128::MAX / 10,
            u128::MAX,
        ] {
            assert_eq!(HashKey(v).decimal_len(), v.to_string().len(), "{v}");
        }
        for p in 0..39 {
            let v = 10u128.pow(p);
            assert_eq!(HashKey(v).decimal_len(), v.to_string().len());
            assert_eq!(HashKey(v - 1).decimal_len(), (v - 1).to_string().len());
        }
    }

    #[test]
    fn partition_key_length_counts_chars() {
        assert_eq!(validate_partition_key(""), Err(Error::EmptyPartitionKey));
        assert!(validate_partition_key("k").is_ok());
        assert!(validate_partition_key(&"x".repeat(256)).is_ok());
        assert!(validate_partition_key(&"😀".repeat(256)).is_ok()); // 1024 bytes
        assert_eq!(
            validate_partition_key(&"x".repeat(257)),
            Err(Error::PartitionKeyTooLong { chars: 257 })
        );
        assert_eq!(
            validate_partition_key(&"é".repeat(257)),
            Err(Error::PartitionKeyTooLong { chars: 257 })
        );
    }

    #[test]
    fn range_is_inclusive() {
        let r = HashKeyRange::new(HashKey(10), HashKey(20));
        assert!(!r.contains(HashKey(9)));
        assert!(r.contains(HashKey(10)));
        assert!(r.contains(HashKey(20)));
        assert!(!r.contains(HashKey(21)));
        assert!(HashKeyRange::FULL.contains(HashKey::MAX));
    }
}
