//! Consumer benchmarks against the local stack (figures and how to read them:
//! `docs/BENCHMARKS.md`, consumer section).
//!
//! ```text
//! cargo build --release -p local-aws --bin local-aws         # the emulator runs out of process
//! cargo run --release -p kinesis-consumer --example bench_consumer -- [MODE ...] [OPTIONS]
//! cargo run -p kinesis-consumer --example bench_consumer -- --quick   # CI: seconds, no figures
//! ```
//!
//! Modes (default: all, in this order):
//! - `throughput`: deaggregate-and-dispatch records per CPU-second of this process, no-op
//!   processor checkpointing every batch, on a stream pre-filled with KPL aggregates and then
//!   with plain records;
//! - `latency`: put → `process_records` latency, p50/p99, for polling with
//!   `idle_time_between_reads` 1.5 s (default) and 200 ms, and for enhanced fan-out
//!   (`SubscribeToShard`): three applications reading the same stream at the same time, so
//!   that every setting sees the same records under the same load;
//! - `failover`: a worker's task is aborted (no release); time until the other worker
//!   processes its shard (failover time 10 s);
//! - `handoff`: `shutdown()` returns → the other worker processes the shard;
//! - `cold-start`: `build()` + `run()` on a new application → first `process_records`;
//! - `dynamo-ops`: requests reaching DynamoDB per shard-minute in steady state, counted by a
//!   `FaultProxy` without rules, with the lease taker at 1 s (default) and at 20 s (KCL);
//! - `memory`: a 4-shard backlog of KPL aggregates read by a processor far slower than the
//!   reads: peak RSS of this process (`VmHWM`) against the bound the prefetch settings put on
//!   what is queued.
//!
//! The last stdout line is `BENCH_JSON {...}`: one key per mode that completed, the figures
//! `cargo xtask bench` reads (the contract is in `xtask/src/bench/consumer.rs`). It is printed
//! even when a mode fails, with the modes that completed before it.
//!
//! The emulator is the `local-aws` binary, spawned as a child (its CPU is not ours): found
//! with `--local-aws PATH`, `$LOCAL_AWS_BIN`, or next to this example's target directory.
//! Without it (or with `--in-process`) the stack runs in this process and the throughput
//! figure then includes the emulator's CPU (the bench says so). With `--external`, the
//! emulators named by `LOCAL_AWS_*` are used instead (`eval "$(scripts/external-emulators.sh
//! env)"`: kinesis-mock, dynalite), e.g. to see `latency` on another Kinesis emulator.
//!
//! Nothing here asserts on timings; a mode fails only if records go missing or a worker
//! never takes a shard (generous timeouts).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use kinesis_aggregation::{Aggregator, AggregatorConfig, HashKey, HashKeyRange, UserRecord};
use kinesis_consumer::lease::{DynamoLeaseStore, LeaseStore};
use kinesis_consumer::{
    Checkpointer, InitialPosition, PollingConfig, ProcessInput, ProcessorError, RecordProcessor,
    Retrieval, Worker, WorkerHandle,
};
use local_aws::{Endpoints, FaultProxy, LocalAws, testing};
use serde_json::{Map, Value, json};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = BoxError> = std::result::Result<T, E>;

const USAGE: &str = "\
Usage: bench_consumer [MODE ...] [OPTIONS]

Modes: throughput latency failover handoff cold-start dynamo-ops memory (default: all)

Options:
  --quick              tiny sizes and short times: checks the harness runs (CI), no figures
  --local-aws PATH     the local-aws binary (default: $LOCAL_AWS_BIN, or target/<profile>/local-aws)
  --in-process         run the emulator in this process instead
  --external           use the emulators named by LOCAL_AWS_* (scripts/external-emulators.sh env)
  --records N          throughput: user records per run (default 2000000 aggregated; plain: N/4);
                       memory: user records in the backlog (default 200000)
  --seconds S          latency: seconds measured (default 40; the settings run side by side);
                       dynamo-ops: seconds counted per configuration (default 60);
                       memory: seconds of overload measured (default 30)
  --rate R             latency: records put per second (default 100)
  --trials T           throughput rounds / failover / handoff / cold-start repetitions
                       (default 3 / 3 / 5 / 5)
  --shards N           dynamo-ops: shards (default 4)
  --prefetch-bytes B   memory: max_prefetch_bytes per shard (default 1048576)
  --workers M          dynamo-ops: workers (default 2)
  -h, --help           this help
";

// ---------------------------------------------------------------------------------------------
// Options

#[derive(Debug, Clone)]
struct Options {
    modes: Vec<String>,
    quick: bool,
    local_aws: Option<String>,
    in_process: bool,
    external: bool,
    records: Option<usize>,
    seconds: Option<u64>,
    rate: u64,
    trials: Option<usize>,
    shards: i32,
    workers: usize,
    prefetch_bytes: usize,
}

const MODES: [&str; 7] = [
    "throughput",
    "latency",
    "failover",
    "handoff",
    "cold-start",
    "dynamo-ops",
    "memory",
];

