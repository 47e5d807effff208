//! `local-aws`: run the local stack in the foreground and print its endpoints as `export` lines.
//!
//! ```text
//! $ local-aws --kinesis-port 4567 --persist ./state
//! export LOCAL_AWS_KINESIS_ENDPOINT=http://127.0.0.1:4567
//! ...
//! ```
//!
//! The lines go to stdout and everything else to stderr, so `local-aws > env.sh &` followed by
//! `. env.sh` works in scripts.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "\
Usage: local-aws [OPTIONS]

Runs Kinesis, DynamoDB and S3 on loopback until interrupted (Ctrl-C or SIGTERM),
and prints their endpoints as shell `export` lines on stdout.

Options:
  --kinesis-port PORT      Kinesis port (default: ephemeral)
  --dynamodb-port PORT     DynamoDB port (default: ephemeral)
  --s3-port PORT           S3 port (default: ephemeral)
  --persist DIR            keep state under DIR across restarts (default: in memory)
  --enforce-shard-limits   throttle writes above 1 MiB/s or 1000 records/s per shard
  --iterator-ttl SECONDS   shard iterator lifetime (default: 300)
  -h, --help               print this help
";

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();

    let builder = match parse(std::env::args().skip(1)) {
        Ok(Some(builder)) => builder,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("local-aws: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let aws = match builder.start().await {
        Ok(aws) => aws,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", aws.export_lines());
    let _ = std::io::stdout().flush();
    eprintln!("local-aws: running; Ctrl-C or SIGTERM stops it");
    wait_for_signal().await;
    eprintln!("local-aws: stopping");
    drop(aws);
    ExitCode::SUCCESS
}

fn parse(
    mut args: impl Iterator<Item = String>,
) -> Result<Option<local_aws::LocalAwsBuilder>, String> {
    // The binary always runs the in-process servers: it *is* the backend others point at.
    let mut builder = local_aws::LocalAws::builder().ignore_env();
    let (mut kinesis, mut dynamodb, mut s3) = (0, 0, 0);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--kinesis-port" => kinesis = port(&value(&arg)?)?,
            "--dynamodb-port" => dynamodb = port(&value(&arg)?)?,
            "--s3-port" => s3 = port(&value(&arg)?)?,
            "--persist" => builder = builder.persist_dir(value(&arg)?),
            "--enforce-shard-limits" => builder = builder.enforce_shard_limits(true),
            "--iterator-ttl" => {
                let v = value(&arg)?;
                let secs: u64 = v
                    .parse()
                    .map_err(|_| format!("--iterator-ttl: {v:?} is not a number of seconds"))?;
                builder = builder.iterator_ttl(Duration::from_secs(secs));
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Some(builder.ports(kinesis, dynamodb, s3)))
}

fn port(v: &str) -> Result<u16, String> {
    v.parse().map_err(|_| format!("{v:?} is not a port number"))
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
