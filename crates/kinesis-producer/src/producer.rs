//! The public handle: builder, `put`, `flush`, `close`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kinesis_aggregation::{HashKey, UserRecord};
use tokio::sync::{Semaphore, TryAcquireError, mpsc, oneshot};
use tokio::time::Instant;

use crate::api::{CallErrorKind, KinesisApi, SdkApi, StreamId};
use crate::config::Config;
use crate::engine::{Chunk, Command, Engine, Item};
use crate::error::{BuildError, ConfigError, PutError, PutFailure};
use crate::payload::Payload;
use crate::record::Record;
use crate::reply::{Batch, PutBatchHandle, PutHandle, Reply, UNREGISTERED};
use crate::shard_map;

/// What one buffered record costs the producer beyond its data and partition key, as counted
/// against [`ProducerBuilder::max_buffered_bytes`]: the pipeline item, the result channel or
/// batch slot, the record's share of its aggregate and request, and the allocator's own
/// overhead on the key and data. Measured under overload with 100-byte records, the process
/// then grows by 1.1–1.3 × `max_buffered_bytes` (docs/BENCHMARKS.md): a conservative round
/// figure.
pub const RECORD_OVERHEAD: usize = 1024;

/// Builds a [`Producer`]. Every setting has a default; the KPL's name for it is given.
#[derive(Debug, Clone)]
pub struct ProducerBuilder {
    client: aws_sdk_kinesis::Client,
    stream: Option<String>,
    config: Config,
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident : $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.config.$name = value;
            self
        }
    };
}

impl ProducerBuilder {
    /// The stream to write to: a name, or an ARN (`arn:aws:kinesis:...:stream/NAME`).
    /// Required (or `KINESIS_PRODUCER_STREAM` with [`from_env`](Self::from_env)).
    pub fn stream(mut self, name_or_arn: impl Into<String>) -> Self {
        self.stream = Some(name_or_arn.into());
        self
    }

    /// Whether to pack user records bound for one shard into KPL aggregates
    /// (`AggregationEnabled`). Default: true.
    pub fn aggregation(mut self, enabled: bool) -> Self {
        self.config.aggregation_enabled = enabled;
        self
    }

    setter! {
        /// Most user records per aggregate (`AggregationMaxCount`). Default: 4294967295.
        aggregation_max_count: usize
    }
    setter! {
        /// Most bytes per aggregate (`AggregationMaxSize`). Default: 51200.
        aggregation_max_size: usize
    }
    setter! {
        /// Most Kinesis records per `PutRecords` (`CollectionMaxCount`), 1..=500. Default: 500.
        collection_max_count: usize
    }
    setter! {
        /// Most bytes (data + partition keys, as Kinesis counts) per `PutRecords`
        /// (`CollectionMaxSize`). Default: 5 MiB.
        collection_max_size: usize
    }
    setter! {
        /// How long a record may wait for others to share its aggregate and request
        /// (`RecordMaxBufferedTime`). A full request goes at once. Default: 100 ms.
        record_max_buffered_time: Duration
    }
    setter! {
        /// How long the producer keeps trying (`RecordTtl`): after it, the record fails with
        /// [`PutFailure::Expired`]. Default: 30 s.
        record_ttl: Duration
    }
    setter! {
        /// Per-shard rate limit in percent of the shard's 1000 records/s and 1 MiB/s
        /// (`RateLimit`): the most the producer sends a shard. Up to 200 %, a shard starts
        /// at its nominal capacity and probes above it while Kinesis accepts more; above
        /// 200 % it starts at the limit (an opened limiter). Throttling lowers the effective
        /// rate, then it recovers. Default: 150.
        rate_limit: u32
    }
    setter! {
        /// Most `PutRecords` requests in flight at once (the KPL's `MaxConnections`).
        /// Default: 24.
        max_in_flight_requests: usize
    }
    setter! {
        /// How long one `PutRecords` may take before it counts as failed and is retried
        /// (`RequestTimeout`). Default: 6 s.
        request_timeout: Duration
    }
    setter! {
        /// Largest user record, data plus partition key (`MaxUserRecordSize`).
        /// Default: 1 MiB (raise it for streams with a larger record limit).
        max_user_record_size: usize
    }
    setter! {
        /// Backpressure: most memory held for records put but not yet finished, in flight
        /// included: each record counts its data and partition key plus
        /// [`RECORD_OVERHEAD`] bytes for the producer's own bookkeeping (its result channel,
        /// attempts, queue entries), so that the bound is close to the real footprint even
        /// for small records. Default: 64 MiB.
        max_buffered_bytes: usize
    }
    setter! {
        /// Backpressure: most records put but not yet finished. Default: 100 000.
        max_buffered_records: usize
    }
    setter! {
        /// How often the shard map is reloaded (`ListShards`) even when no result shows it
        /// stale, so that a reshard is noticed before records land on a closed shard's child
        /// (`Duration::ZERO`: only on evidence). Results from an unexpected shard and a
        /// failed load still trigger a reload at once (with backoff). Default: 60 s.
        shard_map_refresh_interval: Duration
    }
    setter! {
        /// Keep the order of records per shard (and so per partition key): at most one
        /// Kinesis record (one aggregate) per shard in flight, failed records retried before
        /// newer ones. Costs throughput: one aggregate per round trip per shard, and without
        /// aggregation one user record per round trip. Default: false.
        preserve_order_per_shard: bool
    }

