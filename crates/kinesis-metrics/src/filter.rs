//! Metrics level and granularity, as the KPL has them, as a wrapper around any
//! [`metrics::Recorder`] (Prometheus, EMF, the debugging recorder, your own).
//!
//! ```text
//!   counter!("RecordsProcessed", "ShardId" => "shardId-1")
//!        │
//!        ▼  Filtered<R>::register_counter
//!   level: is RecordsProcessed (Summary) ≤ the configured level?  no ─► a no-op handle
//!        │ yes
//!   granularity: strip ShardId (stream, global) and StreamName (global)
//!        │          (series that now share a key share one handle of R: they add up;
//!        │           gauges are combined per the catalog: max for lag, sum for amounts)
//!        ▼
//!   R::register_counter("RecordsProcessed", {})
//! ```
//!
//! The level governs kinesis-rs' metrics only: names the [`crate::catalog`] does not
//! know (your own metrics) always pass. Granularity strips `StreamName` and `ShardId` from
//! every metric.
//!
//! The KPL's `shard` granularity also uploads each metric per stream and overall; with
//! this filter that roll-up is the exporter's job (CloudWatch does it from one EMF line
//! with several dimension sets, Prometheus with `sum by`/`max by`), so a wrapped recorder
//! sees each series once.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metrics::{
    Counter, Gauge, GaugeFn, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit,
};

use crate::Error;
use crate::catalog::{self, GaugeAggregation, SHARD_ID, STREAM_NAME};

/// How many metrics are emitted (the KPL's and KCL's `MetricsLevel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum MetricsLevel {
    /// No kinesis-rs metric.
    None,
    /// The metrics to alarm on: records put and processed, errors, expiries, lag, leases.
    Summary,
    /// Everything (the default, as in the KPL and KCL).
    #[default]
    Detailed,
}

impl MetricsLevel {
    /// `none`, `summary` or `detailed`.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricsLevel::None => "none",
            MetricsLevel::Summary => "summary",
            MetricsLevel::Detailed => "detailed",
        }
    }
}

impl fmt::Display for MetricsLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MetricsLevel {
    type Err = Error;

    /// Case-insensitive `none`, `summary` or `detailed`.
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(MetricsLevel::None),
            "summary" => Ok(MetricsLevel::Summary),
            "detailed" => Ok(MetricsLevel::Detailed),
            _ => Err(Error::InvalidSetting {
                setting: "metrics level",
                value: s.to_owned(),
                expected: "none, summary or detailed",
            }),
        }
    }
}

/// The finest labels kept (the KPL's `MetricsGranularity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum MetricsGranularity {
    /// Neither `StreamName` nor `ShardId`.
    Global,
    /// `StreamName`, not `ShardId`.
    Stream,
    /// Both (the default, as in the KPL).
    #[default]
    Shard,
}

impl MetricsGranularity {
    /// `global`, `stream` or `shard`.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricsGranularity::Global => "global",
            MetricsGranularity::Stream => "stream",
            MetricsGranularity::Shard => "shard",
        }
    }

    /// Whether a label of this name is dropped at this granularity.
    fn strips(self, label: &str) -> bool {
        match self {
            MetricsGranularity::Global => label == SHARD_ID || label == STREAM_NAME,
            MetricsGranularity::Stream => label == SHARD_ID,
            MetricsGranularity::Shard => false,
        }
    }
}

impl fmt::Display for MetricsGranularity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MetricsGranularity {
    type Err = Error;

    /// Case-insensitive `global`, `stream` or `shard`.
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "global" => Ok(MetricsGranularity::Global),
            "stream" => Ok(MetricsGranularity::Stream),
            "shard" => Ok(MetricsGranularity::Shard),
            _ => Err(Error::InvalidSetting {
                setting: "metrics granularity",
                value: s.to_owned(),
                expected: "global, stream or shard",
            }),
        }
    }
}

