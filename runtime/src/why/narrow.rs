//! Re-deriving a batch and narrowing its change rows down to the ones that cause
//! the key.

use super::*;

// ---- narrowing (pure) --------------------------------------------------------------

/// Where to split `rows` (row numbers sorted by commit version, `versions` by row):
/// the commit boundary nearest the middle, else the middle.
pub(super) fn split_point(rows: &[u32], versions: &[i64]) -> usize {
    let half = rows.len() / 2;
    let v = |i: usize| versions[rows[i] as usize];
    (1..rows.len())
        .filter(|i| v(*i) != v(*i - 1))
        .min_by_key(|i| i.abs_diff(half))
        .unwrap_or(half.max(1))
}

/// For each update image among `found`, its partner image of the same commit: the
/// opposite image that agrees with it on `keys` (all of them), or, without keys, on
/// the most columns. Returns `found` with the partners, sorted by version, then
/// pre-image before post-image, then row.
pub(super) fn with_partners(
    found: &[u32],
    versions: &[i64],
    types: &[&str],
    columns: &[Rows],
    keys: &[usize],
) -> Vec<u32> {
    let mut out: BTreeSet<u32> = found.iter().copied().collect();
    let same = |c: usize, a: usize, b: usize| columns[c].row(a) == columns[c].row(b);
    for &r in found {
        let r = r as usize;
        let partner_type = match types[r] {
            "update_preimage" => "update_postimage",
            "update_postimage" => "update_preimage",
            _ => continue,
        };
        let candidates = (0..types.len())
            .filter(|j| *j != r && versions[*j] == versions[r] && types[*j] == partner_type);
        let best = if keys.is_empty() {
            candidates
                .map(|j| ((0..columns.len()).filter(|c| same(*c, r, j)).count(), j))
                .filter(|(score, _)| *score > 0)
                .max_by_key(|(score, j)| (*score, std::cmp::Reverse(j.abs_diff(r))))
                .map(|(_, j)| j)
        } else {
            candidates
                .filter(|j| keys.iter().all(|c| same(*c, r, *j)))
                .min_by_key(|j| j.abs_diff(r))
        };
        if let Some(j) = best {
            out.insert(j as u32);
        }
    }
    let rank = |t: &str| match t {
        "update_preimage" => 0,
        "update_postimage" => 1,
        _ => 2,
    };
    let mut out: Vec<u32> = out.into_iter().collect();
    out.sort_by_key(|r| (versions[*r as usize], rank(types[*r as usize]), *r));
    out
}

// ---- re-deriving a batch -----------------------------------------------------------

/// One upstream's change rows of the batch, read again.
pub(super) struct Input {
    pub(super) upstream: Upstream,
    pub(super) range: Option<(i64, i64)>,
    pub(super) pinned: i64,
    pub(super) schema: SchemaRef,
    /// Every change row of the range (none without a range).
    pub(super) rows: RecordBatch,
}

/// What derives the batch again.
pub(super) enum Engine {
    Plugin {
        plugin: Box<Plugin>,
        lookup: Arc<TableLookup>,
    },
    Sql {
        query: String,
        pinned: Vec<(Upstream, i64)>,
        cache: TableCache,
    },
}

/// A batch being derived again, counting derivations.
pub(super) struct Rederive<'a> {
    pub(super) p: &'a Pipeline,
    pub(super) key: &'a Key,
    pub(super) batch_id: i64,
    pub(super) inputs: Vec<Input>,
    pub(super) engine: Engine,
    pub(super) calls: usize,
    pub(super) budget: usize,
}

/// What narrowing one upstream's rows found.
#[derive(Default)]
pub(super) struct Narrowed {
    /// Rows that cause the key on their own.
    pub(super) rows: Vec<u32>,
    /// Sets of rows that cause it together while no half of them does.
    pub(super) joint: Vec<Vec<u32>>,
    /// Sets not narrowed further: the derivation budget ran out.
    pub(super) cut: Vec<Vec<u32>>,
}

