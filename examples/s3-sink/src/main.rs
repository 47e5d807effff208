//! `s3-sink`: a kinesis-consumer worker writing a stream to S3 (see the library docs for the
//! object layout and the durability contract).
//!
//! Every flag can be set by an environment variable (ECS-friendly). Endpoints come from the
//! SDK's own variables (`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL_KINESIS`,
//! `AWS_ENDPOINT_URL_DYNAMODB`), credentials from the default chain (environment, profile,
//! web identity, ECS task role). SIGTERM or Ctrl-C: every shard writes what it buffered,
//! checkpoints and releases its lease; keep the ECS stop timeout above one `PutObject` of
//! `MAX_BYTES` plus a checkpoint.

use std::process::ExitCode;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_smithy_http_client::tls;
use clap::{Parser, ValueEnum};
use kinesis_consumer::{InitialPosition, Worker};
use s3_sink::{Format, SinkConfig};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Writes a Kinesis stream to S3 with effectively-once object contents"
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
    /// Cut an object at this many bytes.
    #[arg(long, env = "MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    max_bytes: usize,
    /// Cut an object at this many records.
    #[arg(long, env = "MAX_RECORDS", default_value_t = 100_000)]
    max_records: usize,
    /// Cut an object when its oldest record is this many seconds old (checked per batch).
    #[arg(long, env = "MAX_AGE", default_value_t = 60.0)]
    max_age: f64,
    /// Object format.
    #[arg(long, env = "FORMAT", value_enum, default_value_t = FormatArg::Ndjson)]
    format: FormatArg,
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
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormatArg {
    Ndjson,
    LengthPrefixed,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Start {
    TrimHorizon,
    Latest,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let max_age = Duration::try_from_secs_f64(args.max_age)
        .map_err(|e| format!("MAX_AGE {}: {e}", args.max_age))?;
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
        .max_bytes(args.max_bytes)
        .max_records(args.max_records)
        .max_age(max_age);
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
    });
    if let Some(id) = args.worker_id {
        builder = builder.worker_id(id);
    }
    let worker = builder.build();
    let handle = worker.handle();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: writing buffers, checkpointing, releasing leases");
        handle.shutdown().await;
    });
    tracing::info!(stream = %args.stream, bucket = %args.bucket, "s3-sink running");
    worker.run().await?;
    Ok(())
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
