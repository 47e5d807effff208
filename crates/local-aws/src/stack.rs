//! Starting and stopping the three servers, and building SDK clients for them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_kinesis::config::BehaviorVersion;
use aws_sdk_kinesis::config::SharedHttpClient;
use aws_sdk_kinesis::config::{Credentials, Region, SharedCredentialsProvider};
use aws_smithy_http_client::tls;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The access key the in-process servers expect. s3s-fs verifies SigV4, so clients must sign
/// with exactly this pair; the other two servers accept any credentials.
pub const ACCESS_KEY_ID: &str = "local-aws";
/// The secret that goes with [`ACCESS_KEY_ID`].
pub const SECRET_ACCESS_KEY: &str = "local-aws-secret";
/// The region every local client uses.
pub const REGION: &str = "us-east-1";

/// Largest request body the local Kinesis accepts. A full PutRecords (5 MiB of data, base64 in
/// JSON) is about 7 MiB on the wire; axum's default limit of 2 MiB would reject valid requests
/// with 413 before ferrokinesis gets to validate them.
const KINESIS_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// Errors from starting the local stack.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A socket could not be bound, or a data directory could not be created.
    #[error("local-aws: {context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The DynamoDB emulator refused to open its database.
    #[error("local-aws: cannot open the DynamoDB database: {0}")]
    Dynamo(String),
    /// `LOCAL_AWS_BACKEND=external` was set but an endpoint variable is missing.
    #[error("local-aws: LOCAL_AWS_BACKEND=external needs {0} to be set")]
    MissingEndpoint(&'static str),
    /// `LOCAL_AWS_BACKEND` holds a value we do not know.
    #[error("local-aws: unknown LOCAL_AWS_BACKEND {0:?} (expected \"in-process\" or \"external\")")]
    UnknownBackend(String),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// Which servers a [`LocalAws`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// ferrokinesis, dynoxide and s3s-fs, started in this process (the default).
    InProcess,
    /// Servers started elsewhere (the npm emulators of `scripts/external-emulators.sh`), found
    /// through the `LOCAL_AWS_*_ENDPOINT` environment variables.
    External,
}

/// Options for [`LocalAws`]; every one has a default that suits tests.
#[derive(Debug, Clone)]
pub struct LocalAwsBuilder {
    persist_dir: Option<PathBuf>,
    enforce_shard_limits: bool,
    shard_limit: u32,
    iterator_ttl: Duration,
    iterator_ttl_set: bool,
    subscription_lifetime: Option<Duration>,
    stream_transition: Duration,
    ports: Ports,
    honour_env: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct Ports {
    kinesis: u16,
    dynamodb: u16,
    s3: u16,
}

impl Default for LocalAwsBuilder {
    fn default() -> Self {
        Self {
            persist_dir: None,
            enforce_shard_limits: false,
            // ferrokinesis caps open shards across all streams at 10 by default, which a test
            // suite running in parallel against one stack, or a split, hits at once.
            shard_limit: 10_000,
            iterator_ttl: Duration::from_secs(300),
            iterator_ttl_set: false,
            subscription_lifetime: None,
            stream_transition: Duration::from_millis(50),
            ports: Ports::default(),
            honour_env: true,
        }
    }
}

impl LocalAwsBuilder {
    /// Keep all state under `dir` (Kinesis WAL and snapshots, the DynamoDB SQLite file, S3
    /// objects) so that it survives a restart. Default: in memory, S3 in a temporary directory.
    pub fn persist_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.persist_dir = Some(dir.into());
        self
    }

    /// Make Kinesis enforce the per-shard write limits (1 MiB/s, 1000 records/s) and answer
    /// with real `ProvisionedThroughputExceededException` partial failures. Default: off.
    pub fn enforce_shard_limits(mut self, on: bool) -> Self {
        self.enforce_shard_limits = on;
        self
    }

    /// Maximum open shards across all streams. Default: 10 000.
    pub fn shard_limit(mut self, limit: u32) -> Self {
        self.shard_limit = limit;
        self
    }

