//! Every metric kinesis-rs emits: its kind, unit, labels, level and the KPL/KCL metric it
//! stands for. The [filter](crate::MetricsFilter) reads the level and how a gauge is
//! combined when labels are stripped; the EMF exporter reads the unit. docs/OPERATIONS.md
//! shows the same table (a test keeps the two in step).

use metrics::Unit;

use crate::filter::MetricsLevel;

/// Label carrying the stream's name (the KPL's and Kinesis' dimension name).
pub const STREAM_NAME: &str = "StreamName";
/// Label carrying the shard id (the KPL's and KCL's dimension name).
pub const SHARD_ID: &str = "ShardId";
/// Label carrying an error code (the KPL's `ErrorsByCode` dimension).
pub const ERROR_CODE: &str = "ErrorCode";

/// What kind of metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetricKind {
    /// Only goes up; exporters report it per interval (EMF) or cumulatively (Prometheus).
    Counter,
    /// A value that is set.
    Gauge,
    /// A distribution of recorded values.
    Histogram,
}

/// How the series of one gauge are combined when the [filter](crate::MetricsFilter)
/// strips the labels that told them apart (e.g. `MillisBehindLatest` of every shard at
/// global granularity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GaugeAggregation {
    /// The largest value (lag: the worst shard is what matters).
    Max,
    /// The sum (amounts: records pending over all streams).
    Sum,
}

/// One metric kinesis-rs emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricInfo {
    /// The name, as emitted.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// The unit of the recorded values.
    pub unit: Unit,
    /// The labels it carries.
    pub labels: &'static [&'static str],
    /// The level from which it is emitted ([`MetricsLevel::Summary`] or
    /// [`MetricsLevel::Detailed`]).
    pub level: MetricsLevel,
    /// For gauges: how series are combined when labels are stripped.
    pub aggregation: GaugeAggregation,
    /// The crate that emits it.
    pub emitted_by: &'static str,
    /// The KPL or KCL metric it corresponds to (empty when there is none).
    pub equivalent: &'static str,
    /// What it measures.
    pub description: &'static str,
}

/// One row of the table (the crate that emits it is set by [`producer`] or [`consumer`]).
const fn metric(
    name: &'static str,
    kind: MetricKind,
    unit: Unit,
    labels: &'static [&'static str],
    level: MetricsLevel,
    equivalent: &'static str,
    description: &'static str,
) -> MetricInfo {
    MetricInfo {
        name,
        kind,
        unit,
        labels,
        level,
        aggregation: GaugeAggregation::Sum,
        emitted_by: "",
        equivalent,
        description,
    }
}

const fn producer(m: MetricInfo) -> MetricInfo {
    MetricInfo {
        emitted_by: "kinesis-producer",
        ..m
    }
}

const fn consumer(m: MetricInfo) -> MetricInfo {
    MetricInfo {
        emitted_by: "kinesis-consumer",
        ..m
    }
}

use MetricKind::{Counter, Gauge, Histogram};
use MetricsLevel::{Detailed, Summary};

const STREAM: &[&str] = &[STREAM_NAME];
const SHARD: &[&str] = &[SHARD_ID];
const NONE: &[&str] = &[];

