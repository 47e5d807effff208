//! CloudWatch Embedded Metric Format: metrics as JSON log lines that CloudWatch Logs turns
//! into CloudWatch metrics, with no `PutMetricData` call (the KPL's and KCL's uploads are
//! throttled and billed per call: KPL issues #142 and #601).
//!
//! ```text
//!   counter!/gauge!/histogram! ─► EmfRecorder (a registry of atomics; histograms in
//!                                  log-scale bins of 1/16 octave, exact count and sum)
//!                                        │ every interval (default 60 s): EmfHandle::flush
//!                                        ▼
//!   one JSON line per label set (≤ 100 metrics, ≤ 30 dimensions, ≤ 200 KB a line):
//!   {"_aws":{"Timestamp":…,"CloudWatchMetrics":[{"Namespace":"KinesisRs",
//!            "Dimensions":[["StreamName","ShardId"],["StreamName"],[]],
//!            "Metrics":[{"Name":"RecordsProcessed","Unit":"Count"},…]}]},
//!    "StreamName":"orders","ShardId":"shardId-000000000001","RecordsProcessed":1200,
//!    "GetRecords.Time":{"Values":[11.2,19.8],"Counts":[40,2]}}
//!        │ stdout (or any writer)
//!        ▼
//!   ECS awslogs / FireLens, Lambda ─► CloudWatch Logs ─► CloudWatch metrics
//! ```
//!
//! Per interval: a counter is written as its increase during the interval (so CloudWatch's
//! `Sum` is the count per period), a gauge as its current value, a histogram as the values
//! recorded during the interval in the `{"Values": […], "Counts": […]}` form (at most 100
//! distinct values: values are grouped in bins 1/16 of an octave wide, about 4 %, and each
//! bin is written as the mean of its values, so sums and averages stay exact and
//! percentiles are within a bin's width).
//!
//! A series not updated for [`idle_timeout`](EmfBuilder::idle_timeout) (default 5 minutes)
//! is no longer written until it changes again: a counter incremented once is written (as
//! 0) for five minutes after, then its line stops, which keeps the lines of shards that
//! moved to another worker from repeating forever.
//!
//! Roll-up (on by default): a line whose labels include `ShardId` or `StreamName` also
//! declares the dimension sets without them, so CloudWatch publishes each metric per shard,
//! per stream and overall from one line, as the KPL's `shard` granularity does. Each
//! dimension set is a CloudWatch metric of its own (billed as such).

mod histogram;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metrics::{
    Counter, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use metrics_util::registry::{Registry, Storage};
use serde_json::{Map, Number, Value, json};

use crate::Error;
use crate::catalog::{self, SHARD_ID, STREAM_NAME};
use histogram::Bins;

/// The most metrics one line declares (EMF: 100 per directive).
pub const MAX_METRICS_PER_LINE: usize = 100;
/// The most dimensions in one dimension set (EMF: 30).
pub const MAX_DIMENSIONS: usize = 30;
/// The most values one metric has on a line (EMF: 100).
pub const MAX_VALUES_PER_METRIC: usize = 100;
/// A line is closed before it grows past this many bytes (CloudWatch Logs events are
/// limited to 256 KB; the rest is headroom for the log driver's own fields).
pub const MAX_LINE_BYTES: usize = 200 * 1024;
/// The longest dimension value CloudWatch accepts.
const MAX_DIMENSION_VALUE: usize = 1024;
/// The longest dimension or metric name CloudWatch accepts.
const MAX_NAME: usize = 250;

/// Settings of the EMF exporter; see [`EmfRecorder::builder`].
pub struct EmfBuilder {
    namespace: String,
    interval: Duration,
    idle_timeout: Duration,
    dimensions: Vec<(String, String)>,
    rollup: bool,
    writer: Box<dyn Write + Send>,
}

impl fmt::Debug for EmfBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmfBuilder")
            .field("namespace", &self.namespace)
            .field("interval", &self.interval)
            .field("idle_timeout", &self.idle_timeout)
            .field("dimensions", &self.dimensions)
            .field("rollup", &self.rollup)
            .finish_non_exhaustive()
    }
}

