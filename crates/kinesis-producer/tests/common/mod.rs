//! Helpers shared by the integration tests: streams on the local stack, and reading a stream
//! back the way a KCL consumer would.

#![allow(dead_code)]

use std::collections::HashMap;

use bytes::Bytes;
use kinesis_aggregation::{HashKey, HashKeyRange, ReceivedRecord, deaggregate_in_range};
use local_aws::testing;

pub use local_aws::testing::unique_name;

/// Creates a stream with `shards` shards and waits for it.
pub async fn stream(kinesis: &aws_sdk_kinesis::Client, prefix: &str, shards: i32) -> String {
    let name = unique_name(prefix);
    testing::create_stream(kinesis, &name, shards)
        .await
        .unwrap();
    name
}

/// Every user record in the stream, counted: `(partition key, data) → copies`.
///
/// Each shard's records are deaggregated keeping only sub-records in the shard's hash-key
/// range, so the out-of-range part of an aggregate that landed on another shard than
/// predicted (and was re-sent) is not counted.
pub async fn delivered(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
) -> HashMap<(String, Bytes), usize> {
    let shards = kinesis
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap();
    let ranges: HashMap<String, HashKeyRange> = shards
        .shards()
        .iter()
        .map(|s| {
            let r = s.hash_key_range().unwrap();
            (
                s.shard_id().to_owned(),
                HashKeyRange::new(
                    r.starting_hash_key().parse::<HashKey>().unwrap(),
                    r.ending_hash_key().parse::<HashKey>().unwrap(),
                ),
            )
        })
        .collect();
    let mut out = HashMap::new();
    for (shard, r) in testing::read_stream(kinesis, stream).await.unwrap() {
        let received = ReceivedRecord::new(
            r.sequence_number().to_owned(),
            r.partition_key().unwrap_or_default().to_owned(),
            Bytes::copy_from_slice(r.data().as_ref()),
        );
        for u in deaggregate_in_range(received, ranges[&shard]).records {
            *out.entry((u.partition_key, u.data)).or_insert(0) += 1;
        }
    }
    out
}

/// The records `0..n` a test puts: distinct keys and data.
pub fn records(prefix: &str, n: usize, size: usize) -> Vec<(String, Bytes)> {
    (0..n)
        .map(|i| {
            let mut data = format!("{prefix}-{i}-").into_bytes();
            data.resize(size.max(data.len()), b'x');
            (format!("key-{}", i % 997), Bytes::from(data))
        })
        .collect()
}

/// Asserts that every record is in the stream exactly once, nothing else is, and returns
/// nothing; `allowed_duplicates` extra copies may exist in total (unavoidable after a
/// connection reset once Kinesis stored a request).
pub fn assert_exactly_once(
    got: &HashMap<(String, Bytes), usize>,
    want: &[(String, Bytes)],
    allowed_duplicates: usize,
) -> usize {
    let mut dups = 0;
    for r in want {
        let n = got.get(r).copied().unwrap_or(0);
        assert!(n >= 1, "record {r:?} is missing");
        dups += n - 1;
    }
    let total: usize = got.values().sum();
    assert_eq!(total, want.len() + dups, "unexpected records in the stream");
    assert!(
        dups <= allowed_duplicates,
        "{dups} duplicates, at most {allowed_duplicates} allowed"
    );
    dups
}
