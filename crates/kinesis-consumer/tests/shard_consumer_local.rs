//! A shard consumer against the local Kinesis through the real SDK: ordering, resume inside
//! an aggregate, expired iterators, throttling, shard end after a split, processor retries.
//! Every test has its own stack and stream names, so they run in parallel.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_kinesis::primitives::Blob;
use kinesis_aggregation::{Aggregator, UserRecord};
use kinesis_consumer::processor::{MemoryCheckpointSink, SinkEvent};
use kinesis_consumer::{
    Checkpointer, InitInput, PollingConfig, Position, ProcessInput, ProcessorError,
    ProcessorErrorPolicy, RecordProcessor, RecordSources, RetryBackoff, ShardConsumer,
    ShardConsumerOptions, ShardConsumerOutcome, ShardEndedInput, ShardLease,
};
use local_aws::LocalAws;
use local_aws::fault::{Fault, FaultProxy, Rule};
use local_aws::testing::{create_stream, put_records, unique_name, wait_for_active};
use tokio::sync::watch;

type Delivered = Vec<(String, u64, String)>;

/// Records what it is given; fails the calls listed in `fail_calls` (1-based).
#[derive(Clone, Default)]
struct Recorder {
    delivered: Arc<Mutex<Delivered>>,
    attempts: Arc<Mutex<Vec<Delivered>>>,
    ended: Arc<Mutex<Option<Vec<String>>>>,
    count: Option<watch::Sender<usize>>,
    fail_calls: Vec<usize>,
    calls: usize,
}

#[async_trait]
impl RecordProcessor for Recorder {
    async fn initialize(&mut self, _: InitInput) -> Result<(), ProcessorError> {
        Ok(())
    }

    async fn process_records(&mut self, input: ProcessInput<'_>) -> Result<(), ProcessorError> {
        self.calls += 1;
        let batch: Delivered = input
            .records
            .iter()
            .map(|r| {
                (
                    r.sequence_number.to_string(),
                    r.sub_sequence_number,
                    String::from_utf8(r.data.to_vec()).unwrap(),
                )
            })
            .collect();
        self.attempts.lock().unwrap().push(batch.clone());
        if self.fail_calls.contains(&self.calls) {
            return Err(format!("failing call {}", self.calls).into());
        }
        let total = {
            let mut delivered = self.delivered.lock().unwrap();
            delivered.extend(batch);
            delivered.len()
        };
        input.checkpointer.checkpoint().await?;
        if let Some(count) = &self.count {
            count.send_replace(total);
        }
        Ok(())
    }

    async fn shard_ended(&mut self, input: ShardEndedInput<'_>) -> Result<(), ProcessorError> {
        let mut children: Vec<_> = input
            .child_shards
            .iter()
            .map(|c| c.shard_id.clone())
            .collect();
        children.sort();
        *self.ended.lock().unwrap() = Some(children);
        Ok(())
    }

    async fn shutdown_requested(
        &mut self,
        checkpointer: &Checkpointer,
    ) -> Result<(), ProcessorError> {
        checkpointer.checkpoint().await?;
        Ok(())
    }
}

impl Recorder {
    fn data(&self) -> Vec<String> {
        self.delivered
            .lock()
            .unwrap()
            .iter()
            .map(|(_, _, d)| d.clone())
            .collect()
    }
}

fn polling() -> PollingConfig {
    let mut config = PollingConfig::default();
    config.max_records = 7;
    config.idle_time_between_reads = Duration::from_millis(200);
    config
}

async fn put_plain(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    data: impl IntoIterator<Item = String>,
) {
    let records = data.into_iter().map(|d| (format!("key-{d}"), d));
    put_records(kinesis, stream, records).await.unwrap();
}

/// Puts one KPL aggregate of `data` (each its own partition key) and returns its sequence
/// number.
async fn put_aggregate(kinesis: &aws_sdk_kinesis::Client, stream: &str, data: &[String]) -> String {
    let mut aggregator = Aggregator::default();
    for d in data {
        aggregator
            .try_push(UserRecord::new(format!("key-{d}"), d.clone()).unwrap())
            .unwrap();
    }
    let finished = aggregator.finish().unwrap();
    assert!(finished.is_aggregated());
    let mut request = kinesis
        .put_record()
        .stream_name(stream)
        .partition_key(finished.record.partition_key.clone())
        .data(Blob::new(finished.record.data.to_vec()));
    if let Some(ehk) = finished.record.explicit_hash_key {
        request = request.explicit_hash_key(ehk.to_string());
    }
    request.send().await.unwrap().sequence_number().to_owned()
}

async fn first_shard(kinesis: &aws_sdk_kinesis::Client, stream: &str) -> String {
    let out = kinesis
        .list_shards()
        .stream_name(stream)
        .send()
        .await
        .unwrap();
    out.shards()[0].shard_id().to_owned()
}

fn names(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("r{i:04}")).collect()
}

