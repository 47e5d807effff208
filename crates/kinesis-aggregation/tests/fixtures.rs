//! Golden fixtures from the Python peers (regenerate: `python3 scripts/aggregation/make_fixtures.py`).
//!
//! For every case: each Kinesis record the peer produced must deaggregate to the input user
//! records, in order; and our aggregator, fed the same records with the same byte limit,
//! must cut at the same points and (where `data_identical`) produce the same bytes, and
//! (where `keys_identical`) the same partition key and explicit hash key. Where a peer
//! legitimately differs, the case's `note` says why (printed on failure).

use bytes::Bytes;
use kinesis_aggregation::{
    Aggregator, AggregatorConfig, HashKey, ReceivedRecord, UserRecord, deaggregate,
};
use serde_json::Value;

fn b64(text: &str) -> Vec<u8> {
    fn val(c: u8) -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64 character {c:?}"),
        }
    }
    let bytes = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c) << (18 - 6 * i);
        }
        let n = chunk.len() - 1; // 4 chars → 3 bytes, 3 → 2, 2 → 1
        out.extend_from_slice(&acc.to_be_bytes()[1..=n]);
    }
    out
}

struct Expected {
    partition_key: String,
    explicit_hash_key: Option<HashKey>,
    data: Vec<u8>,
}

fn expected_records(case: &Value) -> Vec<Expected> {
    case["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| Expected {
            partition_key: r["partition_key"].as_str().unwrap().to_owned(),
            explicit_hash_key: r["explicit_hash_key"].as_str().map(|s| s.parse().unwrap()),
            data: b64(r["data"].as_str().unwrap()),
        })
        .collect()
}

fn check_file(path: &str) -> usize {
    let text = std::fs::read_to_string(path).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let generator = doc["generator"].as_str().unwrap();
    let mut checked = 0;
    for case in doc["cases"].as_array().unwrap() {
        let name = format!("{generator} / {}", case["name"].as_str().unwrap());
        let note = case["note"].as_str().unwrap_or("");
        let expected = expected_records(case);
        let theirs = case["kinesis_records"].as_array().unwrap();

        // 1. Decode what they wrote.
        let mut decoded = Vec::new();
        for (i, k) in theirs.iter().enumerate() {
            let record = ReceivedRecord::new(
                i.to_string(),
                k["partition_key"].as_str().unwrap(),
                b64(k["data"].as_str().unwrap()),
            );
            let out = deaggregate(record);
            for (sub, r) in out.iter().enumerate() {
                assert_eq!(&*r.sequence_number, i.to_string(), "{name}");
                if r.aggregated {
                    assert_eq!(r.sub_sequence_number, sub as u64, "{name}");
                }
            }
            decoded.extend(out);
        }
        assert_eq!(decoded.len(), expected.len(), "{name}: record count");
        for (i, (got, want)) in decoded.iter().zip(&expected).enumerate() {
            assert_eq!(got.partition_key, want.partition_key, "{name} #{i}: pk");
            assert_eq!(got.data.as_ref(), want.data.as_slice(), "{name} #{i}: data");
            // A raw single record carries no explicit hash key on the read side (Kinesis
            // does not return it); inside an aggregate it must be there.
            if got.aggregated {
                assert_eq!(
                    got.explicit_hash_key, want.explicit_hash_key,
                    "{name} #{i}: ehk"
                );
            }
        }

        // 2. Encode the same records ourselves.
        let config = match case["max_bytes"].as_u64() {
            Some(max) => AggregatorConfig {
                max_bytes: max as usize,
                ..AggregatorConfig::default()
            },
            None => AggregatorConfig {
                max_bytes: usize::MAX,
                max_count: usize::MAX,
            },
        };
        let mut agg = Aggregator::new(config);
        let mut ours = Vec::new();
        for e in &expected {
            let mut r =
                UserRecord::new(e.partition_key.clone(), Bytes::from(e.data.clone())).unwrap();
            if let Some(k) = e.explicit_hash_key {
                r = r.with_explicit_hash_key(k);
            }
            if let Err(full) = agg.try_push(r) {
                ours.extend(agg.finish());
                agg.try_push(full.into_inner()).unwrap();
            }
        }
        ours.extend(agg.finish());
        assert_eq!(
            ours.len(),
            theirs.len(),
            "{name}: cut points differ. {note}"
        );
        for (i, (o, t)) in ours.iter().zip(theirs).enumerate() {
            if case["data_identical"].as_bool().unwrap() {
                assert_eq!(
                    o.record.data.as_ref(),
                    b64(t["data"].as_str().unwrap()).as_slice(),
                    "{name} #{i}: bytes differ. {note}"
                );
            }
            if case["keys_identical"].as_bool().unwrap() {
                assert_eq!(
                    o.record.partition_key,
                    t["partition_key"].as_str().unwrap(),
                    "{name} #{i}: partition key. {note}"
                );
                assert_eq!(
                    o.record.explicit_hash_key.map(|k| k.to_string()).as_deref(),
                    t["explicit_hash_key"].as_str(),
                    "{name} #{i}: explicit hash key. {note}"
                );
            }
        }
        checked += 1;
    }
    checked
}

#[test]
fn aws_kinesis_agg_fixtures() {
    let n = check_file(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/aws-kinesis-agg.json"
    ));
    assert!(n >= 9, "only {n} cases");
}

#[test]
fn aiokpl_fixtures() {
    let n = check_file(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/aiokpl.json"
    ));
    assert!(n >= 9, "only {n} cases");
}

#[test]
fn base64_helper() {
    assert_eq!(b64(""), b"");
    assert_eq!(b64("Zg=="), b"f");
    assert_eq!(b64("Zm8="), b"fo");
    assert_eq!(b64("Zm9v"), b"foo");
    assert_eq!(b64("Zm9vYg=="), b"foob");
}
