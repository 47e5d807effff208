//! The sink end to end on the local stack: a stream → a worker with `S3Sink` → the bucket.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use http::Method;
use kinesis_consumer::{InitialPosition, Worker};
use local_aws::fault::{Fault, FaultProxy, Op, Rule};
use local_aws::{LocalAws, testing};
use s3_sink::{SinkConfig, SinkError};
use tokio::time::Instant;

const RECORDS: usize = 600;
const MAX_RECORDS: usize = 50;

struct Fixture {
    aws: LocalAws,
    stream: String,
    bucket: String,
}

impl Fixture {
    async fn new() -> Fixture {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let aws = LocalAws::start().await.unwrap();
        // Each test has its own stack, so fixed names do. Short ones: s3s-fs stores an
        // object's metadata in a file named after bucket and whole key, and the keys hold two
        // 56-digit sequence numbers; long names exceed the file-name limit (a local 500).
        let stream = "s".to_owned();
        testing::create_stream(&aws.kinesis_client(), &stream, 2)
            .await
            .unwrap();
        let bucket = "sink".to_owned();
        aws.s3_client()
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
        let f = Fixture {
            aws,
            stream,
            bucket,
        };
        f.put(RECORDS).await;
        f
    }

    /// Puts records `0..n` (data `record-i`, keys spread over both shards).
    async fn put(&self, n: usize) {
        let ids: Vec<usize> = (0..n).collect();
        for chunk in ids.chunks(500) {
            let entries = chunk
                .iter()
                .map(|i| {
                    PutRecordsRequestEntry::builder()
                        .partition_key(format!("key-{}", i % 31))
                        .data(Blob::new(format!("record-{i}")))
                        .build()
                        .unwrap()
                })
                .collect();
            let out = self
                .aws
                .kinesis_client()
                .put_records()
                .stream_name(&self.stream)
                .set_records(Some(entries))
                .send()
                .await
                .unwrap();
            assert_eq!(out.failed_record_count(), Some(0));
        }
    }

