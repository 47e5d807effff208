//! The records that go into the aggregator and the one that comes out.

use bytes::Bytes;

use crate::error::Result;
use crate::hash_key::{HashKey, validate_partition_key};

/// A record as the application puts it: a partition key, an optional explicit hash key
/// and the data.
///
/// Built through [`UserRecord::new`], which validates the partition key, so an existing
/// `UserRecord` is always acceptable to Kinesis key-wise (the data size is the producer's
/// business: the stream's record size limit is configurable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    partition_key: String,
    explicit_hash_key: Option<HashKey>,
    data: Bytes,
}

impl UserRecord {
    /// A record routed by MD5(`partition_key`).
    ///
    /// Fails if the key is empty or longer than 256 characters.
    pub fn new(partition_key: impl Into<String>, data: impl Into<Bytes>) -> Result<Self> {
        let partition_key = partition_key.into();
        validate_partition_key(&partition_key)?;
        Ok(UserRecord {
            partition_key,
            explicit_hash_key: None,
            data: data.into(),
        })
    }

    /// Routes the record by `explicit_hash_key` instead of its partition key's MD5.
    pub fn with_explicit_hash_key(mut self, explicit_hash_key: HashKey) -> Self {
        self.explicit_hash_key = Some(explicit_hash_key);
        self
    }

    /// The partition key.
    pub fn partition_key(&self) -> &str {
        &self.partition_key
    }

    /// The explicit hash key, if the record has one.
    pub fn explicit_hash_key(&self) -> Option<HashKey> {
        self.explicit_hash_key
    }

    /// The data.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// The key that decides the record's shard: the explicit hash key, or
    /// MD5(partition key). Computes an MD5 each call when there is no explicit key.
    pub fn hash_key(&self) -> HashKey {
        self.explicit_hash_key
            .unwrap_or_else(|| HashKey::from_partition_key(&self.partition_key))
    }

    /// The parts: `(partition_key, explicit_hash_key, data)`.
    pub fn into_parts(self) -> (String, Option<HashKey>, Bytes) {
        (self.partition_key, self.explicit_hash_key, self.data)
    }
}

impl AsRef<UserRecord> for UserRecord {
    fn as_ref(&self) -> &UserRecord {
        self
    }
}

/// What an [`Aggregator`](crate::Aggregator) reads of a user record. Anything that holds a
/// [`UserRecord`] (`AsRef<UserRecord>`) is one; a producer can also keep its records in its
/// own form, say as views into one buffer shared by many records, and implement this.
pub trait AggregatedRecord {
    /// The partition key.
    fn partition_key(&self) -> &str;
    /// The explicit hash key, if the record has one.
    fn explicit_hash_key(&self) -> Option<HashKey>;
    /// The data.
    fn data(&self) -> &[u8];
    /// The data as [`Bytes`], for a record that goes out alone: a reference-counted clone
    /// or slice, not a copy.
    fn data_bytes(&self) -> Bytes;
    /// The key that decides the record's shard: the explicit hash key, or
    /// MD5(partition key).
    fn hash_key(&self) -> HashKey {
        self.explicit_hash_key()
            .unwrap_or_else(|| HashKey::from_partition_key(self.partition_key()))
    }
}

impl<T: AsRef<UserRecord>> AggregatedRecord for T {
    fn partition_key(&self) -> &str {
        self.as_ref().partition_key()
    }
    fn explicit_hash_key(&self) -> Option<HashKey> {
        self.as_ref().explicit_hash_key()
    }
    fn data(&self) -> &[u8] {
        self.as_ref().data()
    }
    fn data_bytes(&self) -> Bytes {
        self.as_ref().data().clone()
    }
}

/// One record as it goes to `PutRecord(s)`: what [`Aggregator::finish`] produces.
///
/// [`Aggregator::finish`]: crate::Aggregator::finish
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KinesisRecord {
    /// `PartitionKey`: the user record's key, or `"a"` for an aggregate (as the KPL sends).
    pub partition_key: String,
    /// `ExplicitHashKey`: the user record's own (if any), or for an aggregate the first
    /// user record's hash key, so that the aggregate lands on that record's shard.
    pub explicit_hash_key: Option<HashKey>,
    /// `Data`.
    pub data: Bytes,
}

impl KinesisRecord {
    /// The bytes Kinesis counts toward the record and request size limits (1 MiB per
    /// record by default, 5 MiB per `PutRecords`): data length plus the partition key's
    /// UTF-8 length. The explicit hash key does not count.
    pub fn billed_size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}
