//! The sink on the local stack through the real SDK: a stream → a worker with `S3Sink` → the
//! bucket, failures injected with `FaultProxy`; the health endpoint on a worker's
//! `WorkerHandle::health`; the binary's startup check, health, metrics (Prometheus and EMF,
//! one process each: the global recorder is per process) and SIGTERM.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::Method;
use kinesis_consumer::{
    Checkpointer, InitInput, InitialPosition, ProcessInput, ProcessorError, RecordProcessor,
    ShardEndedInput, Worker, WorkerHandle,
};
use local_aws::fault::{Fault, FaultProxy, Op, Rule};
use local_aws::{LocalAws, testing};
use s3_sink::health::{self, HealthState, MetricsPage};
use s3_sink::{Compression, Format, S3Sink, SinkConfig, SinkError};
use tokio::task::JoinHandle;
use tokio::time::Instant;

const RECORDS: usize = 600;
const MAX_RECORDS: usize = 50;
/// Bounds a hung run only; nothing is timed.
const DEADLINE: Duration = Duration::from_secs(90);

/// The data of every record a worker's sinks accepted (`process_records` returned `Ok`).
type Delivered = Arc<Mutex<BTreeSet<String>>>;

/// The sink, noting what it accepted: so that a test knows when every record has been read
/// and buffered, and a graceful shutdown will write the rest.
struct Noting {
    sink: S3Sink,
    delivered: Delivered,
}

#[async_trait]
impl RecordProcessor for Noting {
    async fn initialize(&mut self, input: InitInput) -> Result<(), ProcessorError> {
        self.sink.initialize(input).await
    }

    async fn process_records(&mut self, input: ProcessInput<'_>) -> Result<(), ProcessorError> {
        let data: Vec<String> = input
            .records
            .iter()
            .map(|r| String::from_utf8_lossy(&r.data).into_owned())
            .collect();
        self.sink.process_records(input).await?;
        self.delivered.lock().unwrap().extend(data);
        Ok(())
    }

    async fn lease_lost(&mut self) {
        self.sink.lease_lost().await
    }

    async fn shard_ended(&mut self, input: ShardEndedInput<'_>) -> Result<(), ProcessorError> {
        self.sink.shard_ended(input).await
    }

    async fn shutdown_requested(
        &mut self,
        checkpointer: &Checkpointer,
    ) -> Result<(), ProcessorError> {
        self.sink.shutdown_requested(checkpointer).await
    }
}

struct Running {
    handle: WorkerHandle,
    task: JoinHandle<()>,
    delivered: Delivered,
}

impl Running {
    /// Graceful shutdown: buffers written, checkpointed, leases released.
    async fn stop(self) {
        self.handle.shutdown().await;
        self.task.await.unwrap();
    }

    /// A crash: the worker's future is dropped; nothing is written or released any more.
    fn crash(self) {
        self.task.abort();
    }
}

struct Fixture {
    aws: LocalAws,
    stream: String,
    bucket: String,
}

impl Fixture {
    async fn new(shards: i32) -> Fixture {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let aws = LocalAws::start().await.unwrap();
        // Each test has its own stack, so fixed names do. Short ones: s3s-fs stores an
        // object's metadata in a file named after bucket and whole key, and the keys hold two
        // 56-digit sequence numbers; long names exceed the file-name limit (a local 500).
        let stream = "s".to_owned();
        testing::create_stream(&aws.kinesis_client(), &stream, shards)
            .await
            .unwrap();
        let bucket = "sink".to_owned();
        aws.s3_client()
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .unwrap();
        Fixture {
            aws,
            stream,
            bucket,
        }
    }

    /// Puts records `ids` (data `record-i`, keys spread over the shards).
    async fn put(&self, ids: Range<usize>) {
        let records = ids.map(|i| (format!("key-{}", i % 31), format!("record-{i}")));
        testing::put_records(&self.aws.kinesis_client(), &self.stream, records)
            .await
            .unwrap();
    }

