//! The producer's one background task: every stage of the pipeline, driven by events.
//!
//! ```text
//!  Command::Put ──► predict shard ──► shard.agg (Aggregator) ──linger/full──► shard.ready
//!                                                                               │ limiter
//!                                 ┌──── Event::PutDone ◄── spawned PutRecords ◄─ batch
//!                                 ▼                        (≤ max in flight)
//!          success ─► handle    retryable ─► backoff + budget ─► re-predict ─► shard.ready
//!          wrong shard / unknown shard ─► map refresh ─► verify or re-route
//! ```
//!
//! One task owns all state, so there are no locks on the record path; the only cross-task
//! traffic is the command channel (bounded in effect by the producer's permits), the event
//! channel from request tasks, and one oneshot per record. The loop never polls: it sleeps
//! until the earliest deadline it computed (linger, limiter refill, retry time, map retry) or
//! until a command or event arrives.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use kinesis_aggregation::{
    Aggregator, AggregatorConfig, Finished, HashKey, KinesisRecord, UserRecord,
};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use crate::api::{
    CallError, CallErrorKind, EntryResult, KinesisApi, StreamId, classify_error_code,
};
use crate::config::Config;
use crate::error::PutFailure;
use crate::limiter::ShardLimiter;
use crate::record::{Attempt, AttemptError, PutOutcome, Record};
use crate::retry::{Backoff, RetryBudget};
use crate::shard_map::{self, ShardMap};

pub(crate) type Reply = oneshot::Sender<Result<PutOutcome, PutFailure>>;

/// A user record inside the pipeline.
pub(crate) struct Item {
    pub user: UserRecord,
    /// The explicit hash key as the user wrote it, to hand the record back unchanged.
    pub ehk_text: Option<String>,
    pub hash: HashKey,
    pub reply: Reply,
    pub attempts: Vec<Attempt>,
    /// Linger deadline: send by then.
    pub deadline: Instant,
    pub expires: Instant,
    /// End of the previous attempt (or the arrival): the base of the next attempt's delay.
    pub last_end: Instant,
    /// Bytes permits held.
    pub cost: usize,
    pub epoch: u64,
}

impl AsRef<UserRecord> for Item {
    fn as_ref(&self) -> &UserRecord {
        &self.user
    }
}

impl Item {
    fn into_record(self) -> (Record, Vec<Attempt>, Reply) {
        let (partition_key, _, data) = self.user.into_parts();
        (
            Record {
                partition_key,
                explicit_hash_key: self.ehk_text,
                data,
            },
            self.attempts,
            self.reply,
        )
    }
}

// Put dominates by count: boxing it would cost an allocation per record to save bytes on
// the rare flush and close.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Command {
    Put(Item),
    Flush(oneshot::Sender<()>),
    Close(oneshot::Sender<()>),
}

enum Event {
    PutDone {
        batch: Vec<Pending>,
        started: Instant,
        started_std: std::time::Instant,
        duration: Duration,
        result: Result<Vec<EntryResult>, CallError>,
    },
    MapLoaded(Result<ShardMap, CallError>),
}

/// A Kinesis record waiting for its shard's limiter and a place in a request.
struct Pending {
    record: KinesisRecord,
    items: Vec<Item>,
    /// The predicted shard ("" when there was no map).
    shard: Arc<str>,
    billed: usize,
    deadline: Instant,
    expires: Instant,
    not_before: Instant,
}

impl Pending {
    fn new(f: Finished<Item>, shard: Arc<str>, not_before: Instant) -> Pending {
        let deadline = f
            .user_records
            .iter()
            .map(|i| i.deadline)
            .min()
            .unwrap_or(not_before);
        let expires = f
            .user_records
            .iter()
            .map(|i| i.expires)
            .min()
            .unwrap_or(not_before);
        Pending {
            billed: f.record.billed_size(),
            record: f.record,
            items: f.user_records,
            shard,
            deadline,
            expires,
            not_before,
        }
    }
}

struct ShardState {
    agg: Aggregator<Item>,
    agg_deadline: Option<Instant>,
    ready: VecDeque<Pending>,
    limiter: ShardLimiter,
    in_flight: usize,
    /// Kinesis records of this shard in the batch being collected.
    batched: usize,
}

/// How a record ended.
enum Fate {
    Expired,
    StreamNotFound,
    Rejected(Arc<str>, Arc<str>),
    Closed,
}

