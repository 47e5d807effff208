//! `kin leases` and `kin lag` run as a user would, against one local AWS stack started in this
//! test process, with lease tables written through `kinesis_consumer`'s `DynamoLeaseStore`.
//! Every test uses its own stream and application names, so they run in parallel.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::Duration;

use aws_sdk_kinesis::primitives::Blob;
use common::{create, json, local, name, ok, run, stack};
use kinesis_consumer::Position;
use kinesis_consumer::lease::{DynamoLeaseStore, Lease, LeaseStore};
use serde_json::Value;

fn shard(n: u32) -> String {
    format!("shardId-{n:012}")
}

/// Puts one record into the first shard; returns its sequence number.
fn put_first_shard(stream: &str, data: &str) -> String {
    let s = stack();
    let kinesis = s.aws.kinesis_client();
    s.runtime.block_on(async {
        kinesis
            .put_record()
            .stream_name(stream)
            .partition_key("k")
            .explicit_hash_key("0")
            .data(Blob::new(data.as_bytes()))
            .send()
            .await
            .expect("put")
            .sequence_number
    })
}

fn store(app: &str) -> DynamoLeaseStore {
    DynamoLeaseStore::new(stack().aws.dynamodb_client(), app)
}

/// Creates the lease table and a lease, taken by each of `owners` in turn, then checkpointed.
fn lease(app: &str, lease: Lease, owners: &[&str], checkpoint: Option<Position>) {
    let store = store(app);
    stack().runtime.block_on(async {
        store.ensure_table().await.expect("the lease table");
        let mut held = store.create_lease_if_absent(&lease).await.expect("created");
        for owner in owners {
            held = store.take_lease(&held, owner).await.expect("taken");
        }
        if let Some(position) = checkpoint {
            store
                .checkpoint(&held, &position)
                .await
                .expect("checkpointed");
        }
    });
}