    /// How long a shard iterator stays valid. Default: 300 s, as in AWS.
    pub fn iterator_ttl(mut self, ttl: Duration) -> Self {
        self.iterator_ttl = ttl;
        self.iterator_ttl_set = true;
        self
    }

    /// How long a `SubscribeToShard` subscription lasts before Kinesis ends it (the
    /// consumer must then renew it). Default: 5 minutes, as in AWS; shorter makes renewals
    /// testable.
    pub fn subscription_lifetime(mut self, lifetime: Duration) -> Self {
        self.subscription_lifetime = Some(lifetime);
        self
    }

    /// How long streams stay CREATING / DELETING / UPDATING. Default: 50 ms (AWS takes
    /// seconds; tests want the transition but not the wait).
    pub fn stream_transition(mut self, delay: Duration) -> Self {
        self.stream_transition = delay;
        self
    }

    /// Fixed ports instead of ephemeral ones (0 = ephemeral), for the `local-aws` binary.
    pub fn ports(mut self, kinesis: u16, dynamodb: u16, s3: u16) -> Self {
        self.ports = Ports {
            kinesis,
            dynamodb,
            s3,
        };
        self
    }

    /// Ignore `LOCAL_AWS_BACKEND` and always start the in-process servers.
    pub fn ignore_env(mut self) -> Self {
        self.honour_env = false;
        self
    }

    /// Start the stack: in process unless `LOCAL_AWS_BACKEND=external` says otherwise.
    ///
    /// Persistence, shard-limit enforcement, a chosen iterator TTL and a chosen subscription
    /// lifetime are properties of the
    /// in-process servers, so a builder that asks for any of them always starts them, whatever
    /// the environment says: a test that needs real throttling never silently runs without it.
    pub async fn start(self) -> Result<LocalAws, Error> {
        let needs_in_process = self.persist_dir.is_some()
            || self.enforce_shard_limits
            || self.iterator_ttl_set
            || self.subscription_lifetime.is_some();
        if self.honour_env && !needs_in_process {
            match std::env::var("LOCAL_AWS_BACKEND").ok().as_deref() {
                None | Some("") | Some("in-process") => {}
                Some("external") => return LocalAws::external_from_env(),
                Some(other) => return Err(Error::UnknownBackend(other.to_owned())),
            }
        }
        self.start_in_process().await
    }

    async fn start_in_process(self) -> Result<LocalAws, Error> {
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let mut tasks = Vec::new();

        // S3 always needs a directory; without persistence it lives only as long as the handle.
        let (s3_dir, temp) = match &self.persist_dir {
            Some(dir) => (dir.join("s3"), None),
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("local-aws-s3-")
                    .tempdir()
                    .map_err(io_err("creating a temporary S3 directory"))?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        std::fs::create_dir_all(&s3_dir)
            .map_err(io_err(format!("creating {}", s3_dir.display())))?;

        let kinesis = bind(self.ports.kinesis, "Kinesis").await?;
        let dynamodb = bind(self.ports.dynamodb, "DynamoDB").await?;
        let s3 = bind(self.ports.s3, "S3").await?;
        let endpoints = Endpoints {
            kinesis: endpoint_of(&kinesis)?,
            dynamodb: endpoint_of(&dynamodb)?,
            s3: endpoint_of(&s3)?,
        };

        tasks.push(spawn_kinesis(
            kinesis,
            self.kinesis_options()?,
            shutdown_rx.clone(),
        ));
        tasks.push(spawn_dynamodb(
            dynamodb,
            self.dynamo_database()?,
            shutdown_rx.clone(),
        ));
        tasks.push(spawn_s3(s3, &s3_dir, shutdown_rx)?);
        tracing::debug!(?endpoints, "local-aws started");

        Ok(LocalAws {
            backend: Backend::InProcess,
            endpoints,
            credentials: local_credentials(),
            tasks,
            shutdown: Some(shutdown_tx),
            _temp: temp,
        })
    }

    fn kinesis_options(&self) -> Result<ferrokinesis::store::StoreOptions, Error> {
        let millis = self.stream_transition.as_millis() as u64;
        let durable = match &self.persist_dir {
            Some(dir) => {
                let state_dir = dir.join("kinesis");
                std::fs::create_dir_all(&state_dir)
                    .map_err(io_err(format!("creating {}", state_dir.display())))?;
                Some(ferrokinesis::store::DurableStateOptions {
                    state_dir,
                    snapshot_interval_secs: 5,
                    max_retained_bytes: None,
                })
            }
            None => None,
        };
        Ok(ferrokinesis::store::StoreOptions {
            create_stream_ms: millis,
            delete_stream_ms: millis,
            update_stream_ms: millis,
            shard_limit: self.shard_limit,
            iterator_ttl_seconds: self.iterator_ttl.as_secs().max(1),
            subscribe_to_shard_session_ms: self
                .subscription_lifetime
                .map_or(300_000, |d| d.as_millis().max(1) as u64),
            enforce_limits: self.enforce_shard_limits,
            durable,
            aws_region: REGION.to_owned(),
            ..Default::default()
        })
    }

    fn dynamo_database(&self) -> Result<dynoxide::Database, Error> {
        let db = match &self.persist_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(io_err(format!("creating {}", dir.display())))?;
                let path = dir.join("dynamodb.sqlite");
                dynoxide::Database::new(&path.to_string_lossy())
            }
            None => dynoxide::Database::memory(),
        };
        db.map_err(|e| Error::Dynamo(e.to_string()))
    }
}

