//! Property tests: round trip, exact size, limits, and robustness of the decoder.

use bytes::Bytes;
use kinesis_aggregation::{
    Aggregator, AggregatorConfig, DeaggregatedRecord, HashKey, HashKeyRange, MAGIC, ReceivedRecord,
    UserRecord, deaggregate, deaggregate_in_range,
};
use proptest::prelude::*;

/// Partition keys: short ASCII (often repeated), and any Unicode up to the 256-char limit.
fn partition_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-c]{1,2}",
        2 => "\\PC{1,16}",
        1 => "\\PC{250,256}",
    ]
}

fn explicit_hash_key() -> impl Strategy<Value = Option<HashKey>> {
    prop_oneof![
        3 => Just(None),
        1 => (0u128..4).prop_map(|k| Some(HashKey(k))), // repeated
        1 => any::<u128>().prop_map(|k| Some(HashKey(k))),
        1 => Just(Some(HashKey::MAX)),
    ]
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => proptest::collection::vec(any::<u8>(), 0..8),
        2 => proptest::collection::vec(any::<u8>(), 0..300),
        1 => proptest::collection::vec(any::<u8>(), 0..5_000),
    ]
}

fn user_record() -> impl Strategy<Value = UserRecord> {
    (partition_key(), explicit_hash_key(), data()).prop_map(|(pk, ehk, data)| {
        let r = UserRecord::new(pk, data).expect("strategy yields valid keys");
        match ehk {
            Some(k) => r.with_explicit_hash_key(k),
            None => r,
        }
    })
}

fn unlimited() -> Aggregator {
    Aggregator::new(AggregatorConfig {
        max_bytes: usize::MAX,
        max_count: usize::MAX,
    })
}

const SEQ: &str = "49590338271490256608559692538361571095921575989136588898";

fn assert_same(out: &[DeaggregatedRecord], input: &[UserRecord], aggregated: bool, seq: &str) {
    assert_eq!(out.len(), input.len());
    for (i, (o, u)) in out.iter().zip(input).enumerate() {
        assert_eq!(o.partition_key, u.partition_key());
        assert_eq!(o.explicit_hash_key, u.explicit_hash_key());
        assert_eq!(&o.data, u.data());
        assert_eq!(o.sub_sequence_number, i as u64);
        assert_eq!(o.aggregated, aggregated);
        assert_eq!(&*o.sequence_number, seq);
    }
}

