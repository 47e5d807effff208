//! A producer and a worker on the local stack (the real SDK), their metrics captured by a
//! per-test recorder and checked by name and value.
//!
//! Each test runs on a current-thread runtime with a thread-local default recorder, so
//! every task it spawns (the producer's engine, the worker, its shard consumers) records
//! into that test's recorder, and tests run in parallel without sharing one.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use kinesis_consumer::{
    InitialPosition, ProcessInput, ProcessorError, RecordProcessor, Worker, WorkerHandle,
};
use kinesis_producer::{Producer, Record};
use local_aws::{LocalAws, testing};
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tokio::time::Instant;

/// `name → [(labels, value)]` from a snapshot. A snapshot drains the debugging recorder
/// (counters and gauges read as 0 afterwards): take one per check.
type Metrics = BTreeMap<String, Vec<(BTreeMap<String, String>, DebugValue)>>;

fn metrics(snapshotter: &Snapshotter) -> Metrics {
    let mut out = Metrics::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let labels = key
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        out.entry(key.name().to_owned())
            .or_default()
            .push((labels, value));
    }
    out
}

/// The sum of a counter over all its label sets.
fn counter(m: &Metrics, name: &str) -> u64 {
    m.get(name)
        .unwrap_or_else(|| panic!("no {name} in {m:#?}"))
        .iter()
        .map(|(_, v)| match v {
            DebugValue::Counter(n) => *n,
            other => panic!("{name} is {other:?}"),
        })
        .sum()
}

fn gauge(m: &Metrics, name: &str) -> f64 {
    match &m.get(name).unwrap_or_else(|| panic!("no {name}"))[..] {
        [(_, DebugValue::Gauge(v))] => v.into_inner(),
        other => panic!("{name}: {other:?}"),
    }
}

fn histogram_samples(m: &Metrics, name: &str) -> Vec<f64> {
    m.get(name)
        .unwrap_or_else(|| panic!("no {name}"))
        .iter()
        .flat_map(|(_, v)| match v {
            DebugValue::Histogram(samples) => {
                samples.iter().map(|s| s.into_inner()).collect::<Vec<f64>>()
            }
            other => panic!("{name} is {other:?}"),
        })
        .collect::<Vec<f64>>()
}

fn label_values(m: &Metrics, name: &str, label: &str) -> BTreeSet<String> {
    m.get(name)
        .into_iter()
        .flatten()
        .filter_map(|(labels, _)| labels.get(label).cloned())
        .collect()
}

async fn shard_ids(kinesis: &aws_sdk_kinesis::Client, stream: &str) -> BTreeSet<String> {
    let out = kinesis
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap();
    out.shards()
        .iter()
        .map(|s| s.shard_id().to_owned())
        .collect()
}

#[tokio::test]
async fn producer_metrics_count_the_records_put() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let aws = LocalAws::start().await.unwrap();
    let kinesis = aws.kinesis_client();
    let stream = testing::unique_name("metrics-producer");
    testing::create_stream(&kinesis, &stream, 2).await.unwrap();
    let producer = Producer::builder(kinesis.clone())
        .stream(&stream)
        .build()
        .await
        .unwrap();
    let (n, size) = (600usize, 64usize);
    let mut handles = Vec::new();
    for i in 0..n {
        let data = vec![b'x'; size];
        handles.push(
            producer
                .put(Record::new(format!("key-{i}"), data))
                .await
                .unwrap(),
        );
    }
    let mut kinesis_records = BTreeSet::new();
    for h in handles {
        let outcome = h.await.unwrap();
        kinesis_records.insert((
            outcome.shard_id().to_owned(),
            outcome.sequence_number().to_owned(),
        ));
    }
    producer.close().await;

    let m = metrics(&snapshotter);
    assert_eq!(counter(&m, "UserRecordsPut"), n as u64);
    assert_eq!(counter(&m, "UserRecordsDataPut"), (n * size) as u64);
    assert_eq!(
        counter(&m, "KinesisRecordsPut"),
        kinesis_records.len() as u64
    );
    assert!(kinesis_records.len() < n, "records were aggregated");
    assert_eq!(counter(&m, "UserRecordExpired"), 0);
    assert_eq!(counter(&m, "AllErrors"), 0);
    assert_eq!(
        gauge(&m, "UserRecordsPending"),
        0.0,
        "nothing left after close"
    );
    let retries = histogram_samples(&m, "RetriesPerRecord");
    assert_eq!(retries.len(), n);
    assert!(retries.iter().all(|r| *r == 0.0));
    assert_eq!(histogram_samples(&m, "BufferingTime").len(), n);
    assert!(!histogram_samples(&m, "RequestTime").is_empty());
    assert_eq!(
        label_values(&m, "UserRecordsPut", "StreamName"),
        BTreeSet::from([stream.clone()])
    );
}

/// Counts what it gets and checkpoints.
struct Counting(Arc<AtomicUsize>);

#[async_trait]
impl RecordProcessor for Counting {
    async fn process_records(&mut self, input: ProcessInput<'_>) -> Result<(), ProcessorError> {
        self.0.fetch_add(input.records.len(), Ordering::SeqCst);
        input.checkpointer.checkpoint().await?;
        Ok(())
    }
}

