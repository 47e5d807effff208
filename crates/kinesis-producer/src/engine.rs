//! The producer's one background task: every stage of the pipeline, driven by events.
//!
//! ```text
//!  Command::Put / PutMany ──► predict shard ──► shard.agg (Aggregator) ──linger/full──► shard.ready
//!                                                                                      │ limiter
//!                                 ┌──── Event::PutDone ◄── spawned PutRecords ◄── batch (collector)
//!                                 ▼                        (≤ max in flight)
//!          success ─► Reply     retryable ─► backoff + budget ─► re-predict ─► shard.ready
//!          wrong shard / unknown shard ─► map refresh ─► verify or re-route
//! ```
//!
//! One task owns all state, so there are no locks on the record path; the only cross-task
//! traffic is the command channel (bounded in effect by the producer's permits), the event
//! channel from request tasks, and the replies. The loop never polls: it sleeps until the
//! earliest deadline it computed (linger, limiter refill, retry time, map retry) or until a
//! command or event arrives.
//!
//! What the record path costs, and why it is shaped so (the producer aims at under a
//! microsecond of CPU per 100-byte record, SDK and HTTP included; see `docs/BENCHMARKS.md`;
//! `put_batch` records also come in views of a shared buffer, see `payload.rs`, and the
//! MD5s of keys and aggregates run several at once, see `kinesis_aggregation::seal_all`):
//! an [`Item`] is moved through the channel, the aggregator and the request, so it is kept
//! small (the linger deadline and the expiry derive from its arrival; what only retried
//! records need is boxed); shard state lives in a vector indexed by the predicted shard's
//! position in the map, so a record costs no id hashing; a success needs no allocation
//! (the first attempt is stored inline); counters and the permits are updated once per
//! Kinesis record, not per user record.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kinesis_aggregation::{
    AggregatedRecord, Aggregator, AggregatorConfig, Finished, HashKey, KinesisRecord, Unsealed,
    seal_all,
};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use crate::api::{
    CallError, CallErrorKind, EntryResult, KinesisApi, StreamId, classify_error_code,
};
use crate::config::Config;
use crate::error::PutFailure;
use crate::limiter::ShardLimiter;
use crate::payload::Payload;
use crate::record::{Attempt, AttemptError, Attempts, Landing, PutOutcome, Record};
use crate::reply::{Batch, Batches, Reply};
use crate::retry::{Backoff, RetryBudget};
use crate::shard_map::{self, ShardMap};

/// How long the collector holds a request that is not full while a shard's limiter is
/// what keeps records back, so that a request carries what the limiter lets out over this
/// time rather than one record per token refill (the KPL drains its limiter every 25 ms).
const COALESCE: Duration = Duration::from_millis(25);

/// A user record inside the pipeline.
pub(crate) struct Item {
    pub user: Payload,
    pub hash: HashKey,
    /// When the record was put (once it had its buffer space): its linger deadline and its
    /// expiry follow from it and the configuration.
    pub arrival: Instant,
    pub reply: Reply,
    /// What few records need: an explicit hash key's text, or failed attempts.
    cold: Option<Box<Cold>>,
    /// Bytes permits held.
    cost: u32,
    epoch: u64,
}

#[derive(Default)]
struct Cold {
    /// The explicit hash key as the user wrote it, to hand the record back unchanged.
    ehk_text: Option<String>,
    /// Attempts so far (all failed, or a success whose verdict waits for a fresh map).
    attempts: Vec<Attempt>,
    /// End of the last attempt: the base of the next attempt's delay.
    last_end: Option<Instant>,
}

impl AggregatedRecord for Item {
    fn partition_key(&self) -> &str {
        self.user.partition_key()
    }
    fn explicit_hash_key(&self) -> Option<HashKey> {
        self.user.explicit_hash_key()
    }
    fn data(&self) -> &[u8] {
        self.user.data()
    }
    fn data_bytes(&self) -> Bytes {
        self.user.data_bytes()
    }
}

impl Item {
    pub(crate) fn new(
        user: Payload,
        ehk_text: Option<String>,
        hash: HashKey,
        reply: Reply,
        arrival: Instant,
        cost: usize,
    ) -> Item {
        Item {
            user,
            hash,
            arrival,
            reply,
            cold: ehk_text.map(|t| {
                Box::new(Cold {
                    ehk_text: Some(t),
                    ..Cold::default()
                })
            }),
            // At most the largest record plus the overhead: validated at build.
            cost: cost as u32,
            epoch: 0,
        }
    }