/// Environment variable read by [`MetricsFilter::from_env`] for the level.
pub const ENV_LEVEL: &str = "METRICS_LEVEL";
/// Environment variable read by [`MetricsFilter::from_env`] for the granularity.
pub const ENV_GRANULARITY: &str = "METRICS_GRANULARITY";

/// Level and granularity; [`wrap`](Self::wrap) applies them to a recorder.
///
/// Defaults: [`MetricsLevel::Detailed`], [`MetricsGranularity::Shard`] (the KPL's), and a
/// gauge series that has not been set for 5 minutes no longer counts when series are
/// combined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsFilter {
    level: MetricsLevel,
    granularity: MetricsGranularity,
    gauge_staleness: Duration,
}

impl Default for MetricsFilter {
    fn default() -> Self {
        MetricsFilter {
            level: MetricsLevel::default(),
            granularity: MetricsGranularity::default(),
            gauge_staleness: Duration::from_secs(300),
        }
    }
}

impl MetricsFilter {
    /// The defaults: everything, at shard granularity.
    pub fn new() -> Self {
        Self::default()
    }

    /// The defaults overridden by `METRICS_LEVEL` and `METRICS_GRANULARITY` when set.
    ///
    /// # Errors
    /// [`Error::InvalidSetting`] for a value that is not a level or granularity.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    pub(crate) fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let mut filter = Self::default();
        if let Some(level) = var(ENV_LEVEL).filter(|v| !v.trim().is_empty()) {
            filter.level = level.parse()?;
        }
        if let Some(granularity) = var(ENV_GRANULARITY).filter(|v| !v.trim().is_empty()) {
            filter.granularity = granularity.parse()?;
        }
        Ok(filter)
    }

    /// Emit kinesis-rs metrics up to this level. Default [`MetricsLevel::Detailed`].
    pub fn level(mut self, level: MetricsLevel) -> Self {
        self.level = level;
        self
    }

    /// Keep labels down to this granularity. Default [`MetricsGranularity::Shard`].
    pub fn granularity(mut self, granularity: MetricsGranularity) -> Self {
        self.granularity = granularity;
        self
    }

    /// A gauge series not set for this long is left out when series are combined (a shard
    /// whose lease moved to another worker stops counting in this worker's maximum lag).
    /// Default 5 minutes.
    pub fn gauge_staleness(mut self, after: Duration) -> Self {
        self.gauge_staleness = after;
        self
    }

    /// The configured level.
    pub fn configured_level(&self) -> MetricsLevel {
        self.level
    }

    /// The configured granularity.
    pub fn configured_granularity(&self) -> MetricsGranularity {
        self.granularity
    }

    /// Whether a metric of this name is emitted at the configured level (names the
    /// catalog does not know always are).
    pub fn allows(&self, name: &str) -> bool {
        catalog::find(name).is_none_or(|m| m.level <= self.level)
    }

    /// `inner` behind this filter.
    pub fn wrap<R: Recorder>(&self, inner: R) -> Filtered<R> {
        Filtered {
            inner,
            filter: self.clone(),
            groups: Mutex::default(),
            now: Instant::now,
        }
    }

    /// The key with the labels this granularity drops removed (`None`: nothing to drop).
    fn strip(&self, key: &Key) -> Option<Key> {
        if !key.labels().any(|l| self.granularity.strips(l.key())) {
            return None;
        }
        let labels: Vec<Label> = key
            .labels()
            .filter(|l| !self.granularity.strips(l.key()))
            .cloned()
            .collect();
        Some(Key::from_parts(key.name_shared(), labels))
    }
}

/// A recorder behind a [`MetricsFilter`]; see the [module docs](self).
pub struct Filtered<R> {
    inner: R,
    filter: MetricsFilter,
    /// Gauges whose labels were stripped, by stripped key.
    groups: Mutex<HashMap<Key, Arc<GaugeGroup>>>,
    now: fn() -> Instant,
}

impl<R: fmt::Debug> fmt::Debug for Filtered<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Filtered")
            .field("inner", &self.inner)
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

