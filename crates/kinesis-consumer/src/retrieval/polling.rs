//! Polling retrieval: a background task per shard calls `GetRecords` ahead of the
//! processor into a queue bounded by records, bytes and batches.
//!
//! Bounds (the processor is slower than the shard ⇒ reads stop, memory stays bounded):
//! - records: a read asks for `limit = min(max_records, max_prefetch_records)` records and
//!   is made only when the queue has room for `limit` more, so the queue never holds more
//!   than `max_prefetch_records` records;
//! - bytes: a read is made only while the queue holds less than `max_prefetch_bytes`;
//!   the service cannot be asked for fewer bytes, so the queue can exceed the bound by at
//!   most one read (≤ 10 MiB on Kinesis);
//! - batches: the channel holds at most `max_prefetch_batches` (empty reads are batches
//!   too: they carry `millis_behind_latest`).
//!
//! The batch the processor is working on has left the queue and is not counted.
//!
//! Pacing: consecutive reads start at least `idle_time_between_reads` apart (default
//! 1500 ms, the KCL's), except after a full read (`limit` records: the consumer is behind),
//! when the next read starts 200 ms after the previous one — the floor that keeps one
//! consumer within Kinesis' 5 reads per second per shard.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::api::{ApiError, ErrorKind, KinesisApi};
use super::{
    Batch, ReaderQueue, RecordSource, RecordSourceFactory, RetrievalError, ShardRef, StartingPoint,
};
use crate::processor::ChildShard;

/// The shortest time between two reads of a shard (Kinesis allows 5 reads/s per shard).
pub(crate) const MIN_TIME_BETWEEN_READS: Duration = Duration::from_millis(200);
/// The most records one `GetRecords` returns.
const MAX_RECORDS_PER_CALL: u32 = 10_000;
/// Attempts to find a closed shard's children by listing when the read did not name them.
const CHILD_LISTING_ATTEMPTS: u32 = 3;

/// Polling settings. Defaults are the KCL's.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PollingConfig {
    /// Records per `GetRecords` (1 to 10000). Default 10000.
    pub max_records: u32,
    /// Time between the starts of two reads of a shard when the last read was not full.
    /// Default 1500 ms; anything below 200 ms is raised to 200 ms.
    pub idle_time_between_reads: Duration,
    /// Most records read ahead of the processor per shard. Default 30000.
    pub max_prefetch_records: usize,
    /// Most bytes read ahead per shard (may be exceeded by one read). Default 8 MiB.
    pub max_prefetch_bytes: usize,
    /// Most reads (batches) queued ahead per shard. Default 3.
    pub max_prefetch_batches: usize,
}

impl Default for PollingConfig {
    fn default() -> Self {
        PollingConfig {
            max_records: MAX_RECORDS_PER_CALL,
            idle_time_between_reads: Duration::from_millis(1500),
            max_prefetch_records: 30_000,
            max_prefetch_bytes: 8 * 1024 * 1024,
            max_prefetch_batches: 3,
        }
    }
}

impl PollingConfig {
    /// Records asked for per read.
    pub(crate) fn limit(&self) -> u32 {
        let prefetch = u32::try_from(self.max_prefetch_records.max(1)).unwrap_or(u32::MAX);
        self.max_records
            .clamp(1, MAX_RECORDS_PER_CALL)
            .min(prefetch)
    }

    pub(crate) fn idle(&self) -> Duration {
        self.idle_time_between_reads.max(MIN_TIME_BETWEEN_READS)
    }
}

/// What is queued between the reader task and the consumer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Queued {
    pub records: usize,
    pub bytes: usize,
    /// The most records ever queued at once.
    pub high_water_records: usize,
    /// The most bytes ever queued at once.
    pub high_water_bytes: usize,
}

#[derive(Debug)]
pub(crate) struct Prefetch {
    queued: Mutex<Queued>,
    room: Notify,
    /// True while the reader waits for the consumer to make room.
    parked: watch::Sender<bool>,
}

