//! The real binary, configured by environment variables only (as on ECS), against the local
//! stack: post, SIGTERM, exit 0, the record in the stream; the `healthcheck` subcommand;
//! metrics on `/metrics` (level and granularity from the environment) or as EMF lines on
//! stdout. One process per test: the global metrics recorder is per process.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Http, stack, stored};
use http::StatusCode;
use local_aws::testing;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

const BIN: &str = env!("CARGO_BIN_EXE_producer-service");

/// A marker in the posted data, to check that no log line carries a payload.
const SECRET: &str = "payload-marker-7f3a";

/// The binary with a clean environment: nothing from the developer's AWS setup leaks in.
fn command(envs: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .envs(envs.iter().copied())
        .kill_on_drop(true);
    cmd
}

async fn healthcheck(args: &[&str], envs: &[(&str, &str)]) -> bool {
    let status = command(envs)
        .arg("healthcheck")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .unwrap();
    status.success()
}

/// Forwards the child's stdout (JSON log lines) into a channel.
fn log_lines(child: &mut Child) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The binary running against the local stack, its stdout lines collected.
struct Service {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    /// Every stdout line so far.
    seen: Vec<String>,
    /// The address it bound.
    addr: String,
}

impl Service {
    /// Starts the binary on `stream` with JSON logs and `extra` settings, and waits for its
    /// "listening" line.
    async fn start(aws: &local_aws::LocalAws, stream: &str, extra: &[(&str, &str)]) -> Service {
        let creds = aws.credentials();
        let mut envs = vec![
            ("STREAM", stream),
            ("LISTEN_ADDR", "127.0.0.1:0"),
            ("LOG_FORMAT", "json"),
            ("RUST_LOG", "info"),
            ("DRAIN_TIMEOUT", "20"),
            ("AWS_ENDPOINT_URL_KINESIS", aws.kinesis_endpoint()),
            ("AWS_ACCESS_KEY_ID", creds.access_key_id()),
            ("AWS_SECRET_ACCESS_KEY", creds.secret_access_key()),
            ("AWS_REGION", local_aws::REGION),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            // A producer setting through the producer's own variables.
            ("KINESIS_PRODUCER_RECORD_MAX_BUFFERED_TIME_MS", "10"),
        ];
        envs.extend_from_slice(extra);
        let mut child = command(&envs)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = log_lines(&mut child);
        let mut seen = Vec::new();
        // The address it bound, from its "listening" log line.
        let addr = loop {
            let line = tokio::time::timeout(Duration::from_secs(60), lines.recv())
                .await
                .expect("no 'listening' line within 60 s")
                .expect("the service exited before listening");
            seen.push(line.clone());
            let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            if v["message"] == "listening" {
                break v["addr"].as_str().unwrap().to_owned();
            }
        };
        Service {
            child,
            lines,
            seen,
            addr,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGTERM; the exit status and every stdout line.
    async fn stop(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let pid = self.child.id().unwrap().to_string();
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("the service did not exit within 60 s of SIGTERM")
            .unwrap();
        while let Some(line) = self.lines.recv().await {
            self.seen.push(line);
        }
        (status, self.seen)
    }
}

/// The value of the Prometheus sample `series` (name and labels, as rendered) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_drains_on_sigterm_and_healthchecks() {
    let (aws, stream) = stack(1).await;
    let secret = aws.credentials().secret_access_key().to_owned();
    // Metrics level and granularity through the environment: summary metrics, no labels.
    let svc = Service::start(
        &aws,
        &stream,
        &[
            ("METRICS_LEVEL", "summary"),
            ("METRICS_GRANULARITY", "global"),
        ],
    )
    .await;
    let addr = svc.addr.clone();

    let url = svc.url("/health");
    assert!(healthcheck(&["--url", &url], &[]).await);
    // Without --url: loopback at LISTEN_ADDR's port.
    assert!(healthcheck(&[], &[("LISTEN_ADDR", &addr)]).await);

    let http = Http::default();
    let body = format!(r#"{{"partition_key": "user-9", "data": {{"note": "{SECRET}"}}}}"#);
    let a = http.post(&svc.url("/events"), &body).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let answer = a.json();

    let m = http.get(&svc.url("/metrics")).await;
    assert_eq!(m.status, StatusCode::OK);
    let text = m.text();
    // The put was answered, so its metrics are recorded; global: no StreamName label.
    assert_eq!(sample(&text, "UserRecordsPut"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "KinesisRecordsPut"), Some(1.0), "{text}");
    assert!(!text.contains("StreamName"), "granularity global: {text}");
    assert!(
        !text.contains("UserRecordsDataPut"),
        "a detailed metric at level summary: {text}"
    );
    assert!(
        text.contains("IngestRequests{Status=\"200\"} 1"),
        "the service's own metric: {text}"
    );

    let (status, seen) = svc.stop().await;
    assert_eq!(status.code(), Some(0), "{status:?}");

    let stored = stored(&aws.kinesis_client(), &stream).await;
    let seq = answer["sequence_number"].as_str().unwrap().to_owned();
    let sub = answer["sub_sequence_number"].as_u64().unwrap();
    let got = &stored[&(seq, sub)];
    assert_eq!(got.partition_key, "user-9");
    assert!(String::from_utf8_lossy(&got.data).contains(SECRET));

    let stopped: Value = seen
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "stopped")
        .unwrap_or_else(|| panic!("no 'stopped' line in {seen:#?}"));
    assert_eq!(stopped["accepted"], 1);
    assert_eq!(stopped["delivered"], 1);
    assert_eq!(stopped["unfinished"], 0);
    for line in &seen {
        assert!(
            !line.contains(SECRET) && !line.contains(&secret),
            "a log line carries a payload or a secret: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_metrics_emf_the_binary_writes_emf_lines_and_serves_no_metrics_page() {
    let (aws, stream) = stack(2).await;
    let svc = Service::start(
        &aws,
        &stream,
        &[("METRICS", "emf"), ("METRICS_NAMESPACE", "ingest-test")],
    )
    .await;
    let http = Http::default();
    let a = http
        .post(
            &svc.url("/events"),
            &format!(
                r#"[{{"partition_key": "a", "data": "{SECRET}"}}, {{"partition_key": "b", "data": 2}}, {{"partition_key": "c", "data": 3}}]"#
            ),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());

    let m = http.get(&svc.url("/metrics")).await;
    assert_eq!(m.status, StatusCode::NOT_FOUND);
    let hint = m.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        hint.contains("Embedded Metric Format") && hint.contains("METRICS=prometheus"),
        "{hint}"
    );

    let (status, seen) = svc.stop().await;
    assert_eq!(status.code(), Some(0), "{status:?}");
    // Logs and EMF share stdout: the EMF lines are the ones with `_aws`.
    let emf: Vec<Value> = seen
        .iter()
        .filter(|l| l.contains("\"_aws\""))
        .map(|l| testing::parse_emf(l))
        .collect();
    assert!(!emf.is_empty(), "no EMF line in {seen:#?}");
    for line in &emf {
        let directive = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "ingest-test");
    }
    // Counters are per interval (the last one written at exit): they add up to the run's.
    let total = |name: &str| -> u64 {
        emf.iter()
            .filter(|l| l["StreamName"] == stream.as_str())
            .filter_map(|l| l[name].as_u64())
            .sum()
    };
    assert_eq!(total("UserRecordsPut"), 3, "{emf:#?}");
    let put = emf.iter().find(|l| l["UserRecordsPut"].is_u64()).unwrap();
    let sets = &put["_aws"]["CloudWatchMetrics"][0]["Dimensions"];
    assert_eq!(
        sets,
        &serde_json::json!([["StreamName"], []]),
        "per stream, rolled up overall"
    );
    let requests: u64 = emf
        .iter()
        .filter(|l| l["Status"] == "200")
        .filter_map(|l| l["IngestRequests"].as_u64())
        .sum();
    assert_eq!(requests, 1, "{emf:#?}");
    for line in &seen {
        assert!(!line.contains(SECRET), "stdout carries a payload: {line}");
    }
}

#[tokio::test]
async fn healthcheck_fails_against_a_dead_port() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let url = format!("http://127.0.0.1:{port}/health");
    assert!(!healthcheck(&["--url", &url, "--timeout", "2"], &[]).await);
}