impl EmfBuilder {
    /// The CloudWatch namespace. Default `KinesisRs`. 1 to 255 characters among letters,
    /// digits and `. - _ / # : ` and space, not starting with `AWS/`.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// How often [`EmfHandle::spawn_flusher`] writes the lines. Default 60 s (CloudWatch's
    /// standard resolution; the KPL's `MetricsUploadDelay`).
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval.max(Duration::from_secs(1));
        self
    }

    /// A series unchanged for this long is no longer written. Default 5 minutes.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// A dimension added to every line (application, environment, `WorkerIdentifier`...).
    /// A label of the same name on a metric wins.
    pub fn dimension(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.dimensions.push((name.into(), value.into()));
        self
    }

    /// Also declare the dimension sets without `ShardId` and without `StreamName`, so that
    /// CloudWatch publishes per-stream and overall metrics too. Default true.
    pub fn rollup(mut self, rollup: bool) -> Self {
        self.rollup = rollup;
        self
    }

    /// Where the lines go. Default standard output (what ECS `awslogs`, FireLens and Lambda
    /// forward to CloudWatch Logs). Each line is written with one `write_all`.
    pub fn writer(mut self, writer: impl Write + Send + 'static) -> Self {
        self.writer = Box::new(writer);
        self
    }

    /// The recorder (give it to [`metrics::set_global_recorder`], maybe behind a
    /// [`MetricsFilter`](crate::MetricsFilter)) and the handle that writes the lines.
    ///
    /// # Errors
    /// [`Error::InvalidSetting`] for an invalid namespace or dimension.
    pub fn build(self) -> Result<(EmfRecorder, EmfHandle), Error> {
        validate_namespace(&self.namespace)?;
        for (name, value) in &self.dimensions {
            if !valid_name(name) || value.is_empty() || value.len() > MAX_DIMENSION_VALUE {
                return Err(Error::InvalidSetting {
                    setting: "EMF dimension",
                    value: format!("{name}={value}"),
                    expected: "a name of 1 to 250 characters (not starting with ':') and a \
                               value of 1 to 1024 characters",
                });
            }
        }
        if self.dimensions.len() > MAX_DIMENSIONS {
            return Err(Error::InvalidSetting {
                setting: "EMF dimensions",
                value: self.dimensions.len().to_string(),
                expected: "at most 30",
            });
        }
        let shared = Arc::new(Shared {
            registry: Registry::new(EmfStorage),
            units: Mutex::default(),
        });
        let handle = EmfHandle {
            shared: shared.clone(),
            exporter: Arc::new(Mutex::new(Exporter {
                namespace: self.namespace,
                interval: self.interval,
                idle_timeout: self.idle_timeout,
                dimensions: self.dimensions,
                rollup: self.rollup,
                writer: self.writer,
                seen: HashMap::new(),
            })),
        };
        Ok((EmfRecorder { shared }, handle))
    }

    /// Builds, installs the recorder globally behind `filter`, and starts a flusher task on
    /// the current Tokio runtime.
    ///
    /// # Errors
    /// As [`build`](Self::build), and [`Error::RecorderAlreadyInstalled`].
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn install(self, filter: &crate::MetricsFilter) -> Result<EmfHandle, Error> {
        let (recorder, handle) = self.build()?;
        metrics::set_global_recorder(filter.wrap(recorder))
            .map_err(|_| Error::RecorderAlreadyInstalled)?;
        handle.clone().spawn_flusher();
        Ok(handle)
    }
}

fn valid_name(name: &str) -> bool {
    !name.trim().is_empty() && name.len() <= MAX_NAME && !name.starts_with(':')
}

