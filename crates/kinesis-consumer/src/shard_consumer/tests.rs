//! The state machine against the scripted fake Kinesis on tokio's paused clock, and the
//! resume filter as a table.

use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use kinesis_aggregation::{Aggregator, HashKey, UserRecord};
use tokio::sync::{Semaphore, oneshot, watch};

use super::*;
use crate::processor::MemoryCheckpointSink;
use crate::retrieval::PollingConfig;
use crate::retrieval::api::ErrorKind;
use crate::retrieval::tests::{FakeApi, record};

const SHARD: &str = "shardId-000000000000";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Init(Position),
    Batch(Vec<String>),
    LeaseLost,
    ShardEnded(Vec<String>),
    Shutdown,
}

#[derive(Default)]
struct Script {
    /// process_records calls that fail (1-based call numbers).
    fail_calls: Vec<usize>,
    /// Checkpoint at the n-th record of each delivery before answering.
    checkpoint_at_index: Option<usize>,
    /// Checkpoint everything after each successful batch.
    checkpoint_each: bool,
    /// process_records waits for a permit (when set).
    gate: Option<Arc<Semaphore>>,
    /// shard_ended calls that fail.
    fail_shard_ended: usize,
    checkpoint_on_shutdown: bool,
}

struct TestProcessor {
    log: Arc<Mutex<Vec<Ev>>>,
    batches_seen: Arc<watch::Sender<usize>>,
    script: Script,
    calls: usize,
    checkpoint_results: Arc<Mutex<Vec<String>>>,
}

fn ids(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| {
            format!(
                "{}/{}",
                &r.sequence_number[r.sequence_number.len() - 4..],
                r.sub_sequence_number
            )
        })
        .collect()
}

#[async_trait]
impl RecordProcessor for TestProcessor {
    async fn initialize(&mut self, input: InitInput) -> Result<(), ProcessorError> {
        self.log
            .lock()
            .unwrap()
            .push(Ev::Init(input.starting_position));
        Ok(())
    }

    async fn process_records(&mut self, input: ProcessInput<'_>) -> Result<(), ProcessorError> {
        self.calls += 1;
        self.log.lock().unwrap().push(Ev::Batch(ids(input.records)));
        self.batches_seen.send_modify(|n| *n += 1);
        if let Some(gate) = &self.script.gate {
            gate.acquire().await.unwrap().forget();
        }
        if let Some(i) = self.script.checkpoint_at_index
            && let Some(r) = input.records.get(i)
        {
            input.checkpointer.checkpoint_at(r.position()).await?;
        }
        if self.script.fail_calls.contains(&self.calls) {
            return Err("scripted failure".into());
        }
        if self.script.checkpoint_each {
            let result = input.checkpointer.checkpoint().await;
            self.checkpoint_results
                .lock()
                .unwrap()
                .push(format!("{result:?}"));
        }
        Ok(())
    }

    async fn lease_lost(&mut self) {
        self.log.lock().unwrap().push(Ev::LeaseLost);
    }

    async fn shard_ended(&mut self, input: ShardEndedInput<'_>) -> Result<(), ProcessorError> {
        self.log.lock().unwrap().push(Ev::ShardEnded(
            input
                .child_shards
                .iter()
                .map(|c| c.shard_id.clone())
                .collect(),
        ));
        if self.script.fail_shard_ended > 0 {
            self.script.fail_shard_ended -= 1;
            return Err("shard_ended failed".into());
        }
        Ok(())
    }

    async fn shutdown_requested(
        &mut self,
        checkpointer: &Checkpointer,
    ) -> Result<(), ProcessorError> {
        self.log.lock().unwrap().push(Ev::Shutdown);
        if self.script.checkpoint_on_shutdown {
            checkpointer.checkpoint().await?;
        }
        Ok(())
    }
}

struct Setup {
    batches_seen: Arc<watch::Sender<usize>>,
    api: Arc<FakeApi>,
    sink: Arc<MemoryCheckpointSink>,
    log: Arc<Mutex<Vec<Ev>>>,
    checkpoint_results: Arc<Mutex<Vec<String>>>,
}

