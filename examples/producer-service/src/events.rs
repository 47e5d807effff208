//! `POST /events`: parse, put, and answer with one result per record.
//!
//! # Request
//!
//! One event, `{"partition_key": "k", "data": <any JSON>}`, or a batch: `{"records": [event,
//! ...]}` or a bare array `[event, ...]`. An event may also give `explicit_hash_key` (a decimal
//! string). The `X-Partition-Key` and `X-Explicit-Hash-Key` headers apply to every event that
//! does not give its own. The record's data is the JSON text of `data` exactly as sent (a
//! string keeps its quotes; numbers are not rounded).
//!
//! A body that is not such JSON is refused whole (400, nothing is put). Then each record is
//! put on its own, in order, as in Kinesis `PutRecords`: a batch is not atomic. A record the
//! producer refuses as invalid gets its own error and the others go on; when the buffer is
//! full or the producer closed, the rest of the batch is not tried (so that records of one
//! key keep their order) and gets the same error.
//!
//! # Answer
//!
//! One event in, one result out: `{"shard_id", "sequence_number", "sub_sequence_number"}`
//! (200), `{"accepted": true}` (202, not waiting) or `{"error": {"code", "message"}}`. A batch
//! answers `{"failed_record_count": n, "records": [result, ...]}` in request order, plus the
//! `error` that decided the status when n > 0. The status is 200 (or 202) when every record
//! succeeded, else the highest-ranked failure's (see `ApiError::rank`): a client that only
//! looks at the status and resends on failure gets at-least-once delivery; one that reads
//! the body resends only the failed records.

use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use kinesis_producer::{PutFailure, PutHandle, PutOutcome, Record};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::App;
use crate::reply::{ApiError, respond, whole_error};

/// Applies to every event without its own partition key.
const PARTITION_KEY_HEADER: HeaderName = HeaderName::from_static("x-partition-key");
/// Applies to every event without its own explicit hash key.
const EXPLICIT_HASH_KEY_HEADER: HeaderName = HeaderName::from_static("x-explicit-hash-key");
/// RFC 7240: `Prefer: respond-async` asks for 202 without waiting, as `?wait=false`.
const PREFER: HeaderName = HeaderName::from_static("prefer");

#[derive(Debug, Deserialize)]
pub(crate) struct Params {
    /// Wait for the records' outcomes (default true, or false with `Prefer: respond-async`).
    wait: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEvent<'a> {
    #[serde(default, alias = "partitionKey")]
    partition_key: Option<String>,
    #[serde(default, alias = "explicitHashKey")]
    explicit_hash_key: Option<String>,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// A JSON object body: either one event or `{"records": [...]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    #[serde(default, borrow)]
    records: Option<Vec<WireEvent<'a>>>,
    #[serde(default, alias = "partitionKey")]
    partition_key: Option<String>,
    #[serde(default, alias = "explicitHashKey")]
    explicit_hash_key: Option<String>,
    // `"data": null` is data (the text `null`), not a missing field.
    #[serde(default, borrow, deserialize_with = "present")]
    data: Option<&'a RawValue>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// A parsed request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Parsed {
    /// One event (answered with one result) or a batch.
    pub batch: bool,
    pub events: Vec<Event>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Event {
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
    pub data: Bytes,
}

/// Parses a body; `default_key` and `default_ehk` come from the headers.
pub(crate) fn parse(
    body: &[u8],
    default_key: Option<&str>,
    default_ehk: Option<&str>,
) -> Result<Parsed, ApiError> {
    let json_error = |e: serde_json::Error| {
        let code = if e.is_data() {
            "invalid_request"
        } else {
            "invalid_json"
        };
        ApiError::bad_request(code, e.to_string())
    };
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let (batch, wire) = if first == Some(&b'[') {
        let events: Vec<WireEvent<'_>> = serde_json::from_slice(body).map_err(json_error)?;
        (true, events)
    } else {
        let envelope: Envelope<'_> = serde_json::from_slice(body).map_err(json_error)?;
        match envelope {
            Envelope {
                records: Some(records),
                partition_key: None,
                explicit_hash_key: None,
                data: None,
            } => (true, records),
            Envelope {
                records: Some(_), ..
            } => {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    "a batch (`records`) cannot also have event fields",
                ));
            }
            Envelope {
                records: None,
                partition_key,
                explicit_hash_key,
                data: Some(data),
            } => (
                false,
                vec![WireEvent {
                    partition_key,
                    explicit_hash_key,
                    data,
                }],
            ),
            Envelope {
                records: None,
                data: None,
                ..
            } => {
                return Err(ApiError::bad_request(
                    "invalid_request",
                    "an event needs `data` (or send a batch: `records`)",
                ));
            }
        }
    };
    if wire.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "the batch is empty",
        ));
    }
    let mut events = Vec::with_capacity(wire.len());
    for (i, e) in wire.into_iter().enumerate() {
        let partition_key = match e.partition_key.or_else(|| default_key.map(str::to_owned)) {
            Some(k) => k,
            None => {
                let which = if batch {
                    format!("record {i}")
                } else {
                    "the event".to_owned()
                };
                return Err(ApiError::bad_request(
                    "missing_partition_key",
                    format!(
                        "{which} has no partition key: give `partition_key` or the X-Partition-Key header"
                    ),
                ));
            }
        };
        events.push(Event {
            partition_key,
            explicit_hash_key: e
                .explicit_hash_key
                .or_else(|| default_ehk.map(str::to_owned)),
            // A copy, not a slice of the body: a slice would keep the whole body alive until
            // its last record finishes, memory the producer's buffer bound does not count.
            data: Bytes::copy_from_slice(e.data.get().as_bytes()),
        });
    }
    Ok(Parsed { batch, events })
}

