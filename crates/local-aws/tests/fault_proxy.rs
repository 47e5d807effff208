//! The fault proxy in front of the local stack, driven through the real AWS SDK: every fault
//! must look to the SDK exactly like the real failure, and the upstream must see (or not see)
//! exactly what the fault says.
//!
//! Each test starts its own stack and proxy and uses unique names, so they run in parallel.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType};
use http::Method;
use local_aws::LocalAws;
use local_aws::fault::{Fault, FaultProxy, Op, PartialFailure, Rule};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    // Lower case and short: valid as a stream, table and bucket name.
    format!("{prefix}-{}-{n}-{nanos}", std::process::id())
}

/// The SDK's standard retry (3 attempts) with a short backoff, so throttling tests take
/// milliseconds, and a retry partition of its own, so parallel tests do not share (and drain)
/// one retry token bucket.
fn retry(max_attempts: u32) -> aws_sdk_kinesis::config::retry::RetryConfig {
    aws_sdk_kinesis::config::retry::RetryConfig::standard()
        .with_max_attempts(max_attempts)
        .with_initial_backoff(Duration::from_millis(5))
        .with_max_backoff(Duration::from_millis(50))
}

fn partition() -> aws_sdk_kinesis::config::retry::RetryPartition {
    aws_sdk_kinesis::config::retry::RetryPartition::new(unique("partition"))
}

fn kinesis_via(proxy: &FaultProxy, max_attempts: u32) -> aws_sdk_kinesis::Client {
    let config = local_aws::kinesis_client(proxy.endpoint())
        .config()
        .to_builder()
        .retry_config(retry(max_attempts))
        .retry_partition(partition())
        .build();
    aws_sdk_kinesis::Client::from_conf(config)
}

fn dynamodb_via(proxy: &FaultProxy, max_attempts: u32) -> aws_sdk_dynamodb::Client {
    let config = local_aws::dynamodb_client(proxy.endpoint())
        .config()
        .to_builder()
        .retry_config(retry(max_attempts))
        .retry_partition(partition())
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

fn s3_via(proxy: &FaultProxy, max_attempts: u32) -> aws_sdk_s3::Client {
    let config = local_aws::s3_client(proxy.endpoint())
        .config()
        .to_builder()
        .retry_config(retry(max_attempts))
        .retry_partition(partition())
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// A stack, a proxy in front of its Kinesis, and a one-shard stream created directly.
async fn kinesis_setup() -> (LocalAws, FaultProxy, aws_sdk_kinesis::Client, String) {
    let aws = LocalAws::start().await.unwrap();
    let proxy = FaultProxy::start(aws.kinesis_endpoint()).await.unwrap();
    let direct = aws.kinesis_client();
    let stream = unique("fp");
    local_aws::testing::create_stream(&direct, &stream, 1)
        .await
        .unwrap();
    (aws, proxy, direct, stream)
}

/// Every record's data in the stream, read directly from the upstream.
async fn read_all(kinesis: &aws_sdk_kinesis::Client, stream: &str) -> Vec<String> {
    local_aws::testing::read_stream(kinesis, stream)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, r)| String::from_utf8(r.data().as_ref().to_vec()).unwrap())
        .collect()
}

fn entry(data: &str) -> PutRecordsRequestEntry {
    PutRecordsRequestEntry::builder()
        .data(Blob::new(data))
        .partition_key(data)
        .build()
        .unwrap()
}

#[tokio::test]
async fn put_records_partial_failure_does_not_store_failed_entries() {
    let (_aws, proxy, direct, stream) = kinesis_setup().await;
    let kinesis = kinesis_via(&proxy, 3);
    let rule = proxy.inject(
        Rule::on("PutRecords")
            .once()
            .fault(Fault::partial_failure(PartialFailure::indexes([1, 3]))),
    );

    let records: Vec<_> = ["r0", "r1", "r2", "r3", "r4"].map(entry).into();
    let out = kinesis
        .put_records()
        .stream_name(&stream)
        .set_records(Some(records))
        .send()
        .await
        .unwrap();

    assert_eq!(out.failed_record_count(), Some(2));
    let codes: Vec<_> = out.records().iter().map(|r| r.error_code()).collect();
    assert_eq!(
        codes,
        [
            None,
            Some("ProvisionedThroughputExceededException"),
            None,
            Some("ProvisionedThroughputExceededException"),
            None
        ]
    );
    for (i, r) in out.records().iter().enumerate() {
        // A failed entry has a message and no sequence number, a stored one the reverse.
        assert_eq!(
            r.sequence_number().is_some(),
            i % 2 == 0,
            "entry {i}: {r:?}"
        );
        assert_eq!(r.error_message().is_some(), i % 2 == 1, "entry {i}: {r:?}");
    }
    // A partial failure is an HTTP 200: the SDK does not retry it.
    assert_eq!(proxy.count("PutRecords"), 1);
    assert_eq!(proxy.fired(rule), 1);
    assert_eq!(read_all(&direct, &stream).await, ["r0", "r2", "r4"]);
}

