//! Errors as HTTP answers: one status and one stable `code` per way a record or a request
//! can fail, rendered as `{"error": {"code": ..., "message": ...}}`.
//!
//! Messages never contain record data: they come from the producer's typed errors, which
//! name sizes and limits, and from the JSON parser, which names positions.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kinesis_producer::{PutError, PutFailure};
use serde_json::{Value, json};

use crate::App;

/// Why a request or one of its records was not (fully) successful.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    /// The producer refused the record at once.
    pub fn from_put(err: &PutError) -> Self {
        let message = err.to_string();
        match err {
            PutError::InvalidPartitionKey { .. } => {
                Self::bad_request("invalid_partition_key", message)
            }
            PutError::InvalidExplicitHashKey { .. } => {
                Self::bad_request("invalid_explicit_hash_key", message)
            }
            PutError::RecordTooLarge { .. } => Self::bad_request("record_too_large", message),
            PutError::Full { .. } => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "buffer_full", message)
            }
            PutError::Closed { .. } => Self::unavailable("producer_closed", message),
            _ => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "put_failed", message),
        }
    }

    /// The record was accepted and then failed.
    pub fn from_failure(failure: &PutFailure) -> Self {
        let message = failure.to_string();
        match failure {
            // Kinesis did not take it within the record TTL (throttling, outage).
            PutFailure::Expired { .. } => {
                Self::new(StatusCode::GATEWAY_TIMEOUT, "expired", message)
            }
            PutFailure::StreamNotFound { .. } => Self::unavailable("stream_not_found", message),
            // Access denied, KMS key disabled...: Kinesis said no for good.
            PutFailure::Rejected { .. } => Self::new(StatusCode::BAD_GATEWAY, "rejected", message),
            PutFailure::Closed { .. } => Self::unavailable("producer_closed", message),
            PutFailure::Lost => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "outcome_unknown",
                message,
            ),
            _ => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "failed", message),
        }
    }

    /// Which error decides a batch's status, the highest first: what the client must fix
    /// (400), then "go elsewhere" (503), then "slow down" (429), then upstream failures.
    pub fn rank(&self) -> u8 {
        match self.status {
            StatusCode::BAD_REQUEST => 6,
            StatusCode::SERVICE_UNAVAILABLE => 5,
            StatusCode::TOO_MANY_REQUESTS => 4,
            StatusCode::GATEWAY_TIMEOUT => 3,
            StatusCode::BAD_GATEWAY => 2,
            _ => 1,
        }
    }

    pub fn to_json(&self) -> Value {
        json!({ "code": self.code, "message": self.message })
    }
}

/// An answer with a JSON body; 429 and 503 carry `Retry-After`.
pub(crate) fn respond(app: &App, status: StatusCode, body: Value) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(app.retry_after_secs()),
        );
    }
    response
}

/// A whole request refused: `{"error": {...}}`.
pub(crate) fn whole_error(app: &App, err: ApiError) -> Response {
    respond(app, err.status, json!({ "error": err.to_json() }))
}
