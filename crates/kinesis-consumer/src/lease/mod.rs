//! Leases: which worker processes which shard, and how far it got.
//!
//! The lease table is the KCL 2.x one, attribute for attribute, so that a Java KCL application
//! and this crate can share it or take it over from each other (see [`DynamoLeaseStore`] for
//! the exact schema).
//!
//! ```text
//!                 ┌──────────── every take pass (≈ 2 × failover time) ────────────┐
//!                 ▼                                                               │
//!   LeaseStore::list_leases ──▶ LeaseTracker::observe(now)     (counter changes    │
//!        (Scan, all leases)         │                            on the local     │
//!                                   ▼                            monotonic clock) │
//!                      assignment::plan(snapshot, me, tracker, now, config)       │
//!                                   │  pure: no I/O, no clock of its own           │
//!                                   ▼                                             │
//!                    Plan { take, steal } ──▶ LeaseStore::take_lease ─────────────┘
//!
//!   every renew pass (≈ failover / 3):   renew_lease(held) ──▶ new counter, or LeaseLost
//!   the shard consumer:                  checkpoint / prepare_checkpoint / mark_shard_end
//!   graceful shutdown:                   evict_lease (owner removed: taken at the next pass)
//! ```
//!
//! # Fencing by counter
//!
//! Every write except [`LeaseStore::create_lease_if_absent`] is conditional on the lease's
//! `leaseCounter` (and owner) as the caller last saw it, and increments the counter. The
//! caller keeps the [`Lease`] each write returns and passes it to the next write: that is how
//! a worker knows nobody else touched the lease in between. It follows that writes to one
//! lease must be serialised by the caller (a renewal and a checkpoint racing on the same
//! counter: one of them sees [`LeaseError::LeaseLost`]).
//!
//! # Lost answers
//!
//! A write can be applied while its answer is lost (a connection reset after DynamoDB applied
//! it); the SDK retries, and the retry fails its condition against the write's own result.
//! Every store therefore treats a failed condition as success when the lease is now exactly
//! what the write would have produced ([`LeaseUpdate::apply`] on the lease the caller passed):
//! same owner, counter one higher, same checkpoint and so on. The counter only grows, so that
//! state cannot be anybody else's. The same rule makes every write safe to repeat after an
//! error of unknown outcome ([`LeaseError::Throttled`], [`LeaseError::Store`]): call it again
//! with the same lease and it is either applied or recognised as applied.
//!
//! # Backends
//!
//! - [`DynamoLeaseStore`]: the real one, on `aws-sdk-dynamodb`.
//! - [`InMemoryLeaseStore`]: the same semantics in a `Mutex<BTreeMap>`, with injectable
//!   faults, for tests of everything built on leases.
//!
//! Both pass the one [`conformance`] suite.

use std::collections::BTreeSet;

use bytes::Bytes;
use kinesis_aggregation::HashKeyRange;

use crate::position::Position;

pub mod assignment;
#[doc(hidden)]
pub mod conformance;
mod dynamo;
mod memory;

pub use assignment::{AssignmentConfig, LeaseTracker, Plan, plan};
pub use dynamo::DynamoLeaseStore;
pub use memory::{InMemoryLeaseStore, MemoryFault};

/// Boxed error of a backend, kept as the source of [`LeaseError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// One lease: a shard (or a multi-stream shard), its owner and its checkpoint.
///
/// Fields map one to one onto the KCL 2.x lease table attributes (see [`DynamoLeaseStore`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lease {
    /// `leaseKey`: the shard id, or `account:stream:creationEpoch:shardId` for multi-stream
    /// applications.
    pub lease_key: String,
    /// `leaseOwner`: the worker holding the lease; `None` when nobody does.
    pub owner: Option<String>,
    /// `leaseCounter`: incremented by every write; the fencing token and the heartbeat.
    pub counter: u64,
    /// `checkpoint` and `checkpointSubSequenceNumber`.
    pub checkpoint: Position,
    /// `pendingCheckpoint` and `pendingCheckpointSubSequenceNumber`: the first phase of a
    /// two-phase checkpoint.
    pub pending_checkpoint: Option<Position>,
    /// `pendingCheckpointState`: application state saved with the pending checkpoint.
    pub pending_checkpoint_state: Option<Bytes>,
    /// `ownerSwitchesSinceCheckpoint`: how many times the lease changed hands since the last
    /// checkpoint (a high value means shards are bouncing between workers without progress).
    pub owner_switches_since_checkpoint: u64,
    /// `parentShardId`: one parent after a split, two after a merge, none for original shards.
    pub parent_shard_ids: BTreeSet<String>,
    /// `childShardIds`: written when the shard ends.
    pub child_shard_ids: BTreeSet<String>,
    /// `startingHashKey` and `endingHashKey`.
    pub hash_key_range: Option<HashKeyRange>,
}

