//! The function's logic on a recorded Kinesis event: KPL-aggregated data made by this
//! project's encoder, as Lambda delivers it. No AWS needed.

use kinesis_aggregation::lambda::aws_lambda_events::event::kinesis::KinesisEvent;
use lambda_consumer::{fixture, handle_event};

const RECORDED: &str = include_str!("fixtures/kinesis-event.json");

#[test]
fn the_committed_fixture_is_what_the_encoder_produces() {
    let committed: serde_json::Value = serde_json::from_str(RECORDED).unwrap();
    let rebuilt = serde_json::to_value(fixture::recorded_event()).unwrap();
    assert_eq!(
        committed, rebuilt,
        "run `cargo run -p lambda-consumer --example make-fixture`"
    );
}

#[test]
fn every_user_record_of_the_recorded_event_is_processed() {
    let event: KinesisEvent = serde_json::from_str(RECORDED).unwrap();
    let (summary, response) = handle_event(event);
    assert_eq!(summary.kinesis_records, 3);
    assert_eq!(summary.processed, 9);
    // Orders 1..=9, amount 100 × id; even ids in EUR.
    assert_eq!(summary.totals["EUR"], 100 * (2 + 4 + 6 + 8));
    assert_eq!(summary.totals["USD"], 100 * (1 + 3 + 5 + 7 + 9));
    assert_eq!(summary.failed, None);
    assert!(response.batch_item_failures.is_empty());
}

#[test]
fn a_bad_user_record_reports_its_container_and_stops_the_batch() {
    let good = fixture::order(1, 100, "USD");
    let bad = b"{not json".to_vec();
    let event = fixture::event(&[
        ("customer-1", "100", good.clone()),
        (
            "a",
            "200",
            fixture::aggregate(&[
                ("k1".into(), good.clone()),
                ("k2".into(), bad),
                ("k3".into(), good.clone()),
            ]),
        ),
        ("customer-1", "300", good),
    ]);
    let (summary, response) = handle_event(event);
    // Record 100 and the first sub-record of 200 were processed; 200/1 failed.
    assert_eq!(summary.processed, 2);
    let (sequence, sub_sequence, _) = summary.failed.unwrap();
    assert_eq!((sequence.as_str(), sub_sequence), ("200", 1));
    let json = serde_json::to_value(&response).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"batchItemFailures": [{"itemIdentifier": "200"}]})
    );
}
