//! `producer-service`: HTTP in, Kinesis out (see the library docs for the API and the data
//! flow, README.md for running it).
//!
//! Every flag can be set by an environment variable (ECS-friendly); every producer setting
//! comes from the producer's own `KINESIS_PRODUCER_*` variables. Endpoints come from the
//! SDK's variables (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_KINESIS`), credentials from the
//! default chain (environment, profile, web identity, ECS task role).
//!
//! SIGTERM or Ctrl-C: `/health` turns 503, the listener closes, open requests finish, the
//! producer sends everything it holds; the process exits 0 once every accepted record has
//! its outcome, or 1 if `DRAIN_TIMEOUT` passed first (keep it below the ECS stop timeout,
//! 30 s by default).
//!
//! Metrics (`METRICS`): Prometheus text on `GET /metrics` (default), CloudWatch EMF lines on
//! stdout (`emf`, flushed once more at exit), or `none`; `METRICS_LEVEL` and
//! `METRICS_GRANULARITY` as the KPL's. Logs: `LOG_FORMAT` text or json, `RUST_LOG`.
//!
//! `producer-service healthcheck` checks a running service (exit 0 on a 2xx `/health`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_smithy_http_client::tls;
use clap::{Args, Parser, Subcommand, ValueEnum};
use kinesis_metrics::logging::{LogConfig, LogFormat};
use kinesis_metrics::{MetricsFilter, MetricsGranularity, MetricsLevel};
use kinesis_producer::Producer;
use producer_service::{App, Export, Metrics, healthcheck};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "An HTTP ingest service: POST /events puts JSON events on a Kinesis stream",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Exit 0 if the service answers its health check with 2xx, 1 otherwise (for container
    /// health checks in an image without curl).
    Healthcheck(HealthcheckArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// The Kinesis stream, by name or ARN (default: `KINESIS_PRODUCER_STREAM`).
    #[arg(long, env = "STREAM")]
    stream: Option<String>,
    /// Where to listen.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8080")]
    listen_addr: SocketAddr,
    /// The AWS region (default: the SDK's region chain, e.g. `AWS_REGION`).
    #[arg(long, env = "REGION")]
    region: Option<String>,
    /// Largest request body in bytes; larger ones get 413.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = producer_service::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// Seconds from SIGTERM until the process exits, drained or not.
    #[arg(long, env = "DRAIN_TIMEOUT", default_value_t = 25.0)]
    drain_timeout: f64,
    /// Seconds given in `Retry-After` with 429 and 503 answers.
    #[arg(long, env = "RETRY_AFTER", default_value_t = 1)]
    retry_after: u64,
    /// Log format: `text` or `json` (one object per line).
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    /// Log filter directives (`info`, `warn,kinesis_producer=debug`...).
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    log_filter: String,
    /// Where metrics go: Prometheus text on `GET /metrics`, CloudWatch EMF lines on stdout,
    /// or nowhere.
    #[arg(long, env = "METRICS", value_enum, default_value_t = MetricsArg::Prometheus)]
    metrics: MetricsArg,
    /// Which metrics: `none`, `summary` or `detailed`.
    #[arg(long, env = "METRICS_LEVEL", default_value = "detailed")]
    metrics_level: MetricsLevel,
    /// Finest labels kept: `global`, `stream` or `shard`.
    #[arg(long, env = "METRICS_GRANULARITY", default_value = "shard")]
    metrics_granularity: MetricsGranularity,
    /// CloudWatch namespace of the EMF metrics.
    #[arg(long, env = "METRICS_NAMESPACE", default_value = producer_service::metrics::DEFAULT_NAMESPACE)]
    metrics_namespace: String,
}

#[derive(Debug, Args)]
struct HealthcheckArgs {
    /// The URL to check (default: `/health` on loopback at `LISTEN_ADDR`'s port).
    #[arg(long, env = "HEALTHCHECK_URL")]
    url: Option<String>,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 3.0)]
    timeout: f64,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum MetricsArg {
    Prometheus,
    Emf,
    None,
}

fn seconds(name: &str, value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value).map_err(|e| format!("{name} {value}: {e}"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Healthcheck(args)) => healthcheck(args, cli.serve.listen_addr).await,
        None => {
            let logs = LogConfig::default()
                .format(cli.serve.log_format)
                .filter(&cli.serve.log_filter)
                .init();
            if let Err(e) = logs {
                eprintln!("producer-service: {e}");
                return ExitCode::FAILURE;
            }
            match run(cli.serve).await {
                Ok(code) => code,
                Err(e) => {
                    tracing::error!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn healthcheck(args: HealthcheckArgs, listen: SocketAddr) -> ExitCode {
    let url = args.url.unwrap_or_else(|| healthcheck::default_url(listen));
    let timeout = match seconds("--timeout", args.timeout) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("healthcheck: {e}");
            return ExitCode::FAILURE;
        }
    };
    match healthcheck::check(&url, timeout).await {
        Ok(status) if (200..300).contains(&status) => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("{url}: health check answered {status}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{url}: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: ServeArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let drain_timeout = seconds("DRAIN_TIMEOUT", args.drain_timeout)?;
    // First: metrics the producer emits before a recorder exists are lost.
    let export = match args.metrics {
        MetricsArg::Prometheus => Export::Prometheus,
        MetricsArg::Emf => Export::Emf {
            namespace: args.metrics_namespace.clone(),
        },
        MetricsArg::None => Export::None,
    };
    let filter = MetricsFilter::new()
        .level(args.metrics_level)
        .granularity(args.metrics_granularity);
    let metrics = Metrics::install(export, &filter)?;

    // One explicit HTTPS client (rustls + ring), as every tool here: the SDK's default
    // features would build a second, legacy TLS stack.
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
    let kinesis = aws_sdk_kinesis::Client::new(&sdk);

    // KINESIS_PRODUCER_* first; STREAM, when given, overrides KINESIS_PRODUCER_STREAM.
    let mut builder = Producer::builder(kinesis).from_env()?;
    if let Some(stream) = &args.stream {
        builder = builder.stream(stream);
    }
    let producer = builder.build().await?;

    let app = App::builder(producer)
        .max_body_bytes(args.max_body_bytes)
        .retry_after(Duration::from_secs(args.retry_after))
        .metrics(metrics.clone())
        .build();
    let listener = tokio::net::TcpListener::bind(args.listen_addr)
        .await
        .map_err(|e| format!("binding {}: {e}", args.listen_addr))?;
    let shutdown = shutdown_signal();
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");

    let summary = producer_service::serve(listener, app, shutdown, drain_timeout).await?;
    // The drain's deliveries are in the last EMF interval: write it before exiting.
    if let Err(e) = metrics.flush() {
        tracing::warn!(error = %e, "writing the last metrics failed");
    }
    let s = summary.stats;
    tracing::info!(
        accepted = s.accepted,
        delivered = s.delivered,
        failed = s.failed,
        refused = s.refused,
        unfinished = s.unfinished(),
        drain_ms = summary.drain_time.as_millis() as u64,
        "stopped"
    );
    if summary.complete {
        Ok(ExitCode::SUCCESS)
    } else {
        tracing::error!(
            unfinished = s.unfinished(),
            "DRAIN_TIMEOUT passed: unfinished records may or may not be in the stream"
        );
        Ok(ExitCode::FAILURE)
    }
}

/// SIGTERM (ECS stopping the task) or Ctrl-C. The SIGTERM handler is installed at once (not
/// when the future is first polled), so a SIGTERM right after "listening" is not fatal.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    async move {
        #[cfg(unix)]
        match term {
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
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutdown signal: draining");
    }
}
