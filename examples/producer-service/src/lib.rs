//! `producer-service`: an HTTP ingest service that embeds [`kinesis_producer`].
//!
//! # Data flow
//!
//! ```text
//!  POST /events ──► draining? stream gone? ──► 503
//!   │  parse JSON (one event, {"records":[…]} or […]) ──► 400 / 413
//!   ▼
//!  Producer::try_put per record ──► Full ──► 429 + Retry-After (the rest of the batch too)
//!   │                          └──► invalid key / too large ──► 400 for that record
//!   ▼
//!  watcher task (one per request): awaits every PutHandle, counts outcomes,
//!   │                              notices a deleted stream (then 503 until replaced)
//!   ├── ?wait=false / Prefer: respond-async ──► 202 at once
//!   └── default ──► 200 with shard, sequence and sub-sequence number per record
//!                   (or the worst failure's status, with a result per record)
//!
//!  SIGTERM ──► draining (health 503, POST 503) ──► stop accepting, finish open requests
//!                                              └─► Producer::close (flush, every record
//!                                                  gets its outcome) ──► summary
//! ```
//!
//! # Why `try_put` and not a waiting `put`
//!
//! When the producer's buffer is full, a request is answered 429 at once instead of waiting
//! for space. Waiting would move the queue into open sockets and request memory that the
//! producer's bounds do not count, and a client or load balancer cannot tell a slow answer
//! from overload; an immediate 429 with `Retry-After` tells it to back off. A bounded wait
//! (`timeout(put)`) would also be unsafe with the producer as it is: cancelling `put` while
//! it waits for byte permits leaks the record permit it already took.
//!
//! # Why a watcher task per request
//!
//! Outcomes are awaited in a spawned task, not in the request's future: a client that
//! disconnects (or does not wait) must not stop the service from counting and logging what
//! happened to its records, and the drain at shutdown waits for every watcher, so the final
//! summary accounts for every accepted record.
//!
//! The router is testable without a socket ([`App::router`]); [`serve`] adds the listener,
//! graceful shutdown and the drain.

#![warn(missing_docs)]

mod events;
pub mod healthcheck;
pub mod metrics;
mod reply;

use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kinesis_producer::{Producer, PutFailure, PutOutcome};
use serde_json::json;
use tokio::sync::{Notify, watch};

pub use metrics::{Export, Metrics};

/// Default [`AppBuilder::max_body_bytes`]: 5 MiB, the size of one full `PutRecords`.
pub const DEFAULT_MAX_BODY_BYTES: usize = 5 * 1024 * 1024;

/// Default [`AppBuilder::retry_after`].
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// What can go wrong outside a request: serving, installing metrics, the health check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The listener failed.
    #[error("serving HTTP: {0}")]
    Serve(#[source] std::io::Error),
    /// The metrics recorder could not be installed (another global recorder is, or a
    /// setting is invalid).
    #[error("installing the metrics recorder: {0}")]
    Metrics(String),
    /// The health check URL is not `http://host[:port]/path`.
    #[error("invalid health check URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: &'static str,
    },
    /// The health check could not connect, send or read, or timed out.
    #[error("health check: {0}")]
    Healthcheck(#[source] std::io::Error),
}

/// The service: a producer plus the HTTP-side state. Cheap to clone.
#[derive(Debug, Clone)]
pub struct App {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    producer: Producer,
    max_body_bytes: usize,
    retry_after: Duration,
    metrics: Option<Metrics>,
    draining: AtomicBool,
    stream_gone: AtomicBool,
    accepted: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    refused: AtomicU64,
    /// Requests whose records are not all finished (each holds a [`Watching`]).
    watching: AtomicUsize,
    idle: Notify,
}

/// Builds an [`App`].
#[derive(Debug)]
pub struct AppBuilder {
    producer: Producer,
    max_body_bytes: usize,
    retry_after: Duration,
    metrics: Option<Metrics>,
}

