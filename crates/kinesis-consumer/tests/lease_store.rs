//! `DynamoLeaseStore` against DynamoDB (the local stack): the shared conformance suite, then
//! what only a real table has: table creation and schema checks, paging, non-lease items,
//! lost answers and throttling through the fault proxy, and the request counts.
//!
//! Every test starts its own stack and uses unique table names, so they run in parallel.

use std::time::Duration;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ScalarAttributeType,
};
use kinesis_consumer::Position;
use kinesis_consumer::lease::{
    DynamoLeaseStore, Lease, LeaseError, LeaseStore, OperationCounts, conformance,
};
use local_aws::fault::{Fault, FaultProxy, Rule};
use local_aws::testing::unique_name;
use local_aws::{Backend, LocalAws};

/// A stack and a store on a fresh, existing table.
async fn fresh() -> (LocalAws, DynamoLeaseStore) {
    let aws = LocalAws::start().await.expect("local stack");
    let store = DynamoLeaseStore::new(aws.dynamodb_client(), unique_name("leases"));
    assert!(store.ensure_table().await.expect("create the table"));
    (aws, store)
}

macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                let (_aws, store) = fresh().await;
                conformance::$check(&store).await;
            }
        )*

        #[test]
        fn every_conformance_check_runs() {
            assert_eq!([$(stringify!($check)),*], conformance::ALL);
        }
    };
}

conformance!(
    ensure_table_is_idempotent,
    create_get_and_list,
    create_if_absent_conflicts,
    missing_leases,
    renew_bumps_the_counter_only,
    renew_after_losing_the_lease_fails,
    take_unowned_and_steal,
    concurrent_takes_have_one_winner,
    evict_removes_the_owner,
    checkpoint_resets_switches_and_pending,
    two_phase_checkpoint,
    shard_end_records_children,
    delete_is_conditional,
    repeated_writes_are_recognised,
    state_round_trips_exactly,
);

#[tokio::test]
async fn table_missing_until_ensured() {
    let aws = LocalAws::start().await.unwrap();
    let store = DynamoLeaseStore::new(aws.dynamodb_client(), unique_name("leases"));
    conformance::table_missing_until_ensured(&store).await;
}

