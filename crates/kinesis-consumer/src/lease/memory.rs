//! The in-memory lease store: the DynamoDB store's semantics without DynamoDB, for tests of
//! everything built on leases (and for the conformance suite to keep the two honest).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;

use super::{Lease, LeaseError, LeaseStore, LeaseUpdate, OperationCounts};

/// A fault the in-memory store injects into its next operations (see
/// [`InMemoryLeaseStore::inject`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemoryFault {
    /// The operation is not applied and fails with [`LeaseError::Throttled`].
    Throttle,
    /// The operation is not applied and fails with [`LeaseError::Store`].
    Unavailable,
    /// The operation is applied, then fails with [`LeaseError::Store`]: a lost answer that
    /// the client's retries did not recover. The caller cannot tell it from `Unavailable`.
    AnswerLost,
}

/// Leases in a `Mutex<BTreeMap>`, with the same conditions and results as
/// [`DynamoLeaseStore`](super::DynamoLeaseStore).
#[derive(Debug)]
pub struct InMemoryLeaseStore {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    table_exists: bool,
    leases: BTreeMap<String, Lease>,
    faults: VecDeque<MemoryFault>,
    counts: OperationCounts,
}

impl Default for InMemoryLeaseStore {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryLeaseStore {
    /// An empty store whose table exists.
    pub fn new() -> Self {
        InMemoryLeaseStore {
            state: Mutex::new(State {
                table_exists: true,
                ..State::default()
            }),
        }
    }

    /// A store whose table does not exist yet: operations fail with
    /// [`LeaseError::TableMissing`] until [`LeaseStore::ensure_table`].
    pub fn without_table() -> Self {
        InMemoryLeaseStore {
            state: Mutex::new(State::default()),
        }
    }

    /// Makes the next operation (of any kind) fail with `fault`; calls queue up, one fault
    /// per operation, in order.
    pub fn inject(&self, fault: MemoryFault) {
        self.lock().faults.push_back(fault);
    }

    /// Operations made so far (every call counts as one request, as in DynamoDB).
    pub fn operation_counts(&self) -> OperationCounts {
        self.lock().counts
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map half-updated (every change is
        // one insert or remove), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn check_table(&self) -> Result<(), LeaseError> {
        if self.table_exists {
            Ok(())
        } else {
            Err(LeaseError::TableMissing {
                table: "in-memory".into(),
            })
        }
    }

    /// Runs `op` under the next injected fault, if any.
    fn run<T>(
        &mut self,
        operation: &'static str,
        op: impl FnOnce(&mut State) -> Result<T, LeaseError>,
    ) -> Result<T, LeaseError> {
        self.check_table()?;
        let injected = |what: &str| -> super::BoxError { format!("injected fault: {what}").into() };
        match self.faults.pop_front() {
            None => op(self),
            Some(MemoryFault::Throttle) => Err(LeaseError::Throttled {
                operation,
                source: injected("throttled"),
            }),
            Some(MemoryFault::Unavailable) => Err(LeaseError::Store {
                operation,
                source: injected("unavailable"),
            }),
            Some(MemoryFault::AnswerLost) => {
                let _ = op(self);
                Err(LeaseError::Store {
                    operation,
                    source: injected("answer lost"),
                })
            }
        }
    }
}

/// The condition every write is conditional on.
fn unchanged(current: &Lease, observed: &Lease) -> bool {
    current.counter == observed.counter && current.owner == observed.owner
}

#[async_trait]
impl LeaseStore for InMemoryLeaseStore {
    async fn ensure_table(&self) -> Result<bool, LeaseError> {
        let mut state = self.lock();
        state.counts.table_ops += 1;
        let created = !state.table_exists;
        state.table_exists = true;
        Ok(created)
    }

    async fn list_leases(&self) -> Result<Vec<Lease>, LeaseError> {
        let mut state = self.lock();
        state.counts.scans += 1;
        state.run("list leases", |s| Ok(s.leases.values().cloned().collect()))
    }

    async fn get_lease(&self, lease_key: &str) -> Result<Option<Lease>, LeaseError> {
        let mut state = self.lock();
        state.counts.gets += 1;
        state.run("get lease", |s| Ok(s.leases.get(lease_key).cloned()))
    }

    async fn create_lease_if_absent(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        let mut state = self.lock();
        state.counts.updates += 1;
        state.run("create lease", |s| match s.leases.get(&lease.lease_key) {
            Some(existing) if existing == lease => Ok(existing.clone()),
            Some(_) => Err(LeaseError::AlreadyExists {
                key: lease.lease_key.clone(),
            }),
            None => {
                s.leases.insert(lease.lease_key.clone(), lease.clone());
                Ok(lease.clone())
            }
        })
    }

    async fn update_lease(
        &self,
        observed: &Lease,
        update: &LeaseUpdate,
    ) -> Result<Lease, LeaseError> {
        let mut state = self.lock();
        state.counts.updates += 1;
        state.run(update.name(), |s| {
            let key = &observed.lease_key;
            let Some(current) = s.leases.get_mut(key) else {
                return Err(LeaseError::NotFound { key: key.clone() });
            };
            let next = update.apply(observed);
            if unchanged(current, observed) {
                *current = next.clone();
                Ok(next)
            } else if *current == next {
                // Applied already (a repeat after an unknown outcome): see the module docs.
                Ok(next)
            } else {
                Err(LeaseError::LeaseLost {
                    key: key.clone(),
                    current: Some(Box::new(current.clone())),
                })
            }
        })
    }

    async fn delete_lease(&self, observed: &Lease) -> Result<(), LeaseError> {
        let mut state = self.lock();
        state.counts.deletes += 1;
        state.run("delete lease", |s| {
            let key = &observed.lease_key;
            match s.leases.get(key) {
                None => Ok(()),
                Some(current) if unchanged(current, observed) => {
                    s.leases.remove(key);
                    Ok(())
                }
                Some(current) => Err(LeaseError::LeaseLost {
                    key: key.clone(),
                    current: Some(Box::new(current.clone())),
                }),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::position::Position;

    macro_rules! conformance {
        ($($check:ident),* $(,)?) => {
            $(
                #[tokio::test]
                async fn $check() {
                    let store = InMemoryLeaseStore::new();
                    super::super::conformance::$check(&store).await;
                }
            )*

            #[test]
            fn every_conformance_check_runs() {
                assert_eq!([$(stringify!($check)),*], super::super::conformance::ALL);
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
        let store = InMemoryLeaseStore::without_table();
        super::super::conformance::table_missing_until_ensured(&store).await;
    }

    #[tokio::test]
    async fn faults_are_injected_in_order() {
        let store = InMemoryLeaseStore::new();
        let lease = store
            .create_lease_if_absent(&Lease::new("shardId-0", Position::TrimHorizon))
            .await
            .unwrap();
        store.inject(MemoryFault::Throttle);
        store.inject(MemoryFault::AnswerLost);
        let err = store.take_lease(&lease, "a").await.unwrap_err();
        assert!(matches!(err, LeaseError::Throttled { .. }), "{err:?}");
        // Applied, but the caller is told it failed ...
        let err = store.take_lease(&lease, "a").await.unwrap_err();
        assert!(err.is_retryable(), "{err:?}");
        // ... and repeating the same write recognises it.
        let taken = store.take_lease(&lease, "a").await.unwrap();
        assert_eq!((taken.counter, taken.owner.as_deref()), (1, Some("a")));
        assert_eq!(store.operation_counts().updates, 4);
    }
}