#[tokio::test]
async fn put_records_partial_failure_variants() {
    let (_aws, proxy, direct, stream) = kinesis_setup().await;
    let kinesis = kinesis_via(&proxy, 3);
    let put = |data: &[&str]| {
        kinesis
            .put_records()
            .stream_name(&stream)
            .set_records(Some(data.iter().copied().map(entry).collect()))
            .send()
    };

    // Every entry failing: nothing reaches the upstream, the answer is still a 200.
    proxy.inject(
        Rule::on("PutRecords")
            .once()
            .fault(Fault::partial_failure(PartialFailure::all())),
    );
    let out = put(&["a0", "a1"]).await.unwrap();
    assert_eq!(out.failed_record_count(), Some(2));
    assert!(out.records().iter().all(|r| r.error_code().is_some()));

    // Every 2nd entry with InternalFailure, stored anyway (not what Kinesis does).
    proxy.inject(Rule::on("PutRecords").once().fault(Fault::partial_failure(
        PartialFailure::every(2).internal_failure().stored_anyway(),
    )));
    let out = put(&["b0", "b1", "b2", "b3"]).await.unwrap();
    assert_eq!(out.failed_record_count(), Some(2));
    let codes: Vec<_> = out.records().iter().map(|r| r.error_code()).collect();
    assert_eq!(
        codes,
        [None, Some("InternalFailure"), None, Some("InternalFailure")]
    );

    assert_eq!(proxy.stats().faults("PutRecords"), 2);
    assert_eq!(read_all(&direct, &stream).await, ["b0", "b1", "b2", "b3"]);
}

#[tokio::test]
async fn throttled_twice_then_succeeds_on_the_third_attempt() {
    let (_aws, proxy, direct, stream) = kinesis_setup().await;
    let kinesis = kinesis_via(&proxy, 3);
    proxy.inject(Rule::on("PutRecord").times(2).fault(Fault::throttle()));

    kinesis
        .put_record()
        .stream_name(&stream)
        .data(Blob::new("once"))
        .partition_key("k")
        .send()
        .await
        .unwrap();

    let stats = proxy.stats();
    assert_eq!(
        stats.requests("PutRecord"),
        3,
        "two throttled attempts, one success"
    );
    assert_eq!(stats.faults("PutRecord"), 2);
    assert_eq!(read_all(&direct, &stream).await, ["once"]);
}

#[tokio::test]
async fn kinesis_error_answers_are_classified_like_real_ones() {
    let (_aws, proxy, _direct, stream) = kinesis_setup().await;
    let kinesis = kinesis_via(&proxy, 3);
    let describe = || {
        kinesis
            .describe_stream_summary()
            .stream_name(&stream)
            .send()
    };

    // (fault, expected code, expected status, attempts the SDK makes with 3 allowed)
    let cases = [
        (
            Fault::throttle(),
            "ProvisionedThroughputExceededException",
            400,
            3,
        ),
        (Fault::internal_error(), "InternalFailure", 500, 3),
        (Fault::service_unavailable(), "ServiceUnavailable", 503, 3),
        (
            Fault::error(400, "ThrottlingException", "slow down"),
            "ThrottlingException",
            400,
            3,
        ),
        // A client error is final: no retry.
        (
            Fault::error(400, "ValidationException", "bad"),
            "ValidationException",
            400,
            1,
        ),
    ];
    for (fault, code, status, attempts) in cases {
        proxy.clear();
        proxy.reset_stats();
        proxy.inject(Rule::on("DescribeStreamSummary").fault(fault));
        let err = describe().await.unwrap_err();
        assert!(matches!(err, SdkError::ServiceError(_)), "{code}: {err:?}");
        assert_eq!(err.code(), Some(code));
        assert_eq!(err.raw_response().unwrap().status().as_u16(), status);
        assert!(err.meta().message().is_some());
        assert_eq!(proxy.count("DescribeStreamSummary"), attempts, "{code}");
    }

    // The modeled exception is recognised as such.
    proxy.clear();
    proxy.inject(Rule::on("PutRecord").fault(Fault::throttle()));
    let err = kinesis
        .put_record()
        .stream_name(&stream)
        .data(Blob::new("x"))
        .partition_key("k")
        .send()
        .await
        .unwrap_err();
    assert!(
        err.into_service_error()
            .is_provisioned_throughput_exceeded_exception()
    );
}