    /// The sink as most tests use it: count cuts only, fast retries.
    fn sink(&self, s3: aws_sdk_s3::Client) -> SinkConfig {
        SinkConfig::new(s3, &self.bucket, &self.stream)
            .prefix("out/")
            .max_records(MAX_RECORDS)
            // No age cuts: the tests that need them say so.
            .max_age(Duration::from_secs(3600))
            .attempts(5, Duration::from_millis(20), Duration::from_millis(200))
    }

    /// Starts a worker of application `app` with `sink`.
    async fn start(&self, app: &str, sink: SinkConfig, opts: Opts) -> Running {
        sink.check_bucket().await.unwrap();
        let delivered = Delivered::default();
        let factory = sink.factory();
        let noted = delivered.clone();
        let worker = Worker::builder(
            app,
            &self.stream,
            self.aws.kinesis_client(),
            self.aws.dynamodb_client(),
            move || Noting {
                sink: factory(),
                delivered: noted.clone(),
            },
        )
        .initial_position(InitialPosition::TrimHorizon)
        .idle_time_between_reads(Duration::from_millis(200))
        .failover_time(opts.failover)
        .call_processor_on_empty_batches(opts.empty_batches)
        .build();
        let handle = worker.handle();
        let task = tokio::spawn(async move { worker.run().await.expect("worker runs") });
        Running {
            handle,
            task,
            delivered,
        }
    }

    /// Waits (polling, with a deadline) until `done` holds.
    async fn wait_until<F>(&self, what: &str, mut done: impl FnMut() -> F)
    where
        F: Future<Output = bool>,
    {
        let deadline = Instant::now() + DEADLINE;
        while !done().await {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every record of `ids` is in S3 or accepted by `worker`'s sinks (so its
    /// shutdown writes the rest).
    async fn wait_until_consumed(&self, worker: &Running, ids: Range<usize>) {
        let expected: BTreeSet<String> = ids.map(|i| format!("record-{i}")).collect();
        self.wait_until("every record consumed", || async {
            let mut seen = worker.delivered.lock().unwrap().clone();
            seen.extend(self.data().await);
            expected.is_subset(&seen)
        })
        .await;
    }

    /// Every object under the prefix: key → body (decompressed when the key ends in `.gz`).
    async fn objects(&self) -> BTreeMap<String, Vec<u8>> {
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
                let body = self.get(&key).await;
                let body = if key.ends_with(".gz") {
                    let mut plain = Vec::new();
                    flate2::read::GzDecoder::new(&body[..])
                        .read_to_end(&mut plain)
                        .unwrap();
                    plain
                } else {
                    body.to_vec()
                };
                out.insert(key, body);
            }
            token = page.next_continuation_token().map(str::to_owned);
            if token.is_none() {
                return out;
            }
        }
    }

    async fn get(&self, key: &str) -> Bytes {
        self.aws
            .s3_client()
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .into_bytes()
    }

