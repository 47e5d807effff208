//! `kin demo`: the whole pipeline on the embedded local stack, checked end to end.
//!
//! ```text
//!  generator ─► Producer ─PutRecords─► stream (4 shards; one split half way)
//!                  │                         │ GetRecords
//!                  │ outcomes                ▼
//!                  │                   N workers, one lease table, S3Sink per shard
//!                  │                         │ PutObject, then checkpoint
//!                  ▼                         ▼
//!            ids acknowledged ──► verdict ◄── every object in the bucket
//! ```
//!
//! Every record carries a unique id. The verdict compares the ids the producer acknowledged
//! with the ids found in S3: each must appear exactly once (no loss, no duplicate content),
//! and a failed put must come back as a typed failure, never as silence. The workers are
//! stopped gracefully once they have seen every acknowledged id, which writes their last
//! buffers to S3 and checkpoints them (the sink's durability contract).
//!
//! Everything runs in this process on loopback ports: no AWS account, nothing to install.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use kinesis_consumer::lease::{DynamoLeaseStore, LeaseStore};
use kinesis_consumer::{
    Checkpointer, InitInput, InitialPosition, Position, ProcessInput, ProcessorError,
    RecordProcessor, ShardEndedInput, Worker, WorkerHandle,
};
use kinesis_producer::{Producer, PutHandle, Record};
use local_aws::LocalAws;
use s3_sink::{S3Sink, SinkConfig};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::cli::DemoArgs;
use crate::error::{CliError, Result};
use crate::output::{Output, Table, write_stdout};

const STREAM: &str = "demo";
const APPLICATION: &str = "demo-app";
const BUCKET: &str = "demo";

