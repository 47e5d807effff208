//! The operations endpoint on `HEALTH_ADDR` (`GET /health`, `GET /metrics`) and the client of
//! `s3-sink healthcheck`.
//!
//! ```text
//!  main ── HealthState::attach(worker.handle()) once the worker is built
//!              │
//!  GET /health ┴─► WorkerHandle::health() ─► is_healthy(&HealthPolicy) ─► 200 / 503
//!                  {"status":"running","healthy":true,"leases_held":2,
//!                   "since_last_renewal_ms":1200,…,"shards":[…],"problems":[]}
//!                  (before the worker exists: 503 {"status":"starting",…})
//!
//!  GET /metrics ─► MetricsPage::Prometheus: the recorder's text (METRICS=prometheus)
//!                  otherwise 404 saying where the metrics are (EMF on stdout, or off)
//!
//!  s3-sink healthcheck --url … ─► GET ─► exit 0 on 200, 1 otherwise (ECS container health
//!                                        check in an image without curl)
//! ```
//!
//! Healthy is [`WorkerHealth::is_healthy`] under the state's [`HealthPolicy`] (the default:
//! the worker runs or is shutting down, its lease renewals and lease-table scans were
//! answered within twice the failover time, no processor call has run and no started shard
//! has gone without progress for 5 minutes). A stalled worker answers 503 with the reasons
//! in `problems`, so the orchestrator replaces it and its leases move to the others.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kinesis_consumer::{HealthPolicy, ShardHealth, WorkerHandle, WorkerHealth};
use kinesis_metrics::prometheus::PrometheusHandle;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The Prometheus text exposition format.
const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What `GET /health` judges; cheap to clone, shared with the server.
#[derive(Debug, Clone, Default)]
pub struct HealthState {
    worker: Arc<OnceLock<WorkerHandle>>,
    policy: Arc<HealthPolicy>,
}

/// One answer of `GET /health`.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthReport {
    /// 200 when true, 503 otherwise.
    pub healthy: bool,
    /// The JSON body.
    pub body: Value,
}

impl HealthState {
    /// Judged by `policy` instead of [`HealthPolicy::default`].
    pub fn new(policy: HealthPolicy) -> HealthState {
        HealthState {
            worker: Arc::default(),
            policy: Arc::new(policy),
        }
    }

    /// Reports this worker from now on (until then: `starting`, 503). The first one wins.
    pub fn attach(&self, worker: WorkerHandle) {
        let _ = self.worker.set(worker);
    }

    /// The answer now.
    pub fn report(&self) -> HealthReport {
        let Some(worker) = self.worker.get() else {
            // Checking the bucket and loading the AWS configuration: no worker yet.
            return HealthReport {
                healthy: false,
                body: json!({
                    "status": "starting",
                    "healthy": false,
                    "leases_held": 0,
                    "problems": ["the worker is not running yet"],
                }),
            };
        };
        let health = worker.health();
        let problems: Vec<String> = health
            .problems(&self.policy)
            .iter()
            .map(ToString::to_string)
            .collect();
        let healthy = problems.is_empty();
        HealthReport {
            healthy,
            body: body(&health, healthy, problems),
        }
    }
}

fn millis(d: Option<Duration>) -> Value {
    d.map_or(Value::Null, |d| Value::from(d.as_millis() as u64))
}

/// The snapshot as JSON: durations in milliseconds (`null`: not known yet).
fn body(h: &WorkerHealth, healthy: bool, problems: Vec<String>) -> Value {
    let shards: Vec<Value> = h.shards.iter().map(shard).collect();
    json!({
        "status": h.status.as_str(),
        "healthy": healthy,
        "worker_id": h.worker_id,
        "leases_held": h.leases_held,
        "since_last_renewal_ms": millis(h.since_last_renewal),
        "since_last_lease_scan_ms": millis(h.since_last_lease_scan),
        "since_last_shard_sync_ms": millis(h.since_last_shard_sync),
        "failover_time_ms": h.failover_time.as_millis() as u64,
        "shards": shards,
        "problems": problems,
    })
}

