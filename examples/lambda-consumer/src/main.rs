//! The Lambda entry point: logs as JSON-free plain lines (CloudWatch Logs adds timestamps).

use kinesis_aggregation::lambda::aws_lambda_events::event::kinesis::KinesisEvent;
use kinesis_aggregation::lambda::aws_lambda_events::event::streams::KinesisEventResponse;
use lambda_runtime::{Error, LambdaEvent, service_fn};

async fn handler(event: LambdaEvent<KinesisEvent>) -> Result<KinesisEventResponse, Error> {
    let (summary, response) = lambda_consumer::handle_event(event.payload);
    tracing::info!(
        kinesis_records = summary.kinesis_records,
        processed = summary.processed,
        totals = ?summary.totals,
        failed = ?summary.failed,
        "batch handled"
    );
    Ok(response)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .without_time()
        .with_ansi(false)
        .init();
    lambda_runtime::run(service_fn(handler)).await
}
