//! How an outcome gets back to the caller: one channel per `put`, one shared table per
//! `put_batch`.
//!
//! ```text
//!  put ────────► Reply::One(oneshot) ─────────────────────────────────► PutHandle
//!  put_batch ──► Batch (slots) ─┬─ chunk ─► engine: Batches.register ─► id
//!                               │           records carry Reply::Batch { id, index }
//!                               │  first-try successes of one Kinesis record, per batch:
//!                               │    one lock, one Landing, 16 bytes per record
//!                               └─ the last outcome wakes ───────────► PutBatchHandle
//!                                    (PutOutcomes built there, in the caller's task)
//! ```
//!
//! What this saves per record, and why it matters (the producer's CPU per record is a
//! measured target, `docs/BENCHMARKS.md`): a oneshot channel costs an allocation, atomic
//! operations and a wake-up per record. A batch record costs no reference count (its batch
//! is known by a number in the engine's [`Batches`], not by an `Arc` per record), and its
//! outcome, in the common case of a success at the first attempt, is a 16-byte slot
//! written under a lock taken once per Kinesis record and batch. The full [`PutOutcome`]s
//! are built by the handle, on the caller's thread, where the shared [`Landing`]'s reference
//! count is not contended with the engine's.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::error::PutFailure;
use crate::record::{Landing, PutOutcome};

/// A record's final outcome.
pub(crate) type Outcome = Result<PutOutcome, PutFailure>;

/// Where the engine sends a record's outcome. A dropped `One` tells its receiver by itself
/// ([`PutFailure::Lost`]); batch records are told by their batch's entry in [`Batches`]
/// when the engine goes away.
pub(crate) enum Reply {
    One(oneshot::Sender<Message>),
    /// Record `index` of the batch registered as `batch` in the engine's [`Batches`]
    /// ([`UNREGISTERED`] until the engine has it).
    Batch {
        batch: u32,
        index: u32,
    },
}

/// The batch number of a record not yet handed to the engine.
pub(crate) const UNREGISTERED: u32 = u32::MAX;

/// What a `put`'s channel carries: 24 bytes, so that the channel's allocation stays in the
/// allocator's fast small-size bins (a full [`Outcome`] made it 170 bytes), and the
/// [`PutOutcome`] is built by the handle, on the caller's thread.
#[derive(Debug)]
pub(crate) enum Message {
    /// Succeeded at its first attempt (almost every record).
    Landed {
        landing: Arc<Landing>,
        sub: u32,
        delay_ns: u64,
    },
    /// Anything else: a failure, or a success after retries. Large and rare: boxed.
    Other(Box<Outcome>),
}

/// A wait in nanoseconds, saturating (a wait over 584 years is not a concern).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The engine's table of the batches it holds records of.
#[derive(Default)]
pub(crate) struct Batches {
    entries: Vec<Option<Entry>>,
    free: Vec<u32>,
    /// Reused by [`Batches::landed`]: `(index, sub-sequence, delay in ns)`.
    run: Vec<(u32, u32, u64)>,
}

struct Entry {
    batch: Arc<Batch>,
    /// Records of this entry still without an outcome.
    left: usize,
}

impl Drop for Entry {
    fn drop(&mut self) {
        // The engine is going away (its task was cancelled, the runtime shut down) with
        // records of this batch unfinished: they are lost, and the handle must hear it.
        if self.left > 0 {
            self.batch.abandon();
        }
    }
}

impl Batches {
    /// Takes a chunk of `records` records of `batch`; its records carry the number returned.
    pub(crate) fn register(&mut self, batch: Arc<Batch>, records: usize) -> u32 {
        let entry = Some(Entry {
            batch,
            left: records,
        });
        match self.free.pop() {
            Some(id) => {
                self.entries[id as usize] = entry;
                id
            }
            None => {
                self.entries.push(entry);
                (self.entries.len() - 1) as u32
            }
        }
    }

    /// Sends one record's outcome, whatever its kind.
    pub(crate) fn send(&mut self, reply: Reply, outcome: Outcome) {
        match reply {
            Reply::One(tx) => {
                let _ = tx.send(Message::Other(Box::new(outcome)));
            }
            Reply::Batch { batch, index } => {
                if let Some(e) = self.entry(batch) {
                    e.batch.fill(index as usize, outcome);
                    self.finished(batch, 1);
                }
            }
        }
    }