    /// End of the previous attempt, or the arrival: the base of the next attempt's delay.
    fn last_end(&self) -> Instant {
        self.cold
            .as_ref()
            .and_then(|c| c.last_end)
            .unwrap_or(self.arrival)
    }

    fn attempt_count(&self) -> usize {
        self.cold.as_ref().map_or(0, |c| c.attempts.len())
    }

    /// Adds an attempt to the record's history.
    fn record_attempt(&mut self, done: &Done, error: Option<AttemptError>) {
        let attempt = done.attempt(self.last_end(), error);
        let cold = self.cold.get_or_insert_with(Box::default);
        cold.attempts.push(attempt);
        cold.last_end = Some(done.started + done.duration);
    }

    /// The history for the outcome; `last`, if given, is the attempt that just succeeded.
    fn take_attempts(&mut self, last: Option<Attempt>) -> Attempts {
        match (self.cold.as_mut(), last) {
            (Some(c), last) if !c.attempts.is_empty() => {
                c.attempts.extend(last);
                Attempts::Many(std::mem::take(&mut c.attempts))
            }
            (_, Some(a)) => Attempts::One(a),
            // Every caller passes an attempt or has recorded one.
            (_, None) => Attempts::Many(Vec::new()),
        }
    }

    pub(crate) fn into_record(self) -> (Record, Vec<Attempt>, Reply) {
        let (partition_key, _, data) = self.user.into_parts();
        let (explicit_hash_key, attempts) = match self.cold {
            Some(c) => (c.ehk_text, c.attempts),
            None => (None, Vec::new()),
        };
        (
            Record {
                partition_key,
                explicit_hash_key,
                data,
            },
            attempts,
            self.reply,
        )
    }
}

/// One finished request, as each of its records' attempt histories sees it.
struct Done {
    started: Instant,
    started_std: std::time::Instant,
    duration: Duration,
}

impl Done {
    fn attempt(&self, last_end: Instant, error: Option<AttemptError>) -> Attempt {
        Attempt {
            started: self.started_std,
            delay: self.started.saturating_duration_since(last_end),
            duration: self.duration,
            error,
        }
    }
}

pub(crate) enum Command {
    Put(Item),
    /// A chunk of `put_batch`: one hand-over for many records.
    PutMany(Chunk),
    Flush(oneshot::Sender<()>),
    Close(oneshot::Sender<()>),
}

/// Records of one `put_batch`, on their way to the engine, whose replies name their batch
/// once the engine has registered it.
pub(crate) struct Chunk {
    pub(crate) items: Vec<Item>,
    pub(crate) batch: Arc<Batch>,
}

impl Drop for Chunk {
    fn drop(&mut self) {
        // Dropped with its records: the engine is gone (the runtime shut down with the
        // command still queued), and no one else will ever finish them.
        if !self.items.is_empty() {
            self.batch.abandon();
        }
    }
}

impl Chunk {
    /// The records, registered with `batches`.
    fn register(mut self, batches: &mut Batches) -> Vec<Item> {
        let mut items = std::mem::take(&mut self.items);
        let id = batches.register(Arc::clone(&self.batch), items.len());
        for item in &mut items {
            if let Reply::Batch { batch, .. } = &mut item.reply {
                *batch = id;
            }
        }
        items
    }
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
    /// Taken out when the request is sent: a retry re-aggregates the user records.
    record: Option<KinesisRecord>,
    /// An aggregate's bytes before their checksum, which is computed when the request is
    /// sent, for all its aggregates together (`seal_all`); `record.data` is empty until then.
    unsealed: Option<Unsealed>,
    items: Vec<Item>,
    /// The predicted shard ("" when there was no map).
    shard: Arc<str>,
    /// Its state's slot in `Engine::shards`.
    slot: usize,
    billed: usize,
    /// The oldest record's arrival: the linger deadline and the expiry follow.
    oldest: Instant,
    not_before: Instant,
}

impl Pending {
    fn new(
        (f, unsealed): (Finished<Item>, Option<Unsealed>),
        shard: Arc<str>,
        slot: usize,
        oldest: Instant,
        not_before: Instant,
    ) -> Pending {
        Pending {
            billed: f.record.billed_size() + unsealed.as_ref().map_or(0, Unsealed::len),
            record: Some(f.record),
            unsealed,
            items: f.user_records,
            shard,
            slot,
            oldest,
            not_before,
        }
    }
}