/// The endpoints of a running stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// Kinesis, e.g. `http://127.0.0.1:40123`.
    pub kinesis: String,
    /// DynamoDB.
    pub dynamodb: String,
    /// S3 (path-style addressing).
    pub s3: String,
}

/// A running local AWS stack. Dropping it stops the in-process servers.
///
/// ```no_run
/// # async fn demo() -> Result<(), local_aws::Error> {
/// let aws = local_aws::LocalAws::start().await?;
/// let kinesis = aws.kinesis_client();
/// kinesis.create_stream().stream_name("orders").shard_count(2).send().await.unwrap();
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct LocalAws {
    backend: Backend,
    endpoints: Endpoints,
    credentials: Credentials,
    tasks: Vec<JoinHandle<()>>,
    shutdown: Option<watch::Sender<bool>>,
    _temp: Option<tempfile::TempDir>,
}

impl LocalAws {
    /// Options for the stack.
    pub fn builder() -> LocalAwsBuilder {
        LocalAwsBuilder::default()
    }

    /// Start the stack with the defaults (or use the external servers, see [`Backend`]).
    pub async fn start() -> Result<LocalAws, Error> {
        Self::builder().start().await
    }

    fn external_from_env() -> Result<LocalAws, Error> {
        fn var(name: &'static str) -> Result<String, Error> {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or(Error::MissingEndpoint(name))
        }
        let endpoints = Endpoints {
            kinesis: var("LOCAL_AWS_KINESIS_ENDPOINT")?,
            dynamodb: var("LOCAL_AWS_DYNAMODB_ENDPOINT")?,
            s3: var("LOCAL_AWS_S3_ENDPOINT")?,
        };
        let key = std::env::var("LOCAL_AWS_ACCESS_KEY_ID").unwrap_or_else(|_| ACCESS_KEY_ID.into());
        let secret = std::env::var("LOCAL_AWS_SECRET_ACCESS_KEY")
            .unwrap_or_else(|_| SECRET_ACCESS_KEY.into());
        Ok(Self::connect(endpoints, key, secret))
    }