#[tokio::test]
async fn rules_apply_in_insertion_order() {
    let (_aws, proxy, _direct, stream) = kinesis_setup().await;
    let kinesis = kinesis_via(&proxy, 5);
    let throttle = proxy.inject(Rule::on("ListShards").times(2).fault(Fault::throttle()));
    let internal = proxy.inject(Rule::on("ListShards").once().fault(Fault::internal_error()));
    // Shadowed: only ever consulted once the first two are spent.
    let never = proxy.inject(Rule::on("ListShards").after(1).fault(Fault::throttle()));

    kinesis
        .list_shards()
        .stream_name(&stream)
        .send()
        .await
        .unwrap();

    assert_eq!(proxy.count("ListShards"), 4);
    assert_eq!(
        (
            proxy.fired(throttle),
            proxy.fired(internal),
            proxy.fired(never)
        ),
        (2, 1, 0)
    );
    assert!(proxy.remove(never));
    assert!(!proxy.remove(never));
}

#[tokio::test]
async fn reset_before_forwarding_is_not_applied() {
    let (_aws, proxy, direct, stream) = kinesis_setup().await;
    proxy.inject(
        Rule::on("PutRecord")
            .once()
            .fault(Fault::reset_before_forwarding()),
    );

    // Without retries, the SDK reports the reset as an I/O dispatch failure.
    let no_retry = kinesis_via(&proxy, 1);
    let err = no_retry
        .put_record()
        .stream_name(&stream)
        .data(Blob::new("lost"))
        .partition_key("k")
        .send()
        .await
        .unwrap_err();
    match &err {
        SdkError::DispatchFailure(failure) => assert!(failure.is_io(), "{err:?}"),
        other => panic!("expected an I/O dispatch failure, got {other:?}"),
    }

    // With retries, the retry succeeds, and the record is stored once.
    proxy.inject(
        Rule::on("PutRecord")
            .once()
            .fault(Fault::reset_before_forwarding()),
    );
    proxy.reset_stats();
    kinesis_via(&proxy, 3)
        .put_record()
        .stream_name(&stream)
        .data(Blob::new("retried"))
        .partition_key("k")
        .send()
        .await
        .unwrap();
    assert_eq!(proxy.count("PutRecord"), 2);
    assert_eq!(read_all(&direct, &stream).await, ["retried"]);
}

#[tokio::test]
async fn reset_after_forwarding_makes_the_retry_store_twice() {
    let (_aws, proxy, direct, stream) = kinesis_setup().await;
    let kinesis = kinesis_via(&proxy, 3);
    proxy.inject(
        Rule::on("PutRecords")
            .once()
            .fault(Fault::reset_after_forwarding()),
    );

    let out = kinesis
        .put_records()
        .stream_name(&stream)
        .records(entry("dup"))
        .send()
        .await
        .unwrap();

    // The client saw one success...
    assert_eq!(out.failed_record_count(), Some(0));
    assert_eq!(proxy.count("PutRecords"), 2);
    // ...but the first attempt had been applied before the reset.
    assert_eq!(read_all(&direct, &stream).await, ["dup", "dup"]);
}

/// A hand-written ListStreams request, for tests that need to see the raw socket. The local
/// Kinesis wants an `Authorization` header but does not check the signature.
fn raw_list_streams() -> String {
    "POST / HTTP/1.1\r\nHost: kinesis.local\r\n\
     X-Amz-Target: Kinesis_20131202.ListStreams\r\n\
     X-Amz-Date: 20260101T000000Z\r\n\
     Authorization: AWS4-HMAC-SHA256 Credential=local-aws/20260101/us-east-1/kinesis/aws4_request, \
     SignedHeaders=host;x-amz-date;x-amz-target, Signature=00\r\n\
     Content-Type: application/x-amz-json-1.1\r\nContent-Length: 2\r\n\r\n{}"
        .to_owned()
}