fn header_text<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Result<Option<&'h str>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str().map_err(|_| {
                ApiError::bad_request(
                    "invalid_header",
                    format!("the {name} header is not visible ASCII"),
                )
            })
        })
        .transpose()
}

fn prefers_async(headers: &HeaderMap) -> bool {
    headers
        .get_all(PREFER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .any(|token| token.trim().eq_ignore_ascii_case("respond-async"))
}

/// The handler; counts answers by status (`IngestRequests`, label `Status`).
pub(crate) async fn post_events(
    State(app): State<App>,
    query: Result<Query<Params>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let response = handle(&app, query, &headers, body).await;
    let status = response.status();
    metrics::counter!("IngestRequests", "Status" => status.as_u16().to_string()).increment(1);
    tracing::debug!(status = status.as_u16(), "POST /events");
    response
}

/// One record's place in the answer.
enum Slot {
    /// Handed to the producer: the index of its handle.
    Accepted(usize),
    Refused(ApiError),
}

async fn handle(
    app: &App,
    query: Result<Query<Params>, QueryRejection>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if app.is_draining() {
        let err = ApiError::unavailable("draining", "the service is shutting down");
        return whole_error(app, err);
    }
    if app.is_stream_gone() {
        let err = ApiError::unavailable("stream_not_found", "the stream does not exist");
        return whole_error(app, err);
    }
    let wait = match query {
        Ok(Query(Params { wait: Some(w) })) => w,
        Ok(Query(Params { wait: None })) => !prefers_async(headers),
        Err(e) => return whole_error(app, ApiError::bad_request("invalid_query", e.body_text())),
    };
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            let err = ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!(
                    "the body exceeds the limit of {} bytes",
                    app.shared.max_body_bytes
                ),
            );
            return whole_error(app, err);
        }
        Err(e) => {
            return whole_error(
                app,
                ApiError::new(e.status(), "invalid_body", e.body_text()),
            );
        }
    };
    let parsed = match header_text(headers, &PARTITION_KEY_HEADER)
        .and_then(|k| Ok((k, header_text(headers, &EXPLICIT_HASH_KEY_HEADER)?)))
        .and_then(|(key, ehk)| parse(&body, key, ehk))
    {
        Ok(p) => p,
        Err(e) => return whole_error(app, e),
    };
    drop(body);

    // Held until every accepted record has its outcome: the drain waits for it.
    let watching = app.watching();
    let producer = app.producer();
    let mut slots = Vec::with_capacity(parsed.events.len());
    let mut handles: Vec<PutHandle> = Vec::new();
    let mut stop: Option<ApiError> = None;
    for event in parsed.events {
        if let Some(err) = &stop {
            slots.push(Slot::Refused(err.clone()));
            continue;
        }
        let mut record = Record::new(event.partition_key, event.data);
        if let Some(ehk) = event.explicit_hash_key {
            record = record.with_explicit_hash_key(ehk);
        }
        match producer.try_put(record) {
            Ok(h) => {
                slots.push(Slot::Accepted(handles.len()));
                handles.push(h);
            }
            Err(e) => {
                let err = ApiError::from_put(&e);
                if err.status != StatusCode::BAD_REQUEST {
                    // Full or closed: trying later records could reorder a key's records.
                    stop = Some(err.clone());
                }
                slots.push(Slot::Refused(err));
            }
        }
    }
    let accepted = handles.len() as u64;
    let refused = slots.len() as u64 - accepted;
    app.shared
        .accepted
        .fetch_add(accepted, std::sync::atomic::Ordering::AcqRel);
    app.shared
        .refused
        .fetch_add(refused, std::sync::atomic::Ordering::AcqRel);

    let outcomes = if handles.is_empty() {
        drop(watching);
        Vec::new()
    } else if wait {
        let (tx, rx) = oneshot::channel();
        spawn_watcher(app.clone(), handles, Some(tx), watching);
        // Dropped only if the watcher died (runtime shutdown): the outcomes are unknown.
        rx.await.unwrap_or_default()
    } else {
        spawn_watcher(app.clone(), handles, None, watching);
        Vec::new()
    };
    answer(app, parsed.batch, wait, slots, outcomes)
}