struct Metrics {
    user_records_put: metrics::Counter,
    user_records_data_put: metrics::Counter,
    kinesis_records_put: metrics::Counter,
    kinesis_records_data_put: metrics::Counter,
    user_records_expired: metrics::Counter,
    all_errors: metrics::Counter,
    buffering_time: metrics::Histogram,
    retries_per_record: metrics::Histogram,
    request_time: metrics::Histogram,
    user_records_pending: metrics::Gauge,
    stream: String,
}

impl Metrics {
    fn new(stream: &str) -> Self {
        let s = stream.to_owned();
        Metrics {
            user_records_put: metrics::counter!("UserRecordsPut", "StreamName" => s.clone()),
            user_records_data_put: metrics::counter!("UserRecordsDataPut", "StreamName" => s.clone()),
            kinesis_records_put: metrics::counter!("KinesisRecordsPut", "StreamName" => s.clone()),
            kinesis_records_data_put: metrics::counter!("KinesisRecordsDataPut", "StreamName" => s.clone()),
            user_records_expired: metrics::counter!("UserRecordExpired", "StreamName" => s.clone()),
            all_errors: metrics::counter!("AllErrors", "StreamName" => s.clone()),
            buffering_time: metrics::histogram!("BufferingTime", "StreamName" => s.clone()),
            retries_per_record: metrics::histogram!("RetriesPerRecord", "StreamName" => s.clone()),
            request_time: metrics::histogram!("RequestTime", "StreamName" => s.clone()),
            user_records_pending: metrics::gauge!("UserRecordsPending", "StreamName" => s.clone()),
            stream: s,
        }
    }

    fn error(&self, code: &str) {
        self.all_errors.increment(1);
        metrics::counter!("ErrorsByCode", "StreamName" => self.stream.clone(), "ErrorCode" => code.to_owned())
            .increment(1);
    }
}

pub(crate) struct Engine {
    cfg: Arc<Config>,
    api: Arc<dyn KinesisApi>,
    stream: StreamId,
    rx: mpsc::UnboundedReceiver<Command>,
    rx_closed: bool,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: mpsc::UnboundedReceiver<Event>,
    bytes_sem: Arc<Semaphore>,
    records_sem: Arc<Semaphore>,
    release_bytes: usize,
    release_records: usize,

    map: ShardMap,
    map_stale: bool,
    map_loading: bool,
    map_failures: u32,
    map_next_try: Instant,
    /// When the map was last loaded (or the engine started): the base of periodic refresh.
    map_loaded_at: Instant,
    /// Retries that must wait for a fresh map (they landed on the wrong shard).
    awaiting_map: Vec<Item>,
    /// Aggregates that landed on a shard the map does not know: success if its range holds
    /// every key, which only a fresh map can tell.
    unverified: Vec<(Arc<str>, Arc<str>, Pending)>,

    shards: HashMap<Arc<str>, ShardState>,
    /// The keys of `shards`, kept in step: the senders' round robin walks it without
    /// collecting the keys on every pass.
    shard_ids: Vec<Arc<str>>,
    rotation: usize,
    batch: Vec<Pending>,
    batch_bytes: usize,
    in_flight: usize,

    backoff: Backoff,
    budget: RetryBudget,

    epoch: u64,
    outstanding: BTreeMap<u64, usize>,
    flush_waiters: VecDeque<(u64, oneshot::Sender<()>)>,
    close_waiters: Vec<oneshot::Sender<()>>,
    closing: bool,

    wake: Option<Instant>,
    metrics: Metrics,
}

impl Engine {
    pub(crate) fn new(
        cfg: Arc<Config>,
        api: Arc<dyn KinesisApi>,
        stream: StreamId,
        map: Option<ShardMap>,
        rx: mpsc::UnboundedReceiver<Command>,
        bytes_sem: Arc<Semaphore>,
        records_sem: Arc<Semaphore>,
    ) -> Engine {
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let now = Instant::now();
        // No map (the build's ListShards failed transiently): that was the first failure.
        let missing = map.is_none();
        let metrics = Metrics::new(stream.display_name());
        Engine {
            cfg,
            api,
            stream,
            rx,
            rx_closed: false,
            events_tx,
            events_rx,
            bytes_sem,
            records_sem,
            release_bytes: 0,
            release_records: 0,
            map: map.unwrap_or_default(),
            map_stale: missing,
            map_loading: false,
            map_failures: u32::from(missing),
            map_next_try: if missing {
                now + Duration::from_secs(1)
            } else {
                now
            },
            map_loaded_at: now,
            awaiting_map: Vec::new(),
            unverified: Vec::new(),
            shards: HashMap::new(),
            shard_ids: Vec::new(),
            rotation: 0,
            batch: Vec::new(),
            batch_bytes: 0,
            in_flight: 0,
            backoff: Backoff::default(),
            budget: RetryBudget::new(now),
            epoch: 0,
            outstanding: BTreeMap::new(),
            flush_waiters: VecDeque::new(),
            close_waiters: Vec::new(),
            closing: false,
            wake: None,
            metrics,
        }
    }

