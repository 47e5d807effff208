//! Faults: what happens to a request a rule fired on.

use std::time::Duration;

use http::StatusCode;

/// What the proxy does to a request a [`Rule`](super::Rule) fired on.
///
/// Error responses take the wire shape of the request's protocol (JSON `__type` for Kinesis
/// and DynamoDB, XML `<Error>` for S3), so the SDK parses and classifies them exactly as it
/// would real ones. Any fault can be preceded by a delay with [`Fault::with_delay`].
#[derive(Clone, Debug)]
pub struct Fault {
    pub(crate) action: Action,
    pub(crate) delay: Option<Duration>,
}

#[derive(Clone, Debug)]
pub(crate) enum Action {
    /// Forward unchanged (on its own with a delay: latency).
    Forward,
    /// Answer with an error, never forwarding.
    Respond(ErrorKind),
    /// Forward, then hold the answer.
    DelayResponse(Duration),
    PartialFailure(PartialFailure),
    ResetBeforeForwarding,
    ResetAfterForwarding,
    TruncateBody,
    GarbleBody,
}

/// An error answer, resolved to a concrete status, code and message per protocol when the
/// request arrives (a throttle is a JSON 400 for Kinesis but an XML 503 `SlowDown` for S3).
#[derive(Clone, Debug)]
pub(crate) enum ErrorKind {
    Throttle,
    Internal,
    Unavailable,
    Custom {
        status: StatusCode,
        code: String,
        message: String,
    },
}

impl Fault {
    fn new(action: Action) -> Fault {
        Fault {
            action,
            delay: None,
        }
    }

    /// The protocol's throttling error, which the SDK classifies as throttling and retries
    /// with backoff:
    /// - Kinesis: 400 `ProvisionedThroughputExceededException`;
    /// - DynamoDB: 400 `ProvisionedThroughputExceededException` (what provisioned tables
    ///   return; use [`Fault::error`] with `"ThrottlingException"` for the on-demand flavour);
    /// - S3: 503 `SlowDown`;
    /// - other JSON protocols: 400 `ThrottlingException`.
    pub fn throttle() -> Fault {
        Fault::new(Action::Respond(ErrorKind::Throttle))
    }

    /// A 500 with the protocol's internal error code (Kinesis `InternalFailure`, DynamoDB
    /// `InternalServerError`, S3 `InternalError`): a transient error the SDK retries.
    pub fn internal_error() -> Fault {
        Fault::new(Action::Respond(ErrorKind::Internal))
    }

    /// A 503 `ServiceUnavailable`: a transient error the SDK retries.
    pub fn service_unavailable() -> Fault {
        Fault::new(Action::Respond(ErrorKind::Unavailable))
    }

    /// S3's 503 `SlowDown` (the same as [`Fault::throttle`] on an S3 request).
    pub fn slow_down() -> Fault {
        Fault::error(503, "SlowDown", "Please reduce your request rate.")
    }

    /// Any error answer, in the request's protocol shape. For DynamoDB a bare `code` gets the
    /// service's `com.amazonaws.dynamodb.v20120810#` prefix, as the real service sends it.
    ///
    /// # Panics
    /// If `status` is not a valid HTTP status code (100..=999).
    pub fn error(status: u16, code: impl Into<String>, message: impl Into<String>) -> Fault {
        Fault::new(Action::Respond(ErrorKind::Custom {
            status: StatusCode::from_u16(status).expect("a valid HTTP status code"),
            code: code.into(),
            message: message.into(),
        }))
    }

    /// Latency: waits `delay`, then forwards the request unchanged.
    ///
    /// The request body is read before waiting, so if the client gives up (an operation or
    /// attempt timeout) and closes the connection during the wait, the proxy notices and the
    /// request is never forwarded: a timed-out attempt does not reach the upstream.
    pub fn delay(delay: Duration) -> Fault {
        Fault::new(Action::Forward).with_delay(delay)
    }

    /// Slow answer: forwards at once (so the upstream applies the request), then holds the
    /// response for `delay`. With a client timeout shorter than that, this models "applied, but
    /// the client timed out", the case that makes retries store duplicates.
    pub fn delay_response(delay: Duration) -> Fault {
        Fault::new(Action::DelayResponse(delay))
    }

    /// Resets the client's connection (a TCP RST, not a graceful close) without forwarding:
    /// the upstream never sees the request. The SDK gets an I/O error and retries.
    pub fn reset_before_forwarding() -> Fault {
        Fault::new(Action::ResetBeforeForwarding)
    }

    /// Forwards the request, waits for the upstream's complete answer, then resets the
    /// client's connection instead of answering: the request was applied, but the client
    /// cannot know. A retrying client applies it again (duplicate records, or a conditional
    /// write that fails against its own first attempt).
    pub fn reset_after_forwarding() -> Fault {
        Fault::new(Action::ResetAfterForwarding)
    }

    /// Kinesis `PutRecords` partial failure: see [`PartialFailure`]. On any other operation
    /// the request is forwarded unchanged.
    pub fn partial_failure(partial: PartialFailure) -> Fault {
        Fault::new(Action::PartialFailure(partial))
    }

