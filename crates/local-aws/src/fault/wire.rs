//! The AWS wire formats the proxy needs: which protocol and operation a request is, error
//! bodies in each protocol's shape, and the `PutRecords` rewrites.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method, StatusCode};
use serde_json::{Value, json};

use super::faults::{ErrorKind, FailureCode};

/// The services we recognise by their `X-Amz-Target` prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// `Kinesis_20131202.*`, awsJson1_1.
    Kinesis,
    /// `DynamoDB_20120810.*`, awsJson1_0.
    DynamoDb,
    /// Some other JSON-protocol service; `true` for awsJson1_1.
    OtherJson { v11: bool },
    /// No `X-Amz-Target`: REST with XML errors (S3).
    RestXml,
}

const DYNAMODB_NAMESPACE: &str = "com.amazonaws.dynamodb.v20120810#";

/// What the rules and the stats need to know about a request.
#[derive(Clone, Debug)]
pub(crate) struct RequestInfo {
    pub(crate) method: Method,
    pub(crate) path: String,
    /// The operation from `X-Amz-Target` (after the dot), if any.
    pub(crate) operation: Option<String>,
    pub(crate) protocol: Protocol,
}

impl RequestInfo {
    pub(crate) fn of<B>(req: &http::Request<B>) -> RequestInfo {
        let target = req
            .headers()
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok());
        let (protocol, operation) = match target {
            None => (Protocol::RestXml, None),
            Some(target) => {
                let (service, op) = target.split_once('.').unwrap_or(("", target));
                let protocol = if service.starts_with("Kinesis_") {
                    Protocol::Kinesis
                } else if service.starts_with("DynamoDB_") {
                    Protocol::DynamoDb
                } else {
                    let v11 = req
                        .headers()
                        .get(CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|ct| ct.contains("1.1"));
                    Protocol::OtherJson { v11 }
                };
                (protocol, Some(op.to_owned()))
            }
        };
        RequestInfo {
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
            operation,
            protocol,
        }
    }

    #[cfg(test)]
    pub(crate) fn for_test(op: Option<&str>, method: Method, path: &str) -> RequestInfo {
        RequestInfo {
            method,
            path: path.to_owned(),
            operation: op.map(str::to_owned),
            protocol: if op.is_some() {
                Protocol::Kinesis
            } else {
                Protocol::RestXml
            },
        }
    }

    /// The key under which [`Stats`](super::Stats) counts this request: the JSON operation
    /// name, or the HTTP method for REST requests.
    pub(crate) fn label(&self) -> String {
        self.operation
            .clone()
            .unwrap_or_else(|| self.method.as_str().to_owned())
    }
}

