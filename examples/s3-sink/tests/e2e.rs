//! The whole pipeline end to end on the local stack, with the sink run as deployed: two
//! processes of the `s3-sink` binary sharing one lease table, configured by environment.
//!
//! ```text
//!  kinesis-producer ──► stream (4 shards) ──► s3-sink w1 ─┐     (c: S3 via a FaultProxy
//!  (aggregating;            ▲    ▲            s3-sink w2 ─┴─► bucket    slowing one shard)
//!   data {"id":n})          │    └─ lease table (DynamoDB), shared by w1 and w2
//!                  SplitShard (c)      SIGKILL w1 (b), SIGTERM to all at the end
//! ```
//!
//! Each scenario puts `RECORDS` records with unique ids, waits (polling the bucket, with a
//! deadline) until every id is in some object, stops the workers with SIGTERM and checks
//! their clean exit, then reads every object back and judges by content ([`verdict`]):
//! every id exactly once, no two objects of a shard covering overlapping positions, no key
//! rewritten with other records, every key naming its object's first and last line.
//!
//! - a) steady: two workers balance their leases while records flow (gzip objects);
//! - b) w1 is SIGKILLed with a partly filled buffer on each of its shards; w2 takes its
//!   leases after the failover time and replays from the checkpoints;
//! - c) two shards are split while records flow; children's objects must come after their
//!   parent's last object (by LastModified, and by probes listing children first).
//!
//! **Padding.** Objects are cut by record count only (`MAX_AGE` is an hour): the crash in
//! (b) must find partly filled buffers, and count cuts are the ones a replay repeats in all
//! circumstances (quiet-shard age flushes only without read delays, see the crate docs).
//! So each shard keeps up to `MAX_RECORDS - 1` records buffered, and while waiting the test
//! keeps putting *padding* records (ids from `PAD_BASE`) that push the real ones out.
//! Padding must never be duplicated either, but the last padding may still be unread when
//! the workers stop, so it may be missing.

#![cfg(unix)]

#[path = "e2e/bucket.rs"]
mod bucket;
#[path = "e2e/process.rs"]
mod process;
#[path = "e2e/verdict.rs"]
mod verdict;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::time::Duration;

use http::Method;
use kinesis_consumer::lease::{DynamoLeaseStore, LeaseStore};
use kinesis_producer::{Producer, PutHandle, Record};
use local_aws::fault::{Fault, FaultProxy, Op, Rule};
use local_aws::{LocalAws, testing};
use tokio::time::Instant;

use bucket::{Bucket, Object};
use process::SinkProcess;
use verdict::{Verdict, overlapping, verdict};

/// Records with unique ids put per scenario.
const RECORDS: u64 = 20_000;
/// Put in chunks of this many, one chunk per `PACE` (4 000 records/s): the run lasts a few
/// seconds, so kills and splits land while records flow.
const CHUNK: u64 = 1_000;
const PACE: Duration = Duration::from_millis(250);
/// The sink's count cut. Small, so that there are hundreds of objects (and replays).
const MAX_RECORDS: u64 = 100;
/// Records put into one parent just before the split (scenario c).
const BURST: u64 = 2_000;
/// The delay on each object write of that parent (scenario c).
const SLOW_WRITE: Duration = Duration::from_millis(100);
/// Padding ids start here.
const PAD_BASE: u64 = 1_000_000_000;
/// Padding records put per poll while waiting.
const PAD_PER_POLL: u64 = 400;
const POLL: Duration = Duration::from_millis(250);
/// The workers' lease failover time (`FAILOVER_TIME`, seconds; the default is 10).
const FAILOVER_SECS: u64 = 3;
/// How long all ids may take to arrive. Generous: it only bounds a hung run.
const DEADLINE: Duration = Duration::from_secs(120);
/// How long the count of ids found may stand still (padding flowing) before the wait gives
/// up: well above a failover time plus a catch-up.
const STALL: Duration = Duration::from_secs(30);
const PREFIX: &str = "p";

/// The shards split in scenario c, and their children.
struct Split {
    /// child → parent.
    children: BTreeMap<String, String>,
}

