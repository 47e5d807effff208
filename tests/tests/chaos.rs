//! The chaos suite: producer → Kinesis → workers under faults, each scenario ending in a
//! verdict computed from the data (see `kinesis_tests::chaos`). Short form by default (CI);
//! `CHAOS_SCALE=10 cargo test -p kinesis-tests --test chaos -- --nocapture` is the long form.
//! docs/RELIABILITY.md lists the scenarios, what each proves and the latest results.
//!
//! Processes that get killed are `chaos-node` children; everything else runs in the test
//! process, with `local_aws::fault::FaultProxy` in front of the emulators where a scenario
//! needs failures the emulators do not produce.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use kinesis_consumer::{InitialPosition, Worker};
use kinesis_producer::{Producer, PutError, Record};
use kinesis_tests::chaos::{
    Duplicate, Ledger, Production, RunningWorker, payload, recorders, scale,
};
use local_aws::fault::{Fault, FaultProxy, Rule};
use local_aws::testing::{create_stream, unique_name, wait_for_active};
use local_aws::{Endpoints, LocalAws};

const NODE: &str = env!("CARGO_BIN_EXE_chaos-node");

/// A fresh stream of `shards` shards, created through `kinesis`, and an application name,
/// both unique and tagged `chaos-{tag}`.
async fn stream_and_app(
    kinesis: &aws_sdk_kinesis::Client,
    tag: &str,
    shards: i32,
) -> (String, String) {
    let stream = unique_name(&format!("chaos-{tag}"));
    let app = unique_name(&format!("chaos-{tag}-app"));
    create_stream(kinesis, &stream, shards).await.unwrap();
    (stream, app)
}

/// A worker in this process with short failover and taker intervals, and a processor that
/// records into `ledger` without delay.
fn worker(
    app: &str,
    stream: &str,
    kinesis: &aws_sdk_kinesis::Client,
    dynamodb: &aws_sdk_dynamodb::Client,
    ledger: &Arc<Ledger>,
    name: &str,
) -> RunningWorker {
    RunningWorker::start(
        Worker::builder(
            app,
            stream,
            kinesis.clone(),
            dynamodb.clone(),
            recorders(ledger, name, Duration::ZERO),
        )
        .worker_id(name)
        .failover_time(Duration::from_secs(3))
        .lease_taker_interval(Duration::from_millis(500))
        .idle_time_between_reads(Duration::from_millis(100))
        .shard_sync_interval(Duration::from_secs(2))
        .initial_position(InitialPosition::TrimHorizon)
        .build(),
    )
}

async fn producer(kinesis: &aws_sdk_kinesis::Client, stream: &str) -> Producer {
    Producer::builder(kinesis.clone())
        .stream(stream)
        .build()
        .await
        .expect("the producer starts")
}

fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {signal} {}", child.id());
}

fn worker_process(aws: &LocalAws, app: &str, stream: &str, out: &Path, name: &str) -> Child {
    let e = aws.endpoints();
    Command::new(NODE)
        .arg("worker")
        .env("LOCAL_AWS_BACKEND", "external")
        .env("LOCAL_AWS_KINESIS_ENDPOINT", &e.kinesis)
        .env("LOCAL_AWS_DYNAMODB_ENDPOINT", &e.dynamodb)
        .env("LOCAL_AWS_S3_ENDPOINT", &e.s3)
        .env("LOCAL_AWS_ACCESS_KEY_ID", aws.credentials().access_key_id())
        .env(
            "LOCAL_AWS_SECRET_ACCESS_KEY",
            aws.credentials().secret_access_key(),
        )
        .env("CHAOS_APP", app)
        .env("CHAOS_STREAM", stream)
        .env("CHAOS_OUT", out)
        .env("CHAOS_WORKER", name)
        .env("CHAOS_FAILOVER_MS", "3000")
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .spawn()
        .expect("chaos-node starts")
}

