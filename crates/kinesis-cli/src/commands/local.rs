//! `kin local`: the local AWS stack in the foreground, its `export` lines on stdout.
//!
//! Always the in-process servers (`ignore_env`): this process *is* the backend that
//! `LOCAL_AWS_BACKEND=external` elsewhere points at.

use crate::cli::LocalArgs;
use crate::error::{CliError, Result};
use crate::output::write_stdout;

pub async fn run(args: LocalArgs) -> Result<()> {
    let mut builder = local_aws::LocalAws::builder()
        .ignore_env()
        .ports(args.kinesis_port, args.dynamodb_port, args.s3_port)
        .enforce_shard_limits(args.enforce_shard_limits)
        .iterator_ttl(args.iterator_ttl);
    if let Some(dir) = &args.persist {
        builder = builder.persist_dir(dir);
    }
    let aws = builder.start().await.map_err(|e| {
        CliError::failed(e.to_string())
            .with_hint("a port may be in use: pick others with --kinesis-port and friends, or leave them ephemeral")
    })?;
    write_stdout(&aws.export_lines())?;
    eprintln!(
        "kin: local stack running (Kinesis {}); Ctrl-C or SIGTERM stops it",
        aws.kinesis_endpoint()
    );
    wait_for_signal().await;
    eprintln!("kin: stopping the local stack");
    drop(aws);
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