    /// `ListShards` page size; `None` (the default) lets the service choose. Tests use small
    /// pages to exercise paging.
    #[doc(hidden)]
    pub fn list_shards_page_size(mut self, size: Option<i32>) -> Self {
        self.config.list_shards_page_size = size;
        self
    }

    /// Applies the `KINESIS_PRODUCER_*` environment variables over the settings made so far
    /// (later builder calls override them). Names follow the KPL's settings:
    ///
    /// | variable | setting |
    /// |---|---|
    /// | `KINESIS_PRODUCER_STREAM` | [`stream`](Self::stream) |
    /// | `KINESIS_PRODUCER_AGGREGATION_ENABLED` | [`aggregation`](Self::aggregation) (`true`/`false`) |
    /// | `KINESIS_PRODUCER_AGGREGATION_MAX_COUNT` | [`aggregation_max_count`](Self::aggregation_max_count) |
    /// | `KINESIS_PRODUCER_AGGREGATION_MAX_SIZE` | [`aggregation_max_size`](Self::aggregation_max_size) |
    /// | `KINESIS_PRODUCER_COLLECTION_MAX_COUNT` | [`collection_max_count`](Self::collection_max_count) |
    /// | `KINESIS_PRODUCER_COLLECTION_MAX_SIZE` | [`collection_max_size`](Self::collection_max_size) |
    /// | `KINESIS_PRODUCER_RECORD_MAX_BUFFERED_TIME_MS` | [`record_max_buffered_time`](Self::record_max_buffered_time) |
    /// | `KINESIS_PRODUCER_RECORD_TTL_MS` | [`record_ttl`](Self::record_ttl) |
    /// | `KINESIS_PRODUCER_RATE_LIMIT` | [`rate_limit`](Self::rate_limit) |
    /// | `KINESIS_PRODUCER_MAX_CONNECTIONS` | [`max_in_flight_requests`](Self::max_in_flight_requests) |
    /// | `KINESIS_PRODUCER_REQUEST_TIMEOUT_MS` | [`request_timeout`](Self::request_timeout) |
    /// | `KINESIS_PRODUCER_MAX_USER_RECORD_SIZE` | [`max_user_record_size`](Self::max_user_record_size) |
    /// | `KINESIS_PRODUCER_MAX_BUFFERED_BYTES` | [`max_buffered_bytes`](Self::max_buffered_bytes) |
    /// | `KINESIS_PRODUCER_MAX_BUFFERED_RECORDS` | [`max_buffered_records`](Self::max_buffered_records) |
    /// | `KINESIS_PRODUCER_SHARD_MAP_REFRESH_INTERVAL_MS` | [`shard_map_refresh_interval`](Self::shard_map_refresh_interval) (0: never) |
    /// | `KINESIS_PRODUCER_PRESERVE_ORDER_PER_SHARD` | [`preserve_order_per_shard`](Self::preserve_order_per_shard) |
    ///
    /// Environment variables are read only when this is called: a library should not change
    /// behaviour behind its caller's back.
    ///
    /// # Errors
    /// A variable with the prefix and a known name whose value does not parse.
    #[allow(clippy::wrong_self_convention)] // a builder step, named as the issue asks
    pub fn from_env(self) -> Result<Self, ConfigError> {
        self.from_vars(std::env::vars())
    }

