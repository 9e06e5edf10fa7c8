//! Lookups against a fake host: `add_through` and the typed lookup calls.

use super::output::decoded;
use super::*;

#[test]
fn add_through_attributes_found_rows_to_the_newest_change_of_their_value() {
    // Department changes: 10 at T1 and again at T3 (a pre/post pair), 20 at T2, and a
    // null dept_id that asks nothing.
    let schema = Arc::new(Schema::new(vec![
        Field::new("dept_id", DataType::Int64, true),
        Field::new("_change_type", DataType::Utf8, false),
        Field::new("_commit_version", DataType::Int64, false),
        Field::new("_commit_timestamp", ts_type(), true),
    ]));
    let b = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![Some(10), Some(20), Some(10), None])),
            Arc::new(StringArray::from(vec![
                "insert",
                "insert",
                "update_postimage",
                "delete",
            ])),
            Arc::new(Int64Array::from(vec![1, 2, 3, 3])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![Some(T1), Some(T2), Some(T3), Some(T3)])
                    .with_timezone("UTC"),
            ),
        ],
    )
    .unwrap();
    let departments = Changes::from_ipc("department", 1, 3, &ipc(&[b])).unwrap();
    let mut host = |table: &str, column: &str, keys: &[u8], columns: &[String]| {
        assert_eq!((table, column), ("employee", "dept_id"));
        assert_eq!(columns, ["emp_id".to_string(), "dept_id".to_string()]);
        let (_, asked) = read_ipc(keys);
        assert_eq!(
            asked[0].column(0).as_ref(),
            &Int64Array::from(vec![10, 20]) as &dyn Array
        );
        let found = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("emp_id", DataType::Int64, true),
                Field::new("dept_id", DataType::Int64, true),
            ])),
            vec![
                Arc::new(Int64Array::from(vec![Some(1), Some(2), Some(3), None])),
                Arc::new(Int64Array::from(vec![10, 20, 10, 20])),
            ],
        )
        .unwrap();
        Ok::<_, String>(ipc(&[found]))
    };
    let mut keys = Keys::new(
        vec![KeyColumn::i64("emp_id")],
        vec!["employee".into(), "department".into()],
    )
    .unwrap();
    let n = keys
        .add_through_with(
            &mut via_ipc(&mut host),
            &departments,
            "dept_id",
            "employee",
            "dept_id",
        )
        .unwrap();
    assert_eq!(n, 3, "the row with a null emp_id is no key");
    assert_eq!(
        decoded(keys),
        vec![(
            "department".to_string(),
            vec!["1".into(), "2".into(), "3".into()],
            vec![Some(T3), Some(T2), Some(T3)]
        )]
    );
}

#[test]
fn add_through_passes_whole_key_arrays_and_attributes_each_row_like_the_row_path() {
    // int32 join values (widened), 10 twice (newest T3), 20 once; found rows without
    // nulls come back in two batches, one of them through the whole-array path.
    let schema = Arc::new(Schema::new(vec![
        Field::new("dept_id", DataType::Int32, true),
        Field::new("_change_type", DataType::Utf8, false),
        Field::new("_commit_version", DataType::Int64, false),
        Field::new("_commit_timestamp", ts_type(), true),
    ]));
    let b = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int32Array::from(vec![Some(20), Some(10), Some(10)])),
            Arc::new(StringArray::from(vec![
                "insert",
                "update_preimage",
                "update_postimage",
            ])),
            Arc::new(Int64Array::from(vec![2, 3, 3])),
            Arc::new(
                TimestampMicrosecondArray::from(vec![Some(T2), Some(T1), Some(T3)])
                    .with_timezone("UTC"),
            ),
        ],
    )
    .unwrap();
    let departments = Changes::from_ipc("department", 1, 3, &ipc(&[b])).unwrap();
    let found_schema = Arc::new(Schema::new(vec![
        Field::new("emp_id", DataType::Int64, true),
        Field::new("dept_id", DataType::Int64, true),
    ]));
    let mut host = |_: &str, _: &str, keys: &[u8], _: &[String]| {
        let (_, asked) = read_ipc(keys);
        assert_eq!(
            asked[0].column(0).as_ref(),
            &Int64Array::from(vec![10, 20]) as &dyn Array
        );
        let batch = |emp: Vec<i64>, dept: Vec<i64>| {
            RecordBatch::try_new(
                found_schema.clone(),
                vec![
                    Arc::new(Int64Array::from(emp)),
                    Arc::new(Int64Array::from(dept)),
                ],
            )
            .unwrap()
        };
        Ok::<_, String>(ipc(&[
            batch(vec![7, 8], vec![20, 10]),
            batch(vec![9], vec![10]),
        ]))
    };
    let mut keys = Keys::new(
        vec![KeyColumn::i64("emp_id")],
        vec!["employee".into(), "department".into()],
    )
    .unwrap();
    let n = keys
        .add_through_with(
            &mut via_ipc(&mut host),
            &departments,
            "dept_id",
            "employee",
            "dept_id",
        )
        .unwrap();
    assert_eq!(n, 3);
    assert_eq!(
        decoded(keys),
        vec![(
            "department".to_string(),
            vec!["7".into(), "8".into(), "9".into()],
            vec![Some(T2), Some(T3), Some(T3)]
        )]
    );
}