    /// A handle on servers that run elsewhere (another process's `local-aws`, the npm
    /// emulators): no server is started or stopped, the clients sign with the given key pair.
    pub fn connect(
        endpoints: Endpoints,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> LocalAws {
        LocalAws {
            backend: Backend::External,
            endpoints,
            credentials: Credentials::new(
                access_key_id.into(),
                secret_access_key.into(),
                None,
                None,
                "local-aws",
            ),
            tasks: Vec::new(),
            shutdown: None,
            _temp: None,
        }
    }

    /// Which servers this stack talks to.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// All three endpoints.
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// The Kinesis endpoint.
    pub fn kinesis_endpoint(&self) -> &str {
        &self.endpoints.kinesis
    }

    /// The DynamoDB endpoint.
    pub fn dynamodb_endpoint(&self) -> &str {
        &self.endpoints.dynamodb
    }

    /// The S3 endpoint.
    pub fn s3_endpoint(&self) -> &str {
        &self.endpoints.s3
    }

    /// The credentials the servers accept.
    pub fn credentials(&self) -> &Credentials {
        &self.credentials
    }

    /// A Kinesis client for this stack.
    pub fn kinesis_client(&self) -> aws_sdk_kinesis::Client {
        kinesis_client_with(&self.endpoints.kinesis, &self.credentials)
    }

    /// A DynamoDB client for this stack.
    pub fn dynamodb_client(&self) -> aws_sdk_dynamodb::Client {
        dynamodb_client_with(&self.endpoints.dynamodb, &self.credentials)
    }

    /// An S3 client for this stack (path-style addressing).
    pub fn s3_client(&self) -> aws_sdk_s3::Client {
        s3_client_with(&self.endpoints.s3, &self.credentials)
    }

    /// `export` lines for shells and other tools (the AWS CLI reads the credentials and region;
    /// our tools and `LocalAws` in `external` mode read the endpoints).
    pub fn export_lines(&self) -> String {
        let Endpoints {
            kinesis,
            dynamodb,
            s3,
        } = &self.endpoints;
        let key = self.credentials.access_key_id();
        let secret = self.credentials.secret_access_key();
        format!(
            "export LOCAL_AWS_BACKEND=external\n\
             export LOCAL_AWS_KINESIS_ENDPOINT={kinesis}\n\
             export LOCAL_AWS_DYNAMODB_ENDPOINT={dynamodb}\n\
             export LOCAL_AWS_S3_ENDPOINT={s3}\n\
             export LOCAL_AWS_ACCESS_KEY_ID={key}\n\
             export LOCAL_AWS_SECRET_ACCESS_KEY={secret}\n\
             export AWS_ACCESS_KEY_ID={key}\n\
             export AWS_SECRET_ACCESS_KEY={secret}\n\
             export AWS_REGION={REGION}\n\
             export AWS_ENDPOINT_URL_KINESIS={kinesis}\n\
             export AWS_ENDPOINT_URL_DYNAMODB={dynamodb}\n\
             export AWS_ENDPOINT_URL_S3={s3}\n"
        )
    }

    /// Stop the in-process servers now (dropping the handle does the same).
    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        for task in self.tasks.drain(..) {
            task.abort();
        }
    }
}

impl Drop for LocalAws {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn bind(port: u16, what: &str) -> Result<TcpListener, Error> {
    TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .map_err(io_err(format!("binding the {what} port 127.0.0.1:{port}")))
}

fn endpoint_of(listener: &TcpListener) -> Result<String, Error> {
    let addr = listener
        .local_addr()
        .map_err(io_err("reading a listener's address"))?;
    Ok(format!("http://{addr}"))
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    // Either the flag flips or the sender is dropped: both mean stop.
    let _ = rx.wait_for(|stop| *stop).await;
}

fn spawn_kinesis(
    listener: TcpListener,
    options: ferrokinesis::store::StoreOptions,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let (router, _store) = ferrokinesis::create_app(options);
    let router = router.layer(axum::extract::DefaultBodyLimit::max(KINESIS_BODY_LIMIT));
    tokio::spawn(async move {
        let serve = axum::serve(listener, router).with_graceful_shutdown(stopped(shutdown));
        if let Err(e) = serve.await {
            tracing::warn!(error = %e, "local Kinesis stopped with an error");
        }
    })
}

fn spawn_dynamodb(
    listener: TcpListener,
    db: dynoxide::Database,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = dynoxide::server::serve_with_shutdown(listener, db, stopped(shutdown)).await
        {
            tracing::warn!(error = %e, "local DynamoDB stopped with an error");
        }
    })
}

