//! Which shard a hash key goes to, from `ListShards`.
//!
//! ```text
//!  ListShards pages ──► ShardMap { open shards sorted by ending hash key, all shards by id }
//!  hash key ──binary search──► predicted shard id
//!  (shard id, keys) ──► "does this shard's range hold all these keys?"  (wrong-shard check)
//! ```
//!
//! Closed shards are kept (by id) so that a result naming a shard we did not predict can still
//! be judged: landing on the child of a split whose range holds every key is a success.

use std::collections::HashMap;
use std::sync::Arc;

use kinesis_aggregation::{HashKey, HashKeyRange};

use crate::api::{CallError, KinesisApi, ShardDesc, StreamId};

/// A snapshot of the stream's shards.
#[derive(Debug, Clone, Default)]
pub(crate) struct ShardMap {
    /// Open shards: (ending hash key, starting hash key, id), sorted by ending key.
    open: Vec<(u128, u128, Arc<str>)>,
    /// Every shard listed, open or closed.
    by_id: HashMap<Arc<str>, HashKeyRange>,
}

impl ShardMap {
    pub(crate) fn new(shards: impl IntoIterator<Item = ShardDesc>) -> ShardMap {
        let mut open = Vec::new();
        let mut by_id = HashMap::new();
        for s in shards {
            if s.open {
                open.push((s.range.end.0, s.range.start.0, s.id.clone()));
            }
            by_id.insert(s.id, s.range);
        }
        open.sort_unstable_by_key(|e| e.0);
        ShardMap { open, by_id }
    }

    /// The open shard whose range holds `key`, if any (none when there is no map, or the
    /// stream is mid-reshard and the key falls in a gap).
    #[cfg(test)]
    pub(crate) fn predict(&self, key: HashKey) -> Option<&Arc<str>> {
        self.predict_index(key).map(|i| self.open_id(i))
    }

    /// Where `key` goes: the position of its shard among the open shards
    /// (`0..open_shards()`), so that the engine can keep per-shard state in a vector; `None`
    /// when there is no map, or the stream is mid-reshard and the key falls in a gap.
    pub(crate) fn predict_index(&self, key: HashKey) -> Option<usize> {
        let i = self.open.partition_point(|e| e.0 < key.0);
        self.open.get(i).filter(|e| e.1 <= key.0).map(|_| i)
    }

    /// The id of the open shard at `index` (from [`predict_index`](Self::predict_index)).
    pub(crate) fn open_id(&self, index: usize) -> &Arc<str> {
        &self.open[index].2
    }

    /// Whether `shard` (open or closed) exists in this map.
    pub(crate) fn knows(&self, shard: &str) -> bool {
        self.by_id.contains_key(shard)
    }

    /// The hash-key range of `shard` (open or closed), if the map knows it.
    pub(crate) fn range(&self, shard: &str) -> Option<HashKeyRange> {
        self.by_id.get(shard).copied()
    }

    /// Whether `shard` is open in this map.
    pub(crate) fn is_open(&self, shard: &str) -> bool {
        self.open.iter().any(|e| &*e.2 == shard)
    }

    pub(crate) fn open_shards(&self) -> usize {
        self.open.len()
    }
}

/// Reads every page of `ListShards`.
pub(crate) async fn load(
    api: &dyn KinesisApi,
    stream: &StreamId,
    page_size: Option<i32>,
) -> Result<ShardMap, CallError> {
    let mut all = Vec::new();
    let mut after: Option<Arc<str>> = None;
    loop {
        let page = api.list_shards(stream, after.as_deref(), page_size).await?;
        let last = page.shards.last().map(|s| s.id.clone());
        all.extend(page.shards);
        match (page.more, last) {
            (true, Some(last)) => after = Some(last),
            // No more pages; or a "more" with an empty page, which would loop forever.
            _ => break,
        }
    }
    Ok(ShardMap::new(all))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn shard(id: &str, start: u128, end: u128, open: bool) -> ShardDesc {
        ShardDesc {
            id: id.into(),
            range: HashKeyRange::new(HashKey(start), HashKey(end)),
            parent: None,
            adjacent_parent: None,
            open,
        }
    }

    #[test]
    fn predicts_by_range_and_skips_closed() {
        let map = ShardMap::new([
            shard("s1", 100, 199, true),
            shard("s0", 0, 99, true),
            shard("old", 0, 199, false),
            shard("s2", 200, u128::MAX, true),
        ]);
        assert_eq!(map.predict(HashKey(0)).map(|s| &**s), Some("s0"));
        assert_eq!(map.predict(HashKey(99)).map(|s| &**s), Some("s0"));
        assert_eq!(map.predict(HashKey(100)).map(|s| &**s), Some("s1"));
        assert_eq!(map.predict(HashKey(u128::MAX)).map(|s| &**s), Some("s2"));
        assert!(map.knows("old"));
        assert!(!map.is_open("old"));
        assert!(map.range("old").unwrap().contains(HashKey(150)));
        assert!(map.range("nope").is_none());
    }

    #[test]
    fn gaps_and_empty_maps_predict_nothing() {
        assert!(ShardMap::default().predict(HashKey(7)).is_none());
        let map = ShardMap::new([shard("a", 10, 20, true)]);
        assert!(map.predict(HashKey(9)).is_none());
        assert!(map.predict(HashKey(21)).is_none());
    }

    proptest! {
        /// Whatever the split points, every key lands in the one shard whose range holds it.
        #[test]
        fn prediction_matches_linear_scan(mut cuts in proptest::collection::vec(any::<u128>(), 0..20), key: u128) {
            cuts.sort_unstable();
            cuts.dedup();
            cuts.retain(|&c| c != u128::MAX);
            let mut shards = Vec::new();
            let mut start = 0u128;
            for (i, &c) in cuts.iter().enumerate() {
                if c < start { continue; }
                shards.push(shard(&format!("s{i}"), start, c, true));
                start = c + 1;
            }
            shards.push(shard("last", start, u128::MAX, true));
            let expected = shards.iter().find(|s| s.range.contains(HashKey(key))).map(|s| s.id.clone());
            let map = ShardMap::new(shards);
            prop_assert_eq!(map.predict(HashKey(key)).cloned(), expected.clone());
            prop_assert_eq!(map.predict_index(HashKey(key)).map(|i| map.open_id(i).clone()), expected);
        }
    }
}
