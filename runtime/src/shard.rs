//! Splitting a folder's pipelines across processes: `run FOLDER --shard I/N` runs the
//! pipelines whose name hashes to shard `I` of `N`, so `N` processes (on `N` machines,
//! e.g. the replicas of a Kubernetes StatefulSet with the ordinal as `I`) share a
//! folder without talking to each other.
//!
//! The hash is FNV-1a, 64 bits, of the pipeline's `name` (its UTF-8 bytes), taken
//! modulo `N`: stable across versions, platforms and runs, and easy to compute
//! elsewhere (`docs/deploy.md` shows it in Python). Renaming a pipeline can move it to
//! another shard; its link table and checkpoint go with the name's file, not the shard.
//!
//! Shards that overlap by mistake (two processes given the same `I/N`, or a change of
//! `N` rolled out one replica at a time) stay correct: a batch commits only after
//! checking the link table's checkpoint (`txn`) in the same Delta commit, so two
//! runners of one pipeline never commit one batch twice; the slower one finds the
//! checkpoint moved, opens a new session and goes on from there.

use std::fmt;
use std::str::FromStr;

/// Shard `index` of `count` (0-based: `0/4` to `3/4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

/// FNV-1a, 64 bits.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

impl Shard {
    /// The shard (its index) that pipeline `name` belongs to among `count`.
    pub fn of(name: &str, count: u64) -> u64 {
        fnv1a64(name.as_bytes()) % count.max(1)
    }

    /// Whether pipeline `name` is this shard's.
    pub fn has(&self, name: &str) -> bool {
        Self::of(name, self.count) == self.index
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| format!("--shard {s:?}: {why}; write I/N with 0 <= I < N, e.g. 0/4");
        let (i, n) = s.split_once('/').ok_or_else(|| bad("no '/'"))?;
        let index: u64 = i.trim().parse().map_err(|_| bad("I is not a number"))?;
        let count: u64 = n.trim().parse().map_err(|_| bad("N is not a number"))?;
        if count == 0 {
            return Err(bad("N must be at least 1"));
        }
        if index >= count {
            return Err(bad("I must be less than N (shards are numbered from 0)"));
        }
        Ok(Shard { index, count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_the_published_test_vectors() {
        // From the FNV reference (http://www.isthe.com/chongo/tech/comp/fnv/).
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn every_pipeline_is_in_exactly_one_shard() {
        let names: Vec<String> = (0..200).map(|i| format!("pipeline_{i}")).collect();
        for count in 1..=5 {
            let mut sizes = vec![0; count as usize];
            for n in &names {
                let owners: Vec<u64> = (0..count)
                    .filter(|i| Shard { index: *i, count }.has(n))
                    .collect();
                assert_eq!(owners.len(), 1, "{n} in {count} shards: {owners:?}");
                sizes[owners[0] as usize] += 1;
            }
            // Spread: no shard empty or holding more than twice its share.
            assert!(
                sizes
                    .iter()
                    .all(|s| *s > 0 && *s < 2 * 200 / count as usize + 1),
                "{sizes:?}"
            );
        }
    }

    #[test]
    fn shard_parses_i_of_n_and_names_what_is_wrong() {
        assert_eq!("2/4".parse::<Shard>(), Ok(Shard { index: 2, count: 4 }));
        assert_eq!(
            " 0 / 1 ".trim().parse::<Shard>().map(|s| s.to_string()),
            Ok("0/1".into())
        );
        for (bad, why) in [
            ("4/4", "less than N"),
            ("1/0", "at least 1"),
            ("x/2", "I is not"),
            ("3", "no '/'"),
        ] {
            let e = bad.parse::<Shard>().unwrap_err();
            assert!(e.contains(why) && e.contains("I/N"), "{bad}: {e}");
        }
    }
}