#[rustfmt::skip]
static CATALOG: &[MetricInfo] = &[
    // The producer (label StreamName), named as the KPL names its metrics.
    producer(metric("UserRecordsPut", Counter, Unit::Count, STREAM, Summary,
        "KPL UserRecordsPut (Summary)", "User records put successfully.")),
    producer(metric("UserRecordsDataPut", Counter, Unit::Bytes, STREAM, Detailed,
        "KPL UserRecordsDataPut (Detailed)", "Data bytes of the user records put successfully.")),
    producer(metric("KinesisRecordsPut", Counter, Unit::Count, STREAM, Summary,
        "KPL KinesisRecordsPut (Summary)",
        "Kinesis records put successfully (an aggregate counts once).")),
    producer(metric("KinesisRecordsDataPut", Counter, Unit::Bytes, STREAM, Detailed,
        "KPL KinesisRecordsDataPut (Detailed)",
        "Bytes of the Kinesis records put (data and partition keys, as billed).")),
    producer(metric("UserRecordExpired", Counter, Unit::Count, STREAM, Summary,
        "none (the KPL fails such records with the error Expired)",
        "User records failed because their time to live ran out: data NOT written.")),
    producer(metric("AllErrors", Counter, Unit::Count, STREAM, Summary,
        "KPL AllErrors (Summary)",
        "Failed PutRecords calls and failed Kinesis records (each once; retried or not).")),
    producer(metric("ErrorsByCode", Counter, Unit::Count, &[STREAM_NAME, ERROR_CODE], Summary,
        "KPL ErrorsByCode (Summary)",
        "AllErrors by error code (ProvisionedThroughputExceededException, WrongShard...).")),
    producer(metric("BufferingTime", Histogram, Unit::Milliseconds, STREAM, Summary,
        "KPL BufferingTime (Summary)",
        "Time from put to the first PutRecords attempt, per user record put.")),
    producer(metric("RetriesPerRecord", Histogram, Unit::Count, STREAM, Detailed,
        "KPL RetriesPerRecord (Detailed)", "Retries a user record needed (0: first try).")),
    producer(metric("RequestTime", Histogram, Unit::Milliseconds, STREAM, Detailed,
        "KPL RequestTime (Detailed)", "Duration of each PutRecords call.")),
    producer(metric("UserRecordsPending", Gauge, Unit::Count, STREAM, Detailed,
        "KPL UserRecordsPending (Detailed)",
        "User records put and not yet finished (buffered or in flight).")),
    // The consumer's shard consumers and readers (label ShardId), named as the KCL's.
    consumer(metric("RecordsProcessed", Counter, Unit::Count, SHARD, Summary,
        "KCL RecordsProcessed (Summary)",
        "User records delivered to a process_records call that returned Ok.")),
    consumer(metric("DataBytesProcessed", Counter, Unit::Bytes, SHARD, Summary,
        "KCL DataBytesProcessed (Summary)", "Data bytes of those records.")),
    MetricInfo {
        aggregation: GaugeAggregation::Max,
        ..consumer(metric("MillisBehindLatest", Gauge, Unit::Milliseconds, SHARD, Summary,
            "KCL MillisBehindLatest (Summary)",
            "How far the last read was behind the tip of the shard."))
    },
    consumer(metric("RecordProcessor.processRecords.Time", Histogram, Unit::Milliseconds, SHARD,
        Summary, "KCL RecordProcessor.processRecords.Time (Summary)",
        "Duration of each process_records call.")),
    consumer(metric("RecordProcessor.Errors", Counter, Unit::Count, SHARD, Summary, "",
        "Processor calls that returned an error (retried or skipped per the error policy).")),
    consumer(metric("RecordProcessor.SkippedBatches", Counter, Unit::Count, SHARD, Summary, "",
        "Batches skipped after repeated processor failures (policy SkipAfter): records NOT \
         processed.")),
    consumer(metric("DeaggregationDroppedRecords", Counter, Unit::Count, SHARD, Summary, "",
        "Aggregated sub-records left out because their hash key is outside the shard's range.")),
    consumer(metric("GetRecords.Success", Counter, Unit::Count, SHARD, Detailed,
        "KCL KinesisDataFetcher.getRecords.Success (Detailed)", "Successful GetRecords calls.")),
    consumer(metric("GetRecords.Time", Histogram, Unit::Milliseconds, SHARD, Detailed,
        "KCL KinesisDataFetcher.getRecords.Time (Detailed)",
        "Duration of each successful GetRecords call.")),
    consumer(metric("GetRecords.Throttled", Counter, Unit::Count, SHARD, Summary, "",
        "GetRecords calls throttled (retried with backoff).")),
    consumer(metric("GetRecords.Errors", Counter, Unit::Count, SHARD, Summary, "",
        "GetRecords calls failed transiently (retried with backoff).")),
    consumer(metric("GetShardIterator.Throttled", Counter, Unit::Count, SHARD, Summary, "",
        "GetShardIterator calls throttled (retried with backoff).")),
    consumer(metric("GetShardIterator.Errors", Counter, Unit::Count, SHARD, Summary, "",
        "GetShardIterator calls failed transiently (retried with backoff).")),
    consumer(metric("ListShards.Throttled", Counter, Unit::Count, SHARD, Summary, "",
        "ListShards calls of a reader looking for a closed shard's children, throttled.")),
    consumer(metric("ListShards.Errors", Counter, Unit::Count, SHARD, Summary, "",
        "Those ListShards calls failed transiently.")),
    consumer(metric("SubscribeToShard.Success", Counter, Unit::Count, SHARD, Detailed, "",
        "Enhanced fan-out subscriptions opened (Kinesis ends each after about 5 minutes).")),
    consumer(metric("SubscribeToShard.Throttled", Counter, Unit::Count, SHARD, Summary, "",
        "Subscriptions refused: throttled, in use or over the limit (resubscribed with backoff).")),
    consumer(metric("SubscribeToShard.Errors", Counter, Unit::Count, SHARD, Summary, "",
        "Subscriptions failed or silent for the read timeout (resubscribed with backoff).")),
    consumer(metric("ExpiredIterator", Counter, Unit::Count, SHARD, Summary,
        "KCL ExpiredIterator (Summary)",
        "Expired shard iterators (the reader restarts after the last record received).")),
    // The consumer's worker (no label: one worker per process; add WorkerIdentifier as a
    // global dimension in the exporter when several share a namespace).
    consumer(metric("LeasesHeld", Gauge, Unit::Count, NONE, Summary,
        "KCL CurrentLeases (Summary)", "Leases this worker holds.")),
    consumer(metric("TakenLeases", Counter, Unit::Count, NONE, Summary,
        "KCL TakenLeases (Summary)", "Leases taken (expired, unowned or stolen).")),
    consumer(metric("StolenLeases", Counter, Unit::Count, NONE, Detailed, "",
        "Of those, leases taken from another live worker to balance the load.")),
    consumer(metric("LostLeases", Counter, Unit::Count, NONE, Summary,
        "KCL LostLeases (Summary)",
        "Leases lost: taken by another worker, or not renewed for a whole failover time.")),
];

/// Every metric kinesis-rs emits.
pub fn catalog() -> &'static [MetricInfo] {
    CATALOG
}

/// The metric named `name`, if kinesis-rs emits it.
pub fn find(name: &str) -> Option<&'static MetricInfo> {
    CATALOG.iter().find(|m| m.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_valid_for_cloudwatch() {
        let mut names = std::collections::BTreeSet::new();
        for m in catalog() {
            assert!(names.insert(m.name), "{} listed twice", m.name);
            assert!(!m.name.is_empty() && m.name.len() <= 255 && m.name.is_ascii());
            assert_ne!(m.level, MetricsLevel::None, "{}", m.name);
            assert!(m.labels.len() <= 2);
        }
        assert_eq!(
            find("MillisBehindLatest").unwrap().aggregation,
            GaugeAggregation::Max
        );
        assert!(find("NoSuchMetric").is_none());
    }
}
