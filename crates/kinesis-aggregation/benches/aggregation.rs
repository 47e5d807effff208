//! Encode and decode throughput of the aggregated-record format, beside plain MD5 over the
//! same bytes (both directions must hash every protobuf byte: that is the floor).
//!
//! Workload: 100-byte data, 16-byte partition keys, aggregates up to 51200 bytes (the KPL
//! default). Two key patterns: every key distinct (the key table grows with the aggregate:
//! the harder case, 408 records per aggregate) and 16 keys shared by all records (476).
//!
//! One iteration is one full aggregate, as a producer makes them: push records until the
//! aggregator is full, `finish`. The input records are built outside the timing (the
//! application made them) and the output is dropped outside it; memory is reused from one
//! aggregate to the next, as in a running producer. Decoding is one aggregate into its
//! user records, dropping them included.
//!
//! `hash_keys/*` compares hashing partition keys one by one (`HashKey::from_partition_key`)
//! with the batch API (`from_partition_keys`, and `extend_from_partition_keys` into a
//! reused vector) for 512 keys, as many as a producer's `put_batch` chunk holds: 16-byte
//! keys as above and 36-byte UUID-like ones. Criterion's elements/s is keys/s.
//!
//! Run: `cargo bench -p kinesis-aggregation --bench aggregation` (`-- hash_keys` for the
//! key hashing alone).

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use kinesis_aggregation::{Aggregator, HashKey, ReceivedRecord, UserRecord, deaggregate};
use md5::{Digest, Md5};

const DATA_LEN: usize = 100;

/// The records of one full default-size aggregate.
fn one_aggregate(distinct_keys: usize) -> Vec<UserRecord> {
    let pool: Bytes = (0..1000 * DATA_LEN)
        .map(|i| (i * 31 % 251) as u8)
        .collect::<Vec<u8>>()
        .into();
    let mut agg = Aggregator::default();
    for i in 0.. {
        // Wrapping: the keys are the low 64 bits of the product (as the Python and npm peers
        // compute them), also in the dev profile, where `*` would panic on overflow.
        let key = format!(
            "{:016x}",
            ((i % distinct_keys) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        );
        let r = UserRecord::new(key, pool.slice(i * DATA_LEN..(i + 1) * DATA_LEN)).unwrap();
        if agg.try_push(r).is_err() {
            break;
        }
    }
    agg.finish().unwrap().user_records
}

fn bench(c: &mut Criterion) {
    for (name, distinct) in [("distinct_keys", usize::MAX), ("16_keys", 16)] {
        let records = one_aggregate(distinct);
        let mut aggregator = Aggregator::default();
        let aggregate = {
            for r in records.clone() {
                aggregator.try_push(r).unwrap();
            }
            aggregator.finish().unwrap().record.data
        };
        eprintln!(
            "{name}: {} records of {DATA_LEN} bytes -> one aggregate of {} bytes",
            records.len(),
            aggregate.len()
        );

        let mut group = c.benchmark_group(format!("aggregation/{name}"));
        group.throughput(Throughput::ElementsAndBytes {
            elements: records.len() as u64,
            bytes: aggregate.len() as u64,
        });

        // The floor: MD5 over exactly the protobuf bytes that encode and decode hash.
        let body = aggregate.slice(4..aggregate.len() - 16);
        group.bench_function("md5_floor", |b| {
            b.iter(|| Md5::digest(black_box(&body[..])))
        });

        group.bench_function("encode", |b| {
            b.iter_batched(
                || records.clone(),
                |records| {
                    for r in records {
                        aggregator.try_push(r).unwrap();
                    }
                    aggregator.finish().unwrap()
                },
                BatchSize::NumIterations(16),
            )
        });

        let received = ReceivedRecord::new(
            "49590338271490256608559692538361571095921575989136588898",
            "a",
            aggregate.clone(),
        );
        group.bench_function("decode", |b| {
            b.iter(|| deaggregate(black_box(received.clone())))
        });
        group.finish();
    }
}

/// Number of keys in one `hash_keys` iteration: one `put_batch` chunk.
const KEYS_PER_BATCH: usize = 512;

fn bench_hash_keys(c: &mut Criterion) {
    let mix = |i: usize| (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let sixteen: Vec<String> = (0..KEYS_PER_BATCH)
        .map(|i| format!("{:016x}", mix(i)))
        .collect();
    let uuid_like: Vec<String> = (0..KEYS_PER_BATCH)
        .map(|i| {
            let (x, y) = (mix(i), mix(i + KEYS_PER_BATCH));
            format!(
                "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                x >> 32,
                (x >> 16) & 0xffff,
                x & 0xffff,
                y >> 48,
                y & 0xffff_ffff_ffff
            )
        })
        .collect();
    for (name, owned) in [("16_bytes", sixteen), ("36_bytes", uuid_like)] {
        let keys: Vec<&str> = owned.iter().map(String::as_str).collect();
        let mut group = c.benchmark_group(format!("hash_keys/{name}"));
        group.throughput(Throughput::Elements(keys.len() as u64));
        group.bench_function("scalar", |b| {
            b.iter(|| {
                black_box(&keys)
                    .iter()
                    .map(|k| HashKey::from_partition_key(k))
                    .collect::<Vec<_>>()
            })
        });
        group.bench_function("batch", |b| {
            b.iter(|| HashKey::from_partition_keys(black_box(&keys)))
        });
        let mut out = Vec::with_capacity(keys.len());
        group.bench_function("batch_extend", |b| {
            b.iter(|| {
                out.clear();
                HashKey::extend_from_partition_keys(black_box(&keys).iter().copied(), &mut out);
                black_box(&out);
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench, bench_hash_keys);
criterion_main!(benches);
