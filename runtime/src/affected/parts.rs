//! Contract 0.2 output: per causing upstream, the key columns and (optionally)
//! `_commit_timestamp`, validated and folded like 0.1's single stream.

use deltalake::arrow::array::{new_null_array, Array, ArrayRef, AsArray, RecordBatch};
use deltalake::arrow::compute::{cast, concat};
use deltalake::arrow::datatypes::{DataType, SchemaRef, TimestampMicrosecondType};

use super::{arrow_type, fold, AffectedKeys, InvalidKeys};
use crate::cdf::timestamp_type;
use crate::config::KeyColumn;

/// The keys one upstream's changes caused, decoded.
pub struct KeysPart {
    pub upstream: String,
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

/// Validates and folds contract 0.2 output into one row per key: per causing upstream,
/// an IPC stream of the key columns (and optionally `_commit_timestamp`). A batch's
/// calls fold into its key set with [`fold_parts`] instead.
pub fn collect_per_upstream(
    parts: Vec<(String, Vec<u8>)>,
    keys: &[KeyColumn],
    upstream_names: &[&str],
) -> Result<AffectedKeys, InvalidKeys> {
    collect_parts(&decode_parts(parts)?, keys, upstream_names)
}

/// Decodes contract 0.2 output: per causing upstream, its IPC stream.
pub fn decode_parts(parts: Vec<(String, Vec<u8>)>) -> Result<Vec<KeysPart>, InvalidKeys> {
    parts
        .into_iter()
        .map(|(upstream, bytes)| {
            let (schema, batches) =
                crate::ipc::decode_owned(bytes).map_err(|source| InvalidKeys::NotArrow {
                    part: Some(upstream.clone()),
                    source,
                })?;
            Ok(KeysPart {
                upstream,
                schema,
                batches,
            })
        })
        .collect()
}

/// The index of a part's upstream among the pipeline's, after checking its schema.
fn checked_upstream(
    p: &KeysPart,
    keys: &[KeyColumn],
    upstream_names: &[&str],
) -> Result<usize, InvalidKeys> {
    let u = upstream_names
        .iter()
        .position(|n| *n == p.upstream)
        .ok_or_else(|| InvalidKeys::UnknownUpstream {
            name: p.upstream.clone(),
            part: true,
            upstreams: upstream_names.iter().map(|n| n.to_string()).collect(),
        })?;
    check_schema(&p.upstream, &p.schema, keys)?;
    Ok(u)
}

/// Checks each part's upstream and schema, then folds all of them into one row per
/// distinct key (the host's one de-duplication).
pub fn collect_parts(
    parts: &[KeysPart],
    keys: &[KeyColumn],
    upstream_names: &[&str],
) -> Result<AffectedKeys, InvalidKeys> {
    let mut of_part = Vec::with_capacity(parts.len());
    for p in parts {
        of_part.push(checked_upstream(p, keys, upstream_names)?);
    }
    // Every part's rows, one after the other: each key column and the timestamps.
    let mut key_cols = Vec::with_capacity(keys.len());
    for k in keys {
        let arrays: Vec<&dyn Array> = parts
            .iter()
            .flat_map(|p| p.batches.iter())
            .filter_map(|b| b.column_by_name(&k.name).map(|c| c.as_ref()))
            .collect();
        let col = if arrays.is_empty() {
            deltalake::arrow::array::new_empty_array(&arrow_type(k.ty))
        } else {
            concat(&arrays)?
        };
        super::no_nulls(&col, &k.name)?;
        key_cols.push(col);
    }
    let ts_type = timestamp_type();
    let mut ts_arrays: Vec<ArrayRef> = Vec::new();
    let mut ends = Vec::with_capacity(parts.len());
    let mut rows = 0;
    for p in parts {
        for b in &p.batches {
            ts_arrays.push(match b.column_by_name(crate::cdf::COMMIT_TIMESTAMP) {
                Some(t) => cast(t, &ts_type)?,
                None => new_null_array(&ts_type, b.num_rows()),
            });
            rows += b.num_rows();
        }
        ends.push(rows);
    }
    let ts = if ts_arrays.is_empty() {
        None
    } else {
        let refs: Vec<&dyn Array> = ts_arrays.iter().map(|a| a.as_ref()).collect();
        Some(concat(&refs)?)
    };
    let ts = ts
        .as_ref()
        .map(|c| c.as_primitive::<TimestampMicrosecondType>());
    // Rows come part by part: the upstream of row i is that of the part it falls in.
    let mut part = 0;
    let upstream_of = |i: usize| {
        while ends.get(part).is_some_and(|end| i >= *end) {
            part += 1;
        }
        of_part
            .get(part)
            .copied()
            .ok_or_else(|| InvalidKeys::Malformed {
                detail: "more rows than its parts hold".into(),
            })
    };
    fold(key_cols, rows, upstream_of, ts, upstream_names)
}

/// Checks each part like [`collect_parts`] and folds its rows straight into `set`:
/// one fold per key, no concatenation of the parts.
pub fn fold_parts(
    parts: &[KeysPart],
    keys: &[KeyColumn],
    upstream_names: &[&str],
    set: &mut super::KeySet,
) -> Result<(), super::SpillError> {
    let ts_type = timestamp_type();
    for p in parts {
        let u = checked_upstream(p, keys, upstream_names)?;
        for b in &p.batches {
            let mut cols = Vec::with_capacity(keys.len());
            for k in keys {
                let col = b
                    .column_by_name(&k.name)
                    .ok_or_else(|| InvalidKeys::MissingColumn {
                        column: format!("key column '{}'", k.name),
                        part: Some(p.upstream.clone()),
                        expected: None,
                    })?
                    .clone();
                super::no_nulls(&col, &k.name)?;
                cols.push(col);
            }
            let ts = match b.column_by_name(crate::cdf::COMMIT_TIMESTAMP) {
                Some(t) => Some(cast(t, &ts_type).map_err(InvalidKeys::from)?),
                None => None,
            };
            let ts = ts
                .as_ref()
                .map(|c| c.as_primitive::<TimestampMicrosecondType>());
            set.add_rows(&cols, u, ts)?;
        }
    }
    Ok(())
}

/// A part holds exactly the key columns (declared types) and optionally
/// `_commit_timestamp` (a timestamp).
fn check_schema(upstream: &str, schema: &SchemaRef, keys: &[KeyColumn]) -> Result<(), InvalidKeys> {
    let expected = || {
        keys.iter()
            .map(|k| format!("{} {}", k.name, arrow_type(k.ty)))
            .chain([format!("{} Timestamp", crate::cdf::COMMIT_TIMESTAMP)])
            .collect::<Vec<_>>()
            .join(", ")
    };
    for f in schema.fields() {
        let n = f.name().as_str();
        if n == crate::cdf::COMMIT_TIMESTAMP {
            if !matches!(f.data_type(), DataType::Timestamp(_, _)) {
                return Err(InvalidKeys::WrongType {
                    column: format!("'{n}'"),
                    part: Some(upstream.to_string()),
                    found: f.data_type().clone(),
                    wanted: ", not a timestamp".into(),
                });
            }
        } else if !keys.iter().any(|k| k.name == n) {
            return Err(InvalidKeys::UnexpectedColumn {
                column: n.to_string(),
                part: Some(upstream.to_string()),
                expected: expected(),
            });
        }
    }
    super::check_key_columns(schema, keys, Some(upstream), &expected)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deltalake::arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
    use deltalake::arrow::datatypes::{Field, Schema, TimeUnit};

    use super::*;
    use crate::config::KeyType;

    fn keys() -> Vec<KeyColumn> {
        vec![KeyColumn {
            name: "id".into(),
            ty: KeyType::Long,
        }]
    }

    /// A part of `upstream` with ids and millisecond timestamps (any unit is taken).
    fn part(upstream: &str, ids: Vec<Option<i64>>, ts: Vec<Option<i64>>) -> KeysPart {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new(
                crate::cdf::COMMIT_TIMESTAMP,
                DataType::Timestamp(TimeUnit::Millisecond, None),
                true,
            ),
        ]));
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(TimestampMillisecondArray::from(ts)),
            ],
        )
        .unwrap();
        KeysPart {
            upstream: upstream.into(),
            schema,
            batches: vec![b],
        }
    }

    #[test]
    fn parts_fold_into_one_row_per_key_with_every_cause_and_the_newest_time() {
        let parts = [
            part(
                "b",
                vec![Some(7), Some(8), Some(7)],
                vec![Some(5), None, Some(9)],
            ),
            part("a", vec![Some(8), Some(7)], vec![Some(3), Some(1)]),
        ];
        let k = collect_parts(&parts, &keys(), &["a", "b"]).unwrap();
        let ids = k.columns[0].as_primitive::<deltalake::arrow::datatypes::Int64Type>();
        let got: Vec<(i64, Vec<String>, Option<i64>)> = (0..k.len())
            .map(|i| (ids.value(i), k.upstreams[i].to_vec(), k.change_ts[i]))
            .collect();
        let ab = vec!["a".to_string(), "b".to_string()];
        assert_eq!(
            got,
            vec![(7, ab.clone(), Some(9_000)), (8, ab, Some(3_000))],
            "in order of first appearance; milliseconds become microseconds"
        );
    }

    #[test]
    fn bad_parts_are_refused_with_what_is_wrong() {
        let err = |parts: &[KeysPart]| collect_parts(parts, &keys(), &["a"]).unwrap_err();
        let e = err(&[part("z", vec![Some(1)], vec![None])]);
        assert!(
            matches!(&e, InvalidKeys::UnknownUpstream { part: true, .. }),
            "{e:?}"
        );
        let err = |parts: &[KeysPart]| err(parts).to_string();
        assert_eq!(
            err(&[part("z", vec![Some(1)], vec![None])]),
            "derive returned keys caused by 'z', which is not an upstream of the pipeline (upstreams: a)"
        );
        assert_eq!(
            err(&[part("a", vec![Some(1), None], vec![None, None])]),
            "derive returned 1 null value(s) in key column 'id'; keys must not be null"
        );
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, false)]));
        let b = RecordBatch::try_new(schema.clone(), vec![Arc::new(StringArray::from(vec!["1"]))])
            .unwrap();
        let wrong = KeysPart {
            upstream: "a".into(),
            schema,
            batches: vec![b],
        };
        assert_eq!(
            err(&[wrong]),
            "derive returned key column 'id' as Utf8, but the pipeline declares it long (Int64)"
        );
        // No parts: no keys.
        assert!(collect_parts(&[], &keys(), &["a"]).unwrap().is_empty());
    }
}
