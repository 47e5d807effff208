//! Observability for kinesis-rs applications: the KPL's metrics level and granularity over
//! any `metrics` recorder, exporters for Prometheus and CloudWatch Embedded Metric Format,
//! and logging set up in one call.
//!
//! ```text
//!   kinesis-producer ─┐ metrics::counter!/gauge!/histogram!   (names and labels: catalog)
//!   kinesis-consumer ─┤
//!   your code ────────┘
//!          │
//!          ▼
//!   MetricsFilter::wrap(recorder)   level: none | summary | detailed
//!          │                        granularity: global | stream | shard (strips labels,
//!          │                        adds series up, combines gauges: max lag, summed amounts)
//!          ├─► prometheus::install  (feature `prometheus`)  ─► handle.render() on /metrics
//!          ├─► EmfRecorder          (feature `emf`)  ─► JSON lines on stdout every 60 s
//!          │                                              ─► CloudWatch Logs ─► metrics
//!          └─► any other recorder (metrics-util's DebuggingRecorder in tests)
//!
//!   logging::init()                 (feature `logging`)  LOG_FORMAT=text|json, RUST_LOG
//! ```
//!
//! ```no_run
//! # #[cfg(all(feature = "emf", feature = "logging"))]
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use kinesis_metrics::{MetricsFilter, emf::EmfRecorder};
//!
//! kinesis_metrics::logging::init()?;
//! let filter = MetricsFilter::from_env()?; // METRICS_LEVEL, METRICS_GRANULARITY
//! let metrics = EmfRecorder::builder()
//!     .namespace("orders-consumer")
//!     .dimension("Environment", "prod")
//!     .install(&filter)?; // global recorder + a flush every 60 s
//! // ... run the worker ...
//! metrics.flush()?; // the last partial interval, at shutdown
//! # Ok(())
//! # }
//! ```
//!
//! No feature is on by default: the [filter](MetricsFilter) and the [catalog] need only the
//! `metrics` facade. The metric table, alarms and dashboards are in docs/OPERATIONS.md.

#![warn(missing_docs)]

pub mod catalog;
#[cfg(feature = "emf")]
pub mod emf;
pub mod filter;
#[cfg(feature = "logging")]
pub mod logging;
#[cfg(feature = "prometheus")]
pub mod prometheus;

pub use catalog::{MetricInfo, MetricKind};
pub use filter::{
    ENV_GRANULARITY, ENV_LEVEL, Filtered, MetricsFilter, MetricsGranularity, MetricsLevel,
};

/// What can go wrong setting up metrics or logging.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting has a value it cannot take.
    #[error("invalid {setting} {value:?}: expected {expected}")]
    InvalidSetting {
        /// The setting.
        setting: &'static str,
        /// The value given.
        value: String,
        /// What is accepted.
        expected: &'static str,
    },
    /// A global `metrics` recorder is already installed (there can be one per process).
    #[error("a global metrics recorder is already installed")]
    RecorderAlreadyInstalled,
    /// A global `tracing` subscriber is already installed.
    #[error("a global tracing subscriber is already installed")]
    SubscriberAlreadyInstalled,
    /// Starting a background thread failed.
    #[error("starting a background thread failed: {0}")]
    Io(#[source] std::io::Error),
}