impl Prefetch {
    fn new() -> Self {
        Prefetch {
            queued: Mutex::default(),
            room: Notify::new(),
            parked: watch::channel(false).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.queued.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, records: usize, bytes: usize) {
        let mut q = self.lock();
        q.records += records;
        q.bytes += bytes;
        q.high_water_records = q.high_water_records.max(q.records);
        q.high_water_bytes = q.high_water_bytes.max(q.bytes);
    }

    fn remove(&self, records: usize, bytes: usize) {
        {
            let mut q = self.lock();
            q.records = q.records.saturating_sub(records);
            q.bytes = q.bytes.saturating_sub(bytes);
        }
        self.room.notify_waiters();
    }

    fn has_room(&self, limit: usize, config: &PollingConfig) -> bool {
        let q = self.lock();
        q.records + limit <= config.max_prefetch_records.max(limit)
            && q.bytes < config.max_prefetch_bytes
    }
}

/// Starts a [`PollingSource`] per shard.
pub(crate) struct PollingFactory {
    api: Arc<dyn KinesisApi>,
    config: PollingConfig,
}

impl PollingFactory {
    pub(crate) fn new(api: Arc<dyn KinesisApi>, config: PollingConfig) -> Self {
        PollingFactory { api, config }
    }
}

impl RecordSourceFactory for PollingFactory {
    fn start(&self, shard: ShardRef, from: StartingPoint) -> Box<dyn RecordSource> {
        Box::new(PollingSource::start(
            self.api.clone(),
            shard,
            from,
            self.config.clone(),
        ))
    }
}

/// The consumer's end of a shard's prefetch queue. Dropping it stops the reader task.
pub(crate) struct PollingSource {
    queue: ReaderQueue,
    prefetch: Arc<Prefetch>,
}

impl PollingSource {
    pub(crate) fn start(
        api: Arc<dyn KinesisApi>,
        shard: ShardRef,
        from: StartingPoint,
        config: PollingConfig,
    ) -> Self {
        let (tx, rx) = mpsc::channel(config.max_prefetch_batches.max(1));
        let prefetch = Arc::new(Prefetch::new());
        let shard_id = shard.shard_id.clone();
        let reader = Reader {
            api,
            limit: config.limit(),
            config,
            shard,
            prefetch: prefetch.clone(),
            tx,
            failures: 0,
        };
        let task = tokio::spawn(reader.run(from));
        PollingSource {
            queue: ReaderQueue::new(shard_id, rx, task),
            prefetch,
        }
    }

    /// What is queued now, and the high-water marks.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn queued(&self) -> Queued {
        *self.prefetch.lock()
    }

    /// Turns true while the reader waits for room.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn parked(&self) -> watch::Receiver<bool> {
        self.prefetch.parked.subscribe()
    }
}

#[async_trait]
impl RecordSource for PollingSource {
    async fn next_batch(&mut self) -> Result<Batch, RetrievalError> {
        // `recv` is cancel-safe and the accounting below runs without an await.
        let batch = self.queue.recv().await?;
        self.prefetch
            .remove(batch.records.len(), batch.data_bytes());
        Ok(batch)
    }
}

/// Where a (re)started read goes next.
enum Next {
    Iterator(String),
    Ended(Vec<ChildShard>),
}

struct Reader {
    api: Arc<dyn KinesisApi>,
    config: PollingConfig,
    limit: u32,
    shard: ShardRef,
    prefetch: Arc<Prefetch>,
    tx: mpsc::Sender<Result<Batch, RetrievalError>>,
    /// Consecutive failed calls (for the backoff).
    failures: u32,
}

fn backoff_delay(failures: u32) -> Duration {
    ExponentialBuilder::new()
        .with_min_delay(MIN_TIME_BETWEEN_READS)
        .with_max_delay(Duration::from_secs(10))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(failures.clamp(1, 16) as usize - 1)
        .unwrap_or(Duration::from_secs(10))
}

impl Reader {
    async fn run(mut self, from: StartingPoint) {
        if let Err(e) = self.read(from).await {
            warn!(shard_id = %self.shard.shard_id, error = %e, "reading the shard stopped");
            let _ = self.tx.send(Err(e)).await;
        }
    }

    fn fatal(&self, operation: &'static str, e: ApiError) -> RetrievalError {
        RetrievalError::Fatal {
            operation,
            shard_id: self.shard.shard_id.clone(),
            source: e.source,
        }
    }