fn validate_namespace(namespace: &str) -> Result<(), Error> {
    let ok = !namespace.is_empty()
        && namespace.len() <= 255
        && !namespace.starts_with("AWS/")
        && namespace
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " .-_/#:".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidSetting {
            setting: "EMF namespace",
            value: namespace.to_owned(),
            expected: "1 to 255 of letters, digits, space and . - _ / # :, not starting with AWS/",
        })
    }
}

/// A [`metrics::Recorder`] that aggregates per series for [`EmfHandle::flush`].
#[derive(Clone)]
pub struct EmfRecorder {
    shared: Arc<Shared>,
}

impl fmt::Debug for EmfRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EmfRecorder")
    }
}

impl EmfRecorder {
    /// The settings, with their defaults.
    pub fn builder() -> EmfBuilder {
        EmfBuilder {
            namespace: "KinesisRs".to_owned(),
            interval: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(300),
            dimensions: Vec::new(),
            rollup: true,
            writer: Box::new(io::stdout()),
        }
    }
}

struct Shared {
    registry: Registry<Key, EmfStorage>,
    /// Units given by `describe_*`, by name (the catalog's otherwise).
    units: Mutex<HashMap<String, Unit>>,
}

impl Shared {
    fn describe(&self, key: KeyName, unit: Option<Unit>) {
        if let Some(unit) = unit {
            self.units
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key.as_str().to_owned(), unit);
        }
    }
}

impl Recorder for EmfRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.shared.describe(key, unit);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.shared.describe(key, unit);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, _: SharedString) {
        self.shared.describe(key, unit);
    }

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.shared
            .registry
            .get_or_create_counter(key, |c| Counter::from_arc(c.clone()))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.shared
            .registry
            .get_or_create_gauge(key, |g| Gauge::from_arc(g.clone()))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.shared
            .registry
            .get_or_create_histogram(key, |h| Histogram::from_arc(h.clone()))
    }
}

/// Storage: plain atomics for counters, value plus a change count for gauges (to tell an
/// unchanged gauge from one set to the same value), bins for histograms.
struct EmfStorage;

impl Storage<Key> for EmfStorage {
    type Counter = Arc<AtomicU64>;
    type Gauge = Arc<EmfGauge>;
    type Histogram = Arc<EmfHistogram>;

    fn counter(&self, _: &Key) -> Self::Counter {
        Arc::new(AtomicU64::new(0))
    }

    fn gauge(&self, _: &Key) -> Self::Gauge {
        Arc::new(EmfGauge::default())
    }

    fn histogram(&self, _: &Key) -> Self::Histogram {
        Arc::new(EmfHistogram::default())
    }
}

#[derive(Debug, Default)]
struct EmfGauge {
    bits: AtomicU64,
    changes: AtomicU64,
}

impl EmfGauge {
    fn update(&self, f: impl Fn(f64) -> f64) {
        let _ = self
            .bits
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                Some(f(f64::from_bits(b)).to_bits())
            });
        self.changes.fetch_add(1, Ordering::Release);
    }
}

impl GaugeFn for EmfGauge {
    fn increment(&self, value: f64) {
        self.update(|v| v + value);
    }

    fn decrement(&self, value: f64) {
        self.update(|v| v - value);
    }

    fn set(&self, value: f64) {
        self.update(|_| value);
    }
}

/// Histogram values since the last flush. One short lock per value: our histograms are
/// recorded by one task each (a producer's engine, a shard's consumer), so it is never
/// contended in practice, and it keeps count, sum and bin consistent.
#[derive(Debug, Default)]
struct EmfHistogram {
    bins: Mutex<Bins>,
}

impl HistogramFn for EmfHistogram {
    fn record(&self, value: f64) {
        self.record_many(value, 1);
    }

    fn record_many(&self, value: f64, count: usize) {
        self.bins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(value, count as u64);
    }
}