/// Builds the answer from the slots and, when waiting, the outcomes.
fn answer(
    app: &App,
    batch: bool,
    wait: bool,
    slots: Vec<Slot>,
    outcomes: Vec<Result<PutOutcome, PutFailure>>,
) -> Response {
    let mut worst: Option<ApiError> = None;
    let mut failed = 0usize;
    let mut results = Vec::with_capacity(slots.len());
    for slot in slots {
        let result = match slot {
            Slot::Accepted(i) if wait => match outcomes.get(i) {
                Some(Ok(o)) => Ok(json!({
                    "shard_id": o.shard_id(),
                    "sequence_number": o.sequence_number(),
                    "sub_sequence_number": o.sub_sequence_number(),
                })),
                Some(Err(f)) => Err(ApiError::from_failure(f)),
                None => Err(ApiError::from_failure(&PutFailure::Lost)),
            },
            Slot::Accepted(_) => Ok(json!({ "accepted": true })),
            Slot::Refused(e) => Err(e),
        };
        results.push(match result {
            Ok(v) => v,
            Err(e) => {
                failed += 1;
                let v = json!({ "error": e.to_json() });
                if worst.as_ref().is_none_or(|w| e.rank() > w.rank()) {
                    worst = Some(e);
                }
                v
            }
        });
    }
    let status = match &worst {
        Some(e) => e.status,
        None if wait => StatusCode::OK,
        None => StatusCode::ACCEPTED,
    };
    let body = if batch {
        let mut body = json!({ "failed_record_count": failed, "records": results });
        if let Some(e) = &worst {
            body["error"] = e.to_json();
        }
        body
    } else {
        results.pop().unwrap_or(Value::Null)
    };
    respond(app, status, body)
}

