//! The KPL's protobuf schema (`messages.proto`, proto2), derived by hand for prost.
//!
//! ```proto
//! message AggregatedRecord {
//!   repeated string partition_key_table     = 1;
//!   repeated string explicit_hash_key_table = 2;
//!   repeated Record records                 = 3;
//! }
//! message Record {
//!   required uint64 partition_key_index     = 1;
//!   optional uint64 explicit_hash_key_index = 2;
//!   required bytes  data                    = 3;
//!   repeated Tag    tags                    = 4;
//! }
//! message Tag { required string key = 1; optional string value = 2; }
//! ```
//!
//! The `required` fields are declared `optional` here on purpose: the wire encoding is
//! identical (proto2 writes a set field even when it is 0 or empty), and `Option` lets the
//! decoder see a *missing* required field, which makes the aggregate invalid for the KCL's
//! Java protobuf runtime and for the Python one, so it must be invalid for us too.
//!
//! Decoding goes through these types; encoding does not (the aggregator writes the same
//! bytes directly into one pre-sized buffer, see `aggregator.rs`). A unit test checks that
//! the two agree byte for byte.

use bytes::Bytes;

/// The aggregate: key tables, then the records that index into them.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct AggregatedRecord {
    #[prost(string, repeated, tag = "1")]
    pub partition_key_table: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub explicit_hash_key_table: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    pub records: Vec<Record>,
}

/// One user record inside an aggregate.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Record {
    /// `required` in the schema.
    #[prost(uint64, optional, tag = "1")]
    pub partition_key_index: Option<u64>,
    #[prost(uint64, optional, tag = "2")]
    pub explicit_hash_key_index: Option<u64>,
    /// `required` in the schema. `Bytes` so that decoding from a `Bytes` buffer slices the
    /// input instead of copying it.
    #[prost(bytes = "bytes", optional, tag = "3")]
    pub data: Option<Bytes>,
    /// Never written by the KPL nor read by the KCL; parsed only to validate.
    #[prost(message, repeated, tag = "4")]
    pub tags: Vec<Tag>,
}

/// A record tag (unused by the KPL and the KCL).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Tag {
    /// `required` in the schema.
    #[prost(string, optional, tag = "1")]
    pub key: Option<String>,
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}
