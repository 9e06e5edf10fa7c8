//! The cut of a batch's change rows into the chunks a plugin is called with, so that
//! what crosses the Wasm boundary in one call (and what the guest's memory grows to)
//! is bounded by `chunk_rows`, not by the batch.
//!
//! A batch whose change rows fit in one chunk is one call with every upstream's rows,
//! as before chunking. A bigger one is cut, upstream by upstream, into pieces of at
//! most `chunk_rows` rows, packed into calls of at most `chunk_rows` rows. An update's
//! pre- and post-image are never split: a commit holding update images is cut only at
//! its edges; a commit of inserts and deletes alone (a first load, an append) may be cut
//! anywhere. When the rows of a commit with update images are not contiguous, the
//! upstream's rows stay whole (one piece, however big).

use std::collections::HashSet;

use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::datatypes::Int64Type;

use crate::cdf::{Changes, CHANGE_TYPE, COMMIT_VERSION};

/// The change rows of one call: per upstream (by index), its piece, if any.
pub(crate) type Call = Vec<Option<Changes>>;

/// Cuts the upstreams' change rows into calls of at most `chunk_rows` rows (a piece
/// bigger than that, a commit of update images over the size, is a call alone).
pub(crate) fn calls(upstreams: Vec<Option<Changes>>, chunk_rows: usize) -> Vec<Call> {
    let chunk_rows = chunk_rows.max(1);
    let total: usize = upstreams.iter().flatten().map(Changes::rows).sum();
    let n = upstreams.len();
    if total <= chunk_rows {
        return vec![upstreams];
    }
    let mut packer = Packer::new(n, chunk_rows);
    let mut calls: Vec<Call> = Vec::new();
    for (i, ch) in upstreams.into_iter().enumerate() {
        let Some(ch) = ch else { continue };
        calls.extend(packer.push(i, ch));
    }
    calls.extend(packer.finish());
    calls
}

/// Packs the upstreams' rows into calls as they come (read at once or streamed),
/// upstream after upstream: pieces cut where allowed (see [`pieces`]), a call handed
/// out once the next piece would take it over `chunk_rows`.
pub(crate) struct Packer {
    chunk_rows: usize,
    current: Call,
    current_rows: usize,
    /// Whether some call was handed out.
    handed_out: bool,
}

impl Packer {
    pub(crate) fn new(upstreams: usize, chunk_rows: usize) -> Self {
        Packer {
            chunk_rows: chunk_rows.max(1),
            current: vec![None; upstreams],
            current_rows: 0,
            handed_out: false,
        }
    }

    /// Adds rows of upstream `i` (after any rows of it added before); returns the calls
    /// that are full.
    pub(crate) fn push(&mut self, i: usize, ch: Changes) -> Vec<Call> {
        let mut full = Vec::new();
        for piece in pieces(ch, self.chunk_rows) {
            let rows = piece.rows();
            if rows == 0 {
                continue;
            }
            if self.current_rows > 0 && self.current_rows + rows > self.chunk_rows {
                let n = self.current.len();
                full.push(std::mem::replace(&mut self.current, vec![None; n]));
                self.current_rows = 0;
                self.handed_out = true;
            }
            self.current_rows += rows;
            match &mut self.current[i] {
                Some(held) => held.batches.extend(piece.batches),
                slot => *slot = Some(piece),
            }
        }
        full
    }

    /// The last call: the rows left, or an empty call when no call was handed out (a
    /// batch without rows still calls the plugin once).
    pub(crate) fn finish(self) -> Option<Call> {
        (self.current_rows > 0 || !self.handed_out).then_some(self.current)
    }
}

