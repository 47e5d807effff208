//! The producer through the real SDK against the local Kinesis: delivery, validation, build
//! errors, flush and close, backpressure.

mod common;

use std::time::Duration;

use common::*;
use kinesis_producer::{BuildError, Producer, PutError, PutFailure, Record};
use local_aws::LocalAws;
use local_aws::fault::{Fault, FaultProxy, Rule};

/// A local stack, a stream of `shards` shards and a producer on it with the defaults.
async fn started(
    prefix: &str,
    shards: i32,
) -> (LocalAws, aws_sdk_kinesis::Client, String, Producer) {
    let aws = LocalAws::start().await.unwrap();
    let kinesis = aws.kinesis_client();
    let stream = stream(&kinesis, prefix, shards).await;
    let producer = Producer::builder(kinesis.clone())
        .stream(&stream)
        .build()
        .await
        .unwrap();
    (aws, kinesis, stream, producer)
}

async fn put_all(
    producer: &Producer,
    records: &[(String, bytes::Bytes)],
) -> Vec<kinesis_producer::PutHandle> {
    let mut handles = Vec::new();
    for (k, d) in records {
        handles.push(
            producer
                .put(Record::new(k.clone(), d.clone()))
                .await
                .unwrap(),
        );
    }
    handles
}

#[tokio::test]
async fn every_record_is_delivered_exactly_once_aggregated_per_shard() {
    let (_aws, kinesis, stream, producer) = started("deliver", 4).await;

    let want = records("r", 5000, 100);
    let handles = put_all(&producer, &want).await;
    let mut aggregated = 0;
    let mut shards = std::collections::HashSet::new();
    for h in handles {
        let o = h.await.unwrap();
        assert_eq!(o.attempts().len(), 1);
        assert!(o.attempts()[0].is_success());
        if o.is_aggregated() {
            aggregated += 1;
        }
        shards.insert(o.shard_id().to_owned());
    }
    assert!(
        aggregated > 4500,
        "only {aggregated} records were aggregated"
    );
    assert_eq!(shards.len(), 4);
    producer.close().await;

    let got = delivered(&kinesis, &stream).await;
    assert_exactly_once(&got, &want, 0);
}

#[tokio::test]
async fn put_batch_delivers_every_record_once_with_outcomes_in_order() {
    let (_aws, kinesis, stream, producer) = started("batch", 4).await;

    let want = records("b", 3000, 100);
    let mut batch: Vec<Record> = want
        .iter()
        .map(|(k, d)| Record::new(k.clone(), d.clone()))
        .collect();
    // An invalid record mid-batch is refused in its place; the others go on.
    batch.insert(1234, Record::new("", "no key"));
    let outcomes = producer.put_batch(batch).await.await;
    assert_eq!(outcomes.len(), want.len() + 1);
    for (i, o) in outcomes.into_iter().enumerate() {
        if i == 1234 {
            match o {
                Err(PutFailure::Refused {
                    error: PutError::InvalidPartitionKey { record, .. },
                }) => assert_eq!(record.data().as_ref(), b"no key"),
                other => panic!("{other:?}"),
            }
            continue;
        }
        let o = o.unwrap();
        assert_eq!(o.attempts().len(), 1);
        assert!(o.is_aggregated());
    }
    producer.close().await;

    let got = delivered(&kinesis, &stream).await;
    assert_exactly_once(&got, &want, 0);
}

