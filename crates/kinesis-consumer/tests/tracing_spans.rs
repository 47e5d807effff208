//! The tracing spans of the producer and the worker: captured by a small layer over a
//! thread-local subscriber (`set_default`, so parallel tests do not see each other) on a
//! current-thread runtime, where every spawned task runs on the test's thread.
//!
//! Checks that the spans exist and that no field of the toolkit's spans or events carries
//! payload: neither record data nor partition keys.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kinesis_consumer::{
    Checkpointer, InitialPosition, ProcessInput, ProcessorError, RecordProcessor, ShardEndedInput,
    Worker,
};
use kinesis_producer::{Producer, Record};
use local_aws::{LocalAws, testing};
use tokio::sync::Notify;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

const PAYLOAD_MARKER: &str = "payload-marker-5f1d";
const KEY_MARKER: &str = "pkey-marker-9a7c";
const RECORDS: usize = 20;

#[derive(Default)]
struct Captured {
    /// Names of the spans opened, in order.
    spans: Vec<String>,
    /// Every field value, of spans (at creation and recorded later) and events.
    values: Vec<String>,
}

struct Capture(Arc<Mutex<Captured>>);

/// Only the toolkit's own spans and events: the SDK and the emulators are not under test.
fn ours(meta: &Metadata<'_>) -> bool {
    meta.target().starts_with("kinesis_producer") || meta.target().starts_with("kinesis_consumer")
}

struct Values<'a>(&'a mut Vec<String>);

impl Visit for Values<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push(format!("{}={value}", field.name()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push(format!("{}={value:?}", field.name()));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn enabled(&self, meta: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        ours(meta)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, _id: &Id, _ctx: Context<'_, S>) {
        let mut c = self.0.lock().unwrap();
        c.spans.push(attrs.metadata().name().to_owned());
        attrs.record(&mut Values(&mut c.values));
    }

    fn on_record(&self, _id: &Id, values: &tracing::span::Record<'_>, _ctx: Context<'_, S>) {
        values.record(&mut Values(&mut self.0.lock().unwrap().values));
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        event.record(&mut Values(&mut self.0.lock().unwrap().values));
    }
}

#[derive(Default)]
struct Seen {
    records: Mutex<usize>,
    changed: Notify,
}

/// Counts records and checkpoints after every batch.
struct Counter(Arc<Seen>);

#[async_trait]
impl RecordProcessor for Counter {
    async fn process_records(&mut self, input: ProcessInput<'_>) -> Result<(), ProcessorError> {
        *self.0.records.lock().unwrap() += input.records.len();
        self.0.changed.notify_waiters();
        if !input.records.is_empty() {
            input.checkpointer.checkpoint().await?;
        }
        Ok(())
    }

    async fn shard_ended(&mut self, _input: ShardEndedInput<'_>) -> Result<(), ProcessorError> {
        Ok(())
    }

    async fn shutdown_requested(
        &mut self,
        _checkpointer: &Checkpointer,
    ) -> Result<(), ProcessorError> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn producer_and_worker_spans_carry_no_payload() {
    let captured = Arc::new(Mutex::new(Captured::default()));
    let subscriber = tracing_subscriber::registry().with(Capture(captured.clone()));
    let _guard = tracing::subscriber::set_default(subscriber);

    let aws = LocalAws::start().await.unwrap();
    let kinesis = aws.kinesis_client();
    let stream = testing::unique_name("spans");
    testing::create_stream(&kinesis, &stream, 2).await.unwrap();

    let producer = Producer::builder(kinesis.clone())
        .stream(&stream)
        .build()
        .await
        .unwrap();
    let mut handles = Vec::new();
    for i in 0..RECORDS {
        let record = Record::new(format!("{KEY_MARKER}-{i}"), format!("{PAYLOAD_MARKER}-{i}"));
        handles.push(producer.put(record).await.unwrap());
    }
    for h in handles {
        h.await.expect("record delivered");
    }
    producer.close().await;

    let seen = Arc::new(Seen::default());
    let processor_seen = seen.clone();
    let worker = Worker::builder(
        testing::unique_name("spans-app"),
        &stream,
        kinesis.clone(),
        aws.dynamodb_client(),
        move || Counter(processor_seen.clone()),
    )
    .worker_id("w1")
    .initial_position(InitialPosition::TrimHorizon)
    .idle_time_between_reads(Duration::from_millis(200))
    .build();
    let handle = worker.handle();
    let task = tokio::spawn(async move { worker.run().await.expect("worker runs") });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let notified = seen.changed.notified();
        if *seen.records.lock().unwrap() >= RECORDS {
            break;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            panic!("timed out; {} records seen", seen.records.lock().unwrap());
        }
    }
    handle.shutdown().await;
    task.await.unwrap();

    let c = captured.lock().unwrap();
    for name in [
        "kinesis.put_records",
        "lease.take",
        "shard.process_batch",
        "shard.checkpoint",
    ] {
        assert!(
            c.spans.iter().any(|s| s == name),
            "no {name} span among {:?}",
            c.spans
        );
    }
    // Outcomes are recorded: requests without failed entries, batches processed.
    for outcome in ["failed=0", "ok=true"] {
        assert!(
            c.values.iter().any(|v| v == outcome),
            "no {outcome} among {:?}",
            c.values
        );
    }
    for v in &c.values {
        assert!(
            !v.contains(PAYLOAD_MARKER) && !v.contains(KEY_MARKER),
            "payload in a field: {v}"
        );
    }
}
