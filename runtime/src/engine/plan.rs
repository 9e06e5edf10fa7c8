//! The plan stage, pure: which versions of each upstream a batch takes ([`wanted`],
//! bounded by `batch_size`) and at which version each table is pinned ([`pin`]) once
//! the read stage has cut the ranges to the row budget (`budget.rs`).

/// Per upstream, the inclusive version range of a batch (`None`: not in this batch).
pub type Ranges = Vec<Option<(i64, i64)>>;

/// Per upstream, given its (next version to read, latest version): the range of at
/// most `batch_size` versions the next batch takes, or `None` when it is caught up.
pub fn wanted(positions: impl IntoIterator<Item = (i64, i64)>, batch_size: i64) -> Ranges {
    positions
        .into_iter()
        .map(|(next, latest)| {
            (next <= latest).then(|| (next, (next + batch_size.max(1) - 1).min(latest)))
        })
        .collect()
}

/// The version each upstream is pinned at in a batch: the end of its range, else the
/// last version done (clamped to the table's versions).
pub fn pin(plan: &Ranges, positions: impl IntoIterator<Item = (i64, i64)>) -> Vec<i64> {
    plan.iter()
        .zip(positions)
        .map(|(r, (next, latest))| match r {
            Some((_, e)) => *e,
            None => (next - 1).clamp(0, latest),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wanted_takes_at_most_batch_size_versions_of_pending_upstreams() {
        // (next, latest): 3 pending versions, caught up, 10 pending, one pending.
        let w = wanted([(3, 5), (6, 5), (0, 9), (7, 7)], 4);
        assert_eq!(w, vec![Some((3, 5)), None, Some((0, 3)), Some((7, 7))]);
        // A batch size below one still makes progress.
        assert_eq!(wanted([(2, 9)], 0), vec![Some((2, 2))]);
    }

    #[test]
    fn pin_is_the_range_end_else_the_last_version_done() {
        let plan = vec![Some((3, 4)), None, None];
        // Upstream 2 never done (next 0): pinned at version 0, its first.
        assert_eq!(pin(&plan, [(3, 5), (6, 5), (0, 9)]), vec![4, 5, 0]);
    }
}
