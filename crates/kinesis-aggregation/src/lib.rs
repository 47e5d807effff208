//! The KPL aggregated-record format: many user records in one Kinesis record.
//!
//! Kinesis bills and throttles per record (1000 records/s per shard) as well as per byte;
//! packing small user records into one Kinesis record lifts the record-count ceiling. The
//! Kinesis Producer Library (KPL) defined the format and the Kinesis Client Library (KCL)
//! reads it; this crate is byte-compatible with both and with `aws-kinesis-agg`.
//!
//! ```text
//!   ┌──────────────┬────────────────────────────────┬────────────────────────┐
//!   │ F3 89 9A C2  │ protobuf AggregatedRecord      │ MD5(protobuf), 16 bytes│
//!   └──────────────┴────────────────────────────────┴────────────────────────┘
//!     AggregatedRecord { partition_key_table: [string], explicit_hash_key_table: [string],
//!                        records: [Record { partition_key_index, explicit_hash_key_index?,
//!                                           data, tags }] }
//! ```
//!
//! Keys are de-duplicated into the two tables and records refer to them by index.
//! Explicit hash keys are decimal strings of 128-bit integers.
//!
//! # Data flow
//!
//! ```text
//!  producer                                              consumer
//!  UserRecord ─► Aggregator (one per shard) ─► KinesisRecord ══ Kinesis ══► ReceivedRecord
//!                try_push / Full(r) / finish      "a" + EHK of first             │
//!                                                                     deaggregate(_in_range)
//!                                                                                ▼
//!                                                           DeaggregatedRecord × n (seq, sub-seq)
//! ```
//!
//! - [`Aggregator`] packs user records bound for one shard until the next one would
//!   overflow the limits ([`Full`] hands it back), tracking the exact encoded size.
//!   [`Aggregator::finish`] yields the [`KinesisRecord`] to put, exactly as the KPL would
//!   send it: one user record goes out as is; several go out as an aggregate under
//!   partition key `"a"` with the first user record's hash key as explicit hash key, so the
//!   aggregate lands on that record's shard.
//! - [`deaggregate()`] turns a [`ReceivedRecord`] back into user records, zero-copy. Anything
//!   that is not a well-formed aggregate is returned as one plain record, never an error.
//!   [`deaggregate_in_range`] also leaves out sub-records that do not belong to the shard
//!   (see [below](#filtering-by-the-shards-hash-key-range) how and why this differs from
//!   the KCL).
//! - [`HashKey`] is the 128-bit key that picks the shard: explicit, or MD5(partition key);
//!   [`HashKey::from_partition_keys`] hashes a batch of keys, eight at a time with AVX2.
//!
//! ```
//! use kinesis_aggregation::{Aggregator, ReceivedRecord, UserRecord, deaggregate};
//!
//! let mut aggregator = Aggregator::default(); // KPL limits: 51200 bytes
//! let mut to_send = Vec::new();
//! for i in 0..1000u32 {
//!     let record = UserRecord::new(format!("user-{i}"), i.to_be_bytes().to_vec())?;
//!     if let Err(full) = aggregator.try_push(record) {
//!         // Full: send what we have, start the next aggregate with the returned record.
//!         to_send.extend(aggregator.finish());
//!         aggregator.try_push(full.into_inner()).expect("an empty aggregator accepts one");
//!     }
//! }
//! to_send.extend(aggregator.finish());
//! let put = &to_send[0].record; // PartitionKey "a", ExplicitHashKey, Data
//! assert_eq!(put.partition_key, "a");
//!
//! // The consumer side: sequence number and data as read from the shard.
//! let read = ReceivedRecord::new("49590338271490256608559692538361571095921575989136588898",
//!                                put.partition_key.clone(), put.data.clone());
//! let users = deaggregate(read);
//! assert_eq!(users.len(), to_send[0].user_records.len());
//! assert_eq!(users[1].partition_key, "user-1");
//! assert_eq!(users[1].sub_sequence_number, 1);
//! # Ok::<(), kinesis_aggregation::Error>(())
//! ```
//!
//! # Deaggregation
//!
//! Deaggregation never fails: a record that is not a well-formed aggregate is the
//! application's own data (a non-KPL producer may well write bytes that start with the
//! magic), so it is delivered unchanged, as the KCL does. An aggregate with zero records
//! is also delivered unchanged, so that every received record yields at least one record
//! and nothing disappears without a trace.
//!
//! # Filtering by the shard's hash-key range
//!
//! Kinesis routes an aggregate by its own explicit hash key (the first sub-record's) and
//! never looks inside. A sub-record whose hash key lies outside the range of the shard the
//! aggregate landed on means the producer built the aggregate from a stale shard map (the
//! shard was split or merged meanwhile), or aggregated across shards.
//!
//! [`deaggregate_in_range`] keeps the sub-records whose hash key is in the shard's range,
//! with their original sub-sequence numbers, and drops (and counts) the others. This
//! deliberately differs from the KCL 2.x, which drops the **whole** aggregate as soon as
//! one sub-record is out of range. The reason is what the producer does next. The KPL's
//! retrier, on a `PutRecords` success that landed on another shard than predicted, decides
//! **per user record**: one whose hash key is inside the actual shard's range is reported
//! as delivered; only the others are retried (re-predicted and re-aggregated). So:
//!
//! | producer                                   | drop whole aggregate (KCL)   | keep in-range (us)        |
//! |--------------------------------------------|------------------------------|---------------------------|
//! | KPL (per-record wrong-shard check)         | **loses** in-range records   | each record exactly once  |
//! | older KPL / producer re-sending everything | each record exactly once     | in-range ones twice       |
//! | aggregation across shards, no re-send      | loses all                    | loses out-of-range ones   |
//!
//! Duplicates are within the at-least-once contract consumers already handle; losing
//! records a producer reported as delivered is not. Producers that aggregate across shards
//! without re-sending (a single `aws-kinesis-agg` aggregator on a multi-shard stream) need
//! [`deaggregate()`], which never filters. Plain (non-aggregated) records are never filtered:
//! Kinesis routed each by its own key. The `kinesis-rs` producer should apply the same
//! per-record rule as the KPL on a wrong-shard result, which makes this filter exact.
//!
//! Pure: no I/O, no async, no global state (beyond the standard library's cached CPU
//! feature detection).

#![warn(missing_docs)]

mod aggregator;
mod deaggregate;
mod error;
mod hash_key;
#[cfg(feature = "lambda")]
pub mod lambda;
mod md5_batch;
mod proto;
mod record;

pub use aggregator::{
    AGGREGATE_PARTITION_KEY, Aggregator, AggregatorConfig, Finished, Full, Unsealed, seal_all,
};
pub use deaggregate::{
    DeaggregatedRecord, Filtered, ReceivedRecord, deaggregate, deaggregate_in_range,
};
pub use error::{Error, HashKeyErrorReason, Result};
pub use hash_key::{HashKey, HashKeyRange, MAX_PARTITION_KEY_CHARS, validate_partition_key};
pub use record::{AggregatedRecord, KinesisRecord, UserRecord};

/// The four bytes that open every aggregate.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// Length of the MD5 digest that closes every aggregate.
const MD5_LEN: usize = 16;