impl AppBuilder {
    /// Largest request body; larger ones get 413. Default: [`DEFAULT_MAX_BODY_BYTES`].
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// The `Retry-After` given with 429 and 503 answers, rounded up to whole seconds (at
    /// least 1). Default: [`DEFAULT_RETRY_AFTER`].
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = after;
        self
    }

    /// Serve `GET /metrics` from this exporter (without it, or when it is not Prometheus,
    /// `/metrics` answers 404 saying where the metrics are).
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The app.
    pub fn build(self) -> App {
        App {
            shared: Arc::new(Shared {
                producer: self.producer,
                max_body_bytes: self.max_body_bytes,
                retry_after: self.retry_after,
                metrics: self.metrics,
                draining: AtomicBool::new(false),
                stream_gone: AtomicBool::new(false),
                accepted: AtomicU64::new(0),
                delivered: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                watching: AtomicUsize::new(0),
                idle: Notify::new(),
            }),
        }
    }
}

/// Counters since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Records handed to the producer.
    pub accepted: u64,
    /// Accepted records now in the stream.
    pub delivered: u64,
    /// Accepted records that failed (expired, rejected, stream deleted...).
    pub failed: u64,
    /// Records refused before reaching the producer's buffer (invalid, buffer full, closed).
    pub refused: u64,
}

impl Stats {
    /// Accepted records without an outcome yet.
    pub fn unfinished(&self) -> u64 {
        self.accepted
            .saturating_sub(self.delivered)
            .saturating_sub(self.failed)
    }
}

/// How a [`serve`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainSummary {
    /// The counters at the end.
    pub stats: Stats,
    /// Whether everything finished within the drain timeout. If not, `stats.unfinished()`
    /// records may or may not be in the stream.
    pub complete: bool,
    /// From the shutdown signal to the end of the drain.
    pub drain_time: Duration,
}

impl App {
    /// Starts building the service around a producer.
    pub fn builder(producer: Producer) -> AppBuilder {
        AppBuilder {
            producer,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            retry_after: DEFAULT_RETRY_AFTER,
            metrics: None,
        }
    }

    /// The routes: `POST /events`, `GET /health`, `GET /metrics`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/events", post(events::post_events))
            .route("/health", get(health))
            .route("/metrics", get(render_metrics))
            .layer(DefaultBodyLimit::max(self.shared.max_body_bytes))
            .with_state(self.clone())
    }

    /// The producer.
    pub fn producer(&self) -> &Producer {
        &self.shared.producer
    }

    /// From now on `/health` answers 503 and `POST /events` 503 `draining`. [`serve`] calls
    /// it first thing at shutdown; idempotent.
    pub fn start_draining(&self) {
        if !self.shared.draining.swap(true, Ordering::AcqRel) {
            tracing::info!("draining: refusing new events");
        }
    }

    /// Whether [`start_draining`](Self::start_draining) was called.
    pub fn is_draining(&self) -> bool {
        self.shared.draining.load(Ordering::Acquire)
    }

    /// Whether a put failed because the stream does not exist (the service then refuses
    /// events and reports unhealthy: only a new task with a working stream can help).
    pub fn is_stream_gone(&self) -> bool {
        self.shared.stream_gone.load(Ordering::Acquire)
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        let s = &self.shared;
        // Outcomes first: an outcome is counted after its acceptance, so reading them first
        // never shows more finished records than accepted ones.
        let delivered = s.delivered.load(Ordering::Acquire);
        let failed = s.failed.load(Ordering::Acquire);
        Stats {
            accepted: s.accepted.load(Ordering::Acquire),
            delivered,
            failed,
            refused: s.refused.load(Ordering::Acquire),
        }
    }

    /// Closes the producer (every accepted record gets its outcome) and waits until every
    /// request's watcher has counted them.
    pub async fn drain(&self) {
        self.start_draining();
        self.shared.producer.close().await;
        self.watchers_idle().await;
    }

    async fn watchers_idle(&self) {
        loop {
            // Registered before the check, so a wake-up between the two is not missed.
            let idle = self.shared.idle.notified();
            if self.shared.watching.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }

    fn watching(&self) -> Watching {
        self.shared.watching.fetch_add(1, Ordering::AcqRel);
        Watching(self.clone())
    }

    fn retry_after_secs(&self) -> u64 {
        let d = self.shared.retry_after;
        (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
    }

    /// Counts one outcome; returns whether it was a failure.
    fn count_outcome(&self, outcome: &Result<PutOutcome, PutFailure>) -> bool {
        match outcome {
            Ok(_) => {
                self.shared.delivered.fetch_add(1, Ordering::AcqRel);
                false
            }
            Err(failure) => {
                self.shared.failed.fetch_add(1, Ordering::AcqRel);
                if matches!(failure, PutFailure::StreamNotFound { .. })
                    && !self.shared.stream_gone.swap(true, Ordering::AcqRel)
                {
                    tracing::error!(
                        "the stream does not exist: refusing events and reporting unhealthy"
                    );
                }
                true
            }
        }
    }
}

/// Held while a request's records are unfinished; [`App::drain`] waits for none to be left.
#[derive(Debug)]
struct Watching(App);

impl Drop for Watching {
    fn drop(&mut self) {
        if self.0.shared.watching.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.shared.idle.notify_waiters();
        }
    }
}

