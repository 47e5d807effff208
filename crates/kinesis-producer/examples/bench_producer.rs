//! Producer benchmarks against an out-of-process local Kinesis (see `docs/BENCHMARKS.md`).
//!
//! ```text
//!  this process                                   child process
//!  ┌──────────────────────────────────────┐        ┌──────────────────────────┐
//!  │ put loop ─► Producer ─► aws-sdk ─────┼─HTTP──►│ local-aws (ferrokinesis) │
//!  │ checker: awaits every outcome        │        │ [--enforce-shard-limits] │
//!  │ CPU: /proc/self/stat utime+stime     │        └──────────────────────────┘
//!  │ memory: /proc/self/status VmHWM      │   started per scenario, its `export` lines
//!  └──────────────────────────────────────┘   parsed, stopped with SIGTERM
//! ```
//!
//! Each scenario runs in its own process (`--scenario all` re-executes this binary), so that
//! the peak RSS of one does not hide in another's. Scenarios:
//!
//! - `cpu`: 4 shards, 100-byte records with 16-byte keys, every handle must resolve Ok; CPU
//!   (user + sys) of this process per record, records/s, aggregation efficiency. Run with the
//!   default rate limit and with the limiter opened (`--rate-limit`); one `put` per record,
//!   or `put_batch` of N records (`--batch N`).
//! - `sdk`: the plain SDK, `PutRecords` of 500 un-aggregated records, a few requests in
//!   flight, same records: the peer the producer must beat.
//! - `saturation`: 1 shard with shard limits enforced, put as fast as possible for a while;
//!   the stream is read back to count bytes per second as the shard accepted them, losses and
//!   duplicates.
//! - `memory`: 1 throttled shard, overload, a small `max_buffered_bytes`: peak RSS vs the
//!   bound.
//!
//! Each scenario prints its figures for people, then one `BENCH_JSON {...}` line for
//! `cargo xtask bench` (the keys are listed in `xtask/src/bench/producer.rs`).
//!
//! `--quick` shrinks every scenario to seconds (for CI: it keeps the harness from rotting; the
//! figures mean nothing there).
//!
//! The `local-aws` binary is looked up next to this one (`target/<profile>/local-aws`), or
//! given with `--local-aws PATH`. Without it the emulator runs in process and its CPU is
//! counted too (said loudly in the output).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kinesis_aggregation::{ReceivedRecord, deaggregate};
use kinesis_producer::{Producer, PutBatchHandle, PutHandle, Record};
use local_aws::{Endpoints, LocalAws};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const DATA_SIZE: usize = 100;
const KEY_SIZE: usize = 16;