/// Waits for a child with a deadline; returns whether it exited successfully.
async fn exit_ok(mut child: Child, deadline: Duration) -> bool {
    let until = std::time::Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.success();
        }
        if std::time::Instant::now() > until {
            let _ = child.kill();
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A worker process is killed with SIGKILL half way through the load; the other one takes
/// its leases after the failover time. Proves: a crash loses nothing (records after the
/// last checkpoint are replayed, nothing else is delivered twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_process_killed_with_sigkill_under_load() {
    let aws = LocalAws::start().await.unwrap();
    let kinesis = aws.kinesis_client();
    let (stream, app) = stream_and_app(&kinesis, "kill", 4).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("deliveries.tsv");
    let mut victim = Some(worker_process(&aws, &app, &stream, &out, "victim"));
    let survivor = worker_process(&aws, &app, &stream, &out, "survivor");

    let ledger = Ledger::new();
    let n = 6_000 * scale();
    let producer = producer(&kinesis, &stream).await;
    let production = Production::run(&producer, &ledger, 0..n, 2_000, |id| {
        if id == n / 2
            && let Some(mut child) = victim.take()
        {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
        }
    })
    .await;
    producer.close().await;
    production.finish().await;

    let _ = ledger
        .wait_delivered(Duration::from_secs(60), |l| l.reload_deliveries(&out))
        .await;
    signal(&survivor, "-TERM");
    assert!(
        exit_ok(survivor, Duration::from_secs(20)).await,
        "the survivor stops cleanly on SIGTERM"
    );
    ledger.reload_deliveries(&out);
    let verdict = ledger.verdict("worker_process_killed_with_sigkill_under_load");
    verdict.assert_no_failures(&[Duplicate::Replayed]);
    assert!(
        ledger.workers_of_deliveries().contains("survivor"),
        "the survivor processed records"
    );
}

/// The emulator process (Kinesis and DynamoDB, durable state) is killed with SIGKILL while
/// records are produced and consumed, and restarted a second later on the same ports.
/// Proves: the producer retries through the outage within the record TTL, the worker
/// recovers its iterators and leases, and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_process_killed_and_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let stack = start_stack(dir.path(), &ports);
    let endpoints = Endpoints {
        kinesis: format!("http://127.0.0.1:{}", ports[0]),
        dynamodb: format!("http://127.0.0.1:{}", ports[1]),
        s3: format!("http://127.0.0.1:{}", ports[2]),
    };
    let aws = LocalAws::connect(
        endpoints,
        local_aws::ACCESS_KEY_ID,
        local_aws::SECRET_ACCESS_KEY,
    );
    let (kinesis, dynamodb) = (aws.kinesis_client(), aws.dynamodb_client());
    let (stream, app) = stream_and_app(&kinesis, "emu", 2).await;
    let ledger = Ledger::new();
    let w = worker(&app, &stream, &kinesis, &dynamodb, &ledger, "w1");

    let n = 4_000 * scale();
    let producer = producer(&kinesis, &stream).await;
    let mut stack = Some(stack);
    let mut restarted = None;
    let production = Production::run(&producer, &ledger, 0..n, 1_000, |id| {
        if id == n / 3
            && let Some(mut child) = stack.take()
        {
            child.kill().unwrap();
            child.wait().unwrap();
            let (dir, ports) = (dir.path().to_owned(), ports.clone());
            restarted = Some(tokio::task::spawn_blocking(move || {
                std::thread::sleep(Duration::from_secs(1));
                start_stack(&dir, &ports)
            }));
        }
    })
    .await;
    let restarted = restarted
        .expect("the stack was killed")
        .await
        .expect("the stack restarts");
    producer.close().await;
    production.finish().await;
    ledger.wait_delivered(Duration::from_secs(90), |_| {}).await;
    w.shutdown().await;
    let verdict = ledger.verdict("emulator_process_killed_and_restarted");
    // An answer lost in the kill can make the producer store a record twice.
    verdict.assert_no_failures(&[Duplicate::Replayed, Duplicate::StoredTwice]);
    signal(&restarted, "-TERM");
    assert!(exit_ok(restarted, Duration::from_secs(10)).await);
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_stack(dir: &Path, ports: &[u16]) -> Child {
    let mut child = Command::new(NODE)
        .arg("stack")
        .arg(dir)
        .args(ports.iter().map(u16::to_string))
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("chaos-node starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "the stack starts");
    child
}

/// Throttling storms and 5xx bursts on every Kinesis and lease-table operation, for the
/// producer and two workers. Proves: classified retries with backoff absorb them; nothing
/// is lost and nothing is delivered twice except replays after a lease moved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_storms_and_5xx_bursts() {
    let aws = LocalAws::start().await.unwrap();
    let kproxy = FaultProxy::start(aws.kinesis_endpoint()).await.unwrap();
    let dproxy = FaultProxy::start(aws.dynamodb_endpoint()).await.unwrap();
    let storm = [
        kproxy.inject(
            Rule::on("PutRecords")
                .with_probability(0.3, 7)
                .fault(Fault::throttle()),
        ),
        kproxy.inject(
            Rule::on("PutRecords")
                .every(7)
                .fault(Fault::internal_error()),
        ),
        kproxy.inject(
            Rule::on("GetRecords")
                .with_probability(0.25, 11)
                .fault(Fault::throttle()),
        ),
        kproxy.inject(
            Rule::on("GetRecords")
                .every(9)
                .fault(Fault::service_unavailable()),
        ),
    ];
    let lease_faults = [
        dproxy.inject(
            Rule::on("UpdateItem")
                .every(5)
                .fault(Fault::internal_error()),
        ),
        dproxy.inject(Rule::on("Scan").every(4).fault(Fault::throttle())),
    ];
    let ledger = two_workers_through_proxies(&aws, &kproxy, &dproxy, "storm").await;

    for rule in storm {
        assert!(kproxy.fired(rule) > 0, "every Kinesis fault fired");
    }
    for rule in lease_faults {
        assert!(dproxy.fired(rule) > 0, "every lease-table fault fired");
    }
    ledger
        .verdict("throttling_storms_and_5xx_bursts")
        .assert_no_failures(&[Duplicate::Replayed]);
}