/// What one look at the bucket showed, children listed before parents: whether a child of
/// each parent had objects, and the parent's keys at that moment. Listing the children first
/// makes the check sound: a parent object written before a child object seen is listed.
struct Probe {
    parents_of_started_children: BTreeSet<String>,
    parent_keys: BTreeMap<String, BTreeSet<String>>,
}

struct Fixture {
    scenario: &'static str,
    aws: LocalAws,
    stream: String,
    app: String,
    bucket_name: String,
    bucket: Bucket,
    logs: tempfile::TempDir,
    producer: Producer,
    handles: Vec<(u64, PutHandle)>,
    /// Settled puts: id → the shard it landed on, or why it failed.
    outcomes: BTreeMap<u64, Result<String, String>>,
    aggregated: usize,
    next_pad: u64,
    workers: Vec<SinkProcess>,
    killed: Vec<SinkProcess>,
    split: Option<Split>,
    probes: Vec<Probe>,
    /// The producer's pace: one `CHUNK` per tick.
    pace: tokio::time::Interval,
    started: Instant,
    all_arrived_after: Option<Duration>,
    /// Found during the run, reported by [`finish`](Self::finish) with the verdict.
    failures: Vec<String>,
    /// Where the workers send S3 requests: the stack, or a proxy slowing some down.
    s3_endpoint: String,
    proxy: Option<FaultProxy>,
    /// Scenario-specific sink settings, added to [`env`](Self::env).
    settings: Vec<(&'static str, &'static str)>,
}

impl Fixture {
    /// A stack, a 4-shard stream, a bucket and an aggregating producer. Names are distinct
    /// per scenario and very short: s3s-fs keeps per-object metadata in a file named
    /// `.bucket-{base64 bucket}.object-{base64 key}.internal.json`, which must fit in 255
    /// bytes, so bucket + key may not exceed about 168 characters; the keys here take ~158
    /// (two 56-digit sequence numbers), leaving room for a `.gz` and 4-digit sub-sequences.
    async fn new(scenario: &'static str) -> Fixture {
        let aws = LocalAws::start().await.unwrap();
        let stream = format!("s-{scenario}");
        testing::create_stream(&aws.kinesis_client(), &stream, 4)
            .await
            .unwrap();
        let bucket_name = format!("b-{scenario}");
        aws.s3_client()
            .create_bucket()
            .bucket(&bucket_name)
            .send()
            .await
            .unwrap();
        let producer = Producer::builder(aws.kinesis_client())
            .stream(&stream)
            .aggregation(true)
            .build()
            .await
            .unwrap();
        let s3_endpoint = aws.s3_endpoint().to_owned();
        Fixture {
            scenario,
            bucket: Bucket::new(aws.s3_client(), &bucket_name),
            app: format!("e2e-{scenario}-app"),
            aws,
            stream,
            bucket_name,
            logs: tempfile::tempdir().unwrap(),
            producer,
            handles: Vec::new(),
            outcomes: BTreeMap::new(),
            aggregated: 0,
            next_pad: PAD_BASE,
            workers: Vec::new(),
            killed: Vec::new(),
            split: None,
            probes: Vec::new(),
            pace: {
                // After a pause (scenario b), carry on at the pace rather than catch up.
                let mut pace = tokio::time::interval(PACE);
                pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                pace
            },
            started: Instant::now(),
            all_arrived_after: None,
            failures: Vec::new(),
            s3_endpoint,
            proxy: None,
            settings: Vec::new(),
        }
    }

