//! The [`Checkpointer`]: validates positions, then writes through a [`CheckpointSink`].
//!
//! ```text
//!  processor ── checkpoint() / checkpoint_at(p) / prepare(p, state) ──► Checkpointer
//!                 rules (here, not in the store):                         │ one write at a time
//!                   last checkpoint ≤ p ≤ last delivered record           ▼
//!                   not after the lease was lost or the consumer ended  CheckpointSink
//!                                                                         (the lease table)
//! ```

use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::watch;

use crate::position::Position;

/// Why a checkpoint was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// This worker no longer holds the shard's lease: stop processing, the new owner
    /// resumes from the last checkpoint.
    #[error("the lease on the shard was lost; another worker resumes from the last checkpoint")]
    LeaseLost,
    /// The checkpoint store throttled the write; nothing was written. Retry later (or
    /// checkpoint with the next batch).
    #[error("the checkpoint write was throttled; nothing was written")]
    Throttled,
    /// The position is below the last checkpoint: checkpoints only move forward.
    #[error("cannot checkpoint at {requested}: it is before the last checkpoint {last_checkpoint}")]
    BeforeLastCheckpoint {
        /// The position asked for.
        requested: Position,
        /// The last checkpoint written.
        last_checkpoint: Position,
    },
    /// The position is beyond the last record delivered to the processor.
    #[error("cannot checkpoint at {requested}: the last delivered record is {largest_permitted}")]
    BeyondDelivered {
        /// The position asked for.
        requested: Position,
        /// The largest position that may be checkpointed now.
        largest_permitted: Position,
    },
    /// The shard consumer has finished (shard end, shutdown or processor stop); this
    /// checkpointer can no longer write.
    #[error("the shard consumer has shut down; the checkpointer can no longer write")]
    ShutDown,
    /// The checkpoint store failed.
    #[error("checkpoint store error: {0}")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

/// Where checkpoints are written: the worker implements it over the lease table, tests use
/// [`MemoryCheckpointSink`]. Implementations do not validate positions (the
/// [`Checkpointer`] has) and map a fencing failure to [`CheckpointError::LeaseLost`].
#[doc(hidden)]
#[async_trait]
pub trait CheckpointSink: Send + Sync + 'static {
    /// Records `position` as the shard's checkpoint (and clears any pending checkpoint).
    async fn checkpoint(&self, position: Position) -> Result<(), CheckpointError>;
    /// Records `position` and `state` as the pending (prepared) checkpoint.
    async fn prepare(
        &self,
        position: Position,
        state: Option<Bytes>,
    ) -> Result<(), CheckpointError>;
}

/// Why the checkpointer stopped accepting writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Closed {
    LeaseLost,
    ShutDown,
}

#[derive(Debug)]
struct State {
    last_checkpoint: Position,
    /// The last record handed to the processor.
    last_delivered: Option<Position>,
    /// Set while `shard_ended` runs: SHARD_END becomes permitted.
    shard_ended: bool,
    closed: Option<Closed>,
}

impl State {
    fn largest_permitted(&self) -> Position {
        if self.shard_ended {
            return Position::ShardEnd;
        }
        match &self.last_delivered {
            Some(d) if *d > self.last_checkpoint => d.clone(),
            _ => self.last_checkpoint.clone(),
        }
    }

    fn closed_error(&self) -> Option<CheckpointError> {
        self.closed.map(|c| match c {
            Closed::LeaseLost => CheckpointError::LeaseLost,
            Closed::ShutDown => CheckpointError::ShutDown,
        })
    }
}

/// The position rules, pure: `last_checkpoint ≤ requested ≤ largest_permitted`.
pub(crate) fn validate(
    requested: &Position,
    last_checkpoint: &Position,
    largest_permitted: &Position,
) -> Result<(), CheckpointError> {
    if requested < last_checkpoint {
        return Err(CheckpointError::BeforeLastCheckpoint {
            requested: requested.clone(),
            last_checkpoint: last_checkpoint.clone(),
        });
    }
    if requested > largest_permitted {
        return Err(CheckpointError::BeyondDelivered {
            requested: requested.clone(),
            largest_permitted: largest_permitted.clone(),
        });
    }
    Ok(())
}