    /// Sends the outcomes of user records that all succeeded at their first attempt, in one
    /// Kinesis record: `records` yields each one's reply, sub-sequence number and wait
    /// before the attempt. Consecutive records of one batch cost one lock.
    pub(crate) fn landed(
        &mut self,
        landing: &Arc<Landing>,
        records: impl IntoIterator<Item = (Reply, u32, Duration)>,
    ) {
        let mut run = std::mem::take(&mut self.run);
        let mut current = UNREGISTERED;
        for (reply, sub, delay) in records {
            match reply {
                Reply::One(tx) => {
                    let _ = tx.send(Message::Landed {
                        landing: Arc::clone(landing),
                        sub,
                        delay_ns: nanos(delay),
                    });
                }
                Reply::Batch { batch, index } => {
                    if batch != current {
                        self.fill_run(current, landing, &mut run);
                        current = batch;
                    }
                    run.push((index, sub, nanos(delay)));
                }
            }
        }
        self.fill_run(current, landing, &mut run);
        self.run = run;
    }

    fn fill_run(&mut self, batch: u32, landing: &Arc<Landing>, run: &mut Vec<(u32, u32, u64)>) {
        if run.is_empty() {
            return;
        }
        if let Some(e) = self.entry(batch) {
            e.batch.fill_landed(landing, run);
            self.finished(batch, run.len());
        }
        run.clear();
    }

    fn entry(&mut self, batch: u32) -> Option<&mut Entry> {
        self.entries
            .get_mut(batch as usize)
            .and_then(Option::as_mut)
    }

    /// `n` records of entry `batch` have their outcome; the entry goes once all have.
    fn finished(&mut self, batch: u32, n: usize) {
        let Some(e) = self.entry(batch) else {
            return;
        };
        e.left -= n;
        if e.left == 0 {
            self.entries[batch as usize] = None;
            self.free.push(batch);
        }
    }
}

/// One record's place in a batch.
enum Slot {
    Empty,
    /// Succeeded at its first attempt: the shared attempt's place in `landings`, the
    /// record's sub-sequence number, its wait before the attempt in nanoseconds.
    Landed {
        landing: u32,
        sub: u32,
        delay_ns: u64,
    },
    /// Anything else: a failure, or a success after retries.
    Done(Box<Outcome>),
}

/// The outcomes of one `put_batch`, filled in by the engine as they come.
pub(crate) struct Batch {
    state: Mutex<BatchState>,
}

struct BatchState {
    slots: Vec<Slot>,
    landings: Vec<Arc<Landing>>,
    filled: usize,
    /// The number of records, once `put_batch` has handed them all over.
    sealed: Option<usize>,
    /// The engine went away without finishing some records.
    abandoned: bool,
    waker: Option<Waker>,
}

impl BatchState {
    fn complete(&self) -> bool {
        self.sealed
            .is_some_and(|n| n == self.filled || self.abandoned)
    }

    fn slot(&mut self, index: usize) -> &mut Slot {
        if self.slots.len() <= index {
            self.slots.resize_with(index + 1, || Slot::Empty);
        }
        &mut self.slots[index]
    }

    /// The waker to call once the lock is released, if the batch just completed.
    fn waker_if_complete(&mut self) -> Option<Waker> {
        if self.complete() {
            self.waker.take()
        } else {
            None
        }
    }
}

