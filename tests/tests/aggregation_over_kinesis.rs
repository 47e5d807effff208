//! The aggregation format through a real Kinesis wire protocol: what the aggregator produces
//! is accepted by Kinesis, lands on the predicted shard, and comes back out of `GetRecords`
//! as the same user records with (sequence, sub-sequence) positions.
//!
//! Runs against the in-process stack, or the npm emulators with `LOCAL_AWS_BACKEND=external`.

use std::collections::HashMap;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use kinesis_aggregation::{
    Aggregator, AggregatorConfig, Finished, HashKey, HashKeyRange, ReceivedRecord, UserRecord,
    deaggregate, deaggregate_in_range,
};
use local_aws::{LocalAws, testing};

/// Open shards of `stream` with their hash-key ranges.
async fn shards(kinesis: &aws_sdk_kinesis::Client, stream: &str) -> Vec<(String, HashKeyRange)> {
    let out = kinesis
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap();
    out.shards()
        .iter()
        .map(|s| {
            let r = s.hash_key_range().unwrap();
            let range = HashKeyRange::new(
                r.starting_hash_key().parse().unwrap(),
                r.ending_hash_key().parse().unwrap(),
            );
            (s.shard_id().to_owned(), range)
        })
        .collect()
}

fn shard_of(shards: &[(String, HashKeyRange)], key: HashKey) -> &str {
    &shards.iter().find(|(_, r)| r.contains(key)).unwrap().0
}

