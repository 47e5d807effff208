//! Interoperability with the Java KCL's lease table, at the data level, both ways:
//! - a table written item by item exactly as the KCL 2.x writes it (plus a KCL 3.x attribute
//!   and a KCL 3.5 non-lease item) is read with its checkpoints honoured and taken over;
//! - what this crate writes has exactly the KCL's attribute names and types, so a Java KCL
//!   can take it over (shown by doing its conditional take by hand).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use kinesis_aggregation::{HashKey, HashKeyRange};
use kinesis_consumer::Position;
use kinesis_consumer::lease::{
    AssignmentConfig, DynamoLeaseStore, Lease, LeaseError, LeaseStore, LeaseTracker, plan,
};
use local_aws::LocalAws;
use local_aws::testing::unique_name;
use tokio::time::Instant;

const SEQ: &str = "49590338271490256608559692538361571095921575989136588898";
const HALF: &str = "170141183460469231731687303715884105727";
const MAX: &str = "340282366920938463463374607431768211455";

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}
fn n(v: &str) -> AttributeValue {
    AttributeValue::N(v.to_owned())
}
fn ss(v: &[&str]) -> AttributeValue {
    AttributeValue::Ss(v.iter().map(|s| (*s).to_owned()).collect())
}

type Item = HashMap<String, AttributeValue>;

