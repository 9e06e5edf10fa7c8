//! The change feed of every Spark/Databricks-written table in
//! ../shared/fixtures/spark-cdf (or $DLINK_SPARK_FIXTURES) equals its `.expected.json`,
//! an independent reader's output: every row (without `_commit_timestamp`) and the
//! counts per version and change type.

use std::collections::BTreeMap;
use std::path::PathBuf;

use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type,
};
use deltalake::arrow::util::display::array_value_to_string;
use dlink_rt::cdf;
use dlink_rt::config::Upstream;
use serde_json::Value;

fn fixtures() -> Option<PathBuf> {
    let dir = std::env::var_os("DLINK_SPARK_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/spark-cdf")
        });
    if dir.is_dir() {
        return Some(dir);
    }
    // In CI (`CI` set) or with DLINK_REQUIRE_FIXTURES a missing fixture folder fails:
    // a skipped fixture test would prove nothing.
    for var in ["CI", "DLINK_REQUIRE_FIXTURES"] {
        assert!(
            std::env::var_os(var).is_none(),
            "{var} is set but the Spark fixtures are not at {} (set DLINK_SPARK_FIXTURES)",
            dir.display()
        );
    }
    eprintln!(
        "\n!!! SKIPPED: Spark CDF fixtures not found at {} (set DLINK_SPARK_FIXTURES) !!!\n",
        dir.display()
    );
    None
}

fn cell(col: &dyn Array, i: usize) -> Value {
    if col.is_null(i) {
        return Value::Null;
    }
    match col.data_type() {
        DataType::Int8 => col.as_primitive::<Int8Type>().value(i).into(),
        DataType::Int16 => col.as_primitive::<Int16Type>().value(i).into(),
        DataType::Int32 => col.as_primitive::<Int32Type>().value(i).into(),
        DataType::Int64 => col.as_primitive::<Int64Type>().value(i).into(),
        DataType::Float32 => (col.as_primitive::<Float32Type>().value(i) as f64).into(),
        DataType::Float64 => col.as_primitive::<Float64Type>().value(i).into(),
        DataType::Boolean => col.as_boolean().value(i).into(),
        _ => Value::String(array_value_to_string(col, i).expect("displayable value")),
    }
}

fn rows(batches: &[RecordBatch]) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        for i in 0..b.num_rows() {
            let row: BTreeMap<String, Value> = b
                .schema()
                .fields()
                .iter()
                .zip(b.columns())
                .filter(|(f, _)| f.name() != cdf::COMMIT_TIMESTAMP)
                .map(|(f, c)| (f.name().clone(), cell(c.as_ref(), i)))
                .collect();
            out.push(serde_json::to_string(&row).expect("json"));
        }
    }
    out.sort();
    out
}

fn canonical(v: &Value) -> String {
    let m: BTreeMap<String, Value> = v
        .as_object()
        .expect("expected rows are objects")
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    serde_json::to_string(&m).expect("json")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_spark_fixture_reads_like_the_independent_reader() {
    let Some(dir) = fixtures() else { return };
    let mut checked = 0;
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".expected.json"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 6, "six fixtures expected in {}", dir.display());
    let ctx = cdf::session();
    for expected_path in names {
        let name = expected_path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .trim_end_matches(".expected.json")
            .to_string();
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(&expected_path).unwrap()).unwrap();
        let u = Upstream::new(name.as_str(), dir.join(&name).display().to_string());
        let table = cdf::open_latest(&u)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let latest = cdf::version_of(&u, &table).unwrap();
        assert_eq!(
            latest,
            expected["latest_version"].as_i64().unwrap(),
            "{name}: latest version"
        );
        let first = expected["first_readable_version"].as_i64().unwrap();
        let changes = cdf::read_changes(&ctx, &u, &table, first, latest)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            changes.rows() as u64,
            expected["change_rows"].as_u64().unwrap(),
            "{name}: change_rows"
        );

        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for b in &changes.batches {
            let ct = b
                .column_by_name(cdf::CHANGE_TYPE)
                .unwrap()
                .as_string::<i32>();
            let cv = b
                .column_by_name(cdf::COMMIT_VERSION)
                .unwrap()
                .as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                *counts
                    .entry(format!("{}:{}", cv.value(i), ct.value(i)))
                    .or_default() += 1;
            }
        }
        let want_counts: BTreeMap<String, u64> = expected["counts_by_version_and_type"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
            .collect();
        assert_eq!(
            counts, want_counts,
            "{name}: counts by version and change type"
        );

        let mut want_rows: Vec<String> = expected["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(canonical)
            .collect();
        want_rows.sort();
        assert_eq!(rows(&changes.batches), want_rows, "{name}: change rows");
        checked += 1;
    }
    assert_eq!(checked, 6);
}