struct Shared {
    shard_id: String,
    sink: Arc<dyn CheckpointSink>,
    state: Mutex<State>,
    /// Serialises writes: validation and write happen under it, so two concurrent
    /// checkpoints can never make the stored checkpoint go backwards.
    write: tokio::sync::Mutex<()>,
}

/// Records how far a shard has been processed. Cheap to clone; every clone writes for the
/// same shard. See [`CheckpointError`] for what can be refused.
///
/// Rules: a checkpoint must not be below the last checkpoint (equal is accepted and
/// rewritten) nor beyond the last record delivered to the processor; after the lease is
/// lost every call answers [`CheckpointError::LeaseLost`], after the shard consumer has
/// finished [`CheckpointError::ShutDown`].
#[derive(Clone)]
pub struct Checkpointer {
    shared: Arc<Shared>,
}

impl fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("Checkpointer")
            .field("shard_id", &self.shared.shard_id)
            .field("last_checkpoint", &state.last_checkpoint)
            .field("last_delivered", &state.last_delivered)
            .finish()
    }
}

impl Checkpointer {
    pub(crate) fn new(
        shard_id: String,
        sink: Arc<dyn CheckpointSink>,
        last_checkpoint: Position,
    ) -> Self {
        Checkpointer {
            shared: Arc::new(Shared {
                shard_id,
                sink,
                state: Mutex::new(State {
                    last_checkpoint,
                    last_delivered: None,
                    shard_ended: false,
                    closed: None,
                }),
                write: tokio::sync::Mutex::new(()),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a few plain values updated in one step; a panic elsewhere cannot
        // leave it half-written, so a poisoned lock is still consistent.
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The shard this checkpointer writes for.
    pub fn shard_id(&self) -> &str {
        &self.shared.shard_id
    }

    /// The last checkpoint written (or the one processing started from).
    pub fn last_checkpoint(&self) -> Position {
        self.lock().last_checkpoint.clone()
    }

    /// The position of the last record delivered to the processor, if any yet.
    pub fn last_delivered(&self) -> Option<Position> {
        self.lock().last_delivered.clone()
    }

    /// Checkpoints at the last record delivered to the processor. Does nothing when that
    /// is already the checkpoint (or nothing was delivered yet).
    pub async fn checkpoint(&self) -> Result<(), CheckpointError> {
        let _write = self.shared.write.lock().await;
        let target = {
            let state = self.lock();
            if let Some(e) = state.closed_error() {
                return Err(e);
            }
            match &state.last_delivered {
                Some(d) if *d > state.last_checkpoint => d.clone(),
                _ => return Ok(()),
            }
        };
        self.write_locked(target).await
    }

    /// Checkpoints at `position`: a record's [`position`](crate::processor::Record::position)
    /// (the sub-sequence number matters for KPL aggregates: processing resumes with the
    /// next sub-record).
    pub async fn checkpoint_at(&self, position: Position) -> Result<(), CheckpointError> {
        let _write = self.shared.write.lock().await;
        self.check(&position)?;
        self.write_locked(position).await
    }

    /// Phase one of a two-phase checkpoint: stores `position` (and optional application
    /// `state`) as the pending checkpoint, which the next owner of the lease sees in
    /// [`InitInput::pending_checkpoint`](crate::processor::InitInput). Commit it with
    /// [`PreparedCheckpoint::commit`].
    pub async fn prepare(
        &self,
        position: Position,
        state: Option<Bytes>,
    ) -> Result<PreparedCheckpoint, CheckpointError> {
        let _write = self.shared.write.lock().await;
        self.check(&position)?;
        let result = self.shared.sink.prepare(position.clone(), state).await;
        self.note_failure(&result);
        result.map(|()| PreparedCheckpoint {
            checkpointer: self.clone(),
            position,
        })
    }

    fn check(&self, position: &Position) -> Result<(), CheckpointError> {
        let state = self.lock();
        if let Some(e) = state.closed_error() {
            return Err(e);
        }
        validate(position, &state.last_checkpoint, &state.largest_permitted())
    }

    /// Writes under the write lock, after validation.
    async fn write_locked(&self, position: Position) -> Result<(), CheckpointError> {
        let result = self.shared.sink.checkpoint(position.clone()).await;
        self.note_failure(&result);
        if result.is_ok() {
            let mut state = self.lock();
            if position > state.last_checkpoint {
                state.last_checkpoint = position;
            }
        }
        result
    }

    fn note_failure(&self, result: &Result<(), CheckpointError>) {
        if let Err(CheckpointError::LeaseLost) = result {
            self.close(Closed::LeaseLost);
        }
    }

    // ---- the shard consumer's side ----

    pub(crate) fn set_delivered(&self, position: Position) {
        self.lock().last_delivered = Some(position);
    }

    /// Back to what was delivered before a batch that failed.
    pub(crate) fn reset_delivered(&self, position: Option<Position>) {
        self.lock().last_delivered = position;
    }

    pub(crate) fn permit_shard_end(&self) {
        self.lock().shard_ended = true;
    }

    /// Closes for writes; a lease loss is never downgraded to a shutdown.
    pub(crate) fn close(&self, why: Closed) {
        let mut state = self.lock();
        if state.closed != Some(Closed::LeaseLost) {
            state.closed = Some(why);
        }
    }

    pub(crate) fn closed(&self) -> Option<Closed> {
        self.lock().closed
    }

    /// The library's own SHARD_END write (after `shard_ended`).
    pub(crate) async fn record_shard_end(&self) -> Result<(), CheckpointError> {
        let _write = self.shared.write.lock().await;
        if let Some(e) = self.lock().closed_error() {
            return Err(e);
        }
        self.write_locked(Position::ShardEnd).await
    }
}

/// A prepared checkpoint, waiting for [`commit`](PreparedCheckpoint::commit).
#[derive(Debug)]
#[must_use = "a prepared checkpoint does nothing until committed"]
pub struct PreparedCheckpoint {
    checkpointer: Checkpointer,
    position: Position,
}

impl PreparedCheckpoint {
    /// The prepared position.
    pub fn position(&self) -> &Position {
        &self.position
    }

    /// Phase two: makes the prepared position the checkpoint (and clears the pending one).
    /// Fails like [`Checkpointer::checkpoint_at`], e.g. if a later checkpoint was written
    /// meanwhile.
    pub async fn commit(self) -> Result<(), CheckpointError> {
        self.checkpointer.checkpoint_at(self.position).await
    }
}

/// What a [`MemoryCheckpointSink`] was asked to write.
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkEvent {
    /// `checkpoint(position)`.
    Checkpoint(Position),
    /// `prepare(position, state)`.
    Prepare(Position, Option<Bytes>),
}

/// An in-memory [`CheckpointSink`] for tests: records every write, can be told to fail.
#[doc(hidden)]
#[derive(Debug)]
pub struct MemoryCheckpointSink {
    events: Mutex<Vec<SinkEvent>>,
    failures: Mutex<Vec<CheckpointError>>,
    lease_lost: Mutex<bool>,
    latest: watch::Sender<Option<Position>>,
}

impl Default for MemoryCheckpointSink {
    fn default() -> Self {
        MemoryCheckpointSink {
            events: Mutex::default(),
            failures: Mutex::default(),
            lease_lost: Mutex::new(false),
            latest: watch::channel(None).0,
        }
    }
}

impl MemoryCheckpointSink {
    /// A new, empty sink.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Every write so far, in order.
    pub fn events(&self) -> Vec<SinkEvent> {
        self.events.lock().unwrap().clone()
    }

    /// The checkpoints written, in order.
    pub fn checkpoints(&self) -> Vec<Position> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                SinkEvent::Checkpoint(p) => Some(p),
                SinkEvent::Prepare(..) => None,
            })
            .collect()
    }

    /// The last checkpoint written.
    pub fn last(&self) -> Option<Position> {
        self.latest.borrow().clone()
    }

    /// Waits until the last checkpoint satisfies `f`.
    pub async fn wait_until(&self, f: impl FnMut(&Option<Position>) -> bool) {
        let mut rx = self.latest.subscribe();
        let _ = rx.wait_for(f).await;
    }

    /// The next writes fail with these errors, in order.
    pub fn fail_next(&self, errors: impl IntoIterator<Item = CheckpointError>) {
        let mut failures = self.failures.lock().unwrap();
        failures.extend(errors);
    }

    /// From now on every write answers `LeaseLost`.
    pub fn lose_lease(&self) {
        *self.lease_lost.lock().unwrap() = true;
    }

    fn admit(&self) -> Result<(), CheckpointError> {
        if *self.lease_lost.lock().unwrap() {
            return Err(CheckpointError::LeaseLost);
        }
        let mut failures = self.failures.lock().unwrap();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.remove(0))
        }
    }
}