#[tokio::test]
async fn resets_are_tcp_rsts_not_graceful_closes() {
    let aws = LocalAws::start().await.unwrap();
    let proxy = FaultProxy::start(aws.kinesis_endpoint()).await.unwrap();
    let addr = proxy.endpoint().trim_start_matches("http://").to_owned();
    let request = raw_list_streams();

    for fault in [
        Fault::reset_before_forwarding(),
        Fault::reset_after_forwarding(),
    ] {
        proxy.clear();
        proxy.inject(Rule::on("ListStreams").once().fault(fault));
        let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
        socket.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let err = socket.read_to_end(&mut buf).await.unwrap_err();
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::ConnectionReset,
            "read {buf:?}"
        );
        assert!(buf.is_empty());
    }

    // Untouched requests are answered, on a connection that stays open.
    proxy.clear();
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut buf = [0u8; 12];
    socket.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
}

#[tokio::test]
async fn latency_beyond_the_attempt_timeout() {
    let (_aws, proxy, _direct, stream) = kinesis_setup().await;
    let delay = Duration::from_secs(10);
    proxy.inject(
        Rule::on("DescribeStreamSummary")
            .once()
            .fault(Fault::delay(delay)),
    );
    let config = kinesis_via(&proxy, 3)
        .config()
        .to_builder()
        .timeout_config(
            aws_sdk_kinesis::config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(Duration::from_millis(300))
                .build(),
        )
        .build();
    let kinesis = aws_sdk_kinesis::Client::from_conf(config);

    let started = Instant::now();
    kinesis
        .describe_stream_summary()
        .stream_name(&stream)
        .send()
        .await
        .unwrap();
    // The first attempt timed out and the retry went through.
    assert!(started.elapsed() < delay, "took {:?}", started.elapsed());
    assert_eq!(proxy.count("DescribeStreamSummary"), 2);

    // Without retries the timeout surfaces as such.
    proxy.inject(
        Rule::on("DescribeStreamSummary")
            .once()
            .fault(Fault::delay(delay)),
    );
    let no_retry = aws_sdk_kinesis::Client::from_conf(
        kinesis.config().to_builder().retry_config(retry(1)).build(),
    );
    let err = no_retry
        .describe_stream_summary()
        .stream_name(&stream)
        .send()
        .await
        .unwrap_err();
    assert!(matches!(err, SdkError::TimeoutError(_)), "{err:?}");
}

#[tokio::test]
async fn a_slow_answer_after_applying_makes_the_retry_store_twice() {
    let (_aws, proxy, direct, stream) = kinesis_setup().await;
    proxy.inject(
        Rule::on("PutRecord")
            .once()
            .fault(Fault::delay_response(Duration::from_secs(10))),
    );
    let config = kinesis_via(&proxy, 3)
        .config()
        .to_builder()
        .timeout_config(
            aws_sdk_kinesis::config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(Duration::from_millis(500))
                .build(),
        )
        .build();
    aws_sdk_kinesis::Client::from_conf(config)
        .put_record()
        .stream_name(&stream)
        .data(Blob::new("slow"))
        .partition_key("k")
        .send()
        .await
        .unwrap();
    assert_eq!(proxy.count("PutRecord"), 2);
    assert_eq!(read_all(&direct, &stream).await, ["slow", "slow"]);
}

#[tokio::test]
async fn truncated_and_garbled_bodies_fail_the_call() {
    let (_aws, proxy, _direct, stream) = kinesis_setup().await;
    let kinesis = kinesis_via(&proxy, 1);
    let describe = || {
        kinesis
            .describe_stream_summary()
            .stream_name(&stream)
            .send()
    };

    proxy.inject(
        Rule::on("DescribeStreamSummary")
            .once()
            .fault(Fault::truncate_body()),
    );
    // The SDK reads fewer bytes than Content-Length announced: an incomplete-body error.
    let err = describe().await.unwrap_err();
    assert!(matches!(err, SdkError::ResponseError(_)), "{err:?}");

    proxy.inject(
        Rule::on("DescribeStreamSummary")
            .once()
            .fault(Fault::garble_body()),
    );
    // A 200 whose body does not parse.
    let err = describe().await.unwrap_err();
    assert!(matches!(err, SdkError::ResponseError(_)), "{err:?}");

    // Rules spent: the next call goes through.
    describe().await.unwrap();
    assert_eq!(proxy.count("DescribeStreamSummary"), 3);
    assert_eq!(proxy.stats().total_faults(), 2);
}