/// Runs a consumer until `n` records are delivered, then shuts it down gracefully.
async fn consume(
    kinesis: aws_sdk_kinesis::Client,
    lease: ShardLease,
    mut recorder: Recorder,
    options: ShardConsumerOptions,
    n: usize,
) -> (Recorder, Arc<MemoryCheckpointSink>, ShardConsumerOutcome) {
    let (tx, mut rx) = watch::channel(0);
    recorder.count = Some(tx);
    let sink = MemoryCheckpointSink::new();
    let handle = ShardConsumer::new(
        lease,
        recorder.clone(),
        sink.clone(),
        RecordSources::polling(kinesis, polling()),
        options,
    )
    .spawn();
    rx.wait_for(|count| *count >= n).await.unwrap();
    handle.request_shutdown();
    let outcome = handle.join().await;
    (recorder, sink, outcome)
}

#[tokio::test]
async fn reads_every_record_of_a_shard_in_order() {
    let aws = LocalAws::start().await.unwrap();
    let kinesis = aws.kinesis_client();
    let stream = unique_name("consume-all");
    create_stream(&kinesis, &stream, 1).await.unwrap();
    put_plain(&kinesis, &stream, names(0..30)).await;
    put_aggregate(&kinesis, &stream, &names(30..40)).await;
    put_plain(&kinesis, &stream, names(40..50)).await;
    let shard = first_shard(&kinesis, &stream).await;

    let lease = ShardLease::new(&stream, &shard, Position::TrimHorizon);
    let (recorder, sink, outcome) = consume(
        kinesis,
        lease,
        Recorder::default(),
        ShardConsumerOptions::default(),
        50,
    )
    .await;
    assert!(
        matches!(outcome, ShardConsumerOutcome::ShutDown),
        "{outcome:?}"
    );
    assert_eq!(recorder.data(), names(0..50));
    let delivered = recorder.delivered.lock().unwrap().clone();
    let last = &delivered[49];
    assert_eq!(
        sink.last(),
        Some(Position::sequence(&last.0, last.1).unwrap())
    );
    // The aggregate's sub-records carry one sequence number and sub-sequence 0..10.
    let subs: Vec<_> = delivered[30..40].iter().map(|(_, sub, _)| *sub).collect();
    assert_eq!(subs, (0..10).collect::<Vec<_>>());
}

#[tokio::test]
async fn resumes_inside_an_aggregate_with_exactly_the_remaining_sub_records() {
    let aws = LocalAws::start().await.unwrap();
    let kinesis = aws.kinesis_client();
    let stream = unique_name("resume-agg");
    create_stream(&kinesis, &stream, 1).await.unwrap();
    put_plain(&kinesis, &stream, names(0..3)).await;
    let aggregate = put_aggregate(&kinesis, &stream, &names(3..13)).await;
    put_plain(&kinesis, &stream, names(13..16)).await;
    let shard = first_shard(&kinesis, &stream).await;

    for (sub, first_expected) in [(0, 4), (4, 8), (9, 13)] {
        let checkpoint = Position::sequence(&aggregate, sub).unwrap();
        let lease = ShardLease::new(&stream, &shard, checkpoint);
        let remaining = 16 - first_expected;
        let (recorder, _, outcome) = consume(
            kinesis.clone(),
            lease,
            Recorder::default(),
            ShardConsumerOptions::default(),
            remaining,
        )
        .await;
        assert!(matches!(outcome, ShardConsumerOutcome::ShutDown));
        assert_eq!(
            recorder.data(),
            names(first_expected..16),
            "checkpoint at sub-record {sub}"
        );
    }
}

#[tokio::test]
async fn recovers_from_expired_iterators() {
    // Iterators live 1 s; reads are 1.5 s apart, so every saved iterator expires.
    let aws = LocalAws::builder()
        .iterator_ttl(Duration::from_secs(1))
        .start()
        .await
        .unwrap();
    let proxy = FaultProxy::start(aws.kinesis_endpoint()).await.unwrap();
    let kinesis = local_aws::kinesis_client(proxy.endpoint());
    let stream = unique_name("expired");
    create_stream(&kinesis, &stream, 1).await.unwrap();
    put_plain(&kinesis, &stream, names(0..5)).await;
    let shard = first_shard(&kinesis, &stream).await;

    let sink = MemoryCheckpointSink::new();
    let (tx, mut rx) = watch::channel(0);
    let recorder = Recorder {
        count: Some(tx),
        ..Recorder::default()
    };
    let mut config = PollingConfig::default();
    config.max_records = 8;
    config.idle_time_between_reads = Duration::from_millis(1500);
    let handle = ShardConsumer::new(
        ShardLease::new(&stream, &shard, Position::TrimHorizon),
        recorder.clone(),
        sink,
        RecordSources::polling(kinesis.clone(), config),
        ShardConsumerOptions::default(),
    )
    .spawn();
    rx.wait_for(|n| *n >= 5).await.unwrap();
    // The next read comes 1.5 s after the last one, with an iterator 1 s past its TTL.
    put_plain(&kinesis, &stream, names(5..10)).await;
    rx.wait_for(|n| *n >= 10).await.unwrap();
    handle.request_shutdown();
    handle.join().await;
    assert_eq!(recorder.data(), names(0..10), "nothing lost, nothing twice");
    assert!(proxy.count("GetShardIterator") >= 2, "{:?}", proxy.stats());
}

