//! Native unit tests of the pure parts: decoding, getters, the keys builder, lookups
//! against a fake host. Expected values are written by hand.

use std::sync::Arc;

use arrow_array::types::{Int16Type, Int8Type};
use arrow_array::{
    Array, ArrayRef, DictionaryArray, Int32Array, Int64Array, LargeStringArray, RecordBatch,
    StringArray, StringViewArray, TimestampMicrosecondArray, TimestampMillisecondArray,
};
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{DataType, Field, Schema, TimeUnit};

use crate::lookup::{lookup_i64_with, lookup_str_with};
use crate::*;

const T1: i64 = 1_700_000_000_000_000;
const T2: i64 = 1_700_000_060_000_000;
const T3: i64 = 1_700_000_120_000_000;

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn ipc(batches: &[RecordBatch]) -> Vec<u8> {
    let schema = batches[0].schema();
    let mut writer = StreamWriter::try_new(Vec::new(), &schema).unwrap();
    for b in batches {
        writer.write(b).unwrap();
    }
    writer.finish().unwrap();
    writer.into_inner().unwrap()
}

fn read_ipc(bytes: &[u8]) -> (Arc<Schema>, Vec<RecordBatch>) {
    let reader = StreamReader::try_new(bytes, None).unwrap();
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>().unwrap();
    (schema, batches)
}

/// spmaster-like change rows: diasng_id is Int32 to exercise widening.
fn spmaster_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("diasng_id", DataType::Int32, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("_change_type", DataType::Utf8, false),
        Field::new("_commit_version", DataType::Int64, false),
        Field::new("_commit_timestamp", ts_type(), true),
    ]))
}

fn spmaster_batch(
    ids: Vec<Option<i32>>,
    names: Vec<Option<&str>>,
    types: Vec<&str>,
    versions: Vec<i64>,
    ts: Vec<Option<i64>>,
) -> RecordBatch {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from(ids)),
        Arc::new(StringArray::from(names)),
        Arc::new(StringArray::from(types)),
        Arc::new(Int64Array::from(versions)),
        Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
    ];
    RecordBatch::try_new(spmaster_schema(), columns).unwrap()
}

/// Five rows over two record batches: an insert, an update (pre + post), a delete
/// with a null id, and an insert with a null name.
fn spmaster_changes() -> Changes {
    let first = spmaster_batch(
        vec![Some(1), Some(2), Some(2)],
        vec![Some("Ada"), Some("Bob"), Some("Robert")],
        vec!["insert", "update_preimage", "update_postimage"],
        vec![5, 6, 6],
        vec![Some(T1), Some(T2), Some(T2)],
    );
    let second = spmaster_batch(
        vec![None, Some(3)],
        vec![Some("Gone"), None],
        vec!["delete", "insert"],
        vec![7, 7],
        vec![Some(T3), None],
    );
    Changes::from_ipc("spmaster", 5, 7, &ipc(&[first, second])).unwrap()
}

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
             _change_type, _commit_version, _commit_timestamp)"
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
         _change_type, _commit_version, _commit_timestamp)"
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

/// The per-upstream output, decoded: upstream -> (keys of the first key column as
/// text, timestamps), row by row across the record batches.
fn decoded(keys: Keys) -> Vec<(String, Vec<String>, Vec<Option<i64>>)> {
    keys.into_ipc()
        .unwrap()
        .into_iter()
        .map(|(upstream, bytes)| {
            let (schema, batches) = read_ipc(&bytes);
            assert_eq!(schema.fields().last().unwrap().name(), "_commit_timestamp");
            let mut ks = Vec::new();
            let mut ts = Vec::new();
            for b in &batches {
                let k = b.column(0);
                for i in 0..b.num_rows() {
                    assert!(k.is_valid(i), "no null keys in the output");
                    ks.push(match k.data_type() {
                        DataType::Int64 => k
                            .as_any()
                            .downcast_ref::<Int64Array>()
                            .unwrap()
                            .value(i)
                            .to_string(),
                        DataType::Int32 => k
                            .as_any()
                            .downcast_ref::<Int32Array>()
                            .unwrap()
                            .value(i)
                            .to_string(),
                        _ => k
                            .as_any()
                            .downcast_ref::<StringArray>()
                            .unwrap()
                            .value(i)
                            .to_string(),
                    });
                }
                let t = b
                    .column(b.num_columns() - 1)
                    .as_any()
                    .downcast_ref::<TimestampMicrosecondArray>()
                    .unwrap();
                ts.extend(t.iter());
            }
            (upstream, ks, ts)
        })
        .collect()
}

fn sp_keys(columns: Vec<KeyColumn>) -> Keys {
    Keys::new(columns, vec!["spmaster".into(), "affiliation".into()]).unwrap()
}