/// Writes the recorder's metrics as EMF lines. Cheap to clone.
#[derive(Clone)]
pub struct EmfHandle {
    shared: Arc<Shared>,
    exporter: Arc<Mutex<Exporter>>,
}

impl fmt::Debug for EmfHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EmfHandle")
    }
}

struct Exporter {
    namespace: String,
    interval: Duration,
    idle_timeout: Duration,
    dimensions: Vec<(String, String)>,
    rollup: bool,
    writer: Box<dyn Write + Send>,
    /// Per series: the counter value or gauge change count last seen, and when it last
    /// changed.
    seen: HashMap<(Kind, Key), (u64, Instant)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Counter,
    Gauge,
}

/// A metric's value on a line.
enum Datum {
    Count(u64),
    Value(f64),
    Distribution(Vec<(f64, u64)>),
}

impl Datum {
    fn to_json(&self) -> Option<Value> {
        match self {
            Datum::Count(n) => Some(Value::from(*n)),
            Datum::Value(v) => Number::from_f64(*v).map(Value::Number),
            Datum::Distribution(points) => {
                let values: Vec<Value> = points
                    .iter()
                    .filter_map(|(v, _)| Number::from_f64(*v).map(Value::Number))
                    .collect();
                let counts: Vec<Value> = points.iter().map(|(_, c)| Value::from(*c)).collect();
                (values.len() == counts.len() && !values.is_empty())
                    .then(|| json!({ "Values": values, "Counts": counts }))
            }
        }
    }
}

impl EmfHandle {
    /// Writes one interval's lines now: what was recorded since the last flush. Call it
    /// once more before the process exits so the last interval is not lost.
    ///
    /// # Errors
    /// The writer's error; the interval's values are then lost (they were taken).
    pub fn flush(&self) -> io::Result<()> {
        let mut exporter = self.exporter.lock().unwrap_or_else(|p| p.into_inner());
        let lines = exporter.lines(&self.shared, Instant::now(), SystemTime::now());
        for line in lines {
            let mut bytes = line.into_bytes();
            bytes.push(b'\n');
            exporter.writer.write_all(&bytes)?;
        }
        exporter.writer.flush()
    }

    /// Flushes every interval on the current Tokio runtime, until the runtime stops. Call
    /// [`flush`](Self::flush) yourself at shutdown for the last partial interval.
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn spawn_flusher(self) -> tokio::task::JoinHandle<()> {
        let interval = self
            .exporter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .interval;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await; // the first tick is immediate: nothing recorded yet
            loop {
                ticks.tick().await;
                let handle = self.clone();
                // The writer may block (a full pipe): keep it off the runtime's threads.
                let flushed = tokio::task::spawn_blocking(move || handle.flush()).await;
                if let Ok(Err(e)) = flushed {
                    tracing::warn!(error = %e, "writing EMF metrics failed; this interval is lost");
                }
            }
        })
    }
}