fn shard(s: &ShardHealth) -> Value {
    json!({
        "shard_id": s.shard_id,
        "started": s.started,
        "processor_call": s.processor_call.map(|c| c.as_str()),
        "processor_call_running_for_ms": millis(s.processor_call_running_for),
        "since_progress_ms": millis(s.since_progress),
        "consecutive_failures": s.consecutive_failures,
        "millis_behind_latest": s.millis_behind_latest,
        "records_processed": s.records_processed,
    })
}

/// What `GET /metrics` answers.
#[derive(Clone)]
#[non_exhaustive]
pub enum MetricsPage {
    /// The text of this Prometheus recorder (`METRICS=prometheus`).
    Prometheus(PrometheusHandle),
    /// 404: the metrics go to stdout as CloudWatch EMF lines (`METRICS=emf`).
    Emf,
    /// 404: no metrics (`METRICS=none`).
    Off,
}

impl fmt::Debug for MetricsPage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MetricsPage::Prometheus(_) => "Prometheus",
            MetricsPage::Emf => "Emf",
            MetricsPage::Off => "Off",
        })
    }
}

#[derive(Debug, Clone)]
struct Endpoints {
    health: HealthState,
    metrics: MetricsPage,
}

async fn health(State(endpoints): State<Endpoints>) -> impl IntoResponse {
    let report = endpoints.health.report();
    let code = if report.healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        report.body.to_string(),
    )
}

async fn metrics(State(endpoints): State<Endpoints>) -> Response {
    let hint = match &endpoints.metrics {
        MetricsPage::Prometheus(handle) => {
            // The exporter folds histograms every few seconds; doing it here too means a
            // scrape never shows stale quantiles.
            handle.run_upkeep();
            return (
                [(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)],
                handle.render(),
            )
                .into_response();
        }
        MetricsPage::Emf => {
            "metrics are written to stdout in CloudWatch Embedded Metric Format (METRICS=emf); \
             set METRICS=prometheus to serve them here"
        }
        MetricsPage::Off => {
            "metrics are off (METRICS=none); set METRICS=prometheus to serve them here"
        }
    };
    let body = json!({"error": {"code": "not_found", "message": hint}});
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The routes: `GET /health` and `GET /metrics`.
pub fn router(health_state: HealthState, metrics_page: MetricsPage) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(Endpoints {
            health: health_state,
            metrics: metrics_page,
        })
}

/// Serves [`router`] on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    health_state: HealthState,
    metrics_page: MetricsPage,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(health_state, metrics_page))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Why [`check`] could not get an answer.
#[derive(Debug)]
#[non_exhaustive]
pub enum CheckError {
    /// Only `http://host:port/path` URLs are supported.
    BadUrl(String),
    /// Connecting, sending or reading failed.
    Io(std::io::Error),
    /// No answer within the timeout.
    TimedOut,
    /// The answer is not HTTP.
    BadResponse,
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::BadUrl(url) => {
                write!(f, "unsupported URL {url:?} (want http://host:port/path)")
            }
            CheckError::Io(e) => write!(f, "{e}"),
            CheckError::TimedOut => f.write_str("no answer in time"),
            CheckError::BadResponse => f.write_str("the answer is not HTTP"),
        }
    }
}

impl std::error::Error for CheckError {}

/// `GET url` (plain `http://`, as a health check inside the container needs): the status code
/// and the body. A few lines of HTTP/1.0 instead of an HTTP client stack.
pub async fn check(url: &str, timeout: Duration) -> Result<(u16, String), CheckError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| CheckError::BadUrl(url.to_owned()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(CheckError::BadUrl(url.to_owned()));
    }
    let exchange = async {
        let mut stream = TcpStream::connect(authority).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| CheckError::TimedOut)?
        .map_err(CheckError::Io)?;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .strip_prefix("HTTP/1.")
        .and_then(|s| s.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or(CheckError::BadResponse)?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}