impl Lease {
    /// A new, unowned lease at `checkpoint` with counter 0 and nothing else set: what shard
    /// discovery creates.
    pub fn new(lease_key: impl Into<String>, checkpoint: Position) -> Lease {
        Lease {
            lease_key: lease_key.into(),
            owner: None,
            counter: 0,
            checkpoint,
            pending_checkpoint: None,
            pending_checkpoint_state: None,
            owner_switches_since_checkpoint: 0,
            parent_shard_ids: BTreeSet::new(),
            child_shard_ids: BTreeSet::new(),
            hash_key_range: None,
        }
    }

    /// This lease with these parents.
    pub fn with_parents<I, S>(mut self, parents: I) -> Lease
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.parent_shard_ids = parents.into_iter().map(Into::into).collect();
        self
    }

    /// This lease with this hash-key range.
    pub fn with_hash_key_range(mut self, range: HashKeyRange) -> Lease {
        self.hash_key_range = Some(range);
        self
    }

    /// The shard was read to its end and checkpointed at `SHARD_END`: nothing left to do.
    pub fn is_finished(&self) -> bool {
        self.checkpoint == Position::ShardEnd
    }

    /// Whether `worker` holds the lease (expiry aside: see [`LeaseTracker`]).
    pub fn is_owned_by(&self, worker: &str) -> bool {
        self.owner.as_deref() == Some(worker)
    }

    /// The shard id: the lease key, or its last `:`-separated part for multi-stream keys.
    pub fn shard_id(&self) -> &str {
        self.lease_key.rsplit(':').next().unwrap_or(&self.lease_key)
    }
}

/// A conditional write to one lease. [`apply`](LeaseUpdate::apply) is its exact effect;
/// every [`LeaseStore`] implements exactly that, and the [`LeaseStore`] convenience methods
/// are thin wrappers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaseUpdate {
    /// Heartbeat: the counter goes up by one.
    Renew,
    /// The lease moves to `owner` (taken when unowned or expired, or stolen).
    /// `ownerSwitchesSinceCheckpoint` goes up by one when a different owner held it (as in
    /// the KCL, taking an unowned lease is not a switch).
    Take {
        /// The new owner.
        owner: String,
    },
    /// The owner is removed (graceful release, or eviction): any worker takes it at its next
    /// pass instead of waiting for the failover time.
    Evict,
    /// A checkpoint: pending checkpoint cleared, `ownerSwitchesSinceCheckpoint` back to 0.
    Checkpoint {
        /// Where processing got to.
        position: Position,
    },
    /// The first phase of a two-phase checkpoint.
    PrepareCheckpoint {
        /// The position to be committed later.
        position: Position,
        /// Application state stored with it (`None` removes any earlier state).
        state: Option<Bytes>,
    },
    /// The shard ended and was fully processed: a checkpoint at `SHARD_END` that also records
    /// the child shards.
    ShardEnd {
        /// The children (none is allowed: the attribute is then left as it was).
        child_shard_ids: BTreeSet<String>,
    },
}

