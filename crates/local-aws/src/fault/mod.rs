//! A fault-injecting HTTP proxy for failure-path tests.
//!
//! [`FaultProxy`] sits between an AWS SDK client and any plain-http endpoint (the local
//! emulators, or anything else speaking the AWS protocols) and, per operation, injects faults
//! scripted by [`Rule`]s: throttling and other error answers in each protocol's wire shape,
//! latency, Kinesis `PutRecords` partial failures, truncated or garbled bodies, and real TCP
//! connection resets before or after the upstream applied the request.
//!
//! ```text
//!  SDK client ──HTTP/1.1──▶ FaultProxy ─────────────────────────▶ upstream
//!                             │ 1. count the request (Stats)       (pooled hyper client,
//!                             │ 2. first rule that fires, if any     Host header kept)
//!                             │ 3. apply its fault:
//!                             │    error answer ─ answered here, never forwarded
//!                             │    reset before ─ RST to the client, never forwarded
//!                             │    delay        ─ wait, then forward
//!                             │    reset after  ─ forward, await the answer, RST
//!                             │    partial      ─ drop failed entries, forward, splice
//!                             │    truncate / garble / delay_response ─ forward, then spoil
//!  SDK client ◀──────────────── response (streamed unless the fault rewrites it)
//! ```
//!
//! Requests without a firing rule are forwarded untouched, and bodies stream both ways, so
//! long-lived answers such as `SubscribeToShard`'s event stream pass through. The `Host`
//! header is forwarded as the client sent (and signed) it, so SigV4-checking upstreams such as
//! the local S3 accept proxied requests. Only faults that inspect or rewrite a message buffer
//! it. Both sides speak HTTP/1.1, which is what the SDK uses for `http://` endpoints.
//!
//! # Connection resets
//!
//! A reset must be a TCP RST, not a graceful close: that is what a crashed server or a load
//! balancer produces, and clients treat the two differently. hyper owns the client socket
//! while it serves the connection, so on accept the proxy keeps a second descriptor of the
//! same socket. To reset, the handler sets `SO_LINGER` to zero through it and tells the
//! connection task to drop the hyper connection: the last close of a socket with a zero
//! linger sends RST and discards unsent data. The SDK sees "connection reset by peer" (an
//! I/O dispatch failure) and retries, whether or not the upstream applied the request.
//!
//! # Rules
//!
//! Rules are consulted in insertion order; the first one that matches the request and decides
//! to fire applies, and later rules do not see that request. So "throttle twice, then one 500"
//! is two rules:
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use local_aws::fault::{Fault, FaultProxy, Rule};
//!
//! let proxy = FaultProxy::start("http://127.0.0.1:4567").await?;
//! proxy.inject(Rule::on("PutRecords").times(2).fault(Fault::throttle()));
//! proxy.inject(Rule::on("PutRecords").once().fault(Fault::internal_error()));
//! // Point a client allowing 4 attempts at `proxy.endpoint()`, run the code under test:
//! assert_eq!(proxy.count("PutRecords"), 4); // three faults, then the retry that succeeded
//! # Ok(())
//! # }
//! ```
//!
//! Every decision depends only on the order of requests (and a seed, for
//! [`RuleBuilder::with_probability`]), so a test sending the same requests sees the same
//! faults on every run.

mod faults;
mod proxy;
mod rules;
mod wire;

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use faults::{Fault, PartialFailure};
pub use rules::{Op, Rule, RuleBuilder, RuleId};

/// A fault-injecting HTTP/1.1 proxy on `127.0.0.1`; see the [module docs](self).
///
/// All methods take `&self` and are safe to call while requests are in flight, from any
/// thread. Dropping the proxy stops it: the listener closes and open connections are aborted.
pub struct FaultProxy {
    endpoint: String,
    upstream: String,
    shared: Arc<proxy::Shared>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on an ephemeral loopback port, forwarding to `upstream` (an `http://`
    /// URL without a path, e.g. `"http://127.0.0.1:4567"`). Must be called within a Tokio
    /// runtime, which then runs the proxy.
    ///
    /// # Errors
    /// If `upstream` is not such a URL, or the port cannot be bound.
    pub async fn start(upstream: &str) -> io::Result<FaultProxy> {
        let shared = Arc::new(proxy::Shared::new(upstream)?);
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let accept = tokio::spawn(proxy::accept_loop(listener, Arc::clone(&shared)));
        tracing::debug!(%endpoint, %upstream, "fault proxy started");
        Ok(FaultProxy {
            endpoint,
            upstream: upstream.trim_end_matches('/').to_owned(),
            shared,
            accept,
        })
    }

    /// The URL clients should use instead of the upstream's, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The upstream URL given to [`FaultProxy::start`].
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// Adds a rule after the existing ones; it applies from the next request on.
    pub fn inject(&self, rule: Rule) -> RuleId {
        self.shared.inject(rule)
    }

    /// Removes one rule; `false` if it was already gone.
    pub fn remove(&self, rule: RuleId) -> bool {
        self.shared.remove(rule)
    }

    /// How many times a rule has fired (0 once it is removed or cleared).
    pub fn fired(&self, rule: RuleId) -> u64 {
        self.shared.fired(rule)
    }

    /// Removes every rule: from the next request on, everything is forwarded untouched.
    /// The stats are kept (see [`FaultProxy::reset_stats`]).
    pub fn clear(&self) {
        self.shared.clear();
    }

    /// A snapshot of the requests seen and faults injected so far.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Requests seen for an operation, faulted or not: a JSON operation name
    /// (`"PutRecords"`) or, for S3, an HTTP method (`"PUT"`). One SDK call with two retries
    /// counts 3.
    pub fn count(&self, operation: &str) -> u64 {
        self.stats().requests(operation)
    }

    /// Zeroes the stats (the rules keep their own counters).
    pub fn reset_stats(&self) {
        self.shared.reset_stats();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // The accept task owns the connection tasks (a JoinSet): aborting it aborts them all.
        self.accept.abort();
    }
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultProxy")
            .field("endpoint", &self.endpoint)
            .field("upstream", &self.upstream)
            .finish_non_exhaustive()
    }
}

/// Requests seen and faults injected, per operation.
///
/// Operations are keyed by the JSON operation name from `X-Amz-Target` (`"PutRecords"`,
/// `"UpdateItem"`) or, for REST requests such as S3's, by HTTP method (`"PUT"`, `"GET"`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    requests: BTreeMap<String, u64>,
    faults: BTreeMap<String, u64>,
}

impl Stats {
    /// Requests seen for `operation`, faulted or not.
    pub fn requests(&self, operation: &str) -> u64 {
        self.requests.get(operation).copied().unwrap_or(0)
    }

    /// Faults injected into `operation`'s requests.
    pub fn faults(&self, operation: &str) -> u64 {
        self.faults.get(operation).copied().unwrap_or(0)
    }

    /// Requests seen, all operations together.
    pub fn total_requests(&self) -> u64 {
        self.requests.values().sum()
    }

    /// Faults injected, all operations together.
    pub fn total_faults(&self) -> u64 {
        self.faults.values().sum()
    }

    /// Requests seen per operation, in operation order.
    pub fn requests_by_operation(&self) -> impl Iterator<Item = (&str, u64)> {
        self.requests.iter().map(|(op, &n)| (op.as_str(), n))
    }
}