    pub(crate) async fn run(mut self) {
        // One timer for the loop's life, moved only when the wake time changes: a new
        // `sleep_until` per iteration would register and cancel a timer-wheel entry (under
        // the time driver's lock) on every command burst.
        let timer = tokio::time::sleep_until(Instant::now());
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        loop {
            let now = Instant::now();
            self.pump(now);
            self.release_permits();
            self.check_flushes();
            if self.closing && self.outstanding.is_empty() {
                break;
            }
            let wake = self.wake;
            if let Some(w) = wake
                && armed != Some(w)
            {
                timer.as_mut().reset(w);
                armed = Some(w);
            }
            tokio::select! {
                biased;
                ev = self.events_rx.recv() => {
                    if let Some(ev) = ev {
                        self.on_event(ev);
                    }
                }
                cmd = self.rx.recv(), if !self.rx_closed => match cmd {
                    Some(cmd) => {
                        self.on_command(cmd);
                        // Take what else is queued before pumping: one pass per burst.
                        for _ in 0..1024 {
                            match self.rx.try_recv() {
                                Ok(cmd) => self.on_command(cmd),
                                Err(_) => break,
                            }
                        }
                    }
                    None => {
                        // Every Producer handle is gone: finish what was put, then stop.
                        self.rx_closed = true;
                        self.closing = true;
                    }
                },
                _ = &mut timer, if wake.is_some() => {
                    // Fired: the next wake time, even an equal one, re-arms it.
                    armed = None;
                }
            }
        }
        // Puts that raced with close: refuse them.
        self.rx.close();
        while let Ok(cmd) = self.rx.try_recv() {
            match cmd {
                Command::Put(item) => self.finish_failed(item, &Fate::Closed),
                Command::Flush(tx) | Command::Close(tx) => {
                    let _ = tx.send(());
                }
            }
        }
        self.release_permits();
        for (_, tx) in self.flush_waiters.drain(..) {
            let _ = tx.send(());
        }
        for tx in self.close_waiters.drain(..) {
            let _ = tx.send(());
        }
        tracing::debug!(stream = self.metrics.stream, "producer stopped");
    }

    fn wake_at(&mut self, t: Instant) {
        self.wake = Some(self.wake.map_or(t, |w| w.min(t)));
    }

