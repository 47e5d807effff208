//! The service over real HTTP (127.0.0.1:0), its producer on the local stack through the
//! real SDK.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Http, Running, contents, stack, stored};
use http::StatusCode;
use kinesis_producer::Producer;
use local_aws::LocalAws;
use local_aws::fault::{Fault, FaultProxy, Rule};
use producer_service::{App, Export, Metrics};
use serde_json::{Value, json};

const DRAIN: Duration = Duration::from_secs(30);

/// Checks that every answered (sequence, sub-sequence) holds the posted key and data.
fn assert_answered(
    stored: &std::collections::HashMap<(String, u64), common::Stored>,
    answer: &Value,
    key: &str,
    data: &str,
) {
    let seq = answer["sequence_number"]
        .as_str()
        .expect("a sequence number");
    let sub = answer["sub_sequence_number"]
        .as_u64()
        .expect("a sub-sequence number");
    let got = stored
        .get(&(seq.to_owned(), sub))
        .unwrap_or_else(|| panic!("{seq}/{sub} is not in the stream"));
    assert_eq!(got.partition_key, key);
    assert_eq!(got.data, Bytes::copy_from_slice(data.as_bytes()));
    assert_eq!(answer["shard_id"].as_str(), Some(got.shard_id.as_str()));
}

/// A producer on `stream` with the default settings.
async fn default_producer(aws: &LocalAws, stream: &str) -> Producer {
    Producer::builder(aws.kinesis_client())
        .stream(stream)
        .build()
        .await
        .unwrap()
}

