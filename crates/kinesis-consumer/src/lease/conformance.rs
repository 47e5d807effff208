//! The one conformance suite every [`LeaseStore`] must pass: the in-memory store in unit
//! tests, DynamoDB (through `local-aws`) in `tests/lease_store.rs`.
//!
//! Each check takes an empty store whose table exists (except
//! [`table_missing_until_ensured`]) and panics on the first difference. [`ALL`] names every
//! check that expects an empty store, so that each harness can verify it runs them all.

use std::collections::BTreeSet;

use bytes::Bytes;
use kinesis_aggregation::{HashKey, HashKeyRange};

use super::{Lease, LeaseError, LeaseStore, LeaseUpdate};
use crate::position::Position;

/// The names of the checks that take an empty store, in order.
pub const ALL: [&str; 15] = [
    "ensure_table_is_idempotent",
    "create_get_and_list",
    "create_if_absent_conflicts",
    "missing_leases",
    "renew_bumps_the_counter_only",
    "renew_after_losing_the_lease_fails",
    "take_unowned_and_steal",
    "concurrent_takes_have_one_winner",
    "evict_removes_the_owner",
    "checkpoint_resets_switches_and_pending",
    "two_phase_checkpoint",
    "shard_end_records_children",
    "delete_is_conditional",
    "repeated_writes_are_recognised",
    "state_round_trips_exactly",
];

fn seq(sequence: &str, sub: u64) -> Position {
    Position::sequence(sequence, sub).expect("a valid sequence number")
}

/// A lease with every optional field set.
pub fn full_lease(key: &str) -> Lease {
    let mut lease = Lease::new(
        key,
        seq(
            "49590338271490256608559692538361571095921575989136588898",
            3,
        ),
    )
    .with_parents(["shardId-000000000000", "shardId-000000000001"])
    .with_hash_key_range(HashKeyRange::new(HashKey(0), HashKey(u128::MAX / 2)));
    lease.owner = Some("worker-a".into());
    lease.counter = 41;
    lease.pending_checkpoint = Some(seq(
        "49590338271490256608559692538361571095921575989136588999",
        0,
    ));
    lease.pending_checkpoint_state = Some(Bytes::from_static(b"\x00app state\xff"));
    lease.owner_switches_since_checkpoint = 2;
    lease.child_shard_ids = ["shardId-000000000007".to_owned()].into();
    lease
}

async fn create(store: &dyn LeaseStore, lease: Lease) -> Lease {
    let created = store
        .create_lease_if_absent(&lease)
        .await
        .expect("create lease");
    assert_eq!(created, lease);
    created
}

async fn owned(store: &dyn LeaseStore, key: &str, owner: &str) -> Lease {
    let lease = create(store, Lease::new(key, Position::TrimHorizon)).await;
    store.take_lease(&lease, owner).await.expect("take")
}

fn assert_lost(result: Result<Lease, LeaseError>, expected_current: &Lease) {
    match result {
        Err(LeaseError::LeaseLost { key, current }) => {
            assert_eq!(key, expected_current.lease_key);
            // A store may not know the current state; when it says, it must be right.
            if let Some(current) = current {
                assert_eq!(*current, *expected_current);
            }
        }
        other => panic!("expected LeaseLost, got {other:?}"),
    }
}

async fn current(store: &dyn LeaseStore, key: &str) -> Lease {
    store
        .get_lease(key)
        .await
        .expect("get lease")
        .expect("the lease exists")
}

/// `ensure_table` on an existing table changes nothing.
pub async fn ensure_table_is_idempotent(store: &dyn LeaseStore) {
    create(store, full_lease("shardId-000000000002")).await;
    assert!(!store.ensure_table().await.expect("ensure table"));
    assert!(!store.ensure_table().await.expect("ensure table"));
    assert_eq!(store.list_leases().await.expect("list").len(), 1);
}

/// What is created is read back as is, by key and by listing.
pub async fn create_get_and_list(store: &dyn LeaseStore) {
    assert!(store.list_leases().await.expect("list").is_empty());
    let full = create(store, full_lease("shardId-000000000002")).await;
    let plain = create(store, Lease::new("shardId-000000000003", Position::Latest)).await;
    assert_eq!(current(store, &full.lease_key).await, full);
    assert_eq!(current(store, &plain.lease_key).await, plain);
    let mut listed = store.list_leases().await.expect("list");
    listed.sort_by(|a, b| a.lease_key.cmp(&b.lease_key));
    assert_eq!(listed, [full, plain]);
}

