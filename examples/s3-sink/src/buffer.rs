//! One shard's next object, and the cut rule that decides where objects end.
//!
//! The rule is what makes a replay rewrite the same objects, so it only looks at the
//! records since the last cut (never at how reads batched them), in this order:
//!
//! ```text
//!  offer(record) ──► sealed (a cut whose write has not succeeded yet)? ─► CutFirst
//!                ──► non-empty and (count ≥ max_records or size ≥ max_bytes
//!                      or size + record > max_bytes
//!                      or record.arrival ≥ first.arrival + max_age)  ─► CutFirst
//!                ──► take it; count or size now at the limit? ─► Taken { full: true }
//!  end of a call ──► age_due: at the tip of the shard and the clock past
//!                    first.arrival + max_age + grace ─► cut (the quiet-shard flush)
//! ```
//!
//! Sizes are of the encoded records before compression, so they do not depend on the
//! compressor. Arrival times are Kinesis' `ApproximateArrivalTimestamp`, stored with each
//! record, so they are the same on every read.

use std::io::Write;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use flate2::write::GzEncoder;
use kinesis_consumer::SequenceNumber;
use tokio::time::Instant;

use crate::format::Compression;

/// The thresholds of the cut rule.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_records: usize,
    pub max_bytes: usize,
    pub max_age: Duration,
    pub age_grace: Duration,
}

/// The object's bytes as they are appended.
enum Body {
    Plain(Vec<u8>),
    // Compressed record by record: memory holds the compressed size, and the output is a
    // function of the same writes in the same order, so a replay produces the same bytes.
    Gzip(GzEncoder<Vec<u8>>),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Body::Plain(v) => write!(f, "Plain({} bytes)", v.len()),
            Body::Gzip(e) => write!(f, "Gzip({} bytes so far)", e.get_ref().len()),
        }
    }
}

impl Body {
    fn new(compression: Compression) -> Body {
        match compression {
            Compression::None => Body::Plain(Vec::new()),
            Compression::Gzip => {
                Body::Gzip(GzEncoder::new(Vec::new(), flate2::Compression::default()))
            }
        }
    }
}

/// What [`Buffer::offer`] decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Offer {
    /// Not taken: write the buffer first, then offer the record again.
    CutFirst,
    /// Taken; `full` means the buffer must be written now.
    Taken { full: bool },
}

/// The records of one shard not yet written: the next object.
#[derive(Debug)]
pub(crate) struct Buffer {
    compression: Compression,
    body: Body,
    /// Encoded size before compression (what `max_bytes` counts).
    size: usize,
    count: usize,
    first: Option<SequenceNumber>,
    last: Option<SequenceNumber>,
    /// The first record's arrival in Kinesis.
    first_arrival: Option<SystemTime>,
    /// When the first record was taken: the age when Kinesis gave no arrival time.
    taken_at: Option<Instant>,
    /// The finished object once cut: kept until its write succeeds, so that a retry sends
    /// the same bytes and nothing joins it.
    sealed: Option<Bytes>,
}

impl Buffer {
    pub fn new(compression: Compression) -> Buffer {
        Buffer {
            compression,
            body: Body::new(compression),
            size: 0,
            count: 0,
            first: None,
            last: None,
            first_arrival: None,
            taken_at: None,
            sealed: None,
        }
    }