fn spawn_s3(
    listener: TcpListener,
    dir: &Path,
    shutdown: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, Error> {
    let fs = s3s_fs::FileSystem::new(dir).map_err(|e| Error::Io {
        context: format!("opening the S3 directory {}", dir.display()),
        source: std::io::Error::other(format!("{e:?}")),
    })?;
    let mut builder = s3s::service::S3ServiceBuilder::new(fs);
    builder.set_auth(s3s::auth::SimpleAuth::from_single(
        ACCESS_KEY_ID,
        SECRET_ACCESS_KEY,
    ));
    let service = builder.build();
    Ok(tokio::spawn(async move {
        let mut stop = std::pin::pin!(stopped(shutdown));
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let stream = tokio::select! {
                _ = &mut stop => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "local S3 accept failed");
                        continue;
                    }
                },
            };
            let service = service.clone();
            connections.spawn(async move {
                let builder = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(e) = builder.serve_connection(io, service).await {
                    tracing::debug!(error = %e, "local S3 connection ended with an error");
                }
            });
            // Reap finished connections so the set does not grow without bound.
            while connections.try_join_next().is_some() {}
        }
        connections.abort_all();
    }))
}

fn local_credentials() -> Credentials {
    Credentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY, None, None, "local-aws")
}

/// The HTTP client of a local SDK client: rustls with ring, no legacy stack.
///
/// A new one per SDK client, never a process-wide one: a pooled connection is driven by a task
/// on the runtime that opened it, and every `#[tokio::test]` has its own runtime. A client
/// shared across tests hands out connections whose runtime is gone ("runtime dropped the
/// dispatch task"). Applications should do the opposite: one client for the process.
fn http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// Everything a local client shares: region, credentials, the HTTP client, and a short
/// connect timeout so that a dead endpoint fails fast instead of hanging a test.
macro_rules! local_config {
    ($krate:ident, $endpoint:expr, $credentials:expr) => {
        $krate::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .credentials_provider(SharedCredentialsProvider::new($credentials.clone()))
            .http_client(http_client())
            .timeout_config(
                aws_sdk_kinesis::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(2))
                    .build(),
            )
            .endpoint_url($endpoint)
    };
}

/// A Kinesis client for any endpoint (a [`crate::FaultProxy`], an external emulator), signed
/// with the local credentials.
pub fn kinesis_client(endpoint: &str) -> aws_sdk_kinesis::Client {
    kinesis_client_with(endpoint, &local_credentials_for_env())
}

/// A DynamoDB client for any endpoint, signed with the local credentials.
pub fn dynamodb_client(endpoint: &str) -> aws_sdk_dynamodb::Client {
    dynamodb_client_with(endpoint, &local_credentials_for_env())
}

/// An S3 client for any endpoint (path-style), signed with the local credentials.
pub fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    s3_client_with(endpoint, &local_credentials_for_env())
}

/// The credentials the current backend expects: the external emulators may want their own.
fn local_credentials_for_env() -> Credentials {
    match (
        std::env::var("LOCAL_AWS_BACKEND").ok().as_deref(),
        std::env::var("LOCAL_AWS_ACCESS_KEY_ID"),
        std::env::var("LOCAL_AWS_SECRET_ACCESS_KEY"),
    ) {
        (Some("external"), Ok(key), Ok(secret)) => {
            Credentials::new(key, secret, None, None, "local-aws")
        }
        _ => local_credentials(),
    }
}

fn kinesis_client_with(endpoint: &str, credentials: &Credentials) -> aws_sdk_kinesis::Client {
    aws_sdk_kinesis::Client::from_conf(
        local_config!(aws_sdk_kinesis, endpoint, credentials).build(),
    )
}

fn dynamodb_client_with(endpoint: &str, credentials: &Credentials) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::from_conf(
        local_config!(aws_sdk_dynamodb, endpoint, credentials).build(),
    )
}

fn s3_client_with(endpoint: &str, credentials: &Credentials) -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        local_config!(aws_sdk_s3, endpoint, credentials)
            .force_path_style(true)
            .build(),
    )
}
