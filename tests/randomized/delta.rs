//! Reading the real Delta tables with deltalake and DataFusion directly (not through
//! dlink-rt's reader): a table's rows, to check the model, and its change feed, to
//! show in failure messages what the writer recorded.

use std::path::Path;

use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Int64Type};
use deltalake::arrow::util::display::{ArrayFormatter, FormatOptions};
use deltalake::datafusion::physical_plan::collect;
use deltalake::DeltaTable;
use dlink_rt::demo::Col;

use super::model::{Cell, Row, Spec};

async fn open(path: &Path) -> DeltaTable {
    let url = deltalake::ensure_table_uri(path.to_string_lossy()).expect("table url");
    deltalake::open_table(url).await.expect("open table")
}

/// The rows of the table at `path` (latest version), sorted.
pub async fn table_rows(path: &Path, s: &Spec) -> Vec<Row> {
    let table = open(path).await;
    let ctx = dlink_rt::cdf::session();
    let df = ctx
        .read_table(table.table_provider().await.expect("provider"))
        .expect("read table");
    let mut rows = Vec::new();
    for b in df.collect().await.expect("collect table") {
        let cols: Vec<_> = s
            .cols
            .iter()
            .map(|(c, t)| {
                let to = match t {
                    Col::Long => DataType::Int64,
                    Col::Str => DataType::Utf8,
                };
                cast(b.column_by_name(c).expect("column"), &to).expect("cast")
            })
            .collect();
        for i in 0..b.num_rows() {
            let row = cols
                .iter()
                .zip(s.cols)
                .map(|(a, (_, t))| match t {
                    _ if a.is_null(i) => Cell::Null,
                    Col::Long => Cell::Long(a.as_primitive::<Int64Type>().value(i)),
                    Col::Str => Cell::Str(a.as_string::<i32>().value(i).to_string()),
                })
                .collect();
            rows.push(row);
        }
    }
    rows.sort();
    rows
}

/// The change feed of the table at `path` for versions `from..=to`, one sorted line
/// per change row (without `_commit_timestamp`), or the error met reading it.
pub async fn change_feed_text(path: &Path, from: i64, to: i64) -> String {
    if from > to {
        return "    (no new version)".into();
    }
    let table = open(path).await;
    let ctx = dlink_rt::cdf::session();
    let batches = async {
        let plan = table
            .scan_cdf()
            .with_starting_version(from as u64)
            .with_ending_version(to as u64)
            .build(&ctx.state(), None)
            .await
            .map_err(|e| e.to_string())?;
        collect(plan, ctx.task_ctx())
            .await
            .map_err(|e| e.to_string())
    };
    match batches.await {
        Ok(batches) => {
            let mut lines: Vec<String> = batches.iter().flat_map(batch_lines).collect();
            lines.sort();
            if lines.is_empty() {
                "    (no change rows)".into()
            } else {
                lines.join("\n")
            }
        }
        Err(e) => format!("    (cannot read the change feed: {e})"),
    }
}

/// `v<version> <change type>: col=value ...` per row.
fn batch_lines(b: &RecordBatch) -> Vec<String> {
    let options = FormatOptions::default().with_null("NULL");
    let formatter = |name: &str| {
        let a = b.column_by_name(name).expect("change feed column");
        ArrayFormatter::try_new(a.as_ref(), &options).expect("formatter")
    };
    let (version, change) = (formatter("_commit_version"), formatter("_change_type"));
    let data: Vec<(String, ArrayFormatter)> = b
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| !n.starts_with('_'))
        .map(|n| {
            let f = formatter(&n);
            (n, f)
        })
        .collect();
    (0..b.num_rows())
        .map(|i| {
            let cells: Vec<String> = data
                .iter()
                .map(|(n, f)| format!("{n}={}", f.value(i)))
                .collect();
            format!(
                "    v{:>3} {}: {}",
                version.value(i).to_string(),
                change.value(i),
                cells.join(" ")
            )
        })
        .collect()
}
