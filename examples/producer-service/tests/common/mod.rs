//! Helpers for the service tests: the app served on 127.0.0.1:0, an HTTP client, and the
//! stream read back and deaggregated.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kinesis_aggregation::{ReceivedRecord, deaggregate};
use local_aws::{LocalAws, testing};
use producer_service::{App, DrainSummary};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// The local stack and a fresh stream with `shards` shards.
pub async fn stack(shards: i32) -> (LocalAws, String) {
    init_logs();
    let aws = LocalAws::start().await.unwrap();
    let stream = testing::unique_name("svc");
    testing::create_stream(&aws.kinesis_client(), &stream, shards)
        .await
        .unwrap();
    (aws, stream)
}

/// The app, served by `producer_service::serve` on an ephemeral loopback port.
pub struct Running {
    pub app: App,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<DrainSummary, producer_service::Error>>,
}

impl Running {
    pub async fn start(app: App, drain_timeout: Duration) -> Running {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(producer_service::serve(
            listener,
            app.clone(),
            async move {
                let _ = stopped.await;
            },
            drain_timeout,
        ));
        Running {
            app,
            addr,
            stop: Some(stop),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What a SIGTERM does in the binary: resolves the shutdown future, waits for the drain.
    pub async fn shutdown(mut self) -> DrainSummary {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap()
    }
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A plain HTTP/1.1 client.
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Http {
    fn default() -> Self {
        Http {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }
}

impl Http {
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body.into())).unwrap();
        let res = self.client.request(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, url: &str) -> Answer {
        self.send(Method::GET, url, &[], Bytes::new()).await
    }

    pub async fn post(&self, url: &str, body: &str) -> Answer {
        self.post_with(url, &[], body).await
    }

    pub async fn post_with(&self, url: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.send(Method::POST, url, &all, body.to_owned()).await
    }
}

/// One user record read back from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub shard_id: String,
    pub partition_key: String,
    pub data: Bytes,
}

/// Every user record in the stream, by (sequence number, sub-sequence number).
pub async fn stored(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
) -> HashMap<(String, u64), Stored> {
    let mut out = HashMap::new();
    for (shard, r) in testing::read_stream(kinesis, stream).await.unwrap() {
        let received = ReceivedRecord::new(
            r.sequence_number().to_owned(),
            r.partition_key().unwrap_or_default().to_owned(),
            Bytes::copy_from_slice(r.data().as_ref()),
        );
        for u in deaggregate(received) {
            let key = (u.sequence_number.to_string(), u.sub_sequence_number);
            let previous = out.insert(
                key.clone(),
                Stored {
                    shard_id: shard.clone(),
                    partition_key: u.partition_key,
                    data: u.data,
                },
            );
            assert!(previous.is_none(), "{key:?} read twice");
        }
    }
    out
}

/// `(partition key, data)` of every user record in the stream, counted.
pub async fn contents(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
) -> HashMap<(String, Bytes), usize> {
    let mut out = HashMap::new();
    for s in stored(kinesis, stream).await.into_values() {
        *out.entry((s.partition_key, s.data)).or_insert(0) += 1;
    }
    out
}
