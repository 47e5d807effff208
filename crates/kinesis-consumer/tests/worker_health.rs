//! `WorkerHandle::health` on real workers: the SDK against the local stack.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_kinesis::primitives::Blob;
use kinesis_consumer::{
    HealthPolicy, HealthProblem, InitialPosition, ProcessInput, ProcessorCall, ProcessorError,
    RecordProcessor, Worker, WorkerHandle, WorkerHealth, WorkerStatus,
};
use local_aws::{LocalAws, testing};
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Processes a batch once it gets a permit (tests hand them out); checkpoints after each.
struct Gated {
    gate: Arc<Semaphore>,
}

#[async_trait]
impl RecordProcessor for Gated {
    async fn process_records(&mut self, input: ProcessInput<'_>) -> Result<(), ProcessorError> {
        self.gate.acquire().await?.forget();
        input.checkpointer.checkpoint().await?;
        Ok(())
    }
}

struct Fixture {
    aws: LocalAws,
    stream: String,
    gate: Arc<Semaphore>,
}

impl Fixture {
    async fn new(shards: i32, permits: usize) -> Fixture {
        let aws = LocalAws::start().await.unwrap();
        let stream = testing::unique_name("health");
        testing::create_stream(&aws.kinesis_client(), &stream, shards)
            .await
            .unwrap();
        Fixture {
            aws,
            stream,
            gate: Arc::new(Semaphore::new(permits)),
        }
    }

    fn worker(&self) -> Worker<impl kinesis_consumer::ProcessorFactory> {
        let gate = self.gate.clone();
        Worker::builder(
            testing::unique_name("app"),
            &self.stream,
            self.aws.kinesis_client(),
            self.aws.dynamodb_client(),
            move || Gated { gate: gate.clone() },
        )
        .worker_id("health-worker")
        .initial_position(InitialPosition::TrimHorizon)
        .idle_time_between_reads(Duration::from_millis(200))
        .build()
    }

    async fn put(&self, n: usize) {
        let kinesis = self.aws.kinesis_client();
        for i in 0..n {
            kinesis
                .put_record()
                .stream_name(&self.stream)
                .partition_key(format!("key-{i}"))
                .data(Blob::new(i.to_string()))
                .send()
                .await
                .unwrap();
        }
    }

    async fn shard_ids(&self) -> BTreeSet<String> {
        let out = self
            .aws
            .kinesis_client()
            .list_shards()
            .stream_name(&self.stream)
            .send()
            .await
            .unwrap();
        out.shards()
            .iter()
            .map(|s| s.shard_id().to_owned())
            .collect()
    }
}

/// Polls `handle.health()` until `f` holds (30 s at most).
async fn until(
    handle: &WorkerHandle,
    what: &str,
    f: impl Fn(&WorkerHealth) -> bool,
) -> WorkerHealth {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let health = handle.health();
        if f(&health) {
            return health;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {health:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_shows_the_held_leases_renewals_and_progress_of_a_running_worker() {
    let f = Fixture::new(2, usize::MAX >> 4).await;
    f.put(20).await;
    let worker = f.worker();
    let handle = worker.handle();
    let before = handle.health();
    assert_eq!(before.status, WorkerStatus::NotStarted);
    assert!(!before.is_healthy(&HealthPolicy::default()));

    let task = tokio::spawn(worker.run());
    let health = until(
        &handle,
        "both leases held and every record processed",
        |h| h.leases_held == 2 && h.shards.iter().map(|s| s.records_processed).sum::<u64>() == 20,
    )
    .await;
    assert_eq!(health.worker_id, "health-worker");
    assert_eq!(health.status, WorkerStatus::Running);
    let held: BTreeSet<String> = health.shards.iter().map(|s| s.shard_id.clone()).collect();
    assert_eq!(held, f.shard_ids().await);
    for shard in &health.shards {
        assert!(shard.started, "{shard:?}");
        assert_eq!(shard.consecutive_failures, 0);
        assert!(shard.millis_behind_latest.is_some(), "{shard:?}");
    }
    // Renewals run every third of the failover time: the last answered pass is recent.
    let renewal = health.since_last_renewal.expect("started");
    assert!(renewal <= health.failover_time, "{health:#?}");
    assert!(
        health.is_healthy(&HealthPolicy::default()),
        "{:?}",
        health.problems(&HealthPolicy::default())
    );

    handle.shutdown().await;
    task.await.unwrap().unwrap();
    let after = handle.health();
    assert_eq!(
        (after.status, after.leases_held),
        (WorkerStatus::Stopped, 0)
    );
    assert_eq!(
        after.problems(&HealthPolicy::default()),
        [HealthProblem::NotRunning {
            status: WorkerStatus::Stopped
        }]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processor_call_that_does_not_return_is_reported_until_it_does() {
    let f = Fixture::new(1, 0).await;
    f.put(3).await;
    let worker = f.worker();
    let handle = worker.handle();
    let task = tokio::spawn(worker.run());

    let health = until(&handle, "a process_records call in flight", |h| {
        h.shards
            .first()
            .is_some_and(|s| s.processor_call == Some(ProcessorCall::ProcessRecords))
    })
    .await;
    let shard_id = health.shards[0].shard_id.clone();
    // Any call counts as stalled under a zero limit; the default five minutes is not reached.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let health = handle.health();
    let strict = HealthPolicy::default().max_processor_call(Duration::ZERO);
    assert!(
        matches!(
            &health.problems(&strict)[..],
            [HealthProblem::ProcessorCallStalled {
                shard_id: s,
                call: ProcessorCall::ProcessRecords,
                ..
            }] if *s == shard_id
        ),
        "{health:#?}"
    );
    assert!(health.is_healthy(&HealthPolicy::default()));

    // Released: the call returns, the records count as processed, nothing is in flight.
    f.gate.add_permits(1000);
    let health = until(&handle, "the records processed", |h| {
        h.shards
            .first()
            .is_some_and(|s| s.records_processed == 3 && s.processor_call.is_none())
    })
    .await;
    assert!(health.is_healthy(&strict), "{health:#?}");

    handle.shutdown().await;
    task.await.unwrap().unwrap();
}