    #[allow(clippy::wrong_self_convention)]
    fn from_vars(
        mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        if let Some(stream) = self.config.apply_env(vars)? {
            self.stream = Some(stream);
        }
        Ok(self)
    }

    /// Checks the settings, checks that the stream exists and loads its shard map, and
    /// starts the producer's background task on the current Tokio runtime.
    ///
    /// If `ListShards` is throttled or fails transiently (after the SDK's own retries), the
    /// producer starts anyway without a shard map, as the KPL does: records go unaggregated
    /// (Kinesis routes each by its key) until a later load succeeds (retried after 1 s,
    /// × 1.5 up to 30 s).
    ///
    /// # Errors
    /// [`BuildError::StreamNotFound`] if the stream does not exist; [`BuildError::ListShards`]
    /// if listing the shards is refused (access denied...); [`BuildError::InvalidConfig`]
    /// for contradictory settings.
    pub async fn build(self) -> Result<Producer, BuildError> {
        let api = Arc::new(SdkApi::new(self.client.clone()));
        self.build_with_api(api).await
    }

    pub(crate) async fn build_with_api(
        self,
        api: Arc<dyn KinesisApi>,
    ) -> Result<Producer, BuildError> {
        self.config.validate()?;
        let stream_text = self.stream.ok_or(BuildError::NoStream)?;
        let stream = StreamId::parse(&stream_text);
        let map = match shard_map::load(&*api, &stream, self.config.list_shards_page_size).await {
            Ok(map) => Some(map),
            Err(e) => match e.kind {
                CallErrorKind::StreamNotFound => {
                    return Err(BuildError::StreamNotFound {
                        stream: stream_text,
                    });
                }
                CallErrorKind::Permanent => {
                    return Err(BuildError::ListShards {
                        stream: stream_text,
                        code: e.code.to_string(),
                        message: e.message.to_string(),
                    });
                }
                // As the KPL: start without a map (records go alone, routed by Kinesis) and
                // let the engine keep loading it with backoff.
                CallErrorKind::Throttling | CallErrorKind::Transient => {
                    tracing::warn!(stream = %stream_text, code = %e.code, message = %e.message,
                        "cannot list shards yet: starting without a shard map");
                    None
                }
            },
        };
        let config = Arc::new(self.config);
        let bytes = Arc::new(Semaphore::new(config.max_buffered_bytes));
        let records = Arc::new(Semaphore::new(config.max_buffered_records));
        let (tx, rx) = mpsc::unbounded_channel();
        let engine = Engine::new(
            Arc::clone(&config),
            api,
            stream,
            map,
            rx,
            Arc::clone(&bytes),
            Arc::clone(&records),
        );
        tokio::spawn(engine.run());
        Ok(Producer {
            inner: Arc::new(Inner {
                tx,
                bytes,
                records,
                config,
                closed: AtomicBool::new(false),
            }),
        })
    }
}

/// A KPL-class producer for one stream. Cheap to clone; all clones share one pipeline.
///
/// Dropping every clone without [`close`](Self::close) does not lose records: the
/// background task finishes every record already put (delivering results to the handles
/// still held) and then stops, as long as the Tokio runtime keeps running. If the runtime
/// shuts down first, outstanding handles resolve to [`PutFailure::Lost`]. Call `close` to
/// know when everything is done.
#[derive(Debug, Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tx: mpsc::UnboundedSender<Command>,
    bytes: Arc<Semaphore>,
    records: Arc<Semaphore>,
    config: Arc<Config>,
    closed: AtomicBool,
}

impl Producer {
    /// Starts building a producer on this Kinesis client.
    ///
    /// The client's own settings (region, credentials, endpoint, HTTP client) are used as
    /// they are, except that the producer turns the SDK's retries off for its `PutRecords`
    /// calls: it retries itself (see the crate docs).
    pub fn builder(client: aws_sdk_kinesis::Client) -> ProducerBuilder {
        ProducerBuilder {
            client,
            stream: None,
            config: Config::default(),
        }
    }

