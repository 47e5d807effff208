//! The `local-aws` binary: prints usable export lines, serves until SIGTERM, exits cleanly.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[tokio::test]
async fn prints_export_lines_serves_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_local-aws"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut exports = std::collections::HashMap::new();
    // The export block ends with AWS_ENDPOINT_URL_S3; read until then.
    while !exports.contains_key("AWS_ENDPOINT_URL_S3") {
        let line = lines.next().expect("the binary ended early").unwrap();
        let (name, value) = line
            .strip_prefix("export ")
            .and_then(|l| l.split_once('='))
            .unwrap_or_else(|| panic!("not an export line: {line:?}"));
        exports.insert(name.to_owned(), value.to_owned());
    }
    assert_eq!(exports["LOCAL_AWS_BACKEND"], "external");

    // Another process (this test) can use the stack through the printed lines alone.
    let aws = local_aws::LocalAws::connect(
        local_aws::Endpoints {
            kinesis: exports["LOCAL_AWS_KINESIS_ENDPOINT"].clone(),
            dynamodb: exports["LOCAL_AWS_DYNAMODB_ENDPOINT"].clone(),
            s3: exports["LOCAL_AWS_S3_ENDPOINT"].clone(),
        },
        &exports["LOCAL_AWS_ACCESS_KEY_ID"],
        &exports["LOCAL_AWS_SECRET_ACCESS_KEY"],
    );
    let kinesis = aws.kinesis_client();
    let stream = local_aws::testing::unique_name("bin");
    local_aws::testing::create_stream(&kinesis, &stream, 1)
        .await
        .unwrap();
    aws.dynamodb_client().list_tables().send().await.unwrap();
    // s3s-fs checks SigV4: this proves the printed secret is the one the server expects.
    aws.s3_client()
        .create_bucket()
        .bucket(&stream)
        .send()
        .await
        .unwrap();

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[test]
fn rejects_unknown_arguments_with_usage() {
    let out = Command::new(env!("CARGO_BIN_EXE_local-aws"))
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown argument \"--bogus\""), "{stderr}");
    assert!(stderr.contains("Usage: local-aws"), "{stderr}");
}
