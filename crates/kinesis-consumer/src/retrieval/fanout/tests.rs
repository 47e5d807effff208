//! The subscription state machine and the registration against a scripted fake on tokio's
//! paused clock: renewals, resubscription positions, backoff, read timeouts, backpressure,
//! shard ends, and the consumer's registration.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

use super::api::{Consumer, ShardEvent};
use super::*;
use crate::retrieval::tests::{FakeApi, listed, record};

/// One step of a scripted subscription.
#[derive(Debug, Clone)]
enum Step {
    Event(ShardEvent),
    Fail(Failure),
    /// Nothing ever again (a silent dead connection).
    Hang,
}

/// What a `SubscribeToShard` call does.
#[derive(Debug, Clone)]
enum Sub {
    Refuse(Failure),
    /// The steps, then the stream ends normally.
    Open(Vec<Step>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Describe,
    Register,
    Subscribe { arn: String, from: StartingPoint },
}

#[derive(Default)]
struct State {
    consumer: Option<Consumer>,
    /// Describe calls that still answer CREATING after a registration.
    creating_for: u32,
    register_errors: VecDeque<Failure>,
    describe_errors: VecDeque<Failure>,
    registrations: u32,
    subscriptions: VecDeque<Sub>,
    calls: Vec<(Instant, Call)>,
}

#[derive(Default)]
struct FakeFanOut {
    state: Mutex<State>,
    /// Events handed out so far.
    pulled: Arc<AtomicUsize>,
}

impl FakeFanOut {
    fn active() -> Arc<FakeFanOut> {
        let fake = FakeFanOut::default();
        fake.state.lock().unwrap().consumer = Some(Consumer {
            arn: "arn:consumer/app:1".into(),
            status: Status::Active,
        });
        Arc::new(fake)
    }

    fn script(&self, subs: impl IntoIterator<Item = Sub>) {
        self.state.lock().unwrap().subscriptions.extend(subs);
    }

    fn calls(&self) -> Vec<(Instant, Call)> {
        self.state.lock().unwrap().calls.clone()
    }

    fn subscriptions(&self) -> Vec<(Instant, String, StartingPoint)> {
        self.calls()
            .into_iter()
            .filter_map(|(t, c)| match c {
                Call::Subscribe { arn, from } => Some((t, arn, from)),
                _ => None,
            })
            .collect()
    }

    fn log(&self, call: Call) {
        self.state
            .lock()
            .unwrap()
            .calls
            .push((Instant::now(), call));
    }
}

struct FakeEvents {
    steps: VecDeque<Step>,
    pulled: Arc<AtomicUsize>,
}

#[async_trait]
impl EventStream for FakeEvents {
    async fn next_event(&mut self) -> Result<Option<ShardEvent>, FanOutError> {
        match self.steps.pop_front() {
            None => Ok(None),
            Some(Step::Event(e)) => {
                self.pulled.fetch_add(1, AtomicOrdering::SeqCst);
                Ok(Some(e))
            }
            Some(Step::Fail(kind)) => Err(FanOutError::new(kind, "scripted")),
            Some(Step::Hang) => std::future::pending().await,
        }
    }
}

#[async_trait]
impl FanOutApi for FakeFanOut {
    async fn stream_arn(&self, stream: &str) -> Result<String, FanOutError> {
        Ok(format!("arn:stream/{stream}"))
    }

    async fn describe_consumer(&self, _: &str, _: &str) -> Result<Consumer, FanOutError> {
        self.log(Call::Describe);
        let mut s = self.state.lock().unwrap();
        if let Some(kind) = s.describe_errors.pop_front() {
            return Err(FanOutError::new(kind, "scripted"));
        }
        if s.creating_for > 0 {
            s.creating_for -= 1;
            if s.creating_for == 0
                && let Some(c) = &mut s.consumer
            {
                c.status = Status::Active;
            }
        }
        s.consumer
            .clone()
            .ok_or_else(|| FanOutError::new(Failure::NotFound, "no such consumer"))
    }

    async fn register_consumer(&self, _: &str, name: &str) -> Result<Consumer, FanOutError> {
        self.log(Call::Register);
        let mut s = self.state.lock().unwrap();
        if let Some(kind) = s.register_errors.pop_front() {
            return Err(FanOutError::new(kind, "scripted"));
        }
        s.registrations += 1;
        let consumer = Consumer {
            arn: format!("arn:consumer/{name}:{}", s.registrations + 1),
            status: Status::Creating,
        };
        s.consumer = Some(consumer.clone());
        s.creating_for = 2;
        Ok(consumer)
    }

