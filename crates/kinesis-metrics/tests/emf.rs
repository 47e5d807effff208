//! The EMF exporter's lines, parsed and checked against the specification.

#![cfg(feature = "emf")]

mod support;

use std::time::Duration;

use kinesis_metrics::emf::{EmfHandle, EmfRecorder};
use kinesis_metrics::{MetricsFilter, MetricsGranularity, MetricsLevel};
use serde_json::{Value, json};
use support::{SharedBuf, validate_emf};

fn exporter(
    configure: impl FnOnce(kinesis_metrics::emf::EmfBuilder) -> kinesis_metrics::emf::EmfBuilder,
) -> (EmfRecorder, EmfHandle, SharedBuf) {
    let buf = SharedBuf::default();
    let (recorder, handle) = configure(EmfRecorder::builder().writer(buf.clone()))
        .build()
        .unwrap();
    (recorder, handle, buf)
}

/// Flushes and returns the lines, each validated.
fn flush(handle: &EmfHandle, buf: &SharedBuf) -> Vec<Value> {
    handle.flush().unwrap();
    buf.take_lines()
        .iter()
        .map(|line| validate_emf(line).unwrap_or_else(|e| panic!("{e:?}\n{line}")))
        .collect()
}

/// The line whose dimensions are exactly `dims`.
fn line<'a>(lines: &'a [Value], dims: &[(&str, &str)]) -> &'a Value {
    lines
        .iter()
        .find(|l| {
            let first_set = &l["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0];
            first_set.as_array().map(Vec::len) == Some(dims.len())
                && dims.iter().all(|(k, v)| l[*k] == *v)
        })
        .unwrap_or_else(|| panic!("no line with {dims:?} in {lines:#?}"))
}