impl LeaseUpdate {
    /// The lease after this write, applied to `observed` (which the write is conditional on).
    pub fn apply(&self, observed: &Lease) -> Lease {
        let mut next = observed.clone();
        next.counter = observed.counter + 1;
        match self {
            LeaseUpdate::Renew => {}
            LeaseUpdate::Take { owner } => {
                if observed.owner.as_ref().is_some_and(|old| old != owner) {
                    next.owner_switches_since_checkpoint += 1;
                }
                next.owner = Some(owner.clone());
            }
            LeaseUpdate::Evict => next.owner = None,
            LeaseUpdate::Checkpoint { position } => checkpointed(&mut next, position.clone()),
            LeaseUpdate::PrepareCheckpoint { position, state } => {
                next.pending_checkpoint = Some(position.clone());
                next.pending_checkpoint_state = state.clone();
            }
            LeaseUpdate::ShardEnd { child_shard_ids } => {
                checkpointed(&mut next, Position::ShardEnd);
                if !child_shard_ids.is_empty() {
                    next.child_shard_ids = child_shard_ids.clone();
                }
            }
        }
        next
    }

    /// A short name for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            LeaseUpdate::Renew => "renew",
            LeaseUpdate::Take { .. } => "take",
            LeaseUpdate::Evict => "evict",
            LeaseUpdate::Checkpoint { .. } => "checkpoint",
            LeaseUpdate::PrepareCheckpoint { .. } => "prepare checkpoint",
            LeaseUpdate::ShardEnd { .. } => "shard end",
        }
    }
}

fn checkpointed(lease: &mut Lease, position: Position) {
    lease.checkpoint = position;
    lease.pending_checkpoint = None;
    lease.pending_checkpoint_state = None;
    lease.owner_switches_since_checkpoint = 0;
}

/// What went wrong with a lease-table operation.
///
/// After [`Throttled`](LeaseError::Throttled) or [`Store`](LeaseError::Store) the write may
/// or may not have been applied; repeating it with the same lease is safe (see the
/// [module docs](self#lost-answers)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// The condition failed: someone else changed the lease since the caller read it (taken,
    /// renewed by another owner, evicted). The caller must stop processing the shard.
    #[error("lease {key} was lost: someone else changed it")]
    LeaseLost {
        /// The lease key.
        key: String,
        /// The lease as it is now, when the store returned it.
        current: Option<Box<Lease>>,
    },
    /// [`LeaseStore::create_lease_if_absent`]: a different lease with this key exists.
    #[error("lease {key} already exists")]
    AlreadyExists {
        /// The lease key.
        key: String,
    },
    /// The lease does not exist (deleted, or never created).
    #[error("lease {key} does not exist")]
    NotFound {
        /// The lease key.
        key: String,
    },
    /// The store asked us to slow down and the client's retries were exhausted.
    #[error("the lease table throttled {operation}")]
    Throttled {
        /// What was throttled.
        operation: &'static str,
        /// The backend's error.
        #[source]
        source: BoxError,
    },
    /// The lease table does not exist ([`LeaseStore::ensure_table`] creates it).
    #[error("lease table {table} does not exist")]
    TableMissing {
        /// The table name.
        table: String,
    },
    /// The table exists but cannot be a KCL lease table (wrong key schema).
    #[error("table {table} is not a KCL lease table: {reason}")]
    IncompatibleTable {
        /// The table name.
        table: String,
        /// What is wrong.
        reason: String,
    },
    /// An item claims to be a lease but cannot be read as one.
    #[error("item {key} is not a valid lease: {reason}")]
    InvalidLease {
        /// The item's `leaseKey` (empty when even that is missing).
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// Any other failure of the backend (network, server error, ...).
    #[error("lease table operation {operation} failed")]
    Store {
        /// The operation.
        operation: &'static str,
        /// The backend's error.
        #[source]
        source: BoxError,
    },
}

impl LeaseError {
    /// Whether the caller no longer holds the lease: [`LeaseLost`](LeaseError::LeaseLost)
    /// or [`NotFound`](LeaseError::NotFound) on a write.
    pub fn is_lease_lost(&self) -> bool {
        matches!(
            self,
            LeaseError::LeaseLost { .. } | LeaseError::NotFound { .. }
        )
    }

    /// Whether trying again later can succeed (throttling, transport and server errors).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            LeaseError::Throttled { .. } | LeaseError::Store { .. }
        )
    }
}

