//! Writing one object to S3: `PutObject`, or a multipart upload above the part size; every
//! request retried by one backoff loop.
//!
//! ```text
//!  write_object(key, bytes)
//!    ├─ len ≤ part_size ─► PutObject
//!    └─ len > part_size ─► CreateMultipartUpload (CRC32 per part)
//!                          UploadPart 1..n (part_size each, the last one shorter)
//!                          CompleteMultipartUpload (each part's ETag and CRC32)
//!                          └─ any step fails for good ─► AbortMultipartUpload
//!  each request: attempt ─► transient? (5xx, 429, SlowDown, timeout, I/O) ─► backoff ─► attempt
//!                        └─ anything else, or `attempts` used ─► SinkError
//! ```
//!
//! The SDK's own retries are turned off for the sink's client (see
//! [`SinkConfig::new`](crate::SinkConfig::new)): this loop is the only one, so `attempts` is
//! exactly the number of requests sent for one operation.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;

use crate::{SinkConfig, SinkError};

/// S3's limits on multipart uploads.
pub(crate) const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
pub(crate) const MAX_PART_SIZE: usize = 5 * 1024 * 1024 * 1024;
const MAX_PARTS: usize = 10_000;

/// Whether an S3 error may pass on a retry: throttling, 5xx, timeouts, connection failures.
pub(crate) fn is_transient<E: ProvideErrorMetadata>(error: &SdkError<E, HttpResponse>) -> bool {
    match error {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        // Not a bad request or configuration the client refused to send.
        SdkError::DispatchFailure(e) => !e.is_user(),
        SdkError::ServiceError(e) => {
            let status = e.raw().status().as_u16();
            status >= 500
                || status == 429
                || matches!(
                    e.err().code(),
                    Some(
                        "SlowDown"
                            | "Throttling"
                            | "ThrottlingException"
                            | "RequestTimeout"
                            | "InternalError"
                            | "ServiceUnavailable"
                            | "RequestTimeTooSkewed"
                    )
                )
        }
        _ => false,
    }
}

impl SinkConfig {
    /// Runs `send` until it succeeds, fails for good, or used `self.attempts` attempts.
    pub(crate) async fn retry<T, E, Fut>(
        &self,
        operation: &'static str,
        key: &str,
        send: impl FnMut() -> Fut,
    ) -> Result<T, SinkError>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
    {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.attempts - 1)
            .with_jitter();
        let attempts = AtomicUsize::new(1);
        let result = send
            .retry(backoff)
            .when(is_transient)
            .notify(|e, delay| {
                attempts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    operation,
                    key,
                    ?delay,
                    error = %DisplayErrorContext(e),
                    "S3 request failed; retrying"
                );
            })
            .await;
        result.map_err(|e| self.error(operation, key, attempts.into_inner(), e))
    }

    fn error<E>(
        &self,
        operation: &'static str,
        key: &str,
        attempts: usize,
        e: SdkError<E, HttpResponse>,
    ) -> SinkError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let code = e.code().map(str::to_owned);
        let status = e.raw_response().map(|r| r.status().as_u16());
        let transient = is_transient(&e);
        let source = DisplayErrorContext(e).to_string().into();
        if code.as_deref() == Some("NoSuchBucket") {
            return SinkError::BucketNotFound {
                bucket: self.bucket.clone(),
            };
        }
        if transient {
            SinkError::RetriesExhausted {
                operation,
                bucket: self.bucket.clone(),
                key: key.to_owned(),
                attempts,
                source,
            }
        } else {
            SinkError::Rejected {
                operation,
                bucket: self.bucket.clone(),
                key: key.to_owned(),
                status,
                code,
                source,
            }
        }
    }

    /// Writes `body` as the object `key`: one `PutObject` up to the part size, a multipart
    /// upload above it (aborted if it fails). Every request is retried as the
    /// [crate docs](crate#errors) say. The sink writes each batch with this; it is public so
    /// that tools and tests can write objects exactly as the sink does.
    pub async fn write_object(&self, key: &str, body: Bytes) -> Result<(), SinkError> {
        if body.len() <= self.part_size {
            return self.put_object(key, body).await;
        }
        self.multipart(key, body).await
    }

    async fn put_object(&self, key: &str, body: Bytes) -> Result<(), SinkError> {
        self.retry("PutObject", key, || {
            self.s3
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .content_type(self.format.content_type())
                .set_content_encoding(self.compression.content_encoding().map(str::to_owned))
                .body(ByteStream::from(body.clone()))
                .send()
        })
        .await
        .map(|_| ())
    }

    async fn multipart(&self, key: &str, body: Bytes) -> Result<(), SinkError> {
        let created = self
            .retry("CreateMultipartUpload", key, || {
                self.s3
                    .create_multipart_upload()
                    .bucket(&self.bucket)
                    .key(key)
                    .content_type(self.format.content_type())
                    .set_content_encoding(self.compression.content_encoding().map(str::to_owned))
                    .checksum_algorithm(ChecksumAlgorithm::Crc32)
                    .send()
            })
            .await?;
        let Some(upload_id) = created.upload_id().map(str::to_owned) else {
            return Err(SinkError::Rejected {
                operation: "CreateMultipartUpload",
                bucket: self.bucket.clone(),
                key: key.to_owned(),
                status: None,
                code: None,
                source: "the answer has no upload id".into(),
            });
        };
        let result = self.upload_parts(key, &upload_id, &body).await;
        if result.is_err() {
            // Parts of an unfinished upload are stored (and billed) until aborted. If the
            // abort fails too, the bucket's lifecycle rule for incomplete uploads cleans up.
            let aborted = self
                .retry("AbortMultipartUpload", key, || {
                    self.s3
                        .abort_multipart_upload()
                        .bucket(&self.bucket)
                        .key(key)
                        .upload_id(&upload_id)
                        .send()
                })
                .await;
            if let Err(e) = aborted {
                tracing::warn!(key, upload_id, error = %e, "aborting the multipart upload failed");
            }
        }
        result
    }

    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        body: &Bytes,
    ) -> Result<(), SinkError> {
        // Within S3's 10 000 parts whatever the object's size.
        let part_size = self.part_size.max(body.len().div_ceil(MAX_PARTS));
        let mut parts = Vec::with_capacity(body.len().div_ceil(part_size));
        for (i, start) in (0..body.len()).step_by(part_size).enumerate() {
            let part_number = i as i32 + 1;
            let part = body.slice(start..(start + part_size).min(body.len()));
            let uploaded = self
                .retry("UploadPart", key, || {
                    self.s3
                        .upload_part()
                        .bucket(&self.bucket)
                        .key(key)
                        .upload_id(upload_id)
                        .part_number(part_number)
                        .checksum_algorithm(ChecksumAlgorithm::Crc32)
                        .body(ByteStream::from(part.clone()))
                        .send()
                })
                .await?;
            parts.push(
                CompletedPart::builder()
                    .part_number(part_number)
                    .set_e_tag(uploaded.e_tag().map(str::to_owned))
                    .set_checksum_crc32(uploaded.checksum_crc32().map(str::to_owned))
                    .build(),
            );
        }
        tracing::debug!(
            key,
            parts = parts.len(),
            bytes = body.len(),
            "parts uploaded"
        );
        let parts = CompletedMultipartUpload::builder()
            .set_parts(Some(parts))
            .build();
        self.retry("CompleteMultipartUpload", key, || {
            self.s3
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .multipart_upload(parts.clone())
                .send()
        })
        .await
        .map(|_| ())
    }
}