    async fn back_off(&mut self, operation: &'static str, e: &ApiError) {
        self.failures += 1;
        let delay = backoff_delay(self.failures);
        let shard_id = self.shard.shard_id.clone();
        if e.kind == ErrorKind::Throttled {
            metrics::counter!(format!("{operation}.Throttled"), "ShardId" => shard_id.clone())
                .increment(1);
        } else {
            metrics::counter!(format!("{operation}.Errors"), "ShardId" => shard_id.clone())
                .increment(1);
        }
        warn!(shard_id, operation, error = %e, attempt = self.failures, ?delay, "backing off");
        tokio::time::sleep(delay).await;
    }

    async fn read(&mut self, from: StartingPoint) -> Result<(), RetrievalError> {
        let mut iterator = match self.iterator(&from).await? {
            Next::Iterator(it) => it,
            Next::Ended(children) => return self.end(children).await,
        };
        // The last Kinesis record received: an expired iterator restarts after it.
        let mut last_received: Option<Arc<str>> = None;
        let mut next_call = Instant::now();
        let shard_id = self.shard.shard_id.clone();
        loop {
            if !self.wait_for_room().await {
                return Ok(());
            }
            tokio::time::sleep_until(next_call).await;
            let started = Instant::now();
            match self.api.get_records(&iterator, self.limit as i32).await {
                Ok(page) => {
                    self.failures = 0;
                    metrics::counter!("GetRecords.Success", "ShardId" => shard_id.clone())
                        .increment(1);
                    metrics::histogram!("GetRecords.Time", "ShardId" => shard_id.clone())
                        .record(started.elapsed().as_secs_f64() * 1000.0);
                    // Behind the tip: read again at the floor. A full page says so, and so does
                    // MillisBehindLatest > 0 on a page that Kinesis cut at 10 MiB before
                    // `max_records` (aggregated data: ~200 records a page).
                    let full = page.records.len() >= self.limit as usize
                        || (!page.records.is_empty()
                            && page.millis_behind_latest.is_some_and(|ms| ms > 0));
                    next_call = started
                        + if full {
                            MIN_TIME_BETWEEN_READS
                        } else {
                            self.config.idle()
                        };
                    if let Some(last) = page.records.last() {
                        last_received = Some(last.sequence_number.clone());
                    }
                    debug!(shard_id, records = page.records.len(), "read");
                    let shard_end = match page.next_iterator {
                        Some(next) => {
                            iterator = next;
                            None
                        }
                        None if !page.child_shards.is_empty() => Some(page.child_shards),
                        None => Some(self.children_from_listing().await?),
                    };
                    let ended = shard_end.is_some();
                    let batch = Batch {
                        records: page.records,
                        millis_behind_latest: page.millis_behind_latest,
                        shard_end,
                    };
                    if !self.send(batch).await || ended {
                        return Ok(());
                    }
                }
                Err(e) => match e.kind {
                    ErrorKind::Throttled | ErrorKind::Transient => {
                        self.back_off("GetRecords", &e).await;
                    }
                    ErrorKind::ExpiredIterator => {
                        metrics::counter!("ExpiredIterator", "ShardId" => shard_id.clone())
                            .increment(1);
                        let restart = match &last_received {
                            Some(seq) => StartingPoint::AfterSequence(seq.to_string()),
                            None => from.clone(),
                        };
                        info!(
                            shard_id,
                            ?restart,
                            "shard iterator expired; getting a new one"
                        );
                        match self.iterator(&restart).await? {
                            Next::Iterator(it) => iterator = it,
                            Next::Ended(children) => return self.end(children).await,
                        }
                    }
                    ErrorKind::NotFound => match self.resolve_missing().await? {
                        Some(children) => return self.end(children).await,
                        None => self.back_off("GetRecords", &e).await,
                    },
                    ErrorKind::Fatal => return Err(self.fatal("GetRecords", e)),
                },
            }
        }
    }

    /// A shard iterator at `from`, retrying throttling and transient errors.
    async fn iterator(&mut self, from: &StartingPoint) -> Result<Next, RetrievalError> {
        loop {
            let result = self
                .api
                .get_shard_iterator(&self.shard.stream_name, &self.shard.shard_id, from)
                .await;
            match result {
                Ok(Some(it)) => {
                    self.failures = 0;
                    return Ok(Next::Iterator(it));
                }
                // No iterator: nothing left to read in a closed shard.
                Ok(None) => return Ok(Next::Ended(self.children_from_listing().await?)),
                Err(e) => match e.kind {
                    ErrorKind::Throttled | ErrorKind::Transient | ErrorKind::ExpiredIterator => {
                        self.back_off("GetShardIterator", &e).await
                    }
                    ErrorKind::NotFound => match self.resolve_missing().await? {
                        Some(children) => return Ok(Next::Ended(children)),
                        None => self.back_off("GetShardIterator", &e).await,
                    },
                    ErrorKind::Fatal => return Err(self.fatal("GetShardIterator", e)),
                },
            }
        }
    }