impl Exporter {
    fn unit(&self, shared: &Shared, name: &str) -> &'static str {
        let described = shared
            .units
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .copied();
        described
            .or_else(|| catalog::find(name).map(|m| m.unit))
            .map_or("None", cloudwatch_unit)
    }

    /// Whether a series that shows `current` (a counter value or a gauge's change count)
    /// is still written.
    fn fresh(&mut self, kind: Kind, key: &Key, current: u64, now: Instant) -> bool {
        let idle = self.idle_timeout;
        let entry = self
            .seen
            .entry((kind, key.clone()))
            .or_insert((current, now));
        if entry.0 != current {
            *entry = (current, now);
        }
        now.saturating_duration_since(entry.1) <= idle
    }

    /// Takes one interval's values and renders them as lines.
    fn lines(&mut self, shared: &Shared, now: Instant, wall: SystemTime) -> Vec<String> {
        // Label set → metric name → value.
        let mut groups: BTreeMap<Vec<(String, String)>, BTreeMap<String, Datum>> = BTreeMap::new();
        let mut add = |key: &Key, datum: Datum| {
            groups
                .entry(label_set(key))
                .or_default()
                .insert(key.name().to_owned(), datum);
        };
        let mut counters = Vec::new();
        shared
            .registry
            .visit_counters(|key, c| counters.push((key.clone(), c.load(Ordering::Acquire))));
        for (key, value) in counters {
            let last = self
                .seen
                .get(&(Kind::Counter, key.clone()))
                .map_or(0, |(v, _)| *v);
            if self.fresh(Kind::Counter, &key, value, now) {
                // A counter set lower (`absolute`) restarted: all of it is new.
                add(&key, Datum::Count(value.checked_sub(last).unwrap_or(value)));
            }
        }
        let mut gauges = Vec::new();
        shared.registry.visit_gauges(|key, g| {
            gauges.push((
                key.clone(),
                g.changes.load(Ordering::Acquire),
                f64::from_bits(g.bits.load(Ordering::Acquire)),
            ))
        });
        for (key, changes, value) in gauges {
            if self.fresh(Kind::Gauge, &key, changes, now) && value.is_finite() {
                add(&key, Datum::Value(value));
            }
        }
        shared.registry.visit_histograms(|key, h| {
            let bins = std::mem::take(&mut *h.bins.lock().unwrap_or_else(|p| p.into_inner()));
            let points = bins.points(MAX_VALUES_PER_METRIC);
            if !points.is_empty() {
                add(key, Datum::Distribution(points));
            }
        });

        let timestamp = wall
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut lines = Vec::new();
        for (labels, metrics) in groups {
            self.render_group(shared, timestamp, labels, metrics, &mut lines);
        }
        lines
    }

    fn render_group(
        &self,
        shared: &Shared,
        timestamp: u64,
        labels: Vec<(String, String)>,
        metrics: BTreeMap<String, Datum>,
        lines: &mut Vec<String>,
    ) {
        // Dimensions: the global ones, then the labels (a label wins over a global one).
        let mut dims: Vec<(String, String)> = self
            .dimensions
            .iter()
            .filter(|(n, _)| !labels.iter().any(|(l, _)| l == n))
            .cloned()
            .collect();
        dims.extend(labels);
        if dims.len() > MAX_DIMENSIONS {
            tracing::debug!(
                dimensions = dims.len(),
                "EMF: more than 30 dimensions; the last are dropped"
            );
            dims.truncate(MAX_DIMENSIONS);
        }
        let names: Vec<&str> = dims.iter().map(|(n, _)| n.as_str()).collect();
        let mut sets = vec![names.clone()];
        if self.rollup {
            for drop in [&[SHARD_ID][..], &[SHARD_ID, STREAM_NAME][..]] {
                let coarser: Vec<&str> = names
                    .iter()
                    .copied()
                    .filter(|n| !drop.contains(n))
                    .collect();
                if !sets.contains(&coarser) {
                    sets.push(coarser);
                }
            }
        }
        let base = |definitions: Vec<Value>| -> Map<String, Value> {
            let mut root = Map::new();
            root.insert(
                "_aws".into(),
                json!({
                    "Timestamp": timestamp,
                    "CloudWatchMetrics": [{
                        "Namespace": self.namespace,
                        "Dimensions": sets,
                        "Metrics": definitions,
                    }],
                }),
            );
            for (name, value) in &dims {
                root.insert(name.clone(), Value::String(value.clone()));
            }
            root
        };
        // Split into lines of at most 100 metrics and MAX_LINE_BYTES.
        let header_bytes =
            serde_json::to_string(&Value::Object(base(Vec::new()))).map_or(0, |s| s.len());
        let mut definitions: Vec<Value> = Vec::new();
        let mut values: Vec<(String, Value)> = Vec::new();
        let mut bytes = header_bytes;
        let mut flush = |definitions: &mut Vec<Value>, values: &mut Vec<(String, Value)>| {
            if definitions.is_empty() {
                return;
            }
            let mut root = base(std::mem::take(definitions));
            root.extend(values.drain(..));
            if let Ok(line) = serde_json::to_string(&Value::Object(root)) {
                lines.push(line);
            }
        };
        for (name, datum) in metrics {
            if !valid_name(&name) || name == "_aws" || dims.iter().any(|(d, _)| *d == name) {
                tracing::debug!(metric = %name, "EMF: metric name unusable on this line; skipped");
                continue;
            }
            let Some(value) = datum.to_json() else {
                continue;
            };
            let definition = json!({ "Name": name, "Unit": self.unit(shared, &name) });
            let size = definition.to_string().len() + name.len() + value.to_string().len() + 8;
            if definitions.len() == MAX_METRICS_PER_LINE
                || (!definitions.is_empty() && bytes + size > MAX_LINE_BYTES)
            {
                flush(&mut definitions, &mut values);
                bytes = header_bytes;
            }
            bytes += size;
            definitions.push(definition);
            values.push((name, value));
        }
        flush(&mut definitions, &mut values);
    }
}

