//! The local AWS stack: Kinesis, DynamoDB and S3 speaking the real AWS wire protocols on
//! loopback, started in process with nothing but cargo, plus a fault-injecting proxy.
//!
//! ```text
//!                       LocalAws::start()
//!   ┌──────────────────────────┼──────────────────────────┐
//!   ▼                          ▼                          ▼
//! ferrokinesis (Kinesis)   dynoxide (DynamoDB)     s3s + s3s-fs (S3)
//! 127.0.0.1:ephemeral      127.0.0.1:ephemeral     127.0.0.1:ephemeral, path-style
//!   ▲                          ▲                          ▲
//!   └── aws_sdk_* clients from LocalAws::{kinesis,dynamodb,s3}_client() ─┘
//!       (one rustls/ring HTTP client, dummy credentials, region us-east-1)
//!
//!   optional, per test:   SDK client ──▶ FaultProxy ──▶ any endpoint above
//! ```
//!
//! - [`LocalAws::start`] starts all three servers on ephemeral loopback ports in a few
//!   milliseconds; dropping the handle stops them. [`LocalAws::builder`] sets a persistence
//!   directory, Kinesis shard-limit enforcement (real `ProvisionedThroughputExceeded`
//!   throttling), the iterator TTL and stream transition delays.
//! - With `LOCAL_AWS_BACKEND=external` and `LOCAL_AWS_{KINESIS,DYNAMODB,S3}_ENDPOINT`, the
//!   same call points at servers running elsewhere instead: that is how the test suites
//!   cross-check against the npm emulators (`scripts/external-emulators.sh`).
//! - [`FaultProxy`] injects deterministic faults per operation: throttling, 5xx, latency,
//!   PutRecords partial failures, connection resets before or after the request was applied.
//! - [`testing`] has the helpers every suite repeats (unique names, create-and-wait, read a
//!   whole stream back).
//!
//! The `local-aws` binary runs the stack in the foreground and prints `export` lines.
//!
//! Why these servers, and what each gets wrong, is in `docs/LOCAL-STACK.md`.

#![warn(missing_docs)]

pub mod fault;
mod stack;
pub mod testing;

pub use fault::FaultProxy;
pub use stack::{
    ACCESS_KEY_ID, Backend, Endpoints, Error, LocalAws, LocalAwsBuilder, REGION, SECRET_ACCESS_KEY,
    dynamodb_client, kinesis_client, s3_client,
};
