//! The pipeline against an in-memory Kinesis, on tokio's paused clock: linger and TTL
//! without sleeping.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kinesis_aggregation::{HashKey, HashKeyRange, KinesisRecord};
use tokio::time::Instant;

use crate::api::{CallError, EntryResult, KinesisApi, ShardDesc, ShardPage, StreamId};
use crate::{Producer, PutError, PutFailure, Record};

/// One shard; every entry fails with `fail_code` if set, else succeeds. Call times logged.
struct Fake {
    fail_code: Option<&'static str>,
    calls: Mutex<Vec<(Instant, usize)>>,
}

#[async_trait]
impl KinesisApi for Fake {
    async fn list_shards(
        &self,
        _: &StreamId,
        _: Option<&str>,
        _: Option<i32>,
    ) -> Result<ShardPage, CallError> {
        Ok(ShardPage {
            shards: vec![ShardDesc {
                id: "shard-0".into(),
                range: HashKeyRange::FULL,
                parent: None,
                adjacent_parent: None,
                open: true,
            }],
            more: false,
        })
    }

    async fn put_records(
        &self,
        _: &StreamId,
        records: Vec<KinesisRecord>,
    ) -> Result<Vec<EntryResult>, CallError> {
        let n = self.calls.lock().unwrap().len();
        self.calls
            .lock()
            .unwrap()
            .push((Instant::now(), records.len()));
        Ok(records
            .iter()
            .enumerate()
            .map(|(i, _)| match self.fail_code {
                Some(code) => EntryResult::Failed {
                    code: code.into(),
                    message: "injected".into(),
                },
                None => EntryResult::Ok {
                    shard_id: "shard-0".into(),
                    sequence_number: format!("{n}-{i}").into(),
                },
            })
            .collect())
    }
}

fn fake(fail_code: Option<&'static str>) -> Arc<Fake> {
    Arc::new(Fake {
        fail_code,
        calls: Mutex::new(Vec::new()),
    })
}

fn builder() -> crate::ProducerBuilder {
    // The client is never used: the fake answers.
    let conf = aws_sdk_kinesis::Config::builder()
        .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
        .build();
    Producer::builder(aws_sdk_kinesis::Client::from_conf(conf)).stream("s")
}

#[tokio::test(start_paused = true)]
async fn records_linger_for_the_max_buffered_time_then_go_together() {
    let api = fake(None);
    let producer = builder().build_with_api(api.clone()).await.unwrap();
    let t0 = Instant::now();
    let a = producer.put(Record::new("a", "1")).await.unwrap();
    let b = producer.put(Record::new("b", "2")).await.unwrap();
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    let calls = api.calls.lock().unwrap().clone();
    // One request with one aggregate, sent when the linger ran out, not before.
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].1, 1);
    assert_eq!(calls[0].0 - t0, Duration::from_millis(100));
    assert_eq!((a.sub_sequence_number(), b.sub_sequence_number()), (0, 1));
    assert!(a.is_aggregated());
    assert_eq!(a.attempts()[0].delay(), Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn a_full_request_goes_before_the_linger_runs_out() {
    let api = fake(None);
    let producer = builder()
        .aggregation(false)
        .collection_max_count(10)
        .record_max_buffered_time(Duration::from_secs(60))
        .build_with_api(api.clone())
        .await
        .unwrap();
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for i in 0..11 {
        handles.push(
            producer
                .put(Record::new(format!("k{i}"), "x"))
                .await
                .unwrap(),
        );
    }
    for h in handles.drain(..10) {
        h.await.unwrap();
    }
    assert_eq!(Instant::now(), t0, "a full request waits for nothing");
    producer.close().await;
    assert_eq!(api.calls.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_batch_larger_than_the_buffer_goes_in_chunks_and_flush_waits_for_it() {
    let api = fake(None);
    let producer = builder()
        .max_buffered_records(8)
        .build_with_api(api.clone())
        .await
        .unwrap();
    // 100 records through a buffer of 8: chunks of 2 (a quarter of the buffer), each
    // waiting for the previous ones to be sent.
    let records = (0..100).map(|i| Record::new(format!("k{i}"), format!("v{i}")));
    let handle = producer.put_batch(records).await;
    producer.flush().await;
    assert_eq!(producer.outstanding_records(), 0);
    let outcomes = handle.await;
    assert_eq!(outcomes.len(), 100);
    for o in &outcomes {
        assert_eq!(o.as_ref().unwrap().attempts().len(), 1);
    }
    // Sent in order: sequence numbers never go back.
    let seqs: Vec<(usize, u64)> = outcomes
        .iter()
        .map(|o| {
            let o = o.as_ref().unwrap();
            let (call, pos) = o.sequence_number().split_once('-').unwrap();
            (
                call.parse().unwrap(),
                o.sub_sequence_number() + pos.parse::<u64>().unwrap(),
            )
        })
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] <= w[1]), "{seqs:?}");
    producer.close().await;
}

