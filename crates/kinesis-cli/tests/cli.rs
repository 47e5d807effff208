//! The `kin` binary run as a user would, against one local AWS stack started in this test
//! process (on its own runtime, so plain `#[test]`s can block on the child processes).
//! Every test uses its own stream names, so they run in parallel.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{create, finish, json, kin, local, name, ok, run, run_with_stdin, stack};
use kinesis_aggregation::{ReceivedRecord, deaggregate};
use serde_json::Value;

/// Every user record in the stream: (partition key, data).
fn read_back(stream: &str) -> Vec<(String, String)> {
    let s = stack();
    let kinesis = s.aws.kinesis_client();
    let records = s
        .runtime
        .block_on(local_aws::testing::read_stream(&kinesis, stream))
        .unwrap();
    records
        .into_iter()
        .flat_map(|(_, r)| {
            deaggregate(ReceivedRecord::new(
                r.sequence_number(),
                r.partition_key().unwrap_or_default(),
                r.data().as_ref().to_vec(),
            ))
        })
        .map(|u| (u.partition_key, String::from_utf8(u.data.to_vec()).unwrap()))
        .collect()
}

#[test]
fn help_lists_the_commands_and_exit_codes() {
    let r = ok({
        let mut c = kin();
        c.arg("--help");
        c
    });
    for word in [
        "stream",
        "put",
        "tail",
        "local",
        "demo",
        "--endpoint-url",
        "Exit codes",
    ] {
        assert!(
            r.stdout.contains(word),
            "{word} missing from:\n{}",
            r.stdout
        );
    }
}

#[test]
fn bad_arguments_exit_2() {
    for args in [
        &[][..],
        &["stream", "create", "x"],
        &["stream", "create", "x", "--shards", "0"],
        &["--output", "yaml", "stream", "list"],
        &["stream", "reshard", "x"],
        &["stream", "reshard", "x", "--at", "5"],
        &["put", "x", "--key-template", "{bogus}"],
        &["put", "x", "--rate", "-1", "a"],
        &["tail", "x", "--since", "yesterday"],
        &["tail", "x", "--data", "rot13"],
        &[
            "stream",
            "create",
            "x",
            "--shards",
            "1",
            "--timeout",
            "soon",
        ],
    ] {
        let r = run(local(args));
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(!r.stderr.is_empty(), "{args:?} says why");
    }
    let r = run(local(&["put", "x", "--key-template", "{bogus}"]));
    assert!(
        r.stderr.contains("{bogus}") && r.stderr.contains("{num}"),
        "{}",
        r.stderr
    );
}

#[test]
fn local_without_its_variables_is_a_usage_error_with_the_fix() {
    let mut cmd = local(&["stream", "list"]);
    cmd.env_remove("LOCAL_AWS_KINESIS_ENDPOINT");
    let r = run(cmd);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("LOCAL_AWS_KINESIS_ENDPOINT"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("kin local"), "{}", r.stderr);
}

#[test]
fn stream_lifecycle_create_describe_list_split_merge_delete() {
    let stream = name("kin-life");
    let r = ok(local(&[
        "--output", "json", "stream", "create", &stream, "--shards", "2",
    ]));
    let created = json(&r);
    assert_eq!(created["status"], "ACTIVE");
    assert_eq!(created["open_shards"], 2);

    let r = ok(local(&["stream", "list"]));
    assert!(
        r.stdout
            .lines()
            .any(|l| l.split('\t').next() == Some(&*stream)),
        "{}",
        r.stdout
    );

    let describe = |stream: &str| {
        json(&ok(local(&[
            "--output", "json", "stream", "describe", stream,
        ])))
    };
    let d = describe(&stream);
    assert_eq!(d["name"], stream.as_str());
    assert_eq!(d["status"], "ACTIVE");
    assert_eq!(d["shards"].as_array().unwrap().len(), 2);
    assert_eq!(d["shards"][0]["starting_hash_key"], "0");

    // The table: details, then a shard per row.
    let r = ok(local(&["--output", "table", "stream", "describe", &stream]));
    assert!(r.stdout.contains("STARTING HASH KEY"), "{}", r.stdout);
    assert!(
        r.stdout.contains("shardId-000000000001  open"),
        "{}",
        r.stdout
    );

    // Split shard 0 in the middle: it closes, two children appear.
    ok(local(&["stream", "reshard", &stream, "--split", "0"]));
    let d = describe(&stream);
    let shards = d["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 4, "{d}");
    let closed: Vec<_> = shards.iter().filter(|s| s["state"] == "closed").collect();
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0]["id"], "shardId-000000000000");
    let children: Vec<_> = shards
        .iter()
        .filter(|s| s["parent"] == "shardId-000000000000")
        .collect();
    assert_eq!(children.len(), 2);
    assert_eq!(
        children[1]["starting_hash_key"],
        "85070591730234615865843651857942052864"
    );

    // Merge the two children back.
    let a = children[0]["id"].as_str().unwrap().to_owned();
    let b = children[1]["id"].as_str().unwrap().to_owned();
    let r = ok(local(&[
        "--output", "json", "stream", "reshard", &stream, "--merge", &a, &b,
    ]));
    assert_eq!(json(&r)["open_shards"], 2);
    let d = describe(&stream);
    let merged = d["shards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["adjacent_parent"].is_string())
        .cloned()
        .expect("a merged shard");
    assert_eq!(merged["state"], "open");

    // Splitting a closed shard is refused before calling AWS.
    let r = run(local(&["stream", "reshard", &stream, "--split", "0"]));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("closed"), "{}", r.stderr);
    let r = run(local(&["stream", "reshard", &stream, "--split", "99"]));
    assert_eq!(r.code, 3, "{}", r.stderr);

    let r = ok(local(&["stream", "delete", &stream]));
    assert_eq!(r.stdout, format!("{stream}\tDELETED\n"));
    let r = run(local(&["stream", "describe", &stream]));
    assert_eq!(r.code, 3, "{}", r.stderr);
}

