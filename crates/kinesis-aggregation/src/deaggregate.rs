//! The decoder: one received Kinesis record in, its user records out.
//!
//! ```text
//!  ReceivedRecord ──► magic? > 16 bytes after it? MD5 matches? protobuf parses?
//!                     every required field present, every key index in its table?
//!        ├─ yes ──► n user records: sub-sequence 0, 1, …, n−1, aggregated = true,
//!        │          data = slices of the input (no copy)
//!        └─ no  ──► the input itself: sub-sequence 0, aggregated = false
//! ```
//!
//! Deaggregation never fails: a record that is not a well-formed aggregate is the
//! application's own data (a non-KPL producer may well write bytes that start with the
//! magic), so it is delivered unchanged, as the KCL does. An aggregate with zero records
//! is also delivered unchanged, so that every received record yields at least one record
//! and nothing disappears without a trace.
//!
//! Why [`deaggregate_in_range`] keeps the in-range sub-records rather than dropping the whole
//! aggregate as the KCL does: see the crate docs, "Filtering by the shard's hash-key range".

use std::sync::Arc;

use bytes::Bytes;
use md5::{Digest, Md5};
use prost::Message as _;

use crate::hash_key::{HashKey, HashKeyRange};
use crate::proto;
use crate::{MAGIC, MD5_LEN};

/// A record as read from a shard (`GetRecords` or `SubscribeToShard`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedRecord {
    /// The record's sequence number. Shared (`Arc`) because every sub-record of an
    /// aggregate carries it.
    pub sequence_number: Arc<str>,
    /// The record's partition key (`"a"` for a KPL aggregate).
    pub partition_key: String,
    /// The explicit hash key, if known. Kinesis does not return it when reading; it is
    /// passed through to a plain record's output.
    pub explicit_hash_key: Option<HashKey>,
    /// The data. Sub-records' data are slices of it.
    pub data: Bytes,
}

impl ReceivedRecord {
    /// A received record without an explicit hash key.
    pub fn new(
        sequence_number: impl Into<Arc<str>>,
        partition_key: impl Into<String>,
        data: impl Into<Bytes>,
    ) -> Self {
        ReceivedRecord {
            sequence_number: sequence_number.into(),
            partition_key: partition_key.into(),
            explicit_hash_key: None,
            data: data.into(),
        }
    }
}

/// A user record recovered from a received record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeaggregatedRecord {
    /// The sequence number of the Kinesis record that carried it.
    pub sequence_number: Arc<str>,
    /// Position inside the aggregate (0 for a plain record). A checkpoint is the pair
    /// (sequence number, sub-sequence number).
    pub sub_sequence_number: u64,
    /// The user record's partition key.
    pub partition_key: String,
    /// The user record's explicit hash key, if it had one.
    pub explicit_hash_key: Option<HashKey>,
    /// The user record's data.
    pub data: Bytes,
    /// Whether it came out of an aggregate (false: the received record, unchanged).
    pub aggregated: bool,
}

impl DeaggregatedRecord {
    /// The key that decided the user record's shard: the explicit hash key, or
    /// MD5(partition key).
    pub fn hash_key(&self) -> HashKey {
        self.explicit_hash_key
            .unwrap_or_else(|| HashKey::from_partition_key(&self.partition_key))
    }
}

/// What [`deaggregate_in_range`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filtered {
    /// The records to process, in order, with their original sub-sequence numbers (so
    /// there may be gaps). May be empty when every sub-record was out of range.
    pub records: Vec<DeaggregatedRecord>,
    /// How many sub-records were left out because their hash key is outside the range:
    /// worth a log line and a metric (it means a producer used a stale shard map, or
    /// aggregated across shards).
    pub dropped: usize,
}

/// Splits a received record into its user records. Never fails, never filters, and
/// returns at least one record: see the [crate docs](crate#filtering-by-the-shards-hash-key-range).
pub fn deaggregate(record: ReceivedRecord) -> Vec<DeaggregatedRecord> {
    match Aggregate::parse(&record.data) {
        Some(aggregate) => aggregate.into_records(&record.sequence_number, None).0,
        None => vec![plain(record)],
    }
}

/// Like [`deaggregate()`], but keeps only the sub-records whose hash key lies in `range`,
/// the hash-key range of the shard the record was read from; kept records keep their
/// original sub-sequence numbers. Plain records are never filtered. Why this and not the
/// KCL's "drop the whole aggregate": see the
/// [crate docs](crate#filtering-by-the-shards-hash-key-range).
pub fn deaggregate_in_range(record: ReceivedRecord, range: HashKeyRange) -> Filtered {
    match Aggregate::parse(&record.data) {
        Some(aggregate) => {
            let (records, dropped) = aggregate.into_records(&record.sequence_number, Some(range));
            Filtered { records, dropped }
        }
        None => Filtered {
            records: vec![plain(record)],
            dropped: 0,
        },
    }
}