impl<R> Filtered<R> {
    /// The wrapped recorder.
    pub fn inner(&self) -> &R {
        &self.inner
    }

    #[cfg(test)]
    pub(crate) fn with_clock(mut self, now: fn() -> Instant) -> Self {
        self.now = now;
        self
    }
}

impl<R: Recorder> Recorder for Filtered<R> {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        if self.filter.allows(key.as_str()) {
            self.inner.describe_counter(key, unit, description);
        }
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        if self.filter.allows(key.as_str()) {
            self.inner.describe_gauge(key, unit, description);
        }
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        if self.filter.allows(key.as_str()) {
            self.inner.describe_histogram(key, unit, description);
        }
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        if !self.filter.allows(key.name()) {
            return Counter::noop();
        }
        // Series that now share a key share the inner handle: their increments add up.
        match self.filter.strip(key) {
            Some(stripped) => self.inner.register_counter(&stripped, metadata),
            None => self.inner.register_counter(key, metadata),
        }
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        if !self.filter.allows(key.name()) {
            return Gauge::noop();
        }
        let Some(stripped) = self.filter.strip(key) else {
            return self.inner.register_gauge(key, metadata);
        };
        // Two shards setting one gauge would overwrite each other: combine them instead.
        let group = {
            let mut groups = self.groups.lock().unwrap_or_else(|p| p.into_inner());
            groups
                .entry(stripped)
                .or_insert_with_key(|stripped| {
                    Arc::new(GaugeGroup {
                        inner: self.inner.register_gauge(stripped, metadata),
                        aggregation: catalog::find(key.name())
                            .map_or(GaugeAggregation::Sum, |m| m.aggregation),
                        staleness: self.filter.gauge_staleness,
                        now: self.now,
                        members: Mutex::default(),
                    })
                })
                .clone()
        };
        Gauge::from_arc(Arc::new(GaugeMember {
            group,
            key: key.clone(),
        }))
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        if !self.filter.allows(key.name()) {
            return Histogram::noop();
        }
        // Recording into one shared histogram merges the distributions.
        match self.filter.strip(key) {
            Some(stripped) => self.inner.register_histogram(&stripped, metadata),
            None => self.inner.register_histogram(key, metadata),
        }
    }
}

/// The series of one gauge that share a key once labels are stripped.
struct GaugeGroup {
    inner: Gauge,
    aggregation: GaugeAggregation,
    staleness: Duration,
    now: fn() -> Instant,
    /// Each series' value and when it was last set, by its full key.
    members: Mutex<HashMap<Key, (f64, Instant)>>,
}

impl GaugeGroup {
    fn update(&self, member: &Key, f: impl FnOnce(f64) -> f64) {
        let now = (self.now)();
        let mut members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        let entry = members.entry(member.clone()).or_insert((0.0, now));
        *entry = (f(entry.0), now);
        members.retain(|_, (_, at)| now.saturating_duration_since(*at) <= self.staleness);
        let values = members.values().map(|(v, _)| *v);
        let combined = match self.aggregation {
            GaugeAggregation::Max => values.fold(f64::NEG_INFINITY, f64::max),
            GaugeAggregation::Sum => values.sum(),
        };
        // Set under the lock, so that the last combination computed is the last one set.
        self.inner.set(combined);
    }
}

struct GaugeMember {
    group: Arc<GaugeGroup>,
    key: Key,
}

impl GaugeFn for GaugeMember {
    fn increment(&self, value: f64) {
        self.group.update(&self.key, |v| v + value);
    }

    fn decrement(&self, value: f64) {
        self.group.update(&self.key, |v| v - value);
    }

