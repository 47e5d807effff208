//! Shard sync: which leases the table should have, given the stream's shards.
//!
//! Pure functions of (the shards `ListShards` returned, the leases in the table, the initial
//! position) → leases to create and finished leases to clean up, tested as tables of
//! scenarios. The worker runs them at start, periodically, and after a shard ends.
//!
//! Rules (the KCL 2.x's, made explicit):
//! - **Empty table** (a new application): `TRIM_HORIZON` / `AT_TIMESTAMP` start from the oldest
//!   data, so every shard gets a lease (closed ancestors included, each with its parents, so
//!   that parents are read before children); `LATEST` reads only from now on, so only the open
//!   shards get a lease, without parents.
//! - **Table in use**: a shard without a lease gets one when one of its parents has a lease (a
//!   child after a split or merge), starting at `TRIM_HORIZON`: a child must be read from its
//!   first record whatever the configured initial position, or records written between the
//!   reshard and the child's start would be skipped (the KCL's own rule; its #580 is users
//!   surprised by it). An open shard whose parents are unknown to the table (they were cleaned
//!   up long ago, or the table was filled by hand) also gets a lease at `TRIM_HORIZON`. A closed
//!   shard with no leased parent is history from before the application started: no lease.
//! - A child lease records only the parents that have leases: a parent the table never knew
//!   (or already cleaned up) must not block it.
//! - **Cleanup**: a finished lease (`SHARD_END`) is deleted once every child of it has a lease
//!   that has started (checkpoint past `TRIM_HORIZON`, or finished) and it has no parent lease
//!   left itself, so the tree is always removed from the root down.

use std::collections::{BTreeMap, BTreeSet};

use kinesis_aggregation::HashKeyRange;

use crate::lease::Lease;
use crate::position::Position;

/// A shard as `ListShards` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ShardInfo {
    pub shard_id: String,
    /// `ParentShardId` and, for a merge, `AdjacentParentShardId`.
    pub parents: Vec<String>,
    pub hash_key_range: Option<HashKeyRange>,
    /// Whether the shard is still open (no ending sequence number).
    pub open: bool,
}

/// The leases to create so that the table covers `shards`. See the [module docs](self).
pub(crate) fn leases_to_create(
    shards: &[ShardInfo],
    existing: &[Lease],
    initial: &Position,
) -> Vec<Lease> {
    let leased: BTreeSet<&str> = existing.iter().map(|l| l.shard_id()).collect();
    let known: BTreeSet<&str> = shards.iter().map(|s| s.shard_id.as_str()).collect();
    let mut out = Vec::new();
    if existing.is_empty() {
        let latest = *initial == Position::Latest;
        for shard in shards.iter().filter(|s| !latest || s.open) {
            let parents: Vec<&String> = if latest {
                Vec::new()
            } else {
                shard
                    .parents
                    .iter()
                    .filter(|p| known.contains(p.as_str()))
                    .collect()
            };
            out.push(lease_for(shard, initial.clone(), parents));
        }
        return out;
    }
    // Within one pass, a new child of a new child (split twice between syncs) is found
    // through the leases created earlier in this pass: walk parents first.
    let mut will_have: BTreeSet<String> = leased.iter().map(|s| s.to_string()).collect();
    for shard in in_parent_order(shards) {
        if will_have.contains(&shard.shard_id) {
            continue;
        }
        let leased_parents: Vec<&String> = shard
            .parents
            .iter()
            .filter(|p| will_have.contains(p.as_str()))
            .collect();
        if leased_parents.is_empty() && !shard.open {
            continue;
        }
        will_have.insert(shard.shard_id.clone());
        out.push(lease_for(shard, Position::TrimHorizon, leased_parents));
    }
    out
}

fn lease_for(shard: &ShardInfo, checkpoint: Position, parents: Vec<&String>) -> Lease {
    let mut lease = Lease::new(shard.shard_id.clone(), checkpoint).with_parents(parents);
    if let Some(range) = shard.hash_key_range {
        lease = lease.with_hash_key_range(range);
    }
    lease
}