/// A local stack, a stream of `shards` shards holding `n` records of `size` bytes, and a
/// worker reading it from the start; returns when every record was processed.
async fn consumed(
    shards: i32,
    n: usize,
    size: usize,
) -> (LocalAws, String, WorkerHandle, tokio::task::JoinHandle<()>) {
    let aws = LocalAws::start().await.unwrap();
    let kinesis = aws.kinesis_client();
    let stream = testing::unique_name("metrics-worker");
    testing::create_stream(&kinesis, &stream, shards)
        .await
        .unwrap();
    let entries: Vec<PutRecordsRequestEntry> = (0..n)
        .map(|i| {
            PutRecordsRequestEntry::builder()
                .partition_key(format!("key-{i}"))
                .data(Blob::new(vec![b'y'; size]))
                .build()
                .unwrap()
        })
        .collect();
    for chunk in entries.chunks(500) {
        let out = kinesis
            .put_records()
            .stream_name(&stream)
            .set_records(Some(chunk.to_vec()))
            .send()
            .await
            .unwrap();
        assert_eq!(out.failed_record_count(), Some(0));
    }
    let processed = Arc::new(AtomicUsize::new(0));
    let count = processed.clone();
    let worker = Worker::builder(
        testing::unique_name("metrics-app"),
        &stream,
        kinesis,
        aws.dynamodb_client(),
        move || Counting(count.clone()),
    )
    .initial_position(InitialPosition::TrimHorizon)
    .idle_time_between_reads(Duration::from_millis(200))
    .build();
    let handle = worker.handle();
    let task = tokio::spawn(async move { worker.run().await.unwrap() });
    // Done when the health board counts every record as processed by a call that returned
    // (on this single-threaded runtime, the shard consumer records its metrics in the same
    // poll as that return) and every lease is held.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let health = handle.health();
        let done: u64 = health.shards.iter().map(|s| s.records_processed).sum();
        if done == n as u64 && health.leases_held == shards as usize {
            break;
        }
        assert!(Instant::now() < deadline, "{health:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(processed.load(Ordering::SeqCst), n);
    (aws, stream, handle, task)
}

#[tokio::test]
async fn worker_metrics_count_the_records_processed_and_the_leases() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let (n, size) = (300, 40);
    let (aws, stream, handle, task) = consumed(3, n, size).await;
    // One snapshot (it drains the recorder). The lease-taking pass that took the third lease
    // set LeasesHeld before the health board showed three leases.
    let m = metrics(&snapshotter);
    assert_eq!(gauge(&m, "LeasesHeld"), 3.0);
    assert_eq!(counter(&m, "RecordsProcessed"), n as u64);
    assert_eq!(counter(&m, "DataBytesProcessed"), (n * size) as u64);
    assert_eq!(counter(&m, "TakenLeases"), 3);
    assert!(!m.contains_key("LostLeases") || counter(&m, "LostLeases") == 0);
    let shards = shard_ids(&aws.kinesis_client(), &stream).await;
    assert_eq!(label_values(&m, "RecordsProcessed", "ShardId"), shards);
    assert_eq!(label_values(&m, "MillisBehindLatest", "ShardId"), shards);
    assert!(counter(&m, "GetRecords.Success") >= 3);
    assert!(!histogram_samples(&m, "RecordProcessor.processRecords.Time").is_empty());

    handle.shutdown().await;
    task.await.unwrap();
}

#[cfg(feature = "emf")]
#[tokio::test]
async fn a_worker_through_the_filter_and_emf_writes_valid_lines_with_the_right_values() {
    use kinesis_metrics::emf::EmfRecorder;
    use kinesis_metrics::{MetricsFilter, MetricsGranularity, MetricsLevel};
    use support::{SharedBuf, validate_emf};

    let buf = SharedBuf::default();
    let (recorder, emf) = EmfRecorder::builder()
        .namespace("kinesis-rs-test")
        .dimension("Application", "metrics-test")
        .writer(buf.clone())
        .build()
        .unwrap();
    let filtered = MetricsFilter::new()
        .level(MetricsLevel::Summary)
        .granularity(MetricsGranularity::Global)
        .wrap(recorder);
    let _local = metrics::set_default_local_recorder(&filtered);

    let n = 200;
    let (_aws, _stream, handle, task) = consumed(2, n, 10).await;
    handle.shutdown().await;
    task.await.unwrap();
    emf.flush().unwrap();

    let lines: Vec<serde_json::Value> = buf
        .take_lines()
        .iter()
        .map(|l| validate_emf(l).unwrap_or_else(|e| panic!("{e:?}\n{l}")))
        .collect();
    // Global granularity: no shard dimension anywhere, one line for the worker's metrics.
    assert!(
        lines.iter().all(|l| l.get("ShardId").is_none()),
        "{lines:#?}"
    );
    let total: u64 = lines
        .iter()
        .filter_map(|l| l.get("RecordsProcessed").and_then(|v| v.as_u64()))
        .sum();
    assert_eq!(total, n as u64);
    assert!(lines.iter().all(|l| l["Application"] == "metrics-test"));
    assert!(
        lines.iter().all(|l| l.get("GetRecords.Success").is_none()),
        "a detailed metric at summary level"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.get("TakenLeases") == Some(&2.into()))
    );
}