impl Rederive<'_> {
    /// Derives the batch with every upstream's rows (`only` = None), or with `rows` as
    /// upstream `i`'s change rows and none for the others. Returns the upstreams the
    /// key is attributed to, or `None` when it is not among the keys derived.
    pub(super) async fn derive(
        &mut self,
        only: Option<(usize, &RecordBatch)>,
    ) -> std::result::Result<Option<Vec<String>>, String> {
        self.calls += 1;
        let Rederive {
            p,
            key,
            batch_id,
            inputs,
            engine,
            ..
        } = self;
        let names: Vec<&str> = p.upstreams.iter().map(|u| u.name.as_str()).collect();
        let rows_of = |i: usize, input: &'_ Input| -> Option<RecordBatch> {
            let r = match only {
                None => Some(&input.rows),
                Some((j, r)) if j == i => Some(r),
                Some(_) => None,
            };
            r.filter(|r| r.num_rows() > 0).cloned()
        };
        let keys: AffectedKeys = match engine {
            Engine::Plugin { plugin, lookup } => {
                let mut ups = Vec::with_capacity(inputs.len());
                for (i, input) in inputs.iter().enumerate() {
                    let rows: Vec<RecordBatch> = rows_of(i, input).into_iter().collect();
                    let changes = plugin
                        .encode(&input.upstream.name, &input.schema, &rows)
                        .map_err(|e| {
                            format!(
                                "cannot encode the changes of '{}': {e}",
                                input.upstream.name
                            )
                        })?;
                    let (start, end) = input.range.unwrap_or((input.pinned + 1, input.pinned));
                    ups.push(UpstreamInput {
                        name: input.upstream.name.clone(),
                        start_version: start,
                        end_version: end,
                        changes,
                    });
                }
                let lookup: Arc<dyn crate::plugin::Lookup> = lookup.clone();
                let out = plugin
                    .derive(&p.name, *batch_id, ups, lookup)
                    .await
                    .map_err(|e| e.to_string())?;
                out.collect(&p.keys, &names).map_err(|e| e.to_string())?
            }
            Engine::Sql {
                query,
                pinned,
                cache,
            } => {
                let mut tables = Vec::with_capacity(inputs.len());
                let mut default = DefaultCause::default();
                for (i, input) in inputs.iter().enumerate() {
                    let batches: Vec<RecordBatch> = rows_of(i, input).into_iter().collect();
                    if !batches.is_empty() {
                        default.upstreams.push(input.upstream.name.clone());
                        default.change_ts = default.change_ts.max(cdf::newest_commit_ts(&batches));
                    }
                    tables.push(ChangeTable {
                        name: &input.upstream.name,
                        schema: input.schema.clone(),
                        batches,
                    });
                }
                let (schema, rows) = crate::sql_pipeline::derive(query, tables, pinned, cache)
                    .await
                    .map_err(|e| e.to_string())?;
                crate::affected::collect_batches(&schema, &rows, &p.keys, &names, Some(&default))
                    .map_err(|e| e.to_string())?
            }
        };
        Ok(key.position_in(&keys).map(|i| keys.upstreams[i].to_vec()))
    }

    /// Narrows down the rows of upstream `i` that cause the key (given that all of
    /// them, alone, do): halves along commit boundaries first, then rows.
    pub(super) async fn narrow(
        &mut self,
        i: usize,
        versions: &[i64],
    ) -> std::result::Result<Narrowed, String> {
        let all = self.inputs[i].rows.clone();
        let mut order: Vec<u32> = (0..all.num_rows() as u32).collect();
        order.sort_by_key(|r| (versions[*r as usize], *r));
        let mut out = Narrowed::default();
        let mut stack = vec![(0usize, order.len())];
        let take = |rows: &[u32]| {
            take_record_batch(&all, &UInt32Array::from(rows.to_vec())).map_err(|e| e.to_string())
        };
        while let Some((lo, hi)) = stack.pop() {
            if hi - lo <= 1 {
                out.rows.extend_from_slice(&order[lo..hi]);
                continue;
            }
            if self.calls + 2 > self.budget {
                out.cut.push(order[lo..hi].to_vec());
                continue;
            }
            let mid = lo + split_point(&order[lo..hi], versions);
            let left = take(&order[lo..mid])?;
            let right = take(&order[mid..hi])?;
            let l = self.derive(Some((i, &left))).await?.is_some();
            let r = self.derive(Some((i, &right))).await?.is_some();
            if !l && !r {
                out.joint.push(order[lo..hi].to_vec());
            }
            if r {
                stack.push((mid, hi));
            }
            if l {
                stack.push((lo, mid));
            }
        }
        Ok(out)
    }
}