    /// Puts a record, waiting for buffer space if the producer holds its maximum of
    /// buffered bytes or records (this wait is the backpressure).
    ///
    /// # Errors
    /// At once, with the record: an invalid partition key or explicit hash key, a record
    /// over the maximum size, or a closed producer.
    pub async fn put(&self, record: Record) -> Result<PutHandle, PutError> {
        let v = self.validate(record)?;
        if self.acquire(1, v.cost).await.is_err() {
            return Err(PutError::Closed {
                record: v.into_record(),
            });
        }
        self.send(v)
    }

    /// Puts a record if there is buffer space now.
    ///
    /// # Errors
    /// As [`put`](Self::put), plus [`PutError::Full`] when the buffer limits are reached.
    pub fn try_put(&self, record: Record) -> Result<PutHandle, PutError> {
        let v = self.validate(record)?;
        match self.try_acquire(1, v.cost) {
            Ok(()) => self.send(v),
            Err(TryAcquireError::NoPermits) => Err(PutError::Full {
                record: v.into_record(),
            }),
            Err(TryAcquireError::Closed) => Err(PutError::Closed {
                record: v.into_record(),
            }),
        }
    }

    /// Puts many records at once, with one handle for all of them: cheaper per record than
    /// [`put`](Self::put) (buffer space is reserved and records are handed to the background
    /// task by chunks of up to 512, their partition keys hashed together, and outcomes are
    /// gathered without a channel per record), for callers that hold several records anyway:
    /// a request body, a file, a batch read from a queue. About 0.9 µs of CPU per record end
    /// to end, against 2.1 µs with `put` (`docs/BENCHMARKS.md`).
    ///
    /// Each chunk's keys and data are copied into one buffer and the records' own
    /// allocations are dropped at once, on the calling thread: freeing them later on the
    /// producer's thread cost more than the copy. A record handed back (refused, failed)
    /// carries its own copy.
    ///
    /// Waits for buffer space as `put` does, chunk by chunk, so a batch larger than the
    /// buffer goes in as space frees up. The handle resolves once every record has its final
    /// outcome, to the outcomes in the order of `records`. A record that `put` would refuse
    /// at once (invalid, or the producer closed) gets [`PutFailure::Refused`] in its place;
    /// the others go on. Ordering, retries, TTL and `flush` treat each record as if it had
    /// been put alone, in the order given.
    pub async fn put_batch(&self, records: impl IntoIterator<Item = Record>) -> PutBatchHandle {
        let records = records.into_iter();
        let cfg = &self.inner.config;
        // A quarter of the buffer at most, so that a batch does not wait for the whole
        // buffer to drain, nor hold all of it while it waits for the rest.
        let max_records = (cfg.max_buffered_records / 4).clamp(1, BATCH_CHUNK_RECORDS);
        let max_bytes = (cfg.max_buffered_bytes / 4).min(BATCH_CHUNK_BYTES);
        let batch = Batch::new(records.size_hint().0);
        // A placeholder: each chunk's records get the time it was handed over.
        let started = Instant::now();
        let mut chunk: Vec<Item> = Vec::new();
        let mut buffer = BytesMut::new();
        let mut chunk_cost = 0;
        let mut n = 0;
        for record in records {
            let index = n as u32;
            n += 1;
            let v = match self.validate_unhashed(record) {
                Ok(v) => v,
                Err(error) => {
                    batch.fill(index as usize, Err(PutFailure::Refused { error }));
                    continue;
                }
            };
            if !chunk.is_empty() && (chunk.len() >= max_records || chunk_cost + v.cost > max_bytes)
            {
                let frozen = buffer.split().freeze();
                self.send_chunk(std::mem::take(&mut chunk), frozen, chunk_cost, &batch)
                    .await;
                chunk_cost = 0;
            }
            if chunk.capacity() == 0 {
                chunk.reserve_exact(max_records);
            }
            chunk_cost += v.cost;
            // The arrival time is set once the chunk has its buffer space.
            let reply = Reply::Batch {
                batch: UNREGISTERED,
                index,
            };
            let size = v.cost - RECORD_OVERHEAD;
            if buffer.capacity() - buffer.len() < size {
                // Room for the rest of the chunk if its records are about this size, within
                // the chunk's byte limit (large records make short chunks).
                let left = max_records.saturating_sub(chunk.len()).max(1);
                let room = max_bytes.saturating_sub(chunk_cost) / v.cost * size;
                buffer.reserve((size * left).min(size + room));
            }
            chunk.push(v.into_chunk_item(reply, started, &mut buffer));
        }
        if !chunk.is_empty() {
            self.send_chunk(chunk, buffer.freeze(), chunk_cost, &batch)
                .await;
        }
        batch.seal(n);
        PutBatchHandle { batch }
    }