/// Operations a store made, for the cost of a lease table (DynamoDB bills per request).
/// Counted per API call: the SDK's own retries of one call are not counted again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OperationCounts {
    /// Scan pages (each one request).
    pub scans: u64,
    /// Single-item reads (GetItem), including re-reads after a failed condition.
    pub gets: u64,
    /// Conditional writes (UpdateItem), including creates.
    pub updates: u64,
    /// Deletes (DeleteItem).
    pub deletes: u64,
    /// Table management (DescribeTable, CreateTable).
    pub table_ops: u64,
}

impl OperationCounts {
    /// Read requests: scan pages and gets.
    pub fn reads(&self) -> u64 {
        self.scans + self.gets
    }

    /// Write requests: updates and deletes.
    pub fn writes(&self) -> u64 {
        self.updates + self.deletes
    }
}

/// The lease table. Implementors fill the six required methods; the others are the
/// everyday operations expressed as [`LeaseUpdate`]s.
///
/// Every conditional write returns the lease as it now is, so the caller keeps its counter in
/// sync; see the [module docs](self) for fencing and lost answers.
#[async_trait::async_trait]
pub trait LeaseStore: Send + Sync + std::fmt::Debug {
    /// Creates the table if it does not exist and waits until it can be used. An existing
    /// table is accepted as long as its key is `leaseKey` (extra attributes and indexes, as
    /// the KCL 3.x adds, are fine). Returns whether it created the table.
    async fn ensure_table(&self) -> Result<bool, LeaseError>;

    /// Every lease in the table, in no particular order. Items that are not leases (the KCL
    /// 3.5's `entityType` other than `LEASE`) are skipped.
    async fn list_leases(&self) -> Result<Vec<Lease>, LeaseError>;

    /// One lease, read consistently.
    async fn get_lease(&self, lease_key: &str) -> Result<Option<Lease>, LeaseError>;

    /// Writes `lease` if no lease with its key exists; [`LeaseError::AlreadyExists`]
    /// otherwise (unless the existing lease is exactly `lease`: then this returns it, so that
    /// a create whose answer was lost succeeds when repeated).
    async fn create_lease_if_absent(&self, lease: &Lease) -> Result<Lease, LeaseError>;

    /// Applies `update` if the lease still has `observed`'s counter and owner, and returns
    /// the result ([`LeaseUpdate::apply`]). [`LeaseError::LeaseLost`] when it changed,
    /// [`LeaseError::NotFound`] when it is gone.
    async fn update_lease(
        &self,
        observed: &Lease,
        update: &LeaseUpdate,
    ) -> Result<Lease, LeaseError>;

    /// Deletes the lease if it still has `observed`'s counter and owner. Deleting a lease
    /// that is already gone succeeds.
    async fn delete_lease(&self, observed: &Lease) -> Result<(), LeaseError>;

    /// Heartbeat of a held lease: counter + 1, conditional on counter and owner.
    async fn renew_lease(&self, held: &Lease) -> Result<Lease, LeaseError> {
        self.update_lease(held, &LeaseUpdate::Renew).await
    }

    /// Takes (or steals) `observed` for `owner`: conditional on the counter and owner seen.
    async fn take_lease(&self, observed: &Lease, owner: &str) -> Result<Lease, LeaseError> {
        let update = LeaseUpdate::Take {
            owner: owner.to_owned(),
        };
        self.update_lease(observed, &update).await
    }

    /// Removes the owner (graceful release, or eviction of `observed`'s owner).
    async fn evict_lease(&self, observed: &Lease) -> Result<Lease, LeaseError> {
        self.update_lease(observed, &LeaseUpdate::Evict).await
    }

    /// Records a checkpoint for a held lease.
    async fn checkpoint(&self, held: &Lease, position: &Position) -> Result<Lease, LeaseError> {
        let update = LeaseUpdate::Checkpoint {
            position: position.clone(),
        };
        self.update_lease(held, &update).await
    }

    /// Records a pending checkpoint (and optional application state) for a held lease.
    async fn prepare_checkpoint(
        &self,
        held: &Lease,
        position: &Position,
        state: Option<Bytes>,
    ) -> Result<Lease, LeaseError> {
        let update = LeaseUpdate::PrepareCheckpoint {
            position: position.clone(),
            state,
        };
        self.update_lease(held, &update).await
    }

