//! Decoding change rows: getters, errors, layouts, change types and the batch.

use super::*;

#[test]
fn decodes_change_rows_across_record_batches() {
    let changes = spmaster_changes();
    assert_eq!(changes.name(), "spmaster");
    assert_eq!(changes.start_version(), 5);
    assert_eq!(changes.end_version(), 7);
    assert_eq!(changes.len(), 5);
    assert!(!changes.is_empty());
    assert_eq!(changes.rows().len(), 5);

    let rows: Vec<Row<'_>> = changes.rows().collect();
    assert_eq!(
        rows.iter().map(|r| r.change_type()).collect::<Vec<_>>(),
        vec![
            ChangeType::Insert,
            ChangeType::UpdatePreimage,
            ChangeType::UpdatePostimage,
            ChangeType::Delete,
            ChangeType::Insert,
        ]
    );
    assert_eq!(
        rows.iter().map(|r| r.commit_version()).collect::<Vec<_>>(),
        vec![5, 6, 6, 7, 7]
    );
    assert_eq!(
        rows.iter()
            .map(|r| r.commit_timestamp())
            .collect::<Vec<_>>(),
        vec![Some(T1), Some(T2), Some(T2), Some(T3), None]
    );
    assert_eq!(
        rows.iter().map(|r| r.position()).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    assert!(rows.iter().all(|r| r.upstream() == "spmaster"));
}

#[test]
fn row_getters_widen_and_map_null_to_none() {
    let changes = spmaster_changes();
    let rows: Vec<Row<'_>> = changes.rows().collect();
    assert_eq!(rows[0].i64("diasng_id"), Ok(Some(1)));
    assert_eq!(rows[0].str("name"), Ok(Some("Ada")));
    assert_eq!(rows[2].str("name"), Ok(Some("Robert")));
    assert_eq!(rows[3].i64("diasng_id"), Ok(None));
    assert_eq!(rows[3].is_null("diasng_id"), Ok(true));
    assert_eq!(rows[4].i64("diasng_id"), Ok(Some(3)));
    assert_eq!(rows[4].str("name"), Ok(None));
    assert_eq!(rows[4].is_null("name"), Ok(true));
    assert_eq!(rows[1].str("_change_type"), Ok(Some("update_preimage")));
}

#[test]
fn column_getters_span_record_batches() {
    let changes = spmaster_changes();
    assert_eq!(
        changes.i64_column("diasng_id"),
        Ok(vec![Some(1), Some(2), Some(2), None, Some(3)])
    );
    assert_eq!(
        changes.str_column("name"),
        Ok(vec![
            Some("Ada"),
            Some("Bob"),
            Some("Robert"),
            Some("Gone"),
            None
        ])
    );
    assert_eq!(
        changes.i64_column("_commit_version"),
        Ok(vec![Some(5), Some(6), Some(6), Some(7), Some(7)])
    );
    let values: Vec<Option<i64>> = changes.i64_values("diasng_id").unwrap().collect();
    assert_eq!(values, [Some(1), Some(2), Some(2), None, Some(3)]);
    // Checked before iterating: a missing or non-integer column is an error up front.
    assert!(changes.i64_values("nope").is_err());
    assert!(changes.i64_values("name").is_err());
}

#[test]
fn getter_errors_name_the_upstream_and_the_column() {
    let changes = spmaster_changes();
    let row = changes.rows().next().unwrap();
    assert_eq!(
        row.i64("country"),
        Err(
            "upstream 'spmaster': no column 'country' (columns: diasng_id, name, \
             _change_type, _commit_version, _commit_timestamp); a plugin receives only the \
             columns its init checks (column, require_int, require_str) or declares \
             (TableInfo::reads), and every column of a table it does neither for"
                .to_string()
        )
    );
    assert_eq!(
        row.i64("name"),
        Err(
            "upstream 'spmaster': column 'name' is Utf8, not an integer column that fits int64"
                .to_string()
        )
    );
    assert_eq!(
        row.str("diasng_id"),
        Err("upstream 'spmaster': column 'diasng_id' is Int32, not a string column".to_string())
    );
    assert_eq!(
        changes.i64_column("country").unwrap_err(),
        "upstream 'spmaster': no column 'country' (columns: diasng_id, name, \
         _change_type, _commit_version, _commit_timestamp); a plugin receives only the \
         columns its init checks (column, require_int, require_str) or declares \
         (TableInfo::reads), and every column of a table it does neither for"
    );
}

#[test]
fn zero_bytes_is_an_upstream_without_rows() {
    let changes = Changes::from_ipc("affiliation", 3, 3, &[]).unwrap();
    assert_eq!(changes.len(), 0);
    assert!(changes.is_empty());
    assert_eq!(changes.rows().count(), 0);
    assert_eq!(changes.i64_column("sp_id"), Ok(vec![]));
    assert!(changes.table().schema().is_none());
}

#[test]
fn a_stream_with_a_schema_and_no_batches_has_no_rows() {
    let schema = spmaster_schema();
    let mut writer = StreamWriter::try_new(Vec::new(), &schema).unwrap();
    writer.finish().unwrap();
    let bytes = writer.into_inner().unwrap();
    let changes = Changes::from_ipc("spmaster", 1, 1, &bytes).unwrap();
    assert_eq!(changes.len(), 0);
    assert_eq!(changes.i64_column("diasng_id"), Ok(vec![]));
    assert!(changes.i64_column("nope").is_err());
}

#[test]
fn garbage_bytes_are_an_error_naming_the_upstream() {
    let err = Changes::from_ipc("spmaster", 1, 1, b"not arrow").unwrap_err();
    assert!(
        err.starts_with("upstream 'spmaster': cannot read the Arrow IPC stream"),
        "{err}"
    );
}

/// The zero-copy decode of owned bytes reads what the copying decode reads, and
/// refuses what it refuses.
#[test]
fn owned_bytes_decode_like_borrowed_bytes() {
    let first = spmaster_batch(
        vec![Some(1), Some(2), Some(2)],
        vec![Some("Ada"), Some("Bob"), Some("Robert")],
        vec!["insert", "update_preimage", "update_postimage"],
        vec![5, 6, 6],
        vec![Some(T1), Some(T2), Some(T2)],
    );
    let bytes = ipc(&[first.clone(), first]);
    let owned = Changes::from_ipc_owned("spmaster", 5, 6, bytes.clone()).unwrap();
    let borrowed = Changes::from_ipc("spmaster", 5, 6, &bytes).unwrap();
    assert_eq!(owned.len(), 6);
    assert_eq!(
        owned.i64_column("diasng_id").unwrap(),
        vec![Some(1), Some(2), Some(2), Some(1), Some(2), Some(2)]
    );
    assert_eq!(
        owned.str_column("name").unwrap(),
        borrowed.str_column("name").unwrap()
    );
    assert_eq!(
        owned.rows().map(|r| r.change_type()).collect::<Vec<_>>(),
        borrowed.rows().map(|r| r.change_type()).collect::<Vec<_>>()
    );
    assert_eq!(
        Changes::from_ipc_owned("spmaster", 1, 1, Vec::new())
            .unwrap()
            .len(),
        0
    );
    let err = Changes::from_ipc_owned("spmaster", 1, 1, b"not arrow".to_vec()).unwrap_err();
    assert!(
        err.starts_with("upstream 'spmaster': cannot read the Arrow IPC stream"),
        "{err}"
    );
    // Cut short: an error, not a panic or a silently shorter table.
    let cut = bytes[..bytes.len() - 40].to_vec();
    assert!(Changes::from_ipc_owned("spmaster", 5, 6, cut).is_err());
}

#[test]
fn change_rows_must_carry_the_cdf_columns() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("sp_id", DataType::Int64, true),
        Field::new("_commit_version", DataType::Int64, false),
        Field::new("_commit_timestamp", ts_type(), true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![1])),
            Arc::new(Int64Array::from(vec![1])),
            Arc::new(TimestampMicrosecondArray::from(vec![T1]).with_timezone("UTC")),
        ],
    )
    .unwrap();
    assert_eq!(
        Changes::from_ipc("affiliation", 1, 1, &ipc(&[batch])).unwrap_err(),
        "upstream 'affiliation': the change rows have no '_change_type' column \
         (columns: sp_id, _commit_version, _commit_timestamp)"
    );
}

