//! The proxy's moving parts: the accept loop, one HTTP/1.1 server connection per client
//! connection (with a handle that can reset it), the request handler and the upstream client.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::Stats;
use super::faults::{Action, FailureCode, Fault, PartialFailure};
use super::rules::{ActiveRule, Rule, RuleId};
use super::wire::{self, RequestInfo};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Bodies in both directions: streamed from the other side, or built by a fault.
pub(crate) type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// State shared by the proxy handle, the accept loop and every connection.
pub(crate) struct Shared {
    scheme: Scheme,
    authority: Authority,
    client: Client<HttpConnector, ProxyBody>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    rules: Vec<ActiveRule>,
    next_rule: u64,
    requests: u64,
    stats: Stats,
}

impl Shared {
    pub(crate) fn new(upstream: &str) -> io::Result<Shared> {
        let invalid = |why: &str| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("upstream {upstream:?}: {why}"),
            )
        };
        let uri: Uri = upstream.parse().map_err(|_| invalid("not a URI"))?;
        if uri.scheme() != Some(&Scheme::HTTP) {
            // No TLS client here: the proxy is for loopback emulators and plain-http endpoints.
            return Err(invalid("only http:// upstreams are supported"));
        }
        if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
            return Err(invalid("must not have a path"));
        }
        let authority = uri.authority().cloned().ok_or_else(|| invalid("no host"))?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Shared {
            scheme: Scheme::HTTP,
            authority,
            client,
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not turn every later request into a second panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn inject(&self, rule: Rule) -> RuleId {
        let mut state = self.lock();
        let id = RuleId(state.next_rule);
        state.next_rule += 1;
        state.rules.push(ActiveRule::new(id, rule));
        id
    }

    pub(crate) fn remove(&self, id: RuleId) -> bool {
        let mut state = self.lock();
        let before = state.rules.len();
        state.rules.retain(|r| r.id != id);
        state.rules.len() != before
    }

    pub(crate) fn fired(&self, id: RuleId) -> u64 {
        self.lock()
            .rules
            .iter()
            .find(|r| r.id == id)
            .map_or(0, |r| r.fired)
    }

    pub(crate) fn clear(&self) {
        self.lock().rules.clear();
    }

    pub(crate) fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }

    pub(crate) fn reset_stats(&self) {
        self.lock().stats = Stats::default();
    }

    /// Counts the request and picks the fault, if any: the first rule, in insertion order,
    /// that matches and decides to fire. Rules after it are not consulted, so they do not
    /// count this request towards their own selectors.
    fn decide(&self, req: &RequestInfo) -> (Option<Fault>, String) {
        let mut state = self.lock();
        let State {
            rules,
            requests,
            stats,
            ..
        } = &mut *state;
        *requests += 1;
        let request_id = format!("faultproxy-{requests:010}");
        let label = req.label();
        *stats.requests.entry(label.clone()).or_default() += 1;
        let fault = rules
            .iter_mut()
            .find_map(|rule| rule.consult(req).then(|| rule.rule.fault.clone()));
        if fault.is_some() {
            *stats.faults.entry(label).or_default() += 1;
        }
        (fault, request_id)
    }
}

