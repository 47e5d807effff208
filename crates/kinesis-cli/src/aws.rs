//! Configuration, clients, and turning SDK errors into messages that say how to fix them.
//!
//! ```text
//!  --profile / --region / --local ──► aws_config::defaults(latest)   (env, ~/.aws, IMDS...)
//!                                     + one rustls/ring HTTP client  (no legacy TLS stack)
//!                                        │ SdkConfig
//!  --endpoint-url / LOCAL_AWS_* ──────►  ├─► Kinesis client   (AWS_ENDPOINT_URL_KINESIS is
//!                                        │                     read by the SDK itself)
//!  LOCAL_AWS_DYNAMODB_ENDPOINT (--local) ─►└─► DynamoDB client  (`kin leases`, `kin lag`;
//!                                                             AWS_ENDPOINT_URL_DYNAMODB is
//!                                                             read by the SDK itself)
//! ```
//!
//! Every SDK error goes through [`Aws::error`], which knows the endpoint and region in use
//! and so can say "cannot reach http://127.0.0.1:4567" or "stream x not found in eu-west-1".

use std::fmt::Debug;

use aws_config::BehaviorVersion;
use aws_sdk_kinesis::config::{Credentials, Region};
use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_smithy_http_client::tls;

use crate::cli::GlobalArgs;
use crate::error::{CliError, Kind, Result};

/// What the commands talk to.
#[derive(Debug, Clone)]
pub struct Aws {
    pub kinesis: aws_sdk_kinesis::Client,
    /// The region in use, for messages.
    pub region: String,
    /// The Kinesis endpoint in use, for messages.
    pub kinesis_endpoint: String,
    /// The lease tables (`kin leases`, `kin lag`): the same configuration; `--endpoint-url`
    /// is for Kinesis only, `--local` uses LOCAL_AWS_DYNAMODB_ENDPOINT.
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// The DynamoDB endpoint in use, for messages.
    pub dynamodb_endpoint: String,
}

const LOCAL_HINT: &str =
    "start the stack with `kin local > local.env &`, then `. ./local.env` and use --local";

impl Aws {
    /// Loads the configuration the way the AWS CLI does, with the global options on top.
    pub async fn connect(global: &GlobalArgs) -> Result<Aws> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(
            aws_smithy_http_client::Builder::new()
                .tls_provider(tls::Provider::Rustls(
                    tls::rustls_provider::CryptoMode::Ring,
                ))
                .build_https(),
        );
        if let Some(profile) = &global.profile {
            loader = loader.profile_name(profile);
        }
        let mut endpoint = global.endpoint_url.clone();
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let mut dynamodb_endpoint = None;
        if global.local {
            dynamodb_endpoint = var("LOCAL_AWS_DYNAMODB_ENDPOINT");
            let Some(local_endpoint) = var("LOCAL_AWS_KINESIS_ENDPOINT") else {
                return Err(CliError::usage(
                    "--local needs LOCAL_AWS_KINESIS_ENDPOINT, which `kin local` prints",
                )
                .with_hint(LOCAL_HINT));
            };
            endpoint.get_or_insert(local_endpoint);
            let key =
                var("LOCAL_AWS_ACCESS_KEY_ID").unwrap_or_else(|| local_aws::ACCESS_KEY_ID.into());
            let secret = var("LOCAL_AWS_SECRET_ACCESS_KEY")
                .unwrap_or_else(|| local_aws::SECRET_ACCESS_KEY.into());
            loader = loader.credentials_provider(Credentials::new(
                key,
                secret,
                None,
                None,
                "kin --local",
            ));
            if global.region.is_none() {
                loader = loader.region(Region::new(local_aws::REGION));
            }
        }
        if let Some(region) = &global.region {
            loader = loader.region(Region::new(region.clone()));
        }
        let sdk = loader.load().await;
        let Some(region) = sdk.region().map(|r| r.to_string()) else {
            return Err(CliError::new(Kind::Access, "no AWS region configured").with_hint(
                "pass --region, set AWS_REGION, or set `region` in ~/.aws/config (`aws configure`)",
            ));
        };