/// The `_commit_version` of each row.
pub(super) fn commit_versions(rows: &RecordBatch) -> std::result::Result<Vec<i64>, String> {
    let c = rows
        .column_by_name(COMMIT_VERSION)
        .ok_or_else(|| format!("the change rows have no {COMMIT_VERSION}"))?;
    let c = cast(c, &DataType::Int64).map_err(|e| e.to_string())?;
    let c = c.as_primitive::<Int64Type>();
    Ok((0..c.len())
        .map(|i| if c.is_valid(i) { c.value(i) } else { -1 })
        .collect())
}

/// The `_change_type` of each row.
pub(super) fn change_types(rows: &RecordBatch) -> std::result::Result<Vec<String>, String> {
    let c = rows
        .column_by_name(CHANGE_TYPE)
        .ok_or_else(|| format!("the change rows have no {CHANGE_TYPE}"))?;
    let c = cast(c, &DataType::Utf8).map_err(|e| e.to_string())?;
    let c = c.as_string::<i32>();
    Ok((0..c.len()).map(|i| c.value(i).to_string()).collect())
}

/// `found` with the partner image of each update among them (see [`with_partners`]),
/// matched on the upstream's declared key columns when it has them.
pub(super) fn add_partners(
    u: &Upstream,
    rows: &RecordBatch,
    found: &[u32],
    versions: &[i64],
) -> std::result::Result<Vec<u32>, String> {
    let types = change_types(rows)?;
    let types: Vec<&str> = types.iter().map(String::as_str).collect();
    let meta = [CHANGE_TYPE, COMMIT_VERSION, COMMIT_TIMESTAMP];
    let data: Vec<(String, ArrayRef)> = rows
        .schema()
        .fields()
        .iter()
        .zip(rows.columns())
        .filter(|(f, _)| !meta.contains(&f.name().as_str()))
        .map(|(f, c)| (f.name().clone(), c.clone()))
        .collect();
    let mut columns = Vec::with_capacity(data.len());
    for (name, c) in &data {
        let conv = RowConverter::new(vec![SortField::new(c.data_type().clone())])
            .map_err(|e| format!("column {name}: {e}"))?;
        columns.push(
            conv.convert_columns(std::slice::from_ref(c))
                .map_err(|e| format!("column {name}: {e}"))?,
        );
    }
    let keys: Vec<usize> = u
        .keys
        .iter()
        .filter_map(|k| data.iter().position(|(n, _)| n == k))
        .collect();
    let keys = if keys.len() == u.keys.len() {
        keys
    } else {
        Vec::new()
    };
    Ok(with_partners(found, versions, &types, &columns, &keys))
}

/// Rows `idx` of `rows` as JSON objects.
pub(super) fn rows_json(
    rows: &RecordBatch,
    idx: &[u32],
) -> std::result::Result<Vec<Map<String, Value>>, String> {
    if idx.is_empty() {
        return Ok(Vec::new());
    }
    let picked =
        take_record_batch(rows, &UInt32Array::from(idx.to_vec())).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    {
        let mut w = deltalake::arrow::json::ArrayWriter::new(&mut buf);
        w.write(&picked).map_err(|e| e.to_string())?;
        w.finish().map_err(|e| e.to_string())?;
    }
    let v: Vec<Map<String, Value>> = serde_json::from_slice(&buf).map_err(|e| e.to_string())?;
    // The writer leaves out nulls: put them back so every row has every column.
    Ok(v.into_iter()
        .map(|mut m| {
            for f in rows.schema().fields() {
                m.entry(f.name().clone()).or_insert(Value::Null);
            }
            m
        })
        .collect())
}