#[test]
fn add_column_passes_the_change_rows_through_skipping_null_keys() {
    let mut keys = sp_keys(vec![KeyColumn::i64("diasng_id")]);
    keys.add_column(&spmaster_changes(), "diasng_id").unwrap();
    // 1, 2 (pre), 2 (post) from the first record batch; the null id of the delete is
    // skipped, 3 stays; each with its row's timestamp. Int32 widened to int64.
    assert_eq!(keys.len(), 4);
    assert_eq!(
        decoded(keys),
        vec![(
            "spmaster".to_string(),
            vec!["1".into(), "2".into(), "2".into(), "3".into()],
            vec![Some(T1), Some(T2), Some(T2), None]
        )]
    );
}

#[test]
fn keys_are_grouped_by_upstream_in_pipeline_order_and_not_deduplicated() {
    let mut keys = sp_keys(vec![KeyColumn::i64("diasng_id")]);
    keys.add("affiliation", Some(T3), 7_i64).unwrap();
    keys.add("spmaster", Some(T1), 7_i64).unwrap();
    keys.add("affiliation", None, 7_i64).unwrap();
    keys.add("spmaster", Some(T2), None::<i64>).unwrap();
    assert_eq!(keys.len(), 3);
    assert_eq!(
        decoded(keys),
        vec![
            ("spmaster".to_string(), vec!["7".into()], vec![Some(T1)]),
            (
                "affiliation".to_string(),
                vec!["7".into(), "7".into()],
                vec![Some(T3), None]
            ),
        ]
    );
}

#[test]
fn keys_reject_values_that_do_not_fit_and_causes_that_are_no_upstream() {
    let mut keys = sp_keys(vec![KeyColumn::i32("n")]);
    assert_eq!(
        keys.add("spmaster", None, 1_i64 << 40)
            .unwrap_err()
            .message(),
        "key value 1099511627776 does not fit key column n int32"
    );
    assert_eq!(
        keys.add("spmaster", None, "x").unwrap_err().message(),
        "key value \"x\" does not fit key column n int32"
    );
    assert_eq!(
        keys.add("employee", None, 1_i64).unwrap_err().message(),
        "a key's cause 'employee' is not an upstream of the batch (upstreams: spmaster, affiliation)"
    );
    assert_eq!(
        keys.add("spmaster", None, (1_i64, 2_i64))
            .unwrap_err()
            .message(),
        "a key of 2 value(s) for 1 key column(s) (n int32)"
    );
    assert!(keys.is_empty(), "a rejected key leaves no trace");
    assert!(keys.into_ipc().unwrap().is_empty());
}

#[test]
fn composite_and_string_keys() {
    let mut keys = sp_keys(vec![KeyColumn::utf8("name"), KeyColumn::i64("id")]);
    keys.add_columns(&spmaster_changes(), &["name", "diasng_id"])
        .unwrap();
    keys.add("affiliation", None, ("Zed", 9_i64)).unwrap();
    // Row by row where a part is null: (Gone, null) and (null, 3) are skipped.
    assert_eq!(
        decoded(keys),
        vec![
            (
                "spmaster".to_string(),
                vec!["Ada".into(), "Bob".into(), "Robert".into()],
                vec![Some(T1), Some(T2), Some(T2)]
            ),
            ("affiliation".to_string(), vec!["Zed".into()], vec![None]),
        ]
    );
}

#[test]
fn add_column_names_what_is_wrong() {
    let mut keys = sp_keys(vec![KeyColumn::i64("diasng_id")]);
    assert_eq!(
        keys.add_column(&spmaster_changes(), "sp_id")
            .unwrap_err()
            .message(),
        "upstream 'spmaster': the change rows have no column 'sp_id' (columns: diasng_id, name, \
         _change_type, _commit_version, _commit_timestamp)"
    );
    assert_eq!(
        keys.add_column(&spmaster_changes(), "name")
            .unwrap_err()
            .message(),
        "upstream 'spmaster': column 'name' is Utf8, which cannot be key column diasng_id int64"
    );
    assert!(Keys::new(vec![], vec![]).is_err());
}

fn info(keys: Vec<KeyColumn>) -> PipelineInfo {
    let aff = Arc::new(Schema::new(vec![
        Field::new("sp_id", DataType::Int64, true),
        Field::new("rank", DataType::Utf8, true),
    ]));
    PipelineInfo::new(
        "sp",
        vec![
            TableInfo::new("spmaster", spmaster_schema()),
            TableInfo::new("affiliation", aff),
        ],
        vec![TableInfo::new("institutions", Arc::new(Schema::empty()))],
        keys,
    )
}