fn setup(records: u64) -> Setup {
    Setup {
        batches_seen: Arc::new(watch::channel(0).0),
        api: FakeApi::with_records(records),
        sink: MemoryCheckpointSink::new(),
        log: Arc::default(),
        checkpoint_results: Arc::default(),
    }
}

impl Setup {
    fn consumer(
        &self,
        checkpoint: Position,
        script: Script,
        options: ShardConsumerOptions,
    ) -> ShardConsumer {
        let processor = TestProcessor {
            log: self.log.clone(),
            batches_seen: self.batches_seen.clone(),
            script,
            calls: 0,
            checkpoint_results: self.checkpoint_results.clone(),
        };
        let config = PollingConfig {
            max_records: 5,
            idle_time_between_reads: Duration::from_millis(200),
            ..PollingConfig::default()
        };
        ShardConsumer::new(
            ShardLease::new("stream", SHARD, checkpoint),
            processor,
            self.sink.clone(),
            RecordSources::with_api(self.api.clone(), config),
            options,
        )
    }

    fn close_with_child(&self) {
        self.api.close(
            vec![ChildShard {
                shard_id: "shardId-000000000001".into(),
                parent_shard_ids: vec![SHARD.into()],
                hash_key_range: None,
            }],
            vec![],
        );
    }

    fn log(&self) -> Vec<Ev> {
        self.log.lock().unwrap().clone()
    }