/// Derives the batch again and narrows down the causing rows of each upstream the key
/// is attributed to, filling in `b`'s upstreams.
pub(super) async fn narrow_batch(
    rd: &mut Rederive<'_>,
    opts: &Options,
    b: &mut BatchWhy,
) -> std::result::Result<Rederivation, String> {
    let Some(attributed) = rd.derive(None).await? else {
        return Ok(Rederivation::NotReproduced {
            derive_calls: rd.calls,
            reason: format!(
                "deriving batch {} again does not report key {}: the upstreams' change files or the looked-up \
                 tables may have changed since (a VACUUM, a restore), the catalog's columns or filter changed, \
                 or the plugin depends on something else",
                rd.batch_id, rd.key
            ),
        });
    };
    let with_rows = rd.inputs.iter().filter(|i| i.rows.num_rows() > 0).count();
    for w in b.upstreams.iter_mut() {
        w.caused = attributed.contains(&w.name);
    }
    for i in 0..rd.inputs.len() {
        let name = rd.inputs[i].upstream.name.clone();
        if rd.inputs[i].rows.num_rows() == 0 || !attributed.contains(&name) {
            continue;
        }
        let Some(w) = b.upstreams.iter_mut().find(|w| w.name == name) else {
            continue;
        };
        let rows = rd.inputs[i].rows.clone();
        w.columns = rows
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        if rd.calls >= rd.budget {
            b.notes.push(format!(
                "'{name}': its change rows are not narrowed down: the limit of {} derivations per batch \
                 was reached (--max-derive-calls)",
                rd.budget
            ));
            continue;
        }
        if with_rows > 1 {
            let all = rows.clone();
            if rd.derive(Some((i, &all))).await?.is_none() {
                b.notes.push(format!(
                    "'{name}': its change rows alone do not yield the key (it comes from another upstream's \
                     rows, or only from rows of several upstreams together); they are not narrowed down"
                ));
                continue;
            }
        }
        let versions = commit_versions(&rows)?;
        let narrowed = rd.narrow(i, &versions).await?;
        let found = note_sets(&name, &narrowed, &versions, rd.budget, w, &mut b.notes);
        let found = add_partners(&rd.inputs[i].upstream, &rows, &found, &versions)?;
        for c in w.commits.iter_mut() {
            c.causing_rows = found
                .iter()
                .filter(|r| versions[**r as usize] == c.version)
                .count();
        }
        w.causing_rows_total = found.len();
        if found.len() > opts.max_rows {
            b.notes.push(format!(
                "'{name}': {} causing change rows, the first {} are listed",
                found.len(),
                opts.max_rows
            ));
        }
        let shown = &found[..found.len().min(opts.max_rows)];
        w.causing_rows = rows_json(&rows, shown)?;
    }
    Ok(Rederivation::Done {
        derive_calls: rd.calls,
    })
}

/// The rows narrowing found, with the sets that cause the key only together; notes
/// for those and for the sets the derivation budget left unexplored (their commits are
/// marked in `w`).
fn note_sets(
    name: &str,
    narrowed: &Narrowed,
    versions: &[i64],
    budget: usize,
    w: &mut UpstreamWhy,
    notes: &mut Vec<String>,
) -> Vec<u32> {
    let mut found = narrowed.rows.clone();
    for set in &narrowed.joint {
        let vs: BTreeSet<i64> = set.iter().map(|r| versions[*r as usize]).collect();
        notes.push(format!(
            "'{name}': {} change rows of version(s) {} cause the key only together (no half of them does)",
            set.len(),
            list_versions(&vs)
        ));
        found.extend_from_slice(set);
    }
    for set in &narrowed.cut {
        let vs: BTreeSet<i64> = set.iter().map(|r| versions[*r as usize]).collect();
        notes.push(format!(
            "'{name}': narrowing stopped at the limit of {budget} derivations per batch (--max-derive-calls): \
             a cause is among {} change rows of version(s) {}, not listed",
            set.len(),
            list_versions(&vs)
        ));
        for c in w.commits.iter_mut() {
            if vs.contains(&c.version) && c.note.is_none() {
                c.note = Some("may hold causing rows (not narrowed down)".into());
            }
        }
    }
    found
}

/// Versions as `a-b` runs: `1-3, 5, 7-8`.
pub(super) fn list_versions(vs: &BTreeSet<i64>) -> String {
    let mut runs: Vec<(i64, i64)> = Vec::new();
    for v in vs {
        match runs.last_mut() {
            Some((_, e)) if *e + 1 == *v => *e = *v,
            _ => runs.push((*v, *v)),
        }
    }
    runs.iter()
        .map(|(s, e)| {
            if s == e {
                s.to_string()
            } else {
                format!("{s}-{e}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Keeps at most `opts.max_commits` commits per upstream: those with causing rows (or
/// a note) first, then the others in version order.
pub(super) fn trim_commits(b: &mut BatchWhy, opts: &Options) {
    for w in b.upstreams.iter_mut() {
        if w.commits.len() <= opts.max_commits {
            continue;
        }
        let mut keep: Vec<UpstreamCommit> = Vec::new();
        let (first, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut w.commits)
            .into_iter()
            .partition(|c| c.causing_rows > 0);
        keep.extend(first);
        for c in rest {
            if keep.len() >= opts.max_commits {
                break;
            }
            keep.push(c);
        }
        keep.sort_by_key(|c| c.version);
        w.commits = keep;
    }
}