fn plain(record: ReceivedRecord) -> DeaggregatedRecord {
    DeaggregatedRecord {
        sequence_number: record.sequence_number,
        sub_sequence_number: 0,
        partition_key: record.partition_key,
        explicit_hash_key: record.explicit_hash_key,
        data: record.data,
        aggregated: false,
    }
}

/// Most entries reserved per vector before decoding; beyond it vectors grow as needed.
const MAX_CAPACITY_HINT: usize = 1 << 14;

/// A validated aggregate: every index is in range, every required field present.
struct Aggregate {
    message: proto::AggregatedRecord,
    explicit_hash_keys: Vec<HashKey>,
    /// How many records use each partition-key table entry.
    pk_uses: Vec<u32>,
}

impl Aggregate {
    fn parse(data: &Bytes) -> Option<Aggregate> {
        // More than the MD5 must follow the magic (the KCL's rule): an empty protobuf
        // would be an aggregate of nothing.
        if data.len() <= MAGIC.len() + MD5_LEN || data[..MAGIC.len()] != MAGIC {
            return None;
        }
        let body_end = data.len() - MD5_LEN;
        let body = &data[MAGIC.len()..body_end];
        if Md5::digest(body).as_slice() != &data[body_end..] {
            return None;
        }
        // Size the vectors up front: growing them by doubling while prost decodes hundreds
        // of records costs more than this extra pass over the top-level field headers.
        // The hint is capped so that a hostile body of empty fields cannot make us reserve
        // far more than a real aggregate (≤ 1 MiB… 10 MiB) would ever need up front.
        let (pks, ehks, records) = count_top_level_fields(body)?;
        let hint = |n: usize| n.min(MAX_CAPACITY_HINT);
        let mut message = proto::AggregatedRecord {
            partition_key_table: Vec::with_capacity(hint(pks)),
            explicit_hash_key_table: Vec::with_capacity(hint(ehks)),
            records: Vec::with_capacity(hint(records)),
        };
        // Decoding from `Bytes` makes prost slice `data` fields out of the input.
        message.merge(data.slice(MAGIC.len()..body_end)).ok()?;
        if message.records.is_empty() {
            return None;
        }
        // Parsed once per table entry, not per record. A key that is not a valid hash key
        // makes the aggregate invalid: Kinesis would have refused it as ExplicitHashKey,
        // and the KCL fails on it when computing the hash key.
        let explicit_hash_keys = message
            .explicit_hash_key_table
            .iter()
            .map(|s| s.parse().ok())
            .collect::<Option<Vec<HashKey>>>()?;
        let mut pk_uses = vec![0u32; message.partition_key_table.len()];
        for r in &message.records {
            let pk = usize::try_from(r.partition_key_index?).ok()?;
            *pk_uses.get_mut(pk)? += 1;
            if let Some(ehk) = r.explicit_hash_key_index
                && ehk >= explicit_hash_keys.len() as u64
            {
                return None;
            }
            if r.data.is_none() || r.tags.iter().any(|t| t.key.is_none()) {
                return None;
            }
        }
        Some(Aggregate {
            message,
            explicit_hash_keys,
            pk_uses,
        })
    }

    /// The user records, in order, keeping only those in `range` if one is given; and how
    /// many were left out.
    fn into_records(
        self,
        sequence_number: &Arc<str>,
        range: Option<HashKeyRange>,
    ) -> (Vec<DeaggregatedRecord>, usize) {
        let Aggregate {
            message,
            explicit_hash_keys,
            mut pk_uses,
        } = self;
        let mut pk_table = message.partition_key_table;
        // MD5 each partition key at most once, however many records share it.
        let mut pk_hash: Vec<Option<HashKey>> = match range {
            Some(_) => vec![None; pk_table.len()],
            None => Vec::new(),
        };
        let mut out = Vec::with_capacity(message.records.len());
        let mut dropped = 0;
        for (sub, r) in message.records.into_iter().enumerate() {
            let pk_idx = r.partition_key_index.expect("validated") as usize;
            let explicit_hash_key = r
                .explicit_hash_key_index
                .map(|i| explicit_hash_keys[i as usize]);
            pk_uses[pk_idx] -= 1;
            if let Some(range) = range {
                let key = explicit_hash_key.unwrap_or_else(|| {
                    *pk_hash[pk_idx]
                        .get_or_insert_with(|| HashKey::from_partition_key(&pk_table[pk_idx]))
                });
                if !range.contains(key) {
                    dropped += 1;
                    continue;
                }
            }
            // A key's last user takes the string instead of copying it: with unique keys
            // (the common case) this saves an allocation per record.
            let partition_key = if pk_uses[pk_idx] == 0 {
                std::mem::take(&mut pk_table[pk_idx])
            } else {
                pk_table[pk_idx].clone()
            };
            out.push(DeaggregatedRecord {
                sequence_number: Arc::clone(sequence_number),
                sub_sequence_number: sub as u64,
                partition_key,
                explicit_hash_key,
                data: r.data.expect("validated"),
                aggregated: true,
            });
        }
        (out, dropped)
    }
}