/// Stream + producer + two workers, all talking to the emulators through the given proxies:
/// puts 5 000 × scale records at 2 000/s, waits for them, shuts the workers down.
async fn two_workers_through_proxies(
    aws: &LocalAws,
    kproxy: &FaultProxy,
    dproxy: &FaultProxy,
    tag: &str,
) -> Arc<Ledger> {
    let kinesis = local_aws::kinesis_client(kproxy.endpoint());
    let dynamodb = local_aws::dynamodb_client(dproxy.endpoint());
    let (stream, app) = stream_and_app(&aws.kinesis_client(), tag, 4).await;
    let ledger = Ledger::new();
    let workers =
        ["w1", "w2"].map(|name| worker(&app, &stream, &kinesis, &dynamodb, &ledger, name));
    let n = 5_000 * scale();
    let producer = producer(&kinesis, &stream).await;
    let production = Production::run(&producer, &ledger, 0..n, 2_000, |_| {}).await;
    producer.close().await;
    production.finish().await;
    ledger.wait_delivered(Duration::from_secs(90), |_| {}).await;
    for w in workers {
        w.shutdown().await;
    }
    ledger
}

/// Connections reset after the service applied the request: on PutRecords (the producer
/// cannot know the records were stored) and on lease writes. Proves: the only duplicates are
/// the unavoidable ones (stored twice after a lost answer, counted), nothing is lost, and
/// lost answers on lease writes do not make a worker drop or double-own a lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_resets_after_apply() {
    let aws = LocalAws::start().await.unwrap();
    let kproxy = FaultProxy::start(aws.kinesis_endpoint()).await.unwrap();
    let dproxy = FaultProxy::start(aws.dynamodb_endpoint()).await.unwrap();
    let put_resets = kproxy.inject(
        Rule::on("PutRecords")
            .every(8)
            .fault(Fault::reset_after_forwarding()),
    );
    let lease_resets = dproxy.inject(
        Rule::on("UpdateItem")
            .every(6)
            .fault(Fault::reset_after_forwarding()),
    );
    let ledger = two_workers_through_proxies(&aws, &kproxy, &dproxy, "rst").await;

    assert!(kproxy.fired(put_resets) > 0, "PutRecords answers were lost");
    assert!(
        dproxy.fired(lease_resets) > 0,
        "lease-write answers were lost"
    );
    ledger
        .verdict("connection_resets_after_apply")
        .assert_no_failures(&[Duplicate::Replayed, Duplicate::StoredTwice]);
}