    async fn send_chunk(
        &self,
        mut items: Vec<Item>,
        buffer: Bytes,
        cost: usize,
        batch: &Arc<Batch>,
    ) {
        for item in &mut items {
            item.user.attach(&buffer);
        }
        drop(buffer);
        hash_keys(&mut items);
        let refuse = |items: Vec<Item>| {
            for item in items {
                let (record, _, reply) = item.into_record();
                if let Reply::Batch { index, .. } = reply {
                    let error = PutError::Closed { record };
                    batch.fill(index as usize, Err(PutFailure::Refused { error }));
                }
            }
        };
        if self.acquire(items.len(), cost).await.is_err() {
            return refuse(items);
        }
        let now = Instant::now();
        for item in &mut items {
            item.arrival = now;
        }
        let n = items.len();
        let cmd = Command::PutMany(Chunk {
            items,
            batch: Arc::clone(batch),
        });
        if let Err(mpsc::error::SendError(cmd)) = self.inner.tx.send(cmd) {
            self.inner.bytes.add_permits(cost);
            self.inner.records.add_permits(n);
            if let Command::PutMany(mut chunk) = cmd {
                refuse(std::mem::take(&mut chunk.items));
            }
        }
    }

    /// Takes `records` and `bytes` permits now, or says why not.
    fn try_acquire(&self, records: usize, bytes: usize) -> Result<(), TryAcquireError> {
        let inner = &self.inner;
        // Both or neither: a permit guard dropped on the way out gives its permits back.
        let r = inner.records.try_acquire_many(records as u32)?;
        let b = inner.bytes.try_acquire_many(bytes as u32)?;
        r.forget();
        b.forget();
        Ok(())
    }

    /// Takes `records` and `bytes` permits, waiting for them if need be; fails only when the
    /// producer is closed. Tries without waiting first: that path needs no future state.
    /// Cancel-safe: dropped while waiting, it holds nothing.
    async fn acquire(&self, records: usize, bytes: usize) -> Result<(), Closed> {
        match self.try_acquire(records, bytes) {
            Ok(()) => return Ok(()),
            Err(TryAcquireError::Closed) => return Err(Closed),
            Err(TryAcquireError::NoPermits) => {}
        }
        let inner = &self.inner;
        let r = inner
            .records
            .acquire_many(records as u32)
            .await
            .map_err(|_| Closed)?;
        let b = inner
            .bytes
            .acquire_many(bytes as u32)
            .await
            .map_err(|_| Closed)?;
        r.forget();
        b.forget();
        Ok(())
    }

    fn validate(&self, record: Record) -> Result<Valid, PutError> {
        let mut v = self.validate_unhashed(record)?;
        if v.user.explicit_hash_key().is_none() {
            v.hash = HashKey::from_partition_key(v.user.partition_key());
        }
        Ok(v)
    }