    /// Forwards, then sends the response headers (with the original `Content-Length`) and
    /// only the first half of the body before closing the connection.
    pub fn truncate_body() -> Fault {
        Fault::new(Action::TruncateBody)
    }

    /// Forwards, then replaces the response body with bytes that are not valid JSON or XML
    /// (the status and headers are kept, `Content-Length` is corrected).
    pub fn garble_body() -> Fault {
        Fault::new(Action::GarbleBody)
    }

    /// Waits `delay` before acting (before the error answer, the reset, the forwarding...).
    /// Like [`Fault::delay`], the wait is abandoned if the client disconnects.
    pub fn with_delay(mut self, delay: Duration) -> Fault {
        self.delay = Some(delay);
        self
    }

    /// A short name for logs and stats, e.g. `"throttle"` or `"reset_after_forwarding"`.
    pub fn name(&self) -> &'static str {
        match &self.action {
            Action::Forward => "delay",
            Action::Respond(ErrorKind::Throttle) => "throttle",
            Action::Respond(ErrorKind::Internal) => "internal_error",
            Action::Respond(ErrorKind::Unavailable) => "service_unavailable",
            Action::Respond(ErrorKind::Custom { .. }) => "error",
            Action::DelayResponse(_) => "delay_response",
            Action::PartialFailure(_) => "partial_failure",
            Action::ResetBeforeForwarding => "reset_before_forwarding",
            Action::ResetAfterForwarding => "reset_after_forwarding",
            Action::TruncateBody => "truncate_body",
            Action::GarbleBody => "garble_body",
        }
    }
}

/// Which entries of a Kinesis `PutRecords` call fail, with which code, and how.
///
/// By default the failure is faithful to Kinesis: the proxy removes the failed entries from
/// the request before forwarding (so the upstream never stores them), then splices failure
/// entries (`ErrorCode`, `ErrorMessage`, no `SequenceNumber`/`ShardId`) into the response at
/// their original indexes and corrects `FailedRecordCount`. If every entry fails, nothing is
/// forwarded. Indexes beyond the request's record count are ignored.
///
/// ```
/// use local_aws::fault::{Fault, PartialFailure};
/// // Entries 0 and 3 fail with ProvisionedThroughputExceededException.
/// let fault = Fault::partial_failure(PartialFailure::indexes([0, 3]));
/// // Every other entry fails with InternalFailure.
/// let fault = Fault::partial_failure(PartialFailure::every(2).internal_failure());
/// ```
#[derive(Clone, Debug)]
pub struct PartialFailure {
    pub(crate) which: Which,
    pub(crate) code: FailureCode,
    pub(crate) stored_anyway: bool,
}

#[derive(Clone, Debug)]
pub(crate) enum Which {
    Indexes(Vec<usize>),
    Every(usize),
    All,
}

/// The `ErrorCode` of a failed `PutRecords` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FailureCode {
    Throughput,
    Internal,
}

impl PartialFailure {
    /// The entries at these (0-based) indexes fail.
    pub fn indexes(indexes: impl IntoIterator<Item = usize>) -> PartialFailure {
        PartialFailure::new(Which::Indexes(indexes.into_iter().collect()))
    }

    /// Every `n`th entry fails (indexes `n-1`, `2n-1`, ...); `every(1)` is all of them.
    ///
    /// # Panics
    /// If `n` is zero.
    pub fn every(n: usize) -> PartialFailure {
        assert!(n > 0, "PartialFailure::every(0)");
        PartialFailure::new(Which::Every(n))
    }

    /// Every entry fails (still an HTTP 200, with `FailedRecordCount` = the record count).
    pub fn all() -> PartialFailure {
        PartialFailure::new(Which::All)
    }

    fn new(which: Which) -> PartialFailure {
        PartialFailure {
            which,
            code: FailureCode::Throughput,
            stored_anyway: false,
        }
    }

    /// Failed entries carry `InternalFailure` instead of the default
    /// `ProvisionedThroughputExceededException`.
    pub fn internal_failure(mut self) -> PartialFailure {
        self.code = FailureCode::Internal;
        self
    }

    /// Forwards the request unchanged and rewrites only the response, so the "failed" records
    /// ARE stored. Real Kinesis does not do this for partial failures; use it to test that a
    /// consumer tolerates duplicates (a producer retrying such entries stores them twice).
    pub fn stored_anyway(mut self) -> PartialFailure {
        self.stored_anyway = true;
        self
    }

    /// For each of `count` entries, whether it fails.
    pub(crate) fn mask(&self, count: usize) -> Vec<bool> {
        match &self.which {
            Which::All => vec![true; count],
            Which::Every(n) => (0..count).map(|i| (i + 1) % n == 0).collect(),
            Which::Indexes(indexes) => {
                let mut mask = vec![false; count];
                for &i in indexes.iter().filter(|&&i| i < count) {
                    mask[i] = true;
                }
                mask
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        assert_eq!(PartialFailure::all().mask(2), [true, true]);
        assert_eq!(
            PartialFailure::every(2).mask(5),
            [false, true, false, true, false]
        );
        assert_eq!(
            PartialFailure::indexes([0, 3, 9]).mask(4),
            [true, false, false, true]
        );
    }
}