/// A complete error answer.
pub(crate) struct ErrorAnswer {
    pub(crate) status: StatusCode,
    pub(crate) headers: Vec<(&'static str, HeaderValue)>,
    pub(crate) body: Bytes,
}

/// Resolves an error fault to the status, code and body the real service would send.
pub(crate) fn error_answer(req: &RequestInfo, kind: &ErrorKind, request_id: &str) -> ErrorAnswer {
    let (status, code, message): (StatusCode, &str, &str) = match (kind, req.protocol) {
        (ErrorKind::Throttle, Protocol::Kinesis) => (
            StatusCode::BAD_REQUEST,
            "ProvisionedThroughputExceededException",
            "Rate exceeded for shard (injected by FaultProxy).",
        ),
        (ErrorKind::Throttle, Protocol::DynamoDb) => (
            StatusCode::BAD_REQUEST,
            "ProvisionedThroughputExceededException",
            "The level of configured provisioned throughput for the table was exceeded. \
             Consider increasing your provisioning level with the UpdateTable API.",
        ),
        (ErrorKind::Throttle, Protocol::OtherJson { .. }) => (
            StatusCode::BAD_REQUEST,
            "ThrottlingException",
            "Rate exceeded",
        ),
        (ErrorKind::Throttle, Protocol::RestXml) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "SlowDown",
            "Please reduce your request rate.",
        ),
        (ErrorKind::Internal, Protocol::DynamoDb) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "Internal server error",
        ),
        (ErrorKind::Internal, Protocol::RestXml) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "We encountered an internal error. Please try again.",
        ),
        (ErrorKind::Internal, _) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure",
            "Internal service failure.",
        ),
        (ErrorKind::Unavailable, _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "Service is unable to handle request.",
        ),
        (
            ErrorKind::Custom {
                status,
                code,
                message,
            },
            _,
        ) => (*status, code, message),
    };
    let json = |v11: bool| -> (HeaderValue, Bytes) {
        let content_type = if v11 {
            "application/x-amz-json-1.1"
        } else {
            "application/x-amz-json-1.0"
        };
        let type_ = if req.protocol == Protocol::DynamoDb && !code.contains('#') {
            format!("{DYNAMODB_NAMESPACE}{code}")
        } else {
            code.to_owned()
        };
        let body = json!({ "__type": type_, "message": message }).to_string();
        (HeaderValue::from_static(content_type), Bytes::from(body))
    };
    let request_id = HeaderValue::from_str(request_id).expect("request ids are ASCII");
    match req.protocol {
        Protocol::Kinesis | Protocol::DynamoDb | Protocol::OtherJson { .. } => {
            let v11 = matches!(
                req.protocol,
                Protocol::Kinesis | Protocol::OtherJson { v11: true }
            );
            let (content_type, body) = json(v11);
            ErrorAnswer {
                status,
                headers: vec![
                    ("content-type", content_type),
                    ("x-amzn-requestid", request_id),
                ],
                body,
            }
        }
        Protocol::RestXml => {
            // S3 answers HEAD errors with no body; the SDK then goes by the status alone.
            let body = if req.method == Method::HEAD {
                Bytes::new()
            } else {
                Bytes::from(format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code>\
                     <Message>{}</Message><Resource>{}</Resource><RequestId>{}</RequestId>\
                     </Error>",
                    xml_escape(code),
                    xml_escape(message),
                    xml_escape(&req.path),
                    xml_escape(request_id.to_str().unwrap_or_default()),
                ))
            };
            ErrorAnswer {
                status,
                headers: vec![
                    ("content-type", HeaderValue::from_static("application/xml")),
                    ("x-amz-request-id", request_id.clone()),
                    ("x-amz-id-2", request_id),
                ],
                body,
            }
        }
    }
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The number of entries in a `PutRecords` request body, or `None` if it is not one we can
/// parse (e.g. CBOR from the Java SDK, which we then forward untouched).
pub(crate) fn parse_put_records(body: &[u8]) -> Option<(Value, usize)> {
    let request: Value = serde_json::from_slice(body).ok()?;
    let count = request.get("Records")?.as_array()?.len();
    Some((request, count))
}

/// The request with the failed entries removed.
pub(crate) fn drop_failed_records(mut request: Value, failed: &[bool]) -> Option<Bytes> {
    let records = request.get_mut("Records")?.as_array_mut()?;
    let mut i = 0;
    records.retain(|_| {
        let keep = !failed[i];
        i += 1;
        keep
    });
    Some(Bytes::from(serde_json::to_vec(&request).ok()?))
}

fn failure_entry(code: FailureCode, stream: &str, shard: Option<&str>) -> Value {
    match code {
        FailureCode::Throughput => json!({
            "ErrorCode": "ProvisionedThroughputExceededException",
            "ErrorMessage": format!(
                "Rate exceeded for shard {} in stream {stream} under account 000000000000 \
                 (injected by FaultProxy).",
                shard.unwrap_or("(unknown)"),
            ),
        }),
        FailureCode::Internal => json!({
            "ErrorCode": "InternalFailure",
            "ErrorMessage": "Internal service failure.",
        }),
    }
}