fn parse(mut args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
    let mut o = Options {
        modes: Vec::new(),
        quick: false,
        local_aws: None,
        in_process: false,
        external: false,
        records: None,
        seconds: None,
        rate: 100,
        trials: None,
        shards: 4,
        workers: 2,
        prefetch_bytes: 1024 * 1024,
    };
    fn num<T: std::str::FromStr>(name: &str, v: Option<String>) -> Result<T, String> {
        let v = v.ok_or_else(|| format!("{name} needs a value"))?;
        v.parse()
            .map_err(|_| format!("{name}: {v:?} is not a valid number"))
    }
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--quick" => o.quick = true,
            "--in-process" => o.in_process = true,
            "--external" => o.external = true,
            "--local-aws" => o.local_aws = Some(args.next().ok_or("--local-aws needs a path")?),
            "--records" => o.records = Some(num(&arg, args.next())?),
            "--seconds" => o.seconds = Some(num(&arg, args.next())?),
            "--rate" => o.rate = num::<u64>(&arg, args.next())?.max(1),
            "--trials" => o.trials = Some(num::<usize>(&arg, args.next())?.max(1)),
            "--shards" => o.shards = num::<i32>(&arg, args.next())?.max(1),
            "--workers" => o.workers = num::<usize>(&arg, args.next())?.max(1),
            "--prefetch-bytes" => o.prefetch_bytes = num::<usize>(&arg, args.next())?.max(1),
            "all" => o.modes.extend(MODES.iter().map(|m| m.to_string())),
            m if MODES.contains(&m) => o.modes.push(m.to_owned()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if o.modes.is_empty() {
        o.modes = MODES.iter().map(|m| m.to_string()).collect();
    }
    Ok(Some(o))
}

fn main() -> ExitCode {
    let options = match parse(std::env::args().skip(1)) {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("bench_consumer: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    match runtime.block_on(run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_consumer: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(o: Options) -> Result<()> {
    let stack = Stack::start(&o).await?;
    println!(
        "# bench_consumer{}: {} · emulator: {} · load average at start: {}",
        if o.quick { " --quick" } else { "" },
        machine(),
        stack.describe(),
        load()
    );
    // The figures of the modes that completed: printed last, even when a mode fails.
    let mut figures = Map::new();
    let mut outcome = Ok(());
    for mode in &o.modes {
        println!("\n## {mode}  (load average: {})", load());
        let result = match mode.as_str() {
            "throughput" => throughput(&stack, &o).await,
            "latency" => latency(&stack, &o).await,
            "failover" => failover(&stack, &o).await,
            "handoff" => handoff(&stack, &o).await,
            "cold-start" => cold_start(&stack, &o).await,
            "dynamo-ops" => dynamo_ops(&stack, &o).await,
            "memory" => memory(&stack, &o).await,
            _ => unreachable!("parse accepts only known modes"),
        };
        match result {
            Ok(v) => {
                figures.insert(mode.clone(), v);
            }
            Err(e) => {
                outcome = Err(format!("{mode}: {e}").into());
                break;
            }
        }
    }
    if outcome.is_ok() {
        println!("\n# done (load average: {})", load());
    }
    println!("BENCH_JSON {}", Value::Object(figures));
    outcome
}

// ---------------------------------------------------------------------------------------------
// The emulator

/// The local stack: a `local-aws` child process (parsed from its export lines) or in process.
struct Stack {
    aws: LocalAws,
    key: String,
    secret: String,
    child: Option<Child>,
}

impl Stack {
    async fn start(o: &Options) -> Result<Stack> {
        if o.external {
            let aws = LocalAws::start().await?;
            if aws.backend() != local_aws::Backend::External {
                return Err(
                    "--external: LOCAL_AWS_BACKEND=external and LOCAL_AWS_*_ENDPOINT are not set \
                            (eval \"$(scripts/external-emulators.sh env)\")"
                        .into(),
                );
            }
            let (key, secret) = (
                aws.credentials().access_key_id().to_owned(),
                aws.credentials().secret_access_key().to_owned(),
            );
            return Ok(Stack {
                aws,
                key,
                secret,
                child: None,
            });
        }
        let binary = if o.in_process {
            None
        } else {
            let found = o
                .local_aws
                .clone()
                .or_else(|| std::env::var("LOCAL_AWS_BIN").ok())
                .or_else(|| {
                    // target/<profile>/examples/bench_consumer → target/<profile>/local-aws
                    let exe = std::env::current_exe().ok()?;
                    let path = exe.parent()?.parent()?.join("local-aws");
                    path.exists().then(|| path.to_string_lossy().into_owned())
                });
            if found.is_none() {
                eprintln!(
                    "bench_consumer: no local-aws binary (build it with `cargo build [--release] -p local-aws \
                     --bin local-aws`, or pass --local-aws); running the emulator in process"
                );
            }
            found
        };
        let Some(binary) = binary else {
            let aws = LocalAws::builder().ignore_env().start().await?;
            let (key, secret) = (
                aws.credentials().access_key_id().to_owned(),
                aws.credentials().secret_access_key().to_owned(),
            );
            return Ok(Stack {
                aws,
                key,
                secret,
                child: None,
            });
        };
        tokio::task::spawn_blocking(move || Stack::spawn(&binary)).await?
    }

    fn spawn(binary: &str) -> Result<Stack> {
        let mut child = Command::new(binary)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {binary}: {e}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let mut vars = BTreeMap::new();
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            if let Some((name, value)) = line
                .strip_prefix("export ")
                .and_then(|rest| rest.split_once('='))
            {
                vars.insert(name.to_owned(), value.to_owned());
            }
            if line.starts_with("export AWS_ENDPOINT_URL_S3=") {
                break; // the last line
            }
        }
        let mut var = |name: &str| {
            vars.remove(name)
                .ok_or_else(|| format!("{binary} printed no {name}"))
        };
        let endpoints = Endpoints {
            kinesis: var("LOCAL_AWS_KINESIS_ENDPOINT")?,
            dynamodb: var("LOCAL_AWS_DYNAMODB_ENDPOINT")?,
            s3: var("LOCAL_AWS_S3_ENDPOINT")?,
        };
        let (key, secret) = (
            var("LOCAL_AWS_ACCESS_KEY_ID")?,
            var("LOCAL_AWS_SECRET_ACCESS_KEY")?,
        );
        Ok(Stack {
            aws: LocalAws::connect(endpoints, key.clone(), secret.clone()),
            key,
            secret,
            child: Some(child),
        })
    }

    fn describe(&self) -> String {
        match &self.child {
            Some(c) => format!("local-aws child process (pid {})", c.id()),
            None if self.aws.backend() == local_aws::Backend::External => format!(
                "external emulators (Kinesis at {})",
                self.aws.kinesis_endpoint()
            ),
            None => "in process (its CPU counts as ours)".to_owned(),
        }
    }

    fn kinesis(&self) -> aws_sdk_kinesis::Client {
        self.aws.kinesis_client()
    }

    fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        self.aws.dynamodb_client()
    }

    /// A DynamoDB client that goes through `endpoint` (a proxy in front of ours).
    fn dynamodb_via(&self, endpoint: &str) -> aws_sdk_dynamodb::Client {
        let endpoints = Endpoints {
            dynamodb: endpoint.to_owned(),
            ..self.aws.endpoints().clone()
        };
        LocalAws::connect(endpoints, self.key.clone(), self.secret.clone()).dynamodb_client()
    }

    /// CPU time of the emulator child, if it is one.
    fn child_cpu(&self) -> Option<Duration> {
        self.child
            .as_ref()
            .and_then(|c| cpu_time(&format!("/proc/{}/stat", c.id())))
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Measuring

/// utime + stime of a process, from `/proc/<pid>/stat` (clock ticks, assumed 100 per second:
/// the Linux default for USER_HZ).
fn cpu_time(stat_path: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    // The command name may contain spaces; the fields after it are space separated.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // Field 14 (utime) and 15 (stime) counting from 1 with pid and comm as 1 and 2.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

fn own_cpu() -> Duration {
    cpu_time("/proc/self/stat").unwrap_or_default()
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into());
    format!("{cores} cores, {model}")
}

/// The process-wide origin of the timestamps records carry.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn micros_since_epoch() -> u64 {
    epoch().elapsed().as_micros() as u64
}

/// `p`-th percentile (nearest rank) of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median of unsorted values (NaN when empty).
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// A number for `BENCH_JSON`, rounded to 3 decimals (null when not finite).
fn fig(x: f64) -> Value {
    if x.is_finite() {
        json!((x * 1000.0).round() / 1000.0)
    } else {
        Value::Null
    }
}

fn figs(values: &[f64]) -> Value {
    Value::Array(values.iter().map(|&x| fig(x)).collect())
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn summary(values: &[f64]) -> String {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let list: Vec<String> = values.iter().map(|x| format!("{x:.2}")).collect();
    format!(
        "median {:.2} s, min {:.2} s, max {:.2} s  [{}]",
        percentile(&v, 50.0),
        v.first().copied().unwrap_or(f64::NAN),
        v.last().copied().unwrap_or(f64::NAN),
        list.join(", ")
    )
}

// ---------------------------------------------------------------------------------------------
// The processor: no work, a checkpoint per batch, and a log of what happened when.

/// One `process_records` call.
#[derive(Debug, Clone)]
struct BatchEvent {
    at: Instant,
    worker: String,
    shard: String,
}

#[derive(Default)]
struct Tally {
    records: AtomicU64,
    batches: AtomicU64,
    checkpoints: AtomicU64,
    checkpoint_errors: AtomicU64,
    /// Records carry their put time: collect put → process latencies (µs) of the records
    /// put in [latency_from, latency_until) (µs since `epoch()`), so that neither the
    /// warm-up's backlog nor records cut off by the shutdown bias the figures.
    latency_from: AtomicU64,
    latency_until: AtomicU64,
    latencies: Mutex<Vec<u64>>,
    /// Every batch, for the lease-movement modes.
    log_batches: AtomicBool,
    batches_log: Mutex<Vec<BatchEvent>>,
    changed: Notify,
}

impl Tally {
    fn records(&self) -> u64 {
        self.records.load(Ordering::Relaxed)
    }

    /// Waits until `f` holds (checked at every batch and at least every 50 ms).
    async fn until(&self, what: &str, timeout: Duration, f: impl Fn(&Tally) -> bool) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            if f(self) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "timed out after {timeout:?} waiting for {what} ({} records in {} batches seen)",
                    self.records(),
                    self.batches.load(Ordering::Relaxed)
                )
                .into());
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
    }

    /// The first batch of `shard` by `worker` at or after `since`.
    fn first_batch(&self, worker: &str, shard: &str, since: Instant) -> Option<Instant> {
        self.batches_log
            .lock()
            .unwrap()
            .iter()
            .find(|b| b.at >= since && b.worker == worker && b.shard == shard)
            .map(|b| b.at)
    }

    fn batches_by(&self, worker: &str, since: Instant) -> usize {
        self.batches_log
            .lock()
            .unwrap()
            .iter()
            .filter(|b| b.at >= since && b.worker == worker)
            .count()
    }
}