/// A shard is split a third of the way through the load and its two children are merged at
/// two thirds, while two workers consume. Proves: parents before children, no loss, and the
/// producer's shard map follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_and_merge_under_load() {
    let aws = LocalAws::start().await.unwrap();
    let (kinesis, dynamodb) = (aws.kinesis_client(), aws.dynamodb_client());
    let (stream, app) = stream_and_app(&kinesis, "reshard", 2).await;
    let ledger = Ledger::new();
    let w1 = worker(&app, &stream, &kinesis, &dynamodb, &ledger, "w1");
    let w2 = worker(&app, &stream, &kinesis, &dynamodb, &ledger, "w2");

    let n = 6_000 * scale();
    let progress = Arc::new(AtomicU64::new(0));
    let resharding = {
        let (kinesis, stream, progress) = (kinesis.clone(), stream.clone(), progress.clone());
        tokio::spawn(async move {
            while progress.load(Ordering::Relaxed) < n / 3 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            kinesis
                .split_shard()
                .stream_name(&stream)
                .shard_to_split("shardId-000000000000")
                .new_starting_hash_key((1u128 << 126).to_string())
                .send()
                .await
                .expect("split");
            wait_for_active(&kinesis, &stream).await.unwrap();
            while progress.load(Ordering::Relaxed) < 2 * n / 3 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // The split's children are the two newest shards, adjacent by construction.
            let shards = kinesis
                .list_shards()
                .stream_name(&stream)
                .send()
                .await
                .unwrap();
            let children: Vec<String> = shards
                .shards()
                .iter()
                .filter(|s| s.parent_shard_id() == Some("shardId-000000000000"))
                .map(|s| s.shard_id().to_owned())
                .collect();
            assert_eq!(children.len(), 2, "the split made two children");
            kinesis
                .merge_shards()
                .stream_name(&stream)
                .shard_to_merge(&children[0])
                .adjacent_shard_to_merge(&children[1])
                .send()
                .await
                .expect("merge");
            wait_for_active(&kinesis, &stream).await.unwrap();
        })
    };
    let producer = producer(&kinesis, &stream).await;
    let production = Production::run(&producer, &ledger, 0..n, 2_000, |id| {
        progress.store(id, Ordering::Relaxed);
    })
    .await;
    resharding.await.expect("split, then merge");
    producer.close().await;
    production.finish().await;
    ledger.wait_delivered(Duration::from_secs(90), |_| {}).await;
    w1.shutdown().await;
    w2.shutdown().await;

    let shards = kinesis
        .list_shards()
        .stream_name(&stream)
        .send()
        .await
        .unwrap();
    assert_eq!(
        shards.shards().len(),
        5,
        "2 + 2 children of the split + 1 merged"
    );
    ledger
        .verdict("split_and_merge_under_load")
        .assert_no_failures(&[Duplicate::Replayed]);
    ledger.assert_parent_before_child(&shards);
}

