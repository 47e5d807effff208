//! What an object holds and what it is called: [`Format`], [`Compression`], [`object_key`].

use kinesis_consumer::{Record, SequenceNumber};

/// How records are written into an object. See the [crate docs](crate#object-layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Newline-delimited JSON, one line per record (`.ndjson`). The default.
    #[default]
    Ndjson,
    /// Each record's data preceded by its length as a big-endian `u32` (`.bin`).
    LengthPrefixed,
}

impl Format {
    /// The object key's extension (before the compression's, if any).
    pub fn extension(self) -> &'static str {
        match self {
            Format::Ndjson => "ndjson",
            Format::LengthPrefixed => "bin",
        }
    }

    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Format::Ndjson => "application/x-ndjson",
            Format::LengthPrefixed => "application/octet-stream",
        }
    }

    /// The bytes `record` contributes to an object (before compression).
    pub fn encode(self, record: &Record) -> Vec<u8> {
        match self {
            Format::Ndjson => {
                let mut line = format!(
                    "{{\"seq\":{},\"subseq\":{},\"key\":{},",
                    json_string(&record.sequence_number),
                    record.sub_sequence_number,
                    json_string(&record.partition_key),
                );
                match std::str::from_utf8(&record.data) {
                    Ok(text) => {
                        line.push_str("\"data\":");
                        line.push_str(&json_string(text));
                    }
                    Err(_) => {
                        line.push_str("\"data\":\"");
                        line.push_str(&base64(&record.data));
                        line.push_str("\",\"encoding\":\"base64\"");
                    }
                }
                line.push_str("}\n");
                line.into_bytes()
            }
            Format::LengthPrefixed => {
                // Kinesis records are at most 10 MiB: the length always fits.
                let len = u32::try_from(record.data.len()).unwrap_or(u32::MAX);
                let mut out = Vec::with_capacity(4 + record.data.len());
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(&record.data);
                out
            }
        }
    }
}

/// Whether objects are compressed. See the [crate docs](crate#object-layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Written as encoded. The default.
    #[default]
    None,
    /// gzip (RFC 1952, deflate level 6, no file name, modification time 0): `.gz` is
    /// appended to the key and the object carries `Content-Encoding: gzip`.
    Gzip,
}

impl Compression {
    /// The suffix appended to the format's extension (`""` or `".gz"`).
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
        }
    }

    pub(crate) fn content_encoding(self) -> Option<&'static str> {
        match self {
            Compression::None => None,
            Compression::Gzip => Some("gzip"),
        }
    }
}

fn json_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// Standard base64 with padding (RFC 4648 §4).
pub(crate) fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
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

/// The object key of the batch `first..=last` of `shard`. See the
/// [crate docs](crate#object-layout).
pub fn object_key(
    prefix: &str,
    stream: &str,
    shard: &str,
    first: &SequenceNumber,
    last: &SequenceNumber,
    format: Format,
    compression: Compression,
) -> String {
    let prefix = prefix.trim_matches('/');
    let lead = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    format!(
        "{lead}{stream}/{shard}/{}-{}_{}-{}.{}{}",
        first.sequence(),
        first.sub_sequence(),
        last.sequence(),
        last.sub_sequence(),
        format.extension(),
        compression.suffix(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn record(seq: &str, sub: u64, key: &str, data: &[u8]) -> Record {
        Record {
            data: Bytes::copy_from_slice(data),
            partition_key: key.to_owned(),
            explicit_hash_key: None,
            sequence_number: seq.into(),
            sub_sequence_number: sub,
            approximate_arrival_timestamp: None,
            aggregated: false,
        }
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn ndjson_lines_carry_positions_and_tell_text_from_base64() {
        let text = Format::Ndjson.encode(&record("42", 3, "k\"1", b"hi \"there\""));
        assert_eq!(
            std::str::from_utf8(&text).unwrap(),
            "{\"seq\":\"42\",\"subseq\":3,\"key\":\"k\\\"1\",\"data\":\"hi \\\"there\\\"\"}\n"
        );
        let binary = Format::Ndjson.encode(&record("42", 0, "k", &[0xff, 0x00]));
        let v: serde_json::Value = serde_json::from_slice(&binary).unwrap();
        assert_eq!(v["data"], "/wA=");
        assert_eq!(v["encoding"], "base64");
        let raw = Format::LengthPrefixed.encode(&record("1", 0, "k", b"abc"));
        assert_eq!(raw, b"\0\0\0\x03abc");
    }

    #[test]
    fn keys_are_deterministic_and_prefix_slashes_ignored() {
        let a = SequenceNumber::new("100", 0).unwrap();
        let b = SequenceNumber::new("250", 7).unwrap();
        assert_eq!(
            object_key(
                "/out/",
                "s",
                "shardId-000000000001",
                &a,
                &b,
                Format::Ndjson,
                Compression::None
            ),
            "out/s/shardId-000000000001/100-0_250-7.ndjson"
        );
        assert_eq!(
            object_key(
                "",
                "s",
                "sh",
                &a,
                &b,
                Format::LengthPrefixed,
                Compression::None
            ),
            "s/sh/100-0_250-7.bin"
        );
        assert_eq!(
            object_key("p", "s", "sh", &a, &b, Format::Ndjson, Compression::Gzip),
            "p/s/sh/100-0_250-7.ndjson.gz"
        );
    }
}