#[tokio::test(start_paused = true)]
async fn put_batch_refuses_in_place_and_on_a_closed_producer() {
    let api = fake(None);
    let producer = builder()
        .max_user_record_size(100)
        .build_with_api(api.clone())
        .await
        .unwrap();
    let outcomes = producer
        .put_batch([
            Record::new("a", "1"),
            Record::new("b", vec![0u8; 200]),
            Record::new("c", "3").with_explicit_hash_key("x"),
            Record::new("d", "4"),
        ])
        .await
        .await;
    assert!(outcomes[0].is_ok() && outcomes[3].is_ok());
    assert_eq!(outcomes[3].as_ref().unwrap().sub_sequence_number(), 1);
    assert!(matches!(
        &outcomes[1],
        Err(PutFailure::Refused {
            error: PutError::RecordTooLarge { size: 201, .. }
        })
    ));
    match &outcomes[2] {
        Err(f @ PutFailure::Refused { .. }) => {
            assert_eq!(f.record().unwrap().explicit_hash_key(), Some("x"));
            assert!(f.attempts().is_empty());
        }
        other => panic!("{other:?}"),
    }
    producer.close().await;
    let outcomes = producer.put_batch([Record::new("e", "5")]).await.await;
    assert!(matches!(
        &outcomes[..],
        [Err(PutFailure::Refused {
            error: PutError::Closed { .. }
        })]
    ));
    assert!(producer.put_batch(Vec::new()).await.await.is_empty());
}

#[test]
fn records_of_a_batch_are_lost_not_forgotten_when_the_runtime_stops() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The handle is awaited on another runtime, once this one is gone.
    #[allow(clippy::async_yields_async)]
    let handle = rt.block_on(async {
        let producer = builder()
            .record_max_buffered_time(Duration::from_secs(3600))
            .build_with_api(fake(None))
            .await
            .unwrap();
        producer
            .put_batch([Record::new("a", "1"), Record::new("b", "2")])
            .await
    });
    // The engine task, and the records it held, go with the runtime.
    drop(rt);
    let outcomes = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(handle);
    assert!(matches!(
        &outcomes[..],
        [Err(PutFailure::Lost), Err(PutFailure::Lost)]
    ));
}

#[tokio::test(start_paused = true)]
async fn a_limiter_bound_request_gathers_records_instead_of_going_with_one() {
    let api = fake(None);
    // Unaggregated records well beyond the shard's 1000 records/s: the limiter binds.
    let producer = builder()
        .aggregation(false)
        .rate_limit(100)
        .build_with_api(api.clone())
        .await
        .unwrap();
    let outcomes = producer
        .put_batch((0..3000).map(|i| Record::new(format!("k{i}"), "x")))
        .await
        .await;
    assert!(outcomes.iter().all(Result::is_ok));
    let calls = api.calls.lock().unwrap().clone();
    let per_call = 3000.0 / calls.len() as f64;
    // A token comes every millisecond: sent as they come, most requests would carry one.
    assert!(
        per_call >= 20.0,
        "{} requests, {per_call:.1} records each",
        calls.len()
    );
    producer.close().await;
}

#[tokio::test(start_paused = true)]
async fn retries_back_off_and_end_at_the_ttl_with_every_attempt() {
    let api = fake(Some("InternalFailure"));
    let producer = builder()
        .record_ttl(Duration::from_secs(5))
        .build_with_api(api.clone())
        .await
        .unwrap();
    let t0 = Instant::now();
    let h = producer
        .put(Record::new("k", "v").with_explicit_hash_key("7"))
        .await
        .unwrap();
    match h.await {
        Err(PutFailure::Expired { record, attempts }) => {
            assert_eq!(record.explicit_hash_key(), Some("7"));
            assert!(attempts.len() >= 4, "{}", attempts.len());
            assert!(
                attempts
                    .iter()
                    .all(|a| a.error().unwrap().code() == "InternalFailure")
            );
            // Exponential: each wait at least doubles the base (jitter only adds).
            for w in attempts.windows(3).skip(1) {
                assert!(
                    w[2].delay() >= w[1].delay().mul_f32(0.99)
                        || w[2].delay() >= Duration::from_secs(5)
                );
            }
        }
        other => panic!("{other:?}"),
    }
    assert!(Instant::now() - t0 <= Duration::from_secs(5));
    let _ = HashKey(0);
}

#[tokio::test(start_paused = true)]
async fn batch_records_come_back_whole_after_retries_from_their_shared_buffer() {
    // put_batch copies keys and data into one buffer per chunk; retries detach each record
    // into its own copy. Whatever the path, a failed record is handed back unchanged.
    let api = fake(Some("InternalFailure"));
    // The limiter opened: retries, not the shard's rate, are what this is about.
    let producer = builder()
        .record_ttl(Duration::from_secs(3))
        .rate_limit(100_000)
        .build_with_api(api.clone())
        .await
        .unwrap();
    let records: Vec<Record> = (0..1200)
        .map(|i| {
            // Mostly small; a few large enough to go alone and to make short chunks.
            let size = if i % 100 == 5 { 300_000 } else { i % 300 };
            let r = Record::new(format!("ключ-{i}"), vec![i as u8; size]);
            if i % 7 == 0 {
                r.with_explicit_hash_key(format!("{}", i * 1000))
            } else {
                r
            }
        })
        .collect();
    let outcomes = producer.put_batch(records.clone()).await.await;
    assert_eq!(outcomes.len(), records.len());
    let mut retried = 0;
    for (want, got) in records.iter().zip(outcomes) {
        match got {
            Err(PutFailure::Expired { record, attempts }) => {
                assert_eq!(&record, want);
                retried += usize::from(attempts.len() >= 2);
            }
            other => panic!("{other:?}"),
        }
    }
    // All went through retries, so through the copy out of the shared buffer.
    assert_eq!(retried, records.len());
}