    fn set(&self, value: f64) {
        self.group.update(&self.key, |_| value);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
    use metrics_util::{CompositeKey, MetricKind};

    use super::*;

    /// `(kind, name, sorted labels) → value`, for comparing snapshots.
    type Values = Vec<(MetricKind, String, Vec<(String, String)>, DebugValue)>;

    fn values(snapshotter: &Snapshotter) -> Values {
        let mut out: Values = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(ck, _, _, v): (CompositeKey, _, _, _)| {
                let (kind, key) = ck.into_parts();
                let mut labels: Vec<(String, String)> = key
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect();
                labels.sort();
                (kind, key.name().to_owned(), labels, v)
            })
            .collect();
        out.sort_by_key(|a| (a.1.clone(), a.2.clone()));
        out
    }

    fn emit_consumer_and_producer_metrics() {
        for (shard, n) in [("shardId-0", 3), ("shardId-1", 4)] {
            metrics::counter!("RecordsProcessed", "ShardId" => shard).increment(n);
            metrics::counter!("GetRecords.Success", "ShardId" => shard).increment(1);
            metrics::histogram!("RecordProcessor.processRecords.Time", "ShardId" => shard)
                .record(n as f64);
        }
        metrics::gauge!("MillisBehindLatest", "ShardId" => "shardId-0").set(10.0);
        metrics::gauge!("MillisBehindLatest", "ShardId" => "shardId-1").set(250.0);
        metrics::gauge!("MillisBehindLatest", "ShardId" => "shardId-0").set(20.0);
        for (stream, n) in [("a", 5), ("b", 6)] {
            metrics::counter!("UserRecordsPut", "StreamName" => stream).increment(n);
            metrics::gauge!("UserRecordsPending", "StreamName" => stream).set(n as f64);
            metrics::counter!("ErrorsByCode", "StreamName" => stream, "ErrorCode" => "Throttled")
                .increment(1);
        }
        metrics::counter!("MyOwnMetric", "ShardId" => "shardId-0").increment(1);
        metrics::gauge!("LeasesHeld").set(2.0);
    }

    fn run(filter: MetricsFilter) -> Values {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let filtered = filter.wrap(recorder);
        metrics::with_local_recorder(&filtered, emit_consumer_and_producer_metrics);
        values(&snapshotter)
    }

