//! KPL-aggregated records in AWS Lambda (feature `lambda`).
//!
//! Lambda's Kinesis event source hands a function the *Kinesis* records of a batch, so a
//! function fed by a KPL-class producer sees aggregates, not the user records that were put.
//! This module turns an [`aws_lambda_events`] Kinesis event into user records and builds the
//! partial-batch-failure response.
//!
//! ```text
//!  KinesisEvent { records: [KinesisEventRecord { kinesis: { data (base64), partitionKey,
//!                                                           sequenceNumber, arrival }, ARN }] }
//!        │ deaggregate_event            (same rules as `deaggregate`: anything that is not a
//!        ▼                               well-formed aggregate passes through unchanged)
//!  Vec<LambdaRecord> (event order; sub-sequence 0, 1, … inside each aggregate)
//!        │ handle in order; on the first failure:
//!        ▼
//!  batch_response(Some(&failed)) ─► {"batchItemFailures":[{"itemIdentifier": <its sequence number>}]}
//! ```
//!
//! # Partial batch failures and aggregates
//!
//! With `ReportBatchItemFailures` enabled on the event source mapping, Lambda checkpoints the
//! shard just before the sequence number a function reports and retries from there. Every
//! user record of an aggregate shares its container's sequence number, so reporting a failed
//! user record re-delivers the **whole container**: the user records before it in the same
//! aggregate are processed again (at-least-once, as with any Kinesis consumer). Report the
//! *first* failure of the batch and stop there; records after it are re-delivered anyway.
//!
//! Arrival times come from `aws_lambda_events`, whose parser (1.2) reads the fractional seconds
//! of `approximateArrivalTimestamp` as a count of milliseconds after dropping trailing zeros:
//! `…650.98` (980 ms, as Java prints it) becomes 98 ms. Treat the sub-second part as
//! approximate until that is fixed upstream.
//!
//! There is no hash-range filtering here: a Lambda event does not say which shard's range a
//! record was read from, so every sub-record is delivered (as with [`deaggregate`]).

use std::time::{Duration, SystemTime};

use aws_lambda_events::event::kinesis::{KinesisEvent, KinesisEventRecord};
use aws_lambda_events::event::streams::KinesisEventResponse;
use bytes::Bytes;

use crate::{DeaggregatedRecord, ReceivedRecord, deaggregate};

pub use aws_lambda_events;

/// A user record recovered from a Lambda Kinesis event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LambdaRecord {
    /// The user record, with the container's sequence number and its sub-sequence number.
    pub record: DeaggregatedRecord,
    /// When Kinesis received the container record.
    pub approximate_arrival: SystemTime,
    /// The stream's ARN (`eventSourceARN`), when Lambda provided it.
    pub event_source_arn: Option<String>,
    /// Lambda's event id of the container record (`shardId-…:sequence`), when provided.
    pub event_id: Option<String>,
}

impl LambdaRecord {
    /// The user record's data.
    pub fn data(&self) -> &Bytes {
        &self.record.data
    }

    /// The user record's partition key.
    pub fn partition_key(&self) -> &str {
        &self.record.partition_key
    }

    /// The container record's sequence number: the item identifier Lambda expects in a
    /// partial-batch-failure response.
    pub fn sequence_number(&self) -> &str {
        &self.record.sequence_number
    }

    /// The position inside the container (0 for a record that was not aggregated).
    pub fn sub_sequence_number(&self) -> u64 {
        self.record.sub_sequence_number
    }
}

/// All user records of `event`, in order. Never fails: see the [module docs](self).
pub fn deaggregate_event(event: KinesisEvent) -> Vec<LambdaRecord> {
    let mut out = Vec::with_capacity(event.records.len());
    for record in event.records {
        out.extend(deaggregate_event_record(record));
    }
    out
}

