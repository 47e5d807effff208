//! `deaggregate` must never panic, must return at least one record, and must return the
//! input unchanged when it returns it as a plain record. Aggregates it accepts must
//! re-encode to the same user records.
#![no_main]

use bytes::Bytes;
use kinesis_aggregation::{
    Aggregator, HashKey, HashKeyRange, MAGIC, ReceivedRecord, UserRecord, deaggregate,
    deaggregate_in_range,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    // Two ways in: raw bytes, and the same bytes behind the magic (which reaches the MD5
    // check); a valid MD5 is out of reach of mutation, so a third way wraps the bytes in a
    // correct envelope to fuzz the protobuf parser and the validation behind it.
    let mut with_magic = MAGIC.to_vec();
    with_magic.extend_from_slice(input);
    let mut enveloped = MAGIC.to_vec();
    enveloped.extend_from_slice(input);
    enveloped.extend_from_slice(&md5_of(input));

    for data in [input.to_vec(), with_magic, enveloped] {
        let data = Bytes::from(data);
        let record = ReceivedRecord::new("1", "pk", data.clone());
        let out = deaggregate(record.clone());
        assert!(!out.is_empty());
        if !out[0].aggregated {
            assert_eq!(out.len(), 1);
            assert_eq!(out[0].data, data);
            assert_eq!(out[0].partition_key, "pk");
            assert_eq!(out[0].sub_sequence_number, 0);
        } else {
            for (i, r) in out.iter().enumerate() {
                assert!(r.aggregated);
                assert_eq!(r.sub_sequence_number, i as u64);
            }
            // Whatever we accept, we can re-encode (when the keys are valid for Kinesis).
            reencode(&out);
        }
        let range = HashKeyRange::new(HashKey(1 << 127), HashKey::MAX);
        let filtered = deaggregate_in_range(record, range);
        // The filter only ever leaves records out, never adds or changes one.
        assert_eq!(filtered.records.len() + filtered.dropped, out.len());
        let mut kept = filtered.records.iter();
        let mut next = kept.next();
        for r in &out {
            if next == Some(r) {
                next = kept.next();
            } else {
                assert!(r.aggregated && !range.contains(r.hash_key()));
            }
        }
        assert!(next.is_none());
    }
});

fn reencode(out: &[kinesis_aggregation::DeaggregatedRecord]) {
    let mut agg = Aggregator::new(kinesis_aggregation::AggregatorConfig {
        max_bytes: usize::MAX,
        max_count: usize::MAX,
    });
    let mut users = Vec::new();
    for r in out {
        let Ok(u) = UserRecord::new(r.partition_key.clone(), r.data.clone()) else {
            return;
        };
        let u = match r.explicit_hash_key {
            Some(k) => u.with_explicit_hash_key(k),
            None => u,
        };
        users.push(u.clone());
        agg.try_push(u).expect("unlimited aggregator");
    }
    let finished = agg.finish().expect("non-empty");
    if users.len() == 1 {
        // One record goes out as is, not as an aggregate.
        assert_eq!(&finished.record.data, users[0].data());
        return;
    }
    let again = deaggregate(ReceivedRecord::new("1", "a", finished.record.data));
    assert_eq!(again.len(), users.len());
    for (a, u) in again.iter().zip(&users) {
        assert_eq!(a.partition_key, u.partition_key());
        assert_eq!(a.explicit_hash_key, u.explicit_hash_key());
        assert_eq!(&a.data, u.data());
    }
}

fn md5_of(body: &[u8]) -> [u8; 16] {
    use md5::Digest as _;
    md5::Md5::digest(body).into()
}
