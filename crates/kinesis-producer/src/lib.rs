//! A KPL-class producer for Amazon Kinesis Data Streams, native and async.
//!
//! # Data flow
//!
//! ```text
//!  put(Record) ─────────┐
//!  put_batch(records) ──┴ validate ─ permits (bytes, records): the backpressure ─► engine task
//!                                                                              │
//!     ┌────────────────────────────────────────────────────────────────────────┘
//!     ▼
//!  shard map (ListShards) ─► predicted shard ─► per-shard Aggregator ─► per-shard limiter
//!                                               (linger ≤ max buffered   (records/s, bytes/s
//!                                                time, or until full)     × rate %, AIMD)
//!                                                                              │
//!  PutHandle ◄─ outcome ◄─ retrier ◄─ PutRecords (≤ max in flight) ◄─ collector (≤ 500 / 5 MiB)
//!  PutBatchHandle ◄┘ (shard, sequence, sub-sequence, attempts)  or  PutFailure (record handed back)
//! ```
//!
//! ```no_run
//! # async fn demo(client: aws_sdk_kinesis::Client) -> Result<(), Box<dyn std::error::Error>> {
//! use kinesis_producer::{Producer, Record};
//!
//! let producer = Producer::builder(client).stream("orders").build().await?;
//! let handle = producer.put(Record::new("customer-42", &b"{\"total\": 12}"[..])).await?;
//! let outcome = handle.await?;
//! println!("{} {} {}", outcome.shard_id(), outcome.sequence_number(), outcome.sub_sequence_number());
//! producer.close().await;
//! # Ok(()) }
//! ```
//!
//! # What it does, and what the KPL did not
//!
//! - **Backpressure.** At most [`max_buffered_bytes`](ProducerBuilder::max_buffered_bytes)
//!   and [`max_buffered_records`](ProducerBuilder::max_buffered_records) are held, in flight
//!   and retries included; [`Producer::put`] waits for space, [`Producer::try_put`] says
//!   [`PutError::Full`]. Memory stays bounded whatever the load.
//! - **Batches.** [`Producer::put_batch`] takes many records with one call and gives one
//!   handle for all their outcomes: the same pipeline, at a lower CPU cost per record than
//!   a `put` each (no channel per record; space reserved and records handed over by chunks).
//! - **Aggregation per predicted shard**, so that no aggregate spans shards (the KCL drops
//!   those). While the shard map is unknown, records go alone.
//! - **Rate limiting with feedback.** Token buckets per shard at `rate_limit` % of the shard
//!   limits, letting out at most 0.2 s of tokens at once; `ProvisionedThroughputExceeded`
//!   cuts the shard's rate by 10 % (at most once per second, Kinesis' limit window), and
//!   unthrottled sending adds 5 % of the configured rate back per second, a tenth of that
//!   near the rate at which the shard last throttled (it probes there, rather than
//!   overshooting it). A request that the limiter keeps from filling waits up to 25 ms for
//!   more tokens instead of going with one or two records.
//! - **Classified retries.** Throttling and transient errors (5xx, timeouts, connection
//!   failures, `InternalFailure`) are retried with exponential backoff and jitter, only for
//!   the failed entries of a request, re-predicted and re-aggregated. Permanent errors
//!   (access denied, KMS key disabled, invalid argument) fail at once with
//!   [`PutFailure::Rejected`]; a deleted stream fails with [`PutFailure::StreamNotFound`]. A
//!   retry that would start after the record's TTL fails it now with
//!   [`PutFailure::Expired`], listing every attempt. A producer-wide retry budget (a token
//!   bucket: a throttling retry costs 1, another 5, a successful request refunds 1, 10 per
//!   second come back) postpones retries when too many fail, so an outage does not become a
//!   retry storm.
//! - **SDK retries are off** for `PutRecords` (a per-operation config override): one retry
//!   loop owns the budget and the TTL, and every attempt shows in the record's history.
//!   `ListShards` keeps the SDK's retries, under the map refresher's own backoff (1 s × 1.5
//!   up to 30 s, as the KPL).
//! - **Wrong shard.** An aggregate that lands on a shard other than predicted (the map
//!   was stale: a split or merge; Kinesis routes an aggregate by its first record's hash
//!   key) is judged per user record, as the KPL does: records whose hash key is in the
//!   landing shard's range are delivered there (with their sub-sequence position); the
//!   others are retried after a map refresh, re-predicted and re-aggregated. A consumer that
//!   keeps in-range sub-records (`kinesis_aggregation::deaggregate_in_range`) then sees each
//!   record exactly once. (The KCL 2.x drops a whole aggregate with any out-of-range
//!   sub-record, so with it the delivered in-range records of such a stray aggregate are
//!   lost, exactly as with the KPL.) When the landing shard is not in the map yet, the
//!   verdict waits for the refresh. Any result from an unpredicted shard triggers a refresh,
//!   which also moves buffered records off closed shards; the map is also reloaded every
//!   [`shard_map_refresh_interval`](ProducerBuilder::shard_map_refresh_interval) (60 s), so a
//!   reshard is noticed even when no result shows it.
//! - **`flush` waits without polling**: it resolves when every record put before it has an
//!   outcome, sending buffered records at once. [`Producer::close`] flushes and stops.
//!
//! # Ordering
//!
//! Kinesis orders records in a shard by arrival. By default several requests may be in
//! flight to one shard and a failed record is retried after newer ones went through, so
//! records with the same partition key can be **reordered**, as with the KPL. With
//! [`preserve_order_per_shard`](ProducerBuilder::preserve_order_per_shard), each shard has
//! at most one Kinesis record (one aggregate) in flight — Kinesis does not order the entries
//! of one `PutRecords` call, a later entry may succeed where an earlier one was throttled —
//! and failed records are retried ahead of newer ones, so the
//! stream keeps the put order per shard (hence per partition key) — except across a
//! resharding, and except for duplicates: a request that timed out or lost its connection
//! after Kinesis stored it is retried, so a record can appear twice (at-least-once).
//!
//! # Metrics and logs
//!
//! Through the [`metrics`] facade, labelled `StreamName`, with the KPL's names:
//! `UserRecordsPut`, `UserRecordsDataPut`, `KinesisRecordsPut`, `KinesisRecordsDataPut`,
//! `UserRecordExpired`, `AllErrors`, `ErrorsByCode` (label `ErrorCode`), `BufferingTime`
//! (ms), `RetriesPerRecord`, `RequestTime` (ms), `UserRecordsPending`. No exporter is
//! installed; install a recorder before building the producer. Logs go through `tracing`.

#![warn(missing_docs)]
// Failures hand the record back by value (the point of them); they are moved once per record.
#![allow(clippy::result_large_err)]

mod api;
mod config;
mod engine;
mod error;
mod limiter;
mod payload;
mod producer;
mod record;
mod reply;
mod retry;
mod shard_map;
#[cfg(test)]
mod tests;

pub use config::ENV_PREFIX;
pub use error::{BuildError, ConfigError, PutError, PutFailure};
pub use kinesis_aggregation::HashKey;
pub use producer::{Producer, ProducerBuilder, RECORD_OVERHEAD};
pub use record::{Attempt, AttemptError, PutOutcome, Record};
pub use reply::{PutBatchHandle, PutHandle};