#[tokio::test(flavor = "multi_thread")]
async fn versions_below_a_cleaned_up_log_are_an_error_not_empty() {
    let Some(dir) = fixtures() else { return };
    let u = Upstream::new(
        "checkpoint-cdf-table",
        dir.join("checkpoint-cdf-table").display().to_string(),
    );
    let table = cdf::open_latest(&u).await.unwrap();
    let err = cdf::read_changes(&cdf::session(), &u, &table, 0, 5)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("upstream 'checkpoint-cdf-table'") && msg.contains("versions 0 to 5"),
        "{msg}"
    );
}

/// The direct reader (the default) and deltalake's change-feed scan give the same rows,
/// commit timestamps included, for every fixture and every range of its readable
/// versions: partitioned tables, typed columns, in-commit timestamps, an append
/// without change files, and deletion vectors (left to deltalake's scan).
#[tokio::test(flavor = "multi_thread")]
async fn the_direct_reader_reads_every_fixture_range_like_deltalakes_scan() {
    use deltalake::arrow::util::display::array_value_to_string;
    use dlink_rt::cdf::{read_changes_with, Reader};
    let Some(dir) = fixtures() else { return };
    let ctx = cdf::session();
    let all_rows = |batches: &[RecordBatch]| {
        let mut out: Vec<Vec<String>> = batches
            .iter()
            .flat_map(|b| {
                (0..b.num_rows()).map(move |i| {
                    b.columns()
                        .iter()
                        .map(|c| array_value_to_string(c, i).expect("display"))
                        .collect()
                })
            })
            .collect();
        out.sort();
        out
    };
    let mut ranges = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.join("_delta_log").is_dir() {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let expected: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{name}.expected.json"))).unwrap(),
        )
        .unwrap();
        let u = Upstream::new(name.as_str(), path.display().to_string());
        let table = cdf::open_latest(&u).await.unwrap();
        let latest = cdf::version_of(&u, &table).unwrap();
        let first = expected["first_readable_version"].as_i64().unwrap();
        for s in first..=latest {
            for e in s..=latest {
                let read = |r| read_changes_with(&ctx, &u, &table, s, e, r);
                let direct = read(Reader::Auto).await;
                let scan = read(Reader::Deltalake).await;
                match (direct, scan) {
                    (Ok(d), Ok(r)) => {
                        assert_eq!(d.schema, r.schema, "{name} {s}..={e}");
                        assert_eq!(
                            all_rows(&d.batches),
                            all_rows(&r.batches),
                            "{name} {s}..={e}"
                        );
                    }
                    (Err(d), Err(r)) => {
                        assert_eq!(d.to_string(), r.to_string(), "{name} {s}..={e}")
                    }
                    (d, r) => panic!(
                        "{name} {s}..={e}: direct {:?} but scan {:?}",
                        d.err(),
                        r.err()
                    ),
                }
                ranges += 1;
            }
        }
    }
    assert!(ranges > 300, "only {ranges} ranges compared");
}
