//! The read stage's cut of a batch to `max_batch_rows`, at whole commits.
//!
//! Ranges are read first (bounded by `batch_size`), then cut: upstream by upstream,
//! versions are kept while the batch stays within `max_batch_rows`. The first version
//! of the first pending upstream is always kept, so every batch makes progress even
//! when one commit alone is over the budget. No IO: the rows are already read.

use std::collections::BTreeMap;

use deltalake::arrow::array::{AsArray, Int64Array, RecordBatch};
use deltalake::arrow::compute::filter_record_batch;
use deltalake::arrow::compute::kernels::cmp::lt_eq;
use deltalake::arrow::datatypes::Int64Type;
use deltalake::arrow::error::ArrowError;

use super::plan::Ranges;
use crate::cdf::{Changes, COMMIT_VERSION};

/// Rows per version of one upstream's range.
pub type Counts = BTreeMap<i64, usize>;

/// The planned `wanted` ranges cut to `budget` rows at whole commits, from each
/// upstream's rows per version (an upstream without counts keeps no range). The first
/// version of the first pending upstream is always kept.
pub fn cut(wanted: &Ranges, counts: &[Option<Counts>], budget: u64) -> Ranges {
    let budget = usize::try_from(budget).unwrap_or(usize::MAX);
    let mut total = 0usize;
    let mut taken_any = false;
    let mut plan = Vec::with_capacity(wanted.len());
    for (range, counts) in wanted.iter().zip(counts) {
        let (Some((start, end)), Some(counts)) = (range, counts) else {
            plan.push(None);
            continue;
        };
        let mut cut = None;
        for v in *start..=*end {
            let n = counts.get(&v).copied().unwrap_or(0);
            if taken_any && total + n > budget {
                break;
            }
            total += n;
            taken_any = true;
            cut = Some(v);
        }
        plan.push(cut.map(|c| (*start, c)));
    }
    plan
}

/// Trims the planned `wanted` ranges and their read `changes` to `budget` rows. Fails
/// only when change rows cannot be cut (no `_commit_version` column): nothing is
/// dropped silently.
#[cfg(test)]
pub fn trim_to_budget(
    wanted: Ranges,
    changes: Vec<Option<Changes>>,
    budget: Option<u64>,
) -> Result<(Ranges, Vec<Option<Changes>>), ArrowError> {
    let Some(budget) = budget else {
        return Ok((wanted, changes));
    };
    let counts = changes
        .iter()
        .map(|c| c.as_ref().map(rows_per_version).transpose())
        .collect::<Result<Vec<_>, _>>()?;
    let plan = cut(&wanted, &counts, budget);
    let mut kept = Vec::with_capacity(changes.len());
    for ((p, w), ch) in plan.iter().zip(&wanted).zip(changes) {
        kept.push(match (p, w, ch) {
            (Some((_, c)), Some((_, e)), Some(ch)) if c == e => Some(ch),
            (Some((_, c)), _, Some(ch)) => Some(up_to(ch, *c)?),
            _ => None,
        });
    }
    Ok((plan, kept))
}

/// Rows per version of read change rows.
pub fn counts_of(ch: &Changes) -> Result<Counts, ArrowError> {
    rows_per_version(ch)
}

fn rows_per_version(ch: &Changes) -> Result<BTreeMap<i64, usize>, ArrowError> {
    let mut counts = BTreeMap::new();
    for b in &ch.batches {
        for v in commit_versions(b)?.iter().flatten() {
            *counts.entry(v).or_default() += 1;
        }
    }
    Ok(counts)
}

fn commit_versions(b: &RecordBatch) -> Result<&Int64Array, ArrowError> {
    b.column_by_name(COMMIT_VERSION)
        .and_then(|c| c.as_primitive_opt::<Int64Type>())
        .ok_or_else(|| {
            ArrowError::SchemaError(format!(
                "the change rows have no {COMMIT_VERSION} column of type Int64"
            ))
        })
}

/// The change rows of versions up to `last`.
pub(crate) fn up_to(ch: Changes, last: i64) -> Result<Changes, ArrowError> {
    let mut batches = Vec::with_capacity(ch.batches.len());
    for b in &ch.batches {
        let mask = lt_eq(commit_versions(b)?, &Int64Array::new_scalar(last))?;
        let kept = filter_record_batch(b, &mask)?;
        if kept.num_rows() > 0 {
            batches.push(kept);
        }
    }
    Ok(Changes {
        schema: ch.schema,
        batches,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    /// Changes with `n` rows at each listed version.
    fn changes(per_version: &[(i64, usize)]) -> Changes {
        let schema = Arc::new(Schema::new(vec![Field::new(
            COMMIT_VERSION,
            DataType::Int64,
            false,
        )]));
        let versions: Vec<i64> = per_version
            .iter()
            .flat_map(|(v, n)| std::iter::repeat_n(*v, *n))
            .collect();
        let b = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(versions))])
            .unwrap();
        Changes {
            schema,
            batches: vec![b],
        }
    }

    #[test]
    fn no_budget_keeps_everything() {
        let (plan, _) =
            trim_to_budget(vec![Some((0, 4))], vec![Some(changes(&[(0, 100)]))], None).unwrap();
        assert_eq!(plan, vec![Some((0, 4))]);
    }

    #[test]
    fn cuts_at_whole_commits_across_upstreams() {
        // upstream a: v3 5 rows, v4 5 rows, v5 5 rows; b: v0 4 rows. Budget 12.
        let (plan, kept) = trim_to_budget(
            vec![Some((3, 5)), Some((0, 0))],
            vec![
                Some(changes(&[(3, 5), (4, 5), (5, 5)])),
                Some(changes(&[(0, 4)])),
            ],
            Some(12),
        )
        .unwrap();
        assert_eq!(plan, vec![Some((3, 4)), None]);
        assert_eq!(kept[0].as_ref().unwrap().rows(), 10);
        assert!(kept[1].is_none());
    }

    #[test]
    fn one_commit_over_budget_is_still_taken_alone() {
        let (plan, kept) = trim_to_budget(
            vec![Some((7, 9)), Some((1, 1))],
            vec![Some(changes(&[(7, 50), (8, 1)])), Some(changes(&[(1, 1)]))],
            Some(10),
        )
        .unwrap();
        assert_eq!(plan, vec![Some((7, 7)), None]);
        assert_eq!(kept[0].as_ref().unwrap().rows(), 50);
    }

    #[test]
    fn empty_commits_cost_nothing() {
        // v1 is an OPTIMIZE (no change rows): it rides along for free.
        let (plan, _) = trim_to_budget(
            vec![Some((0, 2))],
            vec![Some(changes(&[(0, 3), (2, 3)]))],
            Some(6),
        )
        .unwrap();
        assert_eq!(plan, vec![Some((0, 2))]);
    }

    #[test]
    fn change_rows_without_commit_versions_are_an_error_not_dropped() {
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
        let b = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![1]))])
            .unwrap();
        let ch = Changes {
            schema,
            batches: vec![b],
        };
        let e = trim_to_budget(vec![Some((0, 1))], vec![Some(ch)], Some(1)).unwrap_err();
        assert!(e.to_string().contains(COMMIT_VERSION), "{e}");
    }

    #[test]
    fn upstreams_without_range_stay_out() {
        let (plan, kept) = trim_to_budget(
            vec![None, Some((2, 2))],
            vec![None, Some(changes(&[(2, 1)]))],
            Some(5),
        )
        .unwrap();
        assert_eq!(plan, vec![None, Some((2, 2))]);
        assert!(kept[0].is_none());
    }
}