/// A client through `proxy` with `attempts` attempts, fast backoff and its own retry
/// partition (parallel tests must not drain one shared token bucket).
fn client_via(proxy: &FaultProxy, attempts: u32) -> aws_sdk_dynamodb::Client {
    let retry = aws_sdk_dynamodb::config::retry::RetryConfig::standard()
        .with_max_attempts(attempts)
        .with_initial_backoff(Duration::from_millis(5))
        .with_max_backoff(Duration::from_millis(50));
    let config = local_aws::dynamodb_client(proxy.endpoint())
        .config()
        .to_builder()
        .retry_config(retry)
        .retry_partition(aws_sdk_dynamodb::config::retry::RetryPartition::new(
            unique_name("partition"),
        ))
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

async fn describe(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
) -> aws_sdk_dynamodb::types::TableDescription {
    client
        .describe_table()
        .table_name(table)
        .send()
        .await
        .unwrap()
        .table
        .unwrap()
}

#[tokio::test]
async fn creates_the_kcl_table_on_demand() {
    let aws = LocalAws::start().await.unwrap();
    let table = unique_name("leases");
    let store = DynamoLeaseStore::new(aws.dynamodb_client(), &table);
    assert!(store.ensure_table().await.unwrap());
    let described = describe(&aws.dynamodb_client(), &table).await;
    let keys: Vec<_> = described
        .key_schema()
        .iter()
        .map(|k| (k.attribute_name().to_owned(), k.key_type().clone()))
        .collect();
    assert_eq!(keys, [("leaseKey".to_owned(), KeyType::Hash)]);
    assert_eq!(
        described.attribute_definitions()[0].attribute_type(),
        &ScalarAttributeType::S
    );
    assert_eq!(
        described
            .billing_mode_summary()
            .and_then(|b| b.billing_mode()),
        Some(&BillingMode::PayPerRequest)
    );
    // Two workers starting together: the second finds the table and waits for it.
    let other = DynamoLeaseStore::new(aws.dynamodb_client(), &table);
    assert!(!other.ensure_table().await.unwrap());
}

#[tokio::test]
async fn accepts_a_kcl_3_table_and_refuses_a_foreign_one() {
    let aws = LocalAws::start().await.unwrap();
    let dynamodb = aws.dynamodb_client();

    // The KCL 3.x table: leaseKey plus the LeaseOwnerToLeaseKeyIndex GSI.
    let kcl3 = unique_name("kcl3");
    let definition = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .unwrap()
    };
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .unwrap()
    };
    dynamodb
        .create_table()
        .table_name(&kcl3)
        .attribute_definitions(definition("leaseKey"))
        .attribute_definitions(definition("leaseOwner"))
        .key_schema(key("leaseKey", KeyType::Hash))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name("LeaseOwnerToLeaseKeyIndex")
                .key_schema(key("leaseOwner", KeyType::Hash))
                .key_schema(key("leaseKey", KeyType::Range))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::KeysOnly)
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    let store = DynamoLeaseStore::new(dynamodb.clone(), &kcl3);
    assert!(!store.ensure_table().await.unwrap());
    let lease = store
        .create_lease_if_absent(&Lease::new("shardId-0", Position::TrimHorizon))
        .await
        .unwrap();
    store.take_lease(&lease, "worker-a").await.unwrap();

    // A table keyed on something else is not a lease table: say so, do not write into it.
    let foreign = unique_name("foreign");
    local_aws::testing::create_table(&dynamodb, &foreign, "pk")
        .await
        .unwrap();
    let err = DynamoLeaseStore::new(dynamodb, &foreign)
        .ensure_table()
        .await
        .unwrap_err();
    assert!(
        matches!(err, LeaseError::IncompatibleTable { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn lists_across_pages_and_skips_what_is_not_a_lease() {
    let (aws, store) = fresh().await;
    let store = store.with_scan_page_limit(7);
    let dynamodb = aws.dynamodb_client();
    for i in 0..40 {
        store
            .create_lease_if_absent(&Lease::new(format!("shardId-{i:03}"), Position::Latest))
            .await
            .unwrap();
    }
    // KCL 3.5 entities that share the table, and an explicit LEASE tag.
    for (key, entity) in [
        ("worker-metrics-a", "WORKER_METRICS"),
        ("coordinator-state", "COORDINATOR_STATE"),
        ("shardId-100", "LEASE"),
    ] {
        let mut put = dynamodb
            .put_item()
            .table_name(store.table_name())
            .item("leaseKey", AttributeValue::S(key.into()))
            .item("entityType", AttributeValue::S(entity.into()));
        if entity == "LEASE" {
            put = put
                .item("checkpoint", AttributeValue::S("TRIM_HORIZON".into()))
                .item("leaseCounter", AttributeValue::N("0".into()));
        }
        put.send().await.unwrap();
    }
    let before = store.operation_counts();
    let leases = store.list_leases().await.unwrap();
    assert_eq!(leases.len(), 41);
    assert!(leases.iter().all(|l| l.lease_key.starts_with("shardId-")));
    let scans = store.operation_counts().scans - before.scans;
    assert!(scans >= 43 / 7, "{scans} pages");
    assert_eq!(store.get_lease("worker-metrics-a").await.unwrap(), None);
}

#[tokio::test]
async fn a_broken_item_is_skipped_by_list_and_reported_by_get() {
    let (aws, store) = fresh().await;
    store
        .create_lease_if_absent(&Lease::new("shardId-0", Position::Latest))
        .await
        .unwrap();
    aws.dynamodb_client()
        .put_item()
        .table_name(store.table_name())
        .item("leaseKey", AttributeValue::S("shardId-1".into()))
        .item("checkpoint", AttributeValue::S("not a number".into()))
        .send()
        .await
        .unwrap();
    assert_eq!(store.list_leases().await.unwrap().len(), 1);
    let err = store.get_lease("shardId-1").await.unwrap_err();
    assert!(matches!(err, LeaseError::InvalidLease { .. }), "{err:?}");
}

/// A store through a fault proxy, and the same table read directly.
async fn proxied(attempts: u32) -> (LocalAws, FaultProxy, DynamoLeaseStore, DynamoLeaseStore) {
    let aws = LocalAws::start().await.unwrap();
    let proxy = FaultProxy::start(aws.dynamodb_endpoint()).await.unwrap();
    let table = unique_name("leases");
    let direct = DynamoLeaseStore::new(aws.dynamodb_client(), &table);
    direct.ensure_table().await.unwrap();
    let store = DynamoLeaseStore::new(client_via(&proxy, attempts), &table);
    (aws, proxy, store, direct)
}

#[tokio::test]
async fn a_lost_answer_is_not_a_lost_lease() {
    let (aws, proxy, store, direct) = proxied(3).await;
    let reset_next_update = || {
        proxy.inject(
            Rule::on("UpdateItem")
                .once()
                .fault(Fault::reset_after_forwarding()),
        )
    };

    // Create: applied, answer lost, the retry fails `attribute_not_exists`.
    let lease = Lease::new("shardId-000000000000", Position::TrimHorizon);
    reset_next_update();
    let created = store.create_lease_if_absent(&lease).await.unwrap();
    assert_eq!(created, lease);
    assert_eq!(proxy.count("UpdateItem"), 2);

    // Take, renew, checkpoint, prepare, shard end, evict: each applied once, its answer
    // lost, the SDK's retry failing the counter condition against the write's own result.
    let mut held = created;
    let mut updates = 2;
    let steps: Vec<(&str, kinesis_consumer::lease::LeaseUpdate)> = vec![
        ("take", take("worker-a")),
        ("renew", kinesis_consumer::lease::LeaseUpdate::Renew),
        (
            "checkpoint",
            kinesis_consumer::lease::LeaseUpdate::Checkpoint {
                position: Position::sequence(
                    "49590338271490256608559692538361571095921575989136588898",
                    3,
                )
                .unwrap(),
            },
        ),
        (
            "prepare",
            kinesis_consumer::lease::LeaseUpdate::PrepareCheckpoint {
                position: Position::sequence(
                    "49590338271490256608559692538361571095921575989136589000",
                    0,
                )
                .unwrap(),
                state: Some(bytes::Bytes::from_static(b"state")),
            },
        ),
        ("steal", take("worker-b")),
        (
            "shard end",
            kinesis_consumer::lease::LeaseUpdate::ShardEnd {
                child_shard_ids: ["shardId-000000000001".to_owned()].into(),
            },
        ),
        ("evict", kinesis_consumer::lease::LeaseUpdate::Evict),
    ];
    for (name, update) in steps {
        reset_next_update();
        let next = store
            .update_lease(&held, &update)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        updates += 2;
        assert_eq!(proxy.count("UpdateItem"), updates, "{name}: one retry");
        assert_eq!(next, update.apply(&held), "{name}");
        assert_eq!(next.counter, held.counter + 1, "{name}: applied once");
        assert_eq!(
            direct.get_lease(&held.lease_key).await.unwrap().as_ref(),
            Some(&next),
            "{name}"
        );
        held = next;
    }
    // dynoxide returns the item with the failed condition: no re-read was needed. dynalite
    // (the external cross-check) ignores ReturnValuesOnConditionCheckFailure, so there the
    // store re-reads once per failed condition: the path tested on its own below.
    if aws.backend() == Backend::InProcess {
        assert_eq!(proxy.count("GetItem"), 0);
    }

    // Delete: applied, answer lost, the retry finds nothing: done.
    proxy.inject(
        Rule::on("DeleteItem")
            .once()
            .fault(Fault::reset_after_forwarding()),
    );
    store.delete_lease(&held).await.unwrap();
    assert_eq!(proxy.count("DeleteItem"), 2);
    assert_eq!(direct.get_lease(&held.lease_key).await.unwrap(), None);
}

fn take(owner: &str) -> kinesis_consumer::lease::LeaseUpdate {
    kinesis_consumer::lease::LeaseUpdate::Take {
        owner: owner.into(),
    }
}

#[tokio::test]
async fn a_lost_answer_then_a_real_loss_is_still_a_loss() {
    let (_aws, proxy, store, direct) = proxied(3).await;
    let lease = direct
        .create_lease_if_absent(&Lease::new("shardId-0", Position::TrimHorizon))
        .await
        .unwrap();
    let mine = store.take_lease(&lease, "worker-a").await.unwrap();
    // Another worker steals between our renewal's attempts: the retry must not pass for
    // ours.
    let stolen = direct.take_lease(&mine, "worker-b").await.unwrap();
    proxy.inject(
        Rule::on("UpdateItem")
            .once()
            .fault(Fault::reset_before_forwarding()),
    );
    match store.renew_lease(&mine).await {
        Err(LeaseError::LeaseLost { key, current }) => {
            assert_eq!(key, "shardId-0");
            assert_eq!(current.as_deref(), Some(&stolen));
        }
        other => panic!("expected LeaseLost, got {other:?}"),
    }
}

#[tokio::test]
async fn unknown_outcomes_are_retryable_and_safe_to_repeat() {
    // One attempt only: the reset surfaces as an error of unknown outcome.
    let (_aws, proxy, store, direct) = proxied(1).await;
    let lease = direct
        .create_lease_if_absent(&Lease::new("shardId-0", Position::TrimHorizon))
        .await
        .unwrap();
    proxy.inject(
        Rule::on("UpdateItem")
            .once()
            .fault(Fault::reset_after_forwarding()),
    );
    let err = store.take_lease(&lease, "worker-a").await.unwrap_err();
    assert!(
        matches!(err, LeaseError::Store { .. }) && err.is_retryable(),
        "{err:?}"
    );
    // The caller repeats the same write, as the error docs say: recognised as applied.
    let taken = store.take_lease(&lease, "worker-a").await.unwrap();
    assert_eq!(
        (taken.counter, taken.owner.as_deref()),
        (1, Some("worker-a"))
    );
}

#[tokio::test]
async fn throttling_is_retried_by_the_sdk_then_reported() {
    let (_aws, proxy, store, direct) = proxied(3).await;
    let lease = direct
        .create_lease_if_absent(&Lease::new("shardId-0", Position::TrimHorizon))
        .await
        .unwrap();

    proxy.inject(Rule::on("UpdateItem").times(2).fault(Fault::throttle()));
    let taken = store.take_lease(&lease, "worker-a").await.unwrap();
    assert_eq!(taken.counter, 1);
    assert_eq!(proxy.count("UpdateItem"), 3);

    proxy.inject(Rule::on("UpdateItem").fault(Fault::throttle()));
    let err = store.renew_lease(&taken).await.unwrap_err();
    assert!(matches!(err, LeaseError::Throttled { .. }), "{err:?}");
    assert!(err.is_retryable() && !err.is_lease_lost());
    proxy.clear();
    proxy.inject(Rule::on("Scan").fault(Fault::error(400, "ThrottlingException", "rate exceeded")));
    let err = store.list_leases().await.unwrap_err();
    assert!(matches!(err, LeaseError::Throttled { .. }), "{err:?}");
    proxy.clear();
    // Nothing was lost: the lease still has counter 1 and our renewal can go on.
    assert_eq!(store.renew_lease(&taken).await.unwrap().counter, 2);
}

#[tokio::test]
async fn one_request_per_operation() {
    let (aws, proxy, store, _direct) = proxied(3).await;
    // dynalite does not return the item of a failed condition: the lost lease costs a re-read.
    let re_reads = u64::from(aws.backend() == Backend::External);
    let counts = |c: OperationCounts| (c.scans, c.gets, c.updates, c.deletes);
    let before = store.operation_counts();

    let lease = store
        .create_lease_if_absent(&Lease::new("shardId-0", Position::TrimHorizon))
        .await
        .unwrap();
    let lease = store.take_lease(&lease, "worker-a").await.unwrap();
    let lease = store.renew_lease(&lease).await.unwrap();
    let lease = store
        .checkpoint(&lease, &Position::sequence("1", 0).unwrap())
        .await
        .unwrap();
    store.list_leases().await.unwrap();
    store.get_lease("shardId-0").await.unwrap();
    // A lost lease costs one request too: the failed condition returns the item.
    let mut stale = lease.clone();
    stale.counter = 0;
    assert!(store.renew_lease(&stale).await.unwrap_err().is_lease_lost());
    store.delete_lease(&lease).await.unwrap();

    let after = store.operation_counts();
    assert_eq!(
        counts(after),
        (
            before.scans + 1,
            before.gets + 1 + re_reads,
            before.updates + 5,
            before.deletes + 1
        )
    );
    assert_eq!(after.reads() + after.writes(), 8 + re_reads);
    // The store's count is what reached DynamoDB.
    let proxied: u64 = ["Scan", "GetItem", "UpdateItem", "DeleteItem"]
        .iter()
        .map(|op| proxy.count(op))
        .sum();
    assert_eq!(proxied, 8 + re_reads);
}

#[tokio::test]
async fn a_failed_condition_without_the_item_is_re_read() {
    // Servers that ignore ReturnValuesOnConditionCheckFailure answer without the item: the
    // store then reads it (consistently) to decide between "ours" and "lost".
    let (_aws, proxy, store, direct) = proxied(3).await;
    let lease = direct
        .create_lease_if_absent(&Lease::new("shardId-0", Position::TrimHorizon))
        .await
        .unwrap();
    let taken = direct.take_lease(&lease, "worker-a").await.unwrap();
    proxy.inject(Rule::on("UpdateItem").once().fault(Fault::error(
        400,
        "ConditionalCheckFailedException",
        "The conditional request failed",
    )));
    // Our take was in fact applied (by `direct`, standing in for a lost first attempt).
    let again = store.take_lease(&lease, "worker-a").await.unwrap();
    assert_eq!(again, taken);
    assert_eq!(proxy.count("GetItem"), 1);

    proxy.inject(Rule::on("UpdateItem").once().fault(Fault::error(
        400,
        "ConditionalCheckFailedException",
        "The conditional request failed",
    )));
    let err = store.take_lease(&taken, "worker-b").await.unwrap_err();
    assert!(matches!(err, LeaseError::LeaseLost { .. }), "{err:?}");
    assert_eq!(proxy.count("GetItem"), 2);
}

#[tokio::test]
async fn ensure_table_on_an_existing_table_is_one_request() {
    let (_aws, store) = fresh().await;
    let before = store.operation_counts().table_ops;
    assert!(!store.ensure_table().await.unwrap());
    assert_eq!(store.operation_counts().table_ops - before, 1);
}