    /// Applies the cut rule to the next record (see the [module docs](self)).
    pub fn offer(
        &mut self,
        position: SequenceNumber,
        encoded: &[u8],
        arrival: Option<SystemTime>,
        limits: &Limits,
        now: Instant,
    ) -> Offer {
        if self.sealed.is_some() {
            return Offer::CutFirst;
        }
        if self.count > 0 {
            let aged = match (self.first_arrival, arrival) {
                (Some(first), Some(arrival)) => first
                    .checked_add(limits.max_age)
                    .is_some_and(|deadline| arrival >= deadline),
                _ => false,
            };
            // A full buffer here is one whose write failed before it could be sealed.
            if aged
                || self.count >= limits.max_records
                || self.size >= limits.max_bytes
                || self.size + encoded.len() > limits.max_bytes
            {
                return Offer::CutFirst;
            }
        }
        match &mut self.body {
            Body::Plain(body) => body.extend_from_slice(encoded),
            Body::Gzip(encoder) => encoder
                .write_all(encoded)
                .expect("compressing into memory cannot fail"),
        }
        self.size += encoded.len();
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(position.clone());
            self.first_arrival = arrival;
            self.taken_at = Some(now);
        }
        self.last = Some(position);
        Offer::Taken {
            full: self.count >= limits.max_records || self.size >= limits.max_bytes,
        }
    }

    /// Whether the buffer is old enough to be written although no record cut it: the
    /// quiet-shard flush. With arrival times, only when the read was at the tip of the shard
    /// (`millis_behind_latest` 0 or unknown) and `age_grace` after the deadline, so that every
    /// record that arrived before the deadline has been seen and a replay cuts at the same
    /// place. Without arrival times, by the time since the first record was taken.
    pub fn age_due(
        &self,
        limits: &Limits,
        millis_behind_latest: Option<i64>,
        wall_clock: SystemTime,
        now: Instant,
    ) -> bool {
        if self.count == 0 || self.sealed.is_some() {
            return false;
        }
        match (self.first_arrival, self.taken_at) {
            (Some(first), _) => {
                millis_behind_latest.is_none_or(|ms| ms <= 0)
                    && first
                        .checked_add(limits.max_age + limits.age_grace)
                        .is_some_and(|due| wall_clock >= due)
            }
            (None, Some(taken_at)) => now.duration_since(taken_at) >= limits.max_age,
            (None, None) => false,
        }
    }

    /// Ends the object: its final bytes (the same on every call until [`Buffer::clear`]).
    pub fn seal(&mut self) -> Bytes {
        if let Some(sealed) = &self.sealed {
            return sealed.clone();
        }
        let body = std::mem::replace(&mut self.body, Body::Plain(Vec::new()));
        let bytes = Bytes::from(match body {
            Body::Plain(body) => body,
            Body::Gzip(encoder) => encoder
                .finish()
                .expect("compressing into memory cannot fail"),
        });
        self.sealed = Some(bytes.clone());
        bytes
    }

    /// Starts the next object.
    pub fn clear(&mut self) {
        *self = Buffer::new(self.compression);
    }

    pub fn is_sealed(&self) -> bool {
        self.sealed.is_some()
    }

    pub fn count(&self) -> usize {
        self.count
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn range(&self) -> Option<(&SequenceNumber, &SequenceNumber)> {
        self.first.as_ref().zip(self.last.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn limits(max_records: usize, max_bytes: usize) -> Limits {
        Limits {
            max_records,
            max_bytes,
            max_age: Duration::from_secs(60),
            age_grace: Duration::from_secs(5),
        }
    }

    fn pos(i: u64) -> SequenceNumber {
        SequenceNumber::new(&i.to_string(), 0).unwrap()
    }

    /// Feeds records (record i has position i, `sizes[i]` bytes, arrival `arrivals[i]`
    /// seconds) through the cut rule, splitting the input after every `split` records as
    /// reads might; returns the cut batches' first and last positions.
    fn cuts(sizes: &[usize], arrivals: &[u64], split: usize, limits: &Limits) -> Vec<(u64, u64)> {
        let mut buffer = Buffer::new(Compression::None);
        let mut out = Vec::new();
        let now = Instant::now();
        let mut take = |buffer: &mut Buffer| {
            let (first, last) = buffer.range().unwrap();
            out.push((
                first.sequence().parse().unwrap(),
                last.sequence().parse().unwrap(),
            ));
            buffer.seal();
            buffer.clear();
        };
        let arrival = |i: usize| {
            arrivals
                .get(i)
                .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(*s))
        };
        for (start, chunk) in sizes.chunks(split).enumerate().map(|(c, s)| (c * split, s)) {
            for (j, size) in chunk.iter().enumerate() {
                let i = start + j;
                let body = vec![b'x'; *size];
                let mut offer = buffer.offer(pos(i as u64), &body, arrival(i), limits, now);
                if offer == Offer::CutFirst {
                    take(&mut buffer);
                    offer = buffer.offer(pos(i as u64), &body, arrival(i), limits, now);
                }
                if offer == (Offer::Taken { full: true }) {
                    take(&mut buffer);
                }
            }
        }
        if buffer.count() > 0 {
            take(&mut buffer);
        }
        out
    }

    #[test]
    fn cuts_depend_on_records_not_on_reads() {
        let sizes: Vec<usize> = (0..50).map(|i| 1 + (i * 7) % 13).collect();
        let arrivals: Vec<u64> = (0..50).map(|i| i * 9).collect();
        let limits = limits(8, 40);
        let reference = cuts(&sizes, &arrivals, 50, &limits);
        for split in [1, 3, 7, 20] {
            assert_eq!(
                cuts(&sizes, &arrivals, split, &limits),
                reference,
                "split {split}"
            );
        }
        // Every record exactly once, in order.
        let mut next = 0;
        for (first, last) in &reference {
            assert_eq!(*first, next);
            next = last + 1;
        }
        assert_eq!(next, 50);
    }

    #[test]
    fn count_and_size_limits_cut() {
        let none: &[u64] = &[];
        assert_eq!(
            cuts(&[1; 5], none, 5, &limits(2, 100)),
            [(0, 1), (2, 3), (4, 4)]
        );
        // 4 + 4 fits in 10, a third does not: cut before it.
        assert_eq!(
            cuts(&[4; 5], none, 5, &limits(100, 10)),
            [(0, 1), (2, 3), (4, 4)]
        );
        // Reaching the limit exactly cuts at once; an oversized record is alone.
        assert_eq!(
            cuts(&[5, 5, 20, 1], none, 4, &limits(100, 10)),
            [(0, 1), (2, 2), (3, 3)]
        );
    }

    #[test]
    fn a_record_that_arrived_max_age_after_the_first_starts_the_next_object() {
        // max_age 60 s: 0, 30, 59 together; 60 starts a new object, 119 joins it, 130 not.
        let arrivals = [0, 30, 59, 60, 119, 130];
        assert_eq!(
            cuts(&[1; 6], &arrivals, 6, &limits(100, 100)),
            [(0, 2), (3, 4), (5, 5)]
        );
        assert_eq!(
            cuts(&[1; 6], &arrivals, 1, &limits(100, 100)),
            [(0, 2), (3, 4), (5, 5)]
        );
    }

    #[test]
    fn a_sealed_buffer_takes_nothing_more() {
        let now = Instant::now();
        let limits = limits(2, 100);
        let mut buffer = Buffer::new(Compression::None);
        assert_eq!(
            buffer.offer(pos(1), b"a", None, &limits, now),
            Offer::Taken { full: false }
        );
        // Cut (by age, say) and the write failed: the re-delivered batch must not join it.
        let bytes = buffer.seal();
        assert_eq!(
            buffer.offer(pos(2), b"b", None, &limits, now),
            Offer::CutFirst
        );
        assert_eq!(buffer.seal(), bytes);
        assert_eq!(buffer.count(), 1);
        // A full buffer whose write failed before sealing is cut before taking more too.
        let mut buffer = Buffer::new(Compression::None);
        buffer.offer(pos(1), b"a", None, &limits, now);
        assert_eq!(
            buffer.offer(pos(2), b"b", None, &limits, now),
            Offer::Taken { full: true }
        );
        assert_eq!(
            buffer.offer(pos(3), b"c", None, &limits, now),
            Offer::CutFirst
        );
    }

    #[test]
    fn the_quiet_flush_waits_for_the_tip_and_the_grace() {
        let limits = limits(100, 100);
        let now = Instant::now();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let mut buffer = Buffer::new(Compression::None);
        assert!(!buffer.age_due(&limits, Some(0), t0 + Duration::from_secs(999), now));
        buffer.offer(pos(1), b"a", Some(t0), &limits, now);
        let at = |s: u64| t0 + Duration::from_secs(s);
        // Deadline 60 s after the arrival, plus 5 s of grace.
        assert!(!buffer.age_due(&limits, Some(0), at(64), now));
        assert!(buffer.age_due(&limits, Some(0), at(65), now));
        assert!(buffer.age_due(&limits, None, at(65), now));
        // Behind the tip: later records will cut it, deterministically.
        assert!(!buffer.age_due(&limits, Some(1_000), at(600), now));
        // A sealed buffer is being written already.
        buffer.seal();
        assert!(!buffer.age_due(&limits, Some(0), at(65), now));
    }

    #[test]
    fn without_arrival_times_the_age_is_local() {
        let limits = limits(100, 100);
        let mut buffer = Buffer::new(Compression::None);
        let taken = Instant::now();
        buffer.offer(pos(1), b"a", None, &limits, taken);
        let wall = SystemTime::now();
        assert!(!buffer.age_due(&limits, Some(0), wall, taken + Duration::from_secs(59)));
        // Wherever the reads are: there is no arrival time to keep a replay's cut anyway.
        assert!(buffer.age_due(&limits, Some(5), wall, taken + Duration::from_secs(60)));
    }

    #[test]
    fn gzip_bodies_decompress_to_the_records_and_are_reproducible() {
        let limits = limits(100, 1 << 20);
        let now = Instant::now();
        let build = || {
            let mut buffer = Buffer::new(Compression::Gzip);
            for i in 0..100u64 {
                let line = format!("{{\"n\":{i}}}\n");
                buffer.offer(pos(i), line.as_bytes(), None, &limits, now);
            }
            buffer.seal()
        };
        let bytes = build();
        assert_eq!(bytes, build(), "same records, same bytes");
        let mut text = String::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_string(&mut text)
            .unwrap();
        let expected: String = (0..100).map(|i| format!("{{\"n\":{i}}}\n")).collect();
        assert_eq!(text, expected);
        assert!(bytes.len() < expected.len());
    }
}
