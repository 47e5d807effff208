//! Failure paths through the real SDK: the fault proxy in front of the local Kinesis, shard
//! limits enforced by the emulator, resharding and deletion while producing.

mod common;

use std::time::Duration;

use common::*;
use kinesis_producer::{Producer, PutOutcome, Record};
use local_aws::LocalAws;
use local_aws::fault::{Fault, FaultProxy, PartialFailure, Rule};

async fn put_and_wait(producer: &Producer, records: &[(String, bytes::Bytes)]) -> Vec<PutOutcome> {
    let mut handles = Vec::new();
    for (k, d) in records {
        handles.push(
            producer
                .put(Record::new(k.clone(), d.clone()))
                .await
                .unwrap(),
        );
    }
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

fn retried_with(outcomes: &[PutOutcome], code: &str) -> usize {
    outcomes
        .iter()
        .filter(|o| {
            o.attempts()
                .iter()
                .any(|a| a.error().is_some_and(|e| e.code() == code))
        })
        .count()
}

struct Setup {
    _aws: LocalAws,
    kinesis: aws_sdk_kinesis::Client,
    proxy: FaultProxy,
    stream: String,
}

async fn setup(prefix: &str, shards: i32) -> Setup {
    let aws = LocalAws::start().await.unwrap();
    let kinesis = aws.kinesis_client();
    let stream = stream(&kinesis, prefix, shards).await;
    let proxy = FaultProxy::start(aws.kinesis_endpoint()).await.unwrap();
    Setup {
        _aws: aws,
        kinesis,
        proxy,
        stream,
    }
}

fn builder(s: &Setup) -> kinesis_producer::ProducerBuilder {
    Producer::builder(local_aws::kinesis_client(s.proxy.endpoint()))
        .stream(&s.stream)
        .collection_max_count(20)
}

#[tokio::test]
async fn partial_failures_retry_only_the_failed_entries() {
    let s = setup("partial", 4).await;
    s.proxy.inject(
        Rule::on("PutRecords")
            .times(4)
            .fault(Fault::partial_failure(PartialFailure::every(3))),
    );
    s.proxy.inject(
        Rule::on("PutRecords")
            .times(3)
            .fault(Fault::partial_failure(
                PartialFailure::every(2).internal_failure(),
            )),
    );
    // Unaggregated, so that there are enough requests for both rules.
    let producer = builder(&s).aggregation(false).build().await.unwrap();
    let want = records("pf", 1000, 40);
    let outcomes = put_and_wait(&producer, &want).await;
    assert!(retried_with(&outcomes, "ProvisionedThroughputExceededException") > 0);
    assert!(retried_with(&outcomes, "InternalFailure") > 0);
    producer.close().await;
    assert_exactly_once(&delivered(&s.kinesis, &s.stream).await, &want, 0);
}

#[tokio::test]
async fn server_errors_and_throttled_requests_are_retried() {
    let s = setup("5xx", 2).await;
    s.proxy.inject(
        Rule::on("PutRecords")
            .times(2)
            .fault(Fault::internal_error()),
    );
    s.proxy.inject(
        Rule::on("PutRecords")
            .once()
            .fault(Fault::service_unavailable()),
    );
    s.proxy
        .inject(Rule::on("PutRecords").times(2).fault(Fault::throttle()));
    let producer = builder(&s).build().await.unwrap();
    let want = records("se", 500, 40);
    let outcomes = put_and_wait(&producer, &want).await;
    let retried = outcomes.iter().filter(|o| o.attempts().len() > 1).count();
    assert!(retried > 0);
    // Each retried attempt history ends with the success and lists the errors before it.
    for o in &outcomes {
        let (last, before) = o.attempts().split_last().unwrap();
        assert!(last.is_success());
        assert!(before.iter().all(|a| !a.is_success()));
    }
    producer.close().await;
    assert_exactly_once(&delivered(&s.kinesis, &s.stream).await, &want, 0);
}

#[tokio::test]
async fn a_reset_before_forwarding_makes_no_duplicates() {
    let s = setup("resetb", 2).await;
    s.proxy.inject(
        Rule::on("PutRecords")
            .times(2)
            .fault(Fault::reset_before_forwarding()),
    );
    let producer = builder(&s).build().await.unwrap();
    let want = records("rb", 400, 40);
    let outcomes = put_and_wait(&producer, &want).await;
    assert!(outcomes.iter().any(|o| o.attempts().len() > 1));
    producer.close().await;
    assert_exactly_once(&delivered(&s.kinesis, &s.stream).await, &want, 0);
}

#[tokio::test]
async fn a_reset_after_forwarding_duplicates_only_that_request() {
    let s = setup("reseta", 2).await;
    let rule = s.proxy.inject(
        Rule::on("PutRecords")
            .once()
            .fault(Fault::reset_after_forwarding()),
    );
    let producer = builder(&s).build().await.unwrap();
    let want = records("ra", 400, 40);
    let outcomes = put_and_wait(&producer, &want).await;
    assert_eq!(s.proxy.fired(rule), 1);
    // Exactly the user records of the first request were stored twice: those retried.
    let retried = outcomes.iter().filter(|o| o.attempts().len() > 1).count();
    assert!(retried > 0);
    producer.close().await;
    let dups = assert_exactly_once(&delivered(&s.kinesis, &s.stream).await, &want, retried);
    assert_eq!(
        dups, retried,
        "every retried record of the reset request is a duplicate"
    );
}

#[tokio::test]
async fn a_request_slower_than_the_timeout_is_retried() {
    let s = setup("slow", 1).await;
    // The first request is stored, but its answer comes after the timeout.
    s.proxy.inject(
        Rule::on("PutRecords")
            .once()
            .fault(Fault::delay_response(Duration::from_secs(3))),
    );
    let producer = builder(&s)
        .request_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    let want = records("sl", 100, 40);
    let outcomes = put_and_wait(&producer, &want).await;
    let timed_out = retried_with(&outcomes, "Timeout");
    assert!(timed_out > 0);
    producer.close().await;
    assert_exactly_once(&delivered(&s.kinesis, &s.stream).await, &want, timed_out);
}

#[tokio::test]
async fn shard_limit_throttling_slows_down_and_loses_nothing() {
    let aws = LocalAws::builder()
        .enforce_shard_limits(true)
        .start()
        .await
        .unwrap();
    let kinesis = aws.kinesis_client();
    let stream = stream(&kinesis, "throttle", 1).await;
    // Unaggregated, so the 1000 records/s limit binds. A limit above 200 % starts there
    // rather than at the shard's nominal capacity: the shard must throttle, and the
    // feedback must bring the producer down to what it accepts.
    let producer = Producer::builder(kinesis.clone())
        .stream(&stream)
        .aggregation(false)
        .rate_limit(300)
        .build()
        .await
        .unwrap();
    let want = records("th", 2500, 20);
    let outcomes = put_and_wait(&producer, &want).await;
    assert!(
        retried_with(&outcomes, "ProvisionedThroughputExceededException") > 0,
        "the shard never throttled: the test does not test anything"
    );
    producer.close().await;
    assert_exactly_once(&delivered(&kinesis, &stream).await, &want, 0);
}

async fn reshard_while_producing(split: bool) {
    let aws = LocalAws::start().await.unwrap();
    let kinesis = aws.kinesis_client();
    let stream = stream(&kinesis, if split { "split" } else { "merge" }, 2).await;
    let producer = Producer::builder(kinesis.clone())
        .stream(&stream)
        .build()
        .await
        .unwrap();
    let want = records("rs", 4000, 30);
    let (first, second) = want.split_at(2000);

    let mut handles = Vec::new();
    for (k, d) in first {
        handles.push(
            producer
                .put(Record::new(k.clone(), d.clone()))
                .await
                .unwrap(),
        );
    }
    producer.flush().await;
    // Reshard with records buffered: the producer's map is now stale.
    let shards = kinesis
        .list_shards()
        .stream_name(&stream)
        .send()
        .await
        .unwrap();
    let ids: Vec<String> = shards
        .shards()
        .iter()
        .map(|s| s.shard_id().to_owned())
        .collect();
    if split {
        let r = shards.shards()[0].hash_key_range().unwrap();
        let start: u128 = r.starting_hash_key().parse().unwrap();
        let end: u128 = r.ending_hash_key().parse().unwrap();
        kinesis
            .split_shard()
            .stream_name(&stream)
            .shard_to_split(&ids[0])
            .new_starting_hash_key((start + (end - start) / 2).to_string())
            .send()
            .await
            .unwrap();
    } else {
        kinesis
            .merge_shards()
            .stream_name(&stream)
            .shard_to_merge(&ids[0])
            .adjacent_shard_to_merge(&ids[1])
            .send()
            .await
            .unwrap();
    }
    local_aws::testing::wait_for_active(&kinesis, &stream)
        .await
        .unwrap();
    for (k, d) in second {
        handles.push(
            producer
                .put(Record::new(k.clone(), d.clone()))
                .await
                .unwrap(),
        );
    }
    for h in handles {
        h.await.unwrap();
    }
    producer.close().await;
    // Read back from every shard, the closed parents included, filtered by shard range as
    // the KCL does: no loss, and no duplicate a KCL consumer would see.
    assert_exactly_once(&delivered(&kinesis, &stream).await, &want, 0);
}

#[tokio::test]
async fn a_split_while_producing_loses_nothing() {
    reshard_while_producing(true).await;
}

#[tokio::test]
async fn a_merge_while_producing_loses_nothing() {
    reshard_while_producing(false).await;
}

#[tokio::test]
async fn preserve_order_per_shard_keeps_each_keys_order_through_partial_failures() {
    let s = setup("order", 2).await;
    // Entries fail here and there, throttled and internal: a later entry of a request may
    // succeed where an earlier one failed.
    s.proxy.inject(
        Rule::on("PutRecords")
            .times(10)
            .fault(Fault::partial_failure(PartialFailure::every(2))),
    );
    s.proxy.inject(
        Rule::on("PutRecords")
            .times(10)
            .fault(Fault::partial_failure(
                PartialFailure::indexes([0]).internal_failure(),
            )),
    );
    // Small aggregates: many of them, several per shard buffered at once.
    let producer = builder(&s)
        .preserve_order_per_shard(true)
        .aggregation_max_count(8)
        .build()
        .await
        .unwrap();
    // 16 keys, each with a numbered sequence of records.
    let want: Vec<(String, bytes::Bytes)> = (0..1200)
        .map(|i| {
            (
                format!("order-key-{}", i % 16),
                bytes::Bytes::from(format!("{:06}", i / 16)),
            )
        })
        .collect();
    let outcomes = put_and_wait(&producer, &want).await;
    assert!(
        outcomes.iter().any(|o| o.attempts().len() > 1),
        "no fault fired"
    );
    producer.close().await;
    assert_exactly_once(&delivered(&s.kinesis, &s.stream).await, &want, 0);

    // In the stream, per shard in sequence order (sub-records in their order), each key's
    // numbers must increase.
    let mut last: std::collections::HashMap<String, bytes::Bytes> = Default::default();
    for (_, r) in local_aws::testing::read_stream(&s.kinesis, &s.stream)
        .await
        .unwrap()
    {
        let received = kinesis_aggregation::ReceivedRecord::new(
            r.sequence_number().to_owned(),
            r.partition_key().unwrap_or_default().to_owned(),
            bytes::Bytes::copy_from_slice(r.data().as_ref()),
        );
        for u in kinesis_aggregation::deaggregate(received) {
            if let Some(prev) = last.get(&u.partition_key) {
                assert!(
                    *prev < u.data,
                    "key {}: {:?} after {:?}",
                    u.partition_key,
                    u.data,
                    prev
                );
            }
            last.insert(u.partition_key, u.data);
        }
    }
    assert_eq!(last.len(), 16);
}

#[tokio::test]
async fn without_a_shard_map_records_go_alone_until_the_map_loads() {
    let s = setup("nomap", 2).await;
    // The build's ListShards fails through all of the SDK's three attempts: the producer
    // starts without a map, and its own reload (1 s later) succeeds.
    s.proxy.inject(
        Rule::on("ListShards")
            .times(3)
            .fault(Fault::internal_error()),
    );
    let producer = builder(&s).build().await.unwrap();
    let want = records("nm", 600, 30);
    let (early, late) = want.split_at(300);
    let outcomes = put_and_wait(&producer, early).await;
    assert!(
        outcomes.iter().all(|o| !o.is_aggregated()),
        "aggregated without a shard map"
    );
    // Once the map is there, records are aggregated again.
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if s.proxy.count("ListShards") > 3 {
            break;
        }
    }
    let outcomes = put_and_wait(&producer, late).await;
    let aggregated = outcomes.iter().any(|o| o.is_aggregated());
    assert!(aggregated, "still no aggregation after the map loaded");
    producer.close().await;
    assert_exactly_once(&delivered(&s.kinesis, &s.stream).await, &want, 0);
}

