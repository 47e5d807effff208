//! Writes aggregates encoded by this crate to a JSON file, for other implementations to
//! decode (`scripts/aggregation/interop.sh` has Python `aws-kinesis-agg` check them).
//!
//! `cargo run -p kinesis-aggregation --example write_interop -- OUT.json`
//!
//! Output: `{"kinesis_records": [{"partition_key", "explicit_hash_key" (decimal or null),
//! "data" (base64), "user_records": [{"partition_key", "explicit_hash_key", "data"}]}]}`.

use kinesis_aggregation::{Aggregator, AggregatorConfig, Finished, HashKey, UserRecord};
use serde_json::{Value, json};

fn main() {
    let out = std::env::args()
        .nth(1)
        .expect("usage: write_interop OUT.json");
    let mut finished = Vec::new();
    for (config, records) in workloads() {
        let mut agg = Aggregator::new(config);
        for r in records {
            if let Err(full) = agg.try_push(r) {
                finished.extend(agg.finish());
                agg.try_push(full.into_inner())
                    .expect("an empty aggregator accepts any record");
            }
        }
        finished.extend(agg.finish());
    }
    let records: Vec<Value> = finished.iter().map(to_json).collect();
    let aggregates = finished.iter().filter(|f| f.is_aggregated()).count();
    let users: usize = finished.iter().map(|f| f.user_records.len()).sum();
    let doc = json!({ "kinesis_records": records });
    std::fs::write(&out, serde_json::to_string_pretty(&doc).unwrap()).expect("write output");
    eprintln!(
        "wrote {} Kinesis records ({aggregates} aggregates, {users} user records) to {out}",
        finished.len()
    );
}

/// Deterministic record sets covering what the format allows.
fn workloads() -> Vec<(AggregatorConfig, Vec<UserRecord>)> {
    let default = AggregatorConfig::default();
    let small = AggregatorConfig {
        max_bytes: 1_000,
        ..default
    };
    let rec = |pk: &str, data: Vec<u8>| UserRecord::new(pk, data).unwrap();
    let mut sets = Vec::new();

    // The benchmark shape: 100-byte data, 16-byte distinct keys, full 51200-byte aggregates.
    sets.push((
        default,
        (0..1_500)
            .map(|i| rec(&format!("{i:016x}"), vec![(i % 251) as u8; 100]))
            .collect(),
    ));
    // Repeated keys, empty data, and small limits (many cuts).
    sets.push((
        small,
        (0..300)
            .map(|i| rec(&format!("k{}", i % 7), vec![i as u8; i % 40]))
            .collect(),
    ));
    // Unicode keys up to the 256-character limit, some long data (two-byte varints).
    sets.push((
        default,
        (0..60)
            .map(|i| {
                let pk = match i % 4 {
                    0 => "ключ".to_owned(),
                    1 => "鍵".repeat(256),
                    2 => "😀".repeat(1 + i % 200),
                    _ => format!("ascii-{i}"),
                };
                rec(&pk, vec![(i * 3) as u8; (i * 37) % 700])
            })
            .collect(),
    ));
    // Explicit hash keys: extremes, repeats, and records without one in between.
    sets.push((
        default,
        (0..50u32)
            .map(|i| {
                let r = rec(&format!("e{}", i % 5), i.to_be_bytes().to_vec());
                match i % 5 {
                    0 => r.with_explicit_hash_key(HashKey::MIN),
                    1 => r.with_explicit_hash_key(HashKey::MAX),
                    2 => r,
                    3 => r.with_explicit_hash_key(HashKey(1 << 127)),
                    _ => r.with_explicit_hash_key(HashKey(u128::from(i) * 1_000_003)),
                }
            })
            .collect(),
    ));
    // A record larger than the limit goes alone, and a lone record goes out raw.
    sets.push((
        small,
        vec![
            rec("big", vec![1; 5_000]),
            rec("after", b"x".to_vec()),
            rec("after", b"y".to_vec()),
        ],
    ));
    sets.push((
        default,
        vec![rec("lonely", b"just me".to_vec()).with_explicit_hash_key(HashKey(99))],
    ));
    sets
}

fn to_json(f: &Finished) -> Value {
    let ehk = |k: Option<HashKey>| k.map(|k| k.to_string());
    json!({
        "partition_key": f.record.partition_key,
        "explicit_hash_key": ehk(f.record.explicit_hash_key),
        "data": base64(&f.record.data),
        "user_records": f.user_records.iter().map(|u| json!({
            "partition_key": u.partition_key(),
            "explicit_hash_key": ehk(u.explicit_hash_key()),
            "data": base64(u.data()),
        })).collect::<Vec<_>>(),
    })
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from_be_bytes([0, b[0], b[1], b[2]]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
