//! Small helpers that tests, examples and tools repeat against any Kinesis endpoint: unique
//! names for parallel tests, creating a stream and waiting for it, putting records and
//! reading a whole stream back, and checking the CloudWatch EMF lines a binary writes.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, Record, ShardIteratorType, StreamStatus};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A name no other test in this process or any concurrent one will pick: lower case, digits
/// and dashes, valid as a stream, table and bucket name (at most 63 characters for a short
/// prefix).
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{nanos}", std::process::id())
}

/// Waits until `stream` is ACTIVE (after create or reshard), polling every 20 ms for up to
/// 30 s.
pub async fn wait_for_active(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Result<(), BoxError> {
    for _ in 0..1500 {
        let out = kinesis
            .describe_stream_summary()
            .stream_name(stream)
            .send()
            .await?;
        if out
            .stream_description_summary()
            .is_some_and(|s| s.stream_status() == &StreamStatus::Active)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!("stream {stream} did not become ACTIVE within 30 s").into())
}

/// Creates a provisioned stream with `shards` shards and waits until it is ACTIVE.
pub async fn create_stream(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    shards: i32,
) -> Result<(), BoxError> {
    kinesis
        .create_stream()
        .stream_name(stream)
        .shard_count(shards)
        .send()
        .await?;
    wait_for_active(kinesis, stream).await
}

/// Puts `(partition key, data)` records into `stream` in PutRecords calls of at most 500, in
/// order, and fails if Kinesis refused any record. Meant for filling a stream a test then
/// reads, not for testing PutRecords itself (it hides the per-record results).
pub async fn put_records<K, D>(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    records: impl IntoIterator<Item = (K, D)>,
) -> Result<(), BoxError>
where
    K: Into<String>,
    D: Into<Vec<u8>>,
{
    let entries = records
        .into_iter()
        .map(|(key, data)| {
            PutRecordsRequestEntry::builder()
                .partition_key(key)
                .data(Blob::new(data))
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    for chunk in entries.chunks(500) {
        let out = kinesis
            .put_records()
            .stream_name(stream)
            .set_records(Some(chunk.to_vec()))
            .send()
            .await?;
        if out.failed_record_count() != Some(0) {
            return Err(format!(
                "PutRecords refused {:?} of {} records",
                out.failed_record_count(),
                chunk.len()
            )
            .into());
        }
    }
    Ok(())
}

/// Every record of every shard of `stream` (open and closed), read from TRIM_HORIZON, as
/// `(shard id, record)` in shard order and then sequence order within a shard.
///
/// A shard is read until a page comes back empty (an open shard never ends) or its iterator
/// runs out (a closed shard). Meant for checking what a test wrote, not for consuming.
pub async fn read_stream(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Result<Vec<(String, Record)>, BoxError> {
    let mut shard_ids = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut request = kinesis.list_shards();
        request = match &token {
            Some(t) => request.next_token(t),
            None => request.stream_name(stream),
        };
        let out = request.send().await?;
        shard_ids.extend(out.shards().iter().map(|s| s.shard_id().to_owned()));
        match out.next_token {
            Some(t) if !out.shards().is_empty() => token = Some(t),
            _ => break,
        }
    }

    let mut records = Vec::new();
    for shard_id in shard_ids {
        let mut iterator = kinesis
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(&shard_id)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await?
            .shard_iterator;
        while let Some(current) = iterator {
            let page = kinesis
                .get_records()
                .shard_iterator(&current)
                .limit(10_000)
                .send()
                .await?;
            if page.records().is_empty() {
                break;
            }
            records.extend(page.records().iter().map(|r| (shard_id.clone(), r.clone())));
            iterator = page.next_shard_iterator;
        }
    }
    Ok(records)
}

/// Creates a pay-per-request table whose only key is the string hash key `hash_key`, and
/// waits until it is ACTIVE (DynamoDB and dynalite create tables asynchronously: a write right
/// after `CreateTable` can fail with ResourceNotFound).
pub async fn create_table(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    hash_key: &str,
) -> Result<(), BoxError> {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
        TableStatus,
    };
    dynamodb
        .create_table()
        .table_name(table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(hash_key)
                .attribute_type(ScalarAttributeType::S)
                .build()?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(hash_key)
                .key_type(KeyType::Hash)
                .build()?,
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await?;
    for _ in 0..1500 {
        let out = dynamodb.describe_table().table_name(table).send().await?;
        if out
            .table()
            .and_then(|t| t.table_status())
            .is_some_and(|s| *s == TableStatus::Active)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!("table {table} did not become ACTIVE within 30 s").into())
}

/// Parses one log line as a CloudWatch Embedded Metric Format document and checks its
/// structure: `_aws.Timestamp`, the `_aws.CloudWatchMetrics` directives (namespace, dimension
/// sets of at most 30 names, 1 to 100 metric definitions) and the references from them into
/// the root (every dimension a string member, every metric a number, an array of at most 100
/// numbers, or `{"Values": [...], "Counts": [...]}` of equal lengths).
///
/// Returns the parsed document; panics with every problem found, for tests of what a
/// binary writes to stdout.
pub fn parse_emf(line: &str) -> serde_json::Value {
    use serde_json::Value;
    let doc: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let root = doc.as_object().expect("an object");
    let mut problems = Vec::new();
    if doc["_aws"]["Timestamp"].as_u64().is_none() {
        problems.push("_aws.Timestamp is not a non-negative integer".to_owned());
    }
    let directives = doc["_aws"]["CloudWatchMetrics"]
        .as_array()
        .map_or(&[][..], |d| d);
    if directives.is_empty() {
        problems.push("_aws.CloudWatchMetrics is not a non-empty array".to_owned());
    }
    for d in directives {
        if d["Namespace"].as_str().is_none_or(str::is_empty) {
            problems.push(format!("no Namespace in {d}"));
        }
        if !d["Dimensions"].is_array() {
            problems.push(format!("Dimensions is not an array in {d}"));
        }
        for set in d["Dimensions"].as_array().map_or(&[][..], |s| s) {
            let names = set.as_array().map_or(&[][..], |n| n);
            if !set.is_array() || names.len() > 30 {
                problems.push(format!("bad dimension set {set}"));
            }
            for name in names {
                if !name
                    .as_str()
                    .is_some_and(|n| root.get(n).is_some_and(Value::is_string))
                {
                    problems.push(format!("dimension {name} is not a string member"));
                }
            }
        }
        let metrics = d["Metrics"].as_array().map_or(&[][..], |m| m);
        if metrics.is_empty() || metrics.len() > 100 {
            problems.push(format!("{} metrics in a directive", metrics.len()));
        }
        for m in metrics {
            let Some(name) = m["Name"].as_str() else {
                problems.push(format!("a metric without Name: {m}"));
                continue;
            };
            if !m["Unit"].is_null() && !m["Unit"].is_string() {
                problems.push(format!("{name}: Unit is not a string"));
            }
            let value = &doc[name];
            let numbers = |v: &Value| {
                v.as_array()
                    .is_some_and(|a| a.len() <= 100 && a.iter().all(Value::is_number))
            };
            let ok = value.is_number()
                || numbers(value)
                || (numbers(&value["Values"])
                    && numbers(&value["Counts"])
                    && value["Values"].as_array().map(Vec::len)
                        == value["Counts"].as_array().map(Vec::len));
            if !ok {
                problems.push(format!("{name}: {value} is not a metric value"));
            }
        }
    }
    assert!(problems.is_empty(), "not EMF: {problems:?}\n{line}");
    doc
}
