//! What the `kin` test binaries share: one local AWS stack per test process (on its own
//! runtime, so plain `#[test]`s can block on the child processes), `kin` with a clean
//! environment, and running it to the end.

#![allow(dead_code)]

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Stack {
    pub runtime: tokio::runtime::Runtime,
    pub aws: local_aws::LocalAws,
}

pub fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let aws = runtime
            .block_on(local_aws::LocalAws::start())
            .expect("the local stack starts");
        Stack { runtime, aws }
    })
}

/// `kin` with a clean environment: dummy credentials, no ~/.aws, no IMDS, and the
/// LOCAL_AWS_* variables `--local` reads. Tests add `--local` or `--endpoint-url`.
pub fn kin() -> Command {
    let s = stack();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kin"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent/kin-test-home")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ACCESS_KEY_ID", s.aws.credentials().access_key_id())
        .env(
            "AWS_SECRET_ACCESS_KEY",
            s.aws.credentials().secret_access_key(),
        )
        .env("AWS_REGION", local_aws::REGION)
        .env("LOCAL_AWS_KINESIS_ENDPOINT", s.aws.kinesis_endpoint())
        .env("LOCAL_AWS_DYNAMODB_ENDPOINT", s.aws.dynamodb_endpoint())
        .env(
            "LOCAL_AWS_ACCESS_KEY_ID",
            s.aws.credentials().access_key_id(),
        )
        .env(
            "LOCAL_AWS_SECRET_ACCESS_KEY",
            s.aws.credentials().secret_access_key(),
        )
        .stdin(Stdio::null());
    cmd
}

/// `kin --local ARGS`.
pub fn local(args: &[&str]) -> Command {
    let mut cmd = kin();
    cmd.arg("--local").args(args);
    cmd
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs to the end, or kills the process and fails after 60 s.
pub fn run(mut cmd: Command) -> Run {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().expect("kin starts");
    finish(child)
}

pub fn run_with_stdin(mut cmd: Command, input: &str) -> Run {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("kin starts");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    finish(child)
}

pub fn finish(mut child: Child) -> Run {
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "kin did not finish within 60 s; stdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

#[track_caller]
pub fn ok(cmd: Command) -> Run {
    let r = run(cmd);
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    r
}

pub fn json(r: &Run) -> Value {
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
}

pub fn name(prefix: &str) -> String {
    local_aws::testing::unique_name(prefix)
}

pub fn create(stream: &str, shards: &str) {
    ok(local(&["stream", "create", stream, "--shards", shards]));
}
