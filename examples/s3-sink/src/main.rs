//! `s3-sink`: a kinesis-consumer worker writing a stream to S3 (see the library docs for the
//! object layout and the durability contract, and the README for every setting).
//!
//! ```text
//!  start ─► logs (LOG_FORMAT, RUST_LOG) ─► metrics recorder (METRICS, METRICS_LEVEL,
//!          METRICS_GRANULARITY) ─► GET /health + /metrics on HEALTH_ADDR ─► check the bucket
//!          ─► Worker::run (its handle attached to /health)
//!  SIGTERM / Ctrl-C ─► WorkerHandle::shutdown: every shard writes its buffer, checkpoints,
//!                      releases its lease ─► last EMF interval flushed ─► exit 0
//!                      └─ not done within SHUTDOWN_TIMEOUT ─► exit 1 (leases expire instead)
//!  s3-sink healthcheck [--url] ─► GET /health ─► exit 0 (200) or 1
//! ```
//!
//! Every flag can be set by an environment variable (ECS-friendly). Endpoints come from the
//! SDK's own variables (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL_KINESIS`,
//! `AWS_ENDPOINT_URL_DYNAMODB`), credentials from the default chain (environment, profile,
//! web identity, ECS task role).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_smithy_http_client::tls;
use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};
use kinesis_consumer::{InitialPosition, Worker};
use kinesis_metrics::emf::{EmfHandle, EmfRecorder};
use kinesis_metrics::logging::{LogConfig, LogFormat};
use kinesis_metrics::{MetricsFilter, MetricsGranularity, MetricsLevel};
use s3_sink::health::{self, HealthState, MetricsPage};
use s3_sink::{Compression, Format, SinkConfig};
use tokio::net::TcpListener;

const DEFAULT_HEALTH_ADDR: &str = "0.0.0.0:8081";

/// `s3-sink healthcheck`: parsed on its own, so that it needs none of the worker's settings.
#[derive(Debug, Parser)]
#[command(name = "s3-sink")]
struct HealthcheckCli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands (the worker itself is the command without one).
#[derive(Debug, Subcommand)]
enum Command {
    /// Asks a running sink's health endpoint; exits 0 when healthy, 1 otherwise (for
    /// container health checks in an image without curl).
    Healthcheck(HealthcheckArgs),
}

