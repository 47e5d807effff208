//! A KCL-class consumer for Amazon Kinesis Data Streams: a [`Worker`] holds shard leases in a
//! DynamoDB lease table that uses the Java KCL 2.x schema (so the two can share or take over
//! each other's table) and runs your [`RecordProcessor`] on each leased shard.
//!
//! ```text
//!   Worker ──scan/take/renew (conditional writes)──► DynamoDB lease table (KCL 2.x schema)
//!     │ one ShardConsumer per held lease
//!     ▼
//!   GetRecords (bounded prefetch) ─► deaggregate (KPL) ─► skip ≤ checkpoint ─► RecordProcessor
//!   or SubscribeToShard (fan-out)                                               │ Checkpointer
//!                                       lease table ◄── (sequence, sub-sequence) ┘
//! ```
//!
//! Shards are read by polling (`GetRecords`, the default) or with enhanced fan-out
//! (`SubscribeToShard`: Kinesis pushes records as they are written, with 2 MB/s per shard
//! for the application alone), chosen with [`WorkerBuilder::retrieval`] and [`Retrieval`].
//!
//! ```no_run
//! use kinesis_consumer::{InitialPosition, ProcessInput, ProcessorError, RecordProcessor, Worker};
//!
//! struct Print;
//!
//! #[async_trait::async_trait]
//! impl RecordProcessor for Print {
//!     async fn process_records(&mut self, input: ProcessInput<'_>) -> Result<(), ProcessorError> {
//!         for record in input.records {
//!             println!("{} {:?}", record.partition_key, record.data);
//!         }
//!         input.checkpointer.checkpoint().await?; // after the work is durable
//!         Ok(())
//!     }
//! }
//!
//! # async fn run(kinesis: aws_sdk_kinesis::Client, dynamodb: aws_sdk_dynamodb::Client) {
//! let worker = Worker::builder("my-app", "my-stream", kinesis, dynamodb, || Print)
//!     .initial_position(InitialPosition::TrimHorizon)
//!     .build();
//! let handle = worker.handle();
//! tokio::spawn(async move {
//!     tokio::signal::ctrl_c().await.ok(); // on ECS: SIGTERM
//!     handle.shutdown().await;             // checkpoint, release leases
//! });
//! worker.run().await.unwrap();
//! # }
//! ```
//!
//! What differs from the KCL, on purpose:
//! - SHARD_END is recorded by the library once `shard_ended` returns: a forgotten checkpoint
//!   never blocks the children.
//! - A failing `process_records` gets the same batch again (with backoff) by default instead of
//!   being skipped; [`ProcessorErrorPolicy`] offers skip-after-N and stop-the-shard.
//! - Graceful shutdown releases the leases, so other workers pick the shards up within about a
//!   second, not after the failover time; balancing steals several leases per pass.
//!
//! Modules: [`position`] (checkpoints: sequence plus sub-sequence numbers and the KCL
//! sentinels), [`lease`] (the lease table, `LeaseStore` with DynamoDB and in-memory
//! implementations, and the pure assignment decisions), [`processor`] (your side).
//!
//! Operations: [`WorkerHandle::health`] reports the leases held, the age of the last renewal
//! and lease-table scan, and stalled shards, for a `/health` endpoint; metric names, alarms
//! and log settings are in docs/OPERATIONS.md.

#![warn(missing_docs)]

pub mod lease;
pub mod position;
pub mod processor;
mod retrieval;
mod shard_consumer;
mod worker;

pub use position::{InvalidSequenceNumber, Position, SequenceNumber};
pub use processor::{
    CheckpointError, Checkpointer, ChildShard, InitInput, PendingCheckpoint, PreparedCheckpoint,
    ProcessInput, ProcessorError, ProcessorErrorPolicy, ProcessorFactory, Record, RecordProcessor,
    RetryBackoff, ShardEndedInput,
};
#[doc(hidden)]
pub use retrieval::RecordSources;
pub use retrieval::{FanOutConfig, PollingConfig, Retrieval, RetrievalError};
#[doc(hidden)]
pub use shard_consumer::{
    ConsumerState, ShardConsumer, ShardConsumerHandle, ShardConsumerOptions, ShardConsumerOutcome,
    ShardLease,
};
pub use worker::{
    HealthPolicy, HealthProblem, InitialPosition, ProcessorCall, ShardHealth, Worker,
    WorkerBuilder, WorkerError, WorkerHandle, WorkerHealth, WorkerStatus,
};
