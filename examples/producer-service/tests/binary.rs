//! The real binary, configured by environment variables only (as on ECS), against the local
//! stack: post, SIGTERM, exit 0, the record in the stream; and the `healthcheck` subcommand.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Http, stack, stored};
use http::StatusCode;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_drains_on_sigterm_and_healthchecks() {
    let (aws, stream) = stack(1).await;
    let creds = aws.credentials();
    let (key, secret) = (
        creds.access_key_id().to_owned(),
        creds.secret_access_key().to_owned(),
    );
    let envs = [
        ("STREAM", stream.as_str()),
        ("LISTEN_ADDR", "127.0.0.1:0"),
        ("LOG_FORMAT", "json"),
        ("RUST_LOG", "info"),
        ("DRAIN_TIMEOUT", "20"),
        ("AWS_ENDPOINT_URL_KINESIS", aws.kinesis_endpoint()),
        ("AWS_ACCESS_KEY_ID", key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", secret.as_str()),
        ("AWS_REGION", local_aws::REGION),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        // A producer setting through the producer's own variables.
        ("KINESIS_PRODUCER_RECORD_MAX_BUFFERED_TIME_MS", "10"),
    ];
    let mut child = command(&envs)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut logs = log_lines(&mut child);
    let mut seen = Vec::new();

    // The address it bound, from its "listening" log line.
    let addr = loop {
        let line = tokio::time::timeout(Duration::from_secs(60), logs.recv())
            .await
            .expect("no 'listening' line within 60 s")
            .expect("the service exited before listening");
        seen.push(line.clone());
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if v["message"] == "listening" {
            break v["addr"].as_str().unwrap().to_owned();
        }
    };

    let url = format!("http://{addr}/health");
    assert!(healthcheck(&["--url", &url], &[]).await);
    // Without --url: loopback at LISTEN_ADDR's port.
    assert!(healthcheck(&[], &[("LISTEN_ADDR", &addr)]).await);

    let http = Http::default();
    let body = format!(r#"{{"partition_key": "user-9", "data": {{"note": "{SECRET}"}}}}"#);
    let a = http.post(&format!("http://{addr}/events"), &body).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let answer = a.json();

    let pid = child.id().unwrap().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the service did not exit within 60 s of SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    while let Some(line) = logs.recv().await {
        seen.push(line);
    }

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

#[tokio::test]
async fn healthcheck_fails_against_a_dead_port() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let url = format!("http://127.0.0.1:{port}/health");
    assert!(!healthcheck(&["--url", &url, "--timeout", "2"], &[]).await);
}