    /// The `data` of every NDJSON line in the bucket.
    async fn data(&self) -> Vec<String> {
        self.objects()
            .await
            .values()
            .flat_map(|body| lines(body))
            .map(|l| l["data"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Asserts that the bucket holds records `0..n` exactly once, and that each object's key
    /// names its first and last line.
    async fn assert_exactly_once(&self, n: usize, max_per_object: usize) {
        let objects = self.objects().await;
        let mut data = Vec::new();
        for (key, body) in &objects {
            let lines = lines(body);
            assert!(
                !lines.is_empty() && lines.len() <= max_per_object,
                "{key}: {} lines",
                lines.len()
            );
            let pos =
                |v: &serde_json::Value| format!("{}-{}", v["seq"].as_str().unwrap(), v["subseq"]);
            let name = key.rsplit('/').next().unwrap();
            let range = format!("{}_{}", pos(&lines[0]), pos(&lines[lines.len() - 1]));
            assert!(
                name == format!("{range}.ndjson") || name == format!("{range}.ndjson.gz"),
                "{name} does not name {range}"
            );
            data.extend(lines.iter().map(|l| l["data"].as_str().unwrap().to_owned()));
        }
        let unique: BTreeSet<_> = data.iter().cloned().collect();
        let expected: BTreeSet<_> = (0..n).map(|i| format!("record-{i}")).collect();
        assert_eq!(unique, expected);
        assert_eq!(data.len(), n, "duplicates in S3");
    }
}

/// Worker settings that differ between tests.
#[derive(Clone)]
struct Opts {
    empty_batches: bool,
    failover: Duration,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            empty_batches: false,
            failover: Duration::from_secs(10),
        }
    }
}

fn lines(body: &[u8]) -> Vec<serde_json::Value> {
    std::str::from_utf8(body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_record_once_and_a_replay_rewrites_the_same_objects() {
    let f = Fixture::new(2).await;
    f.put(0..RECORDS).await;
    let w = f
        .start(
            &testing::unique_name("app"),
            f.sink(f.aws.s3_client()),
            Opts::default(),
        )
        .await;
    f.wait_until_consumed(&w, 0..RECORDS).await;
    w.stop().await;
    f.assert_exactly_once(RECORDS, MAX_RECORDS).await;
    let first = f.objects().await;
    // Both shards got full objects and a tail.
    let shards: BTreeSet<_> = first.keys().map(|k| k.split('/').nth(2).unwrap()).collect();
    assert_eq!(shards.len(), 2, "{first:?}");

    // A fresh application (no checkpoints) replays the stream from TRIM_HORIZON into the
    // same prefix: the same cuts, the same keys, the same bytes, nothing added.
    let w = f
        .start(
            &testing::unique_name("replay"),
            f.sink(f.aws.s3_client()),
            Opts::default(),
        )
        .await;
    f.wait_until("the replay to read everything", || async {
        w.delivered.lock().unwrap().len() == RECORDS
    })
    .await;
    w.stop().await;
    assert_eq!(f.objects().await, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn objects_written_but_not_checkpointed_before_a_crash_are_rewritten_under_the_same_keys() {
    let f = Fixture::new(2).await;
    f.put(0..RECORDS).await;
    let app = testing::unique_name("app");
    let quick = Opts {
        failover: Duration::from_secs(1),
        ..Opts::default()
    };
    // After 4 good writes, every PutObject is stored but answered with a connection reset:
    // objects land in S3, the sink never learns it, nothing more is checkpointed.
    let proxy = FaultProxy::start(f.aws.s3_endpoint()).await.unwrap();
    let lost = proxy.inject(
        Rule::on(Op::s3(Method::PUT))
            .after(4)
            .always()
            .fault(Fault::reset_after_forwarding()),
    );
    let crashing = f
        .start(
            &app,
            f.sink(local_aws::s3_client(proxy.endpoint())),
            quick.clone(),
        )
        .await;
    f.wait_until("objects written but not checkpointed", || async {
        proxy.fired(lost) >= 3
    })
    .await;
    crashing.crash();
    let orphans: BTreeSet<String> = f.objects().await.into_keys().collect();
    assert!(orphans.len() > 4, "{orphans:?}");

    // Another worker takes the expired leases, resumes after the last checkpoints and cuts
    // the same batches: the orphans are rewritten, not duplicated.
    let w = f.start(&app, f.sink(f.aws.s3_client()), quick).await;
    f.wait_until_consumed(&w, 0..RECORDS).await;
    w.stop().await;
    f.assert_exactly_once(RECORDS, MAX_RECORDS).await;
    let keys: BTreeSet<String> = f.objects().await.into_keys().collect();
    assert!(orphans.is_subset(&keys), "{orphans:?} not in {keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_throttling_5xx_resets_and_timeouts_are_retried_without_loss() {
    let f = Fixture::new(2).await;
    f.put(0..RECORDS).await;
    let proxy = FaultProxy::start(f.aws.s3_endpoint()).await.unwrap();
    // Eight failed PUTs in a row: the sink's own loop (the SDK's retries are off) rides them
    // out within its 10 attempts.
    let put = || Rule::on(Op::s3(Method::PUT));
    let rules = [
        proxy.inject(put().times(3).fault(Fault::slow_down())),
        proxy.inject(put().times(2).fault(Fault::internal_error())),
        proxy.inject(put().once().fault(Fault::service_unavailable())),
        proxy.inject(put().once().fault(Fault::reset_before_forwarding())),
        // Stored, but answered after the attempt timed out.
        proxy.inject(
            put()
                .once()
                .fault(Fault::delay_response(Duration::from_secs(2))),
        ),
    ];
    let sink = f
        .sink(local_aws::s3_client(proxy.endpoint()))
        .attempts(10, Duration::from_millis(20), Duration::from_millis(200))
        .attempt_timeout(Duration::from_millis(500));
    let w = f
        .start(&testing::unique_name("app"), sink, Opts::default())
        .await;
    f.wait_until_consumed(&w, 0..RECORDS).await;
    w.stop().await;
    let fired: Vec<u64> = rules.iter().map(|r| proxy.fired(*r)).collect();
    assert_eq!(fired, [3, 2, 1, 1, 1]);
    f.assert_exactly_once(RECORDS, MAX_RECORDS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quiet_shard_is_written_by_age_and_a_replay_cuts_the_same_objects() {
    let f = Fixture::new(1).await;
    let sink = || {
        f.sink(f.aws.s3_client())
            .max_records(1000)
            .max_age(Duration::from_secs(1))
            .age_grace(Duration::from_secs(2))
    };
    let empty_batches = || Opts {
        empty_batches: true,
        ..Opts::default()
    };
    let w = f
        .start(&testing::unique_name("app"), sink(), empty_batches())
        .await;
    // Far below the count and size limits: only the age writes these, while the worker runs.
    f.put(0..10).await;
    f.wait_until("the first group written by age", || async {
        f.data().await.len() == 10
    })
    .await;
    f.put(10..20).await;
    f.wait_until("the second group written by age", || async {
        f.data().await.len() == 20
    })
    .await;
    w.stop().await;
    f.assert_exactly_once(20, 20).await;
    let first = f.objects().await;
    assert!(first.len() >= 2, "{:?}", first.keys());

    // A replay reads both groups at once, long after they arrived: the arrival times, not
    // the reads, cut them, so the objects are the same.
    let w = f
        .start(&testing::unique_name("replay"), sink(), empty_batches())
        .await;
    f.wait_until("the replay to read everything", || async {
        w.delivered.lock().unwrap().len() == 20
    })
    .await;
    w.stop().await;
    assert_eq!(
        f.objects().await.keys().collect::<Vec<_>>(),
        first.keys().collect::<Vec<_>>()
    );
    assert_eq!(f.objects().await, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gzip_objects_decompress_to_the_same_lines() {
    let f = Fixture::new(2).await;
    f.put(0..RECORDS).await;
    let sink = f.sink(f.aws.s3_client()).compression(Compression::Gzip);
    let w = f
        .start(&testing::unique_name("app"), sink, Opts::default())
        .await;
    f.wait_until_consumed(&w, 0..RECORDS).await;
    w.stop().await;
    // `objects` decompresses by the key's extension.
    f.assert_exactly_once(RECORDS, MAX_RECORDS).await;
    let keys: Vec<String> = f.objects().await.into_keys().collect();
    assert!(keys.iter().all(|k| k.ends_with(".ndjson.gz")), "{keys:?}");
    let head = f
        .aws
        .s3_client()
        .head_object()
        .bucket(&f.bucket)
        .key(&keys[0])
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_encoding(), Some("gzip"));
    assert_eq!(head.content_type(), Some("application/x-ndjson"));
    let stored = f.get(&keys[0]).await;
    assert_eq!(&stored[..2], [0x1f, 0x8b], "a gzip member");
}

const MIB: usize = 1024 * 1024;

/// Multipart uploads are exercised through `write_object`, the call the sink makes for every
/// object, with a short key: the local S3 keeps an upload's metadata in a file named after
/// bucket, key and upload id, and a sink key (two 56-digit sequence numbers and the shard
/// id) makes that name longer than a file name may be. Real S3 has no such limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_objects_are_uploaded_in_parts_of_at_least_5_mib() {
    let f = Fixture::new(1).await;
    let proxy = FaultProxy::start(f.aws.s3_endpoint()).await.unwrap();
    // The second part fails once with a 500: retried alone.
    let failed = proxy.inject(
        Rule::on(Op::s3(Method::PUT))
            .after(1)
            .once()
            .fault(Fault::internal_error()),
    );
    // The smallest part size S3 accepts (the local S3 enforces it too: a smaller part that
    // is not the last fails the completion with EntityTooSmall).
    let sink = f
        .sink(local_aws::s3_client(proxy.endpoint()))
        .format(Format::LengthPrefixed)
        .part_size(1);
    let body: Bytes = (0..12 * MIB + 96).map(|i| (i % 251) as u8).collect();
    sink.write_object("out/big.bin", body.clone())
        .await
        .unwrap();
    assert_eq!(proxy.fired(failed), 1);
    assert_eq!(proxy.count("PUT"), 4, "three parts, one retried");
    assert_eq!(proxy.count("POST"), 2, "create and complete");
    assert!(f.get("out/big.bin").await == body);
    let head = f
        .aws
        .s3_client()
        .head_object()
        .bucket(&f.bucket)
        .key("out/big.bin")
        .send()
        .await
        .unwrap();
    assert!(
        head.e_tag().unwrap().ends_with("-3\""),
        "{:?}",
        head.e_tag()
    );
    assert_eq!(head.content_type(), Some("application/octet-stream"));

    // Up to the part size: one PutObject.
    proxy.reset_stats();
    let small = body.slice(..5 * MIB);
    sink.write_object("out/small.bin", small.clone())
        .await
        .unwrap();
    assert_eq!((proxy.count("PUT"), proxy.count("POST")), (1, 0));
    assert!(f.get("out/small.bin").await == small);
}

#[tokio::test]
async fn a_failed_multipart_upload_is_aborted_and_the_error_is_typed() {
    let f = Fixture::new(1).await;
    let proxy = FaultProxy::start(f.aws.s3_endpoint()).await.unwrap();
    let denied = proxy.inject(
        Rule::on(Op::s3(Method::PUT))
            .after(1)
            .always()
            .fault(Fault::error(403, "AccessDenied", "Access Denied")),
    );
    let sink = f
        .sink(local_aws::s3_client(proxy.endpoint()))
        .part_size(5 * MIB);
    let body = Bytes::from(vec![7u8; 11 * MIB]);
    let err = sink
        .write_object("out/big.bin", body.clone())
        .await
        .unwrap_err();
    match &err {
        SinkError::Rejected {
            operation,
            status,
            code,
            ..
        } => {
            assert_eq!(*operation, "UploadPart");
            assert_eq!(*status, Some(403));
            assert_eq!(code.as_deref(), Some("AccessDenied"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(proxy.fired(denied), 1, "a permanent error is not retried");
    assert_eq!(proxy.count("DELETE"), 1, "the upload is aborted");
    let head = f
        .aws
        .s3_client()
        .head_object()
        .bucket(&f.bucket)
        .key("out/big.bin")
        .send()
        .await;
    assert!(head.is_err(), "no object: {head:?}");

    // Once S3 accepts again, the same call writes the object: 5 + 5 + 1 MiB.
    proxy.clear();
    sink.write_object("out/big.bin", body.clone())
        .await
        .unwrap();
    assert!(f.get("out/big.bin").await == body);
}

#[tokio::test]
async fn s3_errors_are_typed_and_retries_are_bounded() {
    let f = Fixture::new(1).await;
    let proxy = FaultProxy::start(f.aws.s3_endpoint()).await.unwrap();
    let sink = f.sink(local_aws::s3_client(proxy.endpoint())).attempts(
        3,
        Duration::from_millis(1),
        Duration::from_millis(5),
    );

    let slow = proxy.inject(
        Rule::on(Op::s3(Method::PUT))
            .always()
            .fault(Fault::slow_down()),
    );
    let err = sink
        .write_object("out/a", Bytes::from_static(b"a"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            SinkError::RetriesExhausted {
                operation: "PutObject",
                attempts: 3,
                ..
            }
        ),
        "{err:?}"
    );
    // Exactly the sink's attempts: the SDK does not retry underneath.
    assert_eq!(proxy.fired(slow), 3);

    proxy.clear();
    let denied = proxy.inject(Rule::on(Op::s3(Method::PUT)).always().fault(Fault::error(
        403,
        "AccessDenied",
        "Access Denied",
    )));
    let err = sink
        .write_object("out/a", Bytes::from_static(b"a"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, SinkError::Rejected { code: Some(c), .. } if c == "AccessDenied"),
        "{err:?}"
    );
    assert_eq!(proxy.fired(denied), 1);

    // A bucket deleted under a running sink. (Injected: the local S3 creates a missing
    // bucket's directory on PutObject instead of answering NoSuchBucket.)
    proxy.clear();
    proxy.inject(Rule::on(Op::s3(Method::PUT)).always().fault(Fault::error(
        404,
        "NoSuchBucket",
        "The specified bucket does not exist",
    )));
    let err = sink
        .write_object("out/a", Bytes::from_static(b"a"))
        .await
        .unwrap_err();
    assert!(matches!(err, SinkError::BucketNotFound { .. }), "{err:?}");
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

    // The binary refuses to start, before touching the stream or the lease table.
    let mut command = binary(
        &aws,
        &[("BUCKET", "no-such-bucket"), ("HEALTH_ADDR", "off")],
    );
    // The stack runs on this test's runtime: wait for the process off it.
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(
        log.contains("bucket no-such-bucket does not exist"),
        "{log}"
    );
}

/// The `s3-sink` binary with the stack's endpoints and credentials, and `env` on top.
fn binary(aws: &LocalAws, env: &[(&str, &str)]) -> std::process::Command {
    let credentials = aws.credentials();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_s3-sink"));
    command
        .env_clear()
        .env("AWS_ENDPOINT_URL_KINESIS", aws.kinesis_endpoint())
        .env("AWS_ENDPOINT_URL_DYNAMODB", aws.dynamodb_endpoint())
        .env("AWS_ENDPOINT_URL_S3", aws.s3_endpoint())
        .env("AWS_ACCESS_KEY_ID", credentials.access_key_id())
        .env("AWS_SECRET_ACCESS_KEY", credentials.secret_access_key())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("REGION", local_aws::REGION)
        .env("S3_FORCE_PATH_STYLE", "true")
        .env("STREAM", "s")
        .env("APPLICATION_NAME", "bin")
        .env("PREFIX", "out")
        .env("RUST_LOG", "info")
        .envs(env.iter().copied());
    command
}

/// `s3-sink healthcheck --url url`, run off the test's runtime (the server runs on it).
async fn healthcheck(url: &str) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_s3-sink"));
    command.env_clear().args(["healthcheck", "--url", url]);
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

/// `GET url`: the status and the JSON body.
async fn get_json(url: &str) -> (u16, serde_json::Value) {
    let (status, body) = health::check(url, Duration::from_secs(5)).await.unwrap();
    let body = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_reports_the_workers_leases_and_turns_503_when_it_stops() {
    let f = Fixture::new(2).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let url = format!("{base}/health");
    let state = HealthState::default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(health::serve(
        listener,
        state.clone(),
        MetricsPage::Off,
        async {
            let _ = stopped.await;
        },
    ));

    // No worker yet (the binary checks the bucket first).
    let (status, body) = get_json(&url).await;
    assert_eq!(
        (status, &body["status"]),
        (503, &"starting".into()),
        "{body}"
    );
    assert_eq!(healthcheck(&url).await.status.code(), Some(1));

    let worker = f
        .start("health", f.sink(f.aws.s3_client()), Opts::default())
        .await;
    state.attach(worker.handle.clone());
    // Both shards' leases taken (one worker, two shards).
    f.wait_until("the worker to hold both leases", || async {
        let (status, body) = get_json(&url).await;
        status == 200 && body["leases_held"] == 2
    })
    .await;
    let (status, body) = get_json(&url).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["leases_held"], 2, "{body}");
    assert_eq!(body["status"], "running", "{body}");
    assert_eq!(body["healthy"], true);
    assert_eq!(body["problems"], serde_json::json!([]));
    assert_eq!(body["failover_time_ms"], 10_000);
    assert!(!body["worker_id"].as_str().unwrap().is_empty(), "{body}");
    // Renewals are answered: their age stays within the policy's two failover times.
    let renewal = body["since_last_renewal_ms"].as_u64().expect("an age");
    assert!(renewal <= 20_000, "{body}");
    let shards: BTreeSet<&str> = body["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["shard_id"].as_str().unwrap())
        .collect();
    assert_eq!(shards.len(), 2, "{body}");
    let out = healthcheck(&url).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    // Records processed per shard add up to what was put.
    f.put(0..40).await;
    f.wait_until("the shards to report 40 records processed", || async {
        let (_, b) = get_json(&url).await;
        b["shards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["records_processed"].as_u64().unwrap())
            .sum::<u64>()
            == 40
    })
    .await;

    // Metrics are off here: /metrics says where they would be.
    let (status, body) = get_json(&format!("{base}/metrics")).await;
    assert_eq!(status, 404);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("METRICS=prometheus"),
        "{body}"
    );

    let handle = worker.handle.clone();
    worker.stop().await;
    let (status, body) = get_json(&url).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "stopped");
    assert_eq!(body["healthy"], false);
    assert_eq!(body["leases_held"], 0, "leases released");
    let problems = body["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.as_str().unwrap().contains("not running")),
        "{body}"
    );
    assert_eq!(healthcheck(&url).await.status.code(), Some(1));
    drop(handle);

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert_eq!(
        healthcheck(&url).await.status.code(),
        Some(1),
        "nobody answers"
    );
    assert!(
        health::check("https://x/health", Duration::from_secs(1))
            .await
            .is_err()
    );
}

/// The value of the Prometheus sample `series` (name and labels, as rendered) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// A free loopback port for the binary's endpoint.
fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// Sends SIGTERM to `child` and waits for its exit.
async fn terminate(child: &mut std::process::Child) -> std::process::ExitStatus {
    let sent = std::process::Command::new("sh")
        .args(["-c", "kill -s TERM \"$0\"", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The binary run by [`Fixture::start_binary`]: its health address and its stdout in a file.
struct Binary {
    child: std::process::Child,
    addr: String,
    stdout: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Binary {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGTERM, then the exit status and everything the binary wrote to stdout.
    async fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let status = terminate(&mut self.child).await;
        (status, std::fs::read_to_string(&self.stdout).unwrap())
    }
}

impl Fixture {
    /// Starts the binary on the fixture's bucket with `env` on top, a free health address and
    /// stdout in a file, and waits until its health endpoint reports the lease held.
    async fn start_binary(&self, env: &[(&str, &str)]) -> Binary {
        let addr = free_addr();
        let dir = tempfile::tempdir().unwrap();
        let stdout = dir.path().join("stdout");
        let mut env = env.to_vec();
        env.extend([("BUCKET", self.bucket.as_str()), ("HEALTH_ADDR", &addr)]);
        let child = binary(&self.aws, &env)
            .stdout(std::fs::File::create(&stdout).unwrap())
            .spawn()
            .unwrap();
        let binary = Binary {
            child,
            addr,
            stdout,
            _dir: dir,
        };
        let url = binary.url("/health");
        self.wait_until("the health endpoint to report the lease held", || async {
            match health::check(&url, Duration::from_secs(1)).await {
                Ok((200, body)) => {
                    serde_json::from_str::<serde_json::Value>(&body).unwrap()["leases_held"] == 1
                }
                _ => false,
            }
        })
        .await;
        binary
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_writes_quiet_shards_reports_health_and_metrics_and_stops_cleanly_on_sigterm() {
    let f = Fixture::new(1).await;
    let bin = f
        .start_binary(&[
            ("MAX_AGE", "1"),
            ("AGE_GRACE", "0.5"),
            ("COMPRESSION", "gzip"),
            ("LOG_FORMAT", "json"),
            // Level and granularity through the environment: summary, no ShardId label.
            ("METRICS_LEVEL", "summary"),
            ("METRICS_GRANULARITY", "stream"),
        ])
        .await;
    f.put(0..30).await;
    // Nothing else cuts 30 small records: the empty reads let the age write them.
    f.wait_until("the records written by age", || async {
        f.data().await.len() == 30
    })
    .await;
    f.assert_exactly_once(30, 30).await;

    // The counter is bumped when process_records returns, a moment after the write.
    let metrics_url = bin.url("/metrics");
    let scrape = async || {
        let (status, text) = health::check(&metrics_url, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(status, 200, "{text}");
        text
    };
    f.wait_until("RecordsProcessed to count the 30 records", || async {
        sample(&scrape().await, "RecordsProcessed").is_some_and(|n| n >= 30.0)
    })
    .await;
    let text = scrape().await;
    assert_eq!(sample(&text, "RecordsProcessed"), Some(30.0), "{text}");
    assert_eq!(sample(&text, "LeasesHeld"), Some(1.0), "{text}");
    assert!(!text.contains("ShardId"), "granularity stream: {text}");
    assert!(
        !text.contains("GetRecords_Success"),
        "a detailed metric at level summary: {text}"
    );
    let (status, body) = get_json(&bin.url("/health")).await;
    assert_eq!(status, 200);
    assert_eq!(body["shards"][0]["records_processed"], 30, "{body}");

    let (status, log) = bin.terminate().await;
    assert_eq!(status.code(), Some(0), "{log}");
    // JSON logs, one object per line, event fields at the top level.
    let messages: Vec<String> = log
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            v["message"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    assert!(messages.iter().any(|m| m == "s3-sink stopped"), "{log}");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_metrics_emf_the_binary_writes_emf_lines_to_stdout() {
    let f = Fixture::new(1).await;
    let bin = f
        .start_binary(&[
            ("MAX_RECORDS", "5"),
            ("MAX_AGE", "3600"),
            ("LOG_FORMAT", "json"),
            ("METRICS", "emf"),
            ("METRICS_NAMESPACE", "sink-test"),
        ])
        .await;
    f.put(0..10).await;
    f.wait_until("two objects of 5 records", || async {
        f.data().await.len() == 10
    })
    .await;
    let (status, body) = get_json(&bin.url("/metrics")).await;
    assert_eq!(status, 404);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Embedded Metric Format"),
        "{body}"
    );

    let (status, out) = bin.terminate().await;
    assert_eq!(status.code(), Some(0), "{out}");
    // Logs and EMF share stdout, every line JSON; the EMF lines are the ones with `_aws`.
    let emf: Vec<serde_json::Value> = out
        .lines()
        .filter(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            v.get("_aws").is_some()
        })
        .map(testing::parse_emf)
        .collect();
    assert!(!emf.is_empty(), "no EMF line in {out}");
    assert!(
        emf.iter()
            .all(|l| l["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "sink-test")
    );
    // Counters are per interval (the last one written at exit): they add up to the run's.
    let processed: u64 = emf
        .iter()
        .filter(|l| l["ShardId"].is_string())
        .filter_map(|l| l["RecordsProcessed"].as_u64())
        .sum();
    assert_eq!(processed, 10, "{emf:#?}");
    let line = emf.iter().find(|l| l["RecordsProcessed"].is_u64()).unwrap();
    assert_eq!(
        line["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        serde_json::json!([["ShardId"], []]),
        "per shard, rolled up overall"
    );
    assert!(emf.iter().any(|l| l["LeasesHeld"].is_number()), "{emf:#?}");
}