fn received(record: &kinesis_aggregation::KinesisRecord) -> ReceivedRecord {
    ReceivedRecord {
        sequence_number: SEQ.into(),
        partition_key: record.partition_key.clone(),
        explicit_hash_key: record.explicit_hash_key,
        data: record.data.clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// (1) encode → deaggregate gives back the input, in order, for any records.
    #[test]
    fn round_trip(records in proptest::collection::vec(user_record(), 1..40)) {
        let mut agg = unlimited();
        for r in records.clone() {
            agg.try_push(r).unwrap();
        }
        let done = agg.finish().unwrap();
        prop_assert_eq!(&done.user_records, &records);
        let out = deaggregate(received(&done.record));
        if records.len() == 1 {
            // Sent as is: the consumer sees the plain record under the user's own key.
            prop_assert_eq!(&done.record.partition_key, records[0].partition_key());
            prop_assert_eq!(done.record.explicit_hash_key, records[0].explicit_hash_key());
            assert_same(&out, &records, false, SEQ);
        } else {
            prop_assert_eq!(done.record.partition_key.as_str(), "a");
            prop_assert_eq!(done.record.explicit_hash_key, Some(records[0].hash_key()));
            assert_same(&out, &records, true, SEQ);
        }
    }

    /// (2) `size_bytes()` is the exact aggregate length after every push, and a limited
    /// aggregator never goes over its limits except with a lone oversized record.
    #[test]
    fn exact_size_and_limits(
        records in proptest::collection::vec(user_record(), 1..60),
        max_bytes in 0usize..4000,
        max_count in 1usize..20,
    ) {
        let mut agg = unlimited();
        for (i, r) in records.iter().enumerate() {
            agg.try_push(r.clone()).unwrap();
            // Encode a copy of the state so far and compare.
            let mut probe = unlimited();
            for r in &records[..=i] {
                probe.try_push(r.clone()).unwrap();
            }
            let size = probe.size_bytes();
            prop_assert_eq!(agg.size_bytes(), size);
            if i >= 1 {
                prop_assert_eq!(probe.finish().unwrap().record.data.len(), size);
            }
        }

        let mut limited = Aggregator::new(AggregatorConfig { max_bytes, max_count });
        let mut batches: Vec<Vec<UserRecord>> = Vec::new();
        let check = |limited: &mut Aggregator, batches: &mut Vec<Vec<UserRecord>>| {
            let size = limited.size_bytes();
            let done = limited.finish().unwrap();
            let n = done.user_records.len();
            assert!(n <= max_count);
            if n > 1 {
                assert!(size <= max_bytes, "aggregate of {n} is {size} > {max_bytes}");
                assert_eq!(done.record.data.len(), size);
            }
            batches.push(done.user_records);
        };
        for r in records.clone() {
            if let Err(full) = limited.try_push(r) {
                check(&mut limited, &mut batches);
                limited.try_push(full.into_inner()).expect("empty accepts one");
            }
        }
        check(&mut limited, &mut batches);
        // Nothing lost, nothing reordered.
        let flat: Vec<UserRecord> = batches.into_iter().flatten().collect();
        prop_assert_eq!(flat, records);
    }

    /// (3a) Arbitrary bytes never panic and come back unchanged unless they are a valid
    /// aggregate (which random bytes, MD5 included, essentially never are).
    #[test]
    fn arbitrary_bytes_pass_through(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        magic in any::<bool>(),
    ) {
        let mut data = if magic { MAGIC.to_vec() } else { Vec::new() };
        data.extend_from_slice(&bytes);
        let record = ReceivedRecord::new("7", "pk", data);
        let out = deaggregate(record.clone());
        prop_assert_eq!(out.len(), 1);
        prop_assert!(!out[0].aggregated);
        prop_assert_eq!(&out[0].data, &record.data);
        prop_assert_eq!(out[0].partition_key.as_str(), "pk");
        prop_assert_eq!(out[0].sub_sequence_number, 0);
    }

    /// (3b) Mutations of valid aggregates (flipped bytes, truncation, appended bytes) never
    /// panic: the result is the original records or the input unchanged.
    #[test]
    fn mutated_aggregates_are_safe(
        records in proptest::collection::vec(user_record(), 2..10),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..), 0..4),
        truncate in proptest::option::of(any::<prop::sample::Index>()),
        append in proptest::collection::vec(any::<u8>(), 0..3),
    ) {
        let mut agg = unlimited();
        for r in records.clone() {
            agg.try_push(r).unwrap();
        }
        let mut data = agg.finish().unwrap().record.data.to_vec();
        for (i, x) in &flips {
            let i = i.index(data.len());
            data[i] ^= x;
        }
        if let Some(t) = truncate {
            data.truncate(t.index(data.len()));
        }
        data.extend_from_slice(&append);
        let record = ReceivedRecord::new("7", "a", data);
        let out = deaggregate(record.clone());
        prop_assert!(!out.is_empty());
        if out[0].aggregated {
            // Only possible if the mutations cancelled out (e.g. truncation at the end
            // followed by appending the same bytes): then it must decode correctly.
            assert_same(&out, &records, true, "7");
        } else {
            prop_assert_eq!(out.len(), 1);
            prop_assert_eq!(&out[0].data, &record.data);
        }
        let filtered = deaggregate_in_range(record, HashKeyRange::FULL);
        prop_assert_eq!(filtered.dropped, 0);
        prop_assert_eq!(filtered.records, out);
    }

    /// The range filter keeps exactly the in-range sub-records, in order, with their
    /// original sub-sequence numbers.
    #[test]
    fn range_filter_keeps_in_range_records(
        records in proptest::collection::vec(user_record(), 2..10),
        a in any::<u128>(),
        b in any::<u128>(),
    ) {
        let range = HashKeyRange::new(HashKey(a.min(b)), HashKey(a.max(b)));
        let mut agg = unlimited();
        for r in records.clone() {
            agg.try_push(r).unwrap();
        }
        let done = agg.finish().unwrap();
        let filtered = deaggregate_in_range(received(&done.record), range);
        let all = deaggregate(received(&done.record));
        let expected: Vec<DeaggregatedRecord> = all
            .into_iter()
            .filter(|r| range.contains(r.hash_key()))
            .collect();
        prop_assert_eq!(filtered.dropped, records.len() - expected.len());
        prop_assert_eq!(filtered.records, expected);
    }

    /// Hash keys print and parse back.
    #[test]
    fn hash_key_text_round_trip(v in any::<u128>()) {
        let text = HashKey(v).to_string();
        prop_assert_eq!(text.parse::<HashKey>().unwrap(), HashKey(v));
    }
}

#[test]
fn zero_copy_data_slices() {
    let mut agg = Aggregator::default();
    for i in 0..3u8 {
        agg.try_push(UserRecord::new("k", vec![i; 10]).unwrap())
            .unwrap();
    }
    let data: Bytes = agg.finish().unwrap().record.data;
    let out = deaggregate(ReceivedRecord::new("1", "a", data.clone()));
    for r in &out {
        assert!(data.as_ptr_range().contains(&r.data.as_ptr()));
    }
}