#[test]
fn pipeline_info_checks_say_what_the_pipeline_has() {
    let p = info(vec![KeyColumn::i64("diasng_id")]);
    assert!(p.expect_keys(&[KeyColumn::i64("diasng_id")]).is_ok());
    assert_eq!(
        p.expect_keys(&[KeyColumn::utf8("diasng_id")])
            .unwrap_err()
            .message(),
        "pipeline 'sp' declares the key (diasng_id int64) in [link] keys, but this plugin \
         produces (diasng_id utf8)"
    );
    assert_eq!(
        p.upstream("employee").unwrap_err().message(),
        "pipeline 'sp' has no upstream 'employee' (its upstreams: spmaster, affiliation); \
         name it in the pipeline file or set the plugin's config to one of them"
    );
    assert!(
        p.upstream("institutions").is_err(),
        "a lookup table is no upstream"
    );
    assert_eq!(p.table("institutions").unwrap().name(), "institutions");
    let [a, b] = p.upstreams_as(["staff", "affiliations"]).unwrap();
    assert_eq!((a.name(), b.name()), ("spmaster", "affiliation"));
    assert_eq!(
        p.upstreams_as(["x", "y", "z"]).unwrap_err().message(),
        "this plugin reads 3 upstream(s), in this order: x, y, z; pipeline 'sp' lists 2: \
         spmaster, affiliation"
    );
    assert!(a.require_int("diasng_id").is_ok());
    assert_eq!(
        a.require_int("name").unwrap_err().message(),
        "column 'name' of table 'spmaster' is Utf8, not an integer"
    );
    assert!(b.require_str("rank").is_ok());
    assert_eq!(
        b.require_int("uid").unwrap_err().message(),
        "table 'affiliation' has no column 'uid' (its columns: sp_id, rank)"
    );
}

#[test]
fn schemas_cross_as_ipc_streams_without_batches() {
    let bytes = encode_schema(&spmaster_schema()).unwrap();
    assert_eq!(
        crate::info::decode_schema(&bytes).unwrap(),
        spmaster_schema()
    );
}

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
        .add_through_with(&mut host, &departments, "dept_id", "employee", "dept_id")
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
        .add_through_with(&mut host, &departments, "dept_id", "employee", "dept_id")
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
        &mut host,
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
    let table = lookup_i64_with(&mut host, "employee", "dept_id", &[], &[]).unwrap();
    assert!(table.is_empty());
    assert_eq!(table.rows().count(), 0);
}

#[test]
fn lookup_errors_name_the_table_and_column() {
    let mut host = |_: &str, _: &str, _: &[u8], _: &[String]| -> Result<Vec<u8>, String> {
        Err("table 'employe' is not an upstream or lookup table".to_string())
    };
    assert_eq!(
        lookup_i64_with(&mut host, "employe", "dept_id", &[1], &[]).unwrap_err(),
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
    let table = lookup_str_with(&mut host, "users", "uid", &["b", "a", "b"], &[]).unwrap();
    assert!(table.is_empty());
}

/// A test pipeline with a typed config.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EveryId {
    upstream: String,
}

impl Pipeline for EveryId {
    type Config = EveryId;

    fn init(config: EveryId, pipeline: &PipelineInfo) -> Result<Self, Error> {
        pipeline
            .upstream(&config.upstream)?
            .require_int("diasng_id")?;
        Ok(config)
    }

    fn derive(&mut self, batch: &Batch, keys: &mut Keys) -> Result<(), Error> {
        for row in batch.changes(&self.upstream)?.rows() {
            keys.add_from(&row, row.i64("diasng_id")?)?;
        }
        Ok(())
    }
}

#[test]
fn run_derive_runs_init_and_derive_natively() {
    let p = info(vec![KeyColumn::i64("diasng_id")]);
    let batch = Batch::new("sp", 1, vec![spmaster_changes()]);
    let keys = run_derive::<EveryId>(r#"{"upstream": "spmaster"}"#, &p, &batch).unwrap();
    assert_eq!(keys.len(), 4);
    let err = |json: &str| {
        run_derive::<EveryId>(json, &p, &batch)
            .unwrap_err()
            .to_string()
    };
    assert!(
        err(r#"{"upstream": "spmaster", "extra": 1}"#)
            .starts_with("[plugin.config]: unknown field `extra`, expected `upstream`"),
        "{}",
        err(r#"{"upstream": "spmaster", "extra": 1}"#)
    );
    assert!(
        err("").starts_with("[plugin.config]: missing field `upstream`"),
        "{}",
        err("")
    );
    assert!(err(r#"{"upstream": "affiliation"}"#).contains("has no column 'diasng_id'"));
    assert!(parse_config::<NoConfig>("{}").is_ok());
    assert!(parse_config::<NoConfig>(r#"{"a": 1}"#).is_err());
}
