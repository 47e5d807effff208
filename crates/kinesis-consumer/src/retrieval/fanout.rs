//! Enhanced fan-out: Kinesis pushes each shard's records to a registered stream consumer over
//! a `SubscribeToShard` event stream, with 2 MB/s per shard reserved for that consumer. One
//! background task per shard keeps a subscription open and feeds a bounded queue.
//!
//! ```text
//!  Worker::run ─► Registration (once per worker, shared by its shards; name = application)
//!                  DescribeStreamSummary ─► the stream's ARN
//!                  DescribeStreamConsumer ── not found ─► RegisterStreamConsumer
//!                    │ CREATING: wait (backoff)    ResourceInUse: another worker is registering it: wait
//!                    ▼ ACTIVE: the consumer ARN    LimitExceeded (again and again): ConsumerLimitExceeded
//!
//!  shard consumer                          subscriber task (one per shard)
//!  ──────────────                          ─────────────────────────────────────────────────────────
//!  next_batch().await ◄── bounded ◄─────── SubscribeToShard(consumer ARN, shard, position)
//!                         channel            │ event ─► drop records already received ─► queue it
//!                         (max_buffered_     │          (waits while the queue is full: the event
//!                          events)           │           stream is not read, so Kinesis slows down)
//!                                            │ the stream ends (~5 min) ─► renew at once
//!                                            │ error, or no event within read_timeout ─► back off
//!                                            │                           (backon, jitter), resubscribe
//!                                            ▼ null continuation / ChildShards ─► shard end: the same
//!                                              Batch::shard_end the polling reader sends
//! ```
//!
//! Batches carry Kinesis records exactly as polling's do, so deaggregation, the resume filter
//! after a checkpoint inside an aggregate, and the shard-end path are the shard consumer's,
//! shared by both modes.
//!
//! # Where a subscription starts
//! | when                            | `StartingPosition`                                    |
//! |---------------------------------|-------------------------------------------------------|
//! | first subscription              | from the checkpoint, as polling (module `retrieval`)  |
//! | a record was received before    | `AFTER_SEQUENCE_NUMBER` of the last one               |
//! | `LATEST`, nothing received yet  | `AFTER_SEQUENCE_NUMBER` of the last continuation      |
//! | otherwise                       | the first subscription's position again               |
//!
//! Whatever the position, every event is filtered against what was already received (records
//! at or before the last one, or before the `LATEST` continuation, are dropped): a
//! resubscription never delivers a record twice, and an emulator that ignores sequence
//! positions (ferrokinesis answers every `AT/AFTER_SEQUENCE_NUMBER` from the shard's start)
//! costs reads, not duplicates.
//!
//! # Errors
//! - The subscription ends normally (Kinesis closes it after 5 minutes): renewed at once,
//!   logged at `debug`.
//! - `ResourceInUseException` (the previous subscription is still open: Kinesis refuses a
//!   new one for 5 s), `LimitExceededException` (one `SubscribeToShard` per second per shard
//!   and consumer), internal failures, dropped connections, and no event for
//!   [`FanOutConfig::read_timeout`]: resubscribed with exponential backoff and jitter
//!   (250 ms doubling to 5 s, plus up to as much jitter), without limit. Logged at `debug`
//!   for the first four consecutive failures, at `warn` from the fifth on (after 4–8 s of
//!   failing: longer than the 5 s for which Kinesis refuses a new subscription after a
//!   broken one); counted in `SubscribeToShard.Throttled` (in use, rate limited) or
//!   `SubscribeToShard.Errors`. Subscriptions opened (renewals included) are counted in
//!   `SubscribeToShard.Success`. All three carry the `ShardId` label.
//! - `ResourceNotFoundException`: the stream's shards are listed. Stream gone:
//!   [`RetrievalError::StreamNotFound`]. Shard gone (past retention): its end, children from
//!   the listing. Otherwise the consumer was deregistered: it is registered again.
//! - Access denied, invalid arguments, unusable KMS keys: [`RetrievalError::Fatal`].
//!
//! # On the local emulators (measured with the Rust SDK over HTTP/1.1)
//! - ferrokinesis (`local-aws`): an event every 200 ms; `AT/AFTER_SEQUENCE_NUMBER` are
//!   answered from the shard's start (the filter above absorbs it); `ChildShards` on every
//!   event once the shard is closed, and the stream ends after the last records; the
//!   subscription lifetime is configurable (`LocalAwsBuilder::subscription_lifetime`).
//! - kinesis-mock 0.6.2 (LocalStack's Kinesis): an event every second, the response only with
//!   the first one; a new subscription is refused for 5 s after the previous one closed; a
//!   subscription to a closed shard never ends and never names the children, so a shard end
//!   is not seen in fan-out mode there (polling sees it).