    /// Checkpoints a held lease at `SHARD_END` and records its children.
    async fn mark_shard_end(
        &self,
        held: &Lease,
        child_shard_ids: &BTreeSet<String>,
    ) -> Result<Lease, LeaseError> {
        let update = LeaseUpdate::ShardEnd {
            child_shard_ids: child_shard_ids.clone(),
        };
        self.update_lease(held, &update).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(s: &str, sub: u64) -> Position {
        Position::sequence(s, sub).unwrap()
    }

    #[test]
    fn updates_do_what_the_kcl_does() {
        let mut base = Lease::new("shardId-1", seq("100", 2));
        base.owner = Some("a".into());
        base.counter = 7;
        base.owner_switches_since_checkpoint = 2;
        base.pending_checkpoint = Some(seq("120", 0));
        base.pending_checkpoint_state = Some(Bytes::from_static(b"s"));

        let renewed = LeaseUpdate::Renew.apply(&base);
        assert_eq!(renewed.counter, 8);
        assert_eq!(
            Lease {
                counter: 7,
                ..renewed
            },
            base
        );

        let take = |owner: &str| LeaseUpdate::Take {
            owner: owner.into(),
        };
        let stolen = take("b").apply(&base);
        assert_eq!(
            (
                stolen.owner.as_deref(),
                stolen.counter,
                stolen.owner_switches_since_checkpoint
            ),
            (Some("b"), 8, 3)
        );
        // Taking back one's own lease, or an unowned one, is not a switch (as in the KCL).
        assert_eq!(take("a").apply(&base).owner_switches_since_checkpoint, 2);
        let unowned = LeaseUpdate::Evict.apply(&base);
        assert_eq!((unowned.owner.as_deref(), unowned.counter), (None, 8));
        assert_eq!(take("b").apply(&unowned).owner_switches_since_checkpoint, 2);

        let cp = LeaseUpdate::Checkpoint {
            position: seq("130", 0),
        }
        .apply(&base);
        assert_eq!(cp.checkpoint, seq("130", 0));
        assert_eq!(
            (cp.pending_checkpoint, cp.pending_checkpoint_state),
            (None, None)
        );
        assert_eq!(cp.owner_switches_since_checkpoint, 0);

        let prepared = LeaseUpdate::PrepareCheckpoint {
            position: seq("140", 1),
            state: None,
        }
        .apply(&base);
        assert_eq!(prepared.pending_checkpoint, Some(seq("140", 1)));
        assert_eq!(prepared.pending_checkpoint_state, None);
        assert_eq!(prepared.checkpoint, base.checkpoint);

        let children: BTreeSet<String> = ["shardId-2".into(), "shardId-3".into()].into();
        let ended = LeaseUpdate::ShardEnd {
            child_shard_ids: children.clone(),
        }
        .apply(&base);
        assert!(ended.is_finished());
        assert_eq!(ended.child_shard_ids, children);
        assert_eq!(ended.owner_switches_since_checkpoint, 0);
    }

    #[test]
    fn shard_id_of_single_and_multi_stream_keys() {
        let lease = Lease::new("shardId-000000000001", Position::TrimHorizon);
        assert_eq!(lease.shard_id(), "shardId-000000000001");
        let lease = Lease::new(
            "123456789012:orders:1700000000:shardId-000000000004",
            Position::TrimHorizon,
        );
        assert_eq!(lease.shard_id(), "shardId-000000000004");
    }

    #[test]
    fn lost_and_retryable_errors() {
        let lost = LeaseError::LeaseLost {
            key: "k".into(),
            current: None,
        };
        assert!(lost.is_lease_lost() && !lost.is_retryable());
        assert!(LeaseError::NotFound { key: "k".into() }.is_lease_lost());
        let throttled = LeaseError::Throttled {
            operation: "renew",
            source: "slow down".into(),
        };
        assert!(throttled.is_retryable() && !throttled.is_lease_lost());
    }
}