struct ShardState {
    id: Arc<str>,
    /// Records go alone (aggregation off, or no map): they skip the aggregator.
    solo: bool,
    agg: Aggregator<Item>,
    /// Arrival of the oldest record in `agg`.
    agg_oldest: Option<Instant>,
    ready: VecDeque<Pending>,
    limiter: ShardLimiter,
    in_flight: usize,
    /// Kinesis records of this shard in the batch being collected.
    batched: usize,
}

/// "No state yet" in `Engine::route_table`.
const NO_SLOT: usize = usize::MAX;

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

/// Counts that a loop over the records of one Kinesis record adds up, to be applied once:
/// permits, flush epochs and the retries histogram.
#[derive(Default)]
struct Tally {
    bytes: usize,
    records: usize,
    /// (epoch, records) runs: the records of an aggregate almost always share one epoch.
    epochs: Vec<(u64, usize)>,
    /// (retries, records) runs, for `RetriesPerRecord`.
    retries: Vec<(usize, usize)>,
}

impl Tally {
    fn clear(&mut self) {
        self.bytes = 0;
        self.records = 0;
        self.epochs.clear();
        self.retries.clear();
    }

    fn add(&mut self, item: &Item, retries: usize) {
        self.bytes += item.cost as usize;
        self.records += 1;
        match self.epochs.last_mut() {
            Some((e, n)) if *e == item.epoch => *n += 1,
            _ => self.epochs.push((item.epoch, 1)),
        }
        match self.retries.last_mut() {
            Some((r, n)) if *r == retries => *n += 1,
            _ => self.retries.push((retries, 1)),
        }
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

    /// Per-shard state by slot. A slot is never reused, so a request in flight finds its
    /// shard's state by slot even after a map change removed it (it finds `None`).
    shards: Vec<Option<ShardState>>,
    /// Live slots by shard id (the "" shard holds records sent while there is no map).
    slot_of: HashMap<Arc<str>, usize>,
    /// Live slots in creation order: the collector's round robin walks it.
    active: Vec<usize>,
    /// For each open shard of the map (`ShardMap::predict_index`), its slot, or `NO_SLOT`
    /// until a record goes there: predicting a record's shard state costs no id lookup.
    route_table: Vec<usize>,
    rotation: usize,
    batch: Vec<Pending>,
    batch_bytes: usize,
    /// When the first Kinesis record of `batch` joined it.
    batch_since: Instant,
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
    /// Reused by `succeed`, so that counting costs no allocation per Kinesis record.
    tally: Tally,
    /// The `put_batch` batches with records here.
    batches: Batches,
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
        let map = map.unwrap_or_default();
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
            route_table: vec![NO_SLOT; map.open_shards()],
            map,
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
            shards: Vec::new(),
            slot_of: HashMap::new(),
            active: Vec::new(),
            rotation: 0,
            batch: Vec::new(),
            batch_bytes: 0,
            batch_since: now,
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
            tally: Tally::default(),
            batches: Batches::default(),
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
                        // One clock reading per burst: a record's own time is its arrival.
                        let now = Instant::now();
                        self.on_command(cmd, now);
                        // Take what else is queued before pumping: one pass per burst.
                        for _ in 0..1024 {
                            match self.rx.try_recv() {
                                Ok(cmd) => self.on_command(cmd, now),
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
                Command::PutMany(chunk) => {
                    for item in chunk.register(&mut self.batches) {
                        self.finish_failed(item, &Fate::Closed);
                    }
                }
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

    fn on_command(&mut self, cmd: Command, now: Instant) {
        match cmd {
            Command::Put(item) => {
                *self.outstanding.entry(self.epoch).or_default() += 1;
                self.put_new(item, now);
            }
            Command::PutMany(chunk) => {
                let items = chunk.register(&mut self.batches);
                *self.outstanding.entry(self.epoch).or_default() += items.len();
                for item in items {
                    self.put_new(item, now);
                }
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

    fn put_new(&mut self, mut item: Item, now: Instant) {
        item.epoch = self.epoch;
        let slot = self.slot_for(item.hash);
        self.push_new(slot, item, now);
    }

    /// The slot of the shard state for `key`'s predicted shard, created on first use.
    fn slot_for(&mut self, key: HashKey) -> usize {
        match self.map.predict_index(key) {
            Some(i) => match self.route_table[i] {
                NO_SLOT => {
                    let slot = self.ensure_slot(self.map.open_id(i).clone());
                    self.route_table[i] = slot;
                    slot
                }
                slot => slot,
            },
            // No map, or a gap mid-reshard: Kinesis routes each record by its own key.
            None => self.ensure_slot(Arc::from("")),
        }
    }

    fn ensure_slot(&mut self, id: Arc<str>) -> usize {
        if let Some(&slot) = self.slot_of.get(&id) {
            return slot;
        }
        let cfg = &self.cfg;
        // Without a map, records go alone: an aggregate could span shards.
        let aggregate = cfg.aggregation_enabled && !id.is_empty();
        let state = ShardState {
            agg: Aggregator::new(AggregatorConfig {
                max_bytes: cfg.aggregation_max_size,
                max_count: if aggregate {
                    cfg.aggregation_max_count
                } else {
                    1
                },
            }),
            agg_oldest: None,
            ready: VecDeque::new(),
            limiter: ShardLimiter::new(
                if id.is_empty() {
                    u32::MAX / 1000
                } else {
                    cfg.rate_limit
                },
                Instant::now(),
            ),
            in_flight: 0,
            batched: 0,
            solo: !aggregate,
            id: id.clone(),
        };
        let slot = self.shards.len();
        self.shards.push(Some(state));
        self.slot_of.insert(id, slot);
        self.active.push(slot);
        slot
    }

    fn shard_mut(&mut self, slot: usize) -> Option<&mut ShardState> {
        self.shards.get_mut(slot).and_then(Option::as_mut)
    }

    /// A new record into its shard's aggregator.
    fn push_new(&mut self, slot: usize, item: Item, now: Instant) {
        let arrival = item.arrival;
        let s = self.shards[slot]
            .as_mut()
            .expect("slot_for returns live slots");
        if s.solo {
            // What an aggregator of one would make, without its key table and its two
            // pushes per record (the second one refused).
            let user = &item.user;
            let record = KinesisRecord {
                partition_key: user.partition_key().to_owned(),
                explicit_hash_key: user.explicit_hash_key(),
                data: user.data_bytes(),
            };
            let f = (
                Finished {
                    record,
                    user_records: vec![item],
                },
                None,
            );
            s.ready
                .push_back(Pending::new(f, s.id.clone(), slot, arrival, now));
            return;
        }
        if let Err(full) = s.agg.try_push(item) {
            if let Some(f) = s.agg.finish_unsealed() {
                let oldest = s.agg_oldest.unwrap_or(now);
                s.ready
                    .push_back(Pending::new(f, s.id.clone(), slot, oldest, now));
            }
            s.agg_oldest = None;
            // An empty aggregator takes any record.
            let _ = s.agg.try_push(full.into_inner());
        }
        s.agg_oldest = Some(s.agg_oldest.map_or(arrival, |o| o.min(arrival)));
    }

    /// Retried records: re-predicted, re-aggregated per shard, queued at `not_before`.
    fn route(&mut self, items: Vec<Item>, not_before: Instant) {
        if items.is_empty() {
            return;
        }
        let mut groups: BTreeMap<usize, Vec<Item>> = BTreeMap::new();
        for mut item in items {
            // A record that takes longer than its chunk's others keeps its own copy, not
            // the chunk's whole buffer.
            item.user.detach();
            let slot = self.slot_for(item.hash);
            groups.entry(slot).or_default().push(item);
        }
        let order = self.cfg.preserve_order_per_shard;
        for (slot, items) in groups {
            let s = self.shards[slot]
                .as_mut()
                .expect("slot_for returns live slots");
            let mut agg: Aggregator<Item> = Aggregator::new(AggregatorConfig {
                max_bytes: self.cfg.aggregation_max_size,
                max_count: if self.cfg.aggregation_enabled && !s.id.is_empty() {
                    self.cfg.aggregation_max_count
                } else {
                    1
                },
            });
            let mut out = Vec::new();
            for item in items {
                if let Err(full) = agg.try_push(item) {
                    out.extend(agg.finish_unsealed());
                    let _ = agg.try_push(full.into_inner());
                }
            }
            out.extend(agg.finish_unsealed());
            let pending = out.into_iter().map(|f| {
                let oldest =
                    f.0.user_records
                        .iter()
                        .map(|i| i.arrival)
                        .min()
                        .unwrap_or(not_before);
                Pending::new(f, s.id.clone(), slot, oldest, not_before)
            });
            if order {
                // Ahead of newer records of the shard: the shard waits for its retries.
                let pending: Vec<Pending> = pending.collect();
                for p in pending.into_iter().rev() {
                    s.ready.push_front(p);
                }
            } else {
                s.ready.extend(pending);
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

        let mut wake: Option<Instant> = None;
        for &slot in &self.active {
            let Some(s) = self.shards[slot].as_mut() else {
                continue;
            };
            let Some(oldest) = s.agg_oldest else {
                continue;
            };
            let d = deadline(&self.cfg, oldest);
            if flushing || d <= now {
                if let Some(f) = s.agg.finish_unsealed() {
                    s.ready
                        .push_back(Pending::new(f, s.id.clone(), slot, oldest, now));
                }
                s.agg_oldest = None;
            } else {
                wake = Some(wake.map_or(d, |w| w.min(d)));
            }
        }
        if let Some(w) = wake {
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
            // A shard's limiter held records back: more will be let out soon.
            let mut limited = false;
            let mut expired = Vec::new();
            let mut reroute = Vec::new();
            let mut wake = self.wake;
            let n = self.active.len();
            for k in 0..n {
                let slot = self.active[(self.rotation + k) % n];
                let Some(s) = self.shards[slot].as_mut() else {
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
                        wake = Some(wake.map_or(p.not_before, |w| w.min(p.not_before)));
                        if order {
                            break;
                        }
                        i += 1;
                        continue;
                    }
                    if expires(&self.cfg, p.oldest) <= now {
                        // Fail what expired, send the rest again.
                        let p = s.ready.remove(i).expect("index checked");
                        for item in p.items {
                            if expires(&self.cfg, item.arrival) <= now {
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
                        wake = Some(wake.map_or(at, |w| w.min(at)));
                        limited = true;
                        break;
                    }
                    let p = s.ready.remove(i).expect("index checked");
                    if self.batch.is_empty() {
                        self.batch_since = now;
                    }
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
            self.wake = wake;
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
            let oldest = self
                .batch
                .iter()
                .map(|p| p.oldest)
                .min()
                .expect("non-empty");
            // A flush sends at once what it can, without waiting for the linger time...
            let mut send_at = if flushing {
                now
            } else {
                deadline(&self.cfg, oldest)
            };
            if limited {
                // ...but records that wait for tokens wait anyway: let the request gather
                // what the limiter lets out for a little while instead of going with one
                // or two records (a flush of a backlog otherwise sends a request per token).
                send_at = send_at.max(self.batch_since + COALESCE);
            }
            let due = full || send_at <= now || self.batch_full_for(1);
            if !due {
                self.wake_at(send_at);
                return;
            }
            if self.in_flight >= self.cfg.max_in_flight_requests {
                // A request finishing wakes us.
                return;
            }
            self.send_batch();
        }
    }

    fn send_batch(&mut self) {
        let mut batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        self.in_flight += 1;
        let mut records = Vec::with_capacity(batch.len());
        let mut unsealed = Vec::new();
        for (i, p) in batch.iter_mut().enumerate() {
            if let Some(s) = self.shard_mut(p.slot) {
                s.in_flight += 1;
                s.batched = 0;
            }
            records.push(p.record.take().unwrap_or_else(|| KinesisRecord {
                partition_key: String::new(),
                explicit_hash_key: None,
                data: Bytes::new(),
            }));
            if let Some(u) = p.unsealed.take() {
                unsealed.push((i, u));
            }
        }
        // The request's aggregates are checksummed together: several MD5s at once cost
        // less than one after the other (see `kinesis_aggregation::seal_all`).
        let (at, aggregates): (Vec<usize>, Vec<Unsealed>) = unsealed.into_iter().unzip();
        for (i, data) in at.into_iter().zip(seal_all(aggregates)) {
            records[i].data = data;
        }
        // One span per collection (debug) and one per request: never one per record, whose
        // CPU cost is a measured target. Field values are computed only when a subscriber
        // wants the span. No partition key or data goes into a field: they are payload.
        let collect = tracing::debug_span!(
            "kinesis.collect",
            stream = self.metrics.stream.as_str(),
            records = batch.len(),
            user_records = batch.iter().map(|p| p.items.len()).sum::<usize>(),
            waited_ms = Instant::now()
                .saturating_duration_since(self.batch_since)
                .as_millis() as u64,
        );
        let span = tracing::info_span!(
            parent: &collect,
            "kinesis.put_records",
            stream = self.metrics.stream.as_str(),
            shard = predicted_shard(&batch),
            records = batch.len(),
            bytes = batch.iter().map(|p| p.billed).sum::<usize>(),
            attempt = batch
                .iter()
                .flat_map(|p| &p.items)
                .map(|i| i.attempt_count() + 1)
                .max()
                .unwrap_or(1),
            ok = tracing::field::Empty,
            failed = tracing::field::Empty,
            error_code = tracing::field::Empty,
        );
        drop(collect);
        let api = Arc::clone(&self.api);
        let stream = self.stream.clone();
        let events = self.events_tx.clone();
        let timeout = self.cfg.request_timeout;
        let request = async move {
            let started = Instant::now();
            let started_std = std::time::Instant::now();
            let result =
                match tokio::time::timeout(timeout, api.put_records(&stream, records)).await {
                    Ok(r) => r,
                    Err(_) => Err(CallError::new(
                        CallErrorKind::Transient,
                        "Timeout",
                        format!("no answer within the request timeout of {timeout:?}"),
                    )),
                };
            record_outcome(&result);
            let _ = events.send(Event::PutDone {
                batch,
                started,
                started_std,
                duration: started.elapsed(),
                result,
            });
        };
        tokio::spawn(tracing::Instrument::instrument(request, span));
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
                    if let Some(s) = self.shard_mut(p.slot) {
                        s.in_flight -= 1;
                    }
                }
                self.metrics
                    .request_time
                    .record(duration.as_secs_f64() * 1000.0);
                let done = Done {
                    started,
                    started_std,
                    duration,
                };
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
                                if let Some(s) = self.shard_mut(p.slot) {
                                    s.limiter.on_throttled(now);
                                }
                            }
                        }
                        let items = failed_items(batch, &done, &err);
                        self.retry_or_fail(items, e.kind, &e.code, &e.message, now);
                    }
                    Ok(entries) if entries.len() != batch.len() => {
                        let msg = format!("{} results for {} records", entries.len(), batch.len());
                        let err = AttemptError {
                            code: "ResultCountMismatch".into(),
                            message: msg.as_str().into(),
                        };
                        self.metrics.error("ResultCountMismatch");
                        let items = failed_items(batch, &done, &err);
                        self.retry_or_fail(
                            items,
                            CallErrorKind::Transient,
                            "ResultCountMismatch",
                            &msg,
                            now,
                        );
                    }
                    Ok(entries) => self.on_results(batch, entries, &done, now),
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
        done: &Done,
        now: Instant,
    ) {
        let mut throttled: Vec<usize> = Vec::new();
        let mut succeeded: Vec<usize> = Vec::new();
        let mut retry_throttled = Vec::new();
        let mut retry_transient = Vec::new();
        let mut rejected = Vec::new();
        for (p, entry) in batch.into_iter().zip(entries) {
            match entry {
                EntryResult::Ok {
                    shard_id,
                    sequence_number,
                } => {
                    // Feedback once per shard and request, not per entry.
                    if !succeeded.contains(&p.slot) {
                        succeeded.push(p.slot);
                    }
                    let aggregated = p.items.len() > 1;
                    if shard_id == p.shard || p.shard.is_empty() || !aggregated {
                        // A lone record is routed by its own key, so it is where it belongs
                        // even if the map is stale; a different shard means the map is.
                        if shard_id != p.shard && !p.shard.is_empty() {
                            self.map_stale = true;
                        }
                        self.succeed(p, &shard_id, &sequence_number, done);
                        continue;
                    }
                    self.map_stale = true;
                    if self.map.knows(&shard_id) {
                        self.split_landed(p, &shard_id, &sequence_number, Some(done));
                    } else {
                        // Only a fresh map can tell which records the new shard holds.
                        let mut p = p;
                        for item in &mut p.items {
                            item.record_attempt(done, None);
                        }
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
                    let slot = p.slot;
                    let items = failed_items(vec![p], done, &err);
                    match kind {
                        CallErrorKind::Throttling => {
                            if !throttled.contains(&slot) {
                                throttled.push(slot);
                            }
                            retry_throttled.extend(items);
                        }
                        CallErrorKind::Transient => retry_transient.extend(items),
                        _ => rejected.push((items, kind, code, message)),
                    }
                }
            }
        }
        for &slot in &throttled {
            if let Some(s) = self.shard_mut(slot) {
                s.limiter.on_throttled(now);
            }
        }
        for &slot in &succeeded {
            if !throttled.contains(&slot)
                && let Some(s) = self.shard_mut(slot)
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

    /// Every record of `p` is in the stream: each gets its outcome; counters, permits and
    /// flush accounting are updated once for the lot. Records at their first attempt (almost
    /// all) share one [`Landing`] and reach their batches a run at a time.
    fn succeed(
        &mut self,
        p: Pending,
        shard_id: &Arc<str>,
        sequence_number: &Arc<str>,
        done: &Done,
    ) {
        let aggregated = p.items.len() > 1;
        self.metrics.kinesis_records_put.increment(1);
        self.metrics
            .kinesis_records_data_put
            .increment(p.billed as u64);
        self.metrics
            .user_records_put
            .increment(p.items.len() as u64);
        let landing = Arc::new(Landing {
            shard_id: Arc::clone(shard_id),
            sequence_number: Arc::clone(sequence_number),
            aggregated,
            started: done.started_std,
            duration: done.duration,
        });
        let mut tally = std::mem::take(&mut self.tally);
        let mut data = 0u64;
        let mut retried = Vec::new();
        let metrics = &self.metrics;
        let first_tries = p.items.into_iter().enumerate().filter_map(|(pos, item)| {
            data += item.user.data().len() as u64;
            if item.attempt_count() > 0 {
                retried.push((pos, item));
                return None;
            }
            let delay = done.started.saturating_duration_since(item.arrival);
            metrics.buffering_time.record(delay.as_secs_f64() * 1000.0);
            tally.add(&item, 0);
            Some((item.reply, pos as u32, delay))
        });
        self.batches.landed(&landing, first_tries);
        for (pos, mut item) in retried {
            let attempt = done.attempt(item.last_end(), None);
            let attempts = item.take_attempts(Some(attempt));
            let all = attempts.as_slice();
            self.metrics
                .buffering_time
                .record(all[0].delay.as_secs_f64() * 1000.0);
            tally.add(&item, all.len() - 1);
            let outcome = PutOutcome {
                landing: Arc::clone(&landing),
                sub_sequence_number: pos as u64,
                attempts,
            };
            self.batches.send(item.reply, Ok(outcome));
        }
        self.metrics.user_records_data_put.increment(data);
        for &(retries, n) in &tally.retries {
            self.metrics
                .retries_per_record
                .record_many(retries as f64, n);
        }
        self.release_tally(&tally);
        tally.clear();
        self.tally = tally;
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
        let retry_no = items.iter().map(Item::attempt_count).max().unwrap_or(1);
        let at = (now + self.backoff.delay(kind, retry_no)).max(self.budget.acquire(now, kind));
        let mut keep = Vec::with_capacity(items.len());
        for item in items {
            // A retry that would start after the TTL cannot succeed in time: say so now.
            if at >= expires(&self.cfg, item.arrival) {
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
                let gone: Vec<usize> = self
                    .active
                    .iter()
                    .copied()
                    .filter(|&slot| {
                        let id = &self.shards[slot].as_ref().expect("active slots live").id;
                        !self.map.is_open(id) && (!id.is_empty() || self.map.open_shards() > 0)
                    })
                    .collect();
                let mut items = Vec::new();
                for slot in gone {
                    let s = self.shards[slot].as_mut().expect("active slots live");
                    if let Some((f, _)) = s.agg.finish_unsealed() {
                        items.extend(f.user_records);
                    }
                    s.agg_oldest = None;
                    for p in s.ready.drain(..) {
                        items.extend(p.items);
                    }
                    if s.in_flight == 0 {
                        let id = s.id.clone();
                        self.shards[slot] = None;
                        self.slot_of.remove(&id);
                        self.active.retain(|&a| a != slot);
                    }
                }
                // The map's positions changed: the route table starts over.
                self.route_table = vec![NO_SLOT; self.map.open_shards()];
                for item in items {
                    let slot = self.slot_for(item.hash);
                    self.push_new(slot, item, now);
                }
                for (shard_id, seq, p) in std::mem::take(&mut self.unverified) {
                    // The attempt is already in the histories.
                    self.split_landed(p, &shard_id, &seq, None);
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
    /// re-predicted and re-aggregated. `done` is the attempt to add to the histories, if it
    /// is not there yet.
    fn split_landed(
        &mut self,
        p: Pending,
        shard_id: &Arc<str>,
        seq: &Arc<str>,
        done: Option<&Done>,
    ) {
        let range = self.map.range(shard_id);
        // The successful attempt: this one, or (verified after a map load) the last one in
        // the histories. Outcomes here carry full histories; the landing only names it.
        let (started, duration) = match done {
            Some(d) => (d.started_std, d.duration),
            None => p
                .items
                .first()
                .and_then(|i| i.cold.as_ref()?.attempts.last())
                .map_or((std::time::Instant::now(), Duration::ZERO), |a| {
                    (a.started, a.duration)
                }),
        };
        let landing = Arc::new(Landing {
            shard_id: Arc::clone(shard_id),
            sequence_number: Arc::clone(seq),
            aggregated: p.items.len() > 1,
            started,
            duration,
        });
        let mut delivered = 0u64;
        let mut strays = 0usize;
        for (pos, mut item) in p.items.into_iter().enumerate() {
            if let Some(done) = done {
                item.record_attempt(done, None);
            }
            if range.is_some_and(|r| r.contains(item.hash)) {
                delivered += 1;
                self.deliver(item, pos, &landing);
            } else {
                if let Some(last) = item.cold.as_mut().and_then(|c| c.attempts.last_mut()) {
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

    /// A record whose attempts are all recorded (the last one succeeded) is in the stream.
    fn deliver(&mut self, mut item: Item, pos: usize, landing: &Arc<Landing>) {
        self.release(&item);
        let attempts = item.take_attempts(None);
        let outcome = PutOutcome {
            landing: Arc::clone(landing),
            sub_sequence_number: pos as u64,
            attempts,
        };
        self.batches.send(item.reply, Ok(outcome));
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
        self.batches.send(reply, Err(failure));
    }

    /// Returns the item's permits (batched) and counts it done for `flush`.
    fn release(&mut self, item: &Item) {
        self.release_bytes += item.cost as usize;
        self.release_records += 1;
        self.count_done(item.epoch, 1);
    }

    fn release_tally(&mut self, tally: &Tally) {
        self.release_bytes += tally.bytes;
        self.release_records += tally.records;
        for &(epoch, n) in &tally.epochs {
            self.count_done(epoch, n);
        }
    }

    fn count_done(&mut self, epoch: u64, n: usize) {
        if let Some(left) = self.outstanding.get_mut(&epoch) {
            *left -= n;
            if *left == 0 {
                self.outstanding.remove(&epoch);
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

/// The linger deadline of a record that arrived at `arrival`: never after its expiry.
fn deadline(cfg: &Config, arrival: Instant) -> Instant {
    let expires = expires(cfg, arrival);
    arrival
        .checked_add(cfg.record_max_buffered_time)
        .map_or(expires, |d| d.min(expires))
}

/// When a record that arrived at `arrival` expires. Saturating: a huge TTL must not overflow
/// the clock (it did in one KPL user's integration).
fn expires(cfg: &Config, arrival: Instant) -> Instant {
    arrival
        .checked_add(cfg.record_ttl)
        .or_else(|| arrival.checked_add(Duration::from_secs(86_400 * 365)))
        .unwrap_or(arrival)
}

/// The predicted shard of a request for its span: the shard's id when every record goes to
/// one shard, "" without a map, "(several)" otherwise.
fn predicted_shard(batch: &[Pending]) -> &str {
    match batch.split_first() {
        Some((first, rest)) if rest.iter().all(|p| p.shard == first.shard) => &first.shard,
        Some(_) => "(several)",
        None => "",
    }
}

/// Writes a request's outcome into the current `kinesis.put_records` span: how many Kinesis
/// records were accepted and refused, and an error code (the call's, or the first entry's).
/// Messages stay out: only codes, which carry no payload.
fn record_outcome(result: &Result<Vec<EntryResult>, CallError>) {
    let span = tracing::Span::current();
    if span.is_disabled() {
        return;
    }
    match result {
        Ok(entries) => {
            let mut failed = 0usize;
            let mut code = None;
            for e in entries {
                if let EntryResult::Failed { code: c, .. } = e {
                    failed += 1;
                    code.get_or_insert_with(|| c.clone());
                }
            }
            span.record("ok", entries.len() - failed);
            span.record("failed", failed);
            if let Some(code) = code {
                span.record("error_code", &*code);
            }
        }
        Err(e) => {
            span.record("ok", 0usize);
            span.record("error_code", &*e.code);
        }
    }
}

/// The records of `batch`, each with the failed attempt added to its history.
fn failed_items(batch: Vec<Pending>, done: &Done, err: &AttemptError) -> Vec<Item> {
    batch
        .into_iter()
        .flat_map(|p| p.items)
        .map(|mut i| {
            i.record_attempt(done, Some(err.clone()));
            i
        })
        .collect()
}
