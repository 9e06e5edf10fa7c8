//! `dlink-rt keys`: the distinct keys of a window of batches (by batch id or by commit
//! time) with their causes, in every format, read from only the window's files of the
//! change log. Checked against the link table read directly, on 100k-row tables.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::{dlink, emp_dept_at, json_emp_ids, link_keys, link_log, text};
use dlink_bench::examples::write_increment;
use serde_json::Value;

const ROWS: usize = 100_000;

/// `keys FILE ARGS...`: (stdout, stderr), asserting success.
fn keys(file: &Path, args: &[&str]) -> (String, String) {
    let o = dlink().arg("keys").arg(file).args(args).output().unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "keys {args:?} failed:\n{err}");
    (out, err)
}

/// The JSON lines of `keys --format json` as key -> (batches, upstreams).
fn parse(out: &str) -> BTreeMap<i64, (Vec<i64>, Vec<String>)> {
    out.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            let list = |f: &str| {
                v[f].as_array()
                    .unwrap_or_else(|| panic!("{f}: {l}"))
                    .clone()
            };
            (
                v["emp_id"].as_i64().unwrap(),
                (
                    list("dlink_batches")
                        .iter()
                        .map(|b| b.as_i64().unwrap())
                        .collect(),
                    list("dlink_upstreams")
                        .iter()
                        .map(|u| u.as_str().unwrap().to_string())
                        .collect(),
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_of_a_window_by_batch_and_by_time_read_only_its_files() {
    let (ws, tables, file) = emp_dept_at(ROWS).await;

    // Before the first run there is nothing to read: said so.
    let o = dlink()
        .arg("keys")
        .arg(&file)
        .args(["--since-batch", "0"])
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert!(
        !o.status.success() && err.contains("run the pipeline first"),
        "{err}"
    );

    ws.run_ok(&file);
    let first: i64 = link_log(&file)
        .await
        .iter()
        .map(|(_, b, _)| *b)
        .max()
        .unwrap();
    assert!(first >= 2, "versions 0..=4 in batches of 2 versions");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let between = chrono::Utc::now().to_rfc3339();
    write_increment(&tables, ROWS, 0, 6).await.unwrap();
    ws.run_ok(&file);
    let log = link_log(&file).await;
    let last: i64 = log.iter().map(|(_, b, _)| *b).max().unwrap();
    assert!(last > first + 1, "the increment took more than one batch");
    // Each batch with keys is one file of the change log.
    let files: BTreeSet<i64> = log.iter().map(|(_, b, _)| *b).collect();

    // The increment's batches, by batch id.
    let (out, err) = keys(
        &file,
        &["--since-batch", &first.to_string(), "--format", "json"],
    );
    let got = parse(&out);
    let want = link_keys(&file, first + 1..=last).await;
    assert_eq!(got.keys().copied().collect::<BTreeSet<_>>(), want);
    assert!(!want.is_empty());
    for (k, (batches, upstreams)) in &got {
        let mut b: Vec<i64> = log
            .iter()
            .filter(|(key, b, _)| key == k && *b > first)
            .map(|(_, b, _)| *b)
            .collect();
        b.sort();
        assert_eq!(batches, &b, "batches of key {k}");
        let mut u: Vec<String> = log
            .iter()
            .filter(|(key, b, _)| key == k && *b > first)
            .flat_map(|(_, _, u)| u.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        u.sort();
        assert_eq!(upstreams, &u, "upstreams of key {k}");
    }
    let new_files = files.iter().filter(|b| **b > first).count();
    assert!(
        err.contains(&format!("{new_files} of {} files read", files.len())),
        "only the window's files are read: {err}"
    );

    // By time: the batches committed after the first run are the same window.
    let (out, _) = keys(&file, &["--since", &between, "--format", "json"]);
    assert_eq!(json_emp_ids(&out), want);
    // Everything, by batch and by a duration.
    let all = link_keys(&file, 1..=last).await;
    let (out, _) = keys(&file, &["--since-batch", "0", "--format", "json"]);
    assert_eq!(json_emp_ids(&out), all);
    let (out, _) = keys(&file, &["--since", "1h", "--format", "json"]);
    assert_eq!(json_emp_ids(&out).len(), all.len());
    // Nothing after the last batch, and no file read for it.
    let (out, err) = keys(
        &file,
        &["--since-batch", &last.to_string(), "--format", "json"],
    );
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains(&format!("0 of {} files read", files.len())),
        "{err}"
    );

    // CSV: a header and one line per key; the table format names the columns.
    let (out, _) = keys(
        &file,
        &["--since-batch", &first.to_string(), "--format", "csv"],
    );
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("emp_id,dlink_upstreams,dlink_change_ts,dlink_batches")
    );
    assert_eq!(lines.count(), want.len());
    let (out, _) = keys(&file, &["--since-batch", &first.to_string()]);
    assert!(
        out.contains("dlink_batches") && out.contains("emp_id"),
        "{out}"
    );

    // Parquet to a file, read back with the parquet reader.
    let pq = ws.path().join("keys.parquet");
    let o = dlink()
        .arg("keys")
        .arg(&file)
        .args([
            "--since-batch",
            &first.to_string(),
            "--format",
            "parquet",
            "--out",
        ])
        .arg(&pq)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o).1);
    let reader = deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&pq).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, want.len());

    // Bad usage names what to give.
    for (args, says) in [
        (vec!["--since", "yesterday"], "RFC 3339"),
        (vec!["--since-batch", "0", "--format", "parquet"], "--out"),
    ] {
        let o = dlink().arg("keys").arg(&file).args(&args).output().unwrap();
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