/// Puts finished records one PutRecords call at a time; returns the shard each landed on.
async fn put(kinesis: &aws_sdk_kinesis::Client, stream: &str, records: &[Finished]) -> Vec<String> {
    let entries = records
        .iter()
        .map(|f| {
            PutRecordsRequestEntry::builder()
                .partition_key(&f.record.partition_key)
                .set_explicit_hash_key(f.record.explicit_hash_key.map(|k| k.to_string()))
                .data(Blob::new(f.record.data.to_vec()))
                .build()
                .unwrap()
        })
        .collect();
    let out = kinesis
        .put_records()
        .stream_name(stream)
        .set_records(Some(entries))
        .send()
        .await
        .unwrap();
    assert_eq!(out.failed_record_count().unwrap_or(0), 0);
    out.records()
        .iter()
        .map(|r| r.shard_id().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn aggregates_land_on_the_predicted_shard_and_deaggregate_in_order() {
    let aws = LocalAws::start().await.unwrap();
    let kinesis = aws.kinesis_client();
    let stream = testing::unique_name("agg");
    testing::create_stream(&kinesis, &stream, 4).await.unwrap();
    let shards = shards(&kinesis, &stream).await;

    // One aggregator per predicted shard, small aggregates so that there are several.
    let config = AggregatorConfig {
        max_bytes: 4096,
        ..AggregatorConfig::default()
    };
    let mut aggregators: HashMap<String, Aggregator> = HashMap::new();
    let mut finished = Vec::new();
    let mut expected: HashMap<String, Vec<(String, Vec<u8>)>> = HashMap::new();
    for i in 0..2000 {
        // Unicode keys, and empty data now and then: both must survive.
        let key = format!("clé-{}-{}", i % 97, i);
        let data = if i % 50 == 0 {
            Vec::new()
        } else {
            format!("payload {i}").into_bytes()
        };
        let record = UserRecord::new(key.clone(), data.clone()).unwrap();
        let shard = shard_of(&shards, record.hash_key()).to_owned();
        expected.entry(shard.clone()).or_default().push((key, data));
        let aggregator = aggregators
            .entry(shard)
            .or_insert_with(|| Aggregator::new(config));
        if let Err(full) = aggregator.try_push(record) {
            finished.extend(aggregator.finish());
            aggregator.try_push(full.into_inner()).unwrap();
        }
    }
    finished.extend(aggregators.values_mut().filter_map(Aggregator::finish));
    assert!(
        finished
            .iter()
            .all(|f| f.record.data.len() <= 4096 || !f.is_aggregated())
    );

    for batch in finished.chunks(100) {
        let landed = put(&kinesis, &stream, batch).await;
        for (f, shard) in batch.iter().zip(landed) {
            let predicted = shard_of(&shards, f.user_records[0].hash_key());
            assert_eq!(
                shard, predicted,
                "an aggregate must land on its records' shard"
            );
        }
    }

    // Read back: per shard, the user records in put order, each with its position.
    let mut got: HashMap<String, Vec<(String, Vec<u8>)>> = HashMap::new();
    // Sequence numbers are decimal integers of up to 128 digits: compare as (length, text).
    let mut last_position: HashMap<String, (usize, String, u64)> = HashMap::new();
    for (shard_id, r) in testing::read_stream(&kinesis, &stream).await.unwrap() {
        let range = shards.iter().find(|(id, _)| *id == shard_id).unwrap().1;
        let received = ReceivedRecord::new(
            r.sequence_number(),
            r.partition_key().unwrap_or_default(),
            r.data().as_ref().to_vec(),
        );
        let filtered = deaggregate_in_range(received, range);
        assert_eq!(filtered.dropped, 0);
        for user in filtered.records {
            let position = (
                user.sequence_number.len(),
                user.sequence_number.to_string(),
                user.sub_sequence_number,
            );
            if let Some(previous) = last_position.insert(shard_id.clone(), position.clone()) {
                assert!(
                    position > previous,
                    "positions must increase within a shard"
                );
            }
            got.entry(shard_id.clone())
                .or_default()
                .push((user.partition_key, user.data.to_vec()));
        }
    }
    assert_eq!(got, expected);
}

#[tokio::test]
async fn plain_records_pass_through_unchanged() {
    let aws = LocalAws::start().await.unwrap();
    let kinesis = aws.kinesis_client();
    let stream = testing::unique_name("plain");
    testing::create_stream(&kinesis, &stream, 1).await.unwrap();
    // Data that starts with the magic but is not an aggregate must come back as it went in.
    let mut fake = kinesis_aggregation::MAGIC.to_vec();
    fake.extend_from_slice(&[0u8; 40]);
    for data in [b"hello".to_vec(), fake.clone(), Vec::new()] {
        kinesis
            .put_record()
            .stream_name(&stream)
            .partition_key("k")
            .data(Blob::new(if data.is_empty() { vec![0] } else { data }))
            .send()
            .await
            .unwrap();
    }
    let records = testing::read_stream(&kinesis, &stream).await.unwrap();
    assert_eq!(records.len(), 3);
    for (_, r) in records {
        let received = ReceivedRecord::new(r.sequence_number(), "k", r.data().as_ref().to_vec());
        let out = deaggregate(received);
        assert_eq!(out.len(), 1);
        assert!(!out[0].aggregated);
        assert_eq!(out[0].data.as_ref(), r.data().as_ref());
        assert_eq!(out[0].sub_sequence_number, 0);
    }
}

#[tokio::test]
async fn an_aggregate_spanning_shards_delivers_only_its_in_range_records() {
    // Why the producer aggregates per predicted shard: the consumer delivers only the
    // sub-records that belong to the shard the aggregate landed on (the KCL drops the whole
    // aggregate). The others would be lost unless the producer retried them.
    let aws = LocalAws::start().await.unwrap();
    let kinesis = aws.kinesis_client();
    let stream = testing::unique_name("span");
    testing::create_stream(&kinesis, &stream, 2).await.unwrap();
    let shards = shards(&kinesis, &stream).await;
    let mut aggregator = Aggregator::new(AggregatorConfig::default());
    let mut keys_on = HashMap::<String, usize>::new();
    for i in 0..20 {
        let record = UserRecord::new(format!("key-{i}"), vec![1, 2, 3]).unwrap();
        *keys_on
            .entry(shard_of(&shards, record.hash_key()).to_owned())
            .or_default() += 1;
        aggregator.try_push(record).unwrap();
    }
    assert_eq!(keys_on.len(), 2, "the keys must span both shards");
    let finished = aggregator.finish().unwrap();
    let landed = put(&kinesis, &stream, std::slice::from_ref(&finished)).await;

    let records = testing::read_stream(&kinesis, &stream).await.unwrap();
    assert_eq!(records.len(), 1);
    let (shard_id, r) = &records[0];
    assert_eq!(shard_id, &landed[0]);
    let range = shards.iter().find(|(id, _)| id == shard_id).unwrap().1;
    let received = ReceivedRecord::new(r.sequence_number(), "a", r.data().as_ref().to_vec());
    let filtered = deaggregate_in_range(received.clone(), range);
    let in_range = keys_on[shard_id.as_str()];
    assert_eq!(filtered.records.len(), in_range);
    assert_eq!(filtered.dropped, 20 - in_range);
    assert!(
        filtered
            .records
            .iter()
            .all(|u| range.contains(u.hash_key()))
    );
    // Without the filter, everything is there.
    assert_eq!(deaggregate(received).len(), 20);
}