/// A second, different lease with the same key is refused; the same lease again is not (a
/// create whose answer was lost, repeated).
pub async fn create_if_absent_conflicts(store: &dyn LeaseStore) {
    let lease = create(
        store,
        Lease::new("shardId-000000000004", Position::TrimHorizon),
    )
    .await;
    let again = store.create_lease_if_absent(&lease).await.expect("repeat");
    assert_eq!(again, lease);
    let mut other = lease.clone();
    other.checkpoint = Position::Latest;
    match store.create_lease_if_absent(&other).await {
        Err(LeaseError::AlreadyExists { key }) => assert_eq!(key, lease.lease_key),
        result => panic!("expected AlreadyExists, got {result:?}"),
    }
    assert_eq!(current(store, &lease.lease_key).await, lease);
}

/// Reading a missing lease is `None`; writing one is `NotFound`, never a creation.
pub async fn missing_leases(store: &dyn LeaseStore) {
    assert_eq!(store.get_lease("shardId-404").await.expect("get"), None);
    let ghost = Lease::new("shardId-404", Position::TrimHorizon);
    for update in updates() {
        match store.update_lease(&ghost, &update).await {
            Err(LeaseError::NotFound { key }) => assert_eq!(key, "shardId-404"),
            result => panic!("{}: expected NotFound, got {result:?}", update.name()),
        }
    }
    assert!(store.list_leases().await.expect("list").is_empty());
    // Deleting what is not there is done already.
    store.delete_lease(&ghost).await.expect("delete missing");
}

fn updates() -> Vec<LeaseUpdate> {
    vec![
        LeaseUpdate::Renew,
        LeaseUpdate::Take {
            owner: "worker-b".into(),
        },
        LeaseUpdate::Evict,
        LeaseUpdate::Checkpoint {
            position: seq("123", 4),
        },
        LeaseUpdate::PrepareCheckpoint {
            position: seq("124", 0),
            state: Some(Bytes::from_static(b"state")),
        },
        LeaseUpdate::PrepareCheckpoint {
            position: seq("125", 0),
            state: None,
        },
        LeaseUpdate::ShardEnd {
            child_shard_ids: ["shardId-8".to_owned(), "shardId-9".to_owned()].into(),
        },
        LeaseUpdate::ShardEnd {
            child_shard_ids: BTreeSet::new(),
        },
    ]
}

/// A renewal increments the counter and changes nothing else.
pub async fn renew_bumps_the_counter_only(store: &dyn LeaseStore) {
    let held = create(store, full_lease("shardId-000000000005")).await;
    let renewed = store.renew_lease(&held).await.expect("renew");
    assert_eq!(renewed.counter, held.counter + 1);
    assert_eq!(
        Lease {
            counter: held.counter,
            ..renewed.clone()
        },
        held
    );
    let renewed = store.renew_lease(&renewed).await.expect("renew again");
    assert_eq!(renewed.counter, held.counter + 2);
    assert_eq!(current(store, &held.lease_key).await, renewed);
}

/// Once another worker took the lease, the old owner's renewal and checkpoint fail with
/// `LeaseLost` and change nothing.
pub async fn renew_after_losing_the_lease_fails(store: &dyn LeaseStore) {
    let mine = owned(store, "shardId-000000000006", "worker-a").await;
    let theirs = store.take_lease(&mine, "worker-b").await.expect("steal");
    assert_lost(store.renew_lease(&mine).await, &theirs);
    assert_lost(store.checkpoint(&mine, &seq("77", 0)).await, &theirs);
    assert_lost(store.evict_lease(&mine).await, &theirs);
    assert_eq!(current(store, &mine.lease_key).await, theirs);
}

/// Taking an unowned lease sets the owner; stealing also counts an owner switch; a take on a
/// stale counter fails.
pub async fn take_unowned_and_steal(store: &dyn LeaseStore) {
    let free = create(
        store,
        Lease::new("shardId-000000000007", Position::TrimHorizon),
    )
    .await;
    let taken = store.take_lease(&free, "worker-a").await.expect("take");
    assert_eq!(taken.owner.as_deref(), Some("worker-a"));
    assert_eq!(
        (taken.counter, taken.owner_switches_since_checkpoint),
        (1, 0)
    );
    let stolen = store.take_lease(&taken, "worker-b").await.expect("steal");
    assert_eq!(stolen.owner.as_deref(), Some("worker-b"));
    assert_eq!(
        (stolen.counter, stolen.owner_switches_since_checkpoint),
        (2, 1)
    );
    // The stale view of the free lease no longer matches.
    assert_lost(store.take_lease(&free, "worker-c").await, &stolen);
    assert_eq!(current(store, &free.lease_key).await, stolen);
}

