//! Validates a derivation's output and folds it into one row per affected key: the
//! host's one de-duplication, which plugins of both contracts, SQL queries and the
//! bench's native reference all go through.
//!
//! A contract 0.1 plugin returns one stream with exactly the pipeline's key columns
//! (declared types, no nulls), `_upstream` (utf8, one of the pipeline's upstreams) and
//! optionally `_commit_timestamp` (any timestamp unit); a 0.2 plugin one stream per
//! causing upstream without `_upstream` ([`parts`]). A key reported several times
//! (several causes) becomes one row with the sorted set of causing upstreams and the
//! newest commit timestamp.

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use deltalake::arrow::compute::{cast, concat_batches, take};
use deltalake::arrow::datatypes::{DataType, Int32Type, Int64Type, TimestampMicrosecondType};
use deltalake::arrow::row::{RowConverter, SortField};

mod parts;

pub use parts::{collect_output, collect_parts, KeysPart};

use crate::cdf::timestamp_type;
use crate::config::{KeyColumn, KeyType};

/// `_upstream`: the upstream whose change caused a key.
pub const UPSTREAM: &str = "_upstream";

/// The Arrow type of a key column.
pub fn arrow_type(t: KeyType) -> DataType {
    match t {
        KeyType::Long => DataType::Int64,
        KeyType::Int => DataType::Int32,
        KeyType::String => DataType::Utf8,
    }
}

/// Distinct affected keys of a batch with their causes.
#[derive(Debug, Clone)]
pub struct AffectedKeys {
    /// One array per key column, all of the same length, no duplicates across rows.
    pub columns: Vec<ArrayRef>,
    /// Sorted names of the upstreams whose changes caused each key (keys with the same
    /// causes share one list).
    pub upstreams: Vec<Arc<[String]>>,
    /// Newest causing commit timestamp of each key, in microseconds.
    pub change_ts: Vec<Option<i64>>,
}

impl AffectedKeys {
    pub fn len(&self) -> usize {
        self.upstreams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.upstreams.is_empty()
    }
}

/// The causes of keys from output without an `_upstream` column (SQL pipelines): the
/// upstreams with change rows in the batch, and their newest commit timestamp.
#[derive(Debug, Clone, Default)]
pub struct DefaultCause {
    pub upstreams: Vec<String>,
    pub change_ts: Option<i64>,
}

/// Validates `ipc` against the pipeline's keys and upstream names, then deduplicates.
pub fn collect(
    ipc: &[u8],
    keys: &[KeyColumn],
    upstream_names: &[&str],
) -> Result<AffectedKeys, String> {
    if ipc.is_empty() {
        return Ok(AffectedKeys {
            columns: keys
                .iter()
                .map(|k| deltalake::arrow::array::new_empty_array(&arrow_type(k.ty)))
                .collect(),
            upstreams: Vec::new(),
            change_ts: Vec::new(),
        });
    }
    let (schema, batches) = crate::ipc::decode(ipc)
        .map_err(|e| format!("derive returned bytes that are not an Arrow IPC stream: {e}"))?;
    collect_batches(&schema, &batches, keys, upstream_names, None)
}