        let mut kinesis = aws_sdk_kinesis::config::Builder::from(&sdk);
        if let Some(url) = &endpoint {
            kinesis = kinesis.endpoint_url(url);
        }
        let kinesis_endpoint = endpoint
            .or_else(|| std::env::var("AWS_ENDPOINT_URL_KINESIS").ok())
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| format!("https://kinesis.{region}.amazonaws.com"));

        let mut dynamodb = aws_sdk_dynamodb::config::Builder::from(&sdk);
        if let Some(url) = &dynamodb_endpoint {
            dynamodb = dynamodb.endpoint_url(url);
        }
        let dynamodb_endpoint = dynamodb_endpoint
            .or_else(|| var("AWS_ENDPOINT_URL_DYNAMODB"))
            .or_else(|| var("AWS_ENDPOINT_URL"))
            .unwrap_or_else(|| format!("https://dynamodb.{region}.amazonaws.com"));
        Ok(Aws {
            kinesis: aws_sdk_kinesis::Client::from_conf(kinesis.build()),
            region,
            kinesis_endpoint,
            dynamodb: aws_sdk_dynamodb::Client::from_conf(dynamodb.build()),
            dynamodb_endpoint,
        })
    }

    /// An SDK error as a message with its fix. `action` is the API call
    /// (`kinesis:ListShards`), `stream` the stream it was about, if any.
    pub fn error<E, R>(&self, err: SdkError<E, R>, action: &str, stream: Option<&str>) -> CliError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: Debug + 'static,
    {
        let detail = DisplayErrorContext(&err).to_string();
        match &err {
            SdkError::ServiceError(_) | SdkError::ResponseError(_) => {
                let code = err.code().unwrap_or("Unknown").to_owned();
                let message = err.message().unwrap_or("").to_owned();
                self.service_error(&code, &message, action, stream)
            }
            _ if is_missing_credentials(&detail) => missing_credentials(),
            SdkError::DispatchFailure(failure) if failure.is_timeout() => {
                CliError::failed(format!("timed out connecting to {}", self.kinesis_endpoint))
                    .with_hint(self.reach_hint())
            }
            SdkError::DispatchFailure(failure) if failure.is_io() => CliError::failed(format!(
                "cannot reach {}: {}",
                self.kinesis_endpoint,
                root_cause(&err)
            ))
            .with_hint(self.reach_hint()),
            SdkError::TimeoutError(_) => CliError::failed(format!(
                "{action}: no answer from {} in time",
                self.kinesis_endpoint
            ))
            .with_hint(self.reach_hint()),
            _ => CliError::failed(format!("{action} failed: {detail}")),
        }
    }

    /// An error code and message from Kinesis, as a message with its fix. Also used for
    /// errors the producer reports as strings.
    pub fn service_error(
        &self,
        code: &str,
        message: &str,
        action: &str,
        stream: Option<&str>,
    ) -> CliError {
        let code = code.trim_end_matches("Exception");
        match (code, stream) {
            ("ResourceNotFound", Some(stream)) => self.stream_not_found(stream),
            ("AccessDenied", _) => CliError::new(
                Kind::Access,
                format!("access denied to {action}{}: {message}", on_stream(stream)),
            )
            .with_hint(format!(
                "the identity in use needs permission for {action} (IAM policy), or pick another --profile"
            )),
            (
                "UnrecognizedClient" | "InvalidSignature" | "ExpiredToken" | "InvalidClientTokenId"
                | "IncompleteSignature" | "SignatureDoesNotMatch",
                _,
            ) => CliError::new(
                Kind::Access,
                format!("AWS refused the credentials ({code}): {message}"),
            )
            .with_hint(
                "refresh them (`aws sso login`, `aws configure`), or pick another --profile; for the local stack use --local",
            ),
            ("ResourceInUse", Some(stream)) => CliError::failed(format!(
                "stream {stream} is busy or already exists: {message}"
            ))
            .with_hint(format!("`kin stream describe {stream}` shows its status")),
            ("LimitExceeded", _) => CliError::failed(format!("{action}: limit exceeded: {message}"))
                .with_hint("ask for a quota increase, or retry later (resharding is limited per day and per stream)"),
            _ => CliError::failed(format!("{action} failed: {code}: {message}")),
        }
    }

    pub fn stream_not_found(&self, stream: &str) -> CliError {
        CliError::new(
            Kind::NotFound,
            format!("stream {stream} not found in {}", self.region),
        )
        .with_hint("`kin stream list` shows the streams; check --region and --profile")
    }

    fn reach_hint(&self) -> String {
        format!(
            "check --endpoint-url, --region and the network; for the local stack, is `kin local` running? ({LOCAL_HINT})"
        )
    }
}

fn on_stream(stream: Option<&str>) -> String {
    stream
        .map(|s| format!(" on stream {s}"))
        .unwrap_or_default()
}

pub fn missing_credentials() -> CliError {
    CliError::new(Kind::Access, "no AWS credentials found")
        .with_hint("set AWS_PROFILE or run `aws configure`; for the local stack use --local")
}

fn is_missing_credentials(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    d.contains("credentials")
        && (d.contains("no credentials")
            || d.contains("not loaded")
            || d.contains("credentialsnotloaded")
            || d.contains("failed to load")
            || d.contains("provider was not enabled"))
}

/// The innermost cause of a connection failure ("Connection refused (os error 111)").
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut e = err;
    while let Some(source) = e.source() {
        e = source;
    }
    e.to_string()
}