pub async fn run(out: &Output, args: DemoArgs) -> Result<()> {
    let started = Instant::now();
    let aws = LocalAws::builder()
        .ignore_env()
        .start()
        .await
        .map_err(|e| CliError::failed(format!("cannot start the local stack: {e}")))?;
    let kinesis = aws.kinesis_client();
    let dynamodb = aws.dynamodb_client();
    let s3 = aws.s3_client();
    eprintln!(
        "kin demo: local stack up (Kinesis {}, DynamoDB {}, S3 {})",
        aws.kinesis_endpoint(),
        aws.dynamodb_endpoint(),
        aws.s3_endpoint()
    );

    local_aws::testing::create_stream(&kinesis, STREAM, args.shards)
        .await
        .map_err(|e| CliError::failed(format!("cannot create stream {STREAM}: {e}")))?;
    s3.create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .map_err(|e| CliError::failed(format!("cannot create bucket {BUCKET}: {e}")))?;
    eprintln!(
        "kin demo: stream {STREAM} ({} shards), bucket {BUCKET}; {} records at {}/s, {} workers",
        args.shards, args.records, args.rate, args.workers
    );

    // The consumers: N workers sharing one lease table, each shard's records into S3.
    let seen = Arc::new(Seen::new(args.records));
    let sink = SinkConfig::new(s3.clone(), BUCKET, STREAM)
        .prefix("demo")
        .max_records(2_000)
        .max_age(Duration::from_secs(2));
    sink.check_bucket()
        .await
        .map_err(|e| CliError::failed(e.to_string()))?;
    let sink_factory = Arc::new(sink.factory());
    let mut workers: Vec<(String, WorkerHandle, JoinHandle<()>)> = Vec::new();
    for i in 0..args.workers {
        let id = format!("worker-{}", i + 1);
        let (sink_factory, seen) = (sink_factory.clone(), seen.clone());
        let worker = Worker::builder(
            APPLICATION,
            STREAM,
            kinesis.clone(),
            dynamodb.clone(),
            move || Counting {
                inner: sink_factory(),
                seen: seen.clone(),
            },
        )
        .worker_id(&id)
        .initial_position(InitialPosition::TrimHorizon)
        .idle_time_between_reads(Duration::from_millis(200))
        .shard_sync_interval(Duration::from_secs(5))
        // Quiet shards still get their objects written once the age threshold passes.
        .call_processor_on_empty_batches(true)
        .build();
        let handle = worker.handle();
        let name = id.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = worker.run().await {
                eprintln!("kin demo: {name} stopped: {e}");
            }
        });
        workers.push((id, handle, task));
    }

    // The producer, and a task that collects every record's outcome.
    let producer = Producer::builder(kinesis.clone())
        .stream(STREAM)
        .build()
        .await
        .map_err(|e| CliError::failed(format!("cannot start the producer: {e}")))?;
    let acked = Arc::new(Seen::new(args.records));
    let failed = Arc::new(AtomicU64::new(0));
    let (handles_tx, mut handles_rx) = mpsc::unbounded_channel::<(u64, PutHandle)>();
    let collector = {
        let (acked, failed) = (acked.clone(), failed.clone());
        tokio::spawn(async move {
            while let Some((id, handle)) = handles_rx.recv().await {
                match handle.await {
                    Ok(_) => acked.insert(id),
                    Err(failure) => {
                        eprintln!("kin demo: record {id} failed: {failure}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };

    let progress = out.spinner("starting");
    let status = Status {
        started,
        seen: seen.clone(),
        acked: acked.clone(),
        records: args.records,
        dynamodb: dynamodb.clone(),
    };

    // Generate at a steady rate, in 20 ms slices; split a shard half way through.
    let slice = Duration::from_millis(20);
    let per_slice = (args.rate as f64 * slice.as_secs_f64()).max(1.0);
    let mut ticker = tokio::time::interval(slice);
    let mut budget = 0.0;
    let mut put = 0u64;
    let mut split: Option<JoinHandle<std::result::Result<String, String>>> = None;
    let mut last_report = Instant::now();
    while put < args.records {
        ticker.tick().await;
        budget += per_slice;
        while budget >= 1.0 && put < args.records {
            budget -= 1.0;
            let record = Record::new(format!("customer-{}", put % 997), demo_payload(put));
            let handle = producer
                .put(record)
                .await
                .map_err(|e| CliError::failed(format!("put failed: {e}")))?;
            let _ = handles_tx.send((put, handle));
            put += 1;
        }
        if split.is_none() && !args.no_split && put >= args.records / 2 {
            let kinesis = kinesis.clone();
            split = Some(tokio::spawn(
                async move { split_first_shard(&kinesis).await },
            ));
        }
        if last_report.elapsed() >= Duration::from_millis(500) {
            last_report = Instant::now();
            status.report(&progress, put, "producing").await;
        }
    }
    drop(handles_tx);
    producer.close().await;
    collector
        .await
        .map_err(|e| CliError::failed(format!("the outcome collector failed: {e}")))?;
    let split_done = match split {
        Some(task) => match task.await {
            Ok(Ok(what)) => Some(what),
            Ok(Err(e)) => return Err(CliError::failed(format!("the split failed: {e}"))),
            Err(e) => return Err(CliError::failed(format!("the split task failed: {e}"))),
        },
        None => None,
    };

    // Drain: wait until the workers have processed every acknowledged record.
    let deadline = Instant::now() + args.drain_timeout;
    while seen.count() < acked.count() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if last_report.elapsed() >= Duration::from_millis(500) {
            last_report = Instant::now();
            status.report(&progress, put, "draining").await;
        }
    }
    let leases = status.leases_per_worker().await;
    progress.set_message("stopping the workers (write buffers, checkpoint, release leases)");
    for (_, handle, _) in &workers {
        handle.shutdown().await;
    }
    for (_, _, task) in workers {
        let _ = task.await;
    }
    progress.finish_and_clear();

    // The verdict, from what is in S3.
    let found = read_bucket(&s3, BUCKET, args.records).await?;
    let verdict = Verdict::new(&acked, &found);
    let elapsed = started.elapsed();
    let shards_now = open_shards(&kinesis).await.unwrap_or(0);

    let json = json!({
        "records_put": put,
        "acknowledged": acked.count(),
        "failed": failed.load(Ordering::Relaxed),
        "objects_in_s3": found.objects,
        "records_in_s3": found.lines,
        "missing": verdict.missing.len(),
        "duplicated": verdict.duplicated.len(),
        "exactly_once": verdict.exactly_once(),
        "split": split_done,
        "open_shards": shards_now,
        "leases_per_worker": leases,
        "seconds": elapsed.as_secs_f64(),
    });
    let mut table = Table::new(["WHAT", "VALUE"]);
    table.row(["records put", &put.to_string()]);
    table.row(["acknowledged by Kinesis", &acked.count().to_string()]);
    table.row([
        "failed (typed)",
        &failed.load(Ordering::Relaxed).to_string(),
    ]);
    table.row(["resharding", &split_done.unwrap_or_else(|| "none".into())]);
    table.row(["open shards at the end", &shards_now.to_string()]);
    table.row(["leases per worker (last)", &leases_summary(&leases)]);
    table.row(["objects in S3", &found.objects.to_string()]);
    table.row(["records in S3", &found.lines.to_string()]);
    table.row(["missing from S3", &verdict.missing.len().to_string()]);
    table.row(["duplicated in S3", &verdict.duplicated.len().to_string()]);
    table.row([
        "verdict",
        if verdict.exactly_once() {
            "every acknowledged record is in S3 exactly once"
        } else {
            "FAILED: see missing/duplicated"
        },
    ]);
    table.row(["time", &format!("{:.1} s", elapsed.as_secs_f64())]);
    out.emit(&json, &table)?;

    if !verdict.exactly_once() {
        return Err(CliError::failed(format!(
            "the demo's verdict failed: {} missing (first: {:?}), {} duplicated (first: {:?})",
            verdict.missing.len(),
            verdict.missing.iter().take(5).collect::<Vec<_>>(),
            verdict.duplicated.len(),
            verdict.duplicated.iter().take(5).collect::<Vec<_>>(),
        )));
    }
    if args.keep {
        write_stdout(&aws.export_lines())?;
        eprintln!(
            "kin demo: the stack keeps running (stream {STREAM}, lease table {APPLICATION}, bucket {BUCKET}); \
             `. <(the lines above)` then `kin leases {APPLICATION}`, `kin tail {STREAM} --from trim-horizon`; Ctrl-C stops it"
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    Ok(())
}

/// A record's data: its id first, so the verdict can find it again.
fn demo_payload(id: u64) -> Bytes {
    Bytes::from(format!(
        "{{\"id\":{id},\"event\":\"order-placed\",\"amount_cents\":{}}}",
        id.wrapping_mul(7919) % 100_000
    ))
}

/// The id of a demo record, from its data.
fn payload_id(data: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(data).ok()?;
    let rest = text.strip_prefix("{\"id\":")?;
    let end = rest.find(',')?;
    rest[..end].parse().ok()
}

/// A set of ids `0..n` that tasks fill concurrently.
struct Seen {
    flags: Vec<AtomicBool>,
    count: AtomicU64,
}

impl Seen {
    fn new(n: u64) -> Self {
        Seen {
            flags: (0..n).map(|_| AtomicBool::new(false)).collect(),
            count: AtomicU64::new(0),
        }
    }

    fn insert(&self, id: u64) {
        if let Some(flag) = self.flags.get(id as usize)
            && !flag.swap(true, Ordering::Relaxed)
        {
            self.count.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn contains(&self, id: u64) -> bool {
        self.flags
            .get(id as usize)
            .is_some_and(|f| f.load(Ordering::Relaxed))
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

/// The S3 sink, plus a note of every id it has been given (for progress and the drain).
struct Counting {
    inner: S3Sink,
    seen: Arc<Seen>,
}

#[async_trait]
impl RecordProcessor for Counting {
    async fn initialize(&mut self, input: InitInput) -> std::result::Result<(), ProcessorError> {
        self.inner.initialize(input).await
    }

    async fn process_records(
        &mut self,
        input: ProcessInput<'_>,
    ) -> std::result::Result<(), ProcessorError> {
        let ids: Vec<u64> = input
            .records
            .iter()
            .filter_map(|r| payload_id(&r.data))
            .collect();
        self.inner.process_records(input).await?;
        for id in ids {
            self.seen.insert(id);
        }
        Ok(())
    }

    async fn lease_lost(&mut self) {
        self.inner.lease_lost().await
    }

    async fn shard_ended(
        &mut self,
        input: ShardEndedInput<'_>,
    ) -> std::result::Result<(), ProcessorError> {
        self.inner.shard_ended(input).await
    }

    async fn shutdown_requested(
        &mut self,
        checkpointer: &Checkpointer,
    ) -> std::result::Result<(), ProcessorError> {
        self.inner.shutdown_requested(checkpointer).await
    }
}

/// The live status line.
struct Status {
    started: Instant,
    seen: Arc<Seen>,
    acked: Arc<Seen>,
    records: u64,
    dynamodb: aws_sdk_dynamodb::Client,
}

impl Status {
    async fn report(&self, progress: &indicatif::ProgressBar, put: u64, phase: &str) {
        let leases = leases_summary(&self.leases_per_worker().await);
        let line = format!(
            "{phase}: put {put}/{}, acknowledged {}, consumed {}, lag {} records, leases {leases}",
            self.records,
            self.acked.count(),
            self.seen.count(),
            self.acked.count().saturating_sub(self.seen.count()),
        );
        if progress.is_hidden() {
            eprintln!(
                "kin demo: [{:>5.1} s] {line}",
                self.started.elapsed().as_secs_f64()
            );
        } else {
            progress.set_message(line);
        }
    }

    /// `(worker, leases held)`, from the lease table (what a `kin leases` would show).
    async fn leases_per_worker(&self) -> Vec<(String, usize)> {
        let store = DynamoLeaseStore::new(self.dynamodb.clone(), APPLICATION);
        let Ok(leases) = store.list_leases().await else {
            return Vec::new();
        };
        let mut per: std::collections::BTreeMap<String, usize> = Default::default();
        for lease in leases.iter().filter(|l| l.checkpoint != Position::ShardEnd) {
            let owner = lease.owner.clone().unwrap_or_else(|| "-".into());
            *per.entry(owner).or_default() += 1;
        }
        per.into_iter().collect()
    }
}

fn leases_summary(leases: &[(String, usize)]) -> String {
    if leases.is_empty() {
        return "-".into();
    }
    leases
        .iter()
        .map(|(w, n)| format!("{w}={n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Splits the first open shard in the middle of its range and waits until the stream is
/// ACTIVE again. Returns what it did.
async fn split_first_shard(
    kinesis: &aws_sdk_kinesis::Client,
) -> std::result::Result<String, String> {
    let shards = kinesis
        .list_shards()
        .stream_name(STREAM)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let shard = shards
        .shards()
        .iter()
        .find(|s| {
            s.sequence_number_range()
                .and_then(|r| r.ending_sequence_number())
                .is_none()
        })
        .ok_or("no open shard")?;
    let range = shard
        .hash_key_range()
        .ok_or("shard without a hash key range")?;
    let start: u128 = range
        .starting_hash_key()
        .parse()
        .map_err(|_| "bad hash key")?;
    let end: u128 = range
        .ending_hash_key()
        .parse()
        .map_err(|_| "bad hash key")?;
    let middle = start + (end - start) / 2 + 1;
    kinesis
        .split_shard()
        .stream_name(STREAM)
        .shard_to_split(shard.shard_id())
        .new_starting_hash_key(middle.to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    local_aws::testing::wait_for_active(kinesis, STREAM)
        .await
        .map_err(|e| e.to_string())?;
    Ok(format!("split {} while producing", shard.shard_id()))
}

async fn open_shards(kinesis: &aws_sdk_kinesis::Client) -> Option<usize> {
    let shards = kinesis
        .list_shards()
        .stream_name(STREAM)
        .send()
        .await
        .ok()?;
    Some(
        shards
            .shards()
            .iter()
            .filter(|s| {
                s.sequence_number_range()
                    .and_then(|r| r.ending_sequence_number())
                    .is_none()
            })
            .count(),
    )
}

/// What the bucket holds: how often each id appears.
struct Found {
    objects: usize,
    lines: u64,
    counts: Vec<u32>,
    /// Lines whose data is not a demo record (should be none).
    foreign: u64,
}

async fn read_bucket(s3: &aws_sdk_s3::Client, bucket: &str, records: u64) -> Result<Found> {
    let mut found = Found {
        objects: 0,
        lines: 0,
        counts: vec![0; records as usize],
        foreign: 0,
    };
    let mut pages = s3.list_objects_v2().bucket(bucket).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| CliError::failed(format!("cannot list the bucket: {e}")))?;
        for object in page.contents() {
            let key = object.key().unwrap_or_default();
            let body = s3
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| CliError::failed(format!("cannot read s3://{bucket}/{key}: {e}")))?
                .body
                .collect()
                .await
                .map_err(|e| CliError::failed(format!("cannot read s3://{bucket}/{key}: {e}")))?
                .into_bytes();
            found.objects += 1;
            for line in body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                found.lines += 1;
                let id = serde_json::from_slice::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v.get("data")?.as_str().map(str::to_owned))
                    .and_then(|data| payload_id(data.as_bytes()));
                match id.and_then(|id| found.counts.get_mut(id as usize)) {
                    Some(count) => *count += 1,
                    None => found.foreign += 1,
                }
            }
        }
    }
    Ok(found)
}

/// Acknowledged ids against the ids in S3.
struct Verdict {
    missing: Vec<u64>,
    duplicated: Vec<u64>,
    foreign: u64,
}

impl Verdict {
    fn new(acked: &Seen, found: &Found) -> Self {
        let mut missing = Vec::new();
        let mut duplicated = Vec::new();
        for (id, &count) in found.counts.iter().enumerate() {
            let id = id as u64;
            if acked.contains(id) && count == 0 {
                missing.push(id);
            }
            if count > 1 {
                duplicated.push(id);
            }
        }
        Verdict {
            missing,
            duplicated,
            foreign: found.foreign,
        }
    }

    fn exactly_once(&self) -> bool {
        self.missing.is_empty() && self.duplicated.is_empty() && self.foreign == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_ids_round_trip() {
        for id in [0, 1, 42, 19_999, u64::MAX / 3] {
            assert_eq!(payload_id(&demo_payload(id)), Some(id));
        }
        assert_eq!(payload_id(b"{\"id\":x,}"), None);
        assert_eq!(payload_id(b"hello"), None);
    }

    #[test]
    fn verdict_finds_missing_and_duplicated_ids() {
        let acked = Seen::new(4);
        for id in 0..4 {
            acked.insert(id);
        }
        let found = Found {
            objects: 1,
            lines: 4,
            counts: vec![1, 0, 2, 1],
            foreign: 0,
        };
        let verdict = Verdict::new(&acked, &found);
        assert_eq!(verdict.missing, vec![1]);
        assert_eq!(verdict.duplicated, vec![2]);
        assert!(!verdict.exactly_once());

        let found = Found {
            counts: vec![1, 1, 1, 1],
            ..found
        };
        assert!(Verdict::new(&acked, &found).exactly_once());
    }
}