fn item(attributes: &[(&str, AttributeValue)]) -> Item {
    attributes
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// The items a KCL 2.x application leaves behind after a split of shard 0 into 1 and 2,
/// processed by `kcl-worker-1` (now dead), and a KCL 3.5 worker-metrics item.
fn kcl_items() -> Vec<Item> {
    vec![
        // The parent: finished, with its children recorded.
        item(&[
            ("leaseKey", s("shardId-000000000000")),
            ("leaseOwner", s("kcl-worker-1")),
            ("leaseCounter", n("981")),
            ("checkpoint", s("SHARD_END")),
            ("checkpointSubSequenceNumber", n("0")),
            ("ownerSwitchesSinceCheckpoint", n("0")),
            (
                "childShardIds",
                ss(&["shardId-000000000001", "shardId-000000000002"]),
            ),
            ("startingHashKey", s("0")),
            ("endingHashKey", s(MAX)),
        ]),
        // A child in progress, checkpointed inside an aggregate, with a KCL 3.x attribute.
        item(&[
            ("leaseKey", s("shardId-000000000001")),
            ("leaseOwner", s("kcl-worker-1")),
            ("leaseCounter", n("1234")),
            ("checkpoint", s(SEQ)),
            ("checkpointSubSequenceNumber", n("3")),
            ("ownerSwitchesSinceCheckpoint", n("0")),
            ("parentShardId", ss(&["shardId-000000000000"])),
            ("startingHashKey", s("0")),
            ("endingHashKey", s(HALF)),
            ("throughputKBps", n("12.5")),
        ]),
        // The other child: released, with a prepared (two-phase) checkpoint and its state.
        item(&[
            ("leaseKey", s("shardId-000000000002")),
            ("leaseCounter", n("17")),
            ("checkpoint", s("TRIM_HORIZON")),
            ("checkpointSubSequenceNumber", n("0")),
            (
                "pendingCheckpoint",
                s("49590338271490256608559692538361571095921575989136589001"),
            ),
            ("pendingCheckpointSubSequenceNumber", n("0")),
            (
                "pendingCheckpointState",
                AttributeValue::B(Blob::new(b"app-state".to_vec())),
            ),
            ("ownerSwitchesSinceCheckpoint", n("2")),
            ("parentShardId", ss(&["shardId-000000000000"])),
            (
                "startingHashKey",
                s("170141183460469231731687303715884105728"),
            ),
            ("endingHashKey", s(MAX)),
        ]),
        // KCL 3.5: not a lease.
        item(&[
            ("leaseKey", s("kcl-worker-1")),
            ("entityType", s("WORKER_METRICS")),
            ("lastUpdateTime", n("1767225600")),
        ]),
    ]
}

async fn setup() -> (LocalAws, aws_sdk_dynamodb::Client, DynamoLeaseStore) {
    let aws = LocalAws::start().await.unwrap();
    let dynamodb = aws.dynamodb_client();
    let table = unique_name("kcl");
    // As the KCL 2.5.8 creates it: leaseKey (S) only, pay per request.
    local_aws::testing::create_table(&dynamodb, &table, "leaseKey")
        .await
        .unwrap();
    let store = DynamoLeaseStore::new(dynamodb.clone(), &table);
    (aws, dynamodb, store)
}

async fn raw(dynamodb: &aws_sdk_dynamodb::Client, table: &str, key: &str) -> Item {
    dynamodb
        .get_item()
        .table_name(table)
        .key("leaseKey", s(key))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .expect("the item exists")
}

fn seq(sequence: &str, sub: u64) -> Position {
    Position::sequence(sequence, sub).unwrap()
}

#[tokio::test]
async fn a_kcl_table_is_read_with_its_checkpoints_and_taken_over() {
    let (_aws, dynamodb, store) = setup().await;
    let table = store.table_name().to_owned();
    for item in kcl_items() {
        dynamodb
            .put_item()
            .table_name(&table)
            .set_item(Some(item))
            .send()
            .await
            .unwrap();
    }
    assert!(!store.ensure_table().await.unwrap());

    let mut leases: BTreeMap<String, Lease> = store
        .list_leases()
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.lease_key.clone(), l))
        .collect();
    assert_eq!(
        leases.keys().collect::<Vec<_>>(),
        [
            "shardId-000000000000",
            "shardId-000000000001",
            "shardId-000000000002"
        ]
    );
    let parent = &leases["shardId-000000000000"];
    assert!(parent.is_finished());
    assert_eq!(
        parent.child_shard_ids,
        [
            "shardId-000000000001".to_owned(),
            "shardId-000000000002".to_owned()
        ]
        .into()
    );
    assert_eq!(parent.hash_key_range, Some(HashKeyRange::FULL));
    let child = &leases["shardId-000000000001"];
    assert_eq!(child.checkpoint, seq(SEQ, 3));
    assert_eq!(child.owner.as_deref(), Some("kcl-worker-1"));
    assert_eq!(child.counter, 1234);
    assert_eq!(
        child.parent_shard_ids,
        ["shardId-000000000000".to_owned()].into()
    );
    assert_eq!(
        child.hash_key_range,
        Some(HashKeyRange::new(HashKey(0), HashKey(u128::MAX / 2)))
    );
    let other = &leases["shardId-000000000002"];
    assert_eq!(other.owner, None);
    assert_eq!(other.checkpoint, Position::TrimHorizon);
    assert_eq!(
        other.pending_checkpoint,
        Some(seq(
            "49590338271490256608559692538361571095921575989136589001",
            0
        ))
    );
    assert_eq!(
        other.pending_checkpoint_state.as_deref(),
        Some(&b"app-state"[..])
    );
    assert_eq!(other.owner_switches_since_checkpoint, 2);

    // Our worker starts: the unowned child is free at once; kcl-worker-1's lease only
    // after its counter has not moved for the failover time; the finished parent never.
    let config = AssignmentConfig::default().with_failover_time(Duration::from_secs(10));
    let snapshot: Vec<Lease> = leases.values().cloned().collect();
    let mut tracker = LeaseTracker::new();
    let t0 = Instant::now();
    tracker.observe(&snapshot, t0);
    let first = plan(&snapshot, "rust-worker", &tracker, t0, &config);
    let keys = |leases: &[Lease]| {
        leases
            .iter()
            .map(|l| l.lease_key.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&first.take), ["shardId-000000000002"]);
    let later = t0 + Duration::from_secs(11);
    tracker.observe(&snapshot, later);
    let second = plan(&snapshot, "rust-worker", &tracker, later, &config);
    assert_eq!(
        keys(&second.take)
            .into_iter()
            .collect::<std::collections::BTreeSet<_>>(),
        [
            "shardId-000000000001".to_owned(),
            "shardId-000000000002".to_owned()
        ]
        .into()
    );
    for lease in &second.take {
        let taken = store.take_lease(lease, "rust-worker").await.unwrap();
        leases.insert(taken.lease_key.clone(), taken);
    }

    // Taken over: owner, counter and switches as the KCL writes them; the checkpoint and
    // the KCL 3.x attribute untouched.
    let child = raw(&dynamodb, &table, "shardId-000000000001").await;
    assert_eq!(child["leaseOwner"], s("rust-worker"));
    assert_eq!(child["leaseCounter"], n("1235"));
    assert_eq!(child["ownerSwitchesSinceCheckpoint"], n("1"));
    assert_eq!(child["checkpoint"], s(SEQ));
    assert_eq!(child["checkpointSubSequenceNumber"], n("3"));
    assert_eq!(child["throughputKBps"], n("12.5"));
    assert_eq!(child["parentShardId"], ss(&["shardId-000000000000"]));

    // Resume and checkpoint further inside the aggregate.
    let held = &leases["shardId-000000000001"];
    let next = seq(SEQ, 7);
    store.checkpoint(held, &next).await.unwrap();
    let child = raw(&dynamodb, &table, "shardId-000000000001").await;
    assert_eq!(child["checkpoint"], s(SEQ));
    assert_eq!(child["checkpointSubSequenceNumber"], n("7"));
    assert_eq!(child["ownerSwitchesSinceCheckpoint"], n("0"));
    assert_eq!(child["leaseCounter"], n("1236"));
    assert_eq!(child["throughputKBps"], n("12.5"));

    // The non-lease item is untouched.
    let metrics = raw(&dynamodb, &table, "kcl-worker-1").await;
    assert_eq!(metrics["entityType"], s("WORKER_METRICS"));
    assert_eq!(metrics.len(), 3);
}

