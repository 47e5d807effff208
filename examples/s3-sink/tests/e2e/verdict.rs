//! The verdict, as pure functions: what was put against what the bucket holds.
//!
//! ```text
//!  ids put (producer outcomes Ok) ─┐
//!                                  ├─► verdict() ─► missing · duplicated (id, copies) · unexpected
//!  ids in every object's lines  ───┘
//!  (shard, key, first, last) of every object ─► overlapping() ─► pairs of keys covering one range
//! ```
//!
//! Objects are keyed by the positions they cover, so a replay that rewrites an object
//! cannot add copies under the same key; a duplicate can only come from two *different*
//! objects holding the same record (a replay that cut a range differently) or from one
//! object holding a record twice. Both show here: the first as an overlap and as duplicated
//! ids, the second as duplicated ids.

use std::collections::{BTreeMap, BTreeSet};

/// Ids put against ids found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Put, never found.
    pub missing: Vec<u64>,
    /// Found more than once: (id, copies).
    pub duplicated: Vec<(u64, usize)>,
    /// Found, never put (or put with a failed outcome).
    pub unexpected: Vec<u64>,
    /// Lines found, duplicates included.
    pub found: usize,
    /// Distinct ids found.
    pub distinct: usize,
}

impl Verdict {
    /// Every id put was found exactly once, and nothing else was.
    pub fn is_exactly_once(&self) -> bool {
        self.missing.is_empty() && self.duplicated.is_empty() && self.unexpected.is_empty()
    }

    /// One line for a summary or a failure message (long lists cut to their first ids).
    pub fn describe(&self) -> String {
        fn head<T: std::fmt::Debug>(v: &[T]) -> String {
            if v.len() <= 10 {
                format!("{v:?}")
            } else {
                format!("{:?}… ({} in all)", &v[..10], v.len())
            }
        }
        format!(
            "{} lines, {} distinct ids; missing {}, duplicated {}, unexpected {}",
            self.found,
            self.distinct,
            head(&self.missing),
            head(&self.duplicated),
            head(&self.unexpected),
        )
    }
}

/// Compares the ids put with the multiset of ids found.
pub fn verdict(put: &BTreeSet<u64>, found: impl IntoIterator<Item = u64>) -> Verdict {
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    let mut lines = 0;
    for id in found {
        *counts.entry(id).or_default() += 1;
        lines += 1;
    }
    Verdict {
        missing: put
            .iter()
            .filter(|id| !counts.contains_key(id))
            .copied()
            .collect(),
        duplicated: counts
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, n)| (*id, *n))
            .collect(),
        unexpected: counts
            .keys()
            .filter(|id| !put.contains(id))
            .copied()
            .collect(),
        found: lines,
        distinct: counts.len(),
    }
}

/// One object's place in its shard: (shard, key, first position, last position).
pub type Range<P> = (String, String, P, P);

/// Pairs of object keys of one shard whose position ranges intersect. With deterministic
/// cuts there are none: a replay rewrites the same key.
pub fn overlapping<P: Ord>(ranges: impl IntoIterator<Item = Range<P>>) -> Vec<(String, String)> {
    let mut by_shard: BTreeMap<String, Vec<(P, P, String)>> = BTreeMap::new();
    for (shard, key, first, last) in ranges {
        by_shard.entry(shard).or_default().push((first, last, key));
    }
    let mut out = Vec::new();
    for mut objects in by_shard.into_values() {
        objects.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        // Sorted by first position: an object overlaps an earlier one exactly when it starts
        // at or before the furthest end seen so far.
        let mut furthest: Option<usize> = None;
        for i in 0..objects.len() {
            if let Some(j) = furthest
                && objects[i].0 <= objects[j].1
            {
                out.push((objects[j].2.clone(), objects[i].2.clone()));
            }
            if furthest.is_none_or(|j| objects[i].1 > objects[j].1) {
                furthest = Some(i);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u64]) -> BTreeSet<u64> {
        v.iter().copied().collect()
    }

    #[test]
    fn exactly_once_when_the_multisets_match() {
        let v = verdict(&ids(&[1, 2, 3]), [3, 1, 2]);
        assert!(v.is_exactly_once(), "{v:?}");
        assert_eq!((v.found, v.distinct), (3, 3));
    }

    #[test]
    fn reports_missing_duplicated_and_unexpected_ids() {
        let v = verdict(&ids(&[1, 2, 3, 4]), [1, 2, 2, 2, 4, 9]);
        assert!(!v.is_exactly_once());
        assert_eq!(v.missing, [3]);
        assert_eq!(v.duplicated, [(2, 3)]);
        assert_eq!(v.unexpected, [9]);
        assert_eq!((v.found, v.distinct), (6, 4));
        assert!(v.describe().contains("missing [3]"), "{}", v.describe());
    }

    #[test]
    fn overlaps_are_found_per_shard_only() {
        let r = |shard: &str, key: &str, a: u32, b: u32| (shard.into(), key.into(), a, b);
        // Adjacent ranges, and the same range in another shard: no overlap.
        assert!(
            overlapping([r("s0", "a", 0, 9), r("s0", "b", 10, 19), r("s1", "c", 0, 9)]).is_empty()
        );
        // A replay cut differently: 0..=9 and 5..=14.
        assert_eq!(
            overlapping([r("s0", "a", 0, 9), r("s0", "b", 5, 14)]),
            [("a".to_owned(), "b".to_owned())]
        );
        // A long object covering two later short ones.
        assert_eq!(
            overlapping([
                r("s0", "long", 0, 30),
                r("s0", "x", 10, 12),
                r("s0", "y", 20, 22)
            ])
            .len(),
            2
        );
    }
}