/// One upstream's rows cut into pieces of at most `chunk_rows` rows where a cut is
/// allowed (see the module's text). Zero-copy: the pieces are slices of the batches.
fn pieces(ch: Changes, chunk_rows: usize) -> Vec<Changes> {
    if ch.rows() <= chunk_rows {
        return vec![ch];
    }
    let Some(rows) = RowVersions::of(&ch.batches) else {
        return vec![ch];
    };
    let mut out = Vec::new();
    let mut start = 0usize; // global row where the current piece starts
    let mut last_cut: Option<usize> = None; // the latest allowed cut in the piece
    let total = rows.versions.len();
    let mut row = start + 1;
    while row < total {
        if rows.cut_allowed_before(row) {
            last_cut = Some(row);
        }
        if row - start >= chunk_rows {
            if let Some(cut) = last_cut.filter(|c| *c > start) {
                out.push(slice(&ch, start, cut));
                start = cut;
                last_cut = None;
                row = start + 1;
                continue;
            }
        }
        row += 1;
    }
    out.push(slice(&ch, start, total));
    out
}

/// Each row's commit version, and the versions whose rows hold update images.
struct RowVersions {
    versions: Vec<i64>,
    with_updates: HashSet<i64>,
}

impl RowVersions {
    /// `None` when the rows lack the columns or a version with update images is not
    /// contiguous (the rows cannot then be cut safely).
    fn of(batches: &[RecordBatch]) -> Option<RowVersions> {
        let mut versions = Vec::new();
        let mut with_updates = HashSet::new();
        for b in batches {
            let v = b.column_by_name(COMMIT_VERSION)?;
            let v = v.as_primitive_opt::<Int64Type>()?;
            let t = b.column_by_name(CHANGE_TYPE)?;
            let t =
                deltalake::arrow::compute::cast(t, &deltalake::arrow::datatypes::DataType::Utf8)
                    .ok()?;
            let t = t.as_string_opt::<i32>()?;
            for i in 0..b.num_rows() {
                let version = v.is_valid(i).then(|| v.value(i))?;
                if t.is_valid(i) && t.value(i).starts_with("update_") {
                    with_updates.insert(version);
                }
                versions.push(version);
            }
        }
        let mut seen = HashSet::new();
        let mut prev = None;
        for v in &versions {
            if prev != Some(*v) {
                if with_updates.contains(v) && !seen.insert(*v) {
                    return None;
                }
                prev = Some(*v);
            }
        }
        Some(RowVersions {
            versions,
            with_updates,
        })
    }

    /// Whether a piece may end before `row`: at a commit's edge, or inside a commit of
    /// inserts and deletes alone.
    fn cut_allowed_before(&self, row: usize) -> bool {
        let (before, here) = (self.versions[row - 1], self.versions[row]);
        before != here || !self.with_updates.contains(&here)
    }
}