#[cfg(test)]
mod tests;

pub(crate) mod api;

use std::cmp::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use self::api::{EventStream, Failure, FanOutApi, FanOutError, Status};
use super::api::{ErrorKind, KinesisApi, ListedShard};
use super::{
    Batch, ReadRecord, ReaderQueue, RecordSource, RecordSourceFactory, RetrievalError, ShardRef,
    StartingPoint,
};
use crate::processor::ChildShard;

/// Consecutive subscription failures logged at `debug` before they are logged at `warn`:
/// a subscription that fails and is refused for 5 s afterwards (`ResourceInUse`) is
/// routine and must not alarm anyone.
const WARN_AFTER_FAILURES: u32 = 5;
/// `LimitExceededException` answers to `RegisterStreamConsumer` before concluding that the
/// consumer limit, not the rate limit (5 calls per second), is hit.
const REGISTRATION_LIMIT_ATTEMPTS: u32 = 5;
/// Attempts to find a closed shard's children by listing when the events did not name them.
const CHILD_LISTING_ATTEMPTS: u32 = 3;

/// Enhanced fan-out settings.
///
/// ```
/// use std::time::Duration;
/// use kinesis_consumer::{FanOutConfig, Retrieval};
///
/// let retrieval = Retrieval::FanOut(
///     FanOutConfig::new()
///         .consumer_name("orders-efo")
///         .read_timeout(Duration::from_secs(20)),
/// );
/// # let _ = retrieval;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FanOutConfig {
    /// The stream consumer's name. Default: the application name (as the KCL), so that all
    /// workers of an application share one consumer and one 2 MB/s-per-shard budget.
    pub consumer_name: Option<String>,
    /// Use this consumer ARN and never describe or register a consumer (for consumers
    /// managed elsewhere, e.g. by CloudFormation). Default: none.
    pub consumer_arn: Option<String>,
    /// Most events queued per shard between the subscription and the processor. A full
    /// queue stops reading the event stream, which holds Kinesis back (HTTP/2 flow control);
    /// nothing is dropped. Default 3 (at least 1).
    pub max_buffered_events: usize,
    /// A subscription that yields no event for this long is considered dead and replaced
    /// (a dropped connection does not always say so). Default 30 s; at least 1 s.
    pub read_timeout: Duration,
    /// How long to wait for the consumer to become `ACTIVE` (or for a rate-limited
    /// registration to go through) before the worker fails to start. Default 120 s.
    pub registration_timeout: Duration,
}

impl Default for FanOutConfig {
    fn default() -> Self {
        FanOutConfig {
            consumer_name: None,
            consumer_arn: None,
            max_buffered_events: 3,
            read_timeout: Duration::from_secs(30),
            registration_timeout: Duration::from_secs(120),
        }
    }
}

impl FanOutConfig {
    /// The defaults.
    pub fn new() -> Self {
        FanOutConfig::default()
    }

    /// Sets [`consumer_name`](Self::consumer_name).
    pub fn consumer_name(mut self, name: impl Into<String>) -> Self {
        self.consumer_name = Some(name.into());
        self
    }