/// A processor far slower than the producer: 300 ms per batch of one Kinesis record (one
/// aggregate of a few hundred user records). Proves: the processor sets the pace (the worker
/// falls behind and does not read ahead without bound), the lag is worked off once the load
/// stops, nothing is lost and nothing is delivered twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_processor_backpressure() {
    let aws = LocalAws::start().await.unwrap();
    let (kinesis, dynamodb) = (aws.kinesis_client(), aws.dynamodb_client());
    let (stream, app) = stream_and_app(&kinesis, "slow", 2).await;
    let ledger = Ledger::new();
    let w = RunningWorker::start(
        Worker::builder(
            &app,
            &stream,
            kinesis.clone(),
            dynamodb.clone(),
            recorders(&ledger, "slow", Duration::from_millis(300)),
        )
        .max_records(1)
        .idle_time_between_reads(Duration::from_millis(100))
        .initial_position(InitialPosition::TrimHorizon)
        .build(),
    );
    let n = 6_000 * scale();
    let producer = producer(&kinesis, &stream).await;
    let production = Production::run(&producer, &ledger, 0..n, 4_000, |_| {}).await;
    producer.close().await;
    production.finish().await;
    let behind = ledger.acked().len() - ledger.delivered_ids().len();
    let batches_then = ledger.batches();
    ledger
        .wait_delivered(Duration::from_secs(120), |_| {})
        .await;
    w.shutdown().await;
    println!(
        "slow processor: {behind} records behind when the load stopped; {batches_then} batches then, {} in all",
        ledger.batches()
    );
    ledger
        .verdict("slow_processor_backpressure")
        .assert_no_failures(&[]);
    assert!(
        behind > 0,
        "the processor was the bottleneck (otherwise this scenario proves nothing)"
    );
    assert!(
        ledger.batches() > batches_then,
        "the lag was worked off in later batches"
    );
}

/// Bad input at every entry point, between good records: oversized data, empty and too
/// long partition keys, bad explicit hash keys (typed errors from `put`, nothing accepted
/// is disturbed), and corrupt KPL aggregates written straight into the stream (delivered as
/// the plain records they are, byte for byte, never dropped, never a crash).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_input() {
    let aws = LocalAws::start().await.unwrap();
    let (kinesis, dynamodb) = (aws.kinesis_client(), aws.dynamodb_client());
    let (stream, app) = stream_and_app(&kinesis, "bad", 2).await;
    let ledger = Ledger::new();
    let w = worker(&app, &stream, &kinesis, &dynamodb, &ledger, "w1");
    let producer = producer(&kinesis, &stream).await;

    let bad: Vec<(&str, Record)> = vec![
        (
            "data over 1 MiB",
            Record::new("k", vec![0u8; 1024 * 1024 + 1]),
        ),
        ("empty partition key", Record::new("", "x")),
        (
            "partition key of 257 characters",
            Record::new("k".repeat(257), "x"),
        ),
        (
            "explicit hash key not a number",
            Record::new("k", "x").with_explicit_hash_key("abc"),
        ),
        (
            "explicit hash key above 2^128-1",
            Record::new("k", "x").with_explicit_hash_key("340282366920938463463374607431768211456"),
        ),
    ];
    let n = 2_000 * scale();
    let mut bad = bad.into_iter();
    let mut rejected = Vec::new();
    let mut handles = Vec::new();
    for id in 0..n {
        if id % 300 == 0
            && let Some((what, record)) = bad.next()
        {
            match producer.put(record).await {
                Err(
                    e @ (PutError::RecordTooLarge { .. }
                    | PutError::InvalidPartitionKey { .. }
                    | PutError::InvalidExplicitHashKey { .. }),
                ) => {
                    ledger.rejected(what, e.to_string());
                    rejected.push(what);
                }
                Err(other) => panic!("{what}: unexpected error {other}"),
                Ok(_) => panic!("{what}: accepted"),
            }
        }
        let handle = producer
            .put(Record::new(kinesis_tests::chaos::key(id), payload(id)))
            .await
            .expect("a good record is accepted");
        handles.push((id, handle));
    }
    for (id, handle) in handles {
        let outcome = handle.await.expect("a good record is stored");
        ledger.put_result(
            id,
            kinesis_tests::chaos::PutResult::Acked {
                shard: outcome.shard_id().to_owned(),
                sequence: outcome.sequence_number().to_owned(),
            },
        );
    }
    assert_eq!(
        rejected.len(),
        5,
        "every bad record was refused: {rejected:?}"
    );

    // Corrupt aggregates, straight through the SDK: right magic, wrong everything else.
    let magic = [0xF3u8, 0x89, 0x9A, 0xC2];
    let corrupt: Vec<Vec<u8>> = vec![
        magic.to_vec(),                                                          // magic only
        [&magic[..], &[0xFF; 40]].concat(), // garbage + "digest"
        [&magic[..], b"\x0a\x01a\x1a\x04\x08\x00\x1a\x00", &[0u8; 16]].concat(), // bad MD5
        [&magic[..], &[0x0a, 0x05, 0x61]].concat(), // truncated
    ];
    for (i, data) in corrupt.iter().enumerate() {
        kinesis
            .put_record()
            .stream_name(&stream)
            .partition_key(format!("corrupt-{i}"))
            .data(aws_sdk_kinesis::primitives::Blob::new(data.clone()))
            .send()
            .await
            .expect("Kinesis stores any bytes");
    }
    producer.close().await;
    ledger.wait_delivered(Duration::from_secs(60), |_| {}).await;
    // The corrupt records come after every good one in their shard: wait for them too.
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while (ledger.verdict("probe").unknown_deliveries as usize) < corrupt.len()
        && std::time::Instant::now() < until
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    w.shutdown().await;

    let verdict = ledger.verdict("malformed_and_oversized_input");
    verdict.assert_no_failures(&[]);
    assert_eq!(
        verdict.unknown_deliveries as usize,
        corrupt.len(),
        "each corrupt aggregate is delivered once, as a plain record"
    );
    let passed_through = ledger.unknown_payloads();
    for data in &corrupt {
        assert!(
            passed_through.contains(&Bytes::from(data.clone())),
            "corrupt record delivered byte for byte"
        );
    }
}

