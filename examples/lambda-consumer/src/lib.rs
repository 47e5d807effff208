//! The logic of `lambda-consumer`: a Lambda function fed by a Kinesis stream that a KPL-class
//! producer (kinesis-rs, the Java KPL) writes aggregated records to.
//!
//! ```text
//!  Kinesis ──event source mapping──▶ Lambda ──KinesisEvent──▶ handle_event
//!                                                              │ deaggregate_event
//!                                                              ▼
//!                                        one OrderEvent per user record, in order
//!                                                              │ first bad record?
//!                                                              ▼
//!                              KinesisEventResponse { batchItemFailures: [its container] }
//! ```
//!
//! Each user record is a JSON order event. Processing is a running total per currency. A
//! record that is not a valid order stops the batch and is reported as the batch's first
//! failure, so Lambda retries from its container record (with `ReportBatchItemFailures` on the
//! event source mapping). Configure `MaximumRetryAttempts` and an on-failure destination too:
//! a record that can never succeed would otherwise hold its shard until it expires.

use std::collections::BTreeMap;

use kinesis_aggregation::lambda::aws_lambda_events::event::kinesis::KinesisEvent;
use kinesis_aggregation::lambda::aws_lambda_events::event::streams::KinesisEventResponse;
use kinesis_aggregation::lambda::{LambdaRecord, batch_response, deaggregate_event};
use serde::Deserialize;

/// What producers put: one order per user record.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OrderEvent {
    /// The order.
    pub order_id: String,
    /// Amount in minor units (cents).
    pub amount: i64,
    /// ISO currency code.
    pub currency: String,
}

/// What one invocation did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    /// Kinesis records in the event.
    pub kinesis_records: usize,
    /// User records processed successfully (before the first failure, if any).
    pub processed: usize,
    /// Total amount per currency over the processed records.
    pub totals: BTreeMap<String, i64>,
    /// The first record that failed: (sequence number, sub-sequence number, reason).
    pub failed: Option<(String, u64, String)>,
}

/// Processes `event` in order and answers Lambda: see the [crate docs](crate).
pub fn handle_event(event: KinesisEvent) -> (Summary, KinesisEventResponse) {
    let mut summary = Summary {
        kinesis_records: event.records.len(),
        ..Summary::default()
    };
    for record in deaggregate_event(event) {
        match parse(&record) {
            Ok(order) => {
                *summary.totals.entry(order.currency).or_default() += order.amount;
                summary.processed += 1;
            }
            Err(reason) => {
                summary.failed = Some((
                    record.sequence_number().to_owned(),
                    record.sub_sequence_number(),
                    reason,
                ));
                return (summary, batch_response(Some(&record)));
            }
        }
    }
    (summary, batch_response(None))
}

fn parse(record: &LambdaRecord) -> Result<OrderEvent, String> {
    serde_json::from_slice(record.data()).map_err(|e| format!("not an order event: {e}"))
}

/// The recorded event of `tests/fixtures/kinesis-event.json`, rebuilt: what Lambda delivers
/// for three Kinesis records written by kinesis-rs' aggregator (two aggregates and one plain
/// record). `cargo run -p lambda-consumer --example make-fixture` rewrites the file; a test
/// checks that the committed file is what this produces.
#[doc(hidden)]
pub mod fixture {
    use kinesis_aggregation::lambda::aws_lambda_events::event::kinesis::KinesisEvent;
    use kinesis_aggregation::{Aggregator, AggregatorConfig, UserRecord};

    /// An order as JSON bytes.
    pub fn order(id: u32, amount: i64, currency: &str) -> Vec<u8> {
        format!(r#"{{"order_id":"o-{id}","amount":{amount},"currency":"{currency}"}}"#).into_bytes()
    }

    /// A KPL aggregate of `records` (partition key, data), as the producer would put it.
    pub fn aggregate(records: &[(String, Vec<u8>)]) -> Vec<u8> {
        let mut aggregator = Aggregator::new(AggregatorConfig::default());
        for (key, data) in records {
            let record = UserRecord::new(key.clone(), data.clone()).expect("a valid key");
            aggregator.try_push(record).expect("small records fit");
        }
        let finished = aggregator.finish().expect("not empty");
        assert!(
            finished.is_aggregated(),
            "two or more records make an aggregate"
        );
        finished.record.data.to_vec()
    }

    /// A Lambda Kinesis event with the given (partition key, sequence number, data) records.
    pub fn event(records: &[(&str, &str, Vec<u8>)]) -> KinesisEvent {
        let template = serde_json::json!({
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": "",
                "sequenceNumber": "",
                "data": "",
                "approximateArrivalTimestamp": 1763780400.123
            },
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": "",
            "eventName": "aws:kinesis:record",
            "invokeIdentityArn": "arn:aws:iam::123456789012:role/lambda-consumer",
            "awsRegion": "us-east-1",
            "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/orders"
        });
        let mut event: KinesisEvent = serde_json::from_value(serde_json::json!({
            "Records": vec![template; records.len()]
        }))
        .expect("a valid event");
        for (record, (key, sequence, data)) in event.records.iter_mut().zip(records) {
            record.kinesis.partition_key = (*key).to_owned();
            record.kinesis.sequence_number = (*sequence).to_owned();
            record.kinesis.data.0 = data.clone();
            record.event_id = Some(format!("shardId-000000000000:{sequence}"));
        }
        event
    }

    /// The recorded event: orders 1–5 aggregated, order 6 plain, orders 7–9 aggregated.
    pub fn recorded_event() -> KinesisEvent {
        let orders = |ids: std::ops::RangeInclusive<u32>| -> Vec<(String, Vec<u8>)> {
            ids.map(|id| {
                let currency = if id % 2 == 0 { "EUR" } else { "USD" };
                (
                    format!("customer-{}", id % 3),
                    order(id, 100 * i64::from(id), currency),
                )
            })
            .collect()
        };
        event(&[
            (
                "a",
                "49590338271490256608559692538361571095921575989136588801",
                aggregate(&orders(1..=5)),
            ),
            (
                "customer-0",
                "49590338271490256608559692538361571095921575989136588802",
                order(6, 600, "EUR"),
            ),
            (
                "a",
                "49590338271490256608559692538361571095921575989136588803",
                aggregate(&orders(7..=9)),
            ),
        ])
    }
}