#[test]
fn an_unknown_change_type_is_an_error() {
    let batch = spmaster_batch(
        vec![Some(1), Some(2)],
        vec![None, None],
        vec!["insert", "upsert"],
        vec![1, 1],
        vec![Some(T1), Some(T1)],
    );
    assert_eq!(
        Changes::from_ipc("spmaster", 1, 1, &ipc(&[batch])).unwrap_err(),
        "upstream 'spmaster': row 1: unknown change type 'upsert' (expected insert, \
         update_preimage, update_postimage or delete)"
    );
}

#[test]
fn other_arrow_layouts_are_accepted() {
    // Dictionary-encoded _change_type, Utf8View and LargeUtf8 strings, Int8/Int16 ids,
    // millisecond timestamps without a time zone.
    let change_types: DictionaryArray<Int8Type> =
        vec!["delete", "insert", "delete"].into_iter().collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("a", DataType::Int8, true),
        Field::new("b", DataType::Int16, true),
        Field::new("title", DataType::Utf8View, true),
        Field::new("code", DataType::LargeUtf8, true),
        Field::new(
            "_change_type",
            DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::Utf8)),
            false,
        ),
        Field::new("_commit_version", DataType::Int32, false),
        Field::new(
            "_commit_timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        ),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(arrow_array::PrimitiveArray::<Int8Type>::from(vec![
                Some(-3),
                None,
                Some(7),
            ])),
            Arc::new(arrow_array::PrimitiveArray::<Int16Type>::from(vec![
                300, 301, 302,
            ])),
            Arc::new(StringViewArray::from(vec![Some("x"), None, Some("z")])),
            Arc::new(LargeStringArray::from(vec![Some("L1"), Some("L2"), None])),
            Arc::new(change_types),
            Arc::new(Int32Array::from(vec![9, 9, 10])),
            Arc::new(TimestampMillisecondArray::from(vec![
                Some(1_700_000_000_123),
                None,
                Some(1_700_000_000_456),
            ])),
        ],
    )
    .unwrap();
    let changes = Changes::from_ipc("t", 9, 10, &ipc(&[batch])).unwrap();
    let rows: Vec<Row<'_>> = changes.rows().collect();
    assert_eq!(rows[0].change_type(), ChangeType::Delete);
    assert_eq!(rows[1].change_type(), ChangeType::Insert);
    assert_eq!(rows[2].change_type(), ChangeType::Delete);
    assert_eq!(rows[2].commit_version(), 10);
    assert_eq!(rows[0].commit_timestamp(), Some(1_700_000_000_123_000));
    assert_eq!(rows[1].commit_timestamp(), None);
    assert_eq!(rows[0].i64("a"), Ok(Some(-3)));
    assert_eq!(rows[1].i64("a"), Ok(None));
    assert_eq!(rows[2].i64("b"), Ok(Some(302)));
    assert_eq!(rows[0].str("title"), Ok(Some("x")));
    assert_eq!(rows[1].str("title"), Ok(None));
    assert_eq!(rows[1].str("code"), Ok(Some("L2")));
    assert_eq!(rows[2].str("code"), Ok(None));
    assert_eq!(rows[1].str("_change_type"), Ok(Some("insert")));
}