/// [`collect`] for decoded rows. With `default`, the output may lack `_upstream` (its
/// keys get the default causes) and key columns are cast to the declared types.
pub fn collect_batches(
    schema: &deltalake::arrow::datatypes::SchemaRef,
    batches: &[RecordBatch],
    keys: &[KeyColumn],
    upstream_names: &[&str],
    default: Option<&DefaultCause>,
) -> Result<AffectedKeys, String> {
    if let Some(d) = default {
        return collect_with_default(schema, batches, keys, upstream_names, d);
    }
    let expected = || {
        keys.iter()
            .map(|k| format!("{} {}", k.name, arrow_type(k.ty)))
            .chain([
                format!("{UPSTREAM} Utf8"),
                format!("{} Timestamp", crate::cdf::COMMIT_TIMESTAMP),
            ])
            .collect::<Vec<_>>()
            .join(", ")
    };
    for f in schema.fields() {
        let n = f.name().as_str();
        if n != UPSTREAM && n != crate::cdf::COMMIT_TIMESTAMP && !keys.iter().any(|k| k.name == n) {
            return Err(format!(
                "derive returned an unexpected column '{n}'; the output columns are: {}",
                expected()
            ));
        }
    }
    for k in keys {
        let want = arrow_type(k.ty);
        match schema.field_with_name(&k.name) {
            Err(_) => {
                return Err(format!(
                    "derive returned no key column '{}'; the output columns are: {}",
                    k.name,
                    expected()
                ))
            }
            Ok(f) if f.data_type() != &want => {
                return Err(format!(
                "derive returned key column '{}' as {}, but the pipeline declares it {} ({want})",
                k.name,
                f.data_type(),
                k.ty
            ))
            }
            Ok(_) => {}
        }
    }
    match schema.field_with_name(UPSTREAM) {
        Ok(f) if is_utf8(f.data_type()) => {}
        Ok(f) => {
            return Err(format!(
                "derive returned '{UPSTREAM}' as {}, not Utf8 (plain or dictionary-encoded)",
                f.data_type()
            ))
        }
        Err(_) => {
            return Err(format!(
                "derive returned no '{UPSTREAM}' column; the output columns are: {}",
                expected()
            ))
        }
    }
    let ts_present = match schema.field_with_name(crate::cdf::COMMIT_TIMESTAMP) {
        Ok(f) if matches!(f.data_type(), DataType::Timestamp(_, _)) => true,
        Ok(f) => {
            return Err(format!(
                "derive returned '{}' as {}, not a timestamp",
                crate::cdf::COMMIT_TIMESTAMP,
                f.data_type()
            ))
        }
        Err(_) => false,
    };
    let all = concat_batches(schema, batches).map_err(|e| e.to_string())?;

    let mut key_cols = Vec::with_capacity(keys.len());
    for k in keys {
        let col = all
            .column_by_name(&k.name)
            .ok_or_else(|| format!("derive returned no key column '{}'", k.name))?
            .clone();
        if col.null_count() > 0 {
            return Err(format!(
                "derive returned {} null value(s) in key column '{}'; keys must not be null",
                col.null_count(),
                k.name
            ));
        }
        key_cols.push(col);
    }
    let up_col = column(&all, UPSTREAM)?;
    if up_col.logical_null_count() > 0 {
        return Err(format!(
            "derive returned {} null value(s) in '{UPSTREAM}'",
            up_col.logical_null_count()
        ));
    }
    let up = RowUpstreams::new(&up_col, upstream_names)?;
    let ts: Option<ArrayRef> = if ts_present {
        let c = column(&all, crate::cdf::COMMIT_TIMESTAMP)?;
        Some(cast(&c, &timestamp_type()).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let ts = ts
        .as_ref()
        .map(|c| c.as_primitive::<TimestampMicrosecondType>());

    let mut last = usize::MAX;
    fold(
        key_cols,
        all.num_rows(),
        |i| up.index(i, &mut last),
        ts,
        upstream_names,
    )
}

/// Folds rows of keys into one row per distinct key: its causes (the upstream of each
/// of its rows, `upstream_of(row)` an index into `upstream_names`) and its newest
/// commit timestamp.
fn fold(
    key_cols: Vec<ArrayRef>,
    rows: usize,
    mut upstream_of: impl FnMut(usize) -> Result<usize, String>,
    ts: Option<&deltalake::arrow::array::TimestampMicrosecondArray>,
    upstream_names: &[&str],
) -> Result<AffectedKeys, String> {
    // Which distinct key each row is, then each key's causes (a bit per upstream)
    // and newest timestamp.
    let (slot_of_row, first) = distinct_keys(&key_cols, rows)?;
    let words = upstream_names.len().div_ceil(64).max(1);
    let mut causes = vec![0_u64; first.len() * words];
    let mut newest: Vec<Option<i64>> = vec![None; first.len()];
    for (i, slot) in slot_of_row.iter().map(|s| *s as usize).enumerate() {
        let u = upstream_of(i)?;
        causes[slot * words + u / 64] |= 1 << (u % 64);
        if let Some(t) = ts.and_then(|t| t.is_valid(i).then(|| t.value(i))) {
            newest[slot] = newest[slot].max(Some(t));
        }
    }
    // One shared, sorted list of names per distinct set of causes.
    let mut sorted: Vec<(usize, &str)> = upstream_names.iter().copied().enumerate().collect();
    sorted.sort_by_key(|(_, n)| *n);
    let mut lists: HashMap<&[u64], Arc<[String]>> = HashMap::new();
    let upstreams = causes
        .chunks(words)
        .map(|set| {
            lists
                .entry(set)
                .or_insert_with(|| {
                    sorted
                        .iter()
                        .filter(|(u, _)| set[u / 64] & (1 << (u % 64)) != 0)
                        .map(|(_, n)| n.to_string())
                        .collect()
                })
                .clone()
        })
        .collect();
    let idx = UInt32Array::from(first);
    let columns = key_cols
        .iter()
        .map(|c| take(c, &idx, None).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AffectedKeys {
        columns,
        upstreams,
        change_ts: newest,
    })
}

/// Whether `t` is utf8, plain or dictionary-encoded (the SDK's output).
fn is_utf8(t: &DataType) -> bool {
    match t {
        DataType::Utf8 => true,
        DataType::Dictionary(k, v) => k.is_dictionary_key_type() && **v == DataType::Utf8,
        _ => false,
    }
}

/// The `_upstream` of each output row as an index into the pipeline's upstreams.
enum RowUpstreams<'a> {
    Plain(&'a deltalake::arrow::array::StringArray, &'a [&'a str]),
    /// Dictionary keys, and the upstream of each dictionary value (`Err`: the value,
    /// which names no upstream).
    Dict(Vec<usize>, Vec<Result<usize, String>>, &'a [&'a str]),
}

impl<'a> RowUpstreams<'a> {
    fn new(col: &'a ArrayRef, names: &'a [&'a str]) -> Result<Self, String> {
        if let Some(plain) = col.as_string_opt::<i32>() {
            return Ok(RowUpstreams::Plain(plain, names));
        }
        let dict = col
            .as_any_dictionary_opt()
            .ok_or_else(|| format!("derive returned '{UPSTREAM}' as {}", col.data_type()))?;
        let values = dict.values().as_string_opt::<i32>().ok_or_else(|| {
            format!(
                "derive returned '{UPSTREAM}' as {}, not Utf8",
                col.data_type()
            )
        })?;
        let of_value = values
            .iter()
            .map(|v| {
                let v = v.unwrap_or_default();
                names
                    .iter()
                    .position(|n| *n == v)
                    .ok_or_else(|| v.to_string())
            })
            .collect();
        // The keys checked here, not by arrow (whose `normalized_keys` panics on an
        // empty dictionary and clamps keys out of range): the bytes come from a plugin.
        let keys = cast(dict.keys(), &DataType::Int64).map_err(|e| e.to_string())?;
        let keys = keys
            .as_primitive::<Int64Type>()
            .values()
            .iter()
            .map(|k| {
                usize::try_from(*k)
                    .ok()
                    .filter(|k| *k < values.len())
                    .ok_or_else(|| {
                        format!(
                            "derive returned a '{UPSTREAM}' dictionary key ({k}) outside its {} value(s)",
                            values.len()
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RowUpstreams::Dict(keys, of_value, names))
    }

    /// The upstream of row `i`; `last` is the previous row's (rows of one upstream
    /// usually come in a run).
    fn index(&self, i: usize, last: &mut usize) -> Result<usize, String> {
        let unknown = |name: &str, names: &[&str]| {
            format!(
                "derive returned '{UPSTREAM}' = '{name}', which is not an upstream of the pipeline (upstreams: {})",
                names.join(", ")
            )
        };
        match self {
            RowUpstreams::Plain(up, names) => {
                let name = up.value(i);
                if names.get(*last) != Some(&name) {
                    *last = names
                        .iter()
                        .position(|u| *u == name)
                        .ok_or_else(|| unknown(name, names))?;
                }
                Ok(*last)
            }
            RowUpstreams::Dict(keys, of_value, names) => {
                match keys.get(i).and_then(|k| of_value.get(*k)) {
                    Some(Ok(u)) => Ok(*u),
                    Some(Err(name)) => Err(unknown(name, names)),
                    None => Err(format!("derive returned a bad '{UPSTREAM}' dictionary")),
                }
            }
        }
    }
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Numbers the distinct keys of `rows` rows in order of first appearance: the key's
/// number for each row, and the first row of each key. One integer key column (the
/// usual case) is hashed as an integer; other keys through the row format.
fn distinct_keys(key_cols: &[ArrayRef], rows: usize) -> Result<(Vec<u32>, Vec<u32>), String> {
    let single = match key_cols {
        [c] => c
            .as_primitive_opt::<Int64Type>()
            .map(|a| a.values().to_vec())
            .or_else(|| {
                c.as_primitive_opt::<Int32Type>()
                    .map(|a| a.values().iter().map(|v| i64::from(*v)).collect())
            }),
        _ => None,
    };
    if let Some(values) = single {
        return Ok(number(values.into_iter(), rows));
    }
    let converter = RowConverter::new(
        key_cols
            .iter()
            .map(|c| SortField::new(c.data_type().clone()))
            .collect(),
    )
    .map_err(|e| e.to_string())?;
    let converted = converter
        .convert_columns(key_cols)
        .map_err(|e| e.to_string())?;
    Ok(number((0..rows).map(|r| converted.row(r)), rows))
}

fn number<K: std::hash::Hash + Eq>(
    keys: impl Iterator<Item = K>,
    rows: usize,
) -> (Vec<u32>, Vec<u32>) {
    let mut index: FastMap<K, u32> = FastMap::default();
    index.reserve(rows.min(1 << 20));
    let mut first: Vec<u32> = Vec::new();
    let mut slot_of_row = Vec::with_capacity(rows);
    for (row, key) in keys.enumerate() {
        let slot = *index.entry(key).or_insert_with(|| {
            first.push(row as u32);
            (first.len() - 1) as u32
        });
        slot_of_row.push(slot);
    }
    (slot_of_row, first)
}

/// SQL output: key columns are cast to their declared types and the rows take the
/// standard shape, then go through the same validation. Without `_upstream`, every
/// key's causes are the batch's changed upstreams.
fn collect_with_default(
    schema: &deltalake::arrow::datatypes::SchemaRef,
    batches: &[RecordBatch],
    keys: &[KeyColumn],
    upstream_names: &[&str],
    d: &DefaultCause,
) -> Result<AffectedKeys, String> {
    use deltalake::arrow::array::StringArray;
    use deltalake::arrow::datatypes::{Field, Schema};
    use std::sync::Arc;
    let all = concat_batches(schema, batches).map_err(|e| e.to_string())?;
    let mut fields = Vec::with_capacity(keys.len() + 2);
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(keys.len() + 2);
    for k in keys {
        let col = all.column_by_name(&k.name).ok_or_else(|| {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            format!(
                "the query returns no key column '{}' (it returns: {})",
                k.name,
                names.join(", ")
            )
        })?;
        let want = arrow_type(k.ty);
        cols.push(cast(col, &want).map_err(|e| {
            format!(
                "the query returns key column '{}' as {}, which cannot be read as {want}: {e}",
                k.name,
                col.data_type()
            )
        })?);
        fields.push(Field::new(&k.name, want, true));
    }
    let given = all.column_by_name(UPSTREAM);
    cols.push(match given {
        Some(u) => cast(u, &DataType::Utf8).map_err(|e| e.to_string())?,
        None => {
            let placeholder = upstream_names.first().copied().unwrap_or_default();
            Arc::new(StringArray::from(vec![placeholder; all.num_rows()]))
        }
    });
    fields.push(Field::new(UPSTREAM, DataType::Utf8, false));
    if let Some(t) = all.column_by_name(crate::cdf::COMMIT_TIMESTAMP) {
        cols.push(t.clone());
        fields.push(Field::new(
            crate::cdf::COMMIT_TIMESTAMP,
            t.data_type().clone(),
            true,
        ));
    }
    let schema = Arc::new(Schema::new(fields));
    let b = RecordBatch::try_new(schema.clone(), cols).map_err(|e| e.to_string())?;
    let mut k = collect_batches(&schema, &[b], keys, upstream_names, None)?;
    if given.is_none() {
        let mut all_causes = d.upstreams.clone();
        all_causes.sort();
        let all_causes: Arc<[String]> = all_causes.into();
        for (causes, ts) in k.upstreams.iter_mut().zip(k.change_ts.iter_mut()) {
            causes.clone_from(&all_causes);
            *ts = (*ts).max(d.change_ts);
        }
    }
    Ok(k)
}

fn column(b: &RecordBatch, name: &str) -> Result<ArrayRef, String> {
    b.column_by_name(name)
        .cloned()
        .ok_or_else(|| format!("derive returned no '{name}' column"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
    use deltalake::arrow::datatypes::{Field, Schema, TimeUnit};
    use std::sync::Arc;

    fn keys() -> Vec<KeyColumn> {
        vec![KeyColumn {
            name: "id".into(),
            ty: KeyType::Long,
        }]
    }

    fn output(ids: Vec<Option<i64>>, ups: Vec<&str>, ts: Vec<Option<i64>>) -> Vec<u8> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new(UPSTREAM, DataType::Utf8, false),
            Field::new(
                "_commit_timestamp",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
        ]));
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(ups)),
                Arc::new(TimestampMillisecondArray::from(ts)),
            ],
        )
        .unwrap();
        crate::ipc::encode(&schema, &[b]).unwrap()
    }

    /// Keys 7 (caused by upstreams a and b) and 3 (by a), in that order.
    fn assert_7_by_a_and_b_then_3_by_a(k: &AffectedKeys) {
        let ids = k.columns[0].as_primitive::<deltalake::arrow::datatypes::Int64Type>();
        assert_eq!(ids.values().to_vec(), vec![7, 3]);
        assert_eq!(
            k.upstreams,
            vec![
                Arc::<[String]>::from(vec!["a".to_string(), "b".into()]),
                Arc::from(vec!["a".to_string()])
            ]
        );
    }

    #[test]
    fn duplicates_fold_into_one_row_with_all_causes_and_newest_time() {
        let ipc = output(
            vec![Some(7), Some(3), Some(7), Some(7)],
            vec!["b", "a", "a", "b"],
            vec![Some(5), Some(1), Some(9), None],
        );
        let k = collect(&ipc, &keys(), &["a", "b"]).unwrap();
        assert_eq!(k.len(), 2);
        assert_7_by_a_and_b_then_3_by_a(&k);
        // milliseconds in, microseconds out
        assert_eq!(k.change_ts, vec![Some(9000), Some(1000)]);
    }

    #[test]
    fn null_key_is_rejected() {
        let ipc = output(vec![Some(1), None], vec!["a", "a"], vec![None, None]);
        let e = collect(&ipc, &keys(), &["a"]).unwrap_err();
        assert!(e.contains("1 null value(s) in key column 'id'"), "{e}");
    }

    #[test]
    fn unknown_upstream_is_rejected() {
        let ipc = output(vec![Some(1)], vec!["zzz"], vec![None]);
        let e = collect(&ipc, &keys(), &["a"]).unwrap_err();
        assert!(e.contains("'zzz', which is not an upstream"), "{e}");
    }

    #[test]
    fn wrong_key_type_names_column_and_types() {
        let wrong = vec![KeyColumn {
            name: "id".into(),
            ty: KeyType::String,
        }];
        let ipc = output(vec![Some(1)], vec!["a"], vec![None]);
        let e = collect(&ipc, &wrong, &["a"]).unwrap_err();
        assert!(e.contains("key column 'id' as Int64"), "{e}");
    }

    #[test]
    fn missing_key_column_and_garbage_are_errors() {
        let other = vec![KeyColumn {
            name: "uid".into(),
            ty: KeyType::Long,
        }];
        let ipc = output(vec![Some(1)], vec!["a"], vec![None]);
        assert!(collect(&ipc, &other, &["a"])
            .unwrap_err()
            .contains("unexpected column 'id'"));
        assert!(collect(b"junk", &keys(), &["a"])
            .unwrap_err()
            .contains("not an Arrow IPC stream"));
    }

    /// [`output`] with `_upstream` dictionary-encoded (what the SDK writes).
    fn dict_output(ids: Vec<i64>, ups: Vec<&str>) -> Vec<u8> {
        use deltalake::arrow::array::DictionaryArray;
        use deltalake::arrow::datatypes::Int32Type;
        let ups: DictionaryArray<Int32Type> = ups.into_iter().collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new(UPSTREAM, ups.data_type().clone(), false),
        ]));
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from(ids)), Arc::new(ups)],
        )
        .unwrap();
        crate::ipc::encode(&schema, &[b]).unwrap()
    }

    #[test]
    fn dictionary_encoded_upstreams_fold_like_plain_ones() {
        let ipc = dict_output(vec![7, 3, 7, 7], vec!["b", "a", "a", "b"]);
        let k = collect(&ipc, &keys(), &["a", "b"]).unwrap();
        assert_7_by_a_and_b_then_3_by_a(&k);
        assert_eq!(k.change_ts, vec![None, None]);
        // No rows: the schema alone (the SDK writes no record batch then).
        let none = dict_output(vec![], vec![]);
        let (schema, _) = crate::ipc::decode(&none).unwrap();
        let empty = crate::ipc::encode(&schema, &[]).unwrap();
        assert!(collect(&empty, &keys(), &["a"]).unwrap().is_empty());
        let e = collect(&dict_output(vec![1], vec!["zzz"]), &keys(), &["a", "b"]).unwrap_err();
        assert!(
            e.contains("'zzz', which is not an upstream of the pipeline (upstreams: a, b)"),
            "{e}"
        );
    }

    #[test]
    fn empty_output_means_no_keys() {
        assert!(collect(&[], &keys(), &["a"]).unwrap().is_empty());
    }
}