    fn find<'a>(values: &'a Values, name: &str, labels: &[(&str, &str)]) -> Option<&'a DebugValue> {
        let mut want: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        want.sort();
        values
            .iter()
            .find(|(_, n, l, _)| n == name && *l == want)
            .map(|(_, _, _, v)| v)
    }

    fn names(values: &Values) -> Vec<&str> {
        let mut names: Vec<&str> = values.iter().map(|v| v.1.as_str()).collect();
        names.dedup();
        names
    }

    #[test]
    fn shard_granularity_and_detailed_level_pass_everything_unchanged() {
        let v = run(MetricsFilter::new());
        assert_eq!(
            find(&v, "RecordsProcessed", &[("ShardId", "shardId-1")]),
            Some(&DebugValue::Counter(4))
        );
        assert_eq!(
            find(&v, "MillisBehindLatest", &[("ShardId", "shardId-0")]),
            Some(&DebugValue::Gauge(20.0.into()))
        );
        assert!(find(&v, "GetRecords.Success", &[("ShardId", "shardId-0")]).is_some());
        assert_eq!(v.len(), 16, "{v:?}");
    }

    #[test]
    fn summary_drops_detailed_metrics_and_none_drops_every_kinesis_metric() {
        let v = run(MetricsFilter::new().level(MetricsLevel::Summary));
        assert!(!names(&v).contains(&"GetRecords.Success"), "detailed");
        assert!(!names(&v).contains(&"UserRecordsPending"), "detailed");
        assert!(names(&v).contains(&"RecordsProcessed"));
        assert!(names(&v).contains(&"MyOwnMetric"), "unknown names pass");

        let v = run(MetricsFilter::new().level(MetricsLevel::None));
        assert_eq!(names(&v), ["MyOwnMetric"]);
    }

    #[test]
    fn stream_granularity_strips_shard_ids_and_adds_the_shards_up() {
        let v = run(MetricsFilter::new().granularity(MetricsGranularity::Stream));
        assert_eq!(
            find(&v, "RecordsProcessed", &[]),
            Some(&DebugValue::Counter(7))
        );
        assert_eq!(find(&v, "MyOwnMetric", &[]), Some(&DebugValue::Counter(1)));
        // Lag: the worst shard, with each shard's latest value.
        assert_eq!(
            find(&v, "MillisBehindLatest", &[]),
            Some(&DebugValue::Gauge(250.0.into()))
        );
        let Some(DebugValue::Histogram(samples)) =
            find(&v, "RecordProcessor.processRecords.Time", &[])
        else {
            panic!("{v:?}")
        };
        assert_eq!(samples.len(), 2, "both shards' samples in one histogram");
        // Stream names stay.
        assert_eq!(
            find(&v, "UserRecordsPut", &[("StreamName", "a")]),
            Some(&DebugValue::Counter(5))
        );
    }

    #[test]
    fn global_granularity_strips_stream_names_and_keeps_other_labels() {
        let v = run(MetricsFilter::new().granularity(MetricsGranularity::Global));
        assert_eq!(
            find(&v, "UserRecordsPut", &[]),
            Some(&DebugValue::Counter(11))
        );
        assert_eq!(
            find(&v, "UserRecordsPending", &[]),
            Some(&DebugValue::Gauge(11.0.into())),
            "amounts are summed"
        );
        assert_eq!(
            find(&v, "ErrorsByCode", &[("ErrorCode", "Throttled")]),
            Some(&DebugValue::Counter(2))
        );
        assert_eq!(
            find(&v, "LeasesHeld", &[]),
            Some(&DebugValue::Gauge(2.0.into()))
        );
    }

    static FAKE_NOW_SECS: AtomicU64 = AtomicU64::new(0);

    fn fake_now() -> Instant {
        static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *BASE.get_or_init(Instant::now) + Duration::from_secs(FAKE_NOW_SECS.load(Ordering::SeqCst))
    }

    #[test]
    fn a_gauge_series_not_set_for_a_while_stops_counting_in_the_combination() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let filtered = MetricsFilter::new()
            .granularity(MetricsGranularity::Global)
            .gauge_staleness(Duration::from_secs(60))
            .wrap(recorder)
            .with_clock(fake_now);
        let lag = |shard: &'static str, v: f64| {
            metrics::with_local_recorder(&filtered, || {
                metrics::gauge!("MillisBehindLatest", "ShardId" => shard).set(v)
            })
        };
        lag("shardId-0", 9000.0);
        lag("shardId-1", 5.0);
        assert_eq!(
            find(&values(&snapshotter), "MillisBehindLatest", &[]),
            Some(&DebugValue::Gauge(9000.0.into()))
        );
        // shardId-0 moved to another worker: after a minute its lag no longer counts.
        FAKE_NOW_SECS.store(61, Ordering::SeqCst);
        lag("shardId-1", 7.0);
        assert_eq!(
            find(&values(&snapshotter), "MillisBehindLatest", &[]),
            Some(&DebugValue::Gauge(7.0.into()))
        );
    }

    #[test]
    fn settings_parse_case_insensitively_and_from_the_environment() {
        assert_eq!(
            "SUMMARY".parse::<MetricsLevel>().unwrap(),
            MetricsLevel::Summary
        );
        assert_eq!(
            " shard ".parse::<MetricsGranularity>().unwrap(),
            MetricsGranularity::Shard
        );
        assert!("verbose".parse::<MetricsLevel>().is_err());
        let filter = MetricsFilter::from_vars(|name| match name {
            ENV_LEVEL => Some("none".into()),
            ENV_GRANULARITY => Some("Global".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(filter.configured_level(), MetricsLevel::None);
        assert_eq!(filter.configured_granularity(), MetricsGranularity::Global);
        assert_eq!(
            MetricsFilter::from_vars(|_| None).unwrap(),
            MetricsFilter::default()
        );
        let err = MetricsFilter::from_vars(|_| Some("bogus".into())).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }
}