#[test]
fn change_type_helpers() {
    assert_eq!("update_postimage".parse(), Ok(ChangeType::UpdatePostimage));
    assert_eq!(ChangeType::UpdatePreimage.as_str(), "update_preimage");
    assert!(ChangeType::Delete.is_before_image());
    assert!(ChangeType::UpdatePreimage.is_before_image());
    assert!(ChangeType::Insert.is_after_image());
    assert!(ChangeType::UpdatePostimage.is_after_image());
    assert!(!ChangeType::Delete.is_after_image());

    let changes = spmaster_changes();
    let inserts: Vec<i64> = changes
        .rows_of(ChangeType::Insert)
        .map(|r| r.i64("diasng_id").unwrap().unwrap())
        .collect();
    assert_eq!(inserts, vec![1, 3]);
}

#[test]
fn update_pairs_match_pre_and_post_images() {
    // Two updates in one commit, listed post-images first, plus an unpaired pre-image.
    let schema = Arc::new(Schema::new(vec![
        Field::new("emp_id", DataType::Int64, false),
        Field::new("dept_id", DataType::Int64, true),
        Field::new("_change_type", DataType::Utf8, false),
        Field::new("_commit_version", DataType::Int64, false),
        Field::new("_commit_timestamp", ts_type(), true),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![10, 11, 11, 10, 12])),
            Arc::new(Int64Array::from(vec![
                Some(2),
                Some(3),
                Some(1),
                Some(1),
                None,
            ])),
            Arc::new(StringArray::from(vec![
                "update_postimage",
                "update_postimage",
                "update_preimage",
                "update_preimage",
                "update_preimage",
            ])),
            Arc::new(Int64Array::from(vec![4, 4, 4, 4, 3])),
            Arc::new(TimestampMicrosecondArray::from(vec![T2; 5]).with_timezone("UTC")),
        ],
    )
    .unwrap();
    let changes = Changes::from_ipc("employee", 3, 4, &ipc(&[batch])).unwrap();
    let pairs: Vec<(i64, Option<i64>, Option<i64>)> = changes
        .update_pairs("emp_id")
        .unwrap()
        .into_iter()
        .map(|(pre, post)| {
            (
                post.i64("emp_id").unwrap().unwrap(),
                pre.i64("dept_id").unwrap(),
                post.i64("dept_id").unwrap(),
            )
        })
        .collect();
    assert_eq!(pairs, vec![(10, Some(1), Some(2)), (11, Some(1), Some(3))]);
}

