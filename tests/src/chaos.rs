//! The chaos suite's accounting: a [`Ledger`] of what was put and what was delivered, the
//! [`Verdict`] computed from it, and the drivers that fill it (a rate-limited producer loop
//! and a recording [`RecordProcessor`]). See the [crate docs](crate).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use kinesis_consumer::{
    Checkpointer, ProcessInput, ProcessorError, ProcessorFactory, RecordProcessor, Worker,
    WorkerHandle,
};
use kinesis_producer::{Producer, PutHandle, Record};
use tokio::task::JoinHandle;

/// The scale of a run: `CHAOS_SCALE` (default 1, the short form CI runs; the long form is
/// e.g. `CHAOS_SCALE=10`) multiplies record counts.
pub fn scale() -> u64 {
    std::env::var("CHAOS_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|s| *s >= 1)
        .unwrap_or(1)
}

/// A record's data: `id=<n>;` and padding to 100 bytes, the benchmarks' record size.
pub fn payload(id: u64) -> Bytes {
    let mut data = format!("id={id};").into_bytes();
    data.resize(100, b'.');
    Bytes::from(data)
}

/// The id of a chaos record (`None` for anything else, e.g. a corrupt aggregate passed
/// through as a plain record).
pub fn payload_id(data: &[u8]) -> Option<u64> {
    let rest = data.strip_prefix(b"id=")?;
    let end = rest.iter().position(|b| *b == b';')?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

/// A partition key spreading ids over every shard.
pub fn key(id: u64) -> String {
    format!("k{}", id % 257)
}

/// The final outcome of one put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutResult {
    /// Kinesis stored it: where.
    Acked { shard: String, sequence: String },
    /// A typed failure (its message).
    Failed(String),
}

/// One user record handed to a processor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: u64,
    pub shard: String,
    pub sequence: String,
    pub sub_sequence: u64,
    pub worker: String,
}

impl Delivery {
    /// One line of a worker process's delivery file.
    pub fn to_line(&self) -> String {
        format!(
            "{}\t{}\t{}\t{}\t{}\n",
            self.id, self.shard, self.sequence, self.sub_sequence, self.worker
        )
    }

    /// Parses [`to_line`](Self::to_line)'s output (a torn last line, from a killed process,
    /// is `None`).
    pub fn from_line(line: &str) -> Option<Delivery> {
        let mut f = line.split('\t');
        let d = Delivery {
            id: f.next()?.parse().ok()?,
            shard: f.next()?.to_owned(),
            sequence: f.next()?.to_owned(),
            sub_sequence: f.next()?.parse().ok()?,
            worker: f.next()?.trim_end().to_owned(),
        };
        if d.worker.is_empty() {
            return None;
        }
        Some(d)
    }
}

/// What was put and what was delivered.
#[derive(Debug, Default)]
pub struct Ledger {
    puts: Mutex<BTreeMap<u64, PutResult>>,
    deliveries: Mutex<Vec<Delivery>>,
    /// Ids whose `put` call itself was refused (validation): never entered the producer.
    rejected: Mutex<Vec<(String, String)>>,
    /// Data of delivered records that are not chaos records (e.g. corrupt aggregates).
    unknown: Mutex<Vec<Bytes>>,
    /// `process_records` calls.
    batches: std::sync::atomic::AtomicU64,
}

impl Ledger {
    pub fn new() -> Arc<Ledger> {
        Arc::new(Ledger::default())
    }

    pub fn put_result(&self, id: u64, result: PutResult) {
        self.puts.lock().unwrap().insert(id, result);
    }

    pub fn rejected(&self, what: impl Into<String>, error: impl Into<String>) {
        self.rejected
            .lock()
            .unwrap()
            .push((what.into(), error.into()));
    }

    pub fn rejections(&self) -> Vec<(String, String)> {
        self.rejected.lock().unwrap().clone()
    }