async fn spoiled_answers_are_retried(fault: Fault, prefix: &str) {
    let s = setup(prefix, 2).await;
    let rule = s.proxy.inject(Rule::on("PutRecords").times(2).fault(fault));
    let producer = builder(&s).build().await.unwrap();
    let want = records(prefix, 400, 40);
    let outcomes = put_and_wait(&producer, &want).await;
    assert_eq!(s.proxy.fired(rule), 2);
    // Kinesis stored every spoiled request: each failed attempt of a record is one more
    // copy of it in the stream, and nothing else is.
    let spoiled: usize = outcomes.iter().map(|o| o.attempts().len() - 1).sum();
    assert!(spoiled > 0);
    for o in &outcomes {
        let (last, before) = o.attempts().split_last().unwrap();
        assert!(last.is_success() && before.iter().all(|a| !a.is_success()));
    }
    producer.close().await;
    let dups = assert_exactly_once(&delivered(&s.kinesis, &s.stream).await, &want, spoiled);
    assert_eq!(
        dups, spoiled,
        "every failed attempt left one duplicate, no other"
    );
}

#[tokio::test]
async fn a_truncated_answer_is_retried_and_its_duplicates_counted() {
    spoiled_answers_are_retried(Fault::truncate_body(), "trunc").await;
}

#[tokio::test]
async fn a_garbled_answer_is_retried_and_its_duplicates_counted() {
    spoiled_answers_are_retried(Fault::garble_body(), "garble").await;
}