/// The app with the default settings over [`default_producer`], served.
async fn serve_default_app(aws: &LocalAws, stream: &str) -> Running {
    Running::start(
        App::builder(default_producer(aws, stream).await).build(),
        DRAIN,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posted_events_are_in_the_stream_with_the_answered_sequence_numbers() {
    let (aws, stream) = stack(2).await;
    let svc = serve_default_app(&aws, &stream).await;
    let http = Http::default();
    let url = svc.url("/events");

    // One event: one result.
    let one = http
        .post(
            &url,
            r#"{"partition_key": "user-1", "data": {"n": 1, "big": 123456789012345678901234}}"#,
        )
        .await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.text());
    let one = one.json();

    // A batch in the envelope shape, with camelCase keys.
    let batch: Vec<Value> = (0..20)
        .map(|i| json!({"partitionKey": format!("key-{i}"), "data": {"i": i}}))
        .collect();
    let envelope = http
        .post(&url, &json!({ "records": batch }).to_string())
        .await;
    assert_eq!(envelope.status, StatusCode::OK, "{}", envelope.text());
    let envelope = envelope.json();
    assert_eq!(envelope["failed_record_count"], 0);

    // A bare array, the partition key from the header, data of every JSON kind.
    let array = http
        .post_with(
            &url,
            &[("x-partition-key", "from-header")],
            r#"[{"data": "text"}, {"data": null}, {"data": [1, 2]}, {"data": 2.5}]"#,
        )
        .await;
    assert_eq!(array.status, StatusCode::OK, "{}", array.text());
    let array = array.json();

    let stored = stored(&aws.kinesis_client(), &stream).await;
    assert_eq!(stored.len(), 1 + 20 + 4);
    assert_answered(
        &stored,
        &one,
        "user-1",
        r#"{"n": 1, "big": 123456789012345678901234}"#,
    );
    for i in 0..20 {
        assert_answered(
            &stored,
            &envelope["records"][i],
            &format!("key-{i}"),
            &format!(r#"{{"i":{i}}}"#),
        );
    }
    for (i, data) in [r#""text""#, "null", "[1, 2]", "2.5"].iter().enumerate() {
        assert_answered(&stored, &array["records"][i], "from-header", data);
    }
    let summary = svc.shutdown().await;
    assert!(summary.complete);
    assert_eq!(summary.stats.accepted, 25);
    assert_eq!(summary.stats.delivered, 25);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fire_and_forget_answers_202_and_delivers() {
    let (aws, stream) = stack(1).await;
    let svc = serve_default_app(&aws, &stream).await;
    let http = Http::default();

    let a = http
        .post(
            &svc.url("/events?wait=false"),
            r#"{"partition_key": "a", "data": 1}"#,
        )
        .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.text());
    assert_eq!(a.json(), json!({"accepted": true}));

    // The RFC 7240 header does the same; the query parameter wins over it.
    let b = http
        .post_with(
            &svc.url("/events"),
            &[("prefer", "respond-async")],
            r#"[{"partition_key": "b", "data": 2}, {"partition_key": "c", "data": 3}]"#,
        )
        .await;
    assert_eq!(b.status, StatusCode::ACCEPTED, "{}", b.text());
    assert_eq!(
        b.json(),
        json!({"failed_record_count": 0, "records": [{"accepted": true}, {"accepted": true}]})
    );
    let c = http
        .post_with(
            &svc.url("/events?wait=true"),
            &[("prefer", "respond-async")],
            r#"{"partition_key": "d", "data": 4}"#,
        )
        .await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.text());

    svc.app.producer().flush().await;
    let got = contents(&aws.kinesis_client(), &stream).await;
    for (key, data) in [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")] {
        assert_eq!(
            got.get(&(key.to_owned(), Bytes::from(data))),
            Some(&1),
            "{key}"
        );
    }
    assert_eq!(got.len(), 4);
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_is_400_and_large_bodies_413() {
    let (aws, stream) = stack(1).await;
    let producer = Producer::builder(aws.kinesis_client())
        .stream(&stream)
        .max_user_record_size(1000)
        .build()
        .await
        .unwrap();
    let app = App::builder(producer).max_body_bytes(4096).build();
    let svc = Running::start(app, DRAIN).await;
    let http = Http::default();
    let url = svc.url("/events");
    let code = |v: &Value| v["error"]["code"].as_str().unwrap_or_default().to_owned();

    // Refused whole: nothing is put.
    for (body, want) in [
        ("{not json", "invalid_json"),
        (r#"{"data": 1}"#, "missing_partition_key"),
        (
            r#"{"partition_key": "k", "data": 1, "typo": 2}"#,
            "invalid_request",
        ),
        ("[]", "invalid_request"),
    ] {
        let a = http.post(&url, body).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}: {}", a.text());
        assert_eq!(code(&a.json()), want, "{body}");
    }
    let a = http
        .post(
            &svc.url("/events?wait=maybe"),
            r#"{"partition_key": "k", "data": 1}"#,
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&a.json()), "invalid_query");

    // The producer's own validation, as typed errors.
    let long_key = "k".repeat(257);
    let a = http
        .post(
            &url,
            &json!({"partition_key": long_key, "data": 1}).to_string(),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&a.json()), "invalid_partition_key");
    let a = http
        .post(
            &url,
            r#"{"partition_key": "k", "explicit_hash_key": "12ab", "data": 1}"#,
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&a.json()), "invalid_explicit_hash_key");
    let big = "x".repeat(1200);
    let a = http
        .post(
            &url,
            &json!({"partition_key": "k", "data": big}).to_string(),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let body = a.json();
    assert_eq!(code(&body), "record_too_large");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("1000"),
        "{body}"
    );

    // In a batch, the invalid record fails alone; the others are written.
    let a = http
        .post(
            &url,
            &json!([
                {"partition_key": "ok-1", "data": 1},
                {"partition_key": "", "data": 2},
                {"partition_key": "ok-2", "data": 3},
            ])
            .to_string(),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text());
    let body = a.json();
    assert_eq!(body["failed_record_count"], 1);
    assert_eq!(code(&body), "invalid_partition_key");
    assert_eq!(body["records"][1]["error"]["code"], "invalid_partition_key");
    let stored = stored(&aws.kinesis_client(), &stream).await;
    assert_answered(&stored, &body["records"][0], "ok-1", "1");
    assert_answered(&stored, &body["records"][2], "ok-2", "3");
    assert_eq!(stored.len(), 2, "only the valid records are in the stream");

    // Over MAX_BODY_BYTES: 413, with or without a Content-Length the server can check first.
    let huge = json!({"partition_key": "k", "data": "y".repeat(5000)}).to_string();
    let a = http.post(&url, &huge).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", a.text());
    assert_eq!(code(&a.json()), "body_too_large");

    let summary = svc.shutdown().await;
    assert_eq!(summary.stats.accepted, 2);
    assert_eq!(summary.stats.delivered, 2);
    assert_eq!(summary.stats.refused, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_answers_429_with_retry_after() {
    let (aws, stream) = stack(1).await;
    // Kinesis stalls: every PutRecords waits a minute in the proxy, so accepted records
    // stay in the producer's buffer for the whole test.
    let proxy = FaultProxy::start(aws.kinesis_endpoint()).await.unwrap();
    proxy.inject(
        Rule::on("PutRecords")
            .always()
            .fault(Fault::delay(Duration::from_secs(60))),
    );
    let producer = Producer::builder(local_aws::kinesis_client(proxy.endpoint()))
        .stream(&stream)
        .max_buffered_records(2)
        .request_timeout(Duration::from_secs(120))
        .record_ttl(Duration::from_secs(300))
        .build()
        .await
        .unwrap();
    let app = App::builder(producer)
        .retry_after(Duration::from_millis(1500))
        .build();
    let svc = Running::start(app, DRAIN).await;
    let http = Http::default();
    let url = svc.url("/events?wait=false");

    for key in ["a", "b"] {
        let a = http
            .post(&url, &json!({"partition_key": key, "data": 1}).to_string())
            .await;
        assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.text());
    }
    // Full: fire-and-forget and waiting requests alike get 429 at once.
    for url in [url.clone(), svc.url("/events")] {
        let a = http
            .post(&url, r#"{"partition_key": "c", "data": 1}"#)
            .await;
        assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.text());
        assert_eq!(a.headers["retry-after"], "2", "rounded up to whole seconds");
        assert_eq!(a.json()["error"]["code"], "buffer_full");
    }
    let a = http
        .post(
            &url,
            r#"[{"partition_key": "d", "data": 1}, {"partition_key": "e", "data": 2}]"#,
        )
        .await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    let body = a.json();
    assert_eq!(body["failed_record_count"], 2);
    assert_eq!(body["records"][0]["error"]["code"], "buffer_full");
    assert_eq!(body["records"][1]["error"]["code"], "buffer_full");

    let health = http.get(&svc.url("/health")).await;
    assert_eq!(
        health.status,
        StatusCode::OK,
        "a full buffer is not unhealthy"
    );
    assert_eq!(health.json()["outstanding_records"], 2);
    let stats = svc.app.stats();
    assert_eq!((stats.accepted, stats.refused), (2, 4));
    // The stalled requests are abandoned with the runtime: nothing to drain here.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_while_draining() {
    let (aws, stream) = stack(1).await;
    let svc = serve_default_app(&aws, &stream).await;
    let http = Http::default();

    let h = http.get(&svc.url("/health")).await;
    assert_eq!(h.status, StatusCode::OK);
    assert_eq!(h.json()["status"], "running");

    // The first step of the shutdown sequence, while the listener is still open.
    svc.app.start_draining();
    let h = http.get(&svc.url("/health")).await;
    assert_eq!(h.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h.json()["status"], "draining");
    let a = http
        .post(&svc.url("/events"), r#"{"partition_key": "k", "data": 1}"#)
        .await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(a.headers["retry-after"], "1");
    assert_eq!(a.json()["error"]["code"], "draining");

    let summary = svc.shutdown().await;
    assert!(summary.complete);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_user_records_put() {
    let (aws, stream) = stack(1).await;
    // Before the producer: its metrics go to the recorder installed when they are emitted.
    let metrics = Metrics::prometheus().unwrap();
    // One recorder per process: the same settings share it, others are refused.
    assert!(Metrics::prometheus().is_ok());
    let other = Metrics::install(Export::None, &kinesis_metrics::MetricsFilter::default());
    assert!(other.is_err(), "{other:?}");
    let producer = default_producer(&aws, &stream).await;
    let app = App::builder(producer).metrics(metrics).build();
    let svc = Running::start(app, DRAIN).await;
    let http = Http::default();

    let a = http
        .post(&svc.url("/events"), r#"{"partition_key": "k", "data": 1}"#)
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let m = http.get(&svc.url("/metrics")).await;
    assert_eq!(m.status, StatusCode::OK);
    assert!(
        m.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"),
    );
    let text = m.text();
    let put = text
        .lines()
        .find(|l| l.starts_with("UserRecordsPut") && l.contains(&stream))
        .unwrap_or_else(|| panic!("no UserRecordsPut for {stream} in:\n{text}"));
    assert!(put.ends_with(" 1"), "{put}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("IngestRequests") && l.contains("Status=\"200\"")),
        "{text}"
    );
    svc.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_drain_loses_nothing() {
    let (aws, stream) = stack(2).await;
    // A long linger: at shutdown the records are still buffered, and only the drain
    // (close, which sends at once) can deliver them.
    let producer = Producer::builder(aws.kinesis_client())
        .stream(&stream)
        .record_max_buffered_time(Duration::from_secs(20))
        .build()
        .await
        .unwrap();
    let svc = Running::start(App::builder(producer).build(), DRAIN).await;
    let http = Http::default();
    let url = svc.url("/events?wait=false");
    let mut want = Vec::new();
    for batch in 0..6 {
        let records: Vec<Value> = (0..50)
            .map(|i| {
                let n = batch * 50 + i;
                want.push((
                    format!("key-{}", n % 13),
                    Bytes::from(format!("{{\"n\":{n}}}")),
                ));
                json!({"partition_key": format!("key-{}", n % 13), "data": {"n": n}})
            })
            .collect();
        let a = http.post(&url, &Value::from(records).to_string()).await;
        assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.text());
    }
    assert_eq!(svc.app.stats().accepted, 300);

    let summary = svc.shutdown().await;
    assert!(summary.complete);
    assert_eq!(summary.stats.accepted, 300);
    assert_eq!(summary.stats.delivered, 300);
    assert_eq!(summary.stats.failed, 0);
    assert_eq!(summary.stats.unfinished(), 0);

    let got = contents(&aws.kinesis_client(), &stream).await;
    for r in &want {
        assert_eq!(got.get(r), Some(&1), "{r:?}");
    }
    assert_eq!(got.values().sum::<usize>(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_stream_answers_503_and_turns_unhealthy() {
    let (aws, stream) = stack(1).await;
    let kinesis = aws.kinesis_client();
    let svc = serve_default_app(&aws, &stream).await;
    let http = Http::default();
    let url = svc.url("/events");
    let ok = http
        .post(&url, r#"{"partition_key": "k", "data": 1}"#)
        .await;
    assert_eq!(ok.status, StatusCode::OK);

    kinesis
        .delete_stream()
        .stream_name(&stream)
        .send()
        .await
        .unwrap();
    // Deletion may go through DELETING: wait until the stream is gone.
    for _ in 0..1500 {
        if kinesis
            .describe_stream_summary()
            .stream_name(&stream)
            .send()
            .await
            .is_err()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let a = http
        .post(&url, r#"{"partition_key": "k", "data": 2}"#)
        .await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.text());
    assert_eq!(a.json()["error"]["code"], "stream_not_found");
    assert!(svc.app.is_stream_gone());
    let h = http.get(&svc.url("/health")).await;
    assert_eq!(h.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(h.json()["status"], "stream_not_found");
    // Fire-and-forget requests are refused too, rather than accepted and lost.
    let a = http
        .post(
            &svc.url("/events?wait=false"),
            r#"{"partition_key": "k", "data": 3}"#,
        )
        .await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    let summary = svc.shutdown().await;
    assert_eq!(summary.stats.delivered, 1);
    assert_eq!(summary.stats.failed, 1);
}
