//! The local stack through the real AWS SDK: each service answers its wire protocol.
//!
//! These tests run against the in-process servers by default and against the npm emulators
//! when `LOCAL_AWS_BACKEND=external` (see `scripts/external-emulators.sh`). Every test uses
//! its own stream, table and bucket names so that they can share one external backend.

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_kinesis::error::SdkError;
use aws_sdk_kinesis::operation::put_records::{PutRecordsError, PutRecordsOutput};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use local_aws::{Backend, LocalAws, testing};

fn unique(prefix: &str) -> String {
    testing::unique_name(prefix)
}

/// One PutRecords call of `(partition key, data)` entries.
async fn put_records(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    records: impl IntoIterator<Item = (String, Vec<u8>)>,
) -> Result<PutRecordsOutput, SdkError<PutRecordsError>> {
    let entries = records
        .into_iter()
        .map(|(key, data)| {
            PutRecordsRequestEntry::builder()
                .partition_key(key)
                .data(Blob::new(data))
                .build()
                .unwrap()
        })
        .collect();
    kinesis
        .put_records()
        .stream_name(stream)
        .set_records(Some(entries))
        .send()
        .await
}

/// The body of an S3 object.
async fn get_object(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Vec<u8> {
    s3.get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .to_vec()
}

/// `(partition key, data)` of every record in the stream.
async fn read_all(kinesis: &aws_sdk_kinesis::Client, stream: &str) -> Vec<(String, Vec<u8>)> {
    testing::read_stream(kinesis, stream)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, r)| {
            let key = r.partition_key().unwrap_or_default().to_owned();
            (key, r.data().as_ref().to_vec())
        })
        .collect()
}

#[tokio::test]
async fn kinesis_put_and_read_back() {
    let aws = LocalAws::start().await.unwrap();
    let kinesis = aws.kinesis_client();
    let stream = unique("roundtrip");
    testing::create_stream(&kinesis, &stream, 4).await.unwrap();

    let records = (0..500).map(|i| (format!("key-{i}"), format!("record {i}").into_bytes()));
    let put = put_records(&kinesis, &stream, records).await.unwrap();
    assert_eq!(put.failed_record_count(), Some(0));

    let mut got = read_all(&kinesis, &stream).await;
    got.sort();
    let mut want: Vec<_> = (0..500)
        .map(|i| (format!("key-{i}"), format!("record {i}").into_bytes()))
        .collect();
    want.sort();
    assert_eq!(got, want);
}

#[tokio::test]
async fn kinesis_accepts_a_full_five_mib_put_records() {
    // Guards the body-limit gotcha: axum's 2 MiB default would answer 413.
    let aws = LocalAws::start().await.unwrap();
    let kinesis = aws.kinesis_client();
    let stream = unique("big");
    testing::create_stream(&kinesis, &stream, 1).await.unwrap();
    // 5 records of just under 1 MiB each (data + key ≤ 1 MiB, total ≤ 5 MiB).
    let data = vec![7u8; 1024 * 1024 - 16];
    let records = (0..5).map(|i| (format!("k{i}"), data.clone()));
    let put = put_records(&kinesis, &stream, records)
        .await
        .expect("a valid 5 MiB PutRecords is accepted");
    assert_eq!(put.records().len(), 5);
}

#[tokio::test]
async fn kinesis_unknown_stream_is_resource_not_found() {
    let aws = LocalAws::start().await.unwrap();
    let err = aws
        .kinesis_client()
        .describe_stream_summary()
        .stream_name(unique("missing"))
        .send()
        .await
        .unwrap_err();
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_resource_not_found_exception()),
        "{err:?}"
    );
}

