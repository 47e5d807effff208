//! The round trip that the README's first command runs until `kin demo` exists: start the
//! local stack in process, send KPL-aggregated records through a 4-shard Kinesis stream, read
//! every shard back, deaggregate, check that every record arrived exactly once, and record the
//! result in DynamoDB and S3.
//!
//! ```text
//! cargo run -p local-aws --example roundtrip [RECORDS]
//! ```

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use kinesis_aggregation::{
    Aggregator, AggregatorConfig, HashKey, HashKeyRange, ReceivedRecord, UserRecord,
    deaggregate_in_range,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const STREAM: &str = "roundtrip";
const SHARDS: i32 = 4;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let records: usize = match std::env::args().nth(1) {
        Some(n) => n
            .parse()
            .map_err(|_| format!("{n:?} is not a record count"))?,
        None => 20_000,
    };
    let started = Instant::now();
    let aws = local_aws::LocalAws::start().await?;
    println!("local stack up in {:?}", started.elapsed());
    println!("  kinesis  {}", aws.kinesis_endpoint());
    println!("  dynamodb {}", aws.dynamodb_endpoint());
    println!("  s3       {}", aws.s3_endpoint());

    let kinesis = aws.kinesis_client();
    local_aws::testing::create_stream(&kinesis, STREAM, SHARDS).await?;
    let shards = shard_ranges(&kinesis).await?;
    println!("stream {STREAM:?} ACTIVE with {} shards", shards.len());

    // Aggregate per predicted shard: mixing shards in one aggregate would make the KCL drop it.
    let put_started = Instant::now();
    let mut per_shard: BTreeMap<String, Aggregator> = BTreeMap::new();
    let mut ready = Vec::new();
    for i in 0..records {
        let record = UserRecord::new(format!("user-{i}"), format!("event {i}"))?;
        let shard = shard_for(&shards, record.hash_key());
        let aggregator = per_shard
            .entry(shard.to_owned())
            .or_insert_with(|| Aggregator::new(AggregatorConfig::default()));
        if let Err(full) = aggregator.try_push(record) {
            ready.extend(aggregator.finish());
            aggregator
                .try_push(full.into_inner())
                .map_err(|_| "an empty aggregator takes any record")?;
        }
    }
    ready.extend(per_shard.values_mut().filter_map(Aggregator::finish));
    let kinesis_records = ready.len();
    for batch in ready.chunks(500) {
        let entries = batch
            .iter()
            .map(|f| {
                PutRecordsRequestEntry::builder()
                    .partition_key(&f.record.partition_key)
                    .set_explicit_hash_key(f.record.explicit_hash_key.map(|k| k.to_string()))
                    .data(Blob::new(f.record.data.to_vec()))
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = kinesis
            .put_records()
            .stream_name(STREAM)
            .set_records(Some(entries))
            .send()
            .await?;
        if out.failed_record_count().unwrap_or(0) > 0 {
            return Err("PutRecords reported failed records".into());
        }
    }
    println!(
        "put {records} user records as {kinesis_records} Kinesis records in {:?}",
        put_started.elapsed()
    );

    let read_started = Instant::now();
    let mut seen: HashMap<String, u32> = HashMap::new();
    for (shard_id, r) in local_aws::testing::read_stream(&kinesis, STREAM).await? {
        let range = shards
            .iter()
            .find(|(id, _)| *id == shard_id)
            .map(|(_, range)| *range)
            .ok_or("a record from an unknown shard")?;
        let received = ReceivedRecord::new(
            r.sequence_number(),
            r.partition_key().unwrap_or_default(),
            r.data().as_ref().to_vec(),
        );
        for user in deaggregate_in_range(received, range).records {
            *seen.entry(user.partition_key).or_default() += 1;
        }
    }
    let missing = (0..records)
        .filter(|i| !seen.contains_key(&format!("user-{i}")))
        .count();
    let duplicated = seen.values().filter(|&&n| n > 1).count();
    println!(
        "read back {} distinct user records in {:?}: {missing} missing, {duplicated} duplicated",
        seen.len(),
        read_started.elapsed()
    );

    // Record the verdict where a consumer would: a checkpoint-like item and an S3 object.
    let verdict = if missing == 0 && duplicated == 0 {
        "exactly-once"
    } else {
        "MISMATCH"
    };
    let ddb = aws.dynamodb_client();
    local_aws::testing::create_table(&ddb, "roundtrip-results", "run").await?;
    ddb.put_item()
        .table_name("roundtrip-results")
        .item("run", AttributeValue::S("1".into()))
        .item("verdict", AttributeValue::S(verdict.into()))
        .item("records", AttributeValue::N(records.to_string()))
        .send()
        .await?;
    let s3 = aws.s3_client();
    s3.create_bucket().bucket("roundtrip").send().await?;
    s3.put_object()
        .bucket("roundtrip")
        .key("results/1.txt")
        .body(
            format!("{verdict}: {records} records\n")
                .into_bytes()
                .into(),
        )
        .send()
        .await?;
    println!(
        "verdict stored in DynamoDB (roundtrip-results) and S3 (s3://roundtrip/results/1.txt)"
    );
    println!("{verdict} in {:?} overall", started.elapsed());
    if verdict != "exactly-once" {
        return Err("the round trip lost or duplicated records".into());
    }
    Ok(())
}

/// The open shards and their hash-key ranges, sorted by range.
async fn shard_ranges(
    kinesis: &aws_sdk_kinesis::Client,
) -> Result<Vec<(String, HashKeyRange)>, BoxError> {
    let out = kinesis.list_shards().stream_name(STREAM).send().await?;
    let mut shards = out
        .shards()
        .iter()
        .map(|s| {
            let range = s
                .hash_key_range()
                .ok_or("a shard without a hash key range")?;
            let start: HashKey = range.starting_hash_key().parse()?;
            let end: HashKey = range.ending_hash_key().parse()?;
            Ok((s.shard_id().to_owned(), HashKeyRange::new(start, end)))
        })
        .collect::<Result<Vec<_>, BoxError>>()?;
    shards.sort_by_key(|(_, r)| r.start);
    Ok(shards)
}

fn shard_for(shards: &[(String, HashKeyRange)], key: HashKey) -> &str {
    shards
        .iter()
        .find(|(_, r)| r.contains(key))
        .map(|(id, _)| id.as_str())
        .expect("the shards cover the whole hash-key space")
}