#[derive(Debug, ClapArgs)]
struct HealthcheckArgs {
    /// The endpoint (default: `http://127.0.0.1:<port of HEALTH_ADDR>/health`).
    #[arg(long)]
    url: Option<String>,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3.0)]
    timeout: f64,
}

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Writes a Kinesis stream to S3 with effectively-once object contents",
    after_help = "Subcommand: `s3-sink healthcheck [--url URL]` asks a running sink's \
                  health endpoint (exit 0 when healthy)."
)]
struct Args {
    /// The Kinesis stream.
    #[arg(long, env = "STREAM")]
    stream: String,
    /// The application name: also the DynamoDB lease table's name.
    #[arg(long, env = "APPLICATION_NAME")]
    application_name: String,
    /// The destination bucket (must exist).
    #[arg(long, env = "BUCKET")]
    bucket: String,
    /// The key prefix.
    #[arg(long, env = "PREFIX", default_value = "")]
    prefix: String,
    /// Cut an object at this many bytes (encoded, before compression).
    #[arg(long, env = "MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    max_bytes: usize,
    /// Cut an object at this many records.
    #[arg(long, env = "MAX_RECORDS", default_value_t = 100_000)]
    max_records: usize,
    /// Cut an object before a record that arrived this many seconds after its first; write a
    /// quiet shard's object this long (plus AGE_GRACE) after its first record arrived.
    #[arg(long, env = "MAX_AGE", default_value_t = 60.0)]
    max_age: f64,
    /// Seconds after the age deadline before a quiet shard's object is written.
    #[arg(long, env = "AGE_GRACE", default_value_t = 5.0)]
    age_grace: f64,
    /// Object format.
    #[arg(long, env = "FORMAT", value_enum, default_value_t = FormatArg::Ndjson)]
    format: FormatArg,
    /// Object compression.
    #[arg(long, env = "COMPRESSION", value_enum, default_value_t = CompressionArg::None)]
    compression: CompressionArg,
    /// Objects larger than this many bytes are uploaded in parts of this size (5 MiB to 5 GiB).
    #[arg(long, env = "PART_SIZE", default_value_t = 16 * 1024 * 1024)]
    part_size: usize,
    /// Where a shard without a checkpoint starts.
    #[arg(long, env = "INITIAL_POSITION", value_enum, default_value_t = Start::TrimHorizon)]
    initial_position: Start,
    /// The AWS region (default: the SDK's region chain, e.g. `AWS_REGION`).
    #[arg(long, env = "REGION")]
    region: Option<String>,
    /// Path-style S3 addressing (needed by most S3 emulators, including local-aws).
    #[arg(long, env = "S3_FORCE_PATH_STYLE")]
    s3_force_path_style: bool,
    /// This worker's id in the lease table (default: host, pid and a random suffix).
    #[arg(long, env = "WORKER_ID")]
    worker_id: Option<String>,
    /// Seconds without renewal before another worker takes a lease.
    #[arg(long, env = "FAILOVER_TIME", default_value_t = 10.0)]
    failover_time: f64,
    /// Seconds a graceful shutdown may take before the process exits anyway (keep it under
    /// the container's stop timeout: 30 s by default on ECS).
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value_t = 25.0)]
    shutdown_timeout: f64,
    /// Address of the health and metrics endpoint (`GET /health`, `GET /metrics`), or `off`.
    #[arg(long, env = "HEALTH_ADDR", default_value = DEFAULT_HEALTH_ADDR)]
    health_addr: String,
    /// Log format: `text` or `json` (one object per line).
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    /// Log filter directives (`info`, `info,s3_sink=debug`...).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log_filter: String,
    /// Where metrics go: Prometheus text on `GET /metrics` (at HEALTH_ADDR), CloudWatch EMF
    /// lines on stdout, or nowhere.
    #[arg(long, env = "METRICS", value_enum, default_value_t = MetricsArg::Prometheus)]
    metrics: MetricsArg,
    /// Which metrics: `none`, `summary` or `detailed`.
    #[arg(long, env = "METRICS_LEVEL", default_value = "detailed")]
    metrics_level: MetricsLevel,
    /// Finest labels kept: `global`, `stream` or `shard`.
    #[arg(long, env = "METRICS_GRANULARITY", default_value = "shard")]
    metrics_granularity: MetricsGranularity,
    /// CloudWatch namespace of the EMF metrics.
    #[arg(long, env = "METRICS_NAMESPACE", default_value = "KinesisRs")]
    metrics_namespace: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormatArg {
    Ndjson,
    LengthPrefixed,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum CompressionArg {
    None,
    Gzip,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Start {
    TrimHorizon,
    Latest,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum MetricsArg {
    Prometheus,
    Emf,
    None,
}

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        let Command::Healthcheck(check) = HealthcheckCli::parse().command;
        return healthcheck(check.url, check.timeout).await;
    }
    let args = Args::parse();
    let logs = LogConfig::default()
        .format(args.log_format)
        .filter(&args.log_filter)
        .init();
    if let Err(e) = logs {
        eprintln!("s3-sink: {e}");
        return ExitCode::FAILURE;
    }
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn seconds(name: &str, value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value).map_err(|e| format!("{name} {value}: {e}"))
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let max_age = seconds("MAX_AGE", args.max_age)?;
    let age_grace = seconds("AGE_GRACE", args.age_grace)?;
    let failover_time = seconds("FAILOVER_TIME", args.failover_time)?;
    let shutdown_timeout = seconds("SHUTDOWN_TIMEOUT", args.shutdown_timeout)?;
    if args.part_size < 5 * 1024 * 1024 {
        return Err(format!(
            "PART_SIZE {} is below S3's minimum part size (5 MiB = 5242880)",
            args.part_size
        )
        .into());
    }
    // Before the worker: metrics emitted before a recorder exists are lost.
    let (metrics_page, emf) = install_metrics(&args)?;
    if matches!(metrics_page, MetricsPage::Prometheus(_))
        && args.health_addr.eq_ignore_ascii_case("off")
    {
        tracing::warn!("METRICS=prometheus with HEALTH_ADDR=off: metrics are recorded, not served");
    }
    let health = HealthState::default();
    let health_server = start_health(&args.health_addr, health.clone(), metrics_page).await?;

    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
    if let Some(region) = args.region {
        loader = loader.region(Region::new(region));
    }
    let sdk = loader.load().await;
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(args.s3_force_path_style)
            .build(),
    );
    let kinesis = aws_sdk_kinesis::Client::new(&sdk);
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);

    let sink = SinkConfig::new(s3, &args.bucket, &args.stream)
        .prefix(args.prefix)
        .format(match args.format {
            FormatArg::Ndjson => Format::Ndjson,
            FormatArg::LengthPrefixed => Format::LengthPrefixed,
        })
        .compression(match args.compression {
            CompressionArg::None => Compression::None,
            CompressionArg::Gzip => Compression::Gzip,
        })
        .max_bytes(args.max_bytes)
        .max_records(args.max_records)
        .max_age(max_age)
        .age_grace(age_grace)
        .part_size(args.part_size);
    // A missing bucket is a configuration error: fail now, not at the first object.
    sink.check_bucket().await?;

    let mut builder = Worker::builder(
        &args.application_name,
        &args.stream,
        kinesis,
        dynamodb,
        sink.factory(),
    )
    .initial_position(match args.initial_position {
        Start::TrimHorizon => InitialPosition::TrimHorizon,
        Start::Latest => InitialPosition::Latest,
    })
    .failover_time(failover_time)
    // Empty reads reach the sink, so that quiet shards are written by age.
    .call_processor_on_empty_batches(true);
    if let Some(id) = args.worker_id {
        builder = builder.worker_id(id);
    }
    let worker = builder.build();
    let handle = worker.handle();
    tracing::info!(
        stream = %args.stream,
        bucket = %args.bucket,
        worker = worker.worker_id(),
        "s3-sink running"
    );
    health.attach(worker.handle());
    let mut task = tokio::spawn(worker.run());

    let result = tokio::select! {
        ended = &mut task => ended,
        () = shutdown_signal() => {
            tracing::info!(timeout = ?shutdown_timeout, "shutting down: writing buffers, checkpointing, releasing leases");
            if tokio::time::timeout(shutdown_timeout, handle.shutdown()).await.is_err() {
                flush_metrics(emf.as_ref());
                // Buffers not written are not checkpointed either: the leases expire and
                // the next owners replay them.
                return Err(format!(
                    "graceful shutdown did not finish within {shutdown_timeout:?}; exiting (unreleased leases expire after the failover time)"
                )
                .into());
            }
            task.await
        }
    };
    // The shutdown's writes and checkpoints are in the last EMF interval.
    flush_metrics(emf.as_ref());
    if let Some((stop, server)) = health_server {
        let _ = stop.send(());
        let _ = server.await;
    }
    result??;
    tracing::info!("s3-sink stopped");
    Ok(())
}

