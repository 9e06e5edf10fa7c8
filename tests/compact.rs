//! Retention and compaction (`[link] retain`, `dlink-rt compact`, `compact_every`): no
//! batch a registered consumer has not acknowledged is removed; removed batches are
//! reported to a reader that starts before them, never skipped silently; OPTIMIZE and
//! VACUUM leave a table every reader reads; and a compaction killed at any point while
//! the pipeline commits loses nothing. On 100k-row tables; the link tables are read
//! directly and compared with a twin workspace that never compacts.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::{dlink, emp_dept_at, json_emp_ids, link_log, link_state, text, Workspace};
use dlink_bench::examples::write_increment;
use serde_json::Value;

const ROWS: usize = 100_000;

/// Appends lines to the pipeline file's `[link]` section (its last).
fn add_to_link(file: &Path, lines: &str) {
    let mut t = std::fs::read_to_string(file).unwrap();
    t.push_str(lines);
    std::fs::write(file, t).unwrap();
}

fn compact_json(file: &Path) -> Value {
    let o = dlink()
        .arg("compact")
        .arg(file)
        .arg("--json")
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "compact failed:\n{out}\n{err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn ack(file: &Path, name: &str, to: &[&str]) -> Output {
    dlink()
        .arg("ack")
        .arg(file)
        .args(["--consumer", name])
        .args(to)
        .output()
        .unwrap()
}

fn keys(file: &Path, args: &[&str]) -> Output {
    dlink()
        .arg("keys")
        .arg(file)
        .args(args)
        .args(["--format", "json"])
        .output()
        .unwrap()
}

/// Rows of the link table as sorted (key, batch, upstreams).
async fn rows(file: &Path) -> Vec<(i64, i64, Vec<String>)> {
    let mut r = link_log(file).await;
    r.sort();
    r
}

/// Parquet files on disk in a link table's folder.
fn parquet_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "parquet"))
        .count()
}