#[test]
fn create_no_wait_and_duplicate() {
    let stream = name("kin-nowait");
    ok(local(&[
        "stream",
        "create",
        &stream,
        "--shards",
        "1",
        "--no-wait",
    ]));
    let s = stack();
    s.runtime
        .block_on(local_aws::testing::wait_for_active(
            &s.aws.kinesis_client(),
            &stream,
        ))
        .unwrap();
    let r = run(local(&["stream", "create", &stream, "--shards", "1"]));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("already exists"), "{}", r.stderr);
}

#[test]
fn unknown_stream_exits_3_with_the_fix() {
    let missing = name("kin-missing");
    for args in [
        vec!["stream", "describe", &missing],
        vec!["stream", "delete", &missing],
        vec!["stream", "reshard", &missing, "--split", "0"],
        vec!["put", &missing, "data"],
        vec!["tail", &missing, "--max", "1"],
    ] {
        let r = run(local(&args));
        assert_eq!(r.code, 3, "{args:?}: {}", r.stderr);
        assert!(
            r.stderr
                .contains(&format!("stream {missing} not found in us-east-1")),
            "{args:?}: {}",
            r.stderr
        );
        assert!(r.stderr.contains("`kin stream list`"), "{}", r.stderr);
    }
}

#[test]
fn dead_endpoint_says_which_and_exits_1() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    for args in [&["stream", "list"][..], &["put", "s", "x"], &["tail", "s"]] {
        let mut cmd = kin();
        cmd.args(["--endpoint-url", &endpoint]).args(args);
        let started = Instant::now();
        let r = run(cmd);
        assert_eq!(r.code, 1, "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains(&format!("cannot reach {endpoint}")),
            "{}",
            r.stderr
        );
        assert!(started.elapsed() < Duration::from_secs(20));
    }
}

#[test]
fn missing_credentials_exit_4_with_the_fix() {
    let mut cmd = kin();
    cmd.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .args([
            "--endpoint-url",
            stack().aws.kinesis_endpoint(),
            "stream",
            "list",
        ]);
    let r = run(cmd);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(
        r.stderr.contains("no AWS credentials found"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("--local"), "{}", r.stderr);

    let mut cmd = kin();
    cmd.env_remove("AWS_REGION").args(["stream", "list"]);
    let r = run(cmd);
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("--region"), "{}", r.stderr);
}

#[test]
fn put_from_arguments_with_a_key() {
    let stream = name("kin-put-args");
    create(&stream, "2");
    let r = ok(local(&[
        "--output", "json", "put", &stream, "--key", "k1", "hello", "world",
    ]));
    let summary = json(&r);
    assert_eq!(summary["records"], 2);
    assert_eq!(summary["failed"], 0);
    assert_eq!(summary["bytes"], 14);
    let mut got = read_back(&stream);
    got.sort();
    assert_eq!(
        got,
        [("k1".into(), "hello".into()), ("k1".into(), "world".into())]
    );
}