    pub fn deliver(&self, delivery: Delivery) {
        self.deliveries.lock().unwrap().push(delivery);
    }

    /// Replaces the deliveries with those worker processes recorded in `file` (see
    /// [`Delivery::to_line`]).
    pub fn reload_deliveries(&self, file: &Path) {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        *self.deliveries.lock().unwrap() = text.lines().filter_map(Delivery::from_line).collect();
    }

    pub fn unknown_payloads(&self) -> Vec<Bytes> {
        self.unknown.lock().unwrap().clone()
    }

    pub fn batches(&self) -> u64 {
        self.batches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The workers that delivered something.
    pub fn workers_of_deliveries(&self) -> BTreeSet<String> {
        self.deliveries
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.worker.clone())
            .collect()
    }

    /// Every child shard's first delivery comes after its parents' last one.
    #[track_caller]
    pub fn assert_parent_before_child(
        &self,
        shards: &aws_sdk_kinesis::operation::list_shards::ListShardsOutput,
    ) {
        let deliveries = self.deliveries.lock().unwrap();
        let first = |shard: &str| deliveries.iter().position(|d| d.shard == shard);
        let last = |shard: &str| deliveries.iter().rposition(|d| d.shard == shard);
        for shard in shards.shards() {
            let parents = [shard.parent_shard_id(), shard.adjacent_parent_shard_id()];
            for parent in parents.into_iter().flatten() {
                if let (Some(child_first), Some(parent_last)) =
                    (first(shard.shard_id()), last(parent))
                {
                    assert!(
                        parent_last < child_first,
                        "{} delivered before its parent {parent} was finished",
                        shard.shard_id()
                    );
                }
            }
        }
    }

    /// Ids acknowledged by Kinesis.
    pub fn acked(&self) -> BTreeSet<u64> {
        self.puts
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, r)| matches!(r, PutResult::Acked { .. }))
            .map(|(id, _)| *id)
            .collect()
    }

    /// Distinct ids delivered so far.
    pub fn delivered_ids(&self) -> BTreeSet<u64> {
        self.deliveries
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.id)
            .collect()
    }

    /// Waits until every acknowledged id was delivered, or the deadline. Returns whether
    /// everything arrived. `refresh` runs before each check (e.g. reloading files).
    pub async fn wait_delivered(
        &self,
        deadline: Duration,
        mut refresh: impl FnMut(&Ledger),
    ) -> bool {
        let until = Instant::now() + deadline;
        loop {
            refresh(self);
            if self.acked().is_subset(&self.delivered_ids()) {
                return true;
            }
            if Instant::now() > until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn verdict(&self, scenario: &str) -> Verdict {
        let puts = self.puts.lock().unwrap().clone();
        let deliveries = self.deliveries.lock().unwrap().clone();
        let mut by_id: BTreeMap<u64, Vec<&Delivery>> = BTreeMap::new();
        let mut foreign = 0;
        for d in &deliveries {
            if puts.contains_key(&d.id) {
                by_id.entry(d.id).or_default().push(d);
            } else {
                foreign += 1;
            }
        }
        let mut v = Verdict {
            scenario: scenario.to_owned(),
            put: puts.len() as u64,
            ..Verdict::default()
        };
        for (id, result) in &puts {
            let got = by_id.get(id).map(Vec::as_slice).unwrap_or(&[]);
            match result {
                PutResult::Acked { .. } => v.acked += 1,
                PutResult::Failed(error) => {
                    v.failed += 1;
                    if v.failure_examples.len() < 3 {
                        v.failure_examples.push(format!("{id}: {error}"));
                    }
                    if !got.is_empty() {
                        // Stored although the producer gave up: the answer was lost.
                        v.failed_but_delivered += 1;
                    }
                }
            }
            match got.len() {
                0 if matches!(result, PutResult::Acked { .. }) => v.lost.push(*id),
                0 => {}
                1 => v.once += 1,
                _ => {
                    let records: BTreeSet<&str> = got.iter().map(|d| d.sequence.as_str()).collect();
                    let reason = if records.len() > 1 {
                        Duplicate::StoredTwice
                    } else {
                        Duplicate::Replayed
                    };
                    *v.duplicates.entry(reason).or_default() += 1;
                }
            }
        }
        v.unknown_deliveries = foreign;
        v
    }
}

/// Why an id was delivered more than once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Duplicate {
    /// The same Kinesis record (sequence and sub-sequence) processed twice: a replay from the
    /// last checkpoint after a lease moved or a worker died (KCL semantics: at-least-once).
    Replayed,
    /// Two Kinesis records carry the id: the producer sent it again after an answer was lost
    /// (a connection reset after Kinesis applied the request).
    StoredTwice,
}