/// Accepts client connections until the proxy is dropped (which aborts this task; dropping
/// `connections` then aborts every connection task).
pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                // Reap finished connections so the set does not grow with every connection.
                while connections.try_join_next().is_some() {}
                connections.spawn(serve_connection(stream, Arc::clone(&shared)));
            }
            Err(error) => {
                // Typically EMFILE: back off instead of spinning on the error.
                tracing::warn!(%error, "fault proxy: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Lets a request handler reset its own connection.
///
/// hyper owns the client's `TcpStream` while it serves the connection, so we keep a second
/// descriptor of the same socket (a `dup`). Resetting sets `SO_LINGER` to zero through it
/// (a socket option, shared by both descriptors) and asks the connection task to drop the
/// hyper connection. When the last descriptor closes with a zero linger, the kernel sends
/// RST instead of FIN and discards anything unsent: the client sees "connection reset by
/// peer", exactly as when a server or load balancer dies mid-request.
struct ConnControl {
    socket: TcpSocket,
    reset: Notify,
}

impl ConnControl {
    /// Resets the connection. Never completes: the connection task drops the caller.
    async fn reset(&self) -> Infallible {
        if let Err(error) = self.socket.set_zero_linger() {
            tracing::warn!(%error, "fault proxy: cannot set SO_LINGER 0, the close will be graceful");
        }
        // `notify_one` keeps a permit if the connection task is not waiting yet.
        self.reset.notify_one();
        std::future::pending().await
    }
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let (stream, control) = match with_reset_handle(stream) {
        Ok(pair) => pair,
        Err(error) => {
            tracing::warn!(%error, "fault proxy: cannot duplicate the client socket");
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    let control = Arc::new(control);
    let service = {
        let control = Arc::clone(&control);
        service_fn(move |req| handle(Arc::clone(&shared), Arc::clone(&control), req))
    };
    let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        result = connection => {
            if let Err(error) = result {
                tracing::debug!(%error, "fault proxy: client connection ended with an error");
            }
        }
        // Returning drops the hyper connection, its stream and the in-flight handler (which
        // holds the other reference to `control`): with linger 0 that close is the RST.
        () = control.reset.notified() => {}
    }
}

/// Splits a stream into the stream hyper will own and a second descriptor of the same socket.
fn with_reset_handle(stream: TcpStream) -> io::Result<(TcpStream, ConnControl)> {
    let std_stream = stream.into_std()?;
    let duplicate = std_stream.try_clone()?;
    let stream = TcpStream::from_std(std_stream)?;
    Ok((
        stream,
        ConnControl {
            socket: TcpSocket::from_std_stream(duplicate),
            reset: Notify::new(),
        },
    ))
}

async fn handle(
    shared: Arc<Shared>,
    control: Arc<ConnControl>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let info = RequestInfo::of(&req);
    let (fault, request_id) = shared.decide(&info);
    let req = req.map(|body| body.map_err(BoxError::from).boxed_unsync());
    let Some(fault) = fault else {
        return Ok(shared.forward(req).await);
    };
    tracing::debug!(
        operation = %info.label(),
        fault = fault.name(),
        "fault proxy: injecting"
    );
    let req = match fault.delay {
        None => req,
        Some(delay) => {
            // Read the body before waiting: hyper notices a client that hangs up only once
            // the request body has been read, and then drops this future. So a client that
            // times out during the delay never has its request forwarded late.
            let Ok(req) = buffer_request(req).await else {
                return Ok(client_gone());
            };
            tokio::time::sleep(delay).await;
            req
        }
    };
    let response = match fault.action {
        Action::Forward => shared.forward(req).await,
        Action::Respond(kind) => {
            let answer = wire::error_answer(&info, &kind, &request_id);
            let mut response = Response::new(full(answer.body));
            *response.status_mut() = answer.status;
            for (name, value) in answer.headers {
                response.headers_mut().insert(name, value);
            }
            response
        }
        Action::DelayResponse(delay) => {
            let response = shared.forward(req).await;
            tokio::time::sleep(delay).await;
            response
        }
        Action::ResetBeforeForwarding => match control.reset().await {},
        Action::ResetAfterForwarding => {
            // Wait for the complete answer: once it is in, the upstream has applied the
            // request, and its connection goes back to the pool cleanly.
            let _ = shared.forward_buffered(req).await;
            match control.reset().await {}
        }
        Action::PartialFailure(partial) => {
            shared
                .partial_failure(&info, &partial, &request_id, req)
                .await
        }
        Action::TruncateBody => match shared.forward_buffered(req).await {
            Ok((parts, body)) => {
                let head = body.slice(..body.len() / 2);
                Response::from_parts(parts, Truncated::new(head).boxed_unsync())
            }
            Err(response) => response,
        },
        Action::GarbleBody => match shared.forward_buffered(req).await {
            Ok((mut parts, body)) => {
                let garbled = wire::garble(&body);
                wire::set_body_headers(&mut parts.headers, garbled.len());
                Response::from_parts(parts, full(garbled))
            }
            Err(response) => response,
        },
    };
    Ok(response)
}

impl Shared {
    /// Sends a request upstream and streams the answer back.
    async fn forward(&self, req: Request<ProxyBody>) -> Response<ProxyBody> {
        match self.send(req).await {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, body.map_err(BoxError::from).boxed_unsync())
            }
            Err(error) => bad_gateway(&error),
        }
    }

    /// Sends a request upstream and reads the whole answer, for faults that inspect or
    /// rewrite it. On failure, the error is the answer to give the client instead.
    async fn forward_buffered(
        &self,
        req: Request<ProxyBody>,
    ) -> Result<(http::response::Parts, Bytes), Response<ProxyBody>> {
        let response = self.send(req).await.map_err(|e| bad_gateway(&e))?;
        let (mut parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| bad_gateway(&e.into()))?
            .to_bytes();
        strip_hop_by_hop(&mut parts.headers);
        Ok((parts, body))
    }

    async fn send(&self, req: Request<ProxyBody>) -> Result<Response<Incoming>, BoxError> {
        let (mut parts, body) = req.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path)
            .build()?;
        parts.version = Version::HTTP_11;
        // The Host header is left as the client sent it: SigV4 signs it, and S3 (s3s-fs)
        // verifies the signature. hyper-util only adds a Host header when there is none.
        strip_hop_by_hop(&mut parts.headers);
        Ok(self
            .client
            .request(Request::from_parts(parts, body))
            .await?)
    }

    async fn partial_failure(
        &self,
        info: &RequestInfo,
        partial: &PartialFailure,
        request_id: &str,
        req: Request<ProxyBody>,
    ) -> Response<ProxyBody> {
        if info.operation.as_deref() != Some("PutRecords") {
            return self.forward(req).await;
        }
        let (mut parts, body) = req.into_parts();
        let Ok(body) = body.collect().await.map(|c| c.to_bytes()) else {
            return client_gone();
        };
        let parsed = wire::parse_put_records(&body);
        let Some((request, failed)) = parsed
            .map(|(request, count)| (request, partial.mask(count)))
            .filter(|(_, failed)| failed.contains(&true))
        else {
            // Nothing to fail (or not JSON, e.g. CBOR): forward as is.
            return self.forward(Request::from_parts(parts, full(body))).await;
        };

        let rewrite: fn(&serde_json::Value, &[u8], &[bool], FailureCode) -> Option<Bytes>;
        let req = if partial.stored_anyway {
            rewrite = wire::overwrite_failures;
            Request::from_parts(parts, full(body))
        } else if failed.iter().all(|&f| f) {
            // Every entry fails: the upstream must not see any of them.
            let body = wire::all_failed_response(&request, failed.len(), partial.code);
            let mut response = Response::new(full(body));
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-amz-json-1.1"),
            );
            if let Ok(id) = HeaderValue::from_str(request_id) {
                headers.insert("x-amzn-requestid", id);
            }
            return response;
        } else {
            rewrite = wire::splice_failures;
            let Some(body) = wire::drop_failed_records(request.clone(), &failed) else {
                return self.forward(Request::from_parts(parts, full(body))).await;
            };
            // The rewritten body invalidates the client's signature over the payload; the
            // Kinesis emulators do not check it (real Kinesis would).
            wire::set_body_headers(&mut parts.headers, body.len());
            Request::from_parts(parts, full(body))
        };

        let (mut parts, body) = match self.forward_buffered(req).await {
            Ok(answer) => answer,
            Err(response) => return response,
        };
        // An error answer applies to the whole call: pass it on untouched.
        if parts.status == StatusCode::OK {
            match rewrite(&request, &body, &failed, partial.code) {
                Some(body) => {
                    wire::set_body_headers(&mut parts.headers, body.len());
                    return Response::from_parts(parts, full(body));
                }
                None => {
                    tracing::warn!("fault proxy: unexpected PutRecords response, not rewritten")
                }
            }
        }
        Response::from_parts(parts, full(body))
    }
}

