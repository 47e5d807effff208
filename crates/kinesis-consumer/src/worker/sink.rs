//! Checkpoints of a held lease, written through the lease store.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Mutex;
use tracing::Instrument;

use crate::lease::{Lease, LeaseError, LeaseStore};
use crate::position::Position;
use crate::processor::{CheckpointError, CheckpointSink};

/// The lease as this worker last wrote or renewed it. The renewer and the checkpointer share
/// it: both writes are conditional on the counter, so each must start from the counter the
/// other one left (one mutex, held across the write, keeps them in turn).
pub(crate) type SharedLease = Arc<Mutex<Lease>>;

/// A [`CheckpointSink`] over one held lease.
pub(crate) struct LeaseSink {
    pub(crate) store: Arc<dyn LeaseStore>,
    pub(crate) lease: SharedLease,
}

#[async_trait]
impl CheckpointSink for LeaseSink {
    async fn checkpoint(&self, position: Position) -> Result<(), CheckpointError> {
        // A sequence number is a position, not payload: it may go into the span.
        let span = tracing::info_span!(
            "shard.checkpoint",
            shard_id = tracing::field::Empty,
            position = %position,
            ok = tracing::field::Empty,
        );
        let result = async {
            let mut held = self.lease.lock().await;
            tracing::Span::current().record("shard_id", held.shard_id());
            match self.store.checkpoint(&held, &position).await {
                Ok(updated) => {
                    *held = updated;
                    Ok(())
                }
                Err(e) => Err(self.after_failure(&mut held, e).await),
            }
        }
        .instrument(span.clone())
        .await;
        span.record("ok", result.is_ok());
        result
    }

    async fn prepare(
        &self,
        position: Position,
        state: Option<Bytes>,
    ) -> Result<(), CheckpointError> {
        let mut held = self.lease.lock().await;
        match self.store.prepare_checkpoint(&held, &position, state).await {
            Ok(updated) => {
                *held = updated;
                Ok(())
            }
            Err(e) => Err(self.after_failure(&mut held, e).await),
        }
    }
}

impl LeaseSink {
    /// A write whose outcome is unknown (throttled after retries, a connection lost) may have
    /// been applied: the lease's counter would then have moved on without us, and the next
    /// renewal, conditional on the old counter, would read as a lost lease. Re-read it: while
    /// the owner is still this worker, every change is ours, so adopt the current item.
    async fn after_failure(&self, held: &mut Lease, error: LeaseError) -> CheckpointError {
        if error.is_retryable()
            && let Ok(Some(current)) = self.store.get_lease(&held.lease_key).await
            && current.owner == held.owner
        {
            *held = current;
        }
        to_checkpoint_error(error)
    }
}

pub(crate) fn to_checkpoint_error(e: LeaseError) -> CheckpointError {
    match e {
        e if e.is_lease_lost() => CheckpointError::LeaseLost,
        LeaseError::Throttled { .. } => CheckpointError::Throttled,
        other => CheckpointError::Store(Box::new(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::{InMemoryLeaseStore, MemoryFault};

    #[tokio::test]
    async fn a_checkpoint_with_a_lost_answer_does_not_make_the_next_renewal_a_loss() {
        let store = Arc::new(InMemoryLeaseStore::new());
        store.ensure_table().await.unwrap();
        let lease = store
            .create_lease_if_absent(&Lease::new("shardId-0", Position::TrimHorizon))
            .await
            .unwrap();
        let lease = store.take_lease(&lease, "w").await.unwrap();
        let sink = LeaseSink {
            store: store.clone(),
            lease: Arc::new(Mutex::new(lease)),
        };
        // Applied, but the answer never came back.
        store.inject(MemoryFault::AnswerLost);
        let position = Position::sequence("42", 0).unwrap();
        let err = sink.checkpoint(position.clone()).await.unwrap_err();
        assert!(matches!(err, CheckpointError::Store(_)), "{err:?}");
        // The renewer starts from what the sink holds: it must still be ours.
        let held = sink.lease.lock().await.clone();
        let renewed = store.renew_lease(&held).await.expect("not a lost lease");
        assert_eq!(renewed.checkpoint, position, "the checkpoint was applied");
        // And a write that was not applied leaves the lease as it was.
        store.inject(MemoryFault::Unavailable);
        *sink.lease.lock().await = renewed.clone();
        let later = Position::sequence("43", 0).unwrap();
        assert!(sink.checkpoint(later.clone()).await.is_err());
        assert_eq!(*sink.lease.lock().await, renewed);
        sink.checkpoint(later).await.unwrap();
    }
}
