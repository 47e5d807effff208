//! Where the metrics go, chosen at start (`METRICS`), through `kinesis-metrics`.
//!
//! ```text
//!  producer (UserRecordsPut, ...) ─┐                     METRICS_LEVEL, METRICS_GRANULARITY
//!  service (IngestRequests) ───────┴─► metrics facade ─► MetricsFilter ─┬─► prometheus: GET /metrics
//!                                                                       ├─► emf: JSON lines on stdout
//!                                                                       │   every 60 s and at exit
//!                                                                       └─► none: no recorder
//! ```
//!
//! One global recorder per process: [`Metrics::install`] sets it once, before the producer
//! is built (what is emitted before a recorder exists is lost). The handlers only call
//! [`Metrics::render`]; `main` calls [`Metrics::flush`] after the drain, so that the last
//! EMF interval (the drain's own deliveries included) is not lost.

use std::fmt;
use std::sync::Mutex;

use kinesis_metrics::MetricsFilter;
use kinesis_metrics::emf::{EmfHandle, EmfRecorder};
use kinesis_metrics::prometheus::PrometheusHandle;

use crate::Error;

/// The Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The CloudWatch namespace of EMF metrics unless told otherwise (the library's default).
pub const DEFAULT_NAMESPACE: &str = "KinesisRs";

/// Where metrics go (`METRICS`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Export {
    /// Prometheus text on `GET /metrics` (the default).
    Prometheus,
    /// CloudWatch Embedded Metric Format: one JSON line per label set on stdout every 60 s,
    /// which ECS `awslogs` ships to CloudWatch Logs, which turns it into metrics.
    Emf {
        /// The CloudWatch namespace.
        namespace: String,
    },
    /// No recorder: metrics cost nothing and go nowhere.
    None,
}

impl Export {
    fn name(&self) -> &'static str {
        match self {
            Export::Prometheus => "prometheus",
            Export::Emf { .. } => "emf",
            Export::None => "none",
        }
    }
}

/// The installed exporter. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Prometheus(PrometheusHandle),
    Emf(EmfHandle),
    None,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.inner {
            Inner::Prometheus(_) => "prometheus",
            Inner::Emf(_) => "emf",
            Inner::None => "none",
        };
        f.debug_tuple("Metrics").field(&name).finish()
    }
}

/// What [`Metrics::install`] installed in this process, so that a second call with the same
/// settings (tests of one binary) shares it instead of failing.
static INSTALLED: Mutex<Option<(Export, MetricsFilter, Metrics)>> = Mutex::new(None);

impl Metrics {
    /// Installs the global recorder for `export` behind `filter` (level and granularity), or
    /// returns the one this function installed before with the same settings. Call it before
    /// building the producer. The Prometheus and EMF exporters start their background task
    /// on the current Tokio runtime.
    ///
    /// # Errors
    /// [`Error::Metrics`] if another global recorder is installed already (by other code, or
    /// by an earlier call with other settings), or if the EMF namespace is invalid.
    ///
    /// # Panics
    /// With [`Export::Emf`], outside a Tokio runtime.
    pub fn install(export: Export, filter: &MetricsFilter) -> Result<Metrics, Error> {
        let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((e, f, metrics)) = &*installed {
            if *e == export && f == filter {
                return Ok(metrics.clone());
            }
            return Err(Error::Metrics(format!(
                "metrics already installed as {} ({}, {}); cannot switch to {}",
                e.name(),
                f.configured_level(),
                f.configured_granularity(),
                export.name()
            )));
        }
        let inner = match &export {
            Export::Prometheus => Inner::Prometheus(
                kinesis_metrics::prometheus::install(filter)
                    .map_err(|e| Error::Metrics(e.to_string()))?,
            ),
            Export::Emf { namespace } => Inner::Emf(
                EmfRecorder::builder()
                    .namespace(namespace)
                    .install(filter)
                    .map_err(|e| Error::Metrics(e.to_string()))?,
            ),
            Export::None => Inner::None,
        };
        // The service's own metric: its unit for EMF, its help line for Prometheus.
        metrics::describe_counter!(
            "IngestRequests",
            metrics::Unit::Count,
            "POST /events requests answered, by HTTP status"
        );
        let metrics = Metrics { inner };
        *installed = Some((export, filter.clone(), metrics.clone()));
        Ok(metrics)
    }

    /// Prometheus with the default filter (everything, per stream and shard).
    ///
    /// # Errors
    /// As [`install`](Self::install).
    pub fn prometheus() -> Result<Metrics, Error> {
        Self::install(Export::Prometheus, &MetricsFilter::default())
    }

    /// Every metric as Prometheus text; `None` when metrics are not exported that way.
    pub fn render(&self) -> Option<String> {
        match &self.inner {
            Inner::Prometheus(handle) => {
                // Histograms are folded into their summaries by the exporter's upkeep every
                // few seconds; doing it here too means a scrape never shows stale quantiles.
                handle.run_upkeep();
                Some(handle.render())
            }
            Inner::Emf(_) | Inner::None => None,
        }
    }

    /// Why [`render`](Self::render) has nothing: a hint for the `/metrics` answer.
    pub(crate) fn not_served(&self) -> &'static str {
        match self.inner {
            Inner::Prometheus(_) => "metrics are served here",
            Inner::Emf(_) => {
                "metrics are written to stdout in CloudWatch Embedded Metric Format \
                 (METRICS=emf); set METRICS=prometheus to serve them here"
            }
            Inner::None => {
                "metrics are off (METRICS=none); set METRICS=prometheus to serve them here"
            }
        }
    }

    /// Writes what the exporter has not written yet: with EMF, the last partial interval (call
    /// it once before exiting); otherwise nothing to do.
    ///
    /// # Errors
    /// Writing to stdout failed.
    pub fn flush(&self) -> std::io::Result<()> {
        match &self.inner {
            Inner::Emf(handle) => handle.flush(),
            Inner::Prometheus(_) | Inner::None => Ok(()),
        }
    }
}