impl Batch {
    pub(crate) fn new(capacity: usize) -> Arc<Batch> {
        let mut slots = Vec::new();
        slots.resize_with(capacity, || Slot::Empty);
        Arc::new(Batch {
            state: Mutex::new(BatchState {
                slots,
                landings: Vec::new(),
                filled: 0,
                sealed: None,
                abandoned: false,
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
            let slot = s.slot(index);
            let was_empty = matches!(slot, Slot::Empty);
            *slot = Slot::Done(Box::new(outcome));
            if was_empty {
                s.filled += 1;
            }
            s.waker_if_complete()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn fill_landed(&self, shared: &Arc<Landing>, run: &[(u32, u32, u64)]) {
        let waker = {
            let mut s = self.lock();
            let landing = s.landings.len() as u32;
            s.landings.push(Arc::clone(shared));
            for &(index, sub, delay_ns) in run {
                let slot = s.slot(index as usize);
                let was_empty = matches!(slot, Slot::Empty);
                *slot = Slot::Landed {
                    landing,
                    sub,
                    delay_ns,
                };
                if was_empty {
                    s.filled += 1;
                }
            }
            s.waker_if_complete()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The engine is gone: records without an outcome by now are lost.
    pub(crate) fn abandon(&self) {
        let waker = {
            let mut s = self.lock();
            s.abandoned = true;
            s.waker_if_complete()
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
            if s.slots.len() > n {
                s.slots.truncate(n);
            }
            s.waker_if_complete()
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
    pub(crate) rx: oneshot::Receiver<Message>,
}

impl Future for PutHandle {
    type Output = Result<PutOutcome, PutFailure>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(|r| match r {
            Ok(Message::Landed {
                landing,
                sub,
                delay_ns,
            }) => Ok(PutOutcome::first_try(
                landing,
                sub,
                Duration::from_nanos(delay_ns),
            )),
            Ok(Message::Other(outcome)) => *outcome,
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
            let slots = std::mem::take(&mut s.slots);
            let landings = std::mem::take(&mut s.landings);
            drop(s);
            return Poll::Ready(
                slots
                    .into_iter()
                    .map(|slot| match slot {
                        Slot::Empty => Err(PutFailure::Lost),
                        Slot::Landed {
                            landing,
                            sub,
                            delay_ns,
                        } => Ok(PutOutcome::first_try(
                            Arc::clone(&landings[landing as usize]),
                            sub,
                            Duration::from_nanos(delay_ns),
                        )),
                        Slot::Done(outcome) => *outcome,
                    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn landed(seq: &str) -> Arc<Landing> {
        Arc::new(Landing {
            shard_id: "shardId-000000000000".into(),
            sequence_number: seq.into(),
            aggregated: true,
            started: std::time::Instant::now(),
            duration: Duration::from_millis(5),
        })
    }

    fn batch_reply(batch: u32, index: u32) -> Reply {
        Reply::Batch { batch, index }
    }

    #[tokio::test]
    async fn a_batch_resolves_in_order_once_every_record_has_its_outcome() {
        let mut batches = Batches::default();
        let batch = Batch::new(3);
        let id = batches.register(Arc::clone(&batch), 3);
        batch.seal(3);
        let a = landed("1");
        // Out of order, across two landings and a failure.
        batches.landed(&a, [(batch_reply(id, 2), 7, Duration::from_millis(1))]);
        batches.send(batch_reply(id, 1), Err(PutFailure::Lost));
        let handle = PutBatchHandle {
            batch: Arc::clone(&batch),
        };
        let b = landed("2");
        batches.landed(&b, [(batch_reply(id, 0), 0, Duration::from_millis(2))]);
        let out = handle.await;
        assert_eq!(out.len(), 3);
        let first = out[0].as_ref().expect("landed");
        assert_eq!(first.sequence_number(), "2");
        assert_eq!(first.sub_sequence_number(), 0);
        assert_eq!(first.attempts()[0].delay(), Duration::from_millis(2));
        assert!(matches!(out[1], Err(PutFailure::Lost)));
        let third = out[2].as_ref().expect("landed");
        assert_eq!(third.sequence_number(), "1");
        assert_eq!(third.sub_sequence_number(), 7);
        assert_eq!(third.attempts()[0].duration(), Duration::from_millis(5));
        // Every record finished: the entry is gone and its number reused.
        assert!(batches.entries.iter().all(Option::is_none));
        assert_eq!(batches.register(Batch::new(0), 1), id);
    }

    #[tokio::test]
    async fn records_left_when_the_engine_goes_are_lost() {
        let mut batches = Batches::default();
        let batch = Batch::new(2);
        let id = batches.register(Arc::clone(&batch), 2);
        batch.seal(2);
        batches.landed(&landed("1"), [(batch_reply(id, 0), 0, Duration::ZERO)]);
        drop(batches);
        let out = PutBatchHandle { batch }.await;
        assert!(out[0].is_ok());
        assert!(matches!(out[1], Err(PutFailure::Lost)));
    }

    #[tokio::test]
    async fn a_lone_put_gets_the_shared_landing() {
        let mut batches = Batches::default();
        let (tx, rx) = oneshot::channel();
        batches.landed(
            &landed("9"),
            [(Reply::One(tx), 3, Duration::from_millis(4))],
        );
        let o = PutHandle { rx }.await.expect("landed");
        assert_eq!((o.sequence_number(), o.sub_sequence_number()), ("9", 3));
        assert!(o.is_aggregated());
    }
}
