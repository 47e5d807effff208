//! The polling loop against a scripted fake Kinesis on tokio's paused clock, and the
//! prefetch bound against the local stack.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::api::{ApiError, ErrorKind, KinesisApi, ListedShard, Page};
use super::polling::PollingSource;
use super::*;

/// What the fake was asked, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Call {
    Iterator(StartingPoint),
    Records { from: usize, limit: i32 },
    List,
}

#[derive(Default)]
struct FakeState {
    records: Vec<ReadRecord>,
    closed: bool,
    child_shards_in_response: Vec<ChildShard>,
    listed: Vec<ListedShard>,
    stream_missing: bool,
    errors: VecDeque<(&'static str, ErrorKind)>,
    calls: Vec<(Instant, Call)>,
    /// Most records a page holds whatever the limit (Kinesis cuts pages at 10 MiB).
    page_cap: Option<usize>,
}

/// A one-shard Kinesis: iterators are `"<index>"` into the record list.
#[derive(Default)]
pub(crate) struct FakeApi {
    state: Mutex<FakeState>,
}

pub(crate) fn record(seq: u64, data: &str) -> ReadRecord {
    ReadRecord {
        sequence_number: format!("4959000000000000000000{seq:04}").into(),
        partition_key: format!("pk-{seq}"),
        data: Bytes::from(data.to_owned()),
        approximate_arrival_timestamp: None,
    }
}

impl FakeApi {
    pub(crate) fn with_records(n: u64) -> Arc<FakeApi> {
        let api = FakeApi::default();
        api.push((0..n).map(|i| record(i, &format!("r{i}"))));
        Arc::new(api)
    }

    pub(crate) fn push(&self, records: impl IntoIterator<Item = ReadRecord>) {
        self.state.lock().unwrap().records.extend(records);
    }

    /// Closes the shard; `in_response` children are returned by GetRecords, `listed` by
    /// ListShards.
    pub(crate) fn close(&self, in_response: Vec<ChildShard>, listed: Vec<ListedShard>) {
        let mut s = self.state.lock().unwrap();
        s.closed = true;
        s.child_shards_in_response = in_response;
        s.listed = listed;
    }

    /// The next call of `op` fails with `kind`.
    pub(crate) fn fail(&self, op: &'static str, kind: ErrorKind) {
        self.state.lock().unwrap().errors.push_back((op, kind));
    }

    /// ListShards answers ResourceNotFound: the stream is gone.
    pub(crate) fn remove_stream(&self) {
        self.state.lock().unwrap().stream_missing = true;
    }

    /// Pages hold at most `cap` records, as Kinesis cuts a page at 10 MiB.
    pub(crate) fn cap_pages(&self, cap: usize) {
        self.state.lock().unwrap().page_cap = Some(cap);
    }

    pub(crate) fn calls(&self) -> Vec<(Instant, Call)> {
        self.state.lock().unwrap().calls.clone()
    }

    fn take_error(s: &mut FakeState, op: &str) -> Option<ApiError> {
        let i = s.errors.iter().position(|(o, _)| *o == op)?;
        let (_, kind) = s.errors.remove(i)?;
        Some(ApiError::new(kind, "scripted"))
    }
}

#[async_trait]
impl KinesisApi for FakeApi {
    async fn get_shard_iterator(
        &self,
        _stream: &str,
        _shard_id: &str,
        from: &StartingPoint,
    ) -> Result<Option<String>, ApiError> {
        let mut s = self.state.lock().unwrap();
        s.calls.push((Instant::now(), Call::Iterator(from.clone())));
        if let Some(e) = Self::take_error(&mut s, "GetShardIterator") {
            return Err(e);
        }
        let find = |seq: &str| s.records.iter().position(|r| &*r.sequence_number == seq);
        let index = match from {
            StartingPoint::TrimHorizon | StartingPoint::AtTimestamp(_) => 0,
            StartingPoint::Latest => s.records.len(),
            StartingPoint::AtSequence(seq) => find(seq).expect("known sequence"),
            StartingPoint::AfterSequence(seq) => find(seq).expect("known sequence") + 1,
        };
        Ok(Some(index.to_string()))
    }