/// The key's labels usable as dimensions: sorted by name, empty values left out, values
/// cut to CloudWatch's 1024 characters.
fn label_set(key: &Key) -> Vec<(String, String)> {
    let mut labels: Vec<(String, String)> = key
        .labels()
        .filter(|l| valid_name(l.key()) && !l.value().trim().is_empty())
        .map(|l| {
            let mut value = l.value().to_owned();
            if value.len() > MAX_DIMENSION_VALUE {
                let mut end = MAX_DIMENSION_VALUE;
                while !value.is_char_boundary(end) {
                    end -= 1;
                }
                value.truncate(end);
            }
            (l.key().to_owned(), value)
        })
        .collect();
    labels.sort();
    labels.dedup_by(|a, b| a.0 == b.0);
    labels
}

/// The CloudWatch name of a unit (binary multiples have no CloudWatch unit: `None`).
fn cloudwatch_unit(unit: Unit) -> &'static str {
    match unit {
        Unit::Count => "Count",
        Unit::Percent => "Percent",
        Unit::Seconds => "Seconds",
        Unit::Milliseconds => "Milliseconds",
        Unit::Microseconds => "Microseconds",
        Unit::Bytes => "Bytes",
        Unit::CountPerSecond => "Count/Second",
        Unit::BitsPerSecond => "Bits/Second",
        Unit::KilobitsPerSecond => "Kilobits/Second",
        Unit::MegabitsPerSecond => "Megabits/Second",
        Unit::GigabitsPerSecond => "Gigabits/Second",
        Unit::TerabitsPerSecond => "Terabits/Second",
        _ => "None",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_follow_cloudwatch_rules() {
        for ok in ["KinesisRs", "my-app/prod", "a.b_c#d:e f"] {
            assert!(validate_namespace(ok).is_ok(), "{ok}");
        }
        for bad in ["", "AWS/Kinesis", "émoji", &"x".repeat(256)] {
            assert!(validate_namespace(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels_become_sorted_dimensions_without_empty_values() {
        let key = Key::from_parts(
            "M",
            vec![
                metrics::Label::new("StreamName", "s"),
                metrics::Label::new("Empty", " "),
                metrics::Label::new("Long", "é".repeat(600)),
                metrics::Label::new("ErrorCode", "E"),
            ],
        );
        let labels = label_set(&key);
        let names: Vec<&str> = labels.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["ErrorCode", "Long", "StreamName"]);
        assert!(labels[1].1.len() <= 1024);
    }

    #[test]
    fn units_map_to_cloudwatch_names() {
        assert_eq!(cloudwatch_unit(Unit::Milliseconds), "Milliseconds");
        assert_eq!(cloudwatch_unit(Unit::CountPerSecond), "Count/Second");
        assert_eq!(cloudwatch_unit(Unit::Kibibytes), "None");
    }
}