/// The accounting of one scenario.
#[derive(Debug, Default)]
pub struct Verdict {
    pub scenario: String,
    pub put: u64,
    pub acked: u64,
    pub failed: u64,
    pub failure_examples: Vec<String>,
    pub failed_but_delivered: u64,
    pub once: u64,
    pub duplicates: BTreeMap<Duplicate, u64>,
    /// Acknowledged and never delivered: must be empty.
    pub lost: Vec<u64>,
    /// Deliveries of ids nobody put (corrupt data, passed-through records).
    pub unknown_deliveries: u64,
}

impl Verdict {
    /// Panics (fails the test) unless nothing was lost and every duplicate has one of the
    /// `allowed` reasons. Prints the verdict either way and records it as JSON under
    /// `$CARGO_TARGET_TMPDIR/chaos/` for docs/RELIABILITY.md.
    #[track_caller]
    pub fn assert(&self, allowed: &[Duplicate]) {
        println!("{self}");
        self.record();
        assert!(self.put > 0, "{}: nothing was put", self.scenario);
        assert!(
            self.lost.is_empty(),
            "{}: {} acknowledged records were never delivered (first: {:?})",
            self.scenario,
            self.lost.len(),
            &self.lost[..self.lost.len().min(10)]
        );
        for (reason, count) in &self.duplicates {
            assert!(
                allowed.contains(reason),
                "{}: {count} ids delivered more than once ({reason:?}), which this scenario's faults do not explain",
                self.scenario
            );
        }
        if !allowed.contains(&Duplicate::StoredTwice) {
            assert_eq!(
                self.failed_but_delivered, 0,
                "{}: records reported failed were delivered, but no answer was lost",
                self.scenario
            );
        }
    }

    /// Like [`assert`](Self::assert), and also no typed failure at all (scenarios whose
    /// faults all pass within the record TTL).
    #[track_caller]
    pub fn assert_no_failures(&self, allowed: &[Duplicate]) {
        self.assert(allowed);
        assert_eq!(
            self.failed, 0,
            "{}: {} records failed: {:?}",
            self.scenario, self.failed, self.failure_examples
        );
    }

    fn record(&self) {
        let Some(dir) = option_env!("CARGO_TARGET_TMPDIR") else {
            return;
        };
        let dir = Path::new(dir).join("chaos");
        let _ = std::fs::create_dir_all(&dir);
        let json = serde_json::json!({
            "scenario": self.scenario,
            "scale": scale(),
            "put": self.put,
            "acked": self.acked,
            "failed": self.failed,
            "failed_but_delivered": self.failed_but_delivered,
            "delivered_once": self.once,
            "replayed": self.duplicates.get(&Duplicate::Replayed).copied().unwrap_or(0),
            "stored_twice": self.duplicates.get(&Duplicate::StoredTwice).copied().unwrap_or(0),
            "lost": self.lost.len(),
            "unknown_deliveries": self.unknown_deliveries,
        });
        if let Ok(mut f) = std::fs::File::create(dir.join(format!("{}.json", self.scenario))) {
            let _ = writeln!(f, "{json:#}");
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "chaos verdict [{}]: put {}, acknowledged {}, failed (typed) {}, delivered once {}, \
             replayed {}, stored twice {}, failed-but-delivered {}, lost {}, unknown deliveries {}",
            self.scenario,
            self.put,
            self.acked,
            self.failed,
            self.once,
            self.duplicates.get(&Duplicate::Replayed).unwrap_or(&0),
            self.duplicates.get(&Duplicate::StoredTwice).unwrap_or(&0),
            self.failed_but_delivered,
            self.lost.len(),
            self.unknown_deliveries,
        )
    }
}