#[tokio::test]
async fn dynamodb_conditional_writes() {
    let aws = LocalAws::start().await.unwrap();
    let ddb = aws.dynamodb_client();
    let table = unique("leases");
    testing::create_table(&ddb, &table, "leaseKey")
        .await
        .unwrap();

    let put = |counter: &str| {
        ddb.put_item()
            .table_name(&table)
            .item("leaseKey", AttributeValue::S("shardId-000000000000".into()))
            .item("leaseCounter", AttributeValue::N(counter.into()))
            .condition_expression("attribute_not_exists(leaseKey)")
    };
    put("1").send().await.unwrap();
    let err = put("2").send().await.unwrap_err();
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_conditional_check_failed_exception()),
        "{err:?}"
    );

    // The fencing update the lease store relies on.
    ddb.update_item()
        .table_name(&table)
        .key("leaseKey", AttributeValue::S("shardId-000000000000".into()))
        .update_expression("SET leaseCounter = leaseCounter + :one")
        .condition_expression("leaseCounter = :expected")
        .expression_attribute_values(":one", AttributeValue::N("1".into()))
        .expression_attribute_values(":expected", AttributeValue::N("1".into()))
        .send()
        .await
        .unwrap();
    let item = ddb
        .get_item()
        .table_name(&table)
        .key("leaseKey", AttributeValue::S("shardId-000000000000".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert_eq!(item["leaseCounter"], AttributeValue::N("2".into()));
}

#[tokio::test]
async fn s3_put_get_and_list() {
    let aws = LocalAws::start().await.unwrap();
    let s3 = aws.s3_client();
    let bucket = unique("bucket");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    for i in 0..3 {
        s3.put_object()
            .bucket(&bucket)
            .key(format!("prefix/object-{i}"))
            .body(format!("body {i}").into_bytes().into())
            .send()
            .await
            .unwrap();
    }
    let listed = s3
        .list_objects_v2()
        .bucket(&bucket)
        .prefix("prefix/")
        .send()
        .await
        .unwrap();
    let keys: Vec<_> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(
        keys,
        ["prefix/object-0", "prefix/object-1", "prefix/object-2"]
    );
    assert_eq!(get_object(&s3, &bucket, "prefix/object-1").await, b"body 1");

    let missing = s3
        .get_object()
        .bucket(&bucket)
        .key("nope")
        .send()
        .await
        .unwrap_err();
    assert!(
        missing
            .as_service_error()
            .is_some_and(|e| e.is_no_such_key()),
        "{missing:?}"
    );
}

#[tokio::test]
async fn state_survives_a_restart_with_a_persist_dir() {
    let dir = tempfile::tempdir().unwrap();
    let stream = unique("durable");
    let table = unique("durable");
    let bucket = unique("durable");
    {
        let aws = LocalAws::builder()
            .persist_dir(dir.path())
            .start()
            .await
            .unwrap();
        let kinesis = aws.kinesis_client();
        testing::create_stream(&kinesis, &stream, 1).await.unwrap();
        kinesis
            .put_record()
            .stream_name(&stream)
            .partition_key("k")
            .data(Blob::new("kept"))
            .send()
            .await
            .unwrap();
        let ddb = aws.dynamodb_client();
        testing::create_table(&ddb, &table, "id").await.unwrap();
        ddb.put_item()
            .table_name(&table)
            .item("id", AttributeValue::S("a".into()))
            .send()
            .await
            .unwrap();
        let s3 = aws.s3_client();
        s3.create_bucket().bucket(&bucket).send().await.unwrap();
        s3.put_object()
            .bucket(&bucket)
            .key("k")
            .body(b"kept".to_vec().into())
            .send()
            .await
            .unwrap();
    }

    let aws = LocalAws::builder()
        .persist_dir(dir.path())
        .start()
        .await
        .unwrap();
    let got = read_all(&aws.kinesis_client(), &stream).await;
    assert_eq!(got, [("k".to_owned(), b"kept".to_vec())]);
    let item = aws
        .dynamodb_client()
        .get_item()
        .table_name(&table)
        .key("id", AttributeValue::S("a".into()))
        .send()
        .await
        .unwrap();
    assert!(item.item.is_some());
    assert_eq!(get_object(&aws.s3_client(), &bucket, "k").await, b"kept");
}

#[tokio::test]
async fn shard_limit_enforcement_throttles_for_real() {
    let aws = LocalAws::builder()
        .enforce_shard_limits(true)
        .start()
        .await
        .unwrap();
    let kinesis = aws.kinesis_client();
    let stream = unique("throttled");
    testing::create_stream(&kinesis, &stream, 1).await.unwrap();
    // 3 × 500 records into one shard at once: well over 1000 records/s.
    let mut throttled = 0;
    for _ in 0..3 {
        let records = (0..500).map(|i| (format!("k{i}"), vec![0u8; 100]));
        let out = put_records(&kinesis, &stream, records).await.unwrap();
        throttled += out
            .records()
            .iter()
            .filter(|r| r.error_code() == Some("ProvisionedThroughputExceededException"))
            .count();
    }
    assert!(
        throttled >= 500,
        "only {throttled} of 1500 records throttled"
    );
}

#[tokio::test]
async fn dropping_the_stack_stops_the_servers() {
    if LocalAws::start().await.unwrap().backend() == Backend::External {
        eprintln!("SKIPPED: external servers are not ours to stop");
        return;
    }
    let aws = LocalAws::start().await.unwrap();
    let endpoint = aws.kinesis_endpoint().to_owned();
    drop(aws);
    let err = local_aws::kinesis_client(&endpoint)
        .list_streams()
        .send()
        .await
        .unwrap_err();
    // A dead endpoint is a dispatch (connection) failure, not a hang and not a service error.
    assert!(err.as_service_error().is_none(), "{err:?}");
}
