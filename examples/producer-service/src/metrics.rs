//! `GET /metrics`: Prometheus text from a `metrics-exporter-prometheus` recorder installed as
//! the process's global `metrics` recorder.
//!
//! ```text
//!  producer (UserRecordsPut, ...) ─┐
//!  service (IngestRequests)  ──────┴─► metrics facade ─► PrometheusRecorder ─► Metrics::render
//! ```
//!
//! Everything exporter-specific is in this module, so that it can be swapped for the
//! `kinesis-metrics` crate without touching the handlers: they only call
//! [`Metrics::render`] and send [`CONTENT_TYPE`].

use std::sync::Mutex;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::Error;

/// The Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The installed exporter. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

/// A process has one global recorder: the first `install` sets it, later ones share it.
static INSTALLED: Mutex<Option<PrometheusHandle>> = Mutex::new(None);

impl Metrics {
    /// Installs the Prometheus recorder as the global `metrics` recorder, or returns the one
    /// this function installed before. Call it before building the producer: metrics
    /// emitted before a recorder exists are lost.
    ///
    /// # Errors
    /// [`Error::Metrics`] if another global recorder is installed already.
    pub fn install() -> Result<Metrics, Error> {
        let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(handle) = &*installed {
            return Ok(Metrics {
                handle: handle.clone(),
            });
        }
        let handle = PrometheusBuilder::new()
            .install_recorder()
            .map_err(|e| Error::Metrics(e.to_string()))?;
        *installed = Some(handle.clone());
        Ok(Metrics { handle })
    }

    /// Renders every metric as Prometheus text.
    pub fn render(&self) -> String {
        // Histograms are drained into their summaries by the upkeep; doing it here too means
        // a scrape never shows stale quantiles.
        self.handle.run_upkeep();
        self.handle.render()
    }

    /// Runs the exporter's upkeep (draining histogram samples) every `every`, so that memory
    /// stays bounded when nobody scrapes. Stops with the runtime.
    pub fn spawn_upkeep(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let handle = self.handle.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        })
    }
}