struct Probe {
    worker: String,
    tally: Arc<Tally>,
    /// Time spent per user record (a slow processor), zero for a no-op one.
    per_record: Duration,
}

#[async_trait]
impl RecordProcessor for Probe {
    async fn process_records(&mut self, input: ProcessInput<'_>) -> Result<(), ProcessorError> {
        let now = Instant::now();
        let t = &self.tally;
        let (from, until) = (
            t.latency_from.load(Ordering::Relaxed),
            t.latency_until.load(Ordering::Relaxed),
        );
        if from < until {
            let at = micros_since_epoch();
            let mut latencies = t.latencies.lock().unwrap();
            for r in input.records {
                let stamp = r.data.get(..20).and_then(|d| std::str::from_utf8(d).ok());
                let put = stamp.and_then(|s| s.parse::<u64>().ok());
                if let Some(put) = put.filter(|p| (from..until).contains(p)) {
                    latencies.push(at.saturating_sub(put));
                }
            }
        }
        if t.log_batches.load(Ordering::Relaxed) {
            t.batches_log.lock().unwrap().push(BatchEvent {
                at: now,
                worker: self.worker.clone(),
                shard: input.shard_id.to_owned(),
            });
        }
        t.records
            .fetch_add(input.records.len() as u64, Ordering::Relaxed);
        t.batches.fetch_add(1, Ordering::Relaxed);
        if !self.per_record.is_zero() {
            tokio::time::sleep(self.per_record * input.records.len() as u32).await;
        }
        match input.checkpointer.checkpoint().await {
            Ok(()) => t.checkpoints.fetch_add(1, Ordering::Relaxed),
            Err(_) => t.checkpoint_errors.fetch_add(1, Ordering::Relaxed),
        };
        t.changed.notify_waiters();
        Ok(())
    }

    async fn shutdown_requested(
        &mut self,
        checkpointer: &Checkpointer,
    ) -> Result<(), ProcessorError> {
        if checkpointer.last_delivered().is_some() {
            checkpointer.checkpoint().await?;
        }
        Ok(())
    }
}

struct WorkerSpec<'a> {
    app: &'a str,
    stream: &'a str,
    id: &'a str,
    dynamodb: aws_sdk_dynamodb::Client,
    failover: Duration,
    idle: Duration,
    max_records: u32,
    take_interval: Option<Duration>,
    /// Enhanced fan-out instead of polling (`idle` and `max_records` then do nothing).
    fan_out: bool,
    /// Polling: `max_prefetch_bytes` instead of the default (8 MiB).
    prefetch_bytes: Option<usize>,
    /// Time the processor spends per user record.
    per_record: Duration,
}

impl<'a> WorkerSpec<'a> {
    fn new(stack: &Stack, app: &'a str, stream: &'a str, id: &'a str) -> Self {
        WorkerSpec {
            app,
            stream,
            id,
            dynamodb: stack.dynamodb(),
            failover: Duration::from_secs(10),
            idle: Duration::from_millis(1500),
            max_records: 10_000,
            take_interval: None,
            fan_out: false,
            prefetch_bytes: None,
            per_record: Duration::ZERO,
        }
    }

    fn start(self, stack: &Stack, tally: &Arc<Tally>) -> (WorkerHandle, JoinHandle<()>) {
        let (tally, worker_id, per_record) = (tally.clone(), self.id.to_owned(), self.per_record);
        let mut polling = PollingConfig::default();
        if let Some(bytes) = self.prefetch_bytes {
            polling.max_prefetch_bytes = bytes;
        }
        let mut builder = Worker::builder(
            self.app,
            self.stream,
            stack.kinesis(),
            self.dynamodb,
            move || Probe {
                worker: worker_id.clone(),
                tally: tally.clone(),
                per_record,
            },
        )
        .worker_id(self.id)
        .initial_position(InitialPosition::TrimHorizon)
        .failover_time(self.failover)
        .retrieval(if self.fan_out {
            Retrieval::fan_out()
        } else {
            Retrieval::Polling(polling)
        })
        .idle_time_between_reads(self.idle)
        .max_records(self.max_records);
        if let Some(interval) = self.take_interval {
            builder = builder.lease_taker_interval(interval);
        }
        let worker = builder.build();
        let handle = worker.handle();
        let id = self.id.to_owned();
        let task = tokio::spawn(async move {
            if let Err(e) = worker.run().await {
                eprintln!("worker {id} failed: {e}");
            }
        });
        (handle, task)
    }
}

