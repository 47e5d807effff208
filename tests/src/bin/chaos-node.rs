//! `chaos-node`: the processes the chaos suite kills.
//!
//! - `chaos-node stack PERSIST_DIR KINESIS_PORT DYNAMODB_PORT S3_PORT`: the local AWS stack
//!   with durable state on fixed ports, so that a restarted process serves the same
//!   endpoints and data. Prints `ready` on stdout when listening.
//! - `chaos-node worker`: a consumer worker configured by `CHAOS_*` variables (and the
//!   `LOCAL_AWS_*` endpoints), appending every delivery to `CHAOS_OUT` *before* it
//!   checkpoints, so that a SIGKILL can lose nothing that was checkpointed.
//!
//! Both stop gracefully on SIGTERM.

use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kinesis_consumer::{
    Checkpointer, InitialPosition, ProcessInput, ProcessorError, RecordProcessor, Worker,
};
use kinesis_tests::chaos::{Delivery, payload_id};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("stack") => stack(&args[1..]).await,
        Some("worker") => worker().await,
        _ => Err("usage: chaos-node stack DIR KPORT DPORT SPORT | chaos-node worker".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chaos-node: {e}");
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn stack(args: &[String]) -> Result<(), BoxError> {
    let [dir, k, d, s] = args else {
        return Err("stack needs DIR KINESIS_PORT DYNAMODB_PORT S3_PORT".into());
    };
    let _aws = local_aws::LocalAws::builder()
        .ignore_env()
        .persist_dir(dir)
        .ports(k.parse()?, d.parse()?, s.parse()?)
        .start()
        .await?;
    println!("ready");
    std::io::stdout().flush()?;
    sigterm().await;
    Ok(())
}

fn var(name: &str) -> Result<String, BoxError> {
    std::env::var(name).map_err(|_| format!("{name} is not set").into())
}

async fn worker() -> Result<(), BoxError> {
    let aws = local_aws::LocalAws::start().await?;
    let name = var("CHAOS_WORKER")?;
    let out = Arc::new(Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(var("CHAOS_OUT")?)?,
    ));
    let failover = Duration::from_millis(var("CHAOS_FAILOVER_MS")?.parse()?);
    let factory = {
        let name = name.clone();
        move || FileRecorder {
            out: out.clone(),
            worker: name.clone(),
        }
    };
    let worker = Worker::builder(
        var("CHAOS_APP")?,
        var("CHAOS_STREAM")?,
        aws.kinesis_client(),
        aws.dynamodb_client(),
        factory,
    )
    .worker_id(&name)
    .failover_time(failover)
    .lease_taker_interval(Duration::from_millis(500))
    .idle_time_between_reads(Duration::from_millis(100))
    .initial_position(InitialPosition::TrimHorizon)
    .build();
    let handle = worker.handle();
    tokio::spawn(async move {
        sigterm().await;
        handle.shutdown().await;
    });
    worker.run().await?;
    Ok(())
}

struct FileRecorder {
    out: Arc<Mutex<std::fs::File>>,
    worker: String,
}

#[async_trait]
impl RecordProcessor for FileRecorder {
    async fn process_records(&mut self, input: ProcessInput<'_>) -> Result<(), ProcessorError> {
        let mut lines = String::new();
        for r in input.records {
            let delivery = Delivery {
                id: payload_id(&r.data).unwrap_or(u64::MAX),
                shard: input.shard_id.to_owned(),
                sequence: r.sequence_number.to_string(),
                sub_sequence: r.sub_sequence_number,
                worker: self.worker.clone(),
            };
            lines.push_str(&delivery.to_line());
        }
        // One write per batch, before the checkpoint: what is checkpointed is in the file
        // (the OS has it; a SIGKILL does not take it back).
        self.out.lock().unwrap().write_all(lines.as_bytes())?;
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

async fn sigterm() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