/// Awaits every handle of one request in a task of its own, counts and logs the outcomes,
/// and sends them to the waiting request, if any.
fn spawn_watcher(
    app: App,
    handles: Vec<PutHandle>,
    reply: Option<oneshot::Sender<Vec<Result<PutOutcome, PutFailure>>>>,
    watching: crate::Watching,
) {
    tokio::spawn(async move {
        let total = handles.len();
        let mut outcomes = Vec::with_capacity(total);
        let mut failed = 0usize;
        let mut first_failure: Option<&'static str> = None;
        for handle in handles {
            let outcome = handle.await;
            if app.count_outcome(&outcome) {
                failed += 1;
                if first_failure.is_none()
                    && let Err(f) = &outcome
                {
                    first_failure = Some(ApiError::from_failure(f).code);
                }
            }
            outcomes.push(outcome);
        }
        if failed > 0 {
            // One line per request, not per record: an outage must not flood the logs.
            tracing::warn!(
                failed,
                records = total,
                code = first_failure.unwrap_or_default(),
                "records failed"
            );
        }
        if let Some(reply) = reply {
            let _ = reply.send(outcomes);
        }
        drop(watching);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(body: &str) -> Result<Parsed, ApiError> {
        parse(body.as_bytes(), None, None)
    }

    #[test]
    fn one_event_keeps_the_data_text() {
        let p = one(r#"{"partition_key": "k", "data": {"n": 123456789012345678901234, "s": "é"}}"#)
            .unwrap();
        assert!(!p.batch);
        assert_eq!(p.events.len(), 1);
        assert_eq!(p.events[0].partition_key, "k");
        assert_eq!(
            p.events[0].data,
            Bytes::from(r#"{"n": 123456789012345678901234, "s": "é"}"#)
        );
        let p = one(r#"{"partitionKey": "k", "data": null, "explicitHashKey": "7"}"#).unwrap();
        assert_eq!(p.events[0].data, Bytes::from("null"));
        assert_eq!(p.events[0].explicit_hash_key.as_deref(), Some("7"));
    }

    #[test]
    fn batches_in_both_shapes() {
        let a = one(r#"{"records": [{"partition_key": "a", "data": 1}, {"partition_key": "b", "data": "x"}]}"#)
            .unwrap();
        let b = one(r#" [{"partition_key": "a", "data": 1}, {"partition_key": "b", "data": "x"}]"#)
            .unwrap();
        assert_eq!(a, b);
        assert!(a.batch);
        assert_eq!(a.events[1].data, Bytes::from(r#""x""#));
    }

    #[test]
    fn header_defaults_apply_to_events_without_their_own() {
        let p = parse(
            br#"[{"data": 1}, {"partition_key": "own", "data": 2}]"#,
            Some("hdr"),
            Some("42"),
        )
        .unwrap();
        assert_eq!(p.events[0].partition_key, "hdr");
        assert_eq!(p.events[1].partition_key, "own");
        assert_eq!(p.events[1].explicit_hash_key.as_deref(), Some("42"));
    }

    #[test]
    fn bad_bodies_are_refused_with_a_code() {
        for (body, code) in [
            ("", "invalid_json"),
            ("{", "invalid_json"),
            ("[]", "invalid_request"),
            (r#"{"records": []}"#, "invalid_request"),
            (r#"{"partition_key": "k"}"#, "invalid_request"),
            (r#"{"data": 1}"#, "missing_partition_key"),
            (
                r#"[{"partition_key": "k", "data": 1}, {"data": 2}]"#,
                "missing_partition_key",
            ),
            (
                r#"{"partition_key": "k", "data": 1, "extra": 2}"#,
                "invalid_request",
            ),
            (r#"[{"partition_key": "k"}]"#, "invalid_request"),
            (r#"{"records": [], "data": 1}"#, "invalid_request"),
            (r#"{"records": 3}"#, "invalid_request"),
            ("42", "invalid_request"),
        ] {
            let err = one(body).unwrap_err();
            assert_eq!(err.code, code, "{body:?}: {err:?}");
            assert_eq!(err.status, StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn prefer_respond_async() {
        let mut h = HeaderMap::new();
        assert!(!prefers_async(&h));
        h.insert(PREFER, "wait=10, Respond-Async".parse().unwrap());
        assert!(prefers_async(&h));
    }
}