/// `shards` with every shard after its parents (ListShards already returns them so, but
/// nothing promises it).
fn in_parent_order(shards: &[ShardInfo]) -> Vec<&ShardInfo> {
    let by_id: BTreeMap<&str, &ShardInfo> =
        shards.iter().map(|s| (s.shard_id.as_str(), s)).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::with_capacity(shards.len());
    fn visit<'a>(
        shard: &'a ShardInfo,
        by_id: &BTreeMap<&str, &'a ShardInfo>,
        done: &mut BTreeSet<&'a str>,
        out: &mut Vec<&'a ShardInfo>,
    ) {
        if !done.insert(shard.shard_id.as_str()) {
            return;
        }
        for parent in &shard.parents {
            if let Some(p) = by_id.get(parent.as_str()) {
                visit(p, by_id, done, out);
            }
        }
        out.push(shard);
    }
    for shard in shards {
        visit(shard, &by_id, &mut done, &mut out);
    }
    out
}

/// Finished leases that can be deleted now. See the [module docs](self).
pub(crate) fn leases_to_clean_up<'a>(
    existing: &'a [Lease],
    shards: &[ShardInfo],
) -> Vec<&'a Lease> {
    let by_key: BTreeMap<&str, &Lease> = existing.iter().map(|l| (l.shard_id(), l)).collect();
    // Children as the stream describes them, merged with what SHARD_END recorded.
    let mut children: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for shard in shards {
        for parent in &shard.parents {
            children
                .entry(parent.as_str())
                .or_default()
                .insert(shard.shard_id.as_str());
        }
    }
    for lease in existing {
        for child in &lease.child_shard_ids {
            children
                .entry(lease.shard_id())
                .or_default()
                .insert(child.as_str());
        }
    }
    existing
        .iter()
        .filter(|lease| lease.is_finished())
        .filter(|lease| {
            !lease
                .parent_shard_ids
                .iter()
                .any(|p| by_key.contains_key(p.as_str()))
        })
        .filter(|lease| {
            let kids = children.get(lease.shard_id());
            // A finished shard whose children we cannot see yet stays.
            kids.is_some_and(|kids| {
                !kids.is_empty()
                    && kids.iter().all(|kid| {
                        by_key
                            .get(kid)
                            .is_some_and(|l| l.checkpoint > Position::TrimHorizon)
                    })
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, parents: &[&str], open: bool) -> ShardInfo {
        ShardInfo {
            shard_id: id.into(),
            parents: parents.iter().map(|p| p.to_string()).collect(),
            hash_key_range: None,
            open,
        }
    }

    fn lease(id: &str, checkpoint: Position, parents: &[&str]) -> Lease {
        Lease::new(id, checkpoint).with_parents(parents.iter().copied())
    }

    fn summary(leases: &[Lease]) -> Vec<(String, Position, Vec<String>)> {
        leases
            .iter()
            .map(|l| {
                (
                    l.lease_key.clone(),
                    l.checkpoint.clone(),
                    l.parent_shard_ids.iter().cloned().collect(),
                )
            })
            .collect()
    }

    fn seq(n: u32) -> Position {
        Position::sequence(&n.to_string(), 0).unwrap()
    }

    /// A stream of 2 shards where shard 0 was split into 2 and 3, then 3 merged with 1 into 4.
    fn resharded() -> Vec<ShardInfo> {
        vec![
            shard("s0", &[], false),
            shard("s1", &[], false),
            shard("s2", &["s0"], true),
            shard("s3", &["s0"], false),
            shard("s4", &["s3", "s1"], true),
        ]
    }

    #[test]
    fn empty_table_at_trim_horizon_leases_the_whole_tree() {
        let out = leases_to_create(&resharded(), &[], &Position::TrimHorizon);
        let th = Position::TrimHorizon;
        assert_eq!(
            summary(&out),
            [
                ("s0".into(), th.clone(), vec![]),
                ("s1".into(), th.clone(), vec![]),
                ("s2".into(), th.clone(), vec!["s0".into()]),
                ("s3".into(), th.clone(), vec!["s0".into()]),
                ("s4".into(), th, vec!["s1".into(), "s3".into()]),
            ]
        );
    }

    #[test]
    fn empty_table_at_latest_leases_only_open_shards_without_parents() {
        let out = leases_to_create(&resharded(), &[], &Position::Latest);
        assert_eq!(
            summary(&out),
            [
                ("s2".into(), Position::Latest, vec![]),
                ("s4".into(), Position::Latest, vec![]),
            ]
        );
    }

    #[test]
    fn children_of_leased_shards_start_at_trim_horizon_whatever_the_initial_position() {
        let existing = [
            lease("s0", Position::ShardEnd, &[]),
            lease("s1", seq(5), &[]),
        ];
        let shards = vec![
            shard("s0", &[], false),
            shard("s1", &[], true),
            shard("s2", &["s0"], true),
            shard("s3", &["s0"], true),
        ];
        let out = leases_to_create(&shards, &existing, &Position::Latest);
        assert_eq!(
            summary(&out),
            [
                ("s2".into(), Position::TrimHorizon, vec!["s0".into()]),
                ("s3".into(), Position::TrimHorizon, vec!["s0".into()]),
            ]
        );
    }

    #[test]
    fn a_merge_records_both_parents_and_a_split_twice_is_found_in_one_pass() {
        let existing = [lease("s0", seq(1), &[]), lease("s1", seq(1), &[])];
        let out = leases_to_create(&resharded(), &existing, &Position::Latest);
        assert_eq!(
            summary(&out),
            [
                ("s2".into(), Position::TrimHorizon, vec!["s0".into()]),
                ("s3".into(), Position::TrimHorizon, vec!["s0".into()]),
                (
                    "s4".into(),
                    Position::TrimHorizon,
                    vec!["s1".into(), "s3".into()]
                ),
            ]
        );
    }

    #[test]
    fn history_before_the_application_gets_no_lease_and_orphans_do() {
        // The table only knows s4 (its ancestors were cleaned up): the closed history gets
        // nothing, the open s2 that nobody reads does.
        let existing = [lease("s4", seq(9), &[])];
        let out = leases_to_create(&resharded(), &existing, &Position::TrimHorizon);
        assert_eq!(
            summary(&out),
            [("s2".into(), Position::TrimHorizon, vec![])]
        );
        // An open shard nobody leased (say, a lease deleted by hand) is picked up.
        let existing = [lease("s2", seq(9), &[])];
        let out = leases_to_create(&resharded(), &existing, &Position::TrimHorizon);
        assert_eq!(
            summary(&out),
            [("s4".into(), Position::TrimHorizon, vec![])]
        );
    }

    #[test]
    fn finished_leases_are_cleaned_up_root_first_once_children_started() {
        let shards = resharded();
        let ids = |v: Vec<&Lease>| v.iter().map(|l| l.lease_key.clone()).collect::<Vec<_>>();
        // s0 finished, children not started: keep.
        let existing = vec![
            lease("s0", Position::ShardEnd, &[]),
            lease("s2", Position::TrimHorizon, &["s0"]),
            lease("s3", seq(3), &["s0"]),
        ];
        assert!(leases_to_clean_up(&existing, &shards).is_empty());
        // Both children started: s0 goes.
        let existing = vec![
            lease("s0", Position::ShardEnd, &[]),
            lease("s2", seq(1), &["s0"]),
            lease("s3", Position::ShardEnd, &["s0"]),
            lease("s1", Position::ShardEnd, &[]),
            lease("s4", seq(2), &["s3", "s1"]),
        ];
        assert_eq!(ids(leases_to_clean_up(&existing, &shards)), ["s0", "s1"]);
        // s3 still has its parent s0 in the table: it waits for s0 to go first.
        let without_s0: Vec<Lease> = existing[1..].to_vec();
        assert_eq!(ids(leases_to_clean_up(&without_s0, &shards)), ["s3", "s1"]);
    }

    #[test]
    fn an_open_or_childless_finished_lease_stays() {
        let shards = vec![shard("s0", &[], false)];
        let existing = vec![lease("s0", Position::ShardEnd, &[])];
        assert!(leases_to_clean_up(&existing, &shards).is_empty());
        let existing = vec![lease("s0", seq(4), &[])];
        assert!(leases_to_clean_up(&existing, &shards).is_empty());
    }
}