#[derive(Debug, Clone)]
struct Args {
    scenario: String,
    quick: bool,
    records: usize,
    seconds: u64,
    shards: i32,
    rate_limit: Option<u32>,
    aggregation: bool,
    concurrency: usize,
    buffer_mib: usize,
    /// Records per `put_batch` call; 0: one `put` per record.
    batch: usize,
    local_aws: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        scenario: "all".into(),
        quick: false,
        records: 0,
        seconds: 0,
        shards: 0,
        rate_limit: None,
        aggregation: true,
        concurrency: 4,
        buffer_mib: 8,
        batch: 0,
        local_aws: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |n: &str| it.next().ok_or_else(|| format!("{n} needs a value"));
        let num = |v: String| v.parse::<u64>().map_err(|_| format!("{v:?}: not a number"));
        match arg.as_str() {
            "--scenario" => a.scenario = val(&arg)?,
            "--quick" => a.quick = true,
            "--records" => a.records = num(val(&arg)?)? as usize,
            "--seconds" => a.seconds = num(val(&arg)?)?,
            "--shards" => a.shards = num(val(&arg)?)? as i32,
            "--rate-limit" => a.rate_limit = Some(num(val(&arg)?)? as u32),
            "--no-aggregation" => a.aggregation = false,
            "--concurrency" => a.concurrency = num(val(&arg)?)? as usize,
            "--buffer-mib" => a.buffer_mib = num(val(&arg)?)? as usize,
            "--batch" => a.batch = num(val(&arg)?)? as usize,
            "--local-aws" => a.local_aws = Some(val(&arg)?.into()),
            "-h" | "--help" => {
                return Err("usage: bench_producer [--quick] [--scenario all|cpu|sdk|saturation|memory] \
                     [--records N] [--seconds S] [--shards N] [--rate-limit PCT] [--no-aggregation] \
                     [--concurrency N] [--buffer-mib N] [--batch N] [--local-aws PATH]"
                    .into());
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(a)
}

fn main() -> Result<(), BoxError> {
    let args = parse_args()?;
    if args.scenario == "all" {
        return run_all(&args);
    }
    metrics::set_global_recorder(&*RECORDER).map_err(|e| e.to_string())?;
    // `TOKIO_WORKER_THREADS` sizes the runtime (2 here by default: the cores); 1 keeps every
    // task on one thread, so no cache line moves between cores.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // The workload runs in a task, as in a service (not on the thread blocked in block_on,
    // whose every wake-up of a worker would be a futex call).
    rt.block_on(async {
        tokio::spawn(async move {
            match args.scenario.as_str() {
                "cpu" => cpu(&args).await,
                "sdk" => sdk(&args).await,
                "saturation" => saturation(&args).await,
                "memory" => memory(&args).await,
                other => Err(format!("unknown scenario {other:?}").into()),
            }
        })
        .await?
    })
}

/// Every scenario in a fresh process.
fn run_all(args: &Args) -> Result<(), BoxError> {
    let me = std::env::current_exe()?;
    let mut common: Vec<String> = Vec::new();
    if args.quick {
        common.push("--quick".into());
    }
    if let Some(p) = &args.local_aws {
        common.extend(["--local-aws".into(), p.display().to_string()]);
    }
    let runs: &[&[&str]] = &[
        &["--scenario", "cpu"],
        &["--scenario", "cpu", "--rate-limit", "100000"],
        &[
            "--scenario",
            "cpu",
            "--rate-limit",
            "100000",
            "--batch",
            "500",
        ],
        &["--scenario", "sdk"],
        &["--scenario", "saturation"],
        &["--scenario", "memory"],
    ];
    for run in runs {
        let status = Command::new(&me).args(*run).args(&common).status()?;
        if !status.success() {
            return Err(format!("{run:?} failed: {status}").into());
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Scenarios

async fn cpu(args: &Args) -> Result<(), BoxError> {
    let n = pick(args.records, args.quick, 5_000, 500_000);
    let shards = if args.shards > 0 { args.shards } else { 4 };
    let emu = Emulator::start(args, false).await?;
    let kinesis = emu.aws.kinesis_client();
    let stream = create_stream(&kinesis, "bench-cpu", shards).await?;
    // KINESIS_PRODUCER_* variables change other settings (to explore, not for the figures).
    let mut b = Producer::builder(kinesis.clone())
        .from_env()?
        .stream(&stream)
        .aggregation(args.aggregation);
    if let Some(r) = args.rate_limit {
        b = b.rate_limit(r);
    }
    let producer = b.build().await?;
    // One request to warm the connection pool and the allocator out of the measurement.
    producer.put(Record::new("warm-up", "x")).await?.await?;
    producer.flush().await;
    RECORDER.reset();

    let cpu0 = cpu_time();
    let cpu0_split = cpu_split();
    let switches0 = context_switches();
    let t0 = Instant::now();
    let mut checker = spawn_checker();
    if args.batch > 0 {
        let mut i = 0;
        while i < n {
            let end = (i + args.batch).min(n);
            let h = producer.put_batch((i..end).map(record)).await;
            checker.push(Handle::Batch(h))?;
            i = end;
        }
    } else {
        for i in 0..n {
            let h = producer.put(record(i)).await?;
            checker.push(Handle::One(h))?;
        }
    }
    producer.flush().await;
    let (ok, failed, _) = checker.finish().await;
    let wall = t0.elapsed();
    let cpu = cpu_time() - cpu0;
    let split = cpu_split();
    let switches = context_switches() - switches0;
    producer.close().await;

    let m = RECORDER.snapshot();
    println!(
        "scenario=cpu emulator={} shards={shards} records={n} aggregation={} api={} rate_limit={}",
        emu.kind(),
        args.aggregation,
        if args.batch > 0 {
            format!("put_batch({})", args.batch)
        } else {
            "put".into()
        },
        args.rate_limit
            .map_or("default(150)".into(), |r| r.to_string())
    );
    let mut json = Json::new("cpu");
    report_cpu(n, ok, failed, wall, cpu, &mut json);
    report_aggregation(&m, &mut json);
    println!(
        "  user/sys split: user_s={:.2} sys_s={:.2} minor_page_faults={:.0} context_switches={switches}",
        split.0 - cpu0_split.0,
        split.1 - cpu0_split.1,
        split.2 - cpu0_split.2,
    );
    json.print();
    if ok != n {
        return Err(format!("{failed} records failed").into());
    }
    Ok(())
}

async fn sdk(args: &Args) -> Result<(), BoxError> {
    use aws_sdk_kinesis::primitives::Blob;
    use aws_sdk_kinesis::types::PutRecordsRequestEntry;

    let n = pick(args.records, args.quick, 5_000, 500_000);
    let shards = if args.shards > 0 { args.shards } else { 4 };
    let emu = Emulator::start(args, false).await?;
    let kinesis = emu.aws.kinesis_client();
    let stream = create_stream(&kinesis, "bench-sdk", shards).await?;
    kinesis
        .put_records()
        .stream_name(&stream)
        .records(
            PutRecordsRequestEntry::builder()
                .partition_key("warm-up")
                .data(Blob::new("x"))
                .build()?,
        )
        .send()
        .await?;

    let next = Arc::new(AtomicU64::new(0));
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (kinesis, stream, next) = (kinesis.clone(), stream.clone(), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut stored = 0usize;
            loop {
                let start = next.fetch_add(500, Ordering::Relaxed) as usize;
                if start >= n {
                    return Ok::<_, BoxError>(stored);
                }
                let mut entries: Vec<PutRecordsRequestEntry> = (start..(start + 500).min(n))
                    .map(|i| {
                        let (key, data) = record(i).into_parts_simple();
                        PutRecordsRequestEntry::builder()
                            .partition_key(key)
                            .data(Blob::new(data.to_vec()))
                            .build()
                            .expect("key and data set")
                    })
                    .collect();
                // What any careful SDK user writes: resend the failed entries.
                while !entries.is_empty() {
                    let out = kinesis
                        .put_records()
                        .stream_name(&stream)
                        .set_records(Some(entries.clone()))
                        .send()
                        .await?;
                    let failed: Vec<_> = entries
                        .into_iter()
                        .zip(out.records())
                        .filter(|(_, r)| r.error_code().is_some())
                        .map(|(e, _)| e)
                        .collect();
                    stored += out.records().len() - failed.len();
                    entries = failed;
                }
            }
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += t.await??;
    }
    let wall = t0.elapsed();
    let cpu = cpu_time() - cpu0;
    println!(
        "scenario=sdk emulator={} shards={shards} records={n} concurrency={} batch=500 aggregation=false",
        emu.kind(),
        args.concurrency
    );
    let mut json = Json::new("sdk");
    report_cpu(n, ok, n - ok, wall, cpu, &mut json);
    json.print();
    Ok(())
}

async fn saturation(args: &Args) -> Result<(), BoxError> {
    let secs = pick(args.seconds as usize, args.quick, 3, 25) as u64;
    let shards = if args.shards > 0 { args.shards } else { 1 };
    let emu = Emulator::start(args, true).await?;
    let kinesis = emu.aws.kinesis_client();
    let stream = create_stream(&kinesis, "bench-sat", shards).await?;
    // KINESIS_PRODUCER_* variables change other settings (to explore, not for the figures).
    let mut b = Producer::builder(kinesis.clone())
        .from_env()?
        .stream(&stream)
        .aggregation(args.aggregation);
    if let Some(r) = args.rate_limit {
        b = b.rate_limit(r);
    }
    if args.quick {
        // A backlog of 100 000 records takes 12 s to drain: keep the quick run quick.
        b = b.max_buffered_records(10_000);
    }
    let producer = b.build().await?;
    RECORDER.reset();

    let mut checker = spawn_checker();
    let t0 = Instant::now();
    let mut n = 0;
    while t0.elapsed() < Duration::from_secs(secs) {
        let h = producer.put(record(n)).await?;
        checker.push(Handle::One(h))?;
        n += 1;
    }
    let put_phase = t0.elapsed();
    producer.close().await;
    let (ok, failed, throttled_requests) = checker.finish().await;
    let wall = t0.elapsed();
    let m = RECORDER.snapshot();

    // What the shard holds, and when each Kinesis record arrived.
    let stored = local_aws::testing::read_stream(&kinesis, &stream).await?;
    let mut per_second: HashMap<i64, (u64, u64)> = HashMap::new();
    let mut copies: HashMap<Bytes, u32> = HashMap::new();
    for (_, r) in &stored {
        let at = r
            .approximate_arrival_timestamp()
            .map_or(0, |t| t.to_millis().unwrap_or(0));
        let e = per_second.entry(at.div_euclid(1000)).or_default();
        e.0 += r.data().as_ref().len() as u64;
        let users = deaggregate(ReceivedRecord::new(
            r.sequence_number().to_owned(),
            r.partition_key().unwrap_or_default().to_owned(),
            Bytes::copy_from_slice(r.data().as_ref()),
        ));
        e.1 += users.len() as u64;
        for u in users {
            *copies.entry(u.data).or_insert(0) += 1;
        }
    }
    let mut seconds: Vec<_> = per_second.into_iter().collect();
    seconds.sort_unstable_by_key(|s| s.0);
    // Whole seconds only: the first and last are partial.
    let full = if seconds.len() > 2 {
        &seconds[1..seconds.len() - 1]
    } else {
        &seconds[..]
    };
    let bytes: Vec<f64> = full.iter().map(|s| s.1.0 as f64).collect();
    let users: Vec<f64> = full.iter().map(|s| s.1.1 as f64).collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let distinct = copies.len();
    let dups: u32 = copies.values().map(|c| c - 1).sum();
    let mib = 1024.0 * 1024.0;
    println!(
        "scenario=saturation emulator={} enforce_shard_limits=true shards={shards} put_phase_s={:.1} \
         rate_limit={} aggregation={}",
        emu.kind(),
        put_phase.as_secs_f64(),
        args.rate_limit
            .map_or("default(150)".into(), |r| r.to_string()),
        args.aggregation
    );
    println!(
        "  records put={n} ok={ok} failed={failed} in_stream_distinct={distinct} duplicates={dups} \
         wall_s={:.1}",
        wall.as_secs_f64()
    );
    println!(
        "  full seconds={}: data bytes/s per shard mean={:.0} ({:.1} % of 1 MiB/s) min={:.0} ({:.1} %); \
         user records/s per shard mean={:.0}; Kinesis records/s per shard mean={:.1}",
        full.len(),
        mean(&bytes) / shards as f64,
        100.0 * mean(&bytes) / shards as f64 / mib,
        min(&bytes) / shards as f64,
        100.0 * min(&bytes) / shards as f64 / mib,
        mean(&users) / shards as f64,
        stored.len() as f64 / wall.as_secs_f64() / shards as f64,
    );
    // Once the limiter has settled near the shard's capacity: from the 6th second on.
    let steady: Vec<f64> = full.iter().skip(5).map(|s| s.1.0 as f64).collect();
    if !steady.is_empty() {
        println!(
            "  steady state (full seconds 6..): data bytes/s per shard mean={:.0} ({:.1} % of 1 MiB/s)",
            mean(&steady) / shards as f64,
            100.0 * mean(&steady) / shards as f64 / mib,
        );
    }
    println!(
        "  KiB accepted per second: {:?}",
        seconds.iter().map(|s| s.1.0 / 1024).collect::<Vec<_>>()
    );
    let minutes = wall.as_secs_f64() / 60.0;
    println!(
        "  throttled: requests/min={:.1} entries/min={:.1} (requests with ≥ 1 throttled entry: {throttled_requests}; \
         throttled entries: {})",
        throttled_requests as f64 / minutes,
        m.get("ErrorsByCode{ProvisionedThroughputExceededException}") as f64 / minutes,
        m.get("ErrorsByCode{ProvisionedThroughputExceededException}"),
    );
    let mut json = Json::new("saturation");
    json.num("records", n as f64);
    json.num("ok", ok as f64);
    json.num("in_stream_distinct", distinct as f64);
    json.num("duplicates", f64::from(dups));
    json.num("saturation_pct", 100.0 * mean(&bytes) / shards as f64 / mib);
    if !steady.is_empty() {
        json.num("steady_pct", 100.0 * mean(&steady) / shards as f64 / mib);
    }
    json.num(
        "throttled_requests_per_min",
        throttled_requests as f64 / minutes,
    );
    report_aggregation(&m, &mut json);
    json.print();
    if ok != n || distinct != n {
        return Err(format!("loss: put {n}, ok {ok}, in the stream {distinct}").into());
    }
    Ok(())
}

async fn memory(args: &Args) -> Result<(), BoxError> {
    let secs = pick(args.seconds as usize, args.quick, 3, 20) as u64;
    let emu = Emulator::start(args, true).await?;
    let kinesis = emu.aws.kinesis_client();
    let stream = create_stream(&kinesis, "bench-mem", 1).await?;
    let bound = args.buffer_mib * 1024 * 1024;
    let producer = Producer::builder(kinesis.clone())
        .stream(&stream)
        .aggregation(args.aggregation)
        .max_buffered_bytes(bound)
        .max_buffered_records(100_000_000)
        .build()
        .await?;
    producer.put(Record::new("warm-up", "x")).await?.await?;
    let base = proc_status_kib("VmRSS");

    let mut checker = spawn_checker();
    let t0 = Instant::now();
    let mut n = 0;
    let mut max_rss = 0;
    let mut waits = 0u64;
    while t0.elapsed() < Duration::from_secs(secs) {
        let r = record(n);
        let h = match producer.try_put(r) {
            Ok(h) => h,
            Err(kinesis_producer::PutError::Full { record }) => {
                waits += 1;
                producer.put(record).await?
            }
            Err(e) => return Err(e.into()),
        };
        checker.push(Handle::One(h))?;
        n += 1;
        if n % 4096 == 0 {
            max_rss = max_rss.max(proc_status_kib("VmRSS"));
        }
    }
    let hwm = proc_status_kib("VmHWM");
    producer.close().await;
    let (ok, failed, _) = checker.finish().await;
    println!(
        "scenario=memory emulator={} enforce_shard_limits=true shards=1 overload_s={secs} \
         max_buffered_bytes={} MiB",
        emu.kind(),
        args.buffer_mib
    );
    println!(
        "  records put={n} ok={ok} failed(expired)={failed}; puts that had to wait for space={waits}"
    );
    println!(
        "  RSS before overload={:.1} MiB, max sampled RSS={:.1} MiB, VmHWM={:.1} MiB; \
         growth (HWM - before)={:.1} MiB = {:.2} × the buffer bound",
        base as f64 / 1024.0,
        max_rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        (hwm.saturating_sub(base)) as f64 / 1024.0,
        (hwm.saturating_sub(base)) as f64 * 1024.0 / bound as f64
    );
    let mut json = Json::new("memory");
    json.num("buffer_bound_bytes", bound as f64);
    json.num("rss_before_bytes", base as f64 * 1024.0);
    json.num("peak_rss_bytes", hwm as f64 * 1024.0);
    json.num("ok", ok as f64);
    json.num("expired", failed as f64);
    json.print();
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Helpers

fn pick(given: usize, quick: bool, q: usize, full: usize) -> usize {
    match (given, quick) {
        (0, true) => q,
        (0, false) => full,
        (g, _) => g,
    }
}

/// Record `i`: a 16-byte key, 100 bytes of data that start with `i` (so the stream can be
/// checked for loss and duplicates). The key is the number in hex, written by hand: `format!`
/// would cost more than some of the producer stages being measured.
fn record(i: usize) -> Record {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut key = [0u8; KEY_SIZE];
    for (k, b) in key.iter_mut().enumerate() {
        *b = HEX[(i >> (4 * (KEY_SIZE - 1 - k))) & 0xf];
    }
    let key = String::from_utf8(key.to_vec()).expect("hex digits");
    let mut data = [b'.'; DATA_SIZE];
    data[..8].copy_from_slice(&(i as u64).to_be_bytes());
    Record::new(key, Bytes::copy_from_slice(&data))
}

trait SimpleParts {
    fn into_parts_simple(self) -> (String, Bytes);
}

impl SimpleParts for Record {
    fn into_parts_simple(self) -> (String, Bytes) {
        let (k, _, d) = self.into_parts();
        (k, d)
    }
}

fn report_cpu(n: usize, ok: usize, failed: usize, wall: Duration, cpu: Duration, json: &mut Json) {
    json.num("records", n as f64);
    json.num("ok", ok as f64);
    json.num("failed", failed as f64);
    json.num("wall_s", wall.as_secs_f64());
    json.num("cpu_s", cpu.as_secs_f64());
    json.num("records_per_s", ok as f64 / wall.as_secs_f64());
    json.num("cpu_us_per_record", cpu.as_secs_f64() * 1e6 / n as f64);
    println!(
        "  delivered ok={ok} failed={failed} wall_s={:.2} records/s={:.0} cpu_s={:.2} \
         cpu_per_record_us={:.3} cores_busy={:.2}",
        wall.as_secs_f64(),
        ok as f64 / wall.as_secs_f64(),
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / n as f64,
        cpu.as_secs_f64() / wall.as_secs_f64(),
    );
}

fn report_aggregation(m: &Snapshot, json: &mut Json) {
    let users = m.get("UserRecordsPut") as f64;
    let kinesis = m.get("KinesisRecordsPut") as f64;
    let calls = m.get("RequestTime#count") as f64;
    json.num("user_records_per_kinesis_record", users / kinesis.max(1.0));
    json.num("user_records_per_call", users / calls.max(1.0));
    json.num(
        "bytes_per_kinesis_record",
        m.get("KinesisRecordsDataPut") as f64 / kinesis.max(1.0),
    );
    println!(
        "  aggregation: user records={users} Kinesis records={kinesis} PutRecords calls={calls} \
         user/Kinesis={:.1} user/call={:.1} Kinesis/call={:.1} bytes/Kinesis record={:.0}",
        users / kinesis.max(1.0),
        users / calls.max(1.0),
        kinesis / calls.max(1.0),
        m.get("KinesisRecordsDataPut") as f64 / kinesis.max(1.0)
    );
}

/// The figures `cargo xtask bench` reads (`xtask/src/bench/producer.rs`): one
/// `BENCH_JSON {...}` line per scenario, after the human-readable ones.
struct Json(Vec<(&'static str, String)>);

impl Json {
    fn new(scenario: &str) -> Json {
        Json(vec![("scenario", format!("\"{scenario}\""))])
    }

    fn num(&mut self, key: &'static str, value: f64) {
        // JSON has no NaN nor infinity: such a figure is left out.
        if value.is_finite() {
            self.0.push((key, format!("{value}")));
        }
    }

    fn print(&self) {
        let fields: Vec<String> = self.0.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        println!("BENCH_JSON {{{}}}", fields.join(","));
    }
}

enum Handle {
    One(PutHandle),
    Batch(PutBatchHandle),
}

/// Hands handles to the checker task in chunks: one channel send (and one wake-up of the
/// checker) per chunk rather than per record, so that the driver's own cost stays small.
struct Checker {
    tx: tokio::sync::mpsc::UnboundedSender<Vec<Handle>>,
    buf: Vec<Handle>,
    task: tokio::task::JoinHandle<(usize, usize, usize)>,
}

const CHECKER_CHUNK: usize = 1024;

/// Awaits every handle as it comes: counts Ok and failures, and the distinct requests that
/// had a throttled entry (entries of one request share its start instant).
fn spawn_checker() -> Checker {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<Handle>>();
    let task = tokio::spawn(async move {
        let (mut ok, mut failed) = (0, 0);
        let mut throttled = std::collections::HashSet::new();
        let mut count =
            |r: Result<kinesis_producer::PutOutcome, kinesis_producer::PutFailure>| match r {
                Ok(o) => {
                    ok += 1;
                    count_throttled(o.attempts(), &mut throttled);
                }
                Err(e) => {
                    if failed == 0 {
                        eprintln!("first failure: {e}");
                    }
                    failed += 1;
                }
            };
        while let Some(chunk) = rx.recv().await {
            for h in chunk {
                match h {
                    Handle::One(h) => count(h.await),
                    Handle::Batch(h) => h.await.into_iter().for_each(&mut count),
                }
            }
        }
        (ok, failed, throttled.len())
    });
    Checker {
        tx,
        buf: Vec::with_capacity(CHECKER_CHUNK),
        task,
    }
}

fn count_throttled(
    attempts: &[kinesis_producer::Attempt],
    throttled: &mut std::collections::HashSet<std::time::Instant>,
) {
    for a in attempts {
        if a.error()
            .is_some_and(|e| e.code() == "ProvisionedThroughputExceededException")
        {
            throttled.insert(a.started());
        }
    }
}

impl Checker {
    fn push(&mut self, h: Handle) -> Result<(), BoxError> {
        self.buf.push(h);
        if self.buf.len() >= CHECKER_CHUNK {
            let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHECKER_CHUNK));
            self.tx.send(chunk).map_err(|_| "checker gone")?;
        }
        Ok(())
    }

    async fn finish(self) -> (usize, usize, usize) {
        if !self.buf.is_empty() {
            let _ = self.tx.send(self.buf);
        }
        drop(self.tx);
        self.task.await.expect("checker panicked")
    }
}

async fn create_stream(
    kinesis: &aws_sdk_kinesis::Client,
    prefix: &str,
    shards: i32,
) -> Result<String, BoxError> {
    let name = local_aws::testing::unique_name(prefix);
    local_aws::testing::create_stream(kinesis, &name, shards).await?;
    Ok(name)
}

/// User + system CPU time of this process, all threads: `/proc/self/stat` fields 14 and 15,
/// in clock ticks.
fn cpu_time() -> Duration {
    static TICK: OnceLock<f64> = OnceLock::new();
    let tick = *TICK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .unwrap_or(100.0)
    });
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name may hold spaces: count fields after its closing parenthesis.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_secs_f64(ticks as f64 / tick)
}

/// Context switches of this process, all threads (voluntary: a thread parked, waiting for
/// work; each costs two or more syscalls and a cold cache).
fn context_switches() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .map(|t| {
            std::fs::read_to_string(t.path().join("status"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| {
                    l.strip_prefix("voluntary_ctxt_switches:")
                        .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
                })
                .filter_map(|v| v.trim().parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

/// (user, system) CPU seconds and minor page faults of this process.
fn cpu_split() -> (f64, f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    let tick = 100.0;
    (
        f.get(11).copied().unwrap_or(0.0) / tick,
        f.get(12).copied().unwrap_or(0.0) / tick,
        f.get(7).copied().unwrap_or(0.0),
    )
}

fn proc_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The local Kinesis for one scenario: a `local-aws` child process, or in process.
struct Emulator {
    aws: LocalAws,
    child: Option<Child>,
}

impl Emulator {
    async fn start(args: &Args, enforce: bool) -> Result<Emulator, BoxError> {
        let bin = args.local_aws.clone().or_else(|| {
            let me = std::env::current_exe().ok()?;
            // target/<profile>/examples/bench_producer → target/<profile>/local-aws
            let p = me.parent()?.parent()?.join("local-aws");
            p.exists().then_some(p)
        });
        let Some(bin) = bin else {
            eprintln!(
                "WARNING: no local-aws binary (build it: cargo build [--release] -p local-aws); \
                 the emulator runs IN PROCESS and its CPU is counted"
            );
            let aws = LocalAws::builder()
                .ignore_env()
                .enforce_shard_limits(enforce)
                .start()
                .await?;
            return Ok(Emulator { aws, child: None });
        };
        let mut cmd = Command::new(&bin);
        if enforce {
            cmd.arg("--enforce-shard-limits");
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let stdout = child.stdout.take().expect("piped");
        let mut vars = HashMap::new();
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            if let Some((k, v)) = line.strip_prefix("export ").and_then(|l| l.split_once('=')) {
                vars.insert(k.to_owned(), v.to_owned());
            }
            if line.starts_with("export AWS_ENDPOINT_URL_S3=") {
                break;
            }
        }
        let var = |k: &str| {
            vars.get(k)
                .cloned()
                .ok_or_else(|| format!("local-aws did not print {k}"))
        };
        let aws = LocalAws::connect(
            Endpoints {
                kinesis: var("LOCAL_AWS_KINESIS_ENDPOINT")?,
                dynamodb: var("LOCAL_AWS_DYNAMODB_ENDPOINT")?,
                s3: var("LOCAL_AWS_S3_ENDPOINT")?,
            },
            var("LOCAL_AWS_ACCESS_KEY_ID")?,
            var("LOCAL_AWS_SECRET_ACCESS_KEY")?,
        );
        Ok(Emulator {
            aws,
            child: Some(child),
        })
    }

    fn kind(&self) -> &'static str {
        if self.child.is_some() {
            "local-aws-process"
        } else {
            "in-process(CPU-included)"
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM: the binary stops cleanly on it (std's kill() would be SIGKILL).
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------
// A minimal `metrics` recorder: counters and histogram counts, by name and label values.

#[derive(Default)]
struct Rec {
    values: Mutex<HashMap<String, Arc<Cell>>>,
}

#[derive(Default)]
struct Cell {
    n: AtomicU64,
    count: AtomicU64,
}

static RECORDER: std::sync::LazyLock<Rec> = std::sync::LazyLock::new(Rec::default);

struct Snapshot(HashMap<String, u64>);

impl Snapshot {
    fn get(&self, k: &str) -> u64 {
        self.0.get(k).copied().unwrap_or(0)
    }
}

impl Rec {
    fn cell(&self, key: &metrics::Key) -> Arc<Cell> {
        let labels: Vec<String> = key
            .labels()
            .filter(|l| l.key() != "StreamName")
            .map(|l| l.value().to_owned())
            .collect();
        let name = if labels.is_empty() {
            key.name().to_owned()
        } else {
            format!("{}{{{}}}", key.name(), labels.join(","))
        };
        Arc::clone(self.values.lock().unwrap().entry(name).or_default())
    }

    fn reset(&self) {
        for c in self.values.lock().unwrap().values() {
            c.n.store(0, Ordering::Relaxed);
            c.count.store(0, Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> Snapshot {
        let mut out = HashMap::new();
        for (k, c) in self.values.lock().unwrap().iter() {
            out.insert(k.clone(), c.n.load(Ordering::Relaxed));
            out.insert(format!("{k}#count"), c.count.load(Ordering::Relaxed));
        }
        Snapshot(out)
    }
}

impl metrics::CounterFn for Cell {
    fn increment(&self, v: u64) {
        self.n.fetch_add(v, Ordering::Relaxed);
    }
    fn absolute(&self, v: u64) {
        self.n.store(v, Ordering::Relaxed);
    }
}

impl metrics::HistogramFn for Cell {
    fn record(&self, _: f64) {
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

impl metrics::Recorder for Rec {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::from_arc(self.cell(key))
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(
        &self,
        key: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::from_arc(self.cell(key))
    }
}