    /// Every shard of the stream, retrying throttling and transient errors.
    async fn list(&mut self) -> Result<Vec<super::api::ListedShard>, RetrievalError> {
        loop {
            match self.api.list_shards(&self.shard.stream_name).await {
                Ok(shards) => return Ok(shards),
                Err(e) => match e.kind {
                    ErrorKind::NotFound => {
                        return Err(RetrievalError::StreamNotFound {
                            stream: self.shard.stream_name.clone(),
                        });
                    }
                    ErrorKind::Fatal => return Err(self.fatal("ListShards", e)),
                    _ => self.back_off("ListShards", &e).await,
                },
            }
        }
    }

    /// After ResourceNotFound: `Some(children)` if the stream exists without this shard
    /// (its end), `None` if the shard is listed after all (retry).
    async fn resolve_missing(&mut self) -> Result<Option<Vec<ChildShard>>, RetrievalError> {
        let shards = self.list().await?;
        if shards.iter().any(|s| s.shard_id == self.shard.shard_id) {
            return Ok(None);
        }
        warn!(shard_id = %self.shard.shard_id, "shard no longer exists (past retention?): treating as its end");
        Ok(Some(self.children_in(shards)))
    }

    fn children_in(&self, shards: Vec<super::api::ListedShard>) -> Vec<ChildShard> {
        shards
            .into_iter()
            .filter(|s| s.is_child_of(&self.shard.shard_id))
            .map(|s| s.into_child())
            .collect()
    }

    /// A closed shard's children when the read did not name them (some emulators never
    /// do): ListShards, filtered by parent.
    async fn children_from_listing(&mut self) -> Result<Vec<ChildShard>, RetrievalError> {
        for attempt in 1..=CHILD_LISTING_ATTEMPTS {
            let shards = self.list().await?;
            let children = self.children_in(shards);
            if !children.is_empty() {
                return Ok(children);
            }
            if attempt < CHILD_LISTING_ATTEMPTS {
                tokio::time::sleep(backoff_delay(attempt)).await;
            }
        }
        warn!(shard_id = %self.shard.shard_id, "closed shard has no child shards listed");
        Ok(Vec::new())
    }

    async fn end(&mut self, children: Vec<ChildShard>) -> Result<(), RetrievalError> {
        self.send(Batch {
            shard_end: Some(children),
            ..Batch::default()
        })
        .await;
        Ok(())
    }

    /// Waits until the queue has room for a full read. False when the consumer is gone.
    async fn wait_for_room(&self) -> bool {
        let limit = self.limit as usize;
        loop {
            let room = self.prefetch.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if self.prefetch.has_room(limit, &self.config) {
                self.prefetch
                    .parked
                    .send_if_modified(|p| std::mem::replace(p, false));
                return true;
            }
            self.prefetch
                .parked
                .send_if_modified(|p| !std::mem::replace(p, true));
            tokio::select! {
                _ = room => {}
                _ = self.tx.closed() => return false,
            }
        }
    }

    /// Queues a batch. False when the consumer is gone.
    async fn send(&self, batch: Batch) -> bool {
        let permit = match self.tx.try_reserve() {
            Ok(permit) => permit,
            Err(mpsc::error::TrySendError::Full(())) => {
                self.prefetch
                    .parked
                    .send_if_modified(|p| !std::mem::replace(p, true));
                let permit = self.tx.reserve().await;
                self.prefetch
                    .parked
                    .send_if_modified(|p| std::mem::replace(p, false));
                match permit {
                    Ok(permit) => permit,
                    Err(_) => return false,
                }
            }
            Err(mpsc::error::TrySendError::Closed(())) => return false,
        };
        self.prefetch.add(batch.records.len(), batch.data_bytes());
        permit.send(Ok(batch));
        true
    }
}
