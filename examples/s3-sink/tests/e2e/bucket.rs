//! Reading what the sinks wrote: every object of the bucket, parsed back into positions and
//! record ids.
//!
//! ```text
//!  ListObjectsV2 (all pages) ─► key + ETag ─► unseen key or changed ETag? ─► GetObject
//!                                                 │                          (gunzip if gzip)
//!                                                 ▼                               ▼
//!                                   cache: key → Object { shard, first, last, lines, problems }
//! ```
//!
//! The cache makes polling cheap (only new or changed objects are fetched) and doubles as a
//! check: a key rewritten with *other records* is recorded in [`Bucket::rewritten`];
//! deterministic cuts never do that (a replay rewrites the same bytes).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::sync::Mutex;

use kinesis_consumer::SequenceNumber;

/// One NDJSON line: the record's position and the id the test put in its data.
#[derive(Debug, Clone)]
pub struct Line {
    pub position: SequenceNumber,
    pub id: u64,
}

/// One object, parsed. `problems` lists whatever is wrong with it (unparsable key or
/// line, positions out of order, a key that does not name its first and last line).
#[derive(Debug, Clone)]
pub struct Object {
    pub key: String,
    pub shard: String,
    pub first: Option<SequenceNumber>,
    pub last: Option<SequenceNumber>,
    pub etag: String,
    /// The body was gzip-compressed.
    pub gzip: bool,
    pub lines: Vec<Line>,
    pub problems: Vec<String>,
}

/// A bucket being watched.
pub struct Bucket {
    s3: aws_sdk_s3::Client,
    name: String,
    cache: BTreeMap<String, Object>,
    /// Keys seen rewritten with other records: (key, old ETag, new ETag).
    pub rewritten: Vec<(String, String, String)>,
    /// The earliest LastModified (ms) any listing showed for each key: a rewrite only
    /// moves it later, so this is as close to the first write as the polls saw.
    earliest: Mutex<BTreeMap<String, i64>>,
}

impl Bucket {
    pub fn new(s3: aws_sdk_s3::Client, name: &str) -> Bucket {
        Bucket {
            s3,
            name: name.to_owned(),
            cache: BTreeMap::new(),
            rewritten: Vec::new(),
            earliest: Mutex::default(),
        }
    }

    /// Every object now in the bucket, parsed (fetching only new or changed ones).
    pub async fn objects(&mut self) -> Vec<Object> {
        let listed = self.list("").await;
        for (key, etag) in &listed {
            let known = self.cache.get(key);
            if known.is_some_and(|o| &o.etag == etag) {
                continue;
            }
            let body = self
                .s3
                .get_object()
                .bucket(&self.name)
                .key(key)
                .send()
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "GetObject {key}: {}",
                        aws_sdk_s3::error::DisplayErrorContext(e)
                    )
                })
                .body
                .collect()
                .await
                .unwrap()
                .into_bytes();
            let object = parse(key, etag, &body);
            // A new ETag alone proves little (an upload split into parts has another kind
            // of ETag); different records under the same key are what must never happen.
            if let Some(old) = known
                && !same_records(old, &object)
            {
                self.rewritten
                    .push((key.clone(), old.etag.clone(), object.etag.clone()));
            }
            self.cache.insert(key.clone(), object);
        }
        listed
            .keys()
            .filter_map(|k| self.cache.get(k).cloned())
            .collect()
    }

    /// Keys and ETags under `prefix`, every page.
    pub async fn list(&self, prefix: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut token = None;
        loop {
            let page = self
                .s3
                .list_objects_v2()
                .bucket(&self.name)
                .prefix(prefix)
                .set_continuation_token(token)
                .send()
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "ListObjectsV2: {}",
                        aws_sdk_s3::error::DisplayErrorContext(e)
                    )
                });
            let mut earliest = self.earliest.lock().unwrap();
            for o in page.contents() {
                let key = o.key().unwrap_or_default().to_owned();
                if let Some(ms) = o.last_modified().and_then(|t| t.to_millis().ok()) {
                    let e = earliest.entry(key.clone()).or_insert(ms);
                    *e = (*e).min(ms);
                }
                out.insert(key, o.e_tag().unwrap_or_default().to_owned());
            }
            drop(earliest);
            token = page.next_continuation_token().map(str::to_owned);
            if token.is_none() {
                return out;
            }
        }
    }

    /// The earliest LastModified seen for `key`, in ms since the epoch.
    pub fn earliest(&self, key: &str) -> Option<i64> {
        self.earliest.lock().unwrap().get(key).copied()
    }

    /// Keys under `prefix` (for probes that must list one shard at a time).
    pub async fn keys(&self, prefix: &str) -> BTreeSet<String> {
        self.list(prefix).await.into_keys().collect()
    }
}