#[test]
fn newest_commit_by_value() {
    let changes = spmaster_changes();
    let by_id = changes.newest_commit_by_i64("diasng_id").unwrap();
    let expected: std::collections::BTreeMap<i64, Option<i64>> =
        [(1, Some(T1)), (2, Some(T2)), (3, None)]
            .into_iter()
            .collect();
    assert_eq!(by_id, expected);

    // Repeats out of order: the newest known time of each value wins.
    let mixed = spmaster_batch(
        vec![Some(5), Some(5), Some(4), Some(5), Some(4)],
        vec![None; 5],
        vec!["insert"; 5],
        vec![1, 1, 1, 1, 1],
        vec![Some(T2), Some(T1), None, Some(T3), Some(T1)],
    );
    let changes = Changes::from_ipc("spmaster", 1, 1, &ipc(&[mixed])).unwrap();
    let expected: std::collections::BTreeMap<i64, Option<i64>> =
        [(4, Some(T1)), (5, Some(T3))].into_iter().collect();
    assert_eq!(changes.newest_commit_by_i64("diasng_id").unwrap(), expected);
}

#[test]
fn batch_finds_upstreams_by_name() {
    let batch = Batch::new(
        "sp_affiliation",
        42,
        vec![
            spmaster_changes(),
            Changes::from_ipc("affiliation", 1, 2, &[]).unwrap(),
        ],
    );
    assert_eq!(batch.id(), 42);
    assert_eq!(batch.pipeline(), "sp_affiliation");
    assert_eq!(batch.changes("spmaster").unwrap().len(), 5);
    assert_eq!(batch.changes("affiliation").unwrap().len(), 0);
    assert_eq!(
        batch.upstream_names().collect::<Vec<_>>(),
        vec!["spmaster", "affiliation"]
    );
    assert_eq!(batch.upstreams().len(), 2);
    assert_eq!(
        batch.changes("employee").unwrap_err(),
        "pipeline 'sp_affiliation' has no upstream 'employee' (its upstreams: spmaster, \
         affiliation)"
    );
}