/// Two workers taking the same lease from the same snapshot: exactly one wins.
pub async fn concurrent_takes_have_one_winner(store: &dyn LeaseStore) {
    let free = create(
        store,
        Lease::new("shardId-000000000008", Position::TrimHorizon),
    )
    .await;
    let (a, b) = tokio::join!(
        store.take_lease(&free, "worker-a"),
        store.take_lease(&free, "worker-b")
    );
    let (winner, loser) = match (a, b) {
        (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w, l),
        other => panic!("expected exactly one winner, got {other:?}"),
    };
    assert!(loser.is_lease_lost(), "{loser:?}");
    assert_eq!(winner.counter, 1);
    assert_eq!(current(store, &free.lease_key).await, winner);
}

/// Eviction removes the owner and bumps the counter; the lease can be taken at once.
pub async fn evict_removes_the_owner(store: &dyn LeaseStore) {
    let held = owned(store, "shardId-000000000009", "worker-a").await;
    let released = store.evict_lease(&held).await.expect("evict");
    assert_eq!((released.owner.as_deref(), released.counter), (None, 2));
    assert_eq!(current(store, &held.lease_key).await, released);
    let retaken = store.take_lease(&released, "worker-b").await.expect("take");
    // Released, then taken by another: not an owner switch in the KCL's sense.
    assert_eq!(retaken.owner_switches_since_checkpoint, 0);
}

/// A checkpoint records the position, clears the pending checkpoint and resets the switch
/// count.
pub async fn checkpoint_resets_switches_and_pending(store: &dyn LeaseStore) {
    let held = create(store, full_lease("shardId-000000000010")).await;
    let position = seq(
        "49590338271490256608559692538361571095921575989136589000",
        9,
    );
    let done = store
        .checkpoint(&held, &position)
        .await
        .expect("checkpoint");
    assert_eq!(done.checkpoint, position);
    assert_eq!(done.pending_checkpoint, None);
    assert_eq!(done.pending_checkpoint_state, None);
    assert_eq!(done.owner_switches_since_checkpoint, 0);
    assert_eq!(done.counter, held.counter + 1);
    assert_eq!(done.parent_shard_ids, held.parent_shard_ids);
    assert_eq!(done.hash_key_range, held.hash_key_range);
    assert_eq!(current(store, &held.lease_key).await, done);
    // Sentinels are checkpoints too.
    let back = store
        .checkpoint(&done, &Position::TrimHorizon)
        .await
        .expect("checkpoint a sentinel");
    assert_eq!(
        current(store, &held.lease_key).await.checkpoint,
        back.checkpoint
    );
}

/// Prepare with state, prepare without (state removed), then commit.
pub async fn two_phase_checkpoint(store: &dyn LeaseStore) {
    let held = owned(store, "shardId-000000000011", "worker-a").await;
    let pending = seq("500", 2);
    let state = Bytes::from_static(b"{\"offset\":17}");
    let prepared = store
        .prepare_checkpoint(&held, &pending, Some(state.clone()))
        .await
        .expect("prepare");
    assert_eq!(prepared.pending_checkpoint, Some(pending.clone()));
    assert_eq!(prepared.pending_checkpoint_state, Some(state));
    assert_eq!(prepared.checkpoint, Position::TrimHorizon);
    assert_eq!(current(store, &held.lease_key).await, prepared);

    let later = seq("600", 0);
    let prepared = store
        .prepare_checkpoint(&prepared, &later, None)
        .await
        .expect("prepare again");
    assert_eq!(prepared.pending_checkpoint_state, None);
    assert_eq!(current(store, &held.lease_key).await, prepared);

    let committed = store.checkpoint(&prepared, &later).await.expect("commit");
    assert_eq!(committed.checkpoint, later);
    assert_eq!(committed.pending_checkpoint, None);
    assert_eq!(current(store, &held.lease_key).await, committed);
}

