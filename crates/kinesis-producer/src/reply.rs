//! How an outcome gets back to the caller: one channel per `put`, one shared slot vector per
//! `put_batch`.
//!
//! ```text
//!  put ────────► Reply::One(oneshot) ───────────────────────► PutHandle
//!  put_batch ──► Reply::Batch(batch, i)  (one per record) ─┐
//!                  engine: results[i] = outcome ◄──────────┘
//!                  the last of the batch wakes ─────────────► PutBatchHandle
//! ```
//!
//! A oneshot channel costs an allocation, a few atomic operations and a wake-up per record.
//! A batch shares one allocation among all its records, and its handle is woken once, when
//! the last outcome is in: what makes `put_batch` cheaper per record than `put`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::sync::oneshot;

use crate::error::PutFailure;
use crate::record::PutOutcome;

/// A record's final outcome.
pub(crate) type Outcome = Result<PutOutcome, PutFailure>;

/// Where the engine sends a record's outcome. Dropped without sending (the engine task was
/// cancelled), the caller sees [`PutFailure::Lost`].
pub(crate) enum Reply {
    /// The failure is boxed: it is large (the record, the attempts) and rare, and the
    /// channel's slot is sized for the larger of the two.
    One(oneshot::Sender<Result<PutOutcome, Box<PutFailure>>>),
    Batch(BatchSlot),
}

impl Reply {
    pub(crate) fn send(self, outcome: Outcome) {
        match self {
            Reply::One(tx) => {
                let _ = tx.send(outcome.map_err(Box::new));
            }
            Reply::Batch(slot) => slot.fill(outcome),
        }
    }
}

/// One record's place in a batch.
pub(crate) struct BatchSlot {
    /// `None` once filled.
    batch: Option<Arc<Batch>>,
    index: u32,
}

impl BatchSlot {
    pub(crate) fn new(batch: &Arc<Batch>, index: u32) -> BatchSlot {
        BatchSlot {
            batch: Some(Arc::clone(batch)),
            index,
        }
    }

    fn fill(mut self, outcome: Outcome) {
        if let Some(b) = self.batch.take() {
            b.fill(self.index as usize, outcome);
        }
    }
}

impl Drop for BatchSlot {
    fn drop(&mut self) {
        // A dropped oneshot sender tells its receiver by itself; a batch must be told.
        if let Some(b) = self.batch.take() {
            b.fill(self.index as usize, Err(PutFailure::Lost));
        }
    }
}

/// The outcomes of one `put_batch`, filled in by the engine as they come.
pub(crate) struct Batch {
    state: Mutex<BatchState>,
}

struct BatchState {
    results: Vec<Option<Outcome>>,
    filled: usize,
    /// The number of records, once `put_batch` has handed them all over.
    sealed: Option<usize>,
    waker: Option<Waker>,
}

impl BatchState {
    fn complete(&self) -> bool {
        self.sealed == Some(self.filled)
    }
}

impl Batch {
    pub(crate) fn new(capacity: usize) -> Arc<Batch> {
        Arc::new(Batch {
            state: Mutex::new(BatchState {
                results: Vec::with_capacity(capacity),
                filled: 0,
                sealed: None,
                waker: None,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, BatchState> {
        // The state stays consistent whatever panicked while holding the lock.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn fill(&self, index: usize, outcome: Outcome) {
        let waker = {
            let mut s = self.lock();
            if s.results.len() <= index {
                s.results.resize_with(index + 1, || None);
            }
            if s.results[index].replace(outcome).is_none() {
                s.filled += 1;
            }
            if s.complete() { s.waker.take() } else { None }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Every one of the `n` records has been handed over (or refused).
    pub(crate) fn seal(&self, n: usize) {
        let waker = {
            let mut s = self.lock();
            s.sealed = Some(n);
            if s.complete() { s.waker.take() } else { None }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The outcome of one [`Producer::put`](crate::Producer::put), to be awaited. Dropping it
/// does not cancel the put.
#[derive(Debug)]
#[must_use = "a PutHandle tells whether the record was written; drop it explicitly to ignore that"]
pub struct PutHandle {
    pub(crate) rx: oneshot::Receiver<Result<PutOutcome, Box<PutFailure>>>,
}

impl Future for PutHandle {
    type Output = Result<PutOutcome, PutFailure>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(|r| match r {
            Ok(Ok(o)) => Ok(o),
            Ok(Err(f)) => Err(*f),
            Err(_) => Err(PutFailure::Lost),
        })
    }
}

/// The outcomes of one [`Producer::put_batch`](crate::Producer::put_batch), to be awaited:
/// one per record, in the order the records were given, once every record has its final
/// outcome. Dropping it does not cancel the puts.
#[must_use = "a PutBatchHandle tells whether the records were written; drop it explicitly to ignore that"]
pub struct PutBatchHandle {
    pub(crate) batch: Arc<Batch>,
}

impl std::fmt::Debug for PutBatchHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.batch.lock();
        f.debug_struct("PutBatchHandle")
            .field("filled", &s.filled)
            .field("records", &s.sealed)
            .finish()
    }
}

impl Future for PutBatchHandle {
    type Output = Vec<Result<PutOutcome, PutFailure>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.batch.lock();
        if s.complete() {
            let results = std::mem::take(&mut s.results);
            return Poll::Ready(
                results
                    .into_iter()
                    .map(|r| r.unwrap_or(Err(PutFailure::Lost)))
                    .collect(),
            );
        }
        match &mut s.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            w => *w = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}
