//! The local AWS stack: Kinesis, DynamoDB and S3 speaking the real AWS wire protocols on
//! loopback, in process, plus a fault-injecting proxy for failure-path tests.
//!
//! (Module docs are being written; see stack.rs and fault/.)

pub mod fault;
mod stack;

pub use fault::FaultProxy;
pub use stack::*;