fn stream_name(request: &Value) -> &str {
    request
        .get("StreamName")
        .and_then(Value::as_str)
        .or_else(|| request.get("StreamARN").and_then(Value::as_str))
        .unwrap_or("(unknown)")
}

/// A `PutRecords` response in which every entry failed (nothing was forwarded).
pub(crate) fn all_failed_response(request: &Value, count: usize, code: FailureCode) -> Bytes {
    let stream = stream_name(request);
    let records: Vec<Value> = (0..count)
        .map(|_| failure_entry(code, stream, None))
        .collect();
    Bytes::from(json!({ "FailedRecordCount": count, "Records": records }).to_string())
}

/// Splices failure entries into the upstream's response (which answered only the kept
/// entries) at the failed entries' original indexes.
pub(crate) fn splice_failures(
    request: &Value,
    response: &[u8],
    failed: &[bool],
    code: FailureCode,
) -> Option<Bytes> {
    let mut response: Value = serde_json::from_slice(response).ok()?;
    let stream = stream_name(request);
    let kept = std::mem::take(response.get_mut("Records")?.as_array_mut()?);
    if kept.len() != failed.iter().filter(|&&f| !f).count() {
        return None;
    }
    let mut kept = kept.into_iter();
    let mut records = Vec::with_capacity(failed.len());
    for &fail in failed {
        if fail {
            records.push(failure_entry(code, stream, None));
        } else {
            records.push(kept.next()?);
        }
    }
    finish_response(response, records)
}

/// Overwrites the upstream's entries at the failed indexes (`stored_anyway` mode).
pub(crate) fn overwrite_failures(
    request: &Value,
    response: &[u8],
    failed: &[bool],
    code: FailureCode,
) -> Option<Bytes> {
    let mut response: Value = serde_json::from_slice(response).ok()?;
    let stream = stream_name(request);
    let mut records = std::mem::take(response.get_mut("Records")?.as_array_mut()?);
    if records.len() != failed.len() {
        return None;
    }
    for (entry, _) in records.iter_mut().zip(failed).filter(|(_, f)| **f) {
        // Already failed upstream: keep the real failure.
        if !has_error_code(entry) {
            let shard = entry
                .get("ShardId")
                .and_then(Value::as_str)
                .map(str::to_owned);
            *entry = failure_entry(code, stream, shard.as_deref());
        }
    }
    finish_response(response, records)
}

/// Whether a PutRecords result entry failed. kinesis-mock writes `"ErrorCode": null` on
/// successful entries, so the key's presence alone says nothing.
fn has_error_code(entry: &Value) -> bool {
    entry.get("ErrorCode").is_some_and(|code| !code.is_null())
}

fn finish_response(mut response: Value, records: Vec<Value>) -> Option<Bytes> {
    let failed = records.iter().filter(|r| has_error_code(r)).count();
    let object = response.as_object_mut()?;
    object.insert("FailedRecordCount".into(), failed.into());
    object.insert("Records".into(), Value::Array(records));
    Some(Bytes::from(serde_json::to_vec(&response).ok()?))
}

/// Replaces a body with bytes that no JSON or XML parser accepts, keeping its length (at
/// least a few bytes, so that an empty body becomes non-empty garbage).
pub(crate) fn garble(body: &[u8]) -> Bytes {
    const NOISE: &[u8] = b"\x00\xff<garbled by FaultProxy>{\"";
    NOISE
        .iter()
        .copied()
        .cycle()
        .take(body.len().max(NOISE.len()))
        .collect()
}