/// SHARD_END records the children and finishes the lease.
pub async fn shard_end_records_children(store: &dyn LeaseStore) {
    let held = owned(store, "shardId-000000000012", "worker-a").await;
    let children: BTreeSet<String> = ["shardId-000000000013".into(), "shardId-000000000014".into()]
        .into_iter()
        .collect();
    let ended = store.mark_shard_end(&held, &children).await.expect("end");
    assert!(ended.is_finished());
    assert_eq!(ended.child_shard_ids, children);
    assert_eq!(current(store, &held.lease_key).await, ended);

    // Without children (unknown yet): the lease is finished, the attribute untouched.
    let other = owned(store, "shardId-000000000015", "worker-a").await;
    let ended = store
        .mark_shard_end(&other, &BTreeSet::new())
        .await
        .expect("end");
    assert!(ended.is_finished() && ended.child_shard_ids.is_empty());
    assert_eq!(current(store, &other.lease_key).await, ended);
}

/// A delete on a stale lease fails; on the current one it removes it; a repeat is fine.
pub async fn delete_is_conditional(store: &dyn LeaseStore) {
    let first = create(
        store,
        Lease::new("shardId-000000000016", Position::ShardEnd),
    )
    .await;
    let taken = store.take_lease(&first, "worker-a").await.expect("take");
    match store.delete_lease(&first).await {
        Err(LeaseError::LeaseLost { key, .. }) => assert_eq!(key, first.lease_key),
        other => panic!("expected LeaseLost, got {other:?}"),
    }
    assert_eq!(current(store, &first.lease_key).await, taken);
    store.delete_lease(&taken).await.expect("delete");
    assert_eq!(store.get_lease(&first.lease_key).await.expect("get"), None);
    store.delete_lease(&taken).await.expect("delete again");
    assert!(store.list_leases().await.expect("list").is_empty());
}

/// The lost-answer rule: a write repeated with the same observed lease, after it was applied,
/// returns the applied result instead of `LeaseLost`, for every kind of write.
pub async fn repeated_writes_are_recognised(store: &dyn LeaseStore) {
    for (i, update) in updates().into_iter().enumerate() {
        let key = format!("shardId-1000{i}");
        let observed = create(store, full_lease(&key)).await;
        let first = store
            .update_lease(&observed, &update)
            .await
            .expect("first attempt");
        assert_eq!(first, update.apply(&observed), "{}", update.name());
        let repeated = store
            .update_lease(&observed, &update)
            .await
            .unwrap_or_else(|e| panic!("{}: repeat not recognised: {e:?}", update.name()));
        assert_eq!(repeated, first, "{}", update.name());
        assert_eq!(current(store, &key).await, first, "{}", update.name());

        // A different write on the same stale lease is not ours: lost.
        let other = if update == LeaseUpdate::Renew {
            LeaseUpdate::Evict
        } else {
            LeaseUpdate::Renew
        };
        assert_lost(store.update_lease(&observed, &other).await, &first);
    }
    // A create repeated after it was applied.
    let lease = full_lease("shardId-20000");
    create(store, lease.clone()).await;
    assert_eq!(
        store.create_lease_if_absent(&lease).await.expect("repeat"),
        lease
    );
}

/// Leases with unusual but valid contents survive a write and a read unchanged.
pub async fn state_round_trips_exactly(store: &dyn LeaseStore) {
    let mut lease = full_lease("123456789012:orders:1700000000:shardId-000000000017");
    lease.pending_checkpoint = Some(Position::ShardEnd);
    lease.pending_checkpoint_state = Some(Bytes::from(vec![0u8; 1024]));
    lease.hash_key_range = Some(HashKeyRange::FULL);
    lease.checkpoint = Position::AtTimestamp;
    lease.counter = u64::from(u32::MAX) * 4;
    create(store, lease.clone()).await;
    assert_eq!(current(store, &lease.lease_key).await, lease);
    let renewed = store.renew_lease(&lease).await.expect("renew");
    assert_eq!(renewed.counter, lease.counter + 1);
    assert_eq!(current(store, &lease.lease_key).await, renewed);
}

/// For a store created without its table: operations fail with `TableMissing`, then
/// `ensure_table` creates it (once).
pub async fn table_missing_until_ensured(store: &dyn LeaseStore) {
    match store.list_leases().await {
        Err(LeaseError::TableMissing { .. }) => {}
        other => panic!("expected TableMissing, got {other:?}"),
    }
    match store
        .create_lease_if_absent(&Lease::new("shardId-0", Position::TrimHorizon))
        .await
    {
        Err(LeaseError::TableMissing { .. }) => {}
        other => panic!("expected TableMissing, got {other:?}"),
    }
    assert!(store.ensure_table().await.expect("create the table"));
    assert!(!store.ensure_table().await.expect("already there"));
    create(store, Lease::new("shardId-0", Position::TrimHorizon)).await;
    assert_eq!(store.list_leases().await.expect("list").len(), 1);
}