/// Counts the top-level fields 1, 2 and 3 (key tables and records) of an
/// `AggregatedRecord` by walking field headers only. `None` if the headers do not parse
/// (the message is then invalid anyway); the counts are only capacity hints.
fn count_top_level_fields(mut body: &[u8]) -> Option<(usize, usize, usize)> {
    let mut counts = [0usize; 3];
    while !body.is_empty() {
        let key = read_varint(&mut body)?;
        match key & 7 {
            // Varint.
            0 => {
                read_varint(&mut body)?;
            }
            // 64-bit.
            1 => body = body.get(8..)?,
            // Length-delimited.
            2 => {
                let len = usize::try_from(read_varint(&mut body)?).ok()?;
                body = body.get(len..)?;
                if let Some(c) = (key >> 3)
                    .checked_sub(1)
                    .and_then(|i| counts.get_mut(i as usize))
                {
                    *c += 1;
                }
            }
            // 32-bit.
            5 => body = body.get(4..)?,
            // Groups (3, 4) are not used by this schema; let prost judge them.
            _ => return Some((counts[0], counts[1], counts[2])),
        }
    }
    Some((counts[0], counts[1], counts[2]))
}

fn read_varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, &b) in buf.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            *buf = &buf[i + 1..];
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Aggregator, UserRecord};

    fn aggregate_of(records: &[UserRecord]) -> Bytes {
        let mut agg = Aggregator::default();
        for r in records {
            agg.try_push(r.clone()).unwrap();
        }
        agg.finish().unwrap().record.data
    }

    fn received(data: impl Into<Bytes>) -> ReceivedRecord {
        ReceivedRecord::new("4960", "a", data)
    }

    /// Wraps a hand-made protobuf body in magic and a correct MD5.
    fn envelope(body: &[u8]) -> Bytes {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(body);
        out.extend_from_slice(&Md5::digest(body));
        out.into()
    }

    fn assert_plain(record: ReceivedRecord) {
        let out = deaggregate(record.clone());
        assert_eq!(out, vec![plain(record)]);
    }

    #[test]
    fn splits_an_aggregate_zero_copy() {
        let records = vec![
            UserRecord::new("k1", &b"one"[..]).unwrap(),
            UserRecord::new("k2", &b"two"[..])
                .unwrap()
                .with_explicit_hash_key(HashKey(7)),
            UserRecord::new("k1", &b""[..]).unwrap(),
        ];
        let data = aggregate_of(&records);
        let out = deaggregate(received(data.clone()));
        assert_eq!(out.len(), 3);
        for (i, (got, want)) in out.iter().zip(&records).enumerate() {
            assert_eq!(got.sub_sequence_number, i as u64);
            assert_eq!(&*got.sequence_number, "4960");
            assert_eq!(got.partition_key, want.partition_key());
            assert_eq!(got.explicit_hash_key, want.explicit_hash_key());
            assert_eq!(&got.data, want.data());
            assert!(got.aggregated);
            assert_eq!(got.hash_key(), want.hash_key());
            if !got.data.is_empty() {
                // The slice points into the received buffer.
                let range = data.as_ptr_range();
                assert!(range.contains(&got.data.as_ptr()));
            }
        }
    }

    #[test]
    fn plain_and_malformed_records_pass_through() {
        assert_plain(received(&b""[..]));
        assert_plain(received(&b"hello"[..]));
        assert_plain(received(MAGIC.to_vec()));
        // Magic plus exactly 16 bytes: not enough.
        let mut v = MAGIC.to_vec();
        v.extend_from_slice(&[0; 16]);
        assert_plain(received(v));

        let good = aggregate_of(&[
            UserRecord::new("k", &b"1"[..]).unwrap(),
            UserRecord::new("k", &b"2"[..]).unwrap(),
        ]);
        // Bad MD5.
        let mut bad = good.to_vec();
        *bad.last_mut().unwrap() ^= 1;
        assert_plain(received(bad));
        // Body corrupted but MD5 recomputed: protobuf no longer parses.
        assert_plain(received(envelope(&[0x0a, 0x05, b'x'])));
        // Valid protobuf, but no records.
        assert_plain(received(envelope(&[0x0a, 0x01, b'k'])));
        // Record without its required partition-key index.
        assert_plain(received(envelope(&[
            0x0a, 0x01, b'k', 0x1a, 0x02, 0x1a, 0x00,
        ])));
        // Record without its required data.
        assert_plain(received(envelope(&[
            0x0a, 0x01, b'k', 0x1a, 0x02, 0x08, 0x00,
        ])));
        // Partition-key index out of range.
        assert_plain(received(envelope(&[
            0x0a, 0x01, b'k', 0x1a, 0x04, 0x08, 0x01, 0x1a, 0x00,
        ])));
        // Explicit-hash-key index out of range.
        assert_plain(received(envelope(&[
            0x0a, 0x01, b'k', 0x1a, 0x06, 0x08, 0x00, 0x10, 0x00, 0x1a, 0x00,
        ])));
        // Explicit hash key that is not a number.
        assert_plain(received(envelope(&[
            0x0a, 0x01, b'k', 0x12, 0x01, b'x', 0x1a, 0x06, 0x08, 0x00, 0x10, 0x00, 0x1a, 0x00,
        ])));
        // Partition key that is not UTF-8.
        assert_plain(received(envelope(&[
            0x0a, 0x01, 0xff, 0x1a, 0x04, 0x08, 0x00, 0x1a, 0x00,
        ])));
        // Tag without its required key.
        assert_plain(received(envelope(&[
            0x0a, 0x01, b'k', 0x1a, 0x06, 0x08, 0x00, 0x1a, 0x00, 0x22, 0x00,
        ])));
    }

    #[test]
    fn minimal_hand_made_aggregate_decodes() {
        // One table key, one record with empty data, a tag, and an unknown field (skipped).
        let body = [
            0x0a, 0x01, b'k', 0x1a, 0x09, 0x08, 0x00, 0x1a, 0x00, 0x22, 0x03, 0x0a, 0x01, b't',
            0x28, 0x05,
        ];
        let out = deaggregate(received(envelope(&body)));
        assert_eq!(out.len(), 1);
        assert!(out[0].aggregated);
        assert_eq!(out[0].partition_key, "k");
        assert!(out[0].data.is_empty());
    }

    #[test]
    fn filter_keeps_in_range_records_with_their_sub_sequence_numbers() {
        let a = UserRecord::new("a", &b"1"[..]).unwrap();
        let b = UserRecord::new("b", &b"2"[..]).unwrap();
        let (ka, kb) = (a.hash_key(), b.hash_key());
        let data = aggregate_of(&[a, b]);
        let lo = ka.min(kb);
        let hi = ka.max(kb);

        let all = deaggregate_in_range(received(data.clone()), HashKeyRange::new(lo, hi));
        assert_eq!((all.records.len(), all.dropped), (2, 0));

        // Keep only the one with the higher key: its sub-sequence number is unchanged.
        let part = deaggregate_in_range(received(data.clone()), HashKeyRange::new(hi, hi));
        assert_eq!((part.records.len(), part.dropped), (1, 1));
        let expected_sub = if ka == hi { 0 } else { 1 };
        assert_eq!(part.records[0].sub_sequence_number, expected_sub);
        assert_eq!(part.records[0].hash_key(), hi);

        let none = deaggregate_in_range(
            received(data.clone()),
            HashKeyRange::new(HashKey(0), HashKey(0)),
        );
        assert_eq!((none.records.len(), none.dropped), (0, 2));

        // Explicit hash keys are what counts when present.
        let c = UserRecord::new("c", &b"3"[..])
            .unwrap()
            .with_explicit_hash_key(HashKey(100));
        let d = UserRecord::new("d", &b"4"[..])
            .unwrap()
            .with_explicit_hash_key(HashKey(200));
        let data = aggregate_of(&[c, d]);
        let r = deaggregate_in_range(
            received(data.clone()),
            HashKeyRange::new(HashKey(100), HashKey(200)),
        );
        assert_eq!(r.records.len(), 2);
        let r = deaggregate_in_range(
            received(data),
            HashKeyRange::new(HashKey(101), HashKey(200)),
        );
        assert_eq!((r.records.len(), r.dropped), (1, 1));
        assert_eq!(r.records[0].partition_key, "d");
        assert_eq!(r.records[0].sub_sequence_number, 1);

        // Plain records are never filtered.
        let r = deaggregate_in_range(
            received(&b"x"[..]),
            HashKeyRange::new(HashKey(0), HashKey(0)),
        );
        assert_eq!((r.records.len(), r.dropped), (1, 0));
    }
}