    /// Sets [`consumer_arn`](Self::consumer_arn).
    pub fn consumer_arn(mut self, arn: impl Into<String>) -> Self {
        self.consumer_arn = Some(arn.into());
        self
    }

    /// Sets [`max_buffered_events`](Self::max_buffered_events).
    pub fn max_buffered_events(mut self, events: usize) -> Self {
        self.max_buffered_events = events;
        self
    }

    /// Sets [`read_timeout`](Self::read_timeout).
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// Sets [`registration_timeout`](Self::registration_timeout).
    pub fn registration_timeout(mut self, timeout: Duration) -> Self {
        self.registration_timeout = timeout;
        self
    }
}

/// Exponential backoff with jitter: `min` doubling up to `max`, for the `attempt`-th
/// consecutive failure (1-based).
fn backoff(min: Duration, max: Duration, attempt: u32) -> Duration {
    ExponentialBuilder::new()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempt.clamp(1, 16) as usize - 1)
        .unwrap_or(max)
}

fn subscribe_backoff(attempt: u32) -> Duration {
    backoff(Duration::from_millis(250), Duration::from_secs(5), attempt)
}

fn registration_backoff(attempt: u32) -> Duration {
    backoff(Duration::from_millis(100), Duration::from_secs(2), attempt)
}

/// Orders two Kinesis sequence numbers (decimal strings of up to 128 bits).
fn cmp_sequence(a: &str, b: &str) -> Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

// ---------------------------------------------------------------------------------------------
// Registration

/// The worker's stream consumer: found, or registered, once and shared by its shards.
pub(crate) struct Registration {
    api: Arc<dyn FanOutApi>,
    stream: String,
    name: String,
    timeout: Duration,
    /// Configured: never looked up, never forgotten.
    fixed: bool,
    /// The ARN once known. The lock is held while registering, so that the shards of a
    /// worker wait for one registration instead of racing to make their own.
    arn: Mutex<Option<Arc<str>>>,
}

impl Registration {
    pub(crate) fn new(
        api: Arc<dyn FanOutApi>,
        stream: String,
        name: String,
        config: &FanOutConfig,
    ) -> Self {
        Registration {
            api,
            stream,
            name,
            timeout: config.registration_timeout,
            fixed: config.consumer_arn.is_some(),
            arn: Mutex::new(config.consumer_arn.as_deref().map(Arc::from)),
        }
    }

    /// The consumer's ARN once it is `ACTIVE`, registering it if needed.
    pub(crate) async fn consumer_arn(&self) -> Result<Arc<str>, RetrievalError> {
        let mut arn = self.arn.lock().await;
        if let Some(arn) = &*arn {
            return Ok(arn.clone());
        }
        let found: Arc<str> = self.find_or_register().await?.into();
        *arn = Some(found.clone());
        Ok(found)
    }

    /// `arn` was refused as unknown (deregistered): look the consumer up again next time.
    pub(crate) async fn forget(&self, arn: &str) {
        let mut current = self.arn.lock().await;
        if !self.fixed && current.as_deref() == Some(arn) {
            *current = None;
        }
    }

    fn failed(&self, reason: impl Into<String>) -> RetrievalError {
        RetrievalError::ConsumerRegistration {
            stream: self.stream.clone(),
            consumer: self.name.clone(),
            reason: reason.into(),
        }
    }

    /// Waits before the next attempt, or gives up when the registration timeout is spent.
    async fn pause(
        &self,
        started: Instant,
        attempt: u32,
        waiting_for: &str,
    ) -> Result<(), RetrievalError> {
        let delay = registration_backoff(attempt);
        if started.elapsed() + delay > self.timeout {
            return Err(self.failed(format!(
                "still waiting for {waiting_for} after {:?} (registration_timeout)",
                started.elapsed()
            )));
        }
        tokio::time::sleep(delay).await;
        Ok(())
    }