#[tokio::test]
async fn outcomes_carry_sequence_and_sub_sequence_numbers() {
    let (_aws, _kinesis, _stream, producer) = started("subseq", 1).await;
    let handles = put_all(&producer, &records("s", 10, 10)).await;
    producer.flush().await;
    let mut seen = Vec::new();
    for h in handles {
        let o = h.await.unwrap();
        seen.push((o.sequence_number().to_owned(), o.sub_sequence_number()));
    }
    // One aggregate: one sequence number, positions 0..10 in put order.
    assert!(seen.iter().all(|(s, _)| *s == seen[0].0));
    assert_eq!(
        seen.iter().map(|s| s.1).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn without_aggregation_each_record_goes_alone() {
    let aws = LocalAws::start().await.unwrap();
    let kinesis = aws.kinesis_client();
    let stream = stream(&kinesis, "plain", 2).await;
    let producer = Producer::builder(kinesis.clone())
        .stream(&stream)
        .aggregation(false)
        .build()
        .await
        .unwrap();
    let want = records("p", 600, 50);
    for h in put_all(&producer, &want).await {
        assert!(!h.await.unwrap().is_aggregated());
    }
    assert_exactly_once(&delivered(&kinesis, &stream).await, &want, 0);
}

#[tokio::test]
async fn build_reports_a_missing_stream_and_pages_through_shards() {
    let aws = LocalAws::start().await.unwrap();
    let kinesis = aws.kinesis_client();
    let err = Producer::builder(kinesis.clone())
        .stream("no-such-stream")
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, BuildError::StreamNotFound { .. }), "{err:?}");
    let err = Producer::builder(kinesis.clone())
        .build()
        .await
        .unwrap_err();
    assert!(matches!(err, BuildError::NoStream), "{err:?}");

    // Seven shards listed two at a time: every shard must be in the map, or records for the
    // missing ones would be predicted wrong (and aggregates land on the wrong shard).
    let stream = stream(&kinesis, "paging", 7).await;
    let proxy = FaultProxy::start(aws.kinesis_endpoint()).await.unwrap();
    let producer = Producer::builder(local_aws::kinesis_client(proxy.endpoint()))
        .stream(&stream)
        .list_shards_page_size(Some(2))
        .build()
        .await
        .unwrap();
    assert_eq!(proxy.count("ListShards"), 4);
    let want = records("g", 3000, 20);
    let handles = put_all(&producer, &want).await;
    let mut shards = std::collections::HashSet::new();
    for h in handles {
        let o = h.await.unwrap();
        assert_eq!(o.attempts().len(), 1, "{:?}", o.attempts());
        shards.insert(o.shard_id().to_owned());
    }
    assert_eq!(shards.len(), 7);
    // No wrong-shard result, so no refresh.
    assert_eq!(proxy.count("ListShards"), 4);
    assert_exactly_once(&delivered(&kinesis, &stream).await, &want, 0);
}