#[tokio::test]
async fn truncated_body_stops_short_of_its_content_length() {
    let aws = LocalAws::start().await.unwrap();
    let proxy = FaultProxy::start(aws.kinesis_endpoint()).await.unwrap();
    proxy.inject(Rule::on("ListStreams").fault(Fault::truncate_body()));
    let addr = proxy.endpoint().trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    socket
        .write_all(raw_list_streams().as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    // The proxy closes after half the body (a graceful close or a reset, either is fine).
    let _ = socket.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length: ")
                .map(str::to_owned)
        })
        .expect("content-length")
        .parse()
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        length > 0 && body.len() == length / 2,
        "{length} announced, got {body:?}"
    );
}

async fn create_table(dynamodb: &aws_sdk_dynamodb::Client, table: &str) {
    local_aws::testing::create_table(dynamodb, table, "pk")
        .await
        .unwrap();
}

#[tokio::test]
async fn dynamodb_throttling_on_update_item() {
    let aws = LocalAws::start().await.unwrap();
    let proxy = FaultProxy::start(aws.dynamodb_endpoint()).await.unwrap();
    let table = unique("fp");
    create_table(&aws.dynamodb_client(), &table).await;
    let dynamodb = dynamodb_via(&proxy, 3);
    let update = || {
        dynamodb
            .update_item()
            .table_name(&table)
            .key("pk", AttributeValue::S("a".into()))
            .update_expression("ADD n :one")
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .send()
    };

    // Throttled twice, then applied once.
    proxy.inject(Rule::on("UpdateItem").times(2).fault(Fault::throttle()));
    update().await.unwrap();
    assert_eq!(proxy.count("UpdateItem"), 3);

    // Throttled throughout: the modeled exception after three attempts.
    proxy.inject(Rule::on("UpdateItem").fault(Fault::throttle()));
    let err = update().await.unwrap_err();
    assert_eq!(err.code(), Some("ProvisionedThroughputExceededException"));
    assert!(
        err.into_service_error()
            .is_provisioned_throughput_exceeded_exception()
    );
    assert_eq!(proxy.count("UpdateItem"), 6);

    // The other throttling flavour, with the namespaced __type DynamoDB sends.
    proxy.clear();
    proxy.inject(Rule::on("UpdateItem").fault(Fault::error(400, "ThrottlingException", "slow")));
    let err = update().await.unwrap_err();
    assert_eq!(err.code(), Some("ThrottlingException"));
    assert_eq!(proxy.count("UpdateItem"), 9);

    proxy.clear();
    let item = aws
        .dynamodb_client()
        .get_item()
        .table_name(&table)
        .key("pk", AttributeValue::S("a".into()))
        .send()
        .await
        .unwrap();
    assert_eq!(item.item().unwrap()["n"], AttributeValue::N("1".into()));
}

#[tokio::test]
async fn dynamodb_reset_after_a_conditional_write_fails_the_retry() {
    let aws = LocalAws::start().await.unwrap();
    let proxy = FaultProxy::start(aws.dynamodb_endpoint()).await.unwrap();
    let table = unique("fp");
    create_table(&aws.dynamodb_client(), &table).await;
    let dynamodb = dynamodb_via(&proxy, 3);
    proxy.inject(
        Rule::on("UpdateItem")
            .once()
            .fault(Fault::reset_after_forwarding()),
    );

    let err = dynamodb
        .update_item()
        .table_name(&table)
        .key("pk", AttributeValue::S("lease-1".into()))
        .update_expression("SET lease_owner = :me")
        .condition_expression("attribute_not_exists(pk)")
        .expression_attribute_values(":me", AttributeValue::S("worker-a".into()))
        .send()
        .await
        .unwrap_err();

    // The first attempt took the lease; the retry then failed against it.
    let err = err.into_service_error();
    assert!(err.is_conditional_check_failed_exception(), "{err:?}");
    assert_eq!(proxy.count("UpdateItem"), 2);
    let item = aws
        .dynamodb_client()
        .get_item()
        .table_name(&table)
        .key("pk", AttributeValue::S("lease-1".into()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        item.item().unwrap()["lease_owner"],
        AttributeValue::S("worker-a".into())
    );
}

#[tokio::test]
async fn s3_slow_down_then_success_and_sigv4_through_the_proxy() {
    let aws = LocalAws::start().await.unwrap();
    let proxy = FaultProxy::start(aws.s3_endpoint()).await.unwrap();
    let bucket = unique("fp");
    aws.s3_client()
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let s3 = s3_via(&proxy, 3);

    // No fault: s3s-fs verifies SigV4, so this passes only if the proxy kept the Host header.
    s3.put_object()
        .bucket(&bucket)
        .key("plain")
        .body(b"signed".to_vec().into())
        .send()
        .await
        .unwrap();

    proxy.inject(
        Rule::on(Op::s3_path(Method::PUT, format!("/{bucket}/")))
            .once()
            .fault(Fault::slow_down()),
    );
    s3.put_object()
        .bucket(&bucket)
        .key("retried")
        .body(b"after slow down".to_vec().into())
        .send()
        .await
        .unwrap();
    assert_eq!(proxy.count("PUT"), 3);
    assert_eq!(proxy.stats().faults("PUT"), 1);

    let got = s3
        .get_object()
        .bucket(&bucket)
        .key("retried")
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.body.collect().await.unwrap().into_bytes().as_ref(),
        b"after slow down"
    );

    // SlowDown throughout: classified as throttling (retried), surfaced with its code.
    proxy.inject(Rule::on(Op::s3(Method::GET)).fault(Fault::throttle()));
    proxy.reset_stats();
    let err = s3
        .get_object()
        .bucket(&bucket)
        .key("plain")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("SlowDown"));
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 503);
    assert_eq!(proxy.count("GET"), 3);

    // A HEAD error has no body; the SDK goes by the status.
    proxy.clear();
    proxy.inject(Rule::on(Op::s3(Method::HEAD)).fault(Fault::service_unavailable()));
    let err = s3
        .head_object()
        .bucket(&bucket)
        .key("plain")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 503);
    assert_eq!(proxy.count("HEAD"), 3);
}