#[test]
fn leases_lists_the_table_sorted_by_shard() {
    let stream = name("kin-leases");
    let app = name("kin-leases-app");
    create(&stream, "2");
    let seq = put_first_shard(&stream, "one");

    // Out of order on purpose: the output is sorted.
    lease(
        &app,
        Lease::new(shard(2), Position::TrimHorizon).with_parents([shard(0), shard(1)]),
        &[],
        None,
    );
    lease(
        &app,
        Lease::new(shard(0), Position::TrimHorizon),
        &["worker-a"],
        Some(Position::sequence(&seq, 3).unwrap()),
    );
    lease(
        &app,
        Lease::new(shard(1), Position::Latest),
        &["worker-a", "worker-b"],
        None,
    );

    let doc = json(&ok(local(&["leases", &app, "--output", "json"])));
    assert_eq!(doc["application"], app.as_str());
    assert_eq!(doc["table"], app.as_str());
    let leases = doc["leases"].as_array().unwrap();
    let keys: Vec<&str> = leases
        .iter()
        .map(|l| l["lease_key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, [shard(0), shard(1), shard(2)]);

    let first = &leases[0];
    assert_eq!(first["owner"], "worker-a");
    assert_eq!(first["checkpoint"], seq.as_str());
    assert_eq!(first["sub_sequence"], 3);
    // Created (0), taken (1), checkpointed (2).
    assert_eq!(first["counter"], 2);
    assert_eq!(first["owner_switches_since_checkpoint"], 0);
    assert_eq!(leases[1]["owner"], "worker-b");
    assert_eq!(leases[1]["checkpoint"], "LATEST");
    assert_eq!(leases[1]["owner_switches_since_checkpoint"], 1);
    let third = &leases[2];
    assert_eq!(third["owner"], Value::Null);
    assert_eq!(third["checkpoint"], "TRIM_HORIZON");
    assert_eq!(third["parents"], serde_json::json!([shard(0), shard(1)]));
    assert_eq!(third["children"], serde_json::json!([]));

    // Text: tab-separated, no headers, "-" for nobody and nothing.
    let text = ok(local(&["leases", &app, "--output", "text"])).stdout;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(
        lines[0],
        format!("{}\tworker-a\t{seq}\t3\t2\t-\t-\t0", shard(0))
    );
    assert_eq!(
        lines[2],
        format!(
            "{}\t-\tTRIM_HORIZON\t0\t0\t{},{}\t-\t0",
            shard(2),
            shard(0),
            shard(1)
        )
    );

    // Table: headers, and --table picks the table whatever APP says.
    let table = ok(local(&[
        "leases", "whatever", "--table", &app, "--output", "table",
    ]))
    .stdout;
    assert!(
        table.starts_with("SHARD") && table.contains("SWITCHES"),
        "{table}"
    );
    assert!(table.contains("worker-b"), "{table}");
}

#[test]
fn unknown_application_exits_3_with_the_fix() {
    let app = name("kin-no-such-app");
    for command in [vec!["leases", &app], vec!["lag", &app, "--stream", "x"]] {
        let r = run(local(&command));
        assert_eq!(r.code, 3, "{command:?}: {}", r.stderr);
        assert!(
            r.stderr.contains(&format!("no lease table {app}")),
            "{}",
            r.stderr
        );
        assert!(
            r.stderr.contains("hint: has a worker of application")
                && r.stderr.contains("run in this region"),
            "{}",
            r.stderr
        );
    }
}

#[test]
fn lag_shows_the_age_of_the_next_unprocessed_record() {
    let stream = name("kin-lag");
    let app = name("kin-lag-app");
    create(&stream, "2");
    let checkpointed = put_first_shard(&stream, "done");
    let _next = put_first_shard(&stream, "not yet");
    lease(
        &app,
        Lease::new(shard(0), Position::TrimHorizon),
        &["worker-a"],
        Some(Position::sequence(&checkpointed, 0).unwrap()),
    );
    // Nothing to read: no record at all in the second shard.
    lease(&app, Lease::new(shard(1), Position::TrimHorizon), &[], None);
    std::thread::sleep(Duration::from_millis(300));

    let doc = json(&ok(local(&[
        "lag", &app, "--stream", &stream, "--output", "json",
    ])));
    assert_eq!(doc["stream"], stream.as_str());
    let shards = doc["shards"].as_array().unwrap();
    assert_eq!(shards.len(), 2, "{doc}");
    assert_eq!(shards[0]["shard"], shard(0).as_str());
    assert_eq!(shards[0]["owner"], "worker-a");
    let age = shards[0]["next_record_age_ms"].as_u64().expect("an age");
    assert!(age > 0, "{doc}");
    assert!(shards[0]["next_record_arrival"].is_string(), "{doc}");
    assert!(shards[0]["millis_behind_latest"].is_number(), "{doc}");
    assert_eq!(shards[1]["next_record_age_ms"], Value::Null, "{doc}");

    // Without --stream and without multi-stream lease keys: usage error with the fix.
    let r = run(local(&["lag", &app]));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("pass --stream"), "{}", r.stderr);
}

#[test]
fn lag_watch_prints_a_block_per_refresh_until_stopped() {
    let stream = name("kin-lag-watch");
    let app = name("kin-lag-watch-app");
    create(&stream, "1");
    let seq = put_first_shard(&stream, "a");
    put_first_shard(&stream, "b");
    lease(
        &app,
        Lease::new(shard(0), Position::TrimHorizon),
        &["w"],
        Some(Position::sequence(&seq, 0).unwrap()),
    );

    let mut cmd = local(&[
        "lag",
        &app,
        "--stream",
        &stream,
        "--watch",
        "--interval",
        "200ms",
        "--output",
        "text",
    ]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::null());
    let mut child: Child = cmd.spawn().expect("kin starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut times = Vec::new();
    let mut rows = 0;
    while times.len() < 2 {
        let line = lines.next().expect("more output").unwrap();
        if let Some(time) = line.strip_prefix("time\t") {
            times.push(time.to_owned());
        } else if line.starts_with("shard\t") {
            assert!(line.contains(&seq), "{line}");
            rows += 1;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(rows >= 1);
}