async fn new_stream(stack: &Stack, prefix: &str, shards: i32) -> Result<String> {
    let stream = testing::unique_name(prefix);
    testing::create_stream(&stack.kinesis(), &stream, shards).await?;
    Ok(stream)
}

async fn put_entries(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    mut entries: Vec<PutRecordsRequestEntry>,
) -> Result<()> {
    for attempt in 0.. {
        let out = kinesis
            .put_records()
            .stream_name(stream)
            .set_records(Some(entries.clone()))
            .send()
            .await?;
        if out.failed_record_count().unwrap_or(0) == 0 {
            return Ok(());
        }
        if attempt == 20 {
            return Err("PutRecords kept failing".into());
        }
        entries = entries
            .into_iter()
            .zip(out.records())
            .filter(|(_, r)| r.error_code().is_some())
            .map(|(e, _)| e)
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!()
}

/// 100-byte data whose first 20 bytes are `stamp` in decimal.
fn stamped_data(stamp: u64) -> Vec<u8> {
    let mut data = format!("{stamp:020}").into_bytes();
    data.resize(100, b'.');
    data
}

/// Puts `rate` single records per second (spread over the shards by key) until stopped.
fn steady_producer(stack: &Stack, stream: &str, rate: u64) -> (Arc<AtomicBool>, JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (kinesis, stream, stopped) = (stack.kinesis(), stream.to_owned(), stop.clone());
    let task = tokio::spawn(async move {
        let period = Duration::from_secs_f64(1.0 / rate as f64);
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut n = 0u64;
        while !stopped.load(Ordering::Relaxed) {
            tick.tick().await;
            let data = stamped_data(micros_since_epoch());
            let result = kinesis
                .put_record()
                .stream_name(&stream)
                .partition_key(format!("key-{n}"))
                .data(Blob::new(data))
                .send()
                .await;
            if let Err(e) = result {
                eprintln!("put failed: {e}");
            }
            n += 1;
        }
        n
    });
    (stop, task)
}

// ---------------------------------------------------------------------------------------------
// 1. Deaggregate-and-dispatch throughput

async fn throughput(stack: &Stack, o: &Options) -> Result<Value> {
    let aggregated = o
        .records
        .unwrap_or(if o.quick { 20_000 } else { 2_000_000 });
    let plain = (aggregated / 4).max(1);
    let shards = 4;
    let rounds = o.trials.unwrap_or(if o.quick { 1 } else { 3 });
    println!(
        "{shards} shards, 100-byte records, one worker, no-op processor checkpointing every batch, \
         idle_time_between_reads 200 ms; CPU = utime+stime of this process from the worker's \
         start to the last record"
    );
    println!(
        "| input | user records | Kinesis records | max_records | wall s | our CPU s | records/CPU-s | records/s wall | emulator CPU s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let kinds = ["KPL aggregates", "plain records"];
    // (records per CPU-second, records per second) of each round, per kind.
    let (mut agg, mut plain_rates) = (Vec::new(), Vec::new());
    for kind in (0..rounds).flat_map(|_| kinds) {
        let is_agg = kind == "KPL aggregates";
        let total = if is_agg { aggregated } else { plain };
        let stream = new_stream(stack, "tput", shards).await?;
        let kinesis = stack.kinesis();
        let kinesis_records = if is_agg {
            prefill_aggregated(&kinesis, &stream, total).await?
        } else {
            prefill_plain(&kinesis, &stream, total).await?
        };
        // ferrokinesis has no 10 MiB cap per GetRecords: cap reads of aggregates at ~10 MB
        // (200 × 51 KB) by count, as the service caps them by size.
        let max_records = if is_agg { 200 } else { 10_000 };
        eprintln!("  {kind}: {total} user records in {kinesis_records} Kinesis records put");
        let app = testing::unique_name("tput-app");
        let tally = Arc::new(Tally::default());
        let mut spec = WorkerSpec::new(stack, &app, &stream, "w");
        spec.idle = Duration::from_millis(200);
        spec.max_records = max_records;
        let (cpu0, child0, wall0) = (own_cpu(), stack.child_cpu(), Instant::now());
        let (handle, task) = spec.start(stack, &tally);
        tally
            .until(
                "every record",
                Duration::from_secs(if o.quick { 60 } else { 600 }),
                |t| t.records() >= total as u64,
            )
            .await?;
        let (cpu, wall) = (own_cpu() - cpu0, wall0.elapsed());
        let child = stack.child_cpu().zip(child0).map(|(b, a)| b - a);
        handle.shutdown().await;
        task.await?;
        let seen = tally.records();
        if seen != total as u64 {
            println!("note: {seen} records delivered for {total} put (duplicates?)");
        }
        let rates = (
            total as f64 / secs(cpu).max(0.01),
            total as f64 / secs(wall),
        );
        if is_agg {
            agg.push(rates);
        } else {
            plain_rates.push(rates);
        }
        println!(
            "| {kind} | {total} | {kinesis_records} | {max_records} | {:.2} | {:.2} | {:.0} | {:.0} | {} |",
            secs(wall),
            secs(cpu),
            rates.0,
            rates.1,
            child.map_or("n/a".into(), |c| format!("{:.2}", secs(c))),
        );
        println!(
            "  ({} batches, {} checkpoints, {} checkpoint errors; load {})",
            tally.batches.load(Ordering::Relaxed),
            tally.checkpoints.load(Ordering::Relaxed),
            tally.checkpoint_errors.load(Ordering::Relaxed),
            load()
        );
        kinesis.delete_stream().stream_name(&stream).send().await?;
    }
    let cpu = |r: &[(f64, f64)]| fig(median(&r.iter().map(|x| x.0).collect::<Vec<_>>()));
    let wall = |r: &[(f64, f64)]| fig(median(&r.iter().map(|x| x.1).collect::<Vec<_>>()));
    Ok(json!({
        "agg_records_per_cpu_s": cpu(&agg),
        "plain_records_per_cpu_s": cpu(&plain_rates),
        "agg_records_per_s": wall(&agg),
        "plain_records_per_s": wall(&plain_rates),
    }))
}

/// Puts `total` 100-byte user records with distinct 16-byte keys as KPL aggregates (51200
/// bytes at most each), one aggregator per shard as the KPL does (the consumer drops user
/// records outside the shard's hash range, as the KCL). Returns the number of Kinesis records.
async fn prefill_aggregated(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    total: usize,
) -> Result<usize> {
    let mut shards: Vec<(HashKeyRange, Aggregator<UserRecord>)> = Vec::new();
    let listed = kinesis.list_shards().stream_name(stream).send().await?;
    for shard in listed.shards() {
        let range = shard
            .hash_key_range()
            .ok_or("a shard without a hash key range")?;
        let start: HashKey = range.starting_hash_key().parse()?;
        let end: HashKey = range.ending_hash_key().parse()?;
        shards.push((
            HashKeyRange::new(start, end),
            Aggregator::new(AggregatorConfig::default()),
        ));
    }
    let mut entries = Vec::new();
    let mut kinesis_records = 0;
    let flush = |agg: &mut Aggregator<UserRecord>, entries: &mut Vec<_>| -> Result<()> {
        if let Some(done) = agg.finish() {
            let r = done.record;
            entries.push(
                PutRecordsRequestEntry::builder()
                    .partition_key(r.partition_key)
                    .set_explicit_hash_key(r.explicit_hash_key.map(|k| k.to_string()))
                    .data(Blob::new(r.data.to_vec()))
                    .build()?,
            );
        }
        Ok(())
    };
    for i in 0..total {
        let record = UserRecord::new(format!("pk-{i:013}"), vec![b'x'; 100])?;
        let key = record.hash_key();
        let (_, aggregator) = shards
            .iter_mut()
            .find(|(range, _)| range.contains(key))
            .ok_or("no shard for a hash key")?;
        if let Err(full) = aggregator.try_push(record) {
            flush(aggregator, &mut entries)?;
            aggregator
                .try_push(full.into_inner())
                .map_err(|_| "a lone record does not fit")?;
        }
        // ≤ 5 MiB per PutRecords: 90 aggregates of ≤ 51200 bytes.
        if entries.len() == 90 {
            kinesis_records += entries.len();
            put_entries(kinesis, stream, std::mem::take(&mut entries)).await?;
        }
    }
    for (_, aggregator) in &mut shards {
        flush(aggregator, &mut entries)?;
    }
    for chunk in entries.chunks(90) {
        kinesis_records += chunk.len();
        put_entries(kinesis, stream, chunk.to_vec()).await?;
    }
    Ok(kinesis_records)
}

async fn prefill_plain(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    total: usize,
) -> Result<usize> {
    let ids: Vec<usize> = (0..total).collect();
    for chunk in ids.chunks(500) {
        let entries = chunk
            .iter()
            .map(|i| {
                PutRecordsRequestEntry::builder()
                    .partition_key(format!("pk-{i:013}"))
                    .data(Blob::new(vec![b'x'; 100]))
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        put_entries(kinesis, stream, entries).await?;
    }
    Ok(total)
}

// ---------------------------------------------------------------------------------------------
// 2. Put → process latency

async fn latency(stack: &Stack, o: &Options) -> Result<Value> {
    let seconds = o.seconds.unwrap_or(if o.quick { 2 } else { 40 });
    let rate = if o.quick { 50 } else { o.rate };
    println!(
        "2 shards, PutRecord at {rate}/s with the put time in the data; three applications (one \
         worker each) read the stream at the same time; the records put during {seconds} s \
         after 3 s of warm-up are measured; latency = process_records time − time before the \
         PutRecord call"
    );
    println!("| retrieval | samples | p50 ms | p90 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|");
    let settings = [
        ("polling, idle_time_between_reads 1500 ms", false, 1500u64),
        ("polling, idle_time_between_reads 200 ms", false, 200),
        ("enhanced fan-out (SubscribeToShard)", true, 200),
    ];
    let stream = new_stream(stack, "lat", 2).await?;
    let mut running = Vec::new();
    for (i, (_, fan_out, idle_ms)) in settings.iter().enumerate() {
        let app = testing::unique_name(&format!("lat-app-{i}"));
        let tally = Arc::new(Tally::default());
        let mut spec = WorkerSpec::new(stack, &app, &stream, "w");
        spec.idle = Duration::from_millis(*idle_ms);
        spec.fan_out = *fan_out;
        let (handle, task) = spec.start(stack, &tally);
        running.push((tally, handle, task));
    }
    let (stop, producer) = steady_producer(stack, &stream, rate);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let from = micros_since_epoch();
    for (tally, ..) in &running {
        tally.latency_until.store(u64::MAX, Ordering::Relaxed);
        tally.latency_from.store(from, Ordering::Relaxed);
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let until = micros_since_epoch();
    for (tally, ..) in &running {
        tally.latency_until.store(until, Ordering::Relaxed);
    }
    // Records put before `until` are still on their way: let them arrive.
    tokio::time::sleep(Duration::from_secs(if o.quick { 2 } else { 5 })).await;
    stop.store(true, Ordering::Relaxed);
    let put = producer.await?;
    let mut rows = Vec::new();
    for ((name, fan_out, idle_ms), (tally, handle, task)) in settings.iter().zip(running) {
        handle.shutdown().await;
        task.await?;
        let mut ms: Vec<f64> = tally
            .latencies
            .lock()
            .unwrap()
            .iter()
            .map(|&us| us as f64 / 1000.0)
            .collect();
        if ms.is_empty() {
            return Err(format!("{name}: no record was processed").into());
        }
        ms.sort_by(f64::total_cmp);
        let mut row = json!({
            "setting": if *fan_out { "fan-out".to_owned() } else { format!("polling {idle_ms} ms") },
            "samples": ms.len(),
            "p50_ms": fig(percentile(&ms, 50.0)),
            "p99_ms": fig(percentile(&ms, 99.0)),
            "max_ms": fig(ms.last().copied().unwrap_or(f64::NAN)),
        });
        if !fan_out {
            row["idle_ms"] = json!(idle_ms);
        }
        rows.push(row);
        println!(
            "| {name} | {} | {:.0} | {:.0} | {:.0} | {:.0} |",
            ms.len(),
            percentile(&ms, 50.0),
            percentile(&ms, 90.0),
            percentile(&ms, 99.0),
            ms.last().copied().unwrap_or(f64::NAN),
        );
    }
    println!("({put} records put; load {})", load());
    stack
        .kinesis()
        .delete_stream()
        .stream_name(&stream)
        // The fan-out application registered a consumer (AWS and kinesis-mock refuse to
        // delete a stream with consumers otherwise).
        .enforce_consumer_deletion(true)
        .send()
        .await?;
    Ok(Value::Array(rows))
}

// ---------------------------------------------------------------------------------------------
// 3 and 4. Lease movement: failover after a kill, handoff after a graceful shutdown

/// Two workers A and B on a 2-shard stream with records flowing, each holding one lease.
struct Pair {
    stream: String,
    app: String,
    tally: Arc<Tally>,
    a: (WorkerHandle, JoinHandle<()>),
    b: (WorkerHandle, JoinHandle<()>),
    producer: (Arc<AtomicBool>, JoinHandle<u64>),
}

impl Pair {
    async fn start(stack: &Stack, failover: Duration) -> Result<Pair> {
        let stream = new_stream(stack, "move", 2).await?;
        let app = testing::unique_name("move-app");
        let tally = Arc::new(Tally::default());
        tally.log_batches.store(true, Ordering::Relaxed);
        let producer = steady_producer(stack, &stream, 40);
        let mut spec = WorkerSpec::new(stack, &app, &stream, "A");
        spec.failover = failover;
        let a = spec.start(stack, &tally);
        let t0 = Instant::now();
        tally
            .until("A on both shards", Duration::from_secs(30), |t| {
                ["shardId-000000000000", "shardId-000000000001"]
                    .iter()
                    .all(|s| t.first_batch("A", s, t0).is_some())
            })
            .await?;
        let mut spec = WorkerSpec::new(stack, &app, &stream, "B");
        spec.failover = failover;
        let b = spec.start(stack, &tally);
        let pair = Pair {
            stream,
            app,
            tally,
            a,
            b,
            producer,
        };
        // Balanced in the table and B processing.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let owners = pair.owners(stack).await?;
            let b_shards: Vec<&String> = owners
                .iter()
                .filter(|(_, o)| o.as_str() == "B")
                .map(|(s, _)| s)
                .collect();
            if b_shards.len() == 1
                && owners.values().filter(|o| o.as_str() == "A").count() == 1
                && pair.tally.first_batch("B", b_shards[0], t0).is_some()
            {
                return Ok(pair);
            }
            if Instant::now() > deadline {
                return Err(format!("never balanced: {owners:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Shard → owner, from the lease table.
    async fn owners(&self, stack: &Stack) -> Result<BTreeMap<String, String>> {
        let store = DynamoLeaseStore::new(stack.dynamodb(), &self.app);
        Ok(store
            .list_leases()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter_map(|l| Some((l.lease_key.clone(), l.owner?)))
            .collect())
    }

    async fn a_shard(&self, stack: &Stack) -> Result<String> {
        self.owners(stack)
            .await?
            .into_iter()
            .find(|(_, o)| o == "A")
            .map(|(s, _)| s)
            .ok_or_else(|| "A holds no lease".into())
    }

    async fn finish(self, stack: &Stack) -> Result<()> {
        self.producer.0.store(true, Ordering::Relaxed);
        self.producer.1.await?;
        self.b.0.shutdown().await;
        self.b.1.await?;
        if !self.a.1.is_finished() {
            self.a.1.abort();
        }
        stack
            .kinesis()
            .delete_stream()
            .stream_name(&self.stream)
            .send()
            .await?;
        Ok(())
    }
}

async fn failover(stack: &Stack, o: &Options) -> Result<Value> {
    let failover = Duration::from_secs(if o.quick { 1 } else { 10 });
    let trials = o.trials.unwrap_or(if o.quick { 1 } else { 3 });
    println!(
        "2 shards, workers A and B (failover_time {failover:?}, lease taker every 1 s), 40 records/s; \
         A's task is aborted (no release) at a varying phase of its renewal cycle; time until B's \
         first process_records on A's shard. Target ≤ failover + 2 s = {:.0} s.",
        secs(failover) + 2.0
    );
    let mut results = Vec::new();
    for trial in 0..trials {
        let pair = Pair::start(stack, failover).await?;
        // Vary the kill's phase against A's renewals (every failover/3).
        let phase = failover.mul_f64(0.37 * (trial as f64 + 1.0) % 1.0 / 3.0);
        tokio::time::sleep(phase).await;
        let shard = pair.a_shard(stack).await?;
        pair.a.1.abort();
        let killed = Instant::now();
        pair.tally
            .until(
                "B on A's shard",
                failover * 3 + Duration::from_secs(30),
                |t| t.first_batch("B", &shard, killed).is_some(),
            )
            .await?;
        let taken = pair.tally.first_batch("B", &shard, killed).expect("seen");
        let after_kill = pair
            .tally
            .batches_by("A", killed + Duration::from_millis(50));
        let d = secs(taken - killed);
        println!(
            "  trial {}: {d:.2} s (kill phase {:.2} s after balance; A batches after the kill: {after_kill}; load {})",
            trial + 1,
            secs(phase),
            load()
        );
        results.push(d);
        pair.finish(stack).await?;
    }
    println!("failover: {}", summary(&results));
    Ok(json!({"failover_time_s": fig(secs(failover)), "trials_s": figs(&results)}))
}

async fn handoff(stack: &Stack, o: &Options) -> Result<Value> {
    let trials = o.trials.unwrap_or(if o.quick { 1 } else { 5 });
    println!(
        "2 shards, workers A and B (failover_time 10 s, lease taker every 1 s), 40 records/s; \
         A.shutdown() (checkpoint, release); time from its return until B's first \
         process_records on A's shard. Target ≤ 2 s."
    );
    let (mut results, mut shutdowns) = (Vec::new(), Vec::<f64>::new());
    for trial in 0..trials {
        let pair = Pair::start(stack, Duration::from_secs(10)).await?;
        tokio::time::sleep(Duration::from_millis(300 * trial as u64)).await;
        let shard = pair.a_shard(stack).await?;
        let asked = Instant::now();
        pair.a.0.shutdown().await;
        let returned = Instant::now();
        pair.tally
            .until("B on A's shard", Duration::from_secs(40), |t| {
                t.first_batch("B", &shard, returned).is_some()
            })
            .await?;
        let taken = pair.tally.first_batch("B", &shard, returned).expect("seen");
        let d = secs(taken - returned);
        println!(
            "  trial {}: {d:.2} s (shutdown() itself took {:.1} ms; load {})",
            trial + 1,
            secs(returned - asked) * 1000.0,
            load()
        );
        results.push(d);
        shutdowns.push(secs(returned - asked) * 1000.0);
        pair.finish(stack).await?;
    }
    println!("handoff: {}", summary(&results));
    shutdowns.sort_by(f64::total_cmp);
    println!(
        "shutdown() duration: median {:.1} ms, max {:.1} ms",
        percentile(&shutdowns, 50.0),
        shutdowns.last().copied().unwrap_or(f64::NAN)
    );
    Ok(json!({
        "trials_s": figs(&results),
        "shutdown_ms_max": fig(shutdowns.last().copied().unwrap_or(f64::NAN)),
    }))
}

// ---------------------------------------------------------------------------------------------
// 5. Cold start

async fn cold_start(stack: &Stack, o: &Options) -> Result<Value> {
    let trials = o.trials.unwrap_or(if o.quick { 1 } else { 5 });
    let shards = 4;
    let stream = new_stream(stack, "cold", shards).await?;
    prefill_plain(&stack.kinesis(), &stream, 1000).await?;
    println!(
        "{shards} shards holding 1000 records; a new application (no lease table) each trial; \
         from Worker::builder(..).build() + run() to the first process_records, and to the \
         first batch of every shard. Target ≤ 3 s."
    );
    let (mut first, mut all) = (Vec::new(), Vec::new());
    for trial in 0..trials {
        let app = testing::unique_name("cold-app");
        let tally = Arc::new(Tally::default());
        tally.log_batches.store(true, Ordering::Relaxed);
        let started = Instant::now();
        let (handle, task) = WorkerSpec::new(stack, &app, &stream, "w").start(stack, &tally);
        tally
            .until("every shard", Duration::from_secs(60), |t| {
                let log = t.batches_log.lock().unwrap();
                let shards: std::collections::BTreeSet<&str> =
                    log.iter().map(|b| b.shard.as_str()).collect();
                shards.len() == 4
            })
            .await?;
        let (f, a) = {
            let log = tally.batches_log.lock().unwrap();
            let f = log.iter().map(|b| b.at).min().expect("a batch");
            let mut per_shard = BTreeMap::new();
            for b in log.iter() {
                per_shard.entry(b.shard.clone()).or_insert(b.at);
            }
            (f, per_shard.values().copied().max().expect("a batch"))
        };
        handle.shutdown().await;
        task.await?;
        println!(
            "  trial {}: first record {:.3} s, every shard {:.3} s (load {})",
            trial + 1,
            secs(f - started),
            secs(a - started),
            load()
        );
        first.push(secs(f - started));
        all.push(secs(a - started));
    }
    println!("cold start to first record: {}", summary(&first));
    println!("cold start to every shard:  {}", summary(&all));
    stack
        .kinesis()
        .delete_stream()
        .stream_name(&stream)
        .send()
        .await?;
    let ms = |v: &[f64]| figs(&v.iter().map(|s| s * 1000.0).collect::<Vec<_>>());
    Ok(json!({"first_record_ms": ms(&first), "all_shards_ms": ms(&all)}))
}

// ---------------------------------------------------------------------------------------------
// 6. DynamoDB operations per shard-minute

async fn dynamo_ops(stack: &Stack, o: &Options) -> Result<Value> {
    let seconds = o.seconds.unwrap_or(if o.quick { 3 } else { 60 });
    let (shards, workers) = if o.quick {
        (2, 1)
    } else {
        (o.shards, o.workers)
    };
    let per_shard_rate = 5;
    println!(
        "{shards} shards × {workers} workers, {per_shard_rate} records/s per shard, failover 10 s, \
         idle_time_between_reads 1.5 s, a checkpoint per batch; requests counted by a FaultProxy \
         without rules in front of DynamoDB for {seconds} s after the leases settled (balanced and \
         every shard processing, then a few seconds more)"
    );
    println!(
        "| lease taker | Scan | UpdateItem | of which checkpoints | renew+take (rest) | GetItem | other | total | per shard-minute: scans | renews | checkpoints | all |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    for take in [Duration::from_secs(1), Duration::from_secs(20)] {
        let stream = new_stream(stack, "ops", shards).await?;
        let app = testing::unique_name("ops-app");
        let proxy = FaultProxy::start(stack.aws.dynamodb_endpoint()).await?;
        let tally = Arc::new(Tally::default());
        tally.log_batches.store(true, Ordering::Relaxed);
        let (stop, producer) = steady_producer(stack, &stream, per_shard_rate * shards as u64);
        let ids: Vec<String> = (0..workers).map(|i| format!("w{i}")).collect();
        let running: Vec<_> = ids
            .iter()
            .map(|id| {
                let mut spec = WorkerSpec::new(stack, &app, &stream, id);
                spec.dynamodb = stack.dynamodb_via(proxy.endpoint());
                spec.take_interval = Some(take);
                spec.start(stack, &tally)
            })
            .collect();
        // Settled: every worker holds its fair share and every shard was processed.
        let fair = (shards as usize).div_ceil(workers);
        let store = DynamoLeaseStore::new(stack.dynamodb(), &app);
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let leases = store.list_leases().await.unwrap_or_default();
            let mut per: BTreeMap<String, usize> = BTreeMap::new();
            for l in &leases {
                if let Some(owner) = &l.owner {
                    *per.entry(owner.clone()).or_default() += 1;
                }
            }
            let balanced = per.values().sum::<usize>() == shards as usize
                && per.len() == workers.min(shards as usize)
                && per.values().all(|&n| n <= fair);
            let processing = {
                let log = tally.batches_log.lock().unwrap();
                let s: std::collections::BTreeSet<&str> =
                    log.iter().map(|b| b.shard.as_str()).collect();
                s.len() == shards as usize
            };
            if balanced && processing {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("leases never settled: {per:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_secs(if o.quick { 1 } else { 5 })).await;
        proxy.reset_stats();
        let checkpoints0 = tally.checkpoints.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let stats = proxy.stats();
        let checkpoints = tally.checkpoints.load(Ordering::Relaxed) - checkpoints0;
        stop.store(true, Ordering::Relaxed);
        producer.await?;
        for (handle, task) in running {
            handle.shutdown().await;
            task.await?;
        }
        let scans = stats.requests("Scan");
        let updates = stats.requests("UpdateItem");
        let gets = stats.requests("GetItem");
        let total = stats.total_requests();
        let other = total - scans - updates - gets;
        let others: Vec<String> = stats
            .requests_by_operation()
            .filter(|(op, _)| !matches!(*op, "Scan" | "UpdateItem" | "GetItem"))
            .map(|(op, n)| format!("{op} {n}"))
            .collect();
        let shard_minutes = shards as f64 * seconds as f64 / 60.0;
        let rest = updates.saturating_sub(checkpoints);
        println!(
            "| {:?} | {scans} | {updates} | {checkpoints} | {rest} | {gets} | {other}{} | {total} | {:.1} | {:.1} | {:.1} | {:.1} |",
            take,
            if others.is_empty() {
                String::new()
            } else {
                format!(" ({})", others.join(", "))
            },
            scans as f64 / shard_minutes,
            rest as f64 / shard_minutes,
            checkpoints as f64 / shard_minutes,
            total as f64 / shard_minutes,
        );
        println!("  (load {})", load());
        rows.push(json!({
            "lease_taker_s": fig(secs(take)),
            "shards": shards,
            "workers": workers,
            "scans_per_shard_min": fig(scans as f64 / shard_minutes),
            "renewals_per_shard_min": fig(rest as f64 / shard_minutes),
            "checkpoints_per_shard_min": fig(checkpoints as f64 / shard_minutes),
            "total_per_shard_min": fig(total as f64 / shard_minutes),
        }));
        stack
            .kinesis()
            .delete_stream()
            .stream_name(&stream)
            .send()
            .await?;
    }
    let kcl_scans = 3.0 * workers as f64 / shards as f64;
    println!(
        "KCL 2.x defaults for the same {shards} × {workers}: renew ≈ 18 per shard-minute (every 3.3 s), \
         scans ≈ {kcl_scans:.1} per shard-minute (one per worker every 20 s), one checkpoint per \
         batch as the application does (here a batch every 1.5 s: ≤ 40 per shard-minute)"
    );
    Ok(Value::Array(rows))
}

// ---------------------------------------------------------------------------------------------
// 7. Memory under overload

/// A `kB` field of `/proc/self/status` (`VmRSS`, `VmHWM`), in bytes.
fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line[field.len()..]
        .trim_start_matches(':')
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Resets `VmHWM` to the current RSS (Linux ≥ 4.0), so that the peak measured is the
/// consumer's and not the pre-fill's.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

async fn memory(stack: &Stack, o: &Options) -> Result<Value> {
    let total = o.records.unwrap_or(if o.quick { 20_000 } else { 200_000 });
    let seconds = o.seconds.unwrap_or(if o.quick { 3 } else { 30 });
    let shards = 4;
    // Reads of 10 aggregates (≤ 512 000 bytes: ferrokinesis does not cap a read by size, so
    // the count does) into a queue of at most 1 MiB per shard, so that the backlog is several
    // times what the queues may hold.
    let (max_records, prefetch_bytes, aggregate_max) = (10u32, o.prefetch_bytes, 51_200usize);
    // 4 000 user records/s over the 4 shards: 200 000 take 50 s, longer than the default window.
    let per_record = Duration::from_millis(1);
    // What the polling source lets pile up per shard (src/retrieval/polling.rs): a read
    // starts only while the queue holds < max_prefetch_bytes and brings ≤ max_records
    // aggregates of ≤ 51200 bytes, so ≤ max_prefetch_bytes + one read; and the channel holds
    // max_prefetch_batches (3) reads, plus one the reader may hold while waiting for a slot.
    // Not counted: the batch the processor is working on (one read and its user records),
    // the HTTP/JSON/base64 buffers of reads in flight, the SDK clients, the runtime and the
    // allocator's own slack.
    let read = max_records as usize * aggregate_max;
    let bound = shards * (prefetch_bytes + read).min((3 + 1) * read);
    let rss_start = status_bytes("VmRSS").unwrap_or(0);
    let stream = new_stream(stack, "mem", shards as i32).await?;
    let kinesis_records = prefill_aggregated(&stack.kinesis(), &stream, total).await?;
    println!(
        "{shards} shards holding {total} 100-byte user records in {kinesis_records} KPL aggregates \
         (~{}); one worker, polling with max_records {max_records}, max_prefetch_bytes {}, \
         max_prefetch_batches 3, idle_time_between_reads 200 ms; the processor spends {per_record:?} \
         per user record (~{:.0} records/s over the {shards} shards) and checkpoints every batch. \
         Peak RSS (VmHWM) of this process over {seconds} s, against the queues' bound \
         {shards} × min(max_prefetch_bytes + 1 read, (3 + 1) reads of ≤ max_records × 51200) = {}.",
        mib((kinesis_records * aggregate_max) as u64),
        mib(prefetch_bytes as u64),
        shards as f64 / secs(per_record),
        mib(bound as u64),
    );
    if stack.child.is_none() {
        println!("note: the emulator runs in this process: its memory counts as ours");
    }
    let rss_before = status_bytes("VmRSS").ok_or("no VmRSS in /proc/self/status")?;
    let reset = reset_peak_rss();
    if !reset {
        println!("note: /proc/self/clear_refs refused: the peak is the sampled RSS");
    }

    // Sample RSS every 50 ms as well: a timeline, and the peak if VmHWM cannot be reset.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let t0 = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                samples.push((t0.elapsed(), status_bytes("VmRSS").unwrap_or(0)));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            samples
        })
    };
    let app = testing::unique_name("mem-app");
    let tally = Arc::new(Tally::default());
    let mut spec = WorkerSpec::new(stack, &app, &stream, "w");
    spec.idle = Duration::from_millis(200);
    spec.max_records = max_records;
    spec.prefetch_bytes = Some(prefetch_bytes);
    spec.per_record = per_record;
    let (handle, task) = spec.start(stack, &tally);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let peak_hwm = status_bytes("VmHWM").unwrap_or(0);
    let processed = tally.records();
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await?;
    handle.shutdown().await;
    task.await?;
    let sampled_peak = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let peak = if reset { peak_hwm } else { sampled_peak };
    if processed == 0 {
        return Err("no record was processed".into());
    }
    let timeline: Vec<String> = samples
        .iter()
        .step_by((samples.len() / 10).max(1))
        .map(|(t, rss)| format!("{:.1} s {}", secs(*t), mib(*rss)))
        .collect();
    println!("RSS while reading: {}", timeline.join(", "));
    println!(
        "| RSS at start | RSS before the worker | peak RSS (VmHWM) | sampled peak | growth | bound | growth ÷ bound |"
    );
    println!("|---|---|---|---|---|---|---|");
    let growth = peak.saturating_sub(rss_before);
    println!(
        "| {} | {} | {} | {} | {} | {} | {:.2}× |",
        mib(rss_start),
        mib(rss_before),
        mib(peak),
        mib(sampled_peak),
        mib(growth),
        mib(bound as u64),
        growth as f64 / bound as f64
    );
    println!(
        "  ({processed} of {total} user records handed to the processor in {seconds} s{}; {} batches; load {})",
        if (processed as usize) < total {
            ": still behind at the end"
        } else {
            ": the backlog ran out, so the overload did not last (more --records)"
        },
        tally.batches.load(Ordering::Relaxed),
        load()
    );
    stack
        .kinesis()
        .delete_stream()
        .stream_name(&stream)
        .send()
        .await?;
    Ok(json!({
        "buffer_bound_bytes": bound,
        "rss_before_bytes": rss_before,
        "peak_rss_bytes": peak,
    }))
}
