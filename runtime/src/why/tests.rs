use super::*;
use deltalake::arrow::array::{Int64Array, StringArray};

fn cols() -> Vec<KeyColumn> {
    vec![
        KeyColumn {
            name: "id".into(),
            ty: KeyType::Long,
        },
        KeyColumn {
            name: "inst".into(),
            ty: KeyType::String,
        },
        KeyColumn {
            name: "rank".into(),
            ty: KeyType::Int,
        },
    ]
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn problems(r: Result<Key>) -> String {
    match r {
        Err(Error::Config(crate::config::ConfigError { problems })) => problems.join("\n"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[test]
fn why_key_by_position_or_by_column() {
    let by_pos = parse_key(&cols(), &strings(&["7", "MIT", "2"]), &[]).unwrap();
    let by_name = parse_key(&cols(), &[], &strings(&["rank=2", "inst=MIT", "id=7"])).unwrap();
    assert_eq!(by_pos, by_name);
    assert_eq!(
        by_pos.columns,
        vec![
            ("id".to_string(), KeyValue::Long(7)),
            ("inst".to_string(), KeyValue::String("MIT".into())),
            ("rank".to_string(), KeyValue::Int(2)),
        ]
    );
    assert_eq!(by_pos.to_string(), "id=7, inst=\"MIT\", rank=2");
    // A string value may hold '='.
    let k = parse_key(&cols(), &[], &strings(&["id=1", "inst=a=b", "rank=0"])).unwrap();
    assert_eq!(k.columns[1].1, KeyValue::String("a=b".into()));
}

#[test]
fn why_key_errors_name_the_column_and_its_type() {
    let e = problems(parse_key(
        &cols(),
        &strings(&["x", "MIT", "99999999999"]),
        &[],
    ));
    assert!(e.contains("key column 'id' is long"), "{e}");
    assert!(e.contains("key column 'rank' is int"), "{e}");
    assert!(e.contains("'99999999999' is not one"), "{e}");
    let e = problems(parse_key(&cols(), &strings(&["7"]), &[]));
    assert!(
        e.contains("3 column(s) (id long, inst string, rank int) but 1 value(s)"),
        "{e}"
    );
    let e = problems(parse_key(
        &cols(),
        &[],
        &strings(&["id=7", "id=8", "name=x", "rank"]),
    ));
    assert!(e.contains("'id' is given twice"), "{e}");
    assert!(e.contains("'name' is not a key column"), "{e}");
    assert!(e.contains("--key rank: give COLUMN=VALUE"), "{e}");
    let e = problems(parse_key(&cols(), &[], &strings(&["id=7"])));
    assert!(e.contains("no value for column(s) inst, rank"), "{e}");
    let e = problems(parse_key(&cols(), &strings(&["7"]), &strings(&["id=7"])));
    assert!(e.contains("not both"), "{e}");
    let e = problems(parse_key(&cols(), &[], &[]));
    assert!(e.contains("give the key"), "{e}");
}

#[test]
fn why_key_is_found_among_derived_keys() {
    let keys = AffectedKeys {
        columns: vec![
            Arc::new(Int64Array::from(vec![1, 7, 7])),
            Arc::new(StringArray::from(vec!["MIT", "ETH", "MIT"])),
            Arc::new(deltalake::arrow::array::Int32Array::from(vec![2, 2, 2])),
        ],
        upstreams: vec![
            Arc::from(vec!["a".to_string()]),
            Arc::from(vec!["a".to_string()]),
            Arc::from(vec!["b".to_string()]),
        ],
        change_ts: vec![None; 3],
    };
    let k = parse_key(&cols(), &strings(&["7", "MIT", "2"]), &[]).unwrap();
    assert_eq!(k.position_in(&keys), Some(2));
    let k = parse_key(&cols(), &strings(&["7", "MIT", "3"]), &[]).unwrap();
    assert_eq!(k.position_in(&keys), None);
}

#[test]
fn why_reads_an_upstream_commits_time_and_operation() {
    let entry = br#"{"commitInfo":{"timestamp":1767225600000,"operation":"UPDATE","operationParameters":{"predicate":"id = 1"}}}
{"add":{"path":"x.parquet"}}"#;
    let c = upstream_commit(5, entry);
    assert_eq!(c.version, 5);
    assert_eq!(c.operation.as_deref(), Some("UPDATE"));
    assert_eq!(c.timestamp.as_deref(), Some("2026-01-01T00:00:00+00:00"));
    assert_eq!(c.operation_parameters.unwrap()["predicate"], "id = 1");
    assert!(c.note.is_none());
    // In-commit timestamps win over file times.
    let entry = br#"{"commitInfo":{"timestamp":1,"inCommitTimestamp":1767225600000,"operation":"MERGE","operationParameters":{}}}"#;
    let c = upstream_commit(6, entry);
    assert_eq!(c.timestamp.as_deref(), Some("2026-01-01T00:00:00+00:00"));
    assert!(
        c.operation_parameters.is_none(),
        "empty parameters are left out"
    );
    let c = upstream_commit(7, br#"{"add":{"path":"x.parquet"}}"#);
    assert!(c.operation.is_none() && c.note.is_some());
}

#[test]
fn why_splits_at_the_commit_boundary_nearest_the_middle() {
    // Row r has version versions[r]; rows sorted by version.
    let versions = [3, 3, 3, 3, 3, 4, 5, 5];
    let rows: Vec<u32> = (0..8).collect();
    assert_eq!(split_point(&rows, &versions), 5);
    assert_eq!(split_point(&rows[5..], &versions), 1);
    let one = [9, 9, 9, 9, 9];
    assert_eq!(split_point(&[0, 1, 2, 3, 4], &one), 2);
    assert_eq!(split_point(&[0, 1], &one), 1);
}

fn rows_of(cols: &[ArrayRef]) -> Vec<Rows> {
    cols.iter()
        .map(|c| {
            RowConverter::new(vec![SortField::new(c.data_type().clone())])
                .unwrap()
                .convert_columns(std::slice::from_ref(c))
                .unwrap()
        })
        .collect()
}

#[test]
fn why_keeps_an_updates_images_together() {
    // Commit 5 updates departments 1 and 2 (images not adjacent), commit 6 inserts 1.
    let ids: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 2, 1, 1]));
    let names: ArrayRef = Arc::new(StringArray::from(vec!["a", "b", "b2", "a2", "a3"]));
    let types = [
        "update_preimage",
        "update_preimage",
        "update_postimage",
        "update_postimage",
        "insert",
    ];
    let versions = [5, 5, 5, 5, 6];
    let columns = rows_of(&[ids, names]);
    // By the declared key column (id, column 0).
    assert_eq!(
        with_partners(&[3], &versions, &types, &columns, &[0]),
        vec![0, 3]
    );
    assert_eq!(
        with_partners(&[1], &versions, &types, &columns, &[0]),
        vec![1, 2]
    );
    // Without keys: the opposite image agreeing on the most columns.
    assert_eq!(
        with_partners(&[0], &versions, &types, &columns, &[]),
        vec![0, 3]
    );
    assert_eq!(
        with_partners(&[2], &versions, &types, &columns, &[]),
        vec![1, 2]
    );
    // Inserts have no partner; rows come sorted by version, then pre before post.
    assert_eq!(
        with_partners(&[4, 2], &versions, &types, &columns, &[0]),
        vec![1, 2, 4]
    );
}

#[test]
fn why_lists_versions_as_runs() {
    let vs: BTreeSet<i64> = [1, 2, 3, 5, 7, 8].into_iter().collect();
    assert_eq!(list_versions(&vs), "1-3, 5, 7-8");
}