#[test]
fn put_from_stdin_lines_with_a_template_and_endpoint_url() {
    let stream = name("kin-put-stdin");
    create(&stream, "2");
    let input: String = (0..200).map(|i| format!("line {i}\n")).collect();
    let mut cmd = kin();
    cmd.args(["--endpoint-url", stack().aws.kinesis_endpoint()])
        .args(["put", &stream, "--key-template", "k-{num}"]);
    let r = run_with_stdin(cmd, &input);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // Text output: one tab-separated row, records first.
    assert!(r.stdout.starts_with("200\t0\t"), "{}", r.stdout);
    let got: BTreeSet<_> = read_back(&stream).into_iter().collect();
    let want: BTreeSet<_> = (0..200)
        .map(|i| (format!("k-{i}"), format!("line {i}")))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn put_from_a_json_lines_file_without_aggregation() {
    let stream = name("kin-put-file");
    create(&stream, "1");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("records.jsonl");
    std::fs::write(
        &path,
        "{\"key\": \"a\", \"data\": \"first\"}\n{\"data\": {\"n\": 2}}\n{\"key\": \"c\", \"data\": \"third\"}\n",
    )
    .unwrap();
    let r = ok(local(&[
        "--output",
        "json",
        "put",
        &stream,
        "--file",
        path.to_str().unwrap(),
        "--format",
        "json",
        "--no-aggregation",
    ]));
    assert_eq!(json(&r)["aggregated"], 0);
    let got = read_back(&stream);
    assert_eq!(
        got,
        [
            ("a".into(), "first".into()),
            ("1".into(), "{\"n\":2}".into()),
            ("c".into(), "third".into())
        ]
    );

    // A bad line stops the run with its line number.
    std::fs::write(&path, "{\"key\": \"a\", \"data\": \"x\"}\nnot json\n").unwrap();
    let r = run(local(&[
        "put",
        &stream,
        "--file",
        path.to_str().unwrap(),
        "--format",
        "json",
    ]));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("line 2"), "{}", r.stderr);

    let r = run(local(&["put", &stream, "--file", "/nonexistent/file"]));
    assert_eq!(r.code, 2, "{}", r.stderr);
}

#[test]
fn put_generated_load_at_a_rate() {
    let stream = name("kin-put-gen");
    create(&stream, "2");
    let started = Instant::now();
    let r = ok(local(&[
        "--output", "json", "put", &stream, "--count", "300", "--size", "64", "--rate", "1000",
    ]));
    // 300 records at 1000/s take at least 0.3 s.
    assert!(started.elapsed() >= Duration::from_millis(290));
    let summary = json(&r);
    assert_eq!(summary["records"], 300);
    assert_eq!(summary["failed"], 0);
    let got = read_back(&stream);
    assert_eq!(got.len(), 300);
    assert!(got.iter().all(|(_, data)| data.len() == 64));
    let numbers: BTreeSet<u64> = got
        .iter()
        .map(|(_, d)| d.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(numbers, (0..300).collect());
}

fn tail_json(stream: &str, max: usize, extra: &[&str]) -> Vec<Value> {
    let max_s = max.to_string();
    let mut args = vec![
        "--output",
        "json",
        "tail",
        stream,
        "--from",
        "trim-horizon",
        "--max",
        &max_s,
        "--poll-interval",
        "50ms",
    ];
    args.extend_from_slice(extra);
    let r = ok(local(&args));
    let lines: Vec<Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), max, "{}", r.stdout);
    lines
}