/// Rows `start..end` (global row numbers across the batches) as their own changes.
fn slice(ch: &Changes, start: usize, end: usize) -> Changes {
    let mut batches = Vec::new();
    let mut offset = 0usize;
    for b in &ch.batches {
        let (lo, hi) = (offset, offset + b.num_rows());
        offset = hi;
        let (from, to) = (start.max(lo), end.min(hi));
        if from < to {
            batches.push(b.slice(from - lo, to - from));
        }
    }
    Changes {
        schema: ch.schema.clone(),
        batches,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Int64Array, StringArray};
    use deltalake::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    /// Changes from (version, change type) rows, in batches of `per_batch` rows.
    fn changes(rows: &[(i64, &str)], per_batch: usize) -> Changes {
        let schema = Arc::new(Schema::new(vec![
            Field::new(COMMIT_VERSION, DataType::Int64, false),
            Field::new(CHANGE_TYPE, DataType::Utf8, false),
        ]));
        let batches = rows
            .chunks(per_batch)
            .map(|c| {
                let v = Int64Array::from(c.iter().map(|r| r.0).collect::<Vec<_>>());
                let t = StringArray::from(c.iter().map(|r| r.1).collect::<Vec<_>>());
                RecordBatch::try_new(schema.clone(), vec![Arc::new(v), Arc::new(t)]).unwrap()
            })
            .collect();
        Changes { schema, batches }
    }

    /// Each call's rows per upstream, as (version, type) lists.
    fn shape(calls: &[Call]) -> Vec<Vec<Vec<(i64, String)>>> {
        calls
            .iter()
            .map(|call| {
                call.iter()
                    .map(|p| {
                        p.iter()
                            .flat_map(|ch| ch.batches.iter())
                            .flat_map(|b| {
                                let v = b.column(0).as_primitive::<Int64Type>().clone();
                                let t = b.column(1).as_string::<i32>().clone();
                                (0..b.num_rows()).map(move |i| (v.value(i), t.value(i).to_string()))
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_batch_within_the_chunk_is_one_call_with_every_upstream() {
        let a = changes(&[(1, "insert"), (2, "delete")], 10);
        let b = changes(&[(5, "insert")], 10);
        let c = calls(vec![Some(a), None, Some(b)], 3);
        assert_eq!(c.len(), 1);
        assert!(c[0][0].is_some() && c[0][1].is_none() && c[0][2].is_some());
    }

    #[test]
    fn inserts_are_cut_anywhere_and_packed_up_to_the_chunk() {
        let rows: Vec<(i64, &str)> = (0..10).map(|_| (0, "insert")).collect();
        let c = calls(vec![Some(changes(&rows, 4))], 3);
        let sizes: Vec<usize> = shape(&c).iter().map(|call| call[0].len()).collect();
        assert_eq!(sizes, vec![3, 3, 3, 1]);
    }

    #[test]
    fn an_update_pair_is_never_split() {
        // Chunk 2: the pair of version 1 straddles the first cut; it goes whole.
        let rows = [
            (0, "insert"),
            (1, "update_preimage"),
            (1, "update_postimage"),
            (2, "insert"),
        ];
        let c = calls(vec![Some(changes(&rows, 1))], 2);
        let s = shape(&c);
        for call in &s {
            let v1: Vec<_> = call[0].iter().filter(|r| r.0 == 1).collect();
            assert!(v1.is_empty() || v1.len() == 2, "{s:?}");
        }
        let all: Vec<_> = s.iter().flat_map(|call| call[0].clone()).collect();
        assert_eq!(all.len(), 4, "every row once: {s:?}");
    }

    #[test]
    fn a_commit_of_updates_bigger_than_the_chunk_is_one_call() {
        let mut rows = vec![(0, "insert")];
        for _ in 0..5 {
            rows.push((1, "update_preimage"));
            rows.push((1, "update_postimage"));
        }
        rows.push((2, "delete"));
        let s = shape(&calls(vec![Some(changes(&rows, 3))], 4));
        let with_v1: Vec<usize> = s
            .iter()
            .map(|call| call[0].iter().filter(|r| r.0 == 1).count())
            .filter(|n| *n > 0)
            .collect();
        assert_eq!(with_v1, vec![10], "{s:?}");
    }

    #[test]
    fn update_images_not_contiguous_keep_the_upstream_whole() {
        let rows = [
            (1, "update_preimage"),
            (2, "insert"),
            (1, "update_postimage"),
            (2, "insert"),
        ];
        let s = shape(&calls(vec![Some(changes(&rows, 1))], 1));
        assert_eq!(s.len(), 1, "{s:?}");
        assert_eq!(s[0][0].len(), 4);
    }

    #[test]
    fn upstreams_are_packed_together_while_they_fit() {
        let a = changes(&[(0, "insert"), (0, "insert")], 5);
        let b = changes(&[(3, "insert"), (3, "insert"), (3, "insert")], 5);
        let c = changes(&[(7, "delete")], 5);
        let s = shape(&calls(vec![Some(a), Some(b), Some(c)], 4));
        // a (2 rows) and b (3) do not fit together; b and c (1) do.
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!((s[0][0].len(), s[0][1].len(), s[0][2].len()), (2, 0, 0));
        assert_eq!((s[1][0].len(), s[1][1].len(), s[1][2].len()), (0, 3, 1));
    }
}
