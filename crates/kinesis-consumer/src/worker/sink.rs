//! Checkpoints of a held lease, written through the lease store.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Mutex;

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
        let mut held = self.lease.lock().await;
        let updated = self
            .store
            .checkpoint(&held, &position)
            .await
            .map_err(to_checkpoint_error)?;
        *held = updated;
        Ok(())
    }

    async fn prepare(
        &self,
        position: Position,
        state: Option<Bytes>,
    ) -> Result<(), CheckpointError> {
        let mut held = self.lease.lock().await;
        let updated = self
            .store
            .prepare_checkpoint(&held, &position, state)
            .await
            .map_err(to_checkpoint_error)?;
        *held = updated;
        Ok(())
    }
}

pub(crate) fn to_checkpoint_error(e: LeaseError) -> CheckpointError {
    match e {
        e if e.is_lease_lost() => CheckpointError::LeaseLost,
        LeaseError::Throttled { .. } => CheckpointError::Throttled,
        other => CheckpointError::Store(Box::new(other)),
    }
}