    async fn subscribe(
        &self,
        consumer_arn: &str,
        _: &str,
        from: &StartingPoint,
    ) -> Result<Box<dyn EventStream>, FanOutError> {
        self.log(Call::Subscribe {
            arn: consumer_arn.to_owned(),
            from: from.clone(),
        });
        let sub = self.state.lock().unwrap().subscriptions.pop_front();
        match sub.unwrap_or(Sub::Open(vec![Step::Hang])) {
            Sub::Refuse(kind) => Err(FanOutError::new(kind, "scripted")),
            Sub::Open(steps) => Ok(Box::new(FakeEvents {
                steps: steps.into(),
                pulled: self.pulled.clone(),
            })),
        }
    }
}

fn seq(i: u64) -> String {
    record(i, "").sequence_number.to_string()
}

/// An event with records `ids` whose continuation is the last one's sequence number (as
/// Kinesis does), or `empty_continuation` when there is none.
fn event(ids: impl IntoIterator<Item = u64>) -> ShardEvent {
    let records: Vec<ReadRecord> = ids
        .into_iter()
        .map(|i| record(i, &format!("r{i}")))
        .collect();
    ShardEvent {
        continuation: Some(
            records
                .last()
                .map(|r| r.sequence_number.to_string())
                .unwrap_or_else(|| seq(0)),
        ),
        records,
        millis_behind_latest: 0,
        child_shards: Vec::new(),
    }
}

fn ev(ids: impl IntoIterator<Item = u64>) -> Step {
    Step::Event(event(ids))
}

fn shard() -> ShardRef {
    ShardRef {
        stream_name: "s".into(),
        shard_id: "shardId-000000000000".into(),
    }
}

fn child(id: &str) -> ChildShard {
    ChildShard {
        shard_id: id.into(),
        parent_shard_ids: vec!["shardId-000000000000".into()],
        hash_key_range: None,
    }
}

fn factory(api: &Arc<FakeFanOut>, kinesis: &Arc<FakeApi>, config: FanOutConfig) -> FanOutFactory {
    FanOutFactory::new(api.clone(), kinesis.clone(), "s".into(), "app", config)
}

fn start(api: &Arc<FakeFanOut>, from: StartingPoint) -> Box<dyn RecordSource> {
    factory(api, &Arc::new(FakeApi::default()), FanOutConfig::default()).start(shard(), from)
}

/// Reads until `n` records have arrived or the shard ended.
async fn read(source: &mut Box<dyn RecordSource>, n: usize) -> (Vec<u64>, Option<Vec<ChildShard>>) {
    let mut out = Vec::new();
    while out.len() < n {
        let batch = source.next_batch().await.expect("batch");
        out.extend(batch.records.iter().map(|r| {
            r.data
                .strip_prefix(b"r")
                .and_then(|d| std::str::from_utf8(d).ok())
                .and_then(|d| d.parse::<u64>().ok())
                .expect("scripted data")
        }));
        if batch.shard_end.is_some() {
            return (out, batch.shard_end);
        }
    }
    (out, None)
}

fn millis_since_first(calls: &[(Instant, String, StartingPoint)]) -> Vec<u128> {
    calls
        .iter()
        .map(|(t, ..)| (*t - calls[0].0).as_millis())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_completed_subscription_is_renewed_at_once_after_the_last_record() {
    let api = FakeFanOut::active();
    api.script([
        Sub::Open(vec![ev([0, 1]), ev([]), ev([2])]),
        Sub::Open(vec![ev([3, 4])]),
    ]);
    let mut source = start(&api, StartingPoint::TrimHorizon);
    let (records, end) = read(&mut source, 5).await;
    assert_eq!(records, [0, 1, 2, 3, 4]);
    assert!(end.is_none());
    let subs = api.subscriptions();
    assert_eq!(
        subs.iter().map(|s| s.2.clone()).take(2).collect::<Vec<_>>(),
        [
            StartingPoint::TrimHorizon,
            StartingPoint::AfterSequence(seq(2))
        ]
    );
    assert_eq!(millis_since_first(&subs)[1], 0, "a renewal does not wait");
    assert!(subs.iter().all(|s| s.1 == "arn:consumer/app:1"));
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_exponentially_and_resume_after_the_last_record() {
    let api = FakeFanOut::active();
    api.script([
        Sub::Open(vec![ev([0, 1]), Step::Fail(Failure::Transient)]),
        // The previous subscription is still open on the service's side.
        Sub::Refuse(Failure::InUse),
        Sub::Refuse(Failure::InUse),
        Sub::Refuse(Failure::LimitExceeded),
        Sub::Open(vec![ev([2])]),
    ]);
    let mut source = start(&api, StartingPoint::AtSequence(seq(0)));
    let (records, _) = read(&mut source, 3).await;
    assert_eq!(records, [0, 1, 2]);
    let subs = api.subscriptions();
    let positions: Vec<_> = subs.iter().map(|s| s.2.clone()).take(5).collect();
    assert_eq!(positions[0], StartingPoint::AtSequence(seq(0)));
    assert!(
        positions[1..]
            .iter()
            .all(|p| *p == StartingPoint::AfterSequence(seq(1))),
        "{positions:?}"
    );
    // Four consecutive failures: 250, 500, 1000, 2000 ms at least, at most twice that.
    let gaps: Vec<_> = subs.windows(2).take(4).map(|w| w[1].0 - w[0].0).collect();
    for (gap, min) in gaps.iter().zip([250, 500, 1000, 2000]) {
        assert!(*gap >= Duration::from_millis(min), "{gaps:?}");
        assert!(*gap <= Duration::from_millis(2 * min), "{gaps:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_event_resets_the_backoff() {
    let api = FakeFanOut::active();
    api.script([
        Sub::Refuse(Failure::Transient),
        Sub::Refuse(Failure::Transient),
        Sub::Open(vec![ev([0]), Step::Fail(Failure::Transient)]),
        Sub::Open(vec![ev([1])]),
    ]);
    let mut source = start(&api, StartingPoint::TrimHorizon);
    assert_eq!(read(&mut source, 2).await.0, [0, 1]);
    let subs = api.subscriptions();
    let last_gap = subs[3].0 - subs[2].0;
    assert!(
        last_gap <= Duration::from_millis(500),
        "back to the first delay: {last_gap:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn records_received_before_are_dropped_from_a_resubscription() {
    // As an emulator that ignores the position does: everything again from the start.
    let api = FakeFanOut::active();
    api.script([
        Sub::Open(vec![ev([0, 1, 2])]),
        Sub::Open(vec![ev([0, 1, 2, 3]), ev([4])]),
    ]);
    let mut source = start(&api, StartingPoint::TrimHorizon);
    assert_eq!(read(&mut source, 5).await.0, [0, 1, 2, 3, 4]);
}

#[tokio::test(start_paused = true)]
async fn a_silent_subscription_is_replaced_after_the_read_timeout() {
    let api = FakeFanOut::active();
    api.script([
        Sub::Open(vec![ev([0]), Step::Hang]),
        Sub::Open(vec![ev([1])]),
    ]);
    let config = FanOutConfig::new().read_timeout(Duration::from_secs(10));
    let mut source =
        factory(&api, &Arc::new(FakeApi::default()), config).start(shard(), StartingPoint::Latest);
    assert_eq!(read(&mut source, 2).await.0, [0, 1]);
    let subs = api.subscriptions();
    let gap = subs[1].0 - subs[0].0;
    assert!(
        gap >= Duration::from_secs(10) && gap <= Duration::from_millis(10_500),
        "{gap:?}"
    );
    assert_eq!(subs[1].2, StartingPoint::AfterSequence(seq(0)));
}

#[tokio::test(start_paused = true)]
async fn latest_without_records_resumes_after_the_continuation() {
    let api = FakeFanOut::active();
    let mut quiet = event([]);
    quiet.continuation = Some(seq(5));
    api.script([
        Sub::Open(vec![Step::Event(quiet.clone()), Step::Event(quiet)]),
        // Records from before the first subscription must not appear.
        Sub::Open(vec![ev([3, 6]), ev([7])]),
    ]);
    let mut source = start(&api, StartingPoint::Latest);
    assert_eq!(read(&mut source, 2).await.0, [6, 7]);
    let subs = api.subscriptions();
    assert_eq!(subs[0].2, StartingPoint::Latest);
    assert_eq!(subs[1].2, StartingPoint::AfterSequence(seq(5)));
}

#[tokio::test(start_paused = true)]
async fn without_records_other_positions_start_over() {
    let t = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let api = FakeFanOut::active();
    api.script([Sub::Open(vec![ev([])]), Sub::Open(vec![ev([0])])]);
    let mut source = start(&api, StartingPoint::AtTimestamp(t));
    assert_eq!(read(&mut source, 1).await.0, [0]);
    let positions: Vec<_> = api
        .subscriptions()
        .into_iter()
        .map(|s| s.2)
        .take(2)
        .collect();
    assert_eq!(
        positions,
        [StartingPoint::AtTimestamp(t), StartingPoint::AtTimestamp(t)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_ending_before_any_event_is_a_failure_not_a_renewal() {
    let api = FakeFanOut::active();
    api.script([
        Sub::Open(vec![]),
        Sub::Open(vec![]),
        Sub::Open(vec![ev([0])]),
    ]);
    let mut source = start(&api, StartingPoint::TrimHorizon);
    assert_eq!(read(&mut source, 1).await.0, [0]);
    let gaps = millis_since_first(&api.subscriptions());
    assert!(gaps[1] >= 250 && gaps[2] - gaps[1] >= 500, "{gaps:?}");
}

#[tokio::test(start_paused = true)]
async fn child_shards_end_the_shard() {
    let api = FakeFanOut::active();
    let mut last = event([2]);
    last.continuation = None;
    last.child_shards = vec![child("shardId-000000000001")];
    api.script([Sub::Open(vec![ev([0, 1]), Step::Event(last), ev([9])])]);
    let mut source = start(&api, StartingPoint::TrimHorizon);
    let (records, end) = read(&mut source, usize::MAX).await;
    assert_eq!(records, [0, 1, 2]);
    assert_eq!(end.unwrap(), [child("shardId-000000000001")]);
}

#[tokio::test(start_paused = true)]
async fn an_emulators_shard_end_with_a_continuation_ends_after_the_last_records() {
    // ferrokinesis: the children on every event once closed, the end on an empty one.
    let api = FakeFanOut::active();
    let mut with_records = event([0]);
    with_records.child_shards = vec![child("shardId-000000000001")];
    let mut empty = event([]);
    empty.child_shards = vec![child("shardId-000000000001")];
    api.script([Sub::Open(vec![
        Step::Event(with_records),
        Step::Event(empty),
    ])]);
    let mut source = start(&api, StartingPoint::TrimHorizon);
    let first = source.next_batch().await.unwrap();
    assert_eq!(first.records.len(), 1);
    assert!(first.shard_end.is_none());
    let second = source.next_batch().await.unwrap();
    assert_eq!(second.shard_end.unwrap(), [child("shardId-000000000001")]);
}

#[tokio::test(start_paused = true)]
async fn a_shard_end_without_children_lists_them() {
    let api = FakeFanOut::active();
    let kinesis = Arc::new(FakeApi::default());
    kinesis.close(
        vec![],
        vec![listed(
            "shardId-000000000001",
            Some("shardId-000000000000"),
            None,
        )],
    );
    let mut last = event([]);
    last.continuation = None;
    api.script([Sub::Open(vec![ev([0]), Step::Event(last)])]);
    let mut source =
        factory(&api, &kinesis, FanOutConfig::default()).start(shard(), StartingPoint::TrimHorizon);
    let (records, end) = read(&mut source, usize::MAX).await;
    assert_eq!(records, [0]);
    assert_eq!(end.unwrap(), [child("shardId-000000000001")]);
}

#[tokio::test(start_paused = true)]
async fn a_slow_processor_holds_the_subscription_back_and_loses_nothing() {
    let api = FakeFanOut::active();
    api.script([Sub::Open((0..20).map(|i| ev([i])).collect())]);
    let config = FanOutConfig::new().max_buffered_events(2);
    let mut source = factory(&api, &Arc::new(FakeApi::default()), config)
        .start(shard(), StartingPoint::TrimHorizon);
    tokio::time::sleep(Duration::from_secs(60)).await;
    // Two queued, one read and waiting for room; the rest still with the service.
    assert_eq!(api.pulled.load(AtomicOrdering::SeqCst), 3);
    let first = source.next_batch().await.unwrap();
    assert_eq!(first.records.len(), 1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        api.pulled.load(AtomicOrdering::SeqCst),
        4,
        "one taken, one more read"
    );
    let (rest, _) = read(&mut source, 19).await;
    assert_eq!(rest, (1..20).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn a_missing_stream_stops_the_source() {
    let api = FakeFanOut::active();
    let kinesis = Arc::new(FakeApi::default());
    kinesis.remove_stream();
    api.script([Sub::Refuse(Failure::NotFound)]);
    let mut source =
        factory(&api, &kinesis, FanOutConfig::default()).start(shard(), StartingPoint::TrimHorizon);
    assert!(matches!(
        source.next_batch().await,
        Err(RetrievalError::StreamNotFound { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn a_shard_gone_from_a_live_stream_is_its_end() {
    let api = FakeFanOut::active();
    let kinesis = Arc::new(FakeApi::default());
    kinesis.close(
        vec![],
        vec![listed(
            "shardId-000000000001",
            Some("shardId-000000000000"),
            None,
        )],
    );
    api.script([Sub::Refuse(Failure::NotFound)]);
    let mut source =
        factory(&api, &kinesis, FanOutConfig::default()).start(shard(), StartingPoint::TrimHorizon);
    let batch = source.next_batch().await.unwrap();
    assert_eq!(batch.shard_end.unwrap(), [child("shardId-000000000001")]);
}

#[tokio::test(start_paused = true)]
async fn a_deregistered_consumer_is_registered_again() {
    let api = FakeFanOut::active();
    let kinesis = Arc::new(FakeApi::default());
    kinesis.close(vec![], vec![listed("shardId-000000000000", None, None)]);
    api.script([Sub::Open(vec![ev([0])])]);
    let factory = factory(&api, &kinesis, FanOutConfig::default());
    let mut source = factory.start(shard(), StartingPoint::TrimHorizon);
    assert_eq!(read(&mut source, 1).await.0, [0]);
    // Someone deregisters the consumer: the subscription is refused as unknown.
    api.state.lock().unwrap().consumer = None;
    api.script([Sub::Refuse(Failure::NotFound), Sub::Open(vec![ev([1])])]);
    // (The first subscription ends now; the next ones follow the script.)
    let (records, _) = read(&mut source, 1).await;
    assert_eq!(records, [1]);
    let arns: Vec<_> = api.subscriptions().into_iter().map(|s| s.1).collect();
    assert_eq!(arns.first().unwrap(), "arn:consumer/app:1");
    assert_eq!(arns.last().unwrap(), "arn:consumer/app:2");
    assert_eq!(api.state.lock().unwrap().registrations, 1);
}

#[tokio::test(start_paused = true)]
async fn fatal_errors_stop_the_source() {
    let api = FakeFanOut::active();
    api.script([Sub::Refuse(Failure::Fatal)]);
    let mut source = start(&api, StartingPoint::TrimHorizon);
    assert!(matches!(
        source.next_batch().await,
        Err(RetrievalError::Fatal {
            operation: "SubscribeToShard",
            ..
        })
    ));
}

// ---------------------------------------------------------------------------------------------
// Registration

#[tokio::test(start_paused = true)]
async fn an_absent_consumer_is_registered_once_and_awaited_until_active() {
    let api = Arc::new(FakeFanOut::default());
    api.script([Sub::Open(vec![ev([0])]), Sub::Open(vec![ev([0])])]);
    let factory = factory(&api, &Arc::new(FakeApi::default()), FanOutConfig::default());
    // Shards start while the worker is still registering: one registration for all.
    let mut a = factory.start(shard(), StartingPoint::TrimHorizon);
    let mut b = factory.start(shard(), StartingPoint::TrimHorizon);
    factory.prepare().await.unwrap();
    assert_eq!(read(&mut a, 1).await.0, [0]);
    assert_eq!(read(&mut b, 1).await.0, [0]);
    let calls: Vec<_> = api
        .calls()
        .into_iter()
        .map(|(_, c)| c)
        .filter(|c| !matches!(c, Call::Subscribe { .. }))
        .collect();
    assert_eq!(
        calls,
        [
            Call::Describe,
            Call::Register,
            Call::Describe,
            Call::Describe
        ]
    );
    assert!(
        api.subscriptions()
            .iter()
            .all(|s| s.1 == "arn:consumer/app:2")
    );
}

#[tokio::test(start_paused = true)]
async fn another_workers_registration_is_awaited() {
    let api = Arc::new(FakeFanOut::default());
    {
        let mut s = api.state.lock().unwrap();
        // Describe: not yet; Register: in use (the other worker was first); then it is there.
        s.register_errors.push_back(Failure::InUse);
    }
    let factory = factory(&api, &Arc::new(FakeApi::default()), FanOutConfig::default());
    let api2 = api.clone();
    let other_worker = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        api2.state.lock().unwrap().consumer = Some(Consumer {
            arn: "arn:consumer/app:other".into(),
            status: Status::Active,
        });
    });
    factory.prepare().await.unwrap();
    other_worker.await.unwrap();
    assert_eq!(api.state.lock().unwrap().registrations, 0);
    api.script([Sub::Open(vec![ev([0])])]);
    let mut source = factory.start(shard(), StartingPoint::TrimHorizon);
    read(&mut source, 1).await;
    assert_eq!(api.subscriptions()[0].1, "arn:consumer/app:other");
}

#[tokio::test(start_paused = true)]
async fn the_consumer_limit_is_a_typed_error() {
    let api = Arc::new(FakeFanOut::default());
    api.state
        .lock()
        .unwrap()
        .register_errors
        .extend([Failure::LimitExceeded; 10]);
    let factory = factory(&api, &Arc::new(FakeApi::default()), FanOutConfig::default());
    let started = Instant::now();
    let e = factory.prepare().await.unwrap_err();
    assert!(
        matches!(&e, RetrievalError::ConsumerLimitExceeded { stream, consumer } if stream == "s" && consumer == "app"),
        "{e}"
    );
    // A rate limit would have cleared: five answers over a few seconds first.
    let registers = api
        .calls()
        .iter()
        .filter(|(_, c)| *c == Call::Register)
        .count();
    assert_eq!(registers, 5);
    assert!(started.elapsed() >= Duration::from_millis(100 + 200 + 400 + 800));
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_registration_goes_through() {
    let api = Arc::new(FakeFanOut::default());
    {
        let mut s = api.state.lock().unwrap();
        s.register_errors.extend([Failure::LimitExceeded; 2]);
        s.describe_errors.push_back(Failure::LimitExceeded);
    }
    let factory = factory(&api, &Arc::new(FakeApi::default()), FanOutConfig::default());
    factory.prepare().await.unwrap();
    assert_eq!(api.state.lock().unwrap().registrations, 1);
}

#[tokio::test(start_paused = true)]
async fn a_consumer_that_never_becomes_active_times_out() {
    let api = Arc::new(FakeFanOut::default());
    api.state.lock().unwrap().consumer = Some(Consumer {
        arn: "arn:consumer/app:1".into(),
        status: Status::Creating,
    });
    let config = FanOutConfig::new().registration_timeout(Duration::from_secs(10));
    let factory = factory(&api, &Arc::new(FakeApi::default()), config);
    let started = Instant::now();
    let e = factory.prepare().await.unwrap_err();
    assert!(
        matches!(&e, RetrievalError::ConsumerRegistration { .. }),
        "{e}"
    );
    assert!(started.elapsed() <= Duration::from_secs(10));
    assert!(started.elapsed() >= Duration::from_secs(6));
}

#[tokio::test(start_paused = true)]
async fn a_configured_arn_is_used_without_any_lookup() {
    let api = Arc::new(FakeFanOut::default());
    api.script([Sub::Open(vec![ev([0])])]);
    let config = FanOutConfig::new().consumer_arn("arn:consumer/managed:7");
    let factory = factory(&api, &Arc::new(FakeApi::default()), config);
    factory.prepare().await.unwrap();
    let mut source = factory.start(shard(), StartingPoint::TrimHorizon);
    read(&mut source, 1).await;
    // (The renewal after the scripted subscription may have started too.)
    let calls: Vec<_> = api.calls().into_iter().map(|(_, c)| c).take(1).collect();
    assert!(
        api.calls()
            .iter()
            .all(|(_, c)| matches!(c, Call::Subscribe { .. }))
    );
    assert_eq!(
        calls,
        [Call::Subscribe {
            arn: "arn:consumer/managed:7".into(),
            from: StartingPoint::TrimHorizon
        }]
    );
}

#[test]
fn sequence_numbers_order_numerically() {
    assert_eq!(cmp_sequence("9", "10"), Ordering::Less);
    assert_eq!(cmp_sequence("0010", "10"), Ordering::Equal);
    assert_eq!(
        cmp_sequence(
            "49680451404079282065607315814919262207982386359520198658",
            "49680451404079282065607315814918053282162771730345492482"
        ),
        Ordering::Greater
    );
}
