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
    assert!(
        matches!(&e, InvalidKeys::NullKeys { column, count: 1 } if column == "id"),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("1 null value(s) in key column 'id'"),
        "{e}"
    );
}

#[test]
fn unknown_upstream_is_rejected() {
    let ipc = output(vec![Some(1)], vec!["zzz"], vec![None]);
    let e = collect(&ipc, &keys(), &["a"]).unwrap_err();
    assert!(
        matches!(&e, InvalidKeys::UnknownUpstream { name, part: false, .. } if name == "zzz"),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("'zzz', which is not an upstream"),
        "{e}"
    );
}

#[test]
fn wrong_key_type_names_column_and_types() {
    let wrong = vec![KeyColumn {
        name: "id".into(),
        ty: KeyType::String,
    }];
    let ipc = output(vec![Some(1)], vec!["a"], vec![None]);
    let e = collect(&ipc, &wrong, &["a"]).unwrap_err();
    assert!(
        matches!(
            &e,
            InvalidKeys::WrongType {
                found: DataType::Int64,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("key column 'id' as Int64"), "{e}");
}

#[test]
fn missing_key_column_and_garbage_are_errors() {
    let other = vec![KeyColumn {
        name: "uid".into(),
        ty: KeyType::Long,
    }];
    let ipc = output(vec![Some(1)], vec!["a"], vec![None]);
    let e = collect(&ipc, &other, &["a"]).unwrap_err();
    assert!(
        matches!(&e, InvalidKeys::UnexpectedColumn { column, .. } if column == "id"),
        "{e:?}"
    );
    assert!(e.to_string().contains("unexpected column 'id'"), "{e}");
    let e = collect(b"junk", &keys(), &["a"]).unwrap_err();
    assert!(
        matches!(e, InvalidKeys::NotArrow { part: None, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("not an Arrow IPC stream"), "{e}");
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
    assert!(matches!(e, InvalidKeys::UnknownUpstream { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("'zzz', which is not an upstream of the pipeline (upstreams: a, b)"),
        "{e}"
    );
}

#[test]
fn empty_output_means_no_keys() {
    assert!(collect(&[], &keys(), &["a"]).unwrap().is_empty());
}

#[test]
fn integer_keys_are_numbered_alike_dense_or_sparse() {
    let cases: Vec<Vec<i64>> = vec![
        // Dense ids (the array path), with repeats, out of order.
        vec![5, 3, 5, 4, 3, 9, 1, 1, 2, 9],
        (0..200_000).map(|i| (i * 7919) % 150_000).collect(),
        // Negative and around zero.
        vec![-3, 0, -3, 2, -1, 0],
        // Sparse and extreme (the hash path).
        vec![i64::MIN, 0, i64::MAX, 0, i64::MIN, 42],
        (0..1000).map(|i| i * 1_000_000_007).collect(),
        vec![],
    ];
    for values in cases {
        let by_hash = number(values.iter().copied(), values.len());
        assert_eq!(
            number_ints(&values),
            by_hash,
            "{:?}",
            &values[..values.len().min(10)]
        );
        // The numbering itself: equal keys share a slot, first rows in order.
        let (slots, first) = by_hash;
        for (row, v) in values.iter().enumerate() {
            assert_eq!(values[first[slots[row] as usize] as usize], *v);
        }
    }
}

/// The keys of a batch's chunks merged: each key once, the union of its causes, the
/// newest timestamp; the order of the parts does not matter.
#[test]
fn chunks_keys_merge_into_one_row_per_key() {
    use deltalake::arrow::array::{AsArray, Int64Array};
    use deltalake::arrow::datatypes::Int64Type;
    let part = |ids: &[i64], up: &str, ts: &[Option<i64>]| AffectedKeys {
        columns: vec![Arc::new(Int64Array::from(ids.to_vec())) as ArrayRef],
        upstreams: ids
            .iter()
            .map(|_| Arc::from(vec![up.to_string()]))
            .collect(),
        change_ts: ts.to_vec(),
    };
    let a = part(&[1, 2], "a", &[Some(10), None]);
    let b = part(&[2, 3], "b", &[Some(5), Some(7)]);
    let c = part(&[1], "a", &[Some(30)]);
    for parts in [vec![a.clone(), b.clone(), c.clone()], vec![c, b, a]] {
        let m = AffectedKeys::merge(parts, &["a", "b"]).unwrap();
        let ids = m.columns[0].as_primitive::<Int64Type>();
        let mut rows: Vec<(i64, Vec<String>, Option<i64>)> = (0..ids.len())
            .map(|i| (ids.value(i), m.upstreams[i].to_vec(), m.change_ts[i]))
            .collect();
        rows.sort();
        assert_eq!(
            rows,
            vec![
                (1, vec!["a".to_string()], Some(30)),
                (2, vec!["a".to_string(), "b".to_string()], Some(5)),
                (3, vec!["b".to_string()], Some(7)),
            ]
        );
    }
    let unknown = part(&[9], "x", &[None]);
    assert!(AffectedKeys::merge(vec![unknown.clone(), unknown], &["a"]).is_err());
}