#[async_trait]
impl CheckpointSink for MemoryCheckpointSink {
    async fn checkpoint(&self, position: Position) -> Result<(), CheckpointError> {
        self.admit()?;
        self.events
            .lock()
            .unwrap()
            .push(SinkEvent::Checkpoint(position.clone()));
        self.latest.send_replace(Some(position));
        Ok(())
    }

    async fn prepare(
        &self,
        position: Position,
        state: Option<Bytes>,
    ) -> Result<(), CheckpointError> {
        self.admit()?;
        self.events
            .lock()
            .unwrap()
            .push(SinkEvent::Prepare(position, state));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(s: &str, sub: u64) -> Position {
        Position::sequence(s, sub).unwrap()
    }

    #[test]
    fn position_rules_table() {
        use Position::*;
        // (requested, last checkpoint, largest permitted, expected)
        let ok = "ok";
        let before = "before";
        let beyond = "beyond";
        let table = [
            (seq("10", 0), TrimHorizon, seq("20", 0), ok),
            (seq("20", 0), TrimHorizon, seq("20", 0), ok),
            (seq("20", 1), TrimHorizon, seq("20", 0), beyond),
            (seq("21", 0), TrimHorizon, seq("20", 0), beyond),
            (seq("10", 2), seq("10", 2), seq("20", 0), ok), // equal: rewritten
            (seq("10", 1), seq("10", 2), seq("20", 0), before),
            (seq("9", 5), seq("10", 0), seq("20", 0), before),
            (TrimHorizon, TrimHorizon, TrimHorizon, ok),
            (TrimHorizon, Latest, Latest, before),
            (Latest, TrimHorizon, seq("1", 0), ok),
            (ShardEnd, seq("10", 0), seq("20", 0), beyond),
            (ShardEnd, seq("10", 0), ShardEnd, ok),
            (seq("20", 3), seq("10", 0), ShardEnd, ok),
            (AtTimestamp, seq("10", 0), seq("20", 0), before),
        ];
        for (requested, last, largest, expected) in table {
            let got = match validate(&requested, &last, &largest) {
                Ok(()) => ok,
                Err(CheckpointError::BeforeLastCheckpoint { .. }) => before,
                Err(CheckpointError::BeyondDelivered { .. }) => beyond,
                Err(e) => panic!("unexpected {e}"),
            };
            assert_eq!(
                got, expected,
                "{requested} with last {last}, largest {largest}"
            );
        }
    }

    fn checkpointer(start: Position) -> (Checkpointer, Arc<MemoryCheckpointSink>) {
        let sink = MemoryCheckpointSink::new();
        (
            Checkpointer::new("shardId-0".into(), sink.clone(), start),
            sink,
        )
    }

    #[tokio::test]
    async fn checkpoint_writes_the_last_delivered_record_once() {
        let (c, sink) = checkpointer(Position::TrimHorizon);
        c.checkpoint().await.unwrap(); // nothing delivered: no write
        assert!(sink.events().is_empty());
        c.set_delivered(seq("5", 3));
        c.checkpoint().await.unwrap();
        c.checkpoint().await.unwrap(); // unchanged: no second write
        assert_eq!(sink.checkpoints(), [seq("5", 3)]);
        assert_eq!(c.last_checkpoint(), seq("5", 3));
    }

    #[tokio::test]
    async fn checkpoint_at_enforces_the_rules() {
        let (c, sink) = checkpointer(seq("5", 0));
        c.set_delivered(seq("9", 2));
        assert!(matches!(
            c.checkpoint_at(seq("9", 3)).await,
            Err(CheckpointError::BeyondDelivered { .. })
        ));
        c.checkpoint_at(seq("7", 0)).await.unwrap();
        assert!(matches!(
            c.checkpoint_at(seq("6", 0)).await,
            Err(CheckpointError::BeforeLastCheckpoint { .. })
        ));
        assert!(matches!(
            c.checkpoint_at(Position::ShardEnd).await,
            Err(CheckpointError::BeyondDelivered { .. })
        ));
        c.permit_shard_end();
        c.checkpoint_at(Position::ShardEnd).await.unwrap();
        assert_eq!(sink.checkpoints(), [seq("7", 0), Position::ShardEnd]);
    }

    #[tokio::test]
    async fn two_phase_checkpoint() {
        let (c, sink) = checkpointer(Position::TrimHorizon);
        c.set_delivered(seq("9", 0));
        let prepared = c
            .prepare(seq("8", 1), Some(Bytes::from_static(b"state")))
            .await
            .unwrap();
        assert_eq!(prepared.position(), &seq("8", 1));
        prepared.commit().await.unwrap();
        assert_eq!(
            sink.events(),
            [
                SinkEvent::Prepare(seq("8", 1), Some(Bytes::from_static(b"state"))),
                SinkEvent::Checkpoint(seq("8", 1)),
            ]
        );
        // A commit overtaken by a later checkpoint is refused.
        let stale = c.prepare(seq("8", 2), None).await.unwrap();
        c.checkpoint().await.unwrap();
        assert!(matches!(
            stale.commit().await,
            Err(CheckpointError::BeforeLastCheckpoint { .. })
        ));
    }

    #[tokio::test]
    async fn lease_loss_from_the_store_closes_the_checkpointer() {
        let (c, sink) = checkpointer(Position::TrimHorizon);
        c.set_delivered(seq("9", 0));
        sink.fail_next([CheckpointError::Throttled]);
        assert!(matches!(
            c.checkpoint().await,
            Err(CheckpointError::Throttled)
        ));
        assert_eq!(c.last_checkpoint(), Position::TrimHorizon);
        sink.fail_next([CheckpointError::LeaseLost]);
        assert!(matches!(
            c.checkpoint().await,
            Err(CheckpointError::LeaseLost)
        ));
        assert_eq!(c.closed(), Some(Closed::LeaseLost));
        // Later calls fail locally, without touching the store.
        assert!(matches!(
            c.checkpoint().await,
            Err(CheckpointError::LeaseLost)
        ));
        c.close(Closed::ShutDown);
        assert!(matches!(
            c.checkpoint().await,
            Err(CheckpointError::LeaseLost)
        ));
        assert!(sink.events().is_empty());
    }

    #[tokio::test]
    async fn shut_down_checkpointer_refuses() {
        let (c, _sink) = checkpointer(Position::TrimHorizon);
        c.set_delivered(seq("9", 0));
        c.close(Closed::ShutDown);
        assert!(matches!(
            c.checkpoint().await,
            Err(CheckpointError::ShutDown)
        ));
        assert!(matches!(
            c.prepare(seq("9", 0), None).await,
            Err(CheckpointError::ShutDown)
        ));
    }
}