#[tokio::test(start_paused = true)]
async fn permanent_errors_fail_at_once() {
    let api = fake(Some("KMSDisabledException"));
    let producer = builder().build_with_api(api.clone()).await.unwrap();
    let h = producer.put(Record::new("k", "v")).await.unwrap();
    match h.await {
        Err(PutFailure::Rejected { code, attempts, .. }) => {
            assert_eq!(code, "KMSDisabledException");
            assert_eq!(attempts.len(), 1);
        }
        other => panic!("{other:?}"),
    }
}

/// One shard, always succeeds; logs every call's record count and billed bytes.
struct Sizes {
    calls: Mutex<Vec<(usize, usize)>>,
}

#[async_trait]
impl KinesisApi for Sizes {
    async fn list_shards(
        &self,
        s: &StreamId,
        a: Option<&str>,
        m: Option<i32>,
    ) -> Result<ShardPage, CallError> {
        fake(None).list_shards(s, a, m).await
    }

    async fn put_records(
        &self,
        _: &StreamId,
        records: Vec<KinesisRecord>,
    ) -> Result<Vec<EntryResult>, CallError> {
        let bytes = records.iter().map(KinesisRecord::billed_size).sum();
        self.calls.lock().unwrap().push((records.len(), bytes));
        Ok((0..records.len())
            .map(|i| EntryResult::Ok {
                shard_id: "shard-0".into(),
                sequence_number: i.to_string().into(),
            })
            .collect())
    }
}

static ZEROS: [u8; 1 << 20] = [0; 1 << 20];

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    /// Whatever the mix of record sizes, every `PutRecords` holds at most 500 records and at
    /// most 5 MiB of data plus partition keys (as Kinesis counts), and every record goes.
    #[test]
    fn requests_never_exceed_the_putrecords_limits(
        sizes in proptest::collection::vec(
            (
                1usize..=256,
                proptest::prop_oneof![
                    30 => 0usize..300,
                    1 => 100_000usize..=(1 << 20),
                ],
            ),
            1..1500,
        ),
        aggregation: bool,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let calls = rt.block_on(async {
            let api = Arc::new(Sizes { calls: Mutex::new(Vec::new()) });
            let producer = builder()
                .aggregation(aggregation)
                .build_with_api(api.clone())
                .await
                .unwrap();
            let mut handles = Vec::new();
            for (i, (key_len, data_len)) in sizes.iter().enumerate() {
                let key: String = format!("{i}-{}", "k".repeat(*key_len))
                    .chars()
                    .take(*key_len)
                    .collect();
                let data_len = (*data_len).min((1 << 20) - key.len());
                let data = bytes::Bytes::from_static(&ZEROS[..data_len]);
                handles.push(producer.put(Record::new(key, data)).await.unwrap());
            }
            for h in handles {
                h.await.unwrap();
            }
            producer.close().await;
            api.calls.lock().unwrap().clone()
        });
        for (count, bytes) in calls {
            proptest::prop_assert!(count <= 500, "{count} records in one request");
            proptest::prop_assert!(bytes <= 5 * 1024 * 1024, "{bytes} bytes in one request");
        }
    }
}

/// The fake, counting `ListShards` calls.
struct Lists {
    inner: Arc<Fake>,
    lists: Mutex<usize>,
}

#[async_trait]
impl KinesisApi for Lists {
    async fn list_shards(
        &self,
        s: &StreamId,
        a: Option<&str>,
        m: Option<i32>,
    ) -> Result<ShardPage, CallError> {
        *self.lists.lock().unwrap() += 1;
        self.inner.list_shards(s, a, m).await
    }

    async fn put_records(
        &self,
        s: &StreamId,
        records: Vec<KinesisRecord>,
    ) -> Result<Vec<EntryResult>, CallError> {
        self.inner.put_records(s, records).await
    }
}

#[tokio::test(start_paused = true)]
async fn the_shard_map_is_reloaded_periodically_and_only_if_asked() {
    for (every, expected) in [(Duration::from_secs(10), 1 + 3), (Duration::ZERO, 1)] {
        let api = Arc::new(Lists {
            inner: fake(None),
            lists: Mutex::new(0),
        });
        let producer = builder()
            .shard_map_refresh_interval(every)
            .build_with_api(api.clone())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(35)).await;
        // Still delivering with the reloaded map.
        producer
            .put(Record::new("k", "v"))
            .await
            .unwrap()
            .await
            .unwrap();
        producer.close().await;
        assert_eq!(*api.lists.lock().unwrap(), expected, "every {every:?}");
    }
}