/// Puts ids `ids` at about `rate` records/s through `producer`, recording each outcome in
/// the ledger (outcomes are awaited by a collector task: call [`Production::finish`]).
pub struct Production {
    collector: JoinHandle<()>,
}

impl Production {
    pub async fn run(
        producer: &Producer,
        ledger: &Arc<Ledger>,
        ids: std::ops::Range<u64>,
        rate: u64,
        mut at: impl FnMut(u64),
    ) -> Production {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, PutHandle)>();
        let collector = {
            let ledger = ledger.clone();
            tokio::spawn(async move {
                while let Some((id, handle)) = rx.recv().await {
                    let result = match handle.await {
                        Ok(outcome) => PutResult::Acked {
                            shard: outcome.shard_id().to_owned(),
                            sequence: outcome.sequence_number().to_owned(),
                        },
                        Err(failure) => PutResult::Failed(failure.to_string()),
                    };
                    ledger.put_result(id, result);
                }
            })
        };
        let slice = Duration::from_millis(10);
        let per_slice = rate as f64 * slice.as_secs_f64();
        let mut ticker = tokio::time::interval(slice);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut budget = 0.0;
        let mut id = ids.start;
        while id < ids.end {
            ticker.tick().await;
            budget += per_slice;
            while budget >= 1.0 && id < ids.end {
                budget -= 1.0;
                at(id);
                match producer.put(Record::new(key(id), payload(id))).await {
                    Ok(handle) => {
                        let _ = tx.send((id, handle));
                    }
                    Err(e) => ledger.put_result(id, PutResult::Failed(e.to_string())),
                }
                id += 1;
            }
        }
        Production { collector }
    }

    /// Waits for every outcome (call after `producer.flush()` or `close()`).
    pub async fn finish(self) {
        self.collector.await.expect("the collector");
    }
}

/// A processor that records every delivery, then checkpoints the batch.
pub struct Recorder {
    pub ledger: Arc<Ledger>,
    pub worker: String,
    /// Sleep this long per batch (a slow processor).
    pub delay: Duration,
}

#[async_trait]
impl RecordProcessor for Recorder {
    async fn process_records(&mut self, input: ProcessInput<'_>) -> Result<(), ProcessorError> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.ledger
            .batches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for r in input.records {
            match payload_id(&r.data) {
                Some(id) => self.ledger.deliver(Delivery {
                    id,
                    shard: input.shard_id.to_owned(),
                    sequence: r.sequence_number.to_string(),
                    sub_sequence: r.sub_sequence_number,
                    worker: self.worker.clone(),
                }),
                None => {
                    self.ledger.unknown.lock().unwrap().push(r.data.clone());
                    self.ledger.deliver(Delivery {
                        id: u64::MAX,
                        shard: input.shard_id.to_owned(),
                        sequence: r.sequence_number.to_string(),
                        sub_sequence: r.sub_sequence_number,
                        worker: self.worker.clone(),
                    })
                }
            }
        }
        // A lost lease is not an error here: the new owner replays from the checkpoint.
        let _ = input.checkpointer.checkpoint().await;
        Ok(())
    }

    async fn shutdown_requested(
        &mut self,
        checkpointer: &Checkpointer,
    ) -> Result<(), ProcessorError> {
        let _ = checkpointer.checkpoint().await;
        Ok(())
    }
}

/// An in-process worker recording into `ledger`.
pub struct RunningWorker {
    pub handle: WorkerHandle,
    pub task: JoinHandle<()>,
}