/// `…/{shard}/{first seq}-{first subseq}_{last seq}-{last subseq}.{ext}` → (shard, first, last).
pub fn parse_key(key: &str) -> Option<(String, SequenceNumber, SequenceNumber)> {
    let mut parts = key.rsplit('/');
    let name = parts.next()?;
    let shard = parts.next()?;
    let range = name.split('.').next()?;
    let (first, last) = range.split_once('_')?;
    let position = |p: &str| {
        let (seq, sub) = p.split_once('-')?;
        SequenceNumber::new(seq, sub.parse().ok()?).ok()
    };
    Some((shard.to_owned(), position(first)?, position(last)?))
}

fn same_records(a: &Object, b: &Object) -> bool {
    a.lines.len() == b.lines.len()
        && a.lines
            .iter()
            .zip(&b.lines)
            .all(|(x, y)| x.position == y.position && x.id == y.id)
}

fn parse(key: &str, etag: &str, body: &[u8]) -> Object {
    let mut problems = Vec::new();
    let (shard, key_first, key_last) = match parse_key(key) {
        Some((s, f, l)) => (s, Some(f), Some(l)),
        None => {
            problems.push("key does not name a shard and a position range".to_owned());
            (String::new(), None, None)
        }
    };
    // The sink may compress; NDJSON itself always starts with `{`.
    let gzip = body.starts_with(&[0x1f, 0x8b]);
    let text = if gzip {
        let mut out = String::new();
        match flate2::read::MultiGzDecoder::new(body).read_to_string(&mut out) {
            Ok(_) => out,
            Err(e) => {
                problems.push(format!("gzip: {e}"));
                String::new()
            }
        }
    } else {
        match String::from_utf8(body.to_vec()) {
            Ok(t) => t,
            Err(_) => {
                problems.push("body is not UTF-8".to_owned());
                String::new()
            }
        }
    };
    let mut lines: Vec<Line> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        match parse_line(raw) {
            Some(line) => {
                if let Some(prev) = lines.last()
                    && prev.position >= line.position
                {
                    problems.push(format!(
                        "line {n}: position {} after {}",
                        line.position, prev.position
                    ));
                }
                lines.push(line);
            }
            None => problems.push(format!("line {n} unparsable: {raw:.200}")),
        }
    }
    if lines.is_empty() {
        problems.push("no lines".to_owned());
    }
    let first = lines.first().map(|l| l.position.clone());
    let last = lines.last().map(|l| l.position.clone());
    if key_first.is_some() && (first != key_first || last != key_last) {
        problems.push(format!(
            "key names {:?}..{:?} but lines hold {:?}..{:?}",
            key_first.as_ref().map(|p| p.to_string()),
            key_last.as_ref().map(|p| p.to_string()),
            first.as_ref().map(|p| p.to_string()),
            last.as_ref().map(|p| p.to_string()),
        ));
    }
    Object {
        key: key.to_owned(),
        shard,
        first: key_first,
        last: key_last,
        etag: etag.to_owned(),
        gzip,
        lines,
        problems,
    }
}

/// `{"seq":"…","subseq":n,"key":"…","data":"{\"id\":n}"}` → position and id.
fn parse_line(raw: &str) -> Option<Line> {
    let v: serde_json::Value = serde_json::from_str(raw).ok()?;
    let position = SequenceNumber::new(v["seq"].as_str()?, v["subseq"].as_u64()?).ok()?;
    let data: serde_json::Value = serde_json::from_str(v["data"].as_str()?).ok()?;
    Some(Line {
        position,
        id: data["id"].as_u64()?,
    })
}