    /// Runs a worker for `app` with a sink writing through `s3` until every record is in
    /// S3 (the tail is written at shutdown), then shuts it down gracefully.
    async fn run(&self, app: &str, s3: aws_sdk_s3::Client) {
        let sink = SinkConfig::new(s3, &self.bucket, &self.stream)
            .prefix("out/")
            .max_records(MAX_RECORDS)
            // Age cuts are not deterministic: keep them out of the replay test.
            .max_age(Duration::from_secs(3600))
            .put_attempts(5, Duration::from_millis(20), Duration::from_millis(200));
        sink.check_bucket().await.unwrap();
        let worker = Worker::builder(
            app,
            &self.stream,
            self.aws.kinesis_client(),
            self.aws.dynamodb_client(),
            sink.factory(),
        )
        .initial_position(InitialPosition::TrimHorizon)
        .idle_time_between_reads(Duration::from_millis(100))
        .build();
        let handle = worker.handle();
        let task = tokio::spawn(async move { worker.run().await.expect("worker runs") });
        // Full objects appear as the shards are read; at most MAX_RECORDS - 1 per shard stay
        // buffered until shutdown.
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.lines().await.len() < RECORDS - 2 * (MAX_RECORDS - 1) {
            assert!(Instant::now() < deadline, "timed out waiting for objects");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Everything is in the stream already: a few more reads drain both shards.
        tokio::time::sleep(Duration::from_secs(1)).await;
        handle.shutdown().await;
        task.await.unwrap();
    }

    /// Every object under the prefix: key → body.
    async fn objects(&self) -> BTreeMap<String, String> {
        let s3 = self.aws.s3_client();
        let mut out = BTreeMap::new();
        let mut token = None;
        loop {
            let page = s3
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix("out/")
                .set_continuation_token(token)
                .send()
                .await
                .unwrap();
            for object in page.contents() {
                let key = object.key().unwrap().to_owned();
                let body = s3
                    .get_object()
                    .bucket(&self.bucket)
                    .key(&key)
                    .send()
                    .await
                    .unwrap()
                    .body
                    .collect()
                    .await
                    .unwrap()
                    .into_bytes();
                out.insert(key, String::from_utf8(body.to_vec()).unwrap());
            }
            token = page.next_continuation_token().map(str::to_owned);
            if token.is_none() {
                return out;
            }
        }
    }

    /// Every NDJSON line of every object, parsed.
    async fn lines(&self) -> Vec<serde_json::Value> {
        self.objects()
            .await
            .values()
            .flat_map(|body| body.lines().map(|l| serde_json::from_str(l).unwrap()))
            .collect::<Vec<_>>()
    }

    /// Asserts that the bucket holds every record exactly once, and that each object's key
    /// names its first and last line.
    async fn assert_exactly_once(&self) {
        let objects = self.objects().await;
        let mut data = Vec::new();
        for (key, body) in &objects {
            let lines: Vec<serde_json::Value> = body
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert!(
                !lines.is_empty() && lines.len() <= MAX_RECORDS,
                "{key}: {} lines",
                lines.len()
            );
            let pos =
                |v: &serde_json::Value| format!("{}-{}", v["seq"].as_str().unwrap(), v["subseq"]);
            let name = key.rsplit('/').next().unwrap();
            assert_eq!(
                name,
                format!("{}_{}.ndjson", pos(&lines[0]), pos(&lines[lines.len() - 1])),
            );
            data.extend(lines.iter().map(|l| l["data"].as_str().unwrap().to_owned()));
        }
        let unique: BTreeSet<_> = data.iter().cloned().collect();
        let expected: BTreeSet<_> = (0..RECORDS).map(|i| format!("record-{i}")).collect();
        assert_eq!(unique, expected);
        assert_eq!(data.len(), RECORDS, "duplicates in S3");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_record_once_and_a_replay_rewrites_the_same_objects() {
    let f = Fixture::new().await;
    f.run(&testing::unique_name("app"), f.aws.s3_client()).await;
    f.assert_exactly_once().await;
    let first = f.objects().await;
    // Both shards got full objects and a tail.
    let shards: BTreeSet<_> = first.keys().map(|k| k.split('/').nth(2).unwrap()).collect();
    assert_eq!(shards.len(), 2, "{first:?}");

    // A fresh application (no checkpoints) replays the stream from TRIM_HORIZON into the
    // same prefix: the same cuts, the same keys, the same bytes, nothing added.
    f.run(&testing::unique_name("replay"), f.aws.s3_client())
        .await;
    let second = f.objects().await;
    assert_eq!(
        first.keys().collect::<Vec<_>>(),
        second.keys().collect::<Vec<_>>()
    );
    assert_eq!(first, second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_slow_down_is_retried() {
    let f = Fixture::new().await;
    let proxy = FaultProxy::start(f.aws.s3_endpoint()).await.unwrap();
    // More SlowDowns in a row than the SDK's own attempts (3): the sink's backoff retries.
    let rule = proxy.inject(
        Rule::on(Op::s3(Method::PUT))
            .times(4)
            .fault(Fault::slow_down()),
    );
    f.run(
        &testing::unique_name("app"),
        local_aws::s3_client(proxy.endpoint()),
    )
    .await;
    assert_eq!(proxy.fired(rule), 4);
    f.assert_exactly_once().await;
}

#[tokio::test]
async fn a_missing_bucket_is_a_startup_error() {
    let aws = LocalAws::start().await.unwrap();
    let err = SinkConfig::new(aws.s3_client(), "no-such-bucket", "stream")
        .check_bucket()
        .await
        .unwrap_err();
    assert!(matches!(err, SinkError::BucketNotFound { .. }), "{err:?}");
    assert_eq!(err.to_string(), "bucket no-such-bucket does not exist");
}