#[tokio::test]
async fn throttled_reads_back_off_and_lose_nothing() {
    let aws = LocalAws::start().await.unwrap();
    let proxy = FaultProxy::start(aws.kinesis_endpoint()).await.unwrap();
    // No SDK retries: the consumer's own backoff handles the throttling.
    let kinesis = aws_sdk_kinesis::Client::from_conf(
        local_aws::kinesis_client(proxy.endpoint())
            .config()
            .to_builder()
            .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
            .build(),
    );
    let stream = unique_name("throttled");
    create_stream(&kinesis, &stream, 1).await.unwrap();
    put_plain(&kinesis, &stream, names(0..25)).await;
    let shard = first_shard(&kinesis, &stream).await;
    let rule = proxy.inject(
        Rule::on("GetRecords")
            .after(1)
            .times(4)
            .fault(Fault::throttle()),
    );

    let lease = ShardLease::new(&stream, &shard, Position::TrimHorizon);
    let (recorder, _, _) = consume(
        kinesis,
        lease,
        Recorder::default(),
        ShardConsumerOptions::default(),
        25,
    )
    .await;
    assert_eq!(recorder.data(), names(0..25));
    assert_eq!(proxy.fired(rule), 4);
}

#[tokio::test]
async fn shard_end_after_a_split_reports_children_and_records_shard_end() {
    let aws = LocalAws::start().await.unwrap();
    let kinesis = aws.kinesis_client();
    let stream = unique_name("split");
    create_stream(&kinesis, &stream, 1).await.unwrap();
    put_plain(&kinesis, &stream, names(0..12)).await;
    let parent = first_shard(&kinesis, &stream).await;
    kinesis
        .split_shard()
        .stream_name(&stream)
        .shard_to_split(&parent)
        .new_starting_hash_key((u128::MAX / 2).to_string())
        .send()
        .await
        .unwrap();
    wait_for_active(&kinesis, &stream).await.unwrap();
    let mut expected_children: Vec<String> = kinesis
        .list_shards()
        .stream_name(&stream)
        .send()
        .await
        .unwrap()
        .shards()
        .iter()
        .filter(|s| s.parent_shard_id() == Some(parent.as_str()))
        .map(|s| s.shard_id().to_owned())
        .collect();
    expected_children.sort();
    assert_eq!(expected_children.len(), 2);

    let recorder = Recorder::default();
    let sink = MemoryCheckpointSink::new();
    let outcome = ShardConsumer::new(
        ShardLease::new(&stream, &parent, Position::TrimHorizon),
        recorder.clone(),
        sink.clone(),
        RecordSources::polling(kinesis, polling()),
        ShardConsumerOptions::default(),
    )
    .spawn()
    .join()
    .await;
    let ShardConsumerOutcome::ShardEnded { children } = outcome else {
        panic!("{outcome:?}")
    };
    let mut children: Vec<_> = children.into_iter().map(|c| c.shard_id).collect();
    children.sort();
    assert_eq!(children, expected_children);
    assert_eq!(*recorder.ended.lock().unwrap(), Some(expected_children));
    assert_eq!(recorder.data(), names(0..12));
    assert_eq!(
        sink.events().last(),
        Some(&SinkEvent::Checkpoint(Position::ShardEnd))
    );
}

#[tokio::test]
async fn a_failing_processor_gets_the_same_batch_again() {
    let aws = LocalAws::start().await.unwrap();
    let kinesis = aws.kinesis_client();
    let stream = unique_name("retry");
    create_stream(&kinesis, &stream, 1).await.unwrap();
    put_plain(&kinesis, &stream, names(0..20)).await;
    let shard = first_shard(&kinesis, &stream).await;

    let recorder = Recorder {
        fail_calls: vec![2, 3],
        ..Recorder::default()
    };
    let mut options = ShardConsumerOptions::default();
    options.error_policy = ProcessorErrorPolicy::Retry {
        backoff: RetryBackoff {
            min: Duration::from_millis(20),
            max: Duration::from_millis(100),
        },
    };
    let lease = ShardLease::new(&stream, &shard, Position::TrimHorizon);
    let (recorder, _, _) = consume(kinesis, lease, recorder, options, 20).await;
    assert_eq!(
        recorder.data(),
        names(0..20),
        "nothing skipped, nothing twice"
    );
    let attempts = recorder.attempts.lock().unwrap().clone();
    assert_eq!(attempts[1], attempts[2]);
    assert_eq!(attempts[2], attempts[3]);
}
