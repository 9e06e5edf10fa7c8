//! The keys builder and the pipeline description a plugin's `init` checks.

use super::*;

/// The per-upstream output, decoded: upstream -> (keys of the first key column as
/// text, timestamps), row by row across the record batches.
pub(super) fn decoded(keys: Keys) -> Vec<(String, Vec<String>, Vec<Option<i64>>)> {
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

pub(super) fn sp_keys(columns: Vec<KeyColumn>) -> Keys {
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
         _change_type, _commit_version, _commit_timestamp); a plugin receives only the columns \
         its init checks (column, require_int, require_str) or declares (TableInfo::reads), and \
         every column of a table it does neither for"
    );
    assert_eq!(
        keys.add_column(&spmaster_changes(), "name")
            .unwrap_err()
            .message(),
        "upstream 'spmaster': column 'name' is Utf8, which cannot be key column diasng_id int64"
    );
    assert!(Keys::new(vec![], vec![]).is_err());
}

pub(super) fn info(keys: Vec<KeyColumn>) -> PipelineInfo {
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