/// A processor factory: one [`Recorder`] per shard, named after the worker.
pub fn recorders(
    ledger: &Arc<Ledger>,
    worker: &str,
    delay: Duration,
) -> impl Fn() -> Recorder + Send + Sync + 'static {
    let (ledger, worker) = (ledger.clone(), worker.to_owned());
    move || Recorder {
        ledger: ledger.clone(),
        worker: worker.clone(),
        delay,
    }
}

impl RunningWorker {
    pub fn start<F: ProcessorFactory>(worker: Worker<F>) -> RunningWorker {
        let handle = worker.handle();
        let task = tokio::spawn(async move {
            worker.run().await.expect("the worker runs");
        });
        RunningWorker { handle, task }
    }

    /// Graceful: finish batches, checkpoint, release leases.
    pub async fn shutdown(self) {
        self.handle.shutdown().await;
        let _ = self.task.await;
    }

    /// As a crash: the run future is dropped, nothing is released.
    pub fn crash(self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(id: u64, seq: &str) -> Delivery {
        Delivery {
            id,
            shard: "shardId-000000000000".into(),
            sequence: seq.into(),
            sub_sequence: 0,
            worker: "w".into(),
        }
    }

    fn acked(ledger: &Ledger, id: u64) {
        ledger.put_result(
            id,
            PutResult::Acked {
                shard: "s".into(),
                sequence: "1".into(),
            },
        );
    }

    #[test]
    fn payload_ids_round_trip() {
        for id in [0, 7, 123_456_789] {
            assert_eq!(payload_id(&payload(id)), Some(id));
            assert_eq!(payload(id).len(), 100);
        }
        assert_eq!(payload_id(b"garbage"), None);
    }

    #[test]
    fn delivery_lines_round_trip_and_torn_lines_are_skipped() {
        let d = delivery(5, "495");
        assert_eq!(Delivery::from_line(&d.to_line()), Some(d.clone()));
        assert_eq!(Delivery::from_line("5\tshardId-000000000000\t49"), None);
        assert_eq!(
            Delivery::from_line("5\tshardId-000000000000\t495\t0\t"),
            None
        );
    }

    #[test]
    fn the_verdict_separates_replays_double_stores_and_losses() {
        let ledger = Ledger::new();
        for id in 0..5 {
            acked(&ledger, id);
        }
        ledger.put_result(5, PutResult::Failed("expired".into()));
        ledger.deliver(delivery(0, "1"));
        ledger.deliver(delivery(1, "2"));
        ledger.deliver(delivery(1, "2")); // replay
        ledger.deliver(delivery(2, "3"));
        ledger.deliver(delivery(2, "4")); // stored twice
        ledger.deliver(delivery(3, "5"));
        // 4 lost
        ledger.deliver(delivery(99, "6")); // nobody put it
        let v = ledger.verdict("unit");
        assert_eq!((v.put, v.acked, v.failed, v.once), (6, 5, 1, 2));
        assert_eq!(v.duplicates[&Duplicate::Replayed], 1);
        assert_eq!(v.duplicates[&Duplicate::StoredTwice], 1);
        assert_eq!(v.lost, vec![4]);
        assert_eq!(v.unknown_deliveries, 1);
        let loss =
            std::panic::catch_unwind(|| v.assert(&[Duplicate::Replayed, Duplicate::StoredTwice]));
        assert!(loss.is_err(), "a lost record fails the verdict");
    }

    #[test]
    fn unexplained_duplicates_fail_the_verdict() {
        let ledger = Ledger::new();
        acked(&ledger, 0);
        ledger.deliver(delivery(0, "1"));
        ledger.deliver(delivery(0, "1"));
        let v = ledger.verdict("unit-dup");
        assert!(std::panic::catch_unwind(|| v.assert(&[])).is_err());
        v.assert(&[Duplicate::Replayed]);
    }
}