    /// [`validate`](Self::validate) without the MD5 of the partition key (the record's
    /// `hash` is a placeholder unless it has an explicit hash key): `put_batch` hashes a
    /// chunk's keys together, which costs less per key ([`hash_keys`]).
    fn validate_unhashed(&self, record: Record) -> Result<Valid, PutError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(PutError::Closed { record });
        }
        let size = record.data.len() + record.partition_key.len();
        let limit = self.inner.config.max_user_record_size;
        if size > limit {
            return Err(PutError::RecordTooLarge {
                record,
                size,
                limit,
            });
        }
        let ehk = match record
            .explicit_hash_key
            .as_deref()
            .map(str::parse::<HashKey>)
        {
            None => None,
            Some(Ok(k)) => Some(k),
            Some(Err(reason)) => return Err(PutError::InvalidExplicitHashKey { record, reason }),
        };
        if let Err(reason) = kinesis_aggregation::validate_partition_key(&record.partition_key) {
            return Err(PutError::InvalidPartitionKey { record, reason });
        }
        let Record {
            partition_key,
            explicit_hash_key,
            data,
        } = record;
        let user = UserRecord::new(partition_key, data).expect("partition key validated above");
        let (user, hash) = match ehk {
            Some(k) => (user.with_explicit_hash_key(k), k),
            None => (user, HashKey::MIN),
        };
        Ok(Valid {
            user,
            ehk_text: explicit_hash_key,
            hash,
            cost: size + RECORD_OVERHEAD,
        })
    }

    fn send(&self, v: Valid) -> Result<PutHandle, PutError> {
        let (reply, rx) = oneshot::channel();
        let cost = v.cost;
        let item = v.into_item(Reply::One(reply), Instant::now());
        match self.inner.tx.send(Command::Put(item)) {
            Ok(()) => Ok(PutHandle { rx }),
            Err(mpsc::error::SendError(cmd)) => {
                self.inner.bytes.add_permits(cost);
                self.inner.records.add_permits(1);
                let Command::Put(item) = cmd else {
                    unreachable!()
                };
                Err(PutError::Closed {
                    record: item.into_record().0,
                })
            }
        }
    }

    /// Waits until every record put before this call has a final outcome (success or
    /// failure). Buffered records are sent at once, without waiting for their linger time.
    /// Records put concurrently may or may not be included.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.tx.send(Command::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Stops accepting records, sends everything already put (each gets its final outcome,
    /// retries included, within its TTL) and stops the background task. Puts waiting for
    /// buffer space fail with [`PutError::Closed`]. Idempotent; every clone sees it.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.records.close();
        self.inner.bytes.close();
        let (tx, rx) = oneshot::channel();
        if self.inner.tx.send(Command::Close(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Records put and not yet finished (buffered, in flight or waiting for a retry).
    pub fn outstanding_records(&self) -> usize {
        self.inner
            .config
            .max_buffered_records
            .saturating_sub(self.inner.records.available_permits())
    }
}

/// Sets the hash key of every item routed by its partition key: MD5 of the keys, computed
/// together ([`HashKey::extend_from_partition_keys`] runs several MD5s at once where the CPU
/// can: ~7 times cheaper per key than one at a time).
fn hash_keys(items: &mut [Item]) {
    let keyed = |i: &&mut Item| i.user.explicit_hash_key().is_none();
    let mut hashes = Vec::with_capacity(items.len());
    HashKey::extend_from_partition_keys(
        items
            .iter()
            .filter(|i| i.user.explicit_hash_key().is_none())
            .map(|i| i.user.partition_key()),
        &mut hashes,
    );
    for (item, hash) in items.iter_mut().filter(keyed).zip(hashes) {
        item.hash = hash;
    }
}

/// The semaphores are closed: the producer is.
struct Closed;

/// A record that passed validation, before it becomes a pipeline item.
struct Valid {
    user: UserRecord,
    ehk_text: Option<String>,
    hash: HashKey,
    cost: usize,
}

impl Valid {
    fn into_item(self, reply: Reply, arrival: Instant) -> Item {
        Item::new(
            Payload::owned(self.user),
            self.ehk_text,
            self.hash,
            reply,
            arrival,
            self.cost,
        )
    }

    /// As [`into_item`](Self::into_item), with the key and data copied to the end of
    /// `chunk` (see [`Payload`]).
    fn into_chunk_item(self, reply: Reply, arrival: Instant, chunk: &mut BytesMut) -> Item {
        Item::new(
            Payload::copy_into(self.user, chunk),
            self.ehk_text,
            self.hash,
            reply,
            arrival,
            self.cost,
        )
    }

    fn into_record(self) -> Record {
        let (partition_key, _, data) = self.user.into_parts();
        Record {
            partition_key,
            explicit_hash_key: self.ehk_text,
            data,
        }
    }
}

/// Most records per chunk of a `put_batch`: one permit request and one hand-over each.
const BATCH_CHUNK_RECORDS: usize = 512;
/// Most bytes (as permits count them) per chunk of a `put_batch`; a larger record goes alone.
const BATCH_CHUNK_BYTES: usize = 16 << 20;