#[tokio::test]
async fn subscribe_to_shard_streams_through_the_proxy() {
    use aws_sdk_kinesis::types::{ConsumerStatus, StartingPosition, SubscribeToShardEventStream};

    let (_aws, proxy, direct, stream) = kinesis_setup().await;
    let kinesis = kinesis_via(&proxy, 3);
    let stream_arn = direct
        .describe_stream_summary()
        .stream_name(&stream)
        .send()
        .await
        .unwrap()
        .stream_description_summary
        .unwrap()
        .stream_arn;
    let consumer = direct
        .register_stream_consumer()
        .stream_arn(&stream_arn)
        .consumer_name("fp")
        .send()
        .await
        .unwrap()
        .consumer
        .unwrap();
    for _ in 0..200 {
        let described = direct
            .describe_stream_consumer()
            .consumer_arn(consumer.consumer_arn())
            .send()
            .await
            .unwrap();
        if described.consumer_description().unwrap().consumer_status() == &ConsumerStatus::Active {
            break;
        }
        // Waiting for the emulator's CREATING -> ACTIVE transition.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut subscription = kinesis
        .subscribe_to_shard()
        .consumer_arn(consumer.consumer_arn())
        .shard_id("shardId-000000000000")
        .starting_position(
            StartingPosition::builder()
                .r#type(ShardIteratorType::Latest)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    // Written after the subscription started: it can only arrive through the open stream.
    direct
        .put_record()
        .stream_name(&stream)
        .data(Blob::new("pushed"))
        .partition_key("k")
        .send()
        .await
        .unwrap();
    let started = Instant::now();
    let data = loop {
        match subscription.event_stream.recv().await.unwrap() {
            Some(SubscribeToShardEventStream::SubscribeToShardEvent(event)) => {
                if let Some(record) = event.records().first() {
                    break record.data().as_ref().to_vec();
                }
            }
            Some(_) => {}
            None => panic!("the event stream ended"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no record pushed"
        );
    };
    assert_eq!(data, b"pushed");
    assert_eq!(proxy.count("SubscribeToShard"), 1);
}

#[tokio::test]
async fn dropping_the_proxy_closes_its_port() {
    let aws = LocalAws::start().await.unwrap();
    let proxy = FaultProxy::start(aws.kinesis_endpoint()).await.unwrap();
    let addr = proxy.endpoint().trim_start_matches("http://").to_owned();
    let open = tokio::net::TcpStream::connect(&addr).await.unwrap();
    drop(proxy);
    // The accept task is aborted on drop; let the runtime run the cancellation.
    tokio::task::yield_now().await;
    assert!(tokio::net::TcpStream::connect(&addr).await.is_err());
    // The open connection was aborted too: it reads EOF (or a reset), never hangs.
    let mut open = open;
    let mut buf = [0u8; 1];
    assert!(!matches!(open.read(&mut buf).await, Ok(1)));
}