/// The user records of one record of a Lambda Kinesis event.
pub fn deaggregate_event_record(record: KinesisEventRecord) -> Vec<LambdaRecord> {
    let KinesisEventRecord {
        event_id,
        event_source_arn,
        kinesis,
        ..
    } = record;
    let arrival = kinesis.approximate_arrival_timestamp.0;
    // Before the epoch cannot come from Kinesis; clamp rather than fail.
    let approximate_arrival = u64::try_from(arrival.timestamp_millis())
        .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let received = ReceivedRecord::new(
        kinesis.sequence_number,
        kinesis.partition_key,
        kinesis.data.0,
    );
    deaggregate(received)
        .into_iter()
        .map(|record| LambdaRecord {
            record,
            approximate_arrival,
            event_source_arn: event_source_arn.clone(),
            event_id: event_id.clone(),
        })
        .collect()
}

/// The function's answer with `ReportBatchItemFailures`: no failure (`None`) lets Lambda
/// checkpoint the whole batch; `Some(first_failed)` makes it retry from that record's
/// container (see the [module docs](self)).
pub fn batch_response(first_failed: Option<&LambdaRecord>) -> KinesisEventResponse {
    let mut response = KinesisEventResponse::default();
    if let Some(failed) = first_failed {
        response.add_failure(failed.sequence_number());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Aggregator, AggregatorConfig, UserRecord};

    fn event(records: &[(&str, &str, Vec<u8>)]) -> KinesisEvent {
        use std::fmt::Write;
        let mut json = String::from(r#"{"Records":["#);
        for (i, (key, seq, data)) in records.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            let data = base64(data);
            write!(
                json,
                r#"{{"kinesis":{{"kinesisSchemaVersion":"1.0","partitionKey":"{key}",
                "sequenceNumber":"{seq}","data":"{data}","approximateArrivalTimestamp":1700000000.123}},
                "eventSource":"aws:kinesis","eventVersion":"1.0","eventID":"shardId-000000000000:{seq}",
                "eventName":"aws:kinesis:record","awsRegion":"us-east-1",
                "eventSourceARN":"arn:aws:kinesis:us-east-1:123456789012:stream/s"}}"#
            )
            .unwrap();
        }
        json.push_str("]}");
        serde_json::from_str(&json).unwrap()
    }

    /// Standard base64 with padding, enough for test payloads (no dependency for it).
    fn base64(data: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    fn aggregate(n: usize) -> Vec<u8> {
        let mut aggregator = Aggregator::new(AggregatorConfig::default());
        for i in 0..n {
            aggregator
                .try_push(UserRecord::new(format!("k{i}"), format!("v{i}")).unwrap())
                .unwrap();
        }
        aggregator.finish().unwrap().record.data.to_vec()
    }

    #[test]
    fn aggregates_and_plain_records_come_out_in_order() {
        let out = deaggregate_event(event(&[
            ("plain", "100", b"hello".to_vec()),
            ("a", "200", aggregate(3)),
        ]));
        let summary: Vec<_> = out
            .iter()
            .map(|r| {
                (
                    r.partition_key(),
                    r.sequence_number(),
                    r.sub_sequence_number(),
                    r.data().as_ref(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("plain", "100", 0, &b"hello"[..]),
                ("k0", "200", 0, b"v0"),
                ("k1", "200", 1, b"v1"),
                ("k2", "200", 2, b"v2"),
            ]
        );
        let first = &out[0];
        assert_eq!(
            first.approximate_arrival,
            SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)
        );
        assert_eq!(
            first.event_source_arn.as_deref(),
            Some("arn:aws:kinesis:us-east-1:123456789012:stream/s")
        );
        assert!(!first.record.aggregated && out[1].record.aggregated);
    }

    #[test]
    fn corrupt_aggregates_pass_through_unchanged() {
        let mut corrupt = aggregate(2);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 0xFF; // break the MD5
        let out = deaggregate_event(event(&[("a", "300", corrupt.clone())]));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data().as_ref(), &corrupt[..]);
        assert!(!out[0].record.aggregated);
    }

    #[test]
    fn batch_response_names_the_failed_container() {
        let out = deaggregate_event(event(&[("a", "400", aggregate(2))]));
        let response = batch_response(Some(&out[1]));
        assert_eq!(
            serde_json::to_value(&response).unwrap(),
            serde_json::json!({"batchItemFailures": [{"itemIdentifier": "400"}]})
        );
        let ok = batch_response(None);
        assert_eq!(
            serde_json::to_value(&ok).unwrap(),
            serde_json::json!({"batchItemFailures": []})
        );
    }
}