/// Sets the link table's `delta.deletedFileRetentionDuration`.
async fn set_file_retention(link: &Path, interval: &str) {
    let url = deltalake::ensure_table_uri(link.to_str().unwrap()).unwrap();
    let t = deltalake::open_table(url).await.unwrap();
    t.set_tbl_properties()
        .with_properties(
            [(
                "delta.deletedFileRetentionDuration".to_string(),
                interval.to_string(),
            )]
            .into(),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_waits_for_every_registered_consumer_then_removes_and_vacuums() {
    let (ws, tables, file) = emp_dept_at(ROWS).await;
    add_to_link(&file, "consumers = [\"a\", \"b\"]\nretain = 1\n");
    ws.run_ok(&file);
    write_increment(&tables, ROWS, 0, 4).await.unwrap();
    ws.run_ok(&file);
    let newest = link_state(&file).await.unwrap().1.batch_id;
    assert!(
        newest >= 4,
        "the history and increment make several batches"
    );
    let link = ws.path().join("links/emp_dept");
    set_file_retention(&link, "interval 0 seconds").await;
    let before = rows(&file).await;
    assert!(before.iter().any(|(_, b, _)| *b == 1));

    // a is done with everything, b with nothing: retention removes nothing.
    assert!(ack(&file, "a", &["--batch", &newest.to_string()])
        .status
        .success());
    let r = compact_json(&file);
    assert!(r["removed_batches"].is_null(), "{r}");
    assert_eq!(r["held_back_by"], serde_json::json!([["b", 0]]), "{r}");
    assert_eq!(
        rows(&file).await,
        before,
        "nothing removed, nothing duplicated"
    );
    assert!(r["optimized_files_removed"].as_u64().unwrap() >= 2, "{r}");
    assert_eq!(
        r["files_after"], 1,
        "one file per batch merged into one: {r}"
    );

    // b acknowledges batch 2: batches 1..=2 go (retain = 1 would allow newest - 1).
    assert!(ack(&file, "b", &["--batch", "2"]).status.success());
    let r = compact_json(&file);
    assert_eq!(r["removed_batches"], serde_json::json!([1, 2]), "{r}");
    assert_eq!(r["held_back_by"], serde_json::json!([["b", 2]]), "{r}");
    let kept: Vec<_> = before.iter().filter(|(_, b, _)| *b > 2).cloned().collect();
    assert_eq!(rows(&file).await, kept);
    assert!(r["vacuumed_files"].as_u64().unwrap() >= 1, "{r}");
    let snapshot_files = r["files_after"].as_u64().unwrap() as usize;
    assert_eq!(
        parquet_files(&link),
        snapshot_files,
        "vacuumed: only the files of the snapshot are left"
    );

    // The commit says what was removed.
    let removal = common::link_commit_metadata(&file)
        .await
        .iter()
        .find_map(|m| m.get("compact")?.get("retention").cloned())
        .expect("a commit records the retention");
    assert_eq!(removal["from_batch"], 1);
    assert_eq!(removal["through_batch"], 2);

    // A consumer that was never registered fell behind: a named error and the way out,
    // never a silent gap.
    let o = keys(&file, &["--consumer", "late"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("batches 1 to 2") && err.contains("oldest batch kept is 3"),
        "{err}"
    );
    assert!(err.contains("--consumer late --to-earliest"), "{err}");
    let o = keys(&file, &["--since-batch", "0"]);
    assert!(!o.status.success() && text(&o).1.contains("--since-batch 2"));
    let o = ack(&file, "late", &["--to-earliest"]);
    assert!(o.status.success(), "{}", text(&o).1);
    let o = keys(&file, &["--consumer", "late"]);
    assert!(o.status.success(), "{}", text(&o).1);
    let expected: BTreeSet<i64> = kept.iter().map(|(k, _, _)| *k).collect();
    assert_eq!(json_emp_ids(&text(&o).0), expected);
    let o = dlink().arg("consumers").arg(&file).output().unwrap();
    assert!(o.status.success());

    // The pipeline goes on after compaction, and readers read its new batch.
    write_increment(&tables, ROWS, 1, 2).await.unwrap();
    ws.run_ok(&file);
    let last = link_state(&file).await.unwrap().1.batch_id;
    assert!(last > newest);
    let o = keys(&file, &["--consumer", "a"]);
    assert!(o.status.success(), "{}", text(&o).1);
    let fresh: BTreeSet<i64> = rows(&file)
        .await
        .into_iter()
        .filter(|(_, b, _)| *b > newest)
        .map(|(k, _, _)| k)
        .collect();
    assert!(!fresh.is_empty());
    assert_eq!(json_emp_ids(&text(&o).0), fresh);
}

/// Copies a workspace (its tables and link tables use relative paths).
fn twin(ws: &Workspace) -> Workspace {
    let copy = Workspace::new();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(ws.path().join("tables"))
        .arg(ws.path().join("links"))
        .arg(copy.path())
        .status()
        .unwrap();
    assert!(status.success());
    copy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compaction_killed_while_the_pipeline_commits_loses_nothing() {
    let (ws, tables, file) = emp_dept_at(ROWS).await;
    add_to_link(&file, "consumers = [\"a\"]\nretain = 2\n");
    ws.run_ok(&file);
    // Many small batches: one file each.
    for round in 0..3 {
        write_increment(&tables, ROWS, round, 4).await.unwrap();
        ws.run_ok(&file);
    }
    // The twin gets the same increments and runs, and is never compacted.
    let other = twin(&ws);
    let other_file = other.path().join("emp_dept.toml");
    std::fs::copy(&file, &other_file).unwrap();
    let other_tables = other.path().join("tables");
    let mut acked = 0;
    for (round, kill_after_ms) in [(3usize, 30u64), (4, 120), (5, 300), (6, 700), (7, 1500)] {
        // Consumer a moves on, so that each compaction has batches to remove.
        let newest = link_state(&file).await.unwrap().1.batch_id;
        acked = newest - 2;
        assert!(ack(&file, "a", &["--batch", &acked.to_string()])
            .status
            .success());
        write_increment(&tables, ROWS, round, 3).await.unwrap();
        write_increment(&other_tables, ROWS, round, 3)
            .await
            .unwrap();
        // The compaction and the pipeline's batches at the same time; the compaction
        // is killed wherever it is.
        let mut compactor = dlink().arg("compact").arg(&file).spawn().unwrap();
        let run = dlink().arg("run").arg(&file).output_async();
        std::thread::sleep(Duration::from_millis(kill_after_ms));
        let _ = compactor.kill();
        let _ = compactor.wait();
        let run = run.wait_with_output().unwrap();
        assert!(run.status.success(), "{}", text(&run).1);
        other.run_ok(&other_file);
        // Whatever the kill interrupted, the table reads, and it holds exactly the
        // twin's rows after the retention mark.
        let removed =
            dlink_rt::consumer::removed_through(&dlink_rt::config::Pipeline::load(&file).unwrap())
                .await
                .unwrap();
        assert!(removed <= acked, "never past consumer a's position");
        let expected: Vec<_> = rows(&other_file)
            .await
            .into_iter()
            .filter(|(_, b, _)| *b > removed)
            .collect();
        assert_eq!(
            rows(&file).await,
            expected,
            "round {round}, removed through {removed}"
        );
        assert_eq!(
            link_state(&file).await.unwrap().1,
            link_state(&other_file).await.unwrap().1,
            "same checkpoint"
        );
    }
    // A compaction left to finish completes what the killed ones began.
    let r = compact_json(&file);
    let removed = r["removed_through"].as_i64().unwrap();
    assert_eq!(removed, acked, "{r}");
    let expected: Vec<_> = rows(&other_file)
        .await
        .into_iter()
        .filter(|(_, b, _)| *b > removed)
        .collect();
    assert_eq!(rows(&file).await, expected);
    assert!(r["files_after"].as_u64().unwrap() <= 2, "{r}");
}

/// Starting a command without waiting for it.
trait Spawned {
    fn output_async(&mut self) -> std::process::Child;
}

impl Spawned for std::process::Command {
    fn output_async(&mut self) -> std::process::Child {
        self.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_compacts_on_its_schedule() {
    let (_ws, tables, file) = emp_dept_at(ROWS).await;
    add_to_link(&file, "retain = 1\ncompact_every = \"1s\"\n");
    let mut follow = dlink()
        .arg("run")
        .arg(&file)
        .args(["--follow", "--interval", "100ms"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let p = dlink_rt::config::Pipeline::load(&file).unwrap();
    let mut removed = 0;
    for round in 0..30 {
        if round < 3 {
            write_increment(&tables, ROWS, round, 2).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        removed = dlink_rt::consumer::removed_through(&p).await.unwrap_or(0);
        let newest = link_state(&file).await.map_or(0, |s| s.1.batch_id);
        if removed > 0 && removed == newest - 1 && round >= 3 {
            break;
        }
    }
    let _ = follow.kill();
    let o = follow.wait_with_output().unwrap();
    let newest = link_state(&file).await.unwrap().1.batch_id;
    assert_eq!(
        removed,
        newest - 1,
        "follow kept only the newest batch:\n{}",
        text(&o).1
    );
    let batches: BTreeSet<i64> = link_log(&file).await.iter().map(|(_, b, _)| *b).collect();
    assert!(batches.iter().all(|b| *b == newest), "{batches:?}");
}

/// Data files of a link table's snapshot.
async fn snapshot_files(link: &Path) -> usize {
    let url = deltalake::ensure_table_uri(link.to_str().unwrap()).unwrap();
    let t = deltalake::open_table(url).await.unwrap();
    t.snapshot().unwrap().log_data().num_files()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_merges_the_small_files_of_the_change_log() {
    let (ws, tables, file) = emp_dept_at(ROWS).await;
    let plain = ws.path().join("plain.toml");
    std::fs::write(
        &plain,
        std::fs::read_to_string(&file)
            .unwrap()
            .replace("links/emp_dept", "links/plain")
            .replace("name = \"emp_dept\"", "name = \"plain\"")
            + "merge_small_files = 0\n",
    )
    .unwrap();
    add_to_link(&file, "merge_small_files = 3\n");
    for round in 0..3 {
        ws.run_ok(&file);
        ws.run_ok(&plain);
        write_increment(&tables, ROWS, round, 3).await.unwrap();
    }
    ws.run_ok(&file);
    ws.run_ok(&plain);
    let batches = link_state(&file).await.unwrap().1.batch_id;
    assert!(batches >= 6, "{batches} batches");
    // The same keys in the same batches; one file per batch without the merge, at
    // most a few with it.
    assert_eq!(rows(&file).await, rows(&plain).await);
    let unmerged = snapshot_files(&ws.path().join("links/plain")).await;
    let merged = snapshot_files(&ws.path().join("links/emp_dept")).await;
    assert!(unmerged >= 6, "{unmerged}");
    assert!(merged < 3 + 1, "{merged} files with merge_small_files = 3");
    // Readers still read the newest batch alone from a merged log.
    let o = keys(&file, &["--since-batch", &(batches - 1).to_string()]);
    assert!(o.status.success(), "{}", text(&o).1);
    let newest: BTreeSet<i64> = rows(&plain)
        .await
        .into_iter()
        .filter(|(_, b, _)| *b == batches)
        .map(|(k, _, _)| k)
        .collect();
    assert_eq!(json_emp_ids(&text(&o).0), newest);
}
