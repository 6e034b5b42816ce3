//! Where a group lives: its shard, and the core member that owns the shard.
//!
//! Pure functions, fixed forever for a cluster's data (../shared/design/cluster.md 4.1):
//! `shard_of(gid) = splitmix64_finaliser(gid) % shards` (a documented mix, never std's
//! randomly keyed hasher), and the shard table gives shard `s` to the `s mod n`-th core
//! member in name order. The table is computed once at cluster creation and stored in each
//! node's identity file; ownership never moves at runtime in phase 1, so two owners cannot
//! exist. The test crate calls [`owner_of`] to know where a group lives.

/// The splitmix64 finaliser (Steele, Lea, Flood 2014; the output stage of `splitmix64`):
/// a bijection on u64 that spreads sequential ids evenly.
pub fn mix64(x: u64) -> u64 {
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The shard of group `gid` among `shards` (at least 1).
pub fn shard_of(gid: u64, shards: u32) -> u32 {
    let shards = u64::from(shards.max(1));
    // The remainder is below `shards`, which came from a u32.
    u32::try_from(mix64(gid) % shards).unwrap_or(0)
}

/// The shard table: for each shard, the index of its owner in `sorted_members` (core member
/// names sorted ascending). Shard `s` goes to member `s mod n`; empty when there are no
/// members.
pub fn shard_table(shards: u32, members: usize) -> Vec<u16> {
    if members == 0 {
        return Vec::new();
    }
    (0..shards as usize)
        .map(|s| u16::try_from(s % members).unwrap_or(u16::MAX))
        .collect()
}

/// The name of the core member that owns group `gid`, given the core member names in any
/// order (they are sorted here) and the shard count. `None` without members.
pub fn owner_of<'a>(gid: u64, shards: u32, members: &[&'a str]) -> Option<&'a str> {
    let mut sorted: Vec<&str> = members.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.is_empty() {
        return None;
    }
    let shard = shard_of(gid, shards) as usize;
    sorted.get(shard % sorted.len()).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_is_the_documented_splitmix64_finaliser() {
        // Values of the reference splitmix64 output stage (state already advanced).
        assert_eq!(mix64(0), 0);
        assert_eq!(mix64(1), 0x5692_161d_100b_05e5);
        assert_ne!(mix64(2), mix64(1));
    }

    #[test]
    fn shards_are_balanced_over_sequential_ids() {
        let shards = 256;
        let mut count = vec![0u32; shards as usize];
        for gid in 1..=256_000u64 {
            count[shard_of(gid, shards) as usize] += 1;
        }
        let (lo, hi) = (
            count.iter().min().copied().unwrap_or(0),
            count.iter().max().copied().unwrap_or(0),
        );
        assert!(lo > 850 && hi < 1150, "uneven: {lo}..{hi}");
    }

    #[test]
    fn table_is_deterministic_and_balanced() {
        let t = shard_table(256, 3);
        assert_eq!(t.len(), 256);
        assert_eq!(&t[..6], &[0, 1, 2, 0, 1, 2]);
        let per: Vec<usize> = (0..3)
            .map(|m| t.iter().filter(|&&o| o == m).count())
            .collect();
        assert_eq!(per, vec![86, 85, 85]);
        assert!(shard_table(256, 0).is_empty());
    }

    #[test]
    fn owner_does_not_depend_on_member_order() {
        for gid in [1u64, 2, 77, 1 << 40, u64::MAX] {
            let a = owner_of(gid, 256, &["n1", "n2", "n3"]);
            let b = owner_of(gid, 256, &["n3", "n1", "n2"]);
            assert_eq!(a, b);
            let shard = shard_of(gid, 256) as usize;
            assert_eq!(a, Some(["n1", "n2", "n3"][shard % 3]));
        }
        assert_eq!(owner_of(5, 256, &[]), None);
        assert_eq!(owner_of(5, 1, &["solo"]), Some("solo"));
    }
}