/// A worker process is frozen (SIGSTOP) for longer than the failover time, as when a VM or
/// container is paused and its clocks jump, then resumed (SIGCONT). The other worker takes
/// its leases meanwhile. Proves: the resumed worker notices it lost them (conditional
/// writes on the lease counter) instead of checkpointing over the new owner, and nothing is
/// lost; at most the in-flight batch is processed twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_process_frozen_then_resumed() {
    let aws = LocalAws::start().await.unwrap();
    let kinesis = aws.kinesis_client();
    let (stream, app) = stream_and_app(&kinesis, "stop", 4).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("deliveries.tsv");
    let frozen = worker_process(&aws, &app, &stream, &out, "frozen");
    let other = worker_process(&aws, &app, &stream, &out, "other");

    let ledger = Ledger::new();
    let n = 8_000 * scale();
    let producer = producer(&kinesis, &stream).await;
    let frozen_pid = frozen.id();
    let production = Production::run(&producer, &ledger, 0..n, 1_000, |id| {
        if id == n / 4 {
            signal_pid(frozen_pid, "-STOP");
        }
        // 5 s later (> the 3 s failover): resume.
        if id == n / 4 + 5_000 {
            signal_pid(frozen_pid, "-CONT");
        }
    })
    .await;
    producer.close().await;
    production.finish().await;
    let _ = ledger
        .wait_delivered(Duration::from_secs(60), |l| l.reload_deliveries(&out))
        .await;
    signal(&frozen, "-TERM");
    signal(&other, "-TERM");
    assert!(
        exit_ok(frozen, Duration::from_secs(20)).await,
        "the resumed worker stops cleanly"
    );
    assert!(
        exit_ok(other, Duration::from_secs(20)).await,
        "the other worker stops cleanly"
    );
    ledger.reload_deliveries(&out);
    ledger
        .verdict("worker_process_frozen_then_resumed")
        .assert_no_failures(&[Duplicate::Replayed]);
}

fn signal_pid(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {signal} {pid}");
}