/// Reads a request body into memory (for faults that delay or inspect the request).
async fn buffer_request(req: Request<ProxyBody>) -> Result<Request<ProxyBody>, BoxError> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Request::from_parts(parts, full(body)))
}

pub(crate) fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes)
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

fn bad_gateway(error: &BoxError) -> Response<ProxyBody> {
    tracing::warn!(%error, "fault proxy: upstream request failed");
    let mut response = Response::new(full(Bytes::from(format!(
        "fault proxy: upstream request failed: {error}"
    ))));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

/// The answer when reading the client's request failed: nobody will read it.
fn client_gone() -> Response<ProxyBody> {
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response
}

/// Removes the headers that describe one hop rather than the message (RFC 9110 §7.6.1);
/// hyper frames each side itself.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// A body that yields its head, then fails: hyper then abandons the connection, so the client
/// gets fewer bytes than `Content-Length` announced, followed by a close.
struct Truncated {
    head: Option<Bytes>,
    flushed: bool,
}

impl Truncated {
    fn new(head: Bytes) -> Truncated {
        Truncated {
            head: Some(head),
            flushed: false,
        }
    }
}

impl Body for Truncated {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(head) = this.head.take() {
            return Poll::Ready(Some(Ok(Frame::data(head))));
        }
        if !this.flushed {
            // Yield once so hyper flushes the head to the socket before the error makes it
            // drop the connection (it does not flush on a body error).
            this.flushed = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(Some(Err(
            "response body truncated by the fault proxy".into()
        )))
    }
}