#[tokio::test]
async fn invalid_records_are_refused_at_once_and_handed_back() {
    let aws = LocalAws::start().await.unwrap();
    let kinesis = aws.kinesis_client();
    let stream = stream(&kinesis, "invalid", 1).await;
    let producer = Producer::builder(kinesis.clone())
        .stream(&stream)
        .max_user_record_size(1000)
        .build()
        .await
        .unwrap();
    let e = producer.put(Record::new("", "x")).await.unwrap_err();
    assert!(matches!(e, PutError::InvalidPartitionKey { .. }), "{e:?}");
    let e = producer
        .put(Record::new("k".repeat(257), "x"))
        .await
        .unwrap_err();
    assert!(matches!(e, PutError::InvalidPartitionKey { .. }), "{e:?}");
    let e = producer
        .put(Record::new("k", "x").with_explicit_hash_key("12a"))
        .await
        .unwrap_err();
    assert!(
        matches!(e, PutError::InvalidExplicitHashKey { .. }),
        "{e:?}"
    );
    let e = producer
        .put(
            Record::new("k", "x").with_explicit_hash_key("340282366920938463463374607431768211456"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(e, PutError::InvalidExplicitHashKey { .. }),
        "{e:?}"
    );
    let e = producer
        .try_put(Record::new("key", vec![0u8; 998]))
        .unwrap_err();
    match e {
        PutError::RecordTooLarge {
            record,
            size,
            limit,
        } => {
            assert_eq!((size, limit), (1001, 1000));
            assert_eq!(record.partition_key(), "key");
            assert_eq!(record.data().len(), 998);
        }
        other => panic!("{other:?}"),
    }
    // The largest valid record and an explicit hash key go through.
    let ok = producer
        .put(Record::new("key", vec![0u8; 997]).with_explicit_hash_key("0"))
        .await
        .unwrap();
    ok.await.unwrap();
    producer.close().await;
    let e = producer.put(Record::new("k", "x")).await.unwrap_err();
    assert!(matches!(e, PutError::Closed { .. }), "{e:?}");
}

#[tokio::test]
async fn close_with_records_in_flight_loses_nothing() {
    let aws = LocalAws::start().await.unwrap();
    let kinesis = aws.kinesis_client();
    let stream = stream(&kinesis, "close", 2).await;
    let proxy = FaultProxy::start(aws.kinesis_endpoint()).await.unwrap();
    // Slow requests: close() finds them in flight.
    proxy.inject(
        Rule::on("PutRecords")
            .always()
            .fault(Fault::delay(Duration::from_millis(200))),
    );
    let producer = Producer::builder(local_aws::kinesis_client(proxy.endpoint()))
        .stream(&stream)
        .collection_max_count(50)
        .build()
        .await
        .unwrap();
    let want = records("c", 2000, 30);
    let handles = put_all(&producer, &want).await;
    let clone = producer.clone();
    producer.close().await;
    assert_eq!(producer.outstanding_records(), 0);
    for h in handles {
        h.await.unwrap();
    }
    assert!(matches!(
        clone.try_put(Record::new("k", "v")),
        Err(PutError::Closed { .. })
    ));
    assert_exactly_once(&delivered(&kinesis, &stream).await, &want, 0);
}

#[tokio::test]
async fn flush_sends_at_once_and_waits_for_outcomes() {
    let aws = LocalAws::start().await.unwrap();
    let kinesis = aws.kinesis_client();
    let stream = stream(&kinesis, "flush", 1).await;
    // A linger of an hour: only flush can send these.
    let producer = Producer::builder(kinesis.clone())
        .stream(&stream)
        .record_max_buffered_time(Duration::from_secs(3600))
        .build()
        .await
        .unwrap();
    let handles = put_all(&producer, &records("f", 10, 10)).await;
    assert_eq!(producer.outstanding_records(), 10);
    producer.flush().await;
    assert_eq!(producer.outstanding_records(), 0);
    for h in handles {
        h.await.unwrap();
    }
    // A flush with nothing outstanding returns at once.
    producer.flush().await;
}

#[tokio::test]
async fn dropping_the_producer_still_delivers_what_was_put() {
    let (_aws, kinesis, stream, producer) = started("drop", 1).await;
    let want = records("d", 100, 10);
    let handles = put_all(&producer, &want).await;
    drop(producer);
    for h in handles {
        h.await.unwrap();
    }
    assert_exactly_once(&delivered(&kinesis, &stream).await, &want, 0);
}

#[tokio::test]
async fn backpressure_bounds_the_buffer_while_the_sender_is_stalled() {
    let aws = LocalAws::start().await.unwrap();
    let kinesis = aws.kinesis_client();
    let stream = stream(&kinesis, "stall", 1).await;
    let proxy = FaultProxy::start(aws.kinesis_endpoint()).await.unwrap();
    // Every PutRecords hangs longer than the request timeout: nothing completes.
    let stall = proxy.inject(
        Rule::on("PutRecords")
            .always()
            .fault(Fault::delay(Duration::from_secs(60))),
    );
    let producer = Producer::builder(local_aws::kinesis_client(proxy.endpoint()))
        .stream(&stream)
        .max_buffered_records(100)
        .max_buffered_bytes(2 * 1024 * 1024)
        .request_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let want = records("b", 100, 100);
    let mut handles = Vec::new();
    for (k, d) in &want {
        handles.push(producer.try_put(Record::new(k.clone(), d.clone())).unwrap());
    }
    assert_eq!(producer.outstanding_records(), 100);
    let extra = ("extra".to_owned(), bytes::Bytes::from_static(b"more"));
    match producer.try_put(Record::new(extra.0.clone(), extra.1.clone())) {
        Err(PutError::Full { record }) => assert_eq!(record.partition_key(), "extra"),
        other => panic!("{other:?}"),
    }
    // put waits: it is still pending once the producer had time to run.
    let waiting = tokio::spawn({
        let producer = producer.clone();
        let r = Record::new(extra.0.clone(), extra.1.clone());
        async move { producer.put(r).await.unwrap().await }
    });
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(!waiting.is_finished());
    assert_eq!(producer.outstanding_records(), 100);

    // Unstall: the timed-out requests are retried and everything goes through.
    proxy.remove(stall);
    for h in handles {
        h.await.unwrap();
    }
    waiting.await.unwrap().unwrap();
    producer.close().await;
    let mut all = want.clone();
    all.push(extra);
    // A timed-out request may have been stored before the proxy gave up: duplicates allowed.
    assert_exactly_once(&delivered(&kinesis, &stream).await, &all, 0);
}

#[tokio::test]
async fn a_deleted_stream_fails_records_with_a_typed_error() {
    let (_aws, kinesis, stream, producer) = started("deleted", 2).await;
    for h in put_all(&producer, &records("before", 50, 10)).await {
        h.await.unwrap();
    }
    kinesis
        .delete_stream()
        .stream_name(&stream)
        .enforce_consumer_deletion(true)
        .send()
        .await
        .unwrap();
    // Wait until the deletion took effect (the emulator keeps DELETING for 50 ms).
    while kinesis
        .describe_stream_summary()
        .stream_name(&stream)
        .send()
        .await
        .is_ok()
    {
        tokio::task::yield_now().await;
    }
    for h in put_all(&producer, &records("after", 50, 10)).await {
        match h.await {
            Err(PutFailure::StreamNotFound {
                record, attempts, ..
            }) => {
                assert!(record.partition_key().starts_with("key-"));
                assert_eq!(attempts.len(), 1);
                assert_eq!(
                    attempts[0].error().unwrap().code(),
                    "ResourceNotFoundException"
                );
            }
            other => panic!("{other:?}"),
        }
    }
    producer.close().await;
}