#[test]
fn lookup_sends_deduplicated_keys_as_one_column_named_after_the_lookup_column() {
    let mut calls = 0;
    let mut host =
        |table: &str, column: &str, keys: &[u8], columns: &[String]| -> Result<Vec<u8>, String> {
            calls += 1;
            assert_eq!(table, "employee");
            assert_eq!(column, "dept_id");
            assert_eq!(columns, ["emp_id".to_string(), "dept_id".to_string()]);
            let (schema, batches) = read_ipc(keys);
            assert_eq!(
                schema.as_ref(),
                &Schema::new(vec![Field::new("dept_id", DataType::Int64, false)])
            );
            assert_eq!(batches.len(), 1);
            assert_eq!(
                batches[0].column(0).as_ref(),
                &Int64Array::from(vec![10, 20]) as &dyn Array
            );
            let schema = Arc::new(Schema::new(vec![
                Field::new("emp_id", DataType::Int64, false),
                Field::new("dept_id", DataType::Int64, true),
            ]));
            let answer = RecordBatch::try_new(
                schema,
                vec![
                    Arc::new(Int64Array::from(vec![100, 101, 200])),
                    Arc::new(Int64Array::from(vec![10, 10, 20])),
                ],
            )
            .unwrap();
            Ok(ipc(&[answer]))
        };
    let table = lookup_i64_with(
        &mut via_ipc(&mut host),
        "employee",
        "dept_id",
        &[20, 10, 20, 10],
        &["emp_id", "dept_id"],
    )
    .unwrap();
    assert_eq!(calls, 1);
    assert_eq!(table.len(), 3);
    assert_eq!(
        table.i64_column("emp_id"),
        Ok(vec![Some(100), Some(101), Some(200)])
    );
    let first = table.rows().next().unwrap();
    assert_eq!(first.i64("dept_id"), Ok(Some(10)));
    assert_eq!(
        first.i64("name").unwrap_err(),
        "lookup of 'employee' by 'dept_id': no column 'name' (columns: emp_id, dept_id)"
    );
}

#[test]
fn lookup_with_no_keys_does_not_call_the_host() {
    let mut host = |_: &str, _: &str, _: &[u8], _: &[String]| -> Result<Vec<u8>, String> {
        panic!("the host must not be called")
    };
    let table = lookup_i64_with(&mut via_ipc(&mut host), "employee", "dept_id", &[], &[]).unwrap();
    assert!(table.is_empty());
    assert_eq!(table.rows().count(), 0);
}

#[test]
fn lookup_errors_name_the_table_and_column() {
    let mut host = |_: &str, _: &str, _: &[u8], _: &[String]| -> Result<Vec<u8>, String> {
        Err("table 'employe' is not an upstream or lookup table".to_string())
    };
    assert_eq!(
        lookup_i64_with(&mut via_ipc(&mut host), "employe", "dept_id", &[1], &[]).unwrap_err(),
        "lookup of 'employe' by 'dept_id': table 'employe' is not an upstream or lookup table"
    );
    // Natively there is no host at all.
    assert_eq!(
        lookup_i64("employee", "dept_id", &[1], &[]).unwrap_err(),
        "lookup of 'employee' by 'dept_id': host lookups are only available when the plugin \
         runs inside dlink-rt (wasm32-wasip2 build)"
    );
}

#[test]
fn string_lookup_keys_are_utf8() {
    let mut host = |_: &str, column: &str, keys: &[u8], _: &[String]| -> Result<Vec<u8>, String> {
        let (schema, batches) = read_ipc(keys);
        assert_eq!(schema.field(0), &Field::new(column, DataType::Utf8, false));
        assert_eq!(
            batches[0].column(0).as_ref(),
            &StringArray::from(vec!["a", "b"]) as &dyn Array
        );
        Ok(Vec::new())
    };
    let table = lookup_str_with(
        &mut via_ipc(&mut host),
        "users",
        "uid",
        &["b", "a", "b"],
        &[],
    )
    .unwrap();
    assert!(table.is_empty());
}