/// Sets `Content-Length` for a rewritten body and drops headers that described the old one.
pub(crate) fn set_body_headers(headers: &mut http::HeaderMap, len: usize) {
    headers.remove(http::header::TRANSFER_ENCODING);
    // DynamoDB's body checksum would no longer match.
    headers.remove("x-amz-crc32");
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(n: usize) -> Value {
        let records: Vec<Value> = (0..n)
            .map(|i| json!({ "Data": "AA==", "PartitionKey": i.to_string() }))
            .collect();
        json!({ "StreamName": "s", "Records": records })
    }

    fn ok_entry(i: usize) -> Value {
        json!({ "SequenceNumber": i.to_string(), "ShardId": "shardId-000000000000" })
    }

    #[test]
    fn drop_then_splice_restores_order() {
        let failed = [false, true, false, true];
        let dropped = drop_failed_records(request(4), &failed).unwrap();
        let dropped: Value = serde_json::from_slice(&dropped).unwrap();
        let keys: Vec<_> = dropped["Records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["PartitionKey"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(keys, ["0", "2"]);

        let upstream = json!({ "FailedRecordCount": 0, "Records": [ok_entry(0), ok_entry(2)] });
        let spliced = splice_failures(
            &request(4),
            upstream.to_string().as_bytes(),
            &failed,
            FailureCode::Throughput,
        )
        .unwrap();
        let spliced: Value = serde_json::from_slice(&spliced).unwrap();
        assert_eq!(spliced["FailedRecordCount"], 2);
        let records = spliced["Records"].as_array().unwrap();
        assert_eq!(records[0]["SequenceNumber"], "0");
        assert_eq!(
            records[1]["ErrorCode"],
            "ProvisionedThroughputExceededException"
        );
        assert!(records[1].get("SequenceNumber").is_none());
        assert_eq!(records[2]["SequenceNumber"], "2");
        assert_eq!(
            records[3]["ErrorCode"],
            "ProvisionedThroughputExceededException"
        );
    }

    #[test]
    fn overwrite_keeps_upstream_failures() {
        let upstream = json!({ "FailedRecordCount": 1, "Records": [
            ok_entry(0),
            { "ErrorCode": "ProvisionedThroughputExceededException", "ErrorMessage": "real" },
            ok_entry(2),
        ]});
        let out = overwrite_failures(
            &request(3),
            upstream.to_string().as_bytes(),
            &[true, true, false],
            FailureCode::Internal,
        )
        .unwrap();
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out["FailedRecordCount"], 2);
        assert_eq!(out["Records"][0]["ErrorCode"], "InternalFailure");
        assert_eq!(out["Records"][1]["ErrorMessage"], "real");
        assert_eq!(out["Records"][2]["SequenceNumber"], "2");
    }

    #[test]
    fn error_shapes() {
        let kinesis = RequestInfo::for_test(Some("PutRecords"), Method::POST, "/");
        let answer = error_answer(&kinesis, &ErrorKind::Throttle, "id-1");
        assert_eq!(answer.status, 400);
        let body: Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(body["__type"], "ProvisionedThroughputExceededException");
        assert_eq!(answer.headers[0].1, "application/x-amz-json-1.1");

        let mut dynamo = kinesis.clone();
        dynamo.protocol = Protocol::DynamoDb;
        let answer = error_answer(&dynamo, &ErrorKind::Internal, "id-2");
        assert_eq!(answer.status, 500);
        let body: Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(
            body["__type"],
            "com.amazonaws.dynamodb.v20120810#InternalServerError"
        );
        assert_eq!(answer.headers[0].1, "application/x-amz-json-1.0");

        let s3 = RequestInfo::for_test(None, Method::PUT, "/b/k&1");
        let answer = error_answer(&s3, &ErrorKind::Throttle, "id-3");
        assert_eq!(answer.status, 503);
        let body = std::str::from_utf8(&answer.body).unwrap();
        assert!(body.contains("<Code>SlowDown</Code>"), "{body}");
        assert!(body.contains("<Resource>/b/k&amp;1</Resource>"), "{body}");
    }

    #[test]
    fn garbled_is_not_json() {
        let garbled = garble(br#"{"a": 1}"#);
        assert!(serde_json::from_slice::<Value>(&garbled).is_err());
        assert!(garbled.len() >= 8);
    }
}