    fn delivered(&self) -> Vec<String> {
        self.log()
            .into_iter()
            .filter_map(|e| match e {
                Ev::Batch(b) => Some(b),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn batches(&self) -> Vec<Vec<String>> {
        self.log()
            .into_iter()
            .filter_map(|e| match e {
                Ev::Batch(b) => Some(b),
                _ => None,
            })
            .collect()
    }

    async fn wait_for_batches(&self, n: usize) {
        let mut seen = self.batches_seen.subscribe();
        seen.wait_for(|count| *count >= n).await.unwrap();
    }

    /// Runs a consumer from TRIM_HORIZON until it finishes.
    async fn run(&self, script: Script, options: ShardConsumerOptions) -> ShardConsumerOutcome {
        self.consumer(Position::TrimHorizon, script, options)
            .spawn()
            .join()
            .await
    }

    /// Starts a consumer from TRIM_HORIZON (default options) and waits until its processor is
    /// inside the first batch, where it stays until the returned gate gets permits.
    async fn spawn_held_in_first_batch(
        &self,
        script: Script,
    ) -> (ShardConsumerHandle, Arc<Semaphore>) {
        let gate = Arc::new(Semaphore::new(0));
        let script = Script {
            gate: Some(gate.clone()),
            ..script
        };
        let handle = self
            .consumer(
                Position::TrimHorizon,
                script,
                ShardConsumerOptions::default(),
            )
            .spawn();
        self.wait_for_batches(1).await;
        (handle, gate)
    }
}

fn r(i: u64) -> String {
    format!("{i:04}/0")
}

fn fast_retry() -> RetryBackoff {
    RetryBackoff {
        min: Duration::from_millis(100),
        max: Duration::from_secs(1),
    }
}

fn options(policy: ProcessorErrorPolicy) -> ShardConsumerOptions {
    ShardConsumerOptions {
        error_policy: policy,
        ..ShardConsumerOptions::default()
    }
}

#[tokio::test(start_paused = true)]
async fn delivers_every_record_in_order_then_records_shard_end() {
    let s = setup(12);
    s.close_with_child();
    let outcome = s
        .run(
            Script {
                checkpoint_each: true,
                ..Script::default()
            },
            ShardConsumerOptions::default(),
        )
        .await;
    let ShardConsumerOutcome::ShardEnded { children } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(children[0].shard_id, "shardId-000000000001");
    assert_eq!(s.delivered(), (0..12).map(r).collect::<Vec<_>>());
    let log = s.log();
    assert_eq!(log[0], Ev::Init(Position::TrimHorizon));
    assert_eq!(
        log.last(),
        Some(&Ev::ShardEnded(vec!["shardId-000000000001".into()]))
    );
    // The processor checkpointed each batch; the library recorded SHARD_END last.
    let checkpoints = s.sink.checkpoints();
    assert_eq!(checkpoints.last(), Some(&Position::ShardEnd));
    assert_eq!(
        checkpoints[checkpoints.len() - 2],
        record(11, "")
            .sequence_number
            .parse::<String>()
            .map(|q| Position::sequence(&q, 0).unwrap())
            .unwrap()
    );
}

#[tokio::test(start_paused = true)]
async fn resumes_after_the_checkpoint() {
    let s = setup(8);
    s.close_with_child();
    let checkpoint = Position::sequence(&record(4, "").sequence_number, 0).unwrap();
    let outcome = s
        .consumer(
            checkpoint.clone(),
            Script::default(),
            ShardConsumerOptions::default(),
        )
        .spawn()
        .join()
        .await;
    assert!(matches!(outcome, ShardConsumerOutcome::ShardEnded { .. }));
    assert_eq!(s.log()[0], Ev::Init(checkpoint));
    assert_eq!(s.delivered(), (5..8).map(r).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn default_policy_retries_the_same_batch_and_skips_nothing() {
    let s = setup(10);
    s.close_with_child();
    let script = Script {
        fail_calls: vec![1, 2],
        ..Script::default()
    };
    let started = Instant::now();
    let outcome = s.run(script, ShardConsumerOptions::default()).await;
    assert!(matches!(outcome, ShardConsumerOutcome::ShardEnded { .. }));
    let first: Vec<_> = (0..5).map(r).collect();
    assert_eq!(
        s.batches(),
        [
            first.clone(),
            first.clone(),
            first,
            (5..10).map(r).collect()
        ]
    );
    // Default backoff: 500 ms, then 1 s.
    assert!(started.elapsed() >= Duration::from_millis(1500));
}

#[tokio::test(start_paused = true)]
async fn a_retry_does_not_redeliver_what_the_processor_checkpointed() {
    let s = setup(5);
    s.close_with_child();
    let script = Script {
        fail_calls: vec![1],
        checkpoint_at_index: Some(1),
        ..Script::default()
    };
    let outcome = s
        .run(
            script,
            options(ProcessorErrorPolicy::Retry {
                backoff: fast_retry(),
            }),
        )
        .await;
    assert!(matches!(outcome, ShardConsumerOutcome::ShardEnded { .. }));
    // First delivery 0..5, checkpoint at 1, failure; the retry starts at 2 (and checkpoints 3).
    assert_eq!(
        s.batches(),
        [(0..5).map(r).collect::<Vec<_>>(), (2..5).map(r).collect()]
    );
}

#[tokio::test(start_paused = true)]
async fn skip_after_n_attempts_moves_on() {
    let s = setup(10);
    s.close_with_child();
    let script = Script {
        fail_calls: vec![1, 2],
        ..Script::default()
    };
    let outcome = s
        .run(
            script,
            options(ProcessorErrorPolicy::SkipAfter {
                attempts: 2,
                backoff: fast_retry(),
            }),
        )
        .await;
    assert!(matches!(outcome, ShardConsumerOutcome::ShardEnded { .. }));
    let first: Vec<_> = (0..5).map(r).collect();
    assert_eq!(
        s.batches(),
        [first.clone(), first, (5..10).map(r).collect()]
    );
}

#[tokio::test(start_paused = true)]
async fn stop_shard_stops_at_the_first_error_without_checkpointing() {
    let s = setup(10);
    s.close_with_child();
    let script = Script {
        fail_calls: vec![1],
        ..Script::default()
    };
    let outcome = s
        .run(script, options(ProcessorErrorPolicy::StopShard))
        .await;
    assert!(
        matches!(outcome, ShardConsumerOutcome::ProcessorFailed { .. }),
        "{outcome:?}"
    );
    assert_eq!(s.batches().len(), 1);
    assert!(s.sink.events().is_empty());
}

#[tokio::test(start_paused = true)]
async fn lease_loss_stops_promptly_and_refuses_checkpoints_at_once() {
    let s = setup(20);
    let script = Script {
        checkpoint_each: true,
        ..Script::default()
    };
    let (handle, gate) = s.spawn_held_in_first_batch(script).await;
    handle.lease_lost();
    gate.add_permits(100);
    let outcome = handle.join().await;
    assert!(
        matches!(outcome, ShardConsumerOutcome::LeaseLost),
        "{outcome:?}"
    );
    assert_eq!(s.log().last(), Some(&Ev::LeaseLost));
    assert_eq!(s.batches().len(), 1, "no batch after the lease was lost");
    assert_eq!(*s.checkpoint_results.lock().unwrap(), ["Err(LeaseLost)"]);
    assert!(s.sink.events().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_lease_lost_in_the_store_stops_the_consumer() {
    let s = setup(20);
    s.sink.lose_lease();
    let script = Script {
        checkpoint_each: true,
        ..Script::default()
    };
    let outcome = s.run(script, ShardConsumerOptions::default()).await;
    assert!(
        matches!(outcome, ShardConsumerOutcome::LeaseLost),
        "{outcome:?}"
    );
    assert_eq!(s.batches().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn graceful_shutdown_finishes_the_batch_then_calls_shutdown_requested() {
    let s = setup(20);
    let script = Script {
        checkpoint_on_shutdown: true,
        ..Script::default()
    };
    let (handle, gate) = s.spawn_held_in_first_batch(script).await;
    handle.request_shutdown();
    gate.add_permits(100);
    let outcome = handle.join().await;
    assert!(
        matches!(outcome, ShardConsumerOutcome::ShutDown),
        "{outcome:?}"
    );
    assert_eq!(
        s.log()[1..],
        [Ev::Batch((0..5).map(r).collect()), Ev::Shutdown]
    );
    let last = Position::sequence(&record(4, "").sequence_number, 0).unwrap();
    assert_eq!(s.sink.checkpoints(), [last]);
}

#[tokio::test(start_paused = true)]
async fn waits_for_parents_before_initializing() {
    let s = setup(3);
    s.close_with_child();
    let (tx, rx) = oneshot::channel::<()>();
    let mut handle = s
        .consumer(
            Position::TrimHorizon,
            Script::default(),
            ShardConsumerOptions::default(),
        )
        .wait_for_parents(async move {
            let _ = rx.await;
        })
        .spawn();
    assert_eq!(handle.state(), ConsumerState::WaitingOnParents);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(s.log().is_empty());
    assert!(
        s.api.calls().is_empty(),
        "no read before the parents are done"
    );
    tx.send(()).unwrap();
    handle
        .wait_for_state(|st| st == ConsumerState::Finished)
        .await;
    assert!(matches!(
        handle.join().await,
        ShardConsumerOutcome::ShardEnded { .. }
    ));
    assert_eq!(s.delivered().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn shutdown_while_waiting_on_parents_calls_nothing() {
    let s = setup(3);
    let handle = s
        .consumer(
            Position::TrimHorizon,
            Script::default(),
            ShardConsumerOptions::default(),
        )
        .wait_for_parents(std::future::pending())
        .spawn();
    handle.request_shutdown();
    assert!(matches!(
        handle.join().await,
        ShardConsumerOutcome::ShutDown
    ));
    assert!(s.log().is_empty());
}

#[tokio::test(start_paused = true)]
async fn shard_end_is_recorded_even_if_shard_ended_keeps_failing_under_skip_after() {
    let s = setup(2);
    s.close_with_child();
    let script = Script {
        fail_shard_ended: 10,
        ..Script::default()
    };
    let outcome = s
        .run(
            script,
            options(ProcessorErrorPolicy::SkipAfter {
                attempts: 3,
                backoff: fast_retry(),
            }),
        )
        .await;
    assert!(matches!(outcome, ShardConsumerOutcome::ShardEnded { .. }));
    let ended = s
        .log()
        .iter()
        .filter(|e| matches!(e, Ev::ShardEnded(_)))
        .count();
    assert_eq!(ended, 3);
    assert_eq!(s.sink.last(), Some(Position::ShardEnd));
}

#[tokio::test(start_paused = true)]
async fn shard_end_write_is_retried_when_the_store_throttles() {
    let s = setup(2);
    s.close_with_child();
    s.sink
        .fail_next([CheckpointError::Throttled, CheckpointError::Throttled]);
    let outcome = s
        .run(Script::default(), ShardConsumerOptions::default())
        .await;
    assert!(matches!(outcome, ShardConsumerOutcome::ShardEnded { .. }));
    assert_eq!(s.sink.checkpoints(), [Position::ShardEnd]);
}

#[tokio::test(start_paused = true)]
async fn a_throttled_shard_is_read_to_the_end() {
    let s = setup(10);
    s.close_with_child();
    for _ in 0..4 {
        s.api.fail("GetRecords", ErrorKind::Throttled);
    }
    let outcome = s
        .run(Script::default(), ShardConsumerOptions::default())
        .await;
    assert!(matches!(outcome, ShardConsumerOutcome::ShardEnded { .. }));
    assert_eq!(s.delivered(), (0..10).map(r).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn a_shard_end_checkpoint_means_nothing_to_do() {
    let s = setup(2);
    let outcome = s
        .consumer(
            Position::ShardEnd,
            Script::default(),
            ShardConsumerOptions::default(),
        )
        .spawn()
        .join()
        .await;
    assert!(matches!(outcome, ShardConsumerOutcome::ShardEnded { .. }));
    assert!(s.log().is_empty());
}

// ---- empty batches (call_processor_on_empty_batches) ----

fn with_empty_batches(call: bool, policy: ProcessorErrorPolicy) -> ShardConsumerOptions {
    ShardConsumerOptions {
        error_policy: policy,
        call_processor_on_empty_batches: call,
        ..ShardConsumerOptions::default()
    }
}

#[tokio::test(start_paused = true)]
async fn empty_reads_reach_the_processor_only_when_asked() {
    for call in [false, true] {
        let s = setup(3);
        let handle = s
            .consumer(
                Position::TrimHorizon,
                Script::default(),
                with_empty_batches(call, ProcessorErrorPolicy::default()),
            )
            .spawn();
        s.wait_for_batches(1).await;
        if call {
            // Reads keep finding nothing: each is a call with no records.
            s.wait_for_batches(4).await;
        } else {
            // 25 idle reads (200 ms apart) find nothing; none reaches the processor.
            tokio::time::sleep(Duration::from_secs(5)).await;
            assert_eq!(s.batches().len(), 1);
        }
        s.api.push([record(3, "r3"), record(4, "r4")]);
        let mut seen = s.batches_seen.subscribe();
        seen.wait_for(|_| s.delivered().len() == 5).await.unwrap();
        handle.request_shutdown();
        assert!(matches!(
            handle.join().await,
            ShardConsumerOutcome::ShutDown
        ));
        let batches = s.batches();
        assert_eq!(batches[0], (0..3).map(r).collect::<Vec<_>>(), "{call}");
        let with_records: Vec<_> = batches.iter().filter(|b| !b.is_empty()).collect();
        assert_eq!(with_records.len(), 2, "{call}: {batches:?}");
        assert_eq!(*with_records[1], (3..5).map(r).collect::<Vec<_>>());
        let empty = batches.len() - 2;
        if call {
            assert!(empty >= 3, "{batches:?}");
        } else {
            assert_eq!(empty, 0, "{batches:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_empty_call_backs_off_and_the_next_read_calls_again() {
    let s = setup(2);
    let script = Script {
        fail_calls: vec![2], // the first empty call
        ..Script::default()
    };
    let handle = s
        .consumer(
            Position::TrimHorizon,
            script,
            with_empty_batches(
                true,
                ProcessorErrorPolicy::Retry {
                    backoff: fast_retry(),
                },
            ),
        )
        .spawn();
    s.wait_for_batches(4).await;
    handle.request_shutdown();
    assert!(matches!(
        handle.join().await,
        ShardConsumerOutcome::ShutDown
    ));
    let batches = s.batches();
    // Nothing was redelivered: the records once, then only empty calls.
    assert_eq!(batches[0], (0..2).map(r).collect::<Vec<_>>());
    assert!(batches[1..].iter().all(Vec::is_empty), "{batches:?}");

    // Under StopShard, a failed empty call stops the shard like any other failure.
    let s = setup(2);
    let script = Script {
        fail_calls: vec![2],
        ..Script::default()
    };
    let outcome = s
        .run(
            script,
            with_empty_batches(true, ProcessorErrorPolicy::StopShard),
        )
        .await;
    assert!(
        matches!(outcome, ShardConsumerOutcome::ProcessorFailed { .. }),
        "{outcome:?}"
    );
    assert_eq!(s.batches().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_empty_read_at_the_shard_end_goes_to_shard_ended_only() {
    let s = setup(0);
    s.close_with_child();
    let outcome = s
        .run(
            Script::default(),
            with_empty_batches(true, ProcessorErrorPolicy::default()),
        )
        .await;
    assert!(matches!(outcome, ShardConsumerOutcome::ShardEnded { .. }));
    assert_eq!(
        s.log(),
        [
            Ev::Init(Position::TrimHorizon),
            Ev::ShardEnded(vec!["shardId-000000000001".into()])
        ]
    );
}

// ---- deaggregation and the resume filter ----

fn aggregate(seq: &str, keys: &[&str]) -> ReadRecord {
    let mut aggregator = Aggregator::default();
    for (i, key) in keys.iter().enumerate() {
        aggregator
            .try_push(UserRecord::new(*key, format!("d{i}")).unwrap())
            .unwrap();
    }
    let finished = aggregator.finish().unwrap();
    ReadRecord {
        sequence_number: seq.into(),
        partition_key: finished.record.partition_key,
        data: finished.record.data,
        approximate_arrival_timestamp: None,
    }
}

fn plain(seq: &str) -> ReadRecord {
    ReadRecord {
        sequence_number: seq.into(),
        partition_key: "k".into(),
        data: Bytes::from_static(b"plain"),
        approximate_arrival_timestamp: None,
    }
}

fn positions(records: &[Record]) -> Vec<(String, u64)> {
    records
        .iter()
        .map(|r| (r.sequence_number.to_string(), r.sub_sequence_number))
        .collect()
}

#[test]
fn resume_filter_table() {
    // Kinesis records: 100 (plain), 200 (aggregate of 4), 300 (plain).
    let read = || {
        vec![
            plain("100"),
            aggregate("200", &["a", "b", "c", "d"]),
            plain("300"),
        ]
    };
    let all = || to_user_records(read(), None, SHARD);
    let p = |s: &str, n: u64| (s.to_string(), n);
    type Row = (&'static str, u64, Vec<(String, u64)>);
    let table: [Row; 7] = [
        ("99", 0, positions(&all())),
        (
            "100",
            0,
            vec![
                p("200", 0),
                p("200", 1),
                p("200", 2),
                p("200", 3),
                p("300", 0),
            ],
        ),
        // Sub-sequence 0 of an aggregate: its later sub-records remain.
        (
            "200",
            0,
            vec![p("200", 1), p("200", 2), p("200", 3), p("300", 0)],
        ),
        ("200", 2, vec![p("200", 3), p("300", 0)]),
        // The aggregate's last sub-record: nothing of it remains.
        ("200", 3, vec![p("300", 0)]),
        ("300", 0, vec![]),
        // Leading zeros and longer numbers compare numerically.
        ("0200", 1, vec![p("200", 2), p("200", 3), p("300", 0)]),
    ];
    for (seq, sub, expected) in table {
        let checkpoint = SequenceNumber::new(seq, sub).unwrap();
        assert_eq!(
            positions(&after_checkpoint(all(), &checkpoint)),
            expected,
            "after {seq}/{sub}"
        );
    }
    let big = SequenceNumber::new("1000", 0).unwrap();
    assert!(after_checkpoint(all(), &big).is_empty());
}

#[test]
fn deaggregation_keeps_in_range_sub_records_with_their_numbers() {
    let keys = ["a", "b", "c", "d", "e", "f"];
    let hashes: Vec<_> = keys
        .iter()
        .map(|k| HashKey::from_partition_key(k))
        .collect();
    let mid = HashKey(u128::MAX / 2);
    let range = HashKeyRange::new(HashKey::MIN, mid);
    let records = to_user_records(
        vec![aggregate("200", &keys), plain("300")],
        Some(range),
        SHARD,
    );
    let expected: Vec<(String, u64)> = hashes
        .iter()
        .enumerate()
        .filter(|(_, h)| **h <= mid)
        .map(|(i, _)| ("200".to_string(), i as u64))
        .chain([("300".to_string(), 0)])
        .collect();
    assert_eq!(positions(&records), expected);
    assert!(records[0].aggregated);
    assert!(
        !records.last().unwrap().aggregated,
        "plain records are never filtered"
    );
}
