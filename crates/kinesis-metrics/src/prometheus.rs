//! Prometheus text exposition: a recorder whose handle renders what a `/metrics` endpoint
//! returns. No HTTP listener here: serve [`PrometheusHandle::render`] from your own server
//! (the examples use axum).
//!
//! ```text
//!   counter!/gauge!/histogram! ─► Filtered (level, granularity) ─► PrometheusRecorder
//!                                                                        │ upkeep every 5 s
//!   GET /metrics ─► handle.render() ◄─────────────────────────────────────┘ (histograms
//!                                                                           into summaries)
//! ```
//!
//! Names are sanitized the Prometheus way (`RecordProcessor.processRecords.Time` becomes
//! `RecordProcessor_processRecords_Time`); histograms are summaries with the exporter's
//! default quantiles. Prometheus rolls up per stream or overall at query time
//! (`sum by (StreamName)`, `max(MillisBehindLatest)`).

use std::time::Duration;

pub use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

use crate::{Error, Filtered, MetricsFilter};

/// How often histogram samples are folded into their summaries.
const UPKEEP: Duration = Duration::from_secs(5);

/// A Prometheus recorder behind `filter`, not installed: for a local recorder
/// ([`metrics::with_local_recorder`]) or to combine with other recorders. Run
/// [`PrometheusHandle::run_upkeep`] now and then (every few seconds), or histogram samples
/// accumulate until the next render.
pub fn recorder(
    builder: PrometheusBuilder,
    filter: &MetricsFilter,
) -> (Filtered<PrometheusRecorder>, PrometheusHandle) {
    let recorder = builder.build_recorder();
    let handle = recorder.handle();
    (filter.wrap(recorder), handle)
}

/// Installs a Prometheus recorder (default settings) behind `filter` as the global
/// recorder and starts its upkeep (a task on the current Tokio runtime, or a thread when
/// there is none). Serve `handle.render()` on `/metrics`.
///
/// # Errors
/// [`Error::RecorderAlreadyInstalled`].
pub fn install(filter: &MetricsFilter) -> Result<PrometheusHandle, Error> {
    install_with(PrometheusBuilder::new(), filter)
}

/// [`install`] with your own builder (buckets instead of summaries, global labels...).
///
/// # Errors
/// [`Error::RecorderAlreadyInstalled`].
pub fn install_with(
    builder: PrometheusBuilder,
    filter: &MetricsFilter,
) -> Result<PrometheusHandle, Error> {
    let (recorder, handle) = recorder(builder, filter);
    metrics::set_global_recorder(recorder).map_err(|_| Error::RecorderAlreadyInstalled)?;
    let upkeep = handle.clone();
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(async move {
                let mut ticks = tokio::time::interval(UPKEEP);
                loop {
                    ticks.tick().await;
                    upkeep.run_upkeep();
                }
            });
        }
        Err(_) => {
            std::thread::Builder::new()
                .name("prometheus-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(UPKEEP);
                        upkeep.run_upkeep();
                    }
                })
                .map_err(Error::Io)?;
        }
    }
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MetricsGranularity, MetricsLevel};

    #[test]
    fn renders_filtered_metrics_as_prometheus_text() {
        let filter = MetricsFilter::new()
            .level(MetricsLevel::Summary)
            .granularity(MetricsGranularity::Stream);
        let (recorder, handle) = recorder(PrometheusBuilder::new(), &filter);
        metrics::with_local_recorder(&recorder, || {
            metrics::counter!("RecordsProcessed", "ShardId" => "shardId-0").increment(3);
            metrics::counter!("RecordsProcessed", "ShardId" => "shardId-1").increment(4);
            metrics::counter!("GetRecords.Success", "ShardId" => "shardId-1").increment(1);
            metrics::counter!("UserRecordsPut", "StreamName" => "orders").increment(5);
            metrics::histogram!("RecordProcessor.processRecords.Time", "ShardId" => "s")
                .record(12.0);
        });
        handle.run_upkeep();
        let text = handle.render();
        assert!(text.contains("RecordsProcessed 7"), "{text}");
        assert!(
            text.contains("UserRecordsPut{StreamName=\"orders\"} 5"),
            "{text}"
        );
        assert!(
            !text.contains("GetRecords_Success"),
            "detailed metric left out: {text}"
        );
        assert!(!text.contains("shardId"), "shard labels stripped: {text}");
        assert!(
            text.contains("RecordProcessor_processRecords_Time_count 1"),
            "{text}"
        );
    }
}