    /// The binary's whole environment: the stack's endpoints and key pair, the sink's
    /// settings.
    fn env(&self, worker: &str) -> Vec<(String, String)> {
        let credentials = self.aws.credentials();
        [
            ("AWS_ENDPOINT_URL_KINESIS", self.aws.kinesis_endpoint()),
            ("AWS_ENDPOINT_URL_DYNAMODB", self.aws.dynamodb_endpoint()),
            ("AWS_ENDPOINT_URL_S3", &self.s3_endpoint),
            ("AWS_ACCESS_KEY_ID", credentials.access_key_id()),
            ("AWS_SECRET_ACCESS_KEY", credentials.secret_access_key()),
            ("AWS_REGION", local_aws::REGION),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("REGION", local_aws::REGION),
            ("S3_FORCE_PATH_STYLE", "true"),
            ("STREAM", &self.stream),
            ("APPLICATION_NAME", &self.app),
            ("BUCKET", &self.bucket_name),
            ("PREFIX", PREFIX),
            ("FORMAT", "ndjson"),
            ("INITIAL_POSITION", "trim-horizon"),
            ("MAX_RECORDS", &MAX_RECORDS.to_string()),
            ("MAX_AGE", "3600"),
            ("FAILOVER_TIME", &FAILOVER_SECS.to_string()),
            ("WORKER_ID", worker),
            // An ephemeral port: two workers (and parallel tests) on one host.
            ("HEALTH_ADDR", "127.0.0.1:0"),
            ("RUST_LOG", "info"),
            ("NO_COLOR", "1"),
        ]
        .into_iter()
        .chain(self.settings.iter().copied())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// Routes the workers' S3 requests through a proxy that delays every object write of
    /// `shard` by `delay` (call before spawning them).
    async fn slow_writes_of(&mut self, shard: &str, delay: Duration) {
        let proxy = FaultProxy::start(self.aws.s3_endpoint()).await.unwrap();
        let path = format!("/{}/{}", self.bucket_name, self.shard_prefix(shard));
        proxy.inject(
            Rule::on(Op::s3_path(Method::PUT, path))
                .always()
                .fault(Fault::delay(delay)),
        );
        self.s3_endpoint = proxy.endpoint().to_owned();
        self.proxy = Some(proxy);
    }

    fn spawn(&mut self, worker: &str) {
        let env = self.env(worker);
        self.workers
            .push(SinkProcess::spawn(worker, self.logs.path(), &env));
    }

    /// SIGKILL `worker`: it stops between any two instructions, buffers and all.
    fn kill9(&mut self, worker: &str) {
        let i = self.workers.iter().position(|w| w.name == worker).unwrap();
        let mut w = self.workers.remove(i);
        w.kill9();
        self.killed.push(w);
    }

    /// Puts the records with ids `ids`, `CHUNK` per `PACE`.
    async fn put(&mut self, ids: Range<u64>) {
        let mut id = ids.start;
        while id < ids.end {
            // One interval for the whole run: successive calls keep the pace.
            self.pace.tick().await;
            self.assert_workers_alive();
            for id in id..(id + CHUNK).min(ids.end) {
                self.put_one(id).await;
            }
            id += CHUNK;
            if self.split.is_some() {
                let probe = self.probe().await;
                self.probes.push(probe);
            }
        }
    }

    async fn put_one(&mut self, id: u64) {
        let record = Record::new(format!("k{id}"), format!("{{\"id\":{id}}}"));
        let handle = self.producer.put(record).await.unwrap();
        self.handles.push((id, handle));
    }

    /// Waits for the outcome of every put so far.
    async fn settle(&mut self) {
        for (id, handle) in std::mem::take(&mut self.handles) {
            let outcome = match handle.await {
                Ok(o) => {
                    self.aggregated += usize::from(o.is_aggregated());
                    Ok(o.shard_id().to_owned())
                }
                Err(e) => Err(e.to_string()),
            };
            self.outcomes.insert(id, outcome);
        }
    }

    /// Whether `worker` holds leases and has read nearly everything put to them: on each of
    /// its shards, fewer than `MAX_RECORDS` of the records put are not in objects yet (the
    /// rest may sit in its buffer: a count cut would have written them otherwise).
    async fn caught_up(&mut self, worker: &str) -> bool {
        self.settle().await;
        let leases = self.leases().await;
        let held: Vec<&String> = leases
            .iter()
            .filter(|(_, o)| *o == worker)
            .map(|(s, _)| s)
            .collect();
        if held.is_empty() {
            return false;
        }
        let objects = self.bucket.objects().await;
        for shard in held {
            let put = self
                .outcomes
                .values()
                .filter(|o| o.as_deref() == Ok(shard.as_str()))
                .count();
            let written: usize = objects
                .iter()
                .filter(|o| &o.shard == shard)
                .map(|o| o.lines.len())
                .sum();
            if written == 0 || put.saturating_sub(written) >= MAX_RECORDS as usize {
                return false;
            }
        }
        true
    }

    /// Unfinished leases: shard → owner ("-" for none). Empty before the table exists.
    async fn leases(&self) -> BTreeMap<String, String> {
        let store = DynamoLeaseStore::new(self.aws.dynamodb_client(), &self.app);
        let leases = store.list_leases().await.unwrap_or_default();
        leases
            .into_iter()
            .filter(|l| !l.is_finished())
            .map(|l| {
                let owner = l.owner.clone().unwrap_or_else(|| "-".into());
                (l.shard_id().to_owned(), owner)
            })
            .collect()
    }

    /// Leases per owner.
    async fn owners(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for owner in self.leases().await.into_values() {
            *out.entry(owner).or_default() += 1;
        }
        out
    }

    /// Waits until the lease owners satisfy `f`; `Err` with the last owners at `timeout`.
    async fn until_owners(
        &mut self,
        what: &str,
        timeout: Duration,
        f: impl Fn(&BTreeMap<String, usize>) -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let owners = self.owners().await;
            if f(&owners) {
                return Ok(());
            }
            self.assert_workers_alive();
            if Instant::now() >= deadline {
                return Err(format!("timed out waiting for {what}: leases {owners:?}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A check after the run: a failure is reported with the verdict.
    async fn check_owners(&mut self, what: &str, f: impl Fn(&BTreeMap<String, usize>) -> bool) {
        if let Err(e) = self.until_owners(what, Duration::from_secs(30), f).await {
            self.failures.push(e);
        }
    }

    fn assert_workers_alive(&mut self) {
        for i in 0..self.workers.len() {
            if let Some(status) = self.workers[i].exited() {
                panic!(
                    "{}: {} exited early ({status})\n{}",
                    self.scenario,
                    self.workers[i].name,
                    self.tails()
                );
            }
        }
    }

    fn tails(&self) -> String {
        self.workers
            .iter()
            .chain(&self.killed)
            .map(|w| w.tail(25))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Polls the bucket until every real id is in some object, padding meanwhile. Gives up
    /// after `DEADLINE`, or after `STALL` without a new id (lost records never arrive); then
    /// [`finish`](Self::finish) fails with the verdict (which ids are missing).
    async fn wait_all_arrived(&mut self) {
        let deadline = Instant::now() + DEADLINE;
        let (mut best, mut progress) = (0, Instant::now());
        loop {
            self.assert_workers_alive();
            if self.split.is_some() {
                let probe = self.probe().await;
                self.probes.push(probe);
            }
            let objects = self.bucket.objects().await;
            let found: BTreeSet<u64> = objects
                .iter()
                .flat_map(|o| o.lines.iter().map(|l| l.id))
                .filter(|id| *id < RECORDS)
                .collect();
            if found.len() as u64 == RECORDS {
                self.all_arrived_after = Some(self.started.elapsed());
                return;
            }
            if found.len() > best {
                (best, progress) = (found.len(), Instant::now());
            }
            let now = Instant::now();
            if now >= deadline || now.duration_since(progress) >= STALL {
                self.failures.push(format!(
                    "gave up waiting after {:.1?}: {best} of {RECORDS} ids in {} objects, none \
                     new for {:.1?}; leases {:?}",
                    self.started.elapsed(),
                    objects.len(),
                    now.duration_since(progress),
                    self.owners().await,
                ));
                return;
            }
            for _ in 0..PAD_PER_POLL {
                let id = self.next_pad;
                self.next_pad += 1;
                self.put_one(id).await;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Puts the records `burst` into shard 2 alone, then splits shards 0 and 2 in the
    /// middle of their hash ranges (one at a time: a stream takes one reshard at a time).
    ///
    /// A child's lease is created at a shard sync, and a worker syncs when a parent ends.
    /// With shard 2 far behind shard 0 (this burst, and its slow writes), the sync after
    /// shard 0 ends creates shard 2's children while shard 2 is still being written: only
    /// waiting for the parent keeps them from starting then.
    async fn burst_and_split_two_shards(&mut self, burst: Range<u64>) {
        let kinesis = self.aws.kinesis_client();
        let before = kinesis
            .list_shards()
            .stream_name(&self.stream)
            .send()
            .await
            .unwrap();
        let start_of = |i: usize| -> u128 {
            let range = before.shards()[i].hash_key_range().unwrap();
            range.starting_hash_key().parse().unwrap()
        };
        assert_eq!(before.shards()[2].shard_id(), "shardId-000000000002");
        let shard2 = start_of(2);
        for id in burst {
            let record = Record::new(format!("k{id}"), format!("{{\"id\":{id}}}"))
                .with_explicit_hash_key((shard2 + u128::from(id)).to_string());
            let handle = self.producer.put(record).await.unwrap();
            self.handles.push((id, handle));
        }
        self.producer.flush().await;
        let mut parents = BTreeSet::new();
        for shard in [&before.shards()[0], &before.shards()[2]] {
            let range = shard.hash_key_range().unwrap();
            let start: u128 = range.starting_hash_key().parse().unwrap();
            let end: u128 = range.ending_hash_key().parse().unwrap();
            kinesis
                .split_shard()
                .stream_name(&self.stream)
                .shard_to_split(shard.shard_id())
                .new_starting_hash_key((start + (end - start) / 2 + 1).to_string())
                .send()
                .await
                .unwrap();
            testing::wait_for_active(&kinesis, &self.stream)
                .await
                .unwrap();
            parents.insert(shard.shard_id().to_owned());
        }
        let after = kinesis
            .list_shards()
            .stream_name(&self.stream)
            .send()
            .await
            .unwrap();
        let children: BTreeMap<String, String> = after
            .shards()
            .iter()
            .filter_map(|s| {
                let parent = s.parent_shard_id()?;
                parents
                    .contains(parent)
                    .then(|| (s.shard_id().to_owned(), parent.to_owned()))
            })
            .collect();
        assert_eq!(children.len(), 4, "two children per split: {children:?}");
        self.split = Some(Split { children });
    }

    fn shard_prefix(&self, shard: &str) -> String {
        format!("{PREFIX}/{}/{shard}/", self.stream)
    }

    async fn probe(&self) -> Probe {
        let split = self.split.as_ref().unwrap();
        let mut started = BTreeSet::new();
        for (child, parent) in &split.children {
            if !self.bucket.keys(&self.shard_prefix(child)).await.is_empty() {
                started.insert(parent.clone());
            }
        }
        let mut parent_keys = BTreeMap::new();
        for parent in &started {
            parent_keys.insert(
                parent.clone(),
                self.bucket.keys(&self.shard_prefix(parent)).await,
            );
        }
        Probe {
            parents_of_started_children: started,
            parent_keys,
        }
    }

    /// Closes the producer, stops the workers with SIGTERM (asserting clean exits), reads
    /// the bucket and asserts exactly-once content. Prints a summary.
    async fn finish(mut self) {
        self.producer.close().await;
        let shutdown = Instant::now();
        let mut exits = Vec::new();
        for w in &mut self.workers {
            let status = w.terminate(Duration::from_secs(30)).await;
            exits.push(format!("{} {status}", w.name));
        }
        let shutdown = shutdown.elapsed();
        let mut failures = std::mem::take(&mut self.failures);
        for w in &mut self.workers {
            if !w.exited().unwrap().success() {
                failures.push(format!("{} did not exit cleanly after SIGTERM", w.name));
            }
        }
        for w in &mut self.killed {
            let status = w.exited().unwrap();
            exits.push(format!("{} {status}", w.name));
        }

        // What was put: every outcome must be a success.
        self.settle().await;
        let (mut real_put, mut pad_put) = (BTreeSet::new(), BTreeSet::new());
        for (id, outcome) in &self.outcomes {
            match outcome {
                Ok(_) if *id < PAD_BASE => real_put.insert(*id),
                Ok(_) => pad_put.insert(*id),
                Err(e) => {
                    failures.push(format!("put {id} failed: {e}"));
                    false
                }
            };
        }
        let aggregated = self.aggregated;

        let objects = self.bucket.objects().await;
        let ids = |pad: bool| {
            objects
                .iter()
                .flat_map(|o| o.lines.iter().map(|l| l.id))
                .filter(move |id| (*id >= PAD_BASE) == pad)
        };
        let real = verdict(&real_put, ids(false));
        let pad = verdict(&pad_put, ids(true));
        failures.extend(judge(&real, &pad, &objects, &self.bucket.rewritten));
        if let Some(split) = &self.split {
            failures.extend(judge_split(split, &self.probes, &objects, &self.bucket));
        }

        let lines: usize = objects.iter().map(|o| o.lines.len()).sum();
        let moved: usize = self
            .workers
            .iter()
            .chain(&self.killed)
            .map(|w| w.log_count("lease taken") - w.log_count("from=None"))
            .sum();
        println!(
            "e2e {}: {} records + {} padding put ({aggregated} in KPL aggregates) -> {} \
             objects ({} gzip), {lines} lines\n  records: {}\n  padding: {} of {} found (the last may be \
             unread at shutdown), {} duplicated, {} unexpected\n  all records in S3 after {}; \
             SIGTERM to exit {shutdown:.1?}; total {:.1?}; exits: {}; leases moved between \
             workers: {moved}",
            self.scenario,
            real_put.len(),
            pad_put.len(),
            objects.len(),
            objects.iter().filter(|o| o.gzip).count(),
            real.describe(),
            pad.distinct,
            pad_put.len(),
            pad.duplicated.len(),
            pad.unexpected.len(),
            self.all_arrived_after
                .map_or("never".to_owned(), |d| format!("{d:.1?}")),
            self.started.elapsed(),
            exits.join(", "),
        );
        assert!(
            failures.is_empty(),
            "{}: not exactly once:\n  {}\n{}",
            self.scenario,
            failures.join("\n  "),
            self.tails()
        );
    }
}

/// Everything wrong with the bucket's content: the real ids must be there exactly once;
/// padding must not be duplicated (the last padding may be unread: missing is fine); no
/// overlapping objects, no rewrites with other records, no malformed object.
fn judge(
    real: &Verdict,
    pad: &Verdict,
    objects: &[Object],
    rewritten: &[(String, String, String)],
) -> Vec<String> {
    let mut failures = Vec::new();
    if !real.is_exactly_once() {
        failures.push(format!("records: {}", real.describe()));
    }
    if !pad.duplicated.is_empty() || !pad.unexpected.is_empty() {
        failures.push(format!("padding: {}", pad.describe()));
    }
    let overlaps = overlapping(objects.iter().filter_map(|o| {
        Some((
            o.shard.clone(),
            o.key.clone(),
            o.first.clone()?,
            o.last.clone()?,
        ))
    }));
    for (a, b) in overlaps.iter().take(10) {
        failures.push(format!("overlapping objects: {a} and {b}"));
    }
    for (key, old, new) in rewritten.iter().take(10) {
        failures.push(format!(
            "{key} rewritten with other records (ETag {old} → {new})"
        ));
    }
    for o in objects.iter().filter(|o| !o.problems.is_empty()).take(10) {
        failures.push(format!("{}: {}", o.key, o.problems.join("; ")));
    }
    failures
}

/// Parents before children, judged two ways. (1) By time: a child's earliest object was
/// written after its parent's last object (the one ending at the parent's last record), by
/// the earliest LastModified the listings showed (a rewrite only moves it later). (2) By the
/// probes: every look that saw a child's object also saw the parent's last object. And both
/// generations must hold records, or the split was not exercised.
fn judge_split(
    split: &Split,
    probes: &[Probe],
    objects: &[Object],
    bucket: &Bucket,
) -> Vec<String> {
    let mut failures = Vec::new();
    let mut last_of: BTreeMap<&str, &Object> = BTreeMap::new();
    let mut first_written: BTreeMap<&str, i64> = BTreeMap::new();
    for o in objects {
        let later = last_of
            .get(o.shard.as_str())
            .is_none_or(|l| o.last > l.last);
        if later {
            last_of.insert(&o.shard, o);
        }
        if let Some(t) = bucket.earliest(&o.key) {
            let e = first_written.entry(&o.shard).or_insert(t);
            *e = (*e).min(t);
        }
    }
    let mut margins = Vec::new();
    for (child, parent) in &split.children {
        let (Some(last), Some(child_first)) = (
            last_of.get(parent.as_str()),
            first_written.get(child.as_str()),
        ) else {
            failures.push(format!(
                "no objects for {parent} or its child {child}: the split was not exercised"
            ));
            continue;
        };
        let parent_done = bucket.earliest(&last.key).unwrap_or(i64::MAX);
        margins.push(child_first - parent_done);
        if *child_first < parent_done {
            failures.push(format!(
                "{child} had an object {} ms before its parent's last one, {}",
                parent_done - child_first,
                last.key
            ));
        }
    }
    let mut informative = 0;
    for probe in probes {
        for parent in &probe.parents_of_started_children {
            informative += 1;
            let Some(last) = last_of.get(parent.as_str()) else {
                continue;
            };
            if !probe.parent_keys[parent].contains(&last.key) {
                failures.push(format!(
                    "a look at the bucket saw a child of {parent} but not {}",
                    last.key
                ));
            }
        }
    }
    println!(
        "e2e c: children's first object after the parent's last by {margins:?} ms; \
         {informative} probes saw a child's objects"
    );
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_run_writes_every_record_once() {
    let mut f = Fixture::new("a").await;
    // Compressed objects here (`.ndjson.gz`): replays must produce the same bytes too.
    f.settings.push(("COMPRESSION", "gzip"));
    f.spawn("w1");
    f.spawn("w2");
    // No waiting for the leases: the workers balance (w2 steals from w1) while records flow.
    f.put(0..RECORDS).await;
    f.wait_all_arrived().await;
    f.check_owners("2 + 2", |o| {
        o.get("w1") == Some(&2) && o.get("w2") == Some(&2)
    })
    .await;
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_run_loses_and_duplicates_nothing() {
    let mut f = Fixture::new("b").await;
    f.spawn("w1");
    f.spawn("w2");
    let both = |o: &BTreeMap<String, usize>| {
        o.get("w1").is_some_and(|n| *n >= 1) && o.get("w2").is_some_and(|n| *n >= 1)
    };
    if let Err(e) = f
        .until_owners("both holding leases", Duration::from_secs(30), both)
        .await
    {
        panic!("{e}\n{}", f.tails());
    }
    // Half the records, then a pause until w1 has read all of its shards so far (objects
    // written and checkpointed behind it, a partly filled buffer ahead), plus a couple of
    // idle reads' time so that the remainder is surely in its buffer: the crash that must
    // not lose the buffer. Then SIGKILL, and the other half while w2 is alone.
    f.put(0..RECORDS / 2).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f.caught_up("w1").await {
        assert!(
            Instant::now() < deadline,
            "w1 never caught up\n{}",
            f.tails()
        );
        tokio::time::sleep(POLL).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    f.kill9("w1");
    println!(
        "e2e b: w1 killed at {:.1?}, {} records put",
        f.started.elapsed(),
        RECORDS / 2
    );
    f.put(RECORDS / 2..RECORDS).await;
    f.wait_all_arrived().await;
    // w2 took w1's leases after the failover time.
    f.check_owners("w2 holding all 4", |o| {
        o.get("w2") == Some(&4) && o.len() == 1
    })
    .await;
    f.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_while_producing_keeps_parents_first_and_every_record_once() {
    let mut f = Fixture::new("c").await;
    // Shard 2's objects are slow to write, and it gets a burst just before the split: it
    // ends well after shard 0, whose end makes a worker create shard 2's children's leases
    // while shard 2 is still being written. Those children must wait.
    f.slow_writes_of("shardId-000000000002", SLOW_WRITE).await;
    f.spawn("w1");
    f.spawn("w2");
    f.put(0..RECORDS / 3).await;
    f.burst_and_split_two_shards(RECORDS / 3..RECORDS / 3 + BURST)
        .await;
    f.put(RECORDS / 3 + BURST..RECORDS).await;
    f.wait_all_arrived().await;
    f.finish().await;
}