    async fn find_or_register(&self) -> Result<String, RetrievalError> {
        let started = Instant::now();
        let mut attempt = 0;
        let stream_arn = loop {
            attempt += 1;
            match self.api.stream_arn(&self.stream).await {
                Ok(arn) => break arn,
                Err(e) => match e.kind {
                    Failure::NotFound => {
                        return Err(RetrievalError::StreamNotFound {
                            stream: self.stream.clone(),
                        });
                    }
                    Failure::Fatal => {
                        return Err(self.failed(format!("DescribeStreamSummary: {e}")));
                    }
                    _ => {
                        debug!(stream = %self.stream, error = %e, "DescribeStreamSummary failed; retrying")
                    }
                },
            }
            self.pause(started, attempt, "DescribeStreamSummary")
                .await?;
        };
        let mut attempt = 0;
        let mut limit_answers = 0;
        loop {
            attempt += 1;
            let waiting_for = match self.api.describe_consumer(&stream_arn, &self.name).await {
                Ok(c) if c.status == Status::Active => {
                    info!(stream = %self.stream, consumer = %self.name, arn = %c.arn, "enhanced fan-out consumer active");
                    return Ok(c.arn);
                }
                Ok(c) if c.status == Status::Creating => "the consumer to become ACTIVE",
                Ok(_) => "the consumer being deleted to be gone, to register it again",
                Err(e) if e.kind == Failure::NotFound => {
                    match self.api.register_consumer(&stream_arn, &self.name).await {
                        Ok(c) => {
                            info!(stream = %self.stream, consumer = %self.name, arn = %c.arn, "registered the enhanced fan-out consumer");
                            if c.status == Status::Active {
                                return Ok(c.arn);
                            }
                            "the consumer to become ACTIVE"
                        }
                        // Registered by another worker of the application in the meantime.
                        Err(e) if e.kind == Failure::InUse => "another worker's registration",
                        Err(e) if e.kind == Failure::LimitExceeded => {
                            limit_answers += 1;
                            if limit_answers >= REGISTRATION_LIMIT_ATTEMPTS {
                                return Err(RetrievalError::ConsumerLimitExceeded {
                                    stream: self.stream.clone(),
                                    consumer: self.name.clone(),
                                });
                            }
                            debug!(consumer = %self.name, error = %e, "RegisterStreamConsumer refused (rate or consumer limit); retrying");
                            "RegisterStreamConsumer (rate limited)"
                        }
                        Err(e) if e.kind == Failure::NotFound => {
                            return Err(RetrievalError::StreamNotFound {
                                stream: self.stream.clone(),
                            });
                        }
                        Err(e) if e.kind == Failure::Fatal => {
                            return Err(self.failed(format!("RegisterStreamConsumer: {e}")));
                        }
                        Err(e) => {
                            debug!(consumer = %self.name, error = %e, "RegisterStreamConsumer failed; retrying");
                            "RegisterStreamConsumer"
                        }
                    }
                }
                Err(e) if e.kind == Failure::Fatal => {
                    return Err(self.failed(format!("DescribeStreamConsumer: {e}")));
                }
                Err(e) => {
                    debug!(consumer = %self.name, error = %e, "DescribeStreamConsumer failed; retrying");
                    "DescribeStreamConsumer"
                }
            };
            debug!(consumer = %self.name, waiting_for, "enhanced fan-out consumer not ready");
            self.pause(started, attempt, waiting_for).await?;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The factory and the source

/// Starts a [`FanOutSource`] per shard; every source of a worker shares one registration.
pub(crate) struct FanOutFactory {
    api: Arc<dyn FanOutApi>,
    kinesis: Arc<dyn KinesisApi>,
    registration: Arc<Registration>,
    config: FanOutConfig,
}

impl FanOutFactory {
    /// `kinesis` is used to list shards (children of a shard without `ChildShards`,
    /// shards that vanished).
    pub(crate) fn new(
        api: Arc<dyn FanOutApi>,
        kinesis: Arc<dyn KinesisApi>,
        stream: String,
        application_name: &str,
        config: FanOutConfig,
    ) -> Self {
        let name = config
            .consumer_name
            .clone()
            .unwrap_or_else(|| application_name.to_owned());
        FanOutFactory {
            registration: Arc::new(Registration::new(api.clone(), stream, name, &config)),
            api,
            kinesis,
            config,
        }
    }
}

#[async_trait]
impl RecordSourceFactory for FanOutFactory {
    fn start(&self, shard: ShardRef, from: StartingPoint) -> Box<dyn RecordSource> {
        Box::new(FanOutSource::start(
            self.api.clone(),
            self.kinesis.clone(),
            self.registration.clone(),
            shard,
            from,
            &self.config,
        ))
    }

    async fn prepare(&self) -> Result<(), RetrievalError> {
        self.registration.consumer_arn().await.map(|_| ())
    }
}

/// The consumer's end of a shard's subscription. Dropping it ends the subscription.
pub(crate) struct FanOutSource {
    queue: ReaderQueue,
}

impl FanOutSource {
    pub(crate) fn start(
        api: Arc<dyn FanOutApi>,
        kinesis: Arc<dyn KinesisApi>,
        registration: Arc<Registration>,
        shard: ShardRef,
        from: StartingPoint,
        config: &FanOutConfig,
    ) -> Self {
        let (tx, rx) = mpsc::channel(config.max_buffered_events.max(1));
        let shard_id = shard.shard_id.clone();
        let subscriber = Subscriber {
            api,
            kinesis,
            registration,
            shard,
            // A zero timeout would replace every subscription at once.
            read_timeout: config.read_timeout.max(Duration::from_secs(1)),
            tx,
            from,
            last_record: None,
            latest_floor: None,
            failures: 0,
        };
        FanOutSource {
            queue: ReaderQueue::new(shard_id, rx, tokio::spawn(subscriber.run())),
        }
    }
}

#[async_trait]
impl RecordSource for FanOutSource {
    async fn next_batch(&mut self) -> Result<Batch, RetrievalError> {
        self.queue.recv().await
    }
}

/// How a subscription ended.
enum Ended {
    /// Kinesis closed it (after ~5 minutes): renew.
    Completed,
    /// The shard's last event was queued.
    ShardEnd,
    /// The consumer is gone (the source was dropped).
    Closed,
    Failed(FanOutError),
}

struct Subscriber {
    api: Arc<dyn FanOutApi>,
    kinesis: Arc<dyn KinesisApi>,
    registration: Arc<Registration>,
    shard: ShardRef,
    read_timeout: Duration,
    tx: mpsc::Sender<Result<Batch, RetrievalError>>,
    /// The first subscription's position.
    from: StartingPoint,
    /// The last Kinesis record received: resubscriptions start after it, and events are
    /// filtered against it.
    last_record: Option<Arc<str>>,
    /// `LATEST` with nothing received yet: the last continuation. Records before it were
    /// written before the first subscription.
    latest_floor: Option<String>,
    /// Consecutive failed subscriptions (for the backoff and the log level).
    failures: u32,
}

impl Subscriber {
    async fn run(mut self) {
        if let Err(e) = self.read().await {
            warn!(shard_id = %self.shard.shard_id, error = %e, "reading the shard stopped");
            let _ = self.tx.send(Err(e)).await;
        }
    }

    fn position(&self) -> StartingPoint {
        match (&self.last_record, &self.latest_floor) {
            (Some(last), _) => StartingPoint::AfterSequence(last.to_string()),
            (None, Some(floor)) => StartingPoint::AfterSequence(floor.clone()),
            (None, None) => self.from.clone(),
        }
    }

    async fn read(&mut self) -> Result<(), RetrievalError> {
        loop {
            let arn = tokio::select! {
                arn = self.registration.consumer_arn() => arn?,
                _ = self.tx.closed() => return Ok(()),
            };
            let position = self.position();
            let subscribed = tokio::select! {
                s = tokio::time::timeout(
                    self.read_timeout,
                    self.api.subscribe(&arn, &self.shard.shard_id, &position),
                ) => s,
                _ = self.tx.closed() => return Ok(()),
            };
            let ended = match subscribed {
                Err(_) => Ended::Failed(FanOutError::new(
                    Failure::Transient,
                    format!(
                        "no answer to SubscribeToShard within {:?}",
                        self.read_timeout
                    ),
                )),
                Ok(Err(e)) => Ended::Failed(e),
                Ok(Ok(events)) => {
                    metrics::counter!("SubscribeToShard.Success", "ShardId" => self.shard.shard_id.clone())
                        .increment(1);
                    debug!(shard_id = %self.shard.shard_id, ?position, "subscribed");
                    self.consume(events).await?
                }
            };
            match ended {
                Ended::Closed | Ended::ShardEnd => return Ok(()),
                Ended::Completed => {
                    debug!(shard_id = %self.shard.shard_id, "subscription ended; renewing it");
                }
                Ended::Failed(e) => {
                    if let Some(children) = self.failed(&arn, e).await? {
                        self.end(children).await;
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Reads one subscription until it ends.
    async fn consume(&mut self, mut events: Box<dyn EventStream>) -> Result<Ended, RetrievalError> {
        let mut received = 0u64;
        loop {
            let next = tokio::select! {
                next = tokio::time::timeout(self.read_timeout, events.next_event()) => next,
                _ = self.tx.closed() => return Ok(Ended::Closed),
            };
            let event = match next {
                Err(_) => {
                    return Ok(Ended::Failed(FanOutError::new(
                        Failure::Transient,
                        format!("no event for {:?} (read_timeout)", self.read_timeout),
                    )));
                }
                Ok(Ok(Some(event))) => event,
                // Ended at once: not a renewal, or we would resubscribe in a tight loop.
                Ok(Ok(None)) if received == 0 => {
                    return Ok(Ended::Failed(FanOutError::new(
                        Failure::Transient,
                        "the subscription ended before its first event",
                    )));
                }
                Ok(Ok(None)) => return Ok(Ended::Completed),
                Ok(Err(e)) => return Ok(Ended::Failed(e)),
            };
            received += 1;
            self.failures = 0;
            let ends = event.ends_shard();
            let records = self.fresh(event.records, event.continuation);
            let shard_end = if !ends {
                None
            } else if event.child_shards.is_empty() {
                Some(self.children_from_listing().await?)
            } else {
                Some(event.child_shards)
            };
            let batch = Batch {
                records,
                millis_behind_latest: Some(event.millis_behind_latest),
                shard_end,
            };
            // Waits while the queue is full: the event stream is not read meanwhile, which
            // is what holds Kinesis back.
            if self.tx.send(Ok(batch)).await.is_err() {
                return Ok(Ended::Closed);
            }
            if ends {
                return Ok(Ended::ShardEnd);
            }
        }
    }

    /// The event's records not received before; remembers where the shard was read to.
    fn fresh(
        &mut self,
        mut records: Vec<ReadRecord>,
        continuation: Option<String>,
    ) -> Vec<ReadRecord> {
        if let Some(last) = &self.last_record {
            records.retain(|r| cmp_sequence(&r.sequence_number, last) == Ordering::Greater);
        } else if let Some(floor) = &self.latest_floor {
            // Equal is kept: an emulator's continuation may be the next record's number.
            records.retain(|r| cmp_sequence(&r.sequence_number, floor) != Ordering::Less);
        }
        if let Some(last) = records.last() {
            self.last_record = Some(last.sequence_number.clone());
            self.latest_floor = None;
        } else if self.last_record.is_none()
            && self.from == StartingPoint::Latest
            && let Some(c) = continuation
        {
            self.latest_floor = Some(c);
        }
        records
    }

    /// A failed subscription: waits before the next one, or says why there is none.
    /// `Some(children)` when the shard turned out to be gone (its end).
    async fn failed(
        &mut self,
        arn: &str,
        e: FanOutError,
    ) -> Result<Option<Vec<ChildShard>>, RetrievalError> {
        match e.kind {
            Failure::Fatal => {
                return Err(RetrievalError::Fatal {
                    operation: "SubscribeToShard",
                    shard_id: self.shard.shard_id.clone(),
                    source: e.source,
                });
            }
            Failure::NotFound => {
                let shards = self.list().await?;
                if !shards.iter().any(|s| s.shard_id == self.shard.shard_id) {
                    warn!(shard_id = %self.shard.shard_id, "shard no longer exists (past retention?): treating as its end");
                    return Ok(Some(self.children_in(shards)));
                }
                // The shard is there: the consumer is not (deregistered, or being replaced).
                info!(shard_id = %self.shard.shard_id, arn, "the stream consumer is unknown; finding or registering it again");
                self.registration.forget(arn).await;
            }
            _ => {}
        }
        self.back_off(&e).await;
        Ok(None)
    }

    async fn back_off(&mut self, e: &FanOutError) {
        self.failures += 1;
        let delay = subscribe_backoff(self.failures);
        let shard_id = self.shard.shard_id.clone();
        let throttled = matches!(
            e.kind,
            Failure::InUse | Failure::LimitExceeded | Failure::Throttled
        );
        let counter = if throttled {
            "SubscribeToShard.Throttled"
        } else {
            "SubscribeToShard.Errors"
        };
        metrics::counter!(counter, "ShardId" => shard_id.clone()).increment(1);
        if self.failures < WARN_AFTER_FAILURES {
            debug!(shard_id, error = %e, attempt = self.failures, ?delay, "subscription failed; resubscribing");
        } else {
            warn!(shard_id, error = %e, attempt = self.failures, ?delay, "subscription keeps failing; resubscribing");
        }
        tokio::time::sleep(delay).await;
    }

    /// Every shard of the stream, retrying throttling and transient errors.
    async fn list(&mut self) -> Result<Vec<ListedShard>, RetrievalError> {
        let mut attempt = 0;
        loop {
            match self.kinesis.list_shards(&self.shard.stream_name).await {
                Ok(shards) => return Ok(shards),
                Err(e) => match e.kind {
                    ErrorKind::NotFound => {
                        return Err(RetrievalError::StreamNotFound {
                            stream: self.shard.stream_name.clone(),
                        });
                    }
                    ErrorKind::Fatal => {
                        return Err(RetrievalError::Fatal {
                            operation: "ListShards",
                            shard_id: self.shard.shard_id.clone(),
                            source: e.source,
                        });
                    }
                    _ => {
                        attempt += 1;
                        debug!(shard_id = %self.shard.shard_id, error = %e, "ListShards failed; retrying");
                        tokio::time::sleep(subscribe_backoff(attempt)).await;
                    }
                },
            }
        }
    }

    fn children_in(&self, shards: Vec<ListedShard>) -> Vec<ChildShard> {
        super::children_in(shards, &self.shard.shard_id)
    }

    /// A closed shard's children when the events did not name them: ListShards.
    async fn children_from_listing(&mut self) -> Result<Vec<ChildShard>, RetrievalError> {
        for attempt in 1..=CHILD_LISTING_ATTEMPTS {
            let shards = self.list().await?;
            let children = self.children_in(shards);
            if !children.is_empty() {
                return Ok(children);
            }
            if attempt < CHILD_LISTING_ATTEMPTS {
                tokio::time::sleep(subscribe_backoff(attempt)).await;
            }
        }
        warn!(shard_id = %self.shard.shard_id, "closed shard has no child shards listed");
        Ok(Vec::new())
    }

    async fn end(&mut self, children: Vec<ChildShard>) {
        let _ = self
            .tx
            .send(Ok(Batch {
                shard_end: Some(children),
                ..Batch::default()
            }))
            .await;
    }
}