#[test]
fn tail_from_trim_horizon_sees_what_was_put() {
    let stream = name("kin-tail");
    create(&stream, "3");
    let data: Vec<String> = (0..40).map(|i| format!("record {i}")).collect();
    let mut args = vec!["put", stream.as_str(), "--key-template", "key-{num}"];
    args.extend(data.iter().map(String::as_str));
    ok(local(&args));

    let lines = tail_json(&stream, 40, &[]);
    let got: BTreeSet<(String, String)> = lines
        .iter()
        .map(|l| {
            (
                l["key"].as_str().unwrap().into(),
                l["data"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want: BTreeSet<_> = (0..40)
        .map(|i| (format!("key-{i}"), format!("record {i}")))
        .collect();
    assert_eq!(got, want);
    for l in &lines {
        assert!(l["sequence"].as_str().unwrap().len() > 10);
        assert!(l["sub_sequence"].is_u64());
        assert!(l["shard"].as_str().unwrap().starts_with("shardId-"));
    }

    // Text and the data encodings.
    let r = ok(local(&[
        "tail",
        &stream,
        "--from",
        "trim-horizon",
        "--max",
        "1",
        "--data",
        "hex",
    ]));
    let fields: Vec<&str> = r.stdout.trim_end().split('\t').collect();
    assert_eq!(fields.len(), 5, "{}", r.stdout);
    assert!(fields[4].starts_with("7265636f726420"), "{}", r.stdout); // "record "
    let r = ok(local(&[
        "tail", &stream, "--since", "1h", "--max", "1", "--data", "base64",
    ]));
    assert!(
        r.stdout
            .split('\t')
            .nth(4)
            .unwrap()
            .starts_with("cmVjb3JkI"),
        "{}",
        r.stdout
    );
}

#[test]
fn tail_follows_the_children_of_a_split_shard() {
    let stream = name("kin-tail-split");
    create(&stream, "1");
    let before: Vec<String> = (0..20).map(|i| format!("before {i}")).collect();
    let mut args = vec!["put", stream.as_str()];
    args.extend(before.iter().map(String::as_str));
    ok(local(&args));

    ok(local(&["stream", "reshard", &stream, "--split", "0"]));
    let after: Vec<String> = (0..20).map(|i| format!("after {i}")).collect();
    let mut args = vec!["put", stream.as_str(), "--key-template", "after-{num}"];
    args.extend(after.iter().map(String::as_str));
    ok(local(&args));

    let lines = tail_json(&stream, 40, &[]);
    // The parent first, entirely; then its children.
    assert!(
        lines[..20]
            .iter()
            .all(|l| l["shard"] == "shardId-000000000000")
    );
    assert!(
        lines[20..]
            .iter()
            .all(|l| l["shard"] != "shardId-000000000000")
    );
    let got: BTreeSet<&str> = lines.iter().map(|l| l["data"].as_str().unwrap()).collect();
    let want: BTreeSet<&str> = before.iter().chain(&after).map(String::as_str).collect();
    assert_eq!(got, want);
}

#[test]
fn local_prints_export_lines_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kin"))
        .arg("local")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut vars = Vec::new();
    while vars.len() < 12 {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "stdout ended early"
        );
        let (name, value) = line
            .trim_end()
            .strip_prefix("export ")
            .and_then(|l| l.split_once('='))
            .unwrap_or_else(|| panic!("not an export line: {line:?}"));
        vars.push((name.to_owned(), value.to_owned()));
    }
    let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "LOCAL_AWS_KINESIS_ENDPOINT",
        "AWS_ENDPOINT_URL_KINESIS",
        "AWS_REGION",
    ] {
        assert!(names.contains(&want), "{names:?}");
    }

    // The exported variables are all another `kin` needs: with --local, and without.
    let stream = name("kin-local");
    for with_local in [true, false] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kin"));
        cmd.env_clear()
            .env("HOME", "/nonexistent/kin-test-home")
            .envs(vars.iter().cloned())
            .stdin(Stdio::null());
        if with_local {
            cmd.args(["--local", "stream", "create", &stream, "--shards", "1"]);
        } else {
            cmd.args(["stream", "describe", &stream]);
        }
        ok(cmd);
    }

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let r = finish(child);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("stopping"), "{}", r.stderr);
}

#[test]
fn create_encrypted_then_scale_with_count() {
    let stream = name("kin-count");
    ok(local(&[
        "stream",
        "create",
        &stream,
        "--shards",
        "1",
        "--encrypt",
        "alias/aws/kinesis",
    ]));
    let r = ok(local(&[
        "--output", "json", "stream", "reshard", &stream, "--count", "2",
    ]));
    assert_eq!(json(&r)["open_shards"], 2);
    let d = json(&ok(local(&[
        "--output", "json", "stream", "describe", &stream,
    ])));
    assert_eq!(d["encryption"], "KMS");
    assert_eq!(d["key_id"], "alias/aws/kinesis");
    assert_eq!(d["open_shards"], 2);
}

/// The README's main command, shortened: the whole pipeline on the embedded stack (its own,
/// not the tests' shared one), with a split half way, ends in an exactly-once verdict.
#[test]
fn demo_runs_the_pipeline_and_proves_exactly_once() {
    let r = ok({
        let mut c = kin();
        c.args([
            "demo",
            "--records",
            "3000",
            "--rate",
            "3000",
            "--output",
            "json",
        ]);
        c
    });
    let summary = json(&r);
    assert_eq!(summary["records_put"], 3000, "{summary}");
    assert_eq!(summary["acknowledged"], 3000, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(summary["records_in_s3"], 3000, "{summary}");
    assert_eq!(summary["missing"], 0, "{summary}");
    assert_eq!(summary["duplicated"], 0, "{summary}");
    assert_eq!(summary["exactly_once"], true, "{summary}");
    assert_eq!(summary["open_shards"], 5, "the split happened: {summary}");
    assert!(
        r.stderr.contains("draining"),
        "progress lines: {}",
        r.stderr
    );
}

#[test]
fn demo_rejects_bad_arguments() {
    for args in [
        &["demo", "--records", "0"][..],
        &["demo", "--workers", "0"],
        &["demo", "--rate", "fast"],
    ] {
        let r = run({
            let mut c = kin();
            c.args(args);
            c
        });
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
    }
}