    fn flushing(&self) -> bool {
        self.closing || !self.flush_waiters.is_empty()
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Put(mut item) => {
                item.epoch = self.epoch;
                *self.outstanding.entry(self.epoch).or_default() += 1;
                let shard = self.predict(item.hash);
                self.push_new(shard, item);
            }
            Command::Flush(tx) => {
                self.flush_waiters.push_back((self.epoch, tx));
                self.epoch += 1;
            }
            Command::Close(tx) => {
                self.closing = true;
                self.close_waiters.push(tx);
            }
        }
    }

    fn predict(&self, key: HashKey) -> Arc<str> {
        self.map
            .predict(key)
            .cloned()
            .unwrap_or_else(|| Arc::from(""))
    }

    fn shard_state(&mut self, shard: &Arc<str>) -> &mut ShardState {
        let cfg = &self.cfg;
        if !self.shards.contains_key(shard) {
            self.shard_ids.push(shard.clone());
        }
        self.shards.entry(shard.clone()).or_insert_with(|| {
            // Without a map, records go alone: an aggregate could span shards.
            let aggregate = cfg.aggregation_enabled && !shard.is_empty();
            ShardState {
                agg: Aggregator::new(AggregatorConfig {
                    max_bytes: cfg.aggregation_max_size,
                    max_count: if aggregate {
                        cfg.aggregation_max_count
                    } else {
                        1
                    },
                }),
                agg_deadline: None,
                ready: VecDeque::new(),
                limiter: ShardLimiter::new(
                    if shard.is_empty() {
                        u32::MAX / 1000
                    } else {
                        cfg.rate_limit
                    },
                    Instant::now(),
                ),
                in_flight: 0,
                batched: 0,
            }
        })
    }

    /// A new record into its shard's aggregator.
    fn push_new(&mut self, shard: Arc<str>, item: Item) {
        let deadline = item.deadline;
        let now = Instant::now();
        let s = self.shard_state(&shard);
        if let Err(full) = s.agg.try_push(item) {
            if let Some(f) = s.agg.finish() {
                s.ready.push_back(Pending::new(f, shard.clone(), now));
            }
            s.agg_deadline = None;
            let _ = s.agg.try_push(full.into_inner());
        }
        s.agg_deadline = Some(s.agg_deadline.map_or(deadline, |d| d.min(deadline)));
    }

    /// Retried records: re-predicted, re-aggregated per shard, queued at `not_before`.
    fn route(&mut self, items: Vec<Item>, not_before: Instant) {
        if items.is_empty() {
            return;
        }
        let mut groups: HashMap<Arc<str>, Vec<Item>> = HashMap::new();
        for item in items {
            groups
                .entry(self.predict(item.hash))
                .or_default()
                .push(item);
        }
        let order = self.cfg.preserve_order_per_shard;
        for (shard, items) in groups {
            self.shard_state(&shard);
            let mut agg: Aggregator<Item> = Aggregator::new(AggregatorConfig {
                max_bytes: self.cfg.aggregation_max_size,
                max_count: if self.cfg.aggregation_enabled && !shard.is_empty() {
                    self.cfg.aggregation_max_count
                } else {
                    1
                },
            });
            let mut out = Vec::new();
            for item in items {
                if let Err(full) = agg.try_push(item) {
                    out.extend(agg.finish());
                    let _ = agg.try_push(full.into_inner());
                }
            }
            out.extend(agg.finish());
            let s = self.shards.get_mut(&shard).expect("created above");
            if order {
                // Ahead of newer records of the shard: the shard waits for its retries.
                for f in out.into_iter().rev() {
                    s.ready
                        .push_front(Pending::new(f, shard.clone(), not_before));
                }
            } else {
                for f in out {
                    s.ready
                        .push_back(Pending::new(f, shard.clone(), not_before));
                }
            }
        }
    }

    /// Moves records through the stages as far as time, limits and concurrency allow, and
    /// computes when to look again.
    fn pump(&mut self, now: Instant) {
        self.wake = None;
        let flushing = self.flushing();

        let every = self.cfg.shard_map_refresh_interval;
        if !every.is_zero() && !self.map_stale && !self.map_loading {
            // Periodic refresh: a reshard that no result has shown yet.
            match self.map_loaded_at.checked_add(every) {
                Some(due) if due <= now => self.map_stale = true,
                Some(due) => self.wake_at(due),
                None => {}
            }
        }
        if self.map_stale && !self.map_loading {
            if now >= self.map_next_try {
                self.start_map_load();
            } else {
                self.wake_at(self.map_next_try);
            }
        }

        let mut wakes = Vec::new();
        for (id, s) in self.shards.iter_mut() {
            if let Some(d) = s.agg_deadline {
                if flushing || d <= now {
                    if let Some(f) = s.agg.finish() {
                        s.ready.push_back(Pending::new(f, id.clone(), now));
                    }
                    s.agg_deadline = None;
                } else {
                    wakes.push(d);
                }
            }
        }
        for w in wakes {
            self.wake_at(w);
        }
        self.fill_and_send(now, flushing);
    }

    fn batch_full_for(&self, billed: usize) -> bool {
        self.batch.len() >= self.cfg.collection_max_count
            || self.batch_bytes + billed > self.cfg.collection_max_size
    }

    fn fill_and_send(&mut self, now: Instant, flushing: bool) {
        let order = self.cfg.preserve_order_per_shard;
        self.rotation = self.rotation.wrapping_add(1);
        loop {
            let mut full = false;
            let mut expired = Vec::new();
            let mut reroute = Vec::new();
            let n = self.shard_ids.len();
            for k in 0..n {
                let id = &self.shard_ids[(self.rotation + k) % n];
                let Some(s) = self.shards.get_mut(id) else {
                    continue;
                };
                // Kinesis does not order the records of one PutRecords call (a later entry
                // may succeed where an earlier one was throttled): in order mode a shard has
                // one Kinesis record (an aggregate) at a time in a request, and no request
                // in flight while another is.
                if order && (s.in_flight > 0 || s.batched > 0) {
                    continue;
                }
                let mut i = 0;
                while i < s.ready.len() {
                    let p = &s.ready[i];
                    if p.not_before > now {
                        self.wake = Some(self.wake.map_or(p.not_before, |w| w.min(p.not_before)));
                        if order {
                            break;
                        }
                        i += 1;
                        continue;
                    }
                    if p.expires <= now {
                        // Fail what expired, send the rest again.
                        let p = s.ready.remove(i).expect("index checked");
                        for item in p.items {
                            if item.expires <= now {
                                expired.push(item);
                            } else {
                                reroute.push(item);
                            }
                        }
                        continue;
                    }
                    if self.batch.len() >= self.cfg.collection_max_count
                        || self.batch_bytes + p.billed > self.cfg.collection_max_size
                    {
                        full = true;
                        break;
                    }
                    if let Err(at) = s.limiter.try_take(now, p.billed) {
                        self.wake = Some(self.wake.map_or(at, |w| w.min(at)));
                        break;
                    }
                    let p = s.ready.remove(i).expect("index checked");
                    self.batch_bytes += p.billed;
                    self.batch.push(p);
                    s.batched += 1;
                    if order {
                        break;
                    }
                }
                if full {
                    break;
                }
            }
            for item in expired {
                self.finish_failed(item, &Fate::Expired);
            }
            let rerouted = !reroute.is_empty();
            self.route(reroute, now);

            if self.batch.is_empty() {
                if rerouted {
                    continue;
                }
                return;
            }
            let deadline = self
                .batch
                .iter()
                .map(|p| p.deadline)
                .min()
                .expect("non-empty");
            let due = full || flushing || deadline <= now || self.batch_full_for(1);
            if !due {
                self.wake_at(deadline);
                return;
            }
            if self.in_flight >= self.cfg.max_in_flight_requests {
                // A request finishing wakes us.
                return;
            }
            self.send_batch(now);
        }
    }

    fn send_batch(&mut self, _now: Instant) {
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        self.in_flight += 1;
        for p in &batch {
            if let Some(s) = self.shards.get_mut(&p.shard) {
                s.in_flight += 1;
                s.batched = 0;
            }
        }
        let api = Arc::clone(&self.api);
        let stream = self.stream.clone();
        let events = self.events_tx.clone();
        let timeout = self.cfg.request_timeout;
        tokio::spawn(async move {
            let records: Vec<KinesisRecord> = batch.iter().map(|p| p.record.clone()).collect();
            let started = Instant::now();
            let started_std = std::time::Instant::now();
            let result =
                match tokio::time::timeout(timeout, api.put_records(&stream, &records)).await {
                    Ok(r) => r,
                    Err(_) => Err(CallError::new(
                        CallErrorKind::Transient,
                        "Timeout",
                        format!("no answer within the request timeout of {timeout:?}"),
                    )),
                };
            let _ = events.send(Event::PutDone {
                batch,
                started,
                started_std,
                duration: started.elapsed(),
                result,
            });
        });
    }

    fn start_map_load(&mut self) {
        self.map_loading = true;
        let api = Arc::clone(&self.api);
        let stream = self.stream.clone();
        let events = self.events_tx.clone();
        let page = self.cfg.list_shards_page_size;
        tokio::spawn(async move {
            let r = shard_map::load(&*api, &stream, page).await;
            let _ = events.send(Event::MapLoaded(r));
        });
    }

    fn on_event(&mut self, ev: Event) {
        let now = Instant::now();
        match ev {
            Event::PutDone {
                batch,
                started,
                started_std,
                duration,
                result,
            } => {
                self.in_flight -= 1;
                for p in &batch {
                    if let Some(s) = self.shards.get_mut(&p.shard) {
                        s.in_flight -= 1;
                    }
                }
                self.metrics
                    .request_time
                    .record(duration.as_secs_f64() * 1000.0);
                let attempt = |error: Option<AttemptError>| (started, started_std, duration, error);
                match result {
                    Err(e) => {
                        self.metrics.error(&e.code);
                        tracing::debug!(code = %e.code, message = %e.message, records = batch.len(), "PutRecords failed");
                        let err = AttemptError {
                            code: e.code.clone(),
                            message: e.message.clone(),
                        };
                        if e.kind == CallErrorKind::Throttling {
                            for p in &batch {
                                if let Some(s) = self.shards.get_mut(&p.shard) {
                                    s.limiter.on_throttled(now);
                                }
                            }
                        }
                        let items = batch
                            .into_iter()
                            .flat_map(|p| p.items)
                            .map(|i| record_attempt(i, attempt(Some(err.clone()))))
                            .collect();
                        self.retry_or_fail(items, e.kind, &e.code, &e.message, now);
                    }
                    Ok(entries) if entries.len() != batch.len() => {
                        let msg = format!("{} results for {} records", entries.len(), batch.len());
                        let err = AttemptError {
                            code: "ResultCountMismatch".into(),
                            message: msg.as_str().into(),
                        };
                        self.metrics.error("ResultCountMismatch");
                        let items = batch
                            .into_iter()
                            .flat_map(|p| p.items)
                            .map(|i| record_attempt(i, attempt(Some(err.clone()))))
                            .collect();
                        self.retry_or_fail(
                            items,
                            CallErrorKind::Transient,
                            "ResultCountMismatch",
                            &msg,
                            now,
                        );
                    }
                    Ok(entries) => self.on_results(batch, entries, attempt(None), now),
                }
            }
            Event::MapLoaded(r) => self.on_map(r, now),
        }
        self.metrics
            .user_records_pending
            .set(self.outstanding.values().sum::<usize>() as f64);
    }

    fn on_results(
        &mut self,
        batch: Vec<Pending>,
        entries: Vec<EntryResult>,
        ok_attempt: (Instant, std::time::Instant, Duration, Option<AttemptError>),
        now: Instant,
    ) {
        let mut throttled: Vec<Arc<str>> = Vec::new();
        let mut succeeded: Vec<Arc<str>> = Vec::new();
        let mut retry_throttled = Vec::new();
        let mut retry_transient = Vec::new();
        let mut rejected = Vec::new();
        for (p, entry) in batch.into_iter().zip(entries) {
            match entry {
                EntryResult::Ok {
                    shard_id,
                    sequence_number,
                } => {
                    succeeded.push(p.shard.clone());
                    let aggregated = p.items.len() > 1;
                    if shard_id == p.shard || p.shard.is_empty() || !aggregated {
                        // A lone record is routed by its own key, so it is where it belongs
                        // even if the map is stale; a different shard means the map is.
                        if shard_id != p.shard && !p.shard.is_empty() {
                            self.map_stale = true;
                        }
                        self.succeed(p, &shard_id, &sequence_number, &ok_attempt);
                        continue;
                    }
                    self.map_stale = true;
                    if self.map.knows(&shard_id) {
                        self.split_landed(p, &shard_id, &sequence_number, &ok_attempt, true);
                    } else {
                        // Only a fresh map can tell which records the new shard holds.
                        let mut p = p;
                        p.items = p
                            .items
                            .into_iter()
                            .map(|i| record_attempt(i, ok_attempt.clone()))
                            .collect();
                        self.unverified.push((shard_id, sequence_number, p));
                    }
                }
                EntryResult::Failed { code, message } => {
                    self.metrics.error(&code);
                    let kind = classify_error_code(&code, None);
                    let err = AttemptError {
                        code: code.clone(),
                        message: message.clone(),
                    };
                    let (a, b, c, _) = ok_attempt.clone();
                    let items = p
                        .items
                        .into_iter()
                        .map(|i| record_attempt(i, (a, b, c, Some(err.clone()))));
                    match kind {
                        CallErrorKind::Throttling => {
                            throttled.push(p.shard.clone());
                            retry_throttled.extend(items);
                        }
                        CallErrorKind::Transient => retry_transient.extend(items),
                        _ => rejected.push((items.collect::<Vec<_>>(), kind, code, message)),
                    }
                }
            }
        }
        for shard in &throttled {
            if let Some(s) = self.shards.get_mut(shard) {
                s.limiter.on_throttled(now);
            }
        }
        for shard in &succeeded {
            if !throttled.contains(shard)
                && let Some(s) = self.shards.get_mut(shard)
            {
                s.limiter.on_success(now);
            }
        }
        if !succeeded.is_empty() {
            self.budget.refund(now);
        }
        if !retry_throttled.is_empty() {
            self.retry_or_fail(
                retry_throttled,
                CallErrorKind::Throttling,
                "ProvisionedThroughputExceededException",
                "",
                now,
            );
        }
        if !retry_transient.is_empty() {
            self.retry_or_fail(retry_transient, CallErrorKind::Transient, "", "", now);
        }
        for (items, kind, code, message) in rejected {
            self.retry_or_fail(items, kind, &code, &message, now);
        }
    }

    fn succeed(
        &mut self,
        p: Pending,
        shard_id: &Arc<str>,
        sequence_number: &Arc<str>,
        attempt: &(Instant, std::time::Instant, Duration, Option<AttemptError>),
    ) {
        let aggregated = p.items.len() > 1;
        self.metrics.kinesis_records_put.increment(1);
        self.metrics
            .kinesis_records_data_put
            .increment(p.billed as u64);
        self.metrics
            .user_records_put
            .increment(p.items.len() as u64);
        for (pos, item) in p.items.into_iter().enumerate() {
            let mut item = record_attempt(item, attempt.clone());
            self.metrics
                .user_records_data_put
                .increment(item.user.data().len() as u64);
            self.metrics
                .retries_per_record
                .record((item.attempts.len().saturating_sub(1)) as f64);
            if let Some(first) = item.attempts.first() {
                self.metrics
                    .buffering_time
                    .record(first.delay.as_secs_f64() * 1000.0);
            }
            self.release(&item);
            let outcome = PutOutcome {
                shard_id: shard_id.clone(),
                sequence_number: sequence_number.clone(),
                sub_sequence_number: pos as u64,
                aggregated,
                attempts: std::mem::take(&mut item.attempts),
            };
            let _ = item.reply.send(Ok(outcome));
        }
    }

    /// Schedules a retry for `items` after one failure of class `kind`, or ends them.
    fn retry_or_fail(
        &mut self,
        items: Vec<Item>,
        kind: CallErrorKind,
        code: &str,
        message: &str,
        now: Instant,
    ) {
        if items.is_empty() {
            return;
        }
        match kind {
            CallErrorKind::StreamNotFound => {
                for item in items {
                    self.finish_failed(item, &Fate::StreamNotFound);
                }
                return;
            }
            CallErrorKind::Permanent => {
                let fate = Fate::Rejected(code.into(), message.into());
                for item in items {
                    self.finish_failed(item, &fate);
                }
                return;
            }
            CallErrorKind::Throttling | CallErrorKind::Transient => {}
        }
        let retry_no = items.iter().map(|i| i.attempts.len()).max().unwrap_or(1);
        let at = (now + self.backoff.delay(kind, retry_no)).max(self.budget.acquire(now, kind));
        let mut keep = Vec::with_capacity(items.len());
        for item in items {
            // A retry that would start after the TTL cannot succeed in time: say so now.
            if at >= item.expires {
                self.finish_failed(item, &Fate::Expired);
            } else {
                keep.push(item);
            }
        }
        self.route(keep, at);
    }

    fn on_map(&mut self, r: Result<ShardMap, CallError>, now: Instant) {
        self.map_loading = false;
        match r {
            Ok(map) => {
                tracing::debug!(open_shards = map.open_shards(), "shard map loaded");
                self.map = map;
                self.map_stale = false;
                self.map_failures = 0;
                self.map_loaded_at = now;
                // Records buffered for shards that are no longer open go where the new map says.
                let gone: Vec<Arc<str>> = self
                    .shards
                    .keys()
                    .filter(|id| !self.map.is_open(id))
                    .filter(|id| !id.is_empty() || self.map.open_shards() > 0)
                    .cloned()
                    .collect();
                let mut items = Vec::new();
                for id in gone {
                    let s = self.shards.get_mut(&id).expect("listed");
                    if let Some(f) = s.agg.finish() {
                        items.extend(f.user_records);
                    }
                    s.agg_deadline = None;
                    for p in s.ready.drain(..) {
                        items.extend(p.items);
                    }
                    if s.in_flight == 0 {
                        self.shards.remove(&id);
                        self.shard_ids.retain(|s| *s != id);
                    }
                }
                for item in items {
                    let shard = self.predict(item.hash);
                    self.push_new(shard, item);
                }
                for (shard_id, seq, p) in std::mem::take(&mut self.unverified) {
                    // The attempt is already in the histories; a placeholder here.
                    let a = (now, std::time::Instant::now(), Duration::ZERO, None);
                    self.split_landed(p, &shard_id, &seq, &a, false);
                }
                // Strays of the split above need no further refresh: this map knows them.
                self.map_stale = false;
                let waiting = std::mem::take(&mut self.awaiting_map);
                self.route(waiting, now);
            }
            Err(e) => {
                self.map_failures += 1;
                // The KPL's schedule: 1 s, ×1.5, at most 30 s.
                let delay =
                    Duration::from_secs_f64((1.5f64).powi(self.map_failures as i32 - 1).min(30.0));
                self.map_next_try = now + delay;
                tracing::warn!(code = %e.code, message = %e.message, retry_in = ?delay, "cannot refresh the shard map");
                if e.kind == CallErrorKind::StreamNotFound {
                    for item in std::mem::take(&mut self.awaiting_map) {
                        self.finish_failed(item, &Fate::StreamNotFound);
                    }
                    for (_, _, p) in std::mem::take(&mut self.unverified) {
                        for item in p.items {
                            self.finish_failed(item, &Fate::StreamNotFound);
                        }
                    }
                } else {
                    // Do not hold records hostage to the map: try with the one we have.
                    let waiting = std::mem::take(&mut self.awaiting_map);
                    self.route(waiting, now);
                }
            }
        }
    }

    /// An aggregate landed on `shard_id`, not on the predicted shard (the map was stale:
    /// a split, a merge); Kinesis routed it by its first record's hash key. As the KPL does,
    /// each user record is judged alone: one whose hash key is in the landing shard's range
    /// is delivered there (consumers keep in-range sub-records, see
    /// `kinesis_aggregation::deaggregate_in_range`); the others are retried with a fresh map,
    /// re-predicted and re-aggregated. `record` says whether the attempt still has to be
    /// added to the histories.
    fn split_landed(
        &mut self,
        p: Pending,
        shard_id: &Arc<str>,
        seq: &Arc<str>,
        attempt: &(Instant, std::time::Instant, Duration, Option<AttemptError>),
        record: bool,
    ) {
        let range = self.map.range(shard_id);
        let aggregated = p.items.len() > 1;
        let mut delivered = 0u64;
        let mut strays = 0usize;
        for (pos, item) in p.items.into_iter().enumerate() {
            let mut item = if record {
                record_attempt(item, attempt.clone())
            } else {
                item
            };
            if range.is_some_and(|r| r.contains(item.hash)) {
                delivered += 1;
                self.deliver(item, pos, aggregated, shard_id, seq);
            } else {
                if let Some(last) = item.attempts.last_mut() {
                    last.error = Some(AttemptError {
                        code: "WrongShard".into(),
                        message: format!(
                            "landed on {shard_id}, whose hash-key range does not hold the record"
                        )
                        .into(),
                    });
                }
                strays += 1;
                self.awaiting_map.push(item);
            }
        }
        if strays > 0 {
            self.metrics.error("WrongShard");
            tracing::debug!(shard = %shard_id, delivered, strays, "aggregate landed on another shard than predicted");
            self.map_stale = true;
        }
        if delivered > 0 {
            self.metrics.kinesis_records_put.increment(1);
            self.metrics.user_records_put.increment(delivered);
        }
    }

    fn deliver(
        &mut self,
        mut item: Item,
        pos: usize,
        aggregated: bool,
        shard_id: &Arc<str>,
        seq: &Arc<str>,
    ) {
        self.release(&item);
        let outcome = PutOutcome {
            shard_id: shard_id.clone(),
            sequence_number: seq.clone(),
            sub_sequence_number: pos as u64,
            aggregated,
            attempts: std::mem::take(&mut item.attempts),
        };
        let _ = item.reply.send(Ok(outcome));
    }

    fn finish_failed(&mut self, item: Item, fate: &Fate) {
        self.release(&item);
        if matches!(fate, Fate::Expired) {
            self.metrics.user_records_expired.increment(1);
        }
        let stream = self.metrics.stream.clone();
        let (record, attempts, reply) = item.into_record();
        let failure = match fate {
            Fate::Expired => PutFailure::Expired { record, attempts },
            Fate::StreamNotFound => PutFailure::StreamNotFound {
                record,
                attempts,
                stream,
            },
            Fate::Rejected(code, message) => PutFailure::Rejected {
                record,
                attempts,
                code: code.to_string(),
                message: message.to_string(),
            },
            Fate::Closed => PutFailure::Closed { record, attempts },
        };
        let _ = reply.send(Err(failure));
    }

    /// Returns the item's permits (batched) and counts it done for `flush`.
    fn release(&mut self, item: &Item) {
        self.release_bytes += item.cost;
        self.release_records += 1;
        if let Some(n) = self.outstanding.get_mut(&item.epoch) {
            *n -= 1;
            if *n == 0 {
                self.outstanding.remove(&item.epoch);
            }
        }
    }

    fn release_permits(&mut self) {
        if self.release_bytes > 0 {
            self.bytes_sem.add_permits(self.release_bytes);
            self.release_bytes = 0;
        }
        if self.release_records > 0 {
            self.records_sem.add_permits(self.release_records);
            self.release_records = 0;
        }
    }

    fn check_flushes(&mut self) {
        let oldest = self.outstanding.keys().next().copied();
        while let Some((epoch, _)) = self.flush_waiters.front() {
            if oldest.is_some_and(|o| o <= *epoch) {
                break;
            }
            let (_, tx) = self.flush_waiters.pop_front().expect("peeked");
            let _ = tx.send(());
        }
    }
}

fn record_attempt(
    mut item: Item,
    (started, started_std, duration, error): (
        Instant,
        std::time::Instant,
        Duration,
        Option<AttemptError>,
    ),
) -> Item {
    item.attempts.push(Attempt {
        started: started_std,
        delay: started.saturating_duration_since(item.last_end),
        duration,
        error,
    });
    item.last_end = started + duration;
    item
}