    async fn get_records(&self, iterator: &str, limit: i32) -> Result<Page, ApiError> {
        let mut s = self.state.lock().unwrap();
        let from: usize = iterator.parse().unwrap();
        s.calls
            .push((Instant::now(), Call::Records { from, limit }));
        if let Some(e) = Self::take_error(&mut s, "GetRecords") {
            return Err(e);
        }
        let take = (limit as usize).min(s.page_cap.unwrap_or(usize::MAX));
        let to = (from + take).min(s.records.len());
        let records = s.records[from..to].to_vec();
        let end = s.closed && to == s.records.len();
        // Behind the tip while records remain after this page.
        let behind = if to < s.records.len() { 1000 } else { 0 };
        Ok(Page {
            records,
            next_iterator: (!end).then(|| to.to_string()),
            millis_behind_latest: Some(behind),
            child_shards: if end {
                s.child_shards_in_response.clone()
            } else {
                Vec::new()
            },
        })
    }

    async fn list_shards(&self, _stream: &str) -> Result<Vec<ListedShard>, ApiError> {
        let mut s = self.state.lock().unwrap();
        s.calls.push((Instant::now(), Call::List));
        if s.stream_missing {
            return Err(ApiError::new(ErrorKind::NotFound, "no stream"));
        }
        if let Some(e) = Self::take_error(&mut s, "ListShards") {
            return Err(e);
        }
        Ok(s.listed.clone())
    }
}

fn shard() -> ShardRef {
    ShardRef {
        stream_name: "s".into(),
        shard_id: "shardId-000000000000".into(),
    }
}

fn config(max_records: u32, idle_ms: u64) -> PollingConfig {
    PollingConfig {
        max_records,
        idle_time_between_reads: Duration::from_millis(idle_ms),
        ..PollingConfig::default()
    }
}

fn start(api: &Arc<FakeApi>, from: StartingPoint, config: PollingConfig) -> PollingSource {
    PollingSource::start(api.clone(), shard(), from, config)
}

/// Reads until `n` records have arrived or the shard ended.
async fn read_records(
    source: &mut PollingSource,
    n: usize,
) -> (Vec<ReadRecord>, Option<Vec<ChildShard>>) {
    let mut out = Vec::new();
    while out.len() < n {
        let batch = source.next_batch().await.expect("batch");
        out.extend(batch.records);
        if batch.shard_end.is_some() {
            return (out, batch.shard_end);
        }
    }
    (out, None)
}

fn record_calls(api: &FakeApi) -> Vec<(Duration, usize)> {
    let calls = api.calls();
    let t0 = calls[0].0;
    calls
        .into_iter()
        .filter_map(|(t, c)| match c {
            Call::Records { from, .. } => Some((t - t0, from)),
            _ => None,
        })
        .collect()
}

/// The first `n` of [`record_calls`], times in milliseconds.
fn first_record_calls_ms(api: &FakeApi, n: usize) -> Vec<(u128, usize)> {
    record_calls(api)
        .into_iter()
        .take(n)
        .map(|(t, from)| (t.as_millis(), from))
        .collect()
}

fn child(id: &str, parents: &[&str]) -> ChildShard {
    ChildShard {
        shard_id: id.into(),
        parent_shard_ids: parents.iter().map(|p| p.to_string()).collect(),
        hash_key_range: None,
    }
}

/// A shard as `ListShards` lists it (no hash key range).
pub(crate) fn listed(id: &str, parent: Option<&str>, adjacent: Option<&str>) -> ListedShard {
    ListedShard {
        shard_id: id.into(),
        parent_shard_id: parent.map(Into::into),
        adjacent_parent_shard_id: adjacent.map(Into::into),
        hash_key_range: None,
    }
}

#[tokio::test(start_paused = true)]
async fn idle_reads_are_spaced_by_idle_time_between_reads() {
    let api = Arc::new(FakeApi::default());
    let mut source = start(&api, StartingPoint::TrimHorizon, config(100, 1500));
    for _ in 0..4 {
        assert!(source.next_batch().await.unwrap().records.is_empty());
    }
    let times: Vec<_> = record_calls(&api)
        .into_iter()
        .take(4)
        .map(|(t, _)| t.as_millis())
        .collect();
    assert_eq!(times, [0, 1500, 3000, 4500]);
}

#[tokio::test(start_paused = true)]
async fn idle_time_has_a_200ms_floor() {
    let api = Arc::new(FakeApi::default());
    let mut source = start(&api, StartingPoint::TrimHorizon, config(100, 10));
    for _ in 0..3 {
        source.next_batch().await.unwrap();
    }
    let times: Vec<_> = record_calls(&api)
        .into_iter()
        .take(3)
        .map(|(t, _)| t.as_millis())
        .collect();
    assert_eq!(times, [0, 200, 400]);
}

#[tokio::test(start_paused = true)]
async fn full_reads_are_followed_at_the_floor_then_idle() {
    let api = FakeApi::with_records(25);
    let mut source = start(&api, StartingPoint::TrimHorizon, config(10, 1500));
    let (records, _) = read_records(&mut source, 25).await;
    assert_eq!(records.len(), 25);
    source.next_batch().await.unwrap(); // the empty read after catching up
    let calls = first_record_calls_ms(&api, 4);
    // Two full reads (catching up), a partial one, then the idle time.
    assert_eq!(calls, [(0, 0), (200, 10), (400, 20), (1900, 25)]);
}

#[tokio::test(start_paused = true)]
async fn pages_cut_short_while_behind_are_followed_at_the_floor() {
    // Aggregated data: Kinesis cuts pages at 10 MiB long before max_records; being behind
    // (MillisBehindLatest > 0) must still mean "read again soon", not "idle".
    let api = FakeApi::with_records(25);
    api.cap_pages(10);
    let mut source = start(&api, StartingPoint::TrimHorizon, config(10_000, 1500));
    let (records, _) = read_records(&mut source, 25).await;
    assert_eq!(records.len(), 25);
    source.next_batch().await.unwrap();
    let calls = first_record_calls_ms(&api, 4);
    assert_eq!(calls, [(0, 0), (200, 10), (400, 20), (1900, 25)]);
}

#[tokio::test(start_paused = true)]
async fn throttling_backs_off_and_loses_nothing() {
    let api = FakeApi::with_records(30);
    for _ in 0..3 {
        api.fail("GetRecords", ErrorKind::Throttled);
    }
    let mut source = start(&api, StartingPoint::TrimHorizon, config(10, 1500));
    let (records, _) = read_records(&mut source, 30).await;
    let expected: Vec<_> = (0..30).map(|i| record(i, &format!("r{i}"))).collect();
    assert_eq!(records, expected);
    let calls = record_calls(&api);
    // Three throttled attempts, all at the start, each later than the last by at least the
    // exponential minimum (200, 400, 800 ms before jitter).
    assert!(calls[..4].iter().all(|(_, from)| *from == 0), "{calls:?}");
    let gaps: Vec<_> = calls.windows(2).take(3).map(|w| w[1].0 - w[0].0).collect();
    for (gap, min) in gaps.iter().zip([200, 400, 800]) {
        assert!(*gap >= Duration::from_millis(min), "{gaps:?}");
        assert!(*gap <= Duration::from_millis(2 * min), "{gaps:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn expired_iterator_restarts_after_the_last_record_received() {
    let api = FakeApi::with_records(20);
    let mut source = start(
        &api,
        StartingPoint::AtSequence(record(3, "").sequence_number.to_string()),
        config(5, 200),
    );
    let first = source.next_batch().await.unwrap();
    assert_eq!(first.records.len(), 5); // records 3..8
    api.fail("GetRecords", ErrorKind::ExpiredIterator);
    let (rest, _) = read_records(&mut source, 12).await;
    let all: Vec<_> = first.records.into_iter().chain(rest).collect();
    let expected: Vec<_> = (3..20).map(|i| record(i, &format!("r{i}"))).collect();
    assert_eq!(all, expected, "nothing lost, nothing twice");
    let iterators: Vec<_> = api
        .calls()
        .into_iter()
        .filter_map(|(_, c)| match c {
            Call::Iterator(from) => Some(from),
            _ => None,
        })
        .collect();
    assert_eq!(
        iterators,
        [
            StartingPoint::AtSequence(record(3, "").sequence_number.to_string()),
            StartingPoint::AfterSequence(record(7, "").sequence_number.to_string()),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn expired_iterator_before_any_record_restarts_at_the_start() {
    let api = FakeApi::with_records(3);
    api.fail("GetRecords", ErrorKind::ExpiredIterator);
    let mut source = start(&api, StartingPoint::TrimHorizon, config(5, 200));
    let (records, _) = read_records(&mut source, 3).await;
    assert_eq!(records.len(), 3);
    let iterators = api
        .calls()
        .into_iter()
        .filter(|(_, c)| matches!(c, Call::Iterator(_)))
        .count();
    assert_eq!(iterators, 2);
    assert!(matches!(
        &api.calls()[2].1,
        Call::Iterator(StartingPoint::TrimHorizon)
    ));
}

#[tokio::test(start_paused = true)]
async fn shard_end_takes_child_shards_from_the_response() {
    let api = FakeApi::with_records(4);
    api.close(
        vec![child("shardId-000000000001", &["shardId-000000000000"])],
        vec![],
    );
    let mut source = start(&api, StartingPoint::TrimHorizon, config(10, 200));
    let (records, end) = read_records(&mut source, usize::MAX).await;
    assert_eq!(records.len(), 4);
    assert_eq!(
        end.unwrap(),
        [child("shardId-000000000001", &["shardId-000000000000"])]
    );
    assert!(!api.calls().iter().any(|(_, c)| *c == Call::List));
}

#[tokio::test(start_paused = true)]
async fn shard_end_without_child_shards_lists_the_children() {
    let api = FakeApi::with_records(4);
    let parent = "shardId-000000000000";
    api.close(
        vec![],
        vec![
            listed(parent, None, None),
            listed("shardId-000000000001", Some(parent), None),
            listed("shardId-000000000002", Some(parent), None),
            listed(
                "shardId-000000000003",
                Some("shardId-000000000009"),
                Some(parent),
            ),
            listed("shardId-000000000004", Some("shardId-000000000009"), None),
        ],
    );
    let mut source = start(&api, StartingPoint::TrimHorizon, config(10, 200));
    let (_, end) = read_records(&mut source, usize::MAX).await;
    let ids: Vec<_> = end
        .unwrap()
        .into_iter()
        .map(|c| (c.shard_id, c.parent_shard_ids))
        .collect();
    assert_eq!(
        ids,
        [
            ("shardId-000000000001".to_string(), vec![parent.to_string()]),
            ("shardId-000000000002".to_string(), vec![parent.to_string()]),
            (
                "shardId-000000000003".to_string(),
                vec!["shardId-000000000009".to_string(), parent.to_string()]
            ),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_shard_gone_from_a_live_stream_is_its_end() {
    let api = FakeApi::with_records(0);
    api.close(
        vec![],
        vec![listed(
            "shardId-000000000001",
            Some("shardId-000000000000"),
            None,
        )],
    );
    api.fail("GetShardIterator", ErrorKind::NotFound);
    let mut source = start(&api, StartingPoint::TrimHorizon, config(10, 200));
    let batch = source.next_batch().await.unwrap();
    assert_eq!(
        batch.shard_end.unwrap(),
        [child("shardId-000000000001", &["shardId-000000000000"])]
    );
}

#[tokio::test(start_paused = true)]
async fn a_missing_stream_is_an_error_not_a_shard_end() {
    let api = FakeApi::with_records(0);
    api.state.lock().unwrap().stream_missing = true;
    api.fail("GetShardIterator", ErrorKind::NotFound);
    let mut source = start(&api, StartingPoint::TrimHorizon, config(10, 200));
    assert!(matches!(
        source.next_batch().await,
        Err(RetrievalError::StreamNotFound { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn fatal_errors_stop_the_source() {
    let api = FakeApi::with_records(5);
    api.fail("GetRecords", ErrorKind::Fatal);
    let mut source = start(&api, StartingPoint::TrimHorizon, config(10, 200));
    assert!(matches!(
        source.next_batch().await,
        Err(RetrievalError::Fatal {
            operation: "GetRecords",
            ..
        })
    ));
}

#[tokio::test(start_paused = true)]
async fn prefetch_stops_reading_at_the_record_bound() {
    let api = FakeApi::with_records(100);
    let config = PollingConfig {
        max_prefetch_records: 25,
        ..config(10, 200)
    };
    let mut source = start(&api, StartingPoint::TrimHorizon, config);
    let mut parked = source.parked();
    parked.wait_for(|p| *p).await.unwrap();
    // Two reads of 10 fit under 25, a third would not.
    assert_eq!(source.queued().records, 20);
    assert_eq!(record_calls(&api).len(), 2);
    let (records, _) = read_records(&mut source, 100).await;
    assert_eq!(records.len(), 100);
    assert!(
        source.queued().high_water_records <= 25,
        "{:?}",
        source.queued()
    );
}

#[tokio::test(start_paused = true)]
async fn prefetch_stops_reading_at_the_byte_bound() {
    let api = Arc::new(FakeApi::default());
    api.push((0..50).map(|i| record(i, &"x".repeat(100))));
    let config = PollingConfig {
        max_prefetch_bytes: 1500,
        ..config(10, 200)
    };
    let mut source = start(&api, StartingPoint::TrimHorizon, config);
    source.parked().wait_for(|p| *p).await.unwrap();
    // 1000 bytes queued < 1500: one more read; 2000 ≥ 1500: stop (one read over at most).
    assert_eq!(source.queued().bytes, 2000);
    let (records, _) = read_records(&mut source, 50).await;
    assert_eq!(records.len(), 50);
}

/// The bound against the real SDK and the local Kinesis: a processor that does not take
/// batches stops the reads.
#[tokio::test]
async fn prefetch_is_bounded_against_the_local_stack() {
    let aws = local_aws::LocalAws::start().await.unwrap();
    let kinesis = aws.kinesis_client();
    let stream = local_aws::testing::unique_name("prefetch");
    local_aws::testing::create_stream(&kinesis, &stream, 1)
        .await
        .unwrap();
    for chunk in 0..4 {
        let records = (0..50).map(|i| (format!("k{i}"), format!("{chunk}-{i}")));
        local_aws::testing::put_records(&kinesis, &stream, records)
            .await
            .unwrap();
    }
    let shards = kinesis
        .list_shards()
        .stream_name(&stream)
        .send()
        .await
        .unwrap();
    let shard_id = shards.shards()[0].shard_id().to_owned();
    let config = PollingConfig {
        max_records: 20,
        max_prefetch_records: 50,
        idle_time_between_reads: Duration::from_millis(200),
        ..PollingConfig::default()
    };
    let mut source = PollingSource::start(
        Arc::new(api::SdkApi::new(kinesis)),
        ShardRef {
            stream_name: stream,
            shard_id,
        },
        StartingPoint::TrimHorizon,
        config,
    );
    source.parked().wait_for(|p| *p).await.unwrap();
    assert_eq!(source.queued().records, 40, "two reads of 20 fit under 50");
    let mut seen = 0;
    while seen < 200 {
        seen += source.next_batch().await.unwrap().records.len();
    }
    assert_eq!(seen, 200);
    assert!(source.queued().high_water_records <= 50);
}

#[test]
fn resume_points() {
    let seq = Position::sequence("4959", 3).unwrap();
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let table = [
        (
            Position::TrimHorizon,
            None,
            Some(StartingPoint::TrimHorizon),
        ),
        (Position::Latest, None, Some(StartingPoint::Latest)),
        (
            Position::AtTimestamp,
            Some(t),
            Some(StartingPoint::AtTimestamp(t)),
        ),
        // Sub-sequence 0 too: the checkpoint may be the first of an aggregate's sub-records.
        (
            Position::sequence("4959", 0).unwrap(),
            None,
            Some(StartingPoint::AtSequence("4959".into())),
        ),
        (seq, None, Some(StartingPoint::AtSequence("4959".into()))),
        (Position::ShardEnd, None, None),
    ];
    for (checkpoint, timestamp, expected) in table {
        assert_eq!(
            StartingPoint::resume_after(&checkpoint, timestamp, "s").unwrap(),
            expected,
            "{checkpoint}"
        );
    }
    assert!(StartingPoint::resume_after(&Position::AtTimestamp, None, "s").is_err());
}