fn definitions(line: &Value) -> Vec<(String, String)> {
    line["_aws"]["CloudWatchMetrics"][0]["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["Name"].as_str().unwrap().to_owned(),
                d["Unit"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn counters_gauges_and_histograms_per_interval() {
    let (recorder, handle, buf) = exporter(|b| b.namespace("Test/App"));
    metrics::with_local_recorder(&recorder, || {
        metrics::counter!("RecordsProcessed", "ShardId" => "shardId-1").increment(5);
        metrics::counter!("RecordsProcessed", "ShardId" => "shardId-1").increment(7);
        metrics::gauge!("MillisBehindLatest", "ShardId" => "shardId-1").set(1500.0);
        for v in [10.0, 10.0, 30.0] {
            metrics::histogram!("RecordProcessor.processRecords.Time", "ShardId" => "shardId-1")
                .record(v);
        }
        metrics::gauge!("LeasesHeld").set(3.0);
    });
    let lines = flush(&handle, &buf);
    assert_eq!(lines.len(), 2, "one line per label set: {lines:#?}");
    let shard = line(&lines, &[("ShardId", "shardId-1")]);
    assert_eq!(
        shard["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "Test/App"
    );
    assert_eq!(shard["RecordsProcessed"], 12);
    assert_eq!(shard["MillisBehindLatest"], 1500.0);
    assert_eq!(
        shard["RecordProcessor.processRecords.Time"],
        json!({"Values": [10.0, 30.0], "Counts": [2, 1]})
    );
    let units: Vec<(String, String)> = definitions(shard);
    assert!(units.contains(&("RecordsProcessed".into(), "Count".into())));
    assert!(units.contains(&("MillisBehindLatest".into(), "Milliseconds".into())));
    assert_eq!(line(&lines, &[])["LeasesHeld"], 3.0);

    // Next interval: the counter's increase (zero), the gauge again, no histogram.
    metrics::with_local_recorder(&recorder, || {
        metrics::counter!("RecordsProcessed", "ShardId" => "shardId-1").increment(1);
    });
    let lines = flush(&handle, &buf);
    let shard = line(&lines, &[("ShardId", "shardId-1")]);
    assert_eq!(shard["RecordsProcessed"], 1);
    assert!(shard.get("RecordProcessor.processRecords.Time").is_none());
    let lines = flush(&handle, &buf);
    assert_eq!(
        line(&lines, &[("ShardId", "shardId-1")])["RecordsProcessed"],
        0
    );
}

#[test]
fn idle_series_stop_being_written() {
    let (recorder, handle, buf) = exporter(|b| b.idle_timeout(Duration::ZERO));
    let counter = metrics::with_local_recorder(
        &recorder,
        || metrics::counter!("UserRecordsPut", "StreamName" => "s"),
    );
    counter.increment(2);
    let lines = flush(&handle, &buf);
    assert_eq!(line(&lines, &[("StreamName", "s")])["UserRecordsPut"], 2);
    assert!(flush(&handle, &buf).is_empty(), "unchanged: not written");
    counter.increment(1);
    let lines = flush(&handle, &buf);
    assert_eq!(
        line(&lines, &[("StreamName", "s")])["UserRecordsPut"],
        1,
        "back when it changes"
    );
}

#[test]
fn rollup_declares_per_stream_and_overall_dimension_sets() {
    let (recorder, handle, buf) = exporter(|b| b.dimension("Environment", "test"));
    metrics::with_local_recorder(&recorder, || {
        metrics::counter!("RecordsProcessed", "StreamName" => "orders", "ShardId" => "shardId-0")
            .increment(1);
        metrics::counter!("ErrorsByCode", "StreamName" => "orders", "ErrorCode" => "Throttled")
            .increment(1);
    });
    let lines = flush(&handle, &buf);
    let sets = |l: &Value| l["_aws"]["CloudWatchMetrics"][0]["Dimensions"].clone();
    let shard = lines.iter().find(|l| l.get("ShardId").is_some()).unwrap();
    assert_eq!(
        sets(shard),
        json!([
            ["Environment", "ShardId", "StreamName"],
            ["Environment", "StreamName"],
            ["Environment"]
        ])
    );
    let errors = lines.iter().find(|l| l.get("ErrorCode").is_some()).unwrap();
    assert_eq!(
        sets(errors),
        json!([
            ["Environment", "ErrorCode", "StreamName"],
            ["Environment", "ErrorCode"]
        ])
    );

    let (recorder, handle, buf) = exporter(|b| b.rollup(false));
    metrics::with_local_recorder(&recorder, || {
        metrics::counter!("RecordsProcessed", "ShardId" => "shardId-0").increment(1);
    });
    let lines = flush(&handle, &buf);
    assert_eq!(sets(&lines[0]), json!([["ShardId"]]));
}

#[test]
fn limits_split_lines_and_cut_dimensions() {
    let (recorder, handle, buf) = exporter(|b| b);
    metrics::with_local_recorder(&recorder, || {
        for i in 0..250 {
            metrics::counter!(format!("Metric{i:03}"), "StreamName" => "s").increment(i + 1);
        }
        let labels: Vec<metrics::Label> = (0..35)
            .map(|i| metrics::Label::new(format!("D{i:02}"), format!("v{i}")))
            .collect();
        metrics::counter!("Wide", labels).increment(1);
        // A metric named like one of its dimensions cannot be on the line.
        metrics::gauge!("StreamName", "StreamName" => "s").set(1.0);
    });
    let lines = flush(&handle, &buf);
    let stream_lines: Vec<&Value> = lines.iter().filter(|l| l["StreamName"] == "s").collect();
    assert_eq!(stream_lines.len(), 3, "250 metrics: 100 + 100 + 50");
    let mut total = 0;
    for l in &stream_lines {
        let defs = definitions(l);
        assert!(defs.len() <= 100);
        total += defs.len();
        for (name, _) in defs {
            let i: u64 = name[6..].parse().unwrap();
            assert_eq!(l[&name], i + 1);
        }
    }
    assert_eq!(total, 250, "every metric once, the colliding one left out");
    let wide = lines.iter().find(|l| l.get("Wide").is_some()).unwrap();
    assert_eq!(
        wide["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0]
            .as_array()
            .unwrap()
            .len(),
        30
    );
}

#[test]
fn a_busy_histogram_is_written_as_at_most_100_values_with_exact_counts() {
    let (recorder, handle, buf) = exporter(|b| b);
    let samples = 50_000u64;
    let mut sum = 0.0;
    metrics::with_local_recorder(&recorder, || {
        let h = metrics::histogram!("BufferingTime", "StreamName" => "s");
        for i in 0..samples {
            let v = 0.5 + (i % 5000) as f64 * 0.37;
            sum += v;
            h.record(v);
        }
    });
    let lines = flush(&handle, &buf);
    let value = &line(&lines, &[("StreamName", "s")])["BufferingTime"];
    let values = value["Values"].as_array().unwrap();
    let counts = value["Counts"].as_array().unwrap();
    assert!(values.len() <= 100 && values.len() > 50, "{}", values.len());
    assert_eq!(
        counts.iter().map(|c| c.as_u64().unwrap()).sum::<u64>(),
        samples
    );
    let written: f64 = values
        .iter()
        .zip(counts)
        .map(|(v, c)| v.as_f64().unwrap() * c.as_f64().unwrap())
        .sum();
    assert!(
        (written - sum).abs() / sum < 1e-9,
        "sum kept: {written} vs {sum}"
    );
}

#[test]
fn the_filter_applies_in_front_of_the_exporter() {
    let (recorder, handle, buf) = exporter(|b| b);
    let filtered = MetricsFilter::new()
        .level(MetricsLevel::Summary)
        .granularity(MetricsGranularity::Global)
        .wrap(recorder);
    metrics::with_local_recorder(&filtered, || {
        for (shard, n) in [("shardId-0", 3), ("shardId-1", 4)] {
            metrics::counter!("RecordsProcessed", "ShardId" => shard).increment(n);
            metrics::counter!("GetRecords.Success", "ShardId" => shard).increment(1);
            metrics::gauge!("MillisBehindLatest", "ShardId" => shard).set(n as f64 * 100.0);
        }
    });
    let lines = flush(&handle, &buf);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(lines[0]["RecordsProcessed"], 7);
    assert_eq!(lines[0]["MillisBehindLatest"], 400.0, "the worst shard");
    assert!(lines[0].get("GetRecords.Success").is_none(), "detailed");
}

#[test]
fn invalid_settings_are_refused() {
    assert!(
        EmfRecorder::builder()
            .namespace("AWS/Kinesis")
            .build()
            .is_err()
    );
    assert!(EmfRecorder::builder().namespace("").build().is_err());
    assert!(EmfRecorder::builder().dimension("", "x").build().is_err());
    assert!(EmfRecorder::builder().dimension("Env", "").build().is_err());
}

#[test]
fn the_validator_rejects_what_the_specification_forbids() {
    let good = json!({
        "_aws": {"Timestamp": 1, "CloudWatchMetrics": [{
            "Namespace": "N", "Dimensions": [["D"]], "Metrics": [{"Name": "M", "Unit": "Count"}]}]},
        "D": "d", "M": 1
    });
    assert!(validate_emf(&good.to_string()).is_ok());
    let bad = |f: &dyn Fn(&mut Value)| {
        let mut doc = good.clone();
        f(&mut doc);
        validate_emf(&doc.to_string()).expect_err(&doc.to_string());
    };
    bad(&|d| {
        d.as_object_mut().unwrap().remove("_aws");
    });
    bad(&|d| d["_aws"]["Timestamp"] = json!("now"));
    bad(&|d| {
        d.as_object_mut().unwrap().remove("M");
    });
    bad(&|d| d["D"] = json!(5));
    bad(&|d| d["M"] = json!("1"));
    bad(&|d| d["M"] = json!(vec![1; 101]));
    bad(&|d| d["M"] = json!({"Values": [1, 2], "Counts": [1]}));
    bad(&|d| d["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"] = json!("Parsecs"));
    bad(&|d| d["_aws"]["CloudWatchMetrics"][0]["Extra"] = json!(1));
    bad(&|d| {
        d["_aws"]["CloudWatchMetrics"][0]["Dimensions"] =
            json!([(0..31).map(|i| format!("D{i}")).collect::<Vec<_>>()])
    });
    bad(&|d| {
        d["_aws"]["CloudWatchMetrics"][0]["Metrics"] = json!(
            (0..101)
                .map(|i| json!({"Name": format!("M{i}")}))
                .collect::<Vec<_>>()
        )
    });
}