type HealthServer = (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
);

/// Installs the global metrics recorder `METRICS` asks for, behind the level and granularity:
/// what `/metrics` serves, and the EMF handle to flush at exit.
fn install_metrics(
    args: &Args,
) -> Result<(MetricsPage, Option<EmfHandle>), Box<dyn std::error::Error>> {
    let filter = MetricsFilter::new()
        .level(args.metrics_level)
        .granularity(args.metrics_granularity);
    Ok(match args.metrics {
        MetricsArg::Prometheus => (
            MetricsPage::Prometheus(kinesis_metrics::prometheus::install(&filter)?),
            None,
        ),
        MetricsArg::Emf => {
            let emf = EmfRecorder::builder()
                .namespace(&args.metrics_namespace)
                .install(&filter)?;
            (MetricsPage::Emf, Some(emf))
        }
        MetricsArg::None => (MetricsPage::Off, None),
    })
}

fn flush_metrics(emf: Option<&EmfHandle>) {
    if let Some(Err(e)) = emf.map(EmfHandle::flush) {
        tracing::warn!(error = %e, "writing the last metrics failed");
    }
}

/// Starts the health and metrics endpoint, unless `addr` is `off`. A port that cannot be
/// bound is logged, not fatal: the worker's job does not depend on it (and a container
/// health check then fails visibly).
async fn start_health(
    addr: &str,
    state: HealthState,
    metrics: MetricsPage,
) -> Result<Option<HealthServer>, Box<dyn std::error::Error>> {
    if addr.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| format!("HEALTH_ADDR {addr:?}: {e}"))?;
    let listener = match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(%addr, error = %e, "cannot serve the health endpoint; running without it");
            return Ok(None);
        }
    };
    tracing::info!(addr = %listener.local_addr()?, "health endpoint: GET /health, GET /metrics");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(health::serve(listener, state, metrics, async {
        let _ = stopped.await;
    }));
    Ok(Some((stop, server)))
}

async fn healthcheck(url: Option<String>, timeout: f64) -> ExitCode {
    let url = url.unwrap_or_else(|| {
        let addr = std::env::var("HEALTH_ADDR").unwrap_or_else(|_| DEFAULT_HEALTH_ADDR.into());
        let port = addr.parse::<SocketAddr>().map(|a| a.port()).unwrap_or(8081);
        format!("http://127.0.0.1:{port}/health")
    });
    let timeout = Duration::try_from_secs_f64(timeout).unwrap_or(Duration::from_secs(3));
    match health::check(&url, timeout).await {
        Ok((status, body)) => {
            println!("{status} {}", body.trim());
            if status == 200 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("healthcheck {url}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// SIGTERM (ECS stopping the task) or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM ({e}); Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