#[tokio::test]
async fn what_we_write_is_what_the_kcl_reads() {
    let (_aws, dynamodb, store) = setup().await;
    let table = store.table_name().to_owned();

    let lease = Lease::new("shardId-000000000003", Position::TrimHorizon)
        .with_parents(["shardId-000000000000", "shardId-000000000001"])
        .with_hash_key_range(HashKeyRange::new(HashKey(0), HashKey(u128::MAX / 2)));
    let lease = store.create_lease_if_absent(&lease).await.unwrap();
    assert_eq!(
        raw(&dynamodb, &table, "shardId-000000000003").await,
        item(&[
            ("leaseKey", s("shardId-000000000003")),
            ("leaseCounter", n("0")),
            ("checkpoint", s("TRIM_HORIZON")),
            ("checkpointSubSequenceNumber", n("0")),
            ("ownerSwitchesSinceCheckpoint", n("0")),
            (
                "parentShardId",
                ss(&["shardId-000000000000", "shardId-000000000001"])
            ),
            ("startingHashKey", s("0")),
            ("endingHashKey", s(HALF)),
        ])
    );

    let lease = store.take_lease(&lease, "rust-worker").await.unwrap();
    let lease = store
        .prepare_checkpoint(
            &lease,
            &seq(SEQ, 2),
            Some(bytes::Bytes::from_static(b"app-state")),
        )
        .await
        .unwrap();
    let pending = raw(&dynamodb, &table, "shardId-000000000003").await;
    assert_eq!(pending["pendingCheckpoint"], s(SEQ));
    assert_eq!(pending["pendingCheckpointSubSequenceNumber"], n("2"));
    assert_eq!(
        pending["pendingCheckpointState"],
        AttributeValue::B(Blob::new(b"app-state".to_vec()))
    );

    let lease = store.checkpoint(&lease, &seq(SEQ, 2)).await.unwrap();
    assert_eq!(
        raw(&dynamodb, &table, "shardId-000000000003").await,
        item(&[
            ("leaseKey", s("shardId-000000000003")),
            ("leaseOwner", s("rust-worker")),
            ("leaseCounter", n("3")),
            ("checkpoint", s(SEQ)),
            ("checkpointSubSequenceNumber", n("2")),
            ("ownerSwitchesSinceCheckpoint", n("0")),
            (
                "parentShardId",
                ss(&["shardId-000000000000", "shardId-000000000001"])
            ),
            ("startingHashKey", s("0")),
            ("endingHashKey", s(HALF)),
        ])
    );

    // A Java KCL worker takes it over the way the KCL 2.x does: conditional on the counter
    // it saw, owner set, counter and owner switches incremented.
    dynamodb
        .update_item()
        .table_name(&table)
        .key("leaseKey", s("shardId-000000000003"))
        .update_expression(
            "SET leaseOwner = :owner, leaseCounter = leaseCounter + :one, \
             ownerSwitchesSinceCheckpoint = ownerSwitchesSinceCheckpoint + :one",
        )
        .condition_expression("leaseCounter = :seen")
        .expression_attribute_values(":owner", s("kcl-worker-2"))
        .expression_attribute_values(":one", n("1"))
        .expression_attribute_values(":seen", n("3"))
        .send()
        .await
        .unwrap();
    // Our next renewal sees the loss, with the new owner.
    match store.renew_lease(&lease).await {
        Err(LeaseError::LeaseLost { current, .. }) => {
            let current = current.unwrap();
            assert_eq!(current.owner.as_deref(), Some("kcl-worker-2"));
            assert_eq!(current.counter, 4);
            assert_eq!(current.checkpoint, seq(SEQ, 2));
        }
        other => panic!("expected LeaseLost, got {other:?}"),
    }

    // A shard end as the KCL records it.
    let ended = Lease::new("shardId-000000000004", Position::Latest);
    let ended = store.create_lease_if_absent(&ended).await.unwrap();
    let ended = store.take_lease(&ended, "rust-worker").await.unwrap();
    store
        .mark_shard_end(
            &ended,
            &[
                "shardId-000000000005".to_owned(),
                "shardId-000000000006".to_owned(),
            ]
            .into(),
        )
        .await
        .unwrap();
    let ended = raw(&dynamodb, &table, "shardId-000000000004").await;
    assert_eq!(ended["checkpoint"], s("SHARD_END"));
    assert_eq!(ended["checkpointSubSequenceNumber"], n("0"));
    assert_eq!(
        ended["childShardIds"],
        ss(&["shardId-000000000005", "shardId-000000000006"])
    );

    // Released on shutdown: no owner attribute at all, as the KCL leaves unassigned leases.
    let mine = store
        .create_lease_if_absent(&Lease::new("shardId-000000000007", Position::Latest))
        .await
        .unwrap();
    let mine = store.take_lease(&mine, "rust-worker").await.unwrap();
    store.evict_lease(&mine).await.unwrap();
    let released = raw(&dynamodb, &table, "shardId-000000000007").await;
    assert!(!released.contains_key("leaseOwner"), "{released:?}");
    assert_eq!(released["leaseCounter"], n("2"));
}