async fn health(State(app): State<App>) -> Response {
    let (status, state) = if app.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else if app.is_stream_gone() {
        (StatusCode::SERVICE_UNAVAILABLE, "stream_not_found")
    } else {
        (StatusCode::OK, "running")
    };
    let body = json!({
        "status": state,
        "outstanding_records": app.shared.producer.outstanding_records(),
    });
    (status, axum::Json(body)).into_response()
}

async fn render_metrics(State(app): State<App>) -> Response {
    let Some(m) = &app.shared.metrics else {
        return reply::whole_error(
            &app,
            reply::ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "metrics are not enabled",
            ),
        );
    };
    match m.render() {
        Some(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        // EMF or none: say where the metrics are instead of an empty page.
        None => reply::whole_error(
            &app,
            reply::ApiError::new(StatusCode::NOT_FOUND, "not_found", m.not_served()),
        ),
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains:
///
/// 1. [`App::start_draining`]: `/health` and `POST /events` answer 503;
/// 2. the listener closes, open requests finish (those waiting for outcomes get them), and
///    at the same time the producer is closed: buffered records go at once, every accepted
///    record gets its outcome;
/// 3. every request's watcher has counted its outcomes.
///
/// All of it within `drain_timeout`; past it, the summary says what was left unfinished.
///
/// # Errors
/// [`Error::Serve`] if the listener fails before `shutdown` (the producer is closed then
/// too).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain_timeout: Duration,
) -> Result<DrainSummary, Error> {
    let (stop, mut stopped) = watch::channel(false);
    let server = axum::serve(listener, app.router())
        .with_graceful_shutdown(async move {
            let _ = stopped.wait_for(|s| *s).await;
        })
        .into_future();
    let mut server = tokio::spawn(server);
    tokio::select! {
        ended = &mut server => {
            // The accept loop only ends on its own if something is badly wrong.
            app.drain().await;
            let err = match ended {
                Ok(Err(e)) => e,
                Ok(Ok(())) => std::io::Error::other("the server stopped"),
                Err(e) => std::io::Error::other(e),
            };
            return Err(Error::Serve(err));
        }
        () = shutdown => {}
    }
    let started = Instant::now();
    app.start_draining();
    let _ = stop.send(true);
    let drained = tokio::time::timeout(drain_timeout, async {
        let (ended, ()) = tokio::join!(&mut server, app.shared.producer.close());
        app.watchers_idle().await;
        ended
    })
    .await;
    let complete = match drained {
        Ok(Ok(Ok(()))) => true,
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = %e, "the server ended with an error while draining");
            true
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "the server task failed while draining");
            true
        }
        Err(_) => {
            server.abort();
            false
        }
    };
    Ok(DrainSummary {
        stats: app.stats(),
        complete,
        drain_time: started.elapsed(),
    })
}
