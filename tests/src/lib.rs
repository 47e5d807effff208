//! Support for the cross-crate tests: the chaos suite's ledger, verdict and drivers.
//!
//! Every chaos scenario follows the same shape:
//!
//! ```text
//!  produce(ids 0..n) ─► Producer ─► (FaultProxy?) ─► Kinesis ─► Worker(s) ─► Recorder
//!        │ outcome per id                                   (processes?)     │ (id, shard, seq, sub)
//!        ▼                                                                   ▼
//!      Ledger.put ───────────────────────► Verdict ◄─────────────── Ledger.delivered
//! ```
//!
//! The [`Verdict`] accounts for every id put: delivered once; delivered more than once, with
//! the reason read off the data (the same Kinesis record processed twice is a replay from the
//! last checkpoint; two different Kinesis records carrying the same id mean the producer sent
//! it twice after an unknown outcome); failed with a typed error; or lost (acknowledged and
//! never delivered). Each scenario states which duplicate reasons its faults make unavoidable;
//! anything else, and any loss, fails it.

pub mod chaos;
