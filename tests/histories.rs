//! Change propagation under real histories: versions that cannot be read are found,
//! named and skipped only by an explicit `dlink-rt reset`; schema changes; row
//! budgets; lookup-only tables; two runs at once; and the seed's pitfalls.

mod common;
/// The seed's pitfalls, each as its own regression test.
#[path = "histories/pitfalls.rs"]
mod pitfalls;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{
    dlink, keys_of_batch, link_commit_metadata, link_rows, link_state, plugin, set, text, Workspace,
};
use dlink_rt::demo::{Col, DemoTable, DEPARTMENT, EMPLOYEE, SPMASTER};
use serde_json::{json, Value};

/// spmaster with rows 1..=3 (v0) and an empty-ish affiliation (v0).
async fn sp_tables(ws: &Workspace) -> (DemoTable, DemoTable) {
    common::sp_tables(
        ws,
        json!([[1, "a", "DE"], [2, "b", "FR"], [3, "c", "JP"]]),
        json!([[1, 10, 1]]),
    )
    .await
}

fn sp_pipeline(ws: &Workspace, batch_size: i64) -> PathBuf {
    ws.sp_pipeline(batch_size)
}

/// Adds top-level lines to a pipeline file (before its first table).
fn add_lines(file: &Path, lines: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    let at = text.find("\n[plugin]").unwrap();
    std::fs::write(file, format!("{}\n{lines}{}", &text[..at], &text[at..])).unwrap();
}

/// Adds lines to an upstream's entry in the workspace catalog.
fn catalog_lines(ws: &Workspace, upstream: &str, lines: &str) {
    let p = ws.path().join("upstreams.toml");
    let text = std::fs::read_to_string(&p).unwrap();
    let header = format!("[upstreams.{upstream}]\n");
    let text = text.replace(&header, &format!("{header}{lines}\n"));
    std::fs::write(p, text).unwrap();
}

/// Runs `dlink-rt run`, expecting exit code 1; returns stderr.
fn run_fails(file: &Path) -> String {
    let o = dlink().arg("run").arg(file).output().unwrap();
    let (out, err) = text(&o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "expected a failed run:\n{out}\n{err}"
    );
    err
}

fn reset(file: &Path, upstream: &str, to: &[&str]) -> String {
    let o = dlink()
        .arg("reset")
        .arg(file)
        .args(["--upstream", upstream])
        .args(to)
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "reset failed:\n{out}\n{err}");
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn cdf_disabled_midstream_stops_at_that_version_until_reset() {
    let ws = Workspace::new();
    let (mut sp, _) = sp_tables(&ws).await;
    sp.insert(json!([[4, "d", "US"]])).await.unwrap(); // v1
    sp.set_property("delta.enableChangeDataFeed", "false")
        .await
        .unwrap(); // v2
    sp.update("diasng_id = 1", &[("country", "'BR'")])
        .await
        .unwrap(); // v3: no change files
    let p = sp_pipeline(&ws, 1);

    let err = run_fails(&p);
    assert!(
        err.contains(
            "upstream 'spmaster': version 2 (_delta_log/00000000000000000002.json) cannot be read"
        ),
        "{err}"
    );
    assert!(err.contains("Change Data Feed is off"), "{err}");
    assert!(
        err.contains(&format!(
            "dlink-rt reset {} --upstream spmaster --to-version N",
            p.display()
        )),
        "{err}"
    );
    // Versions 0 and 1 were committed batch by batch; nothing of 2 or later.
    let (_, cp) = link_state(&p).await.unwrap();
    assert_eq!(cp.done["spmaster"], 1);
    assert_eq!(cp.batch_id, 2);

    // Turn it back on, and skip the versions that cannot be read.
    sp.set_property("delta.enableChangeDataFeed", "true")
        .await
        .unwrap(); // v4
    sp.insert(json!([[5, "e", "NG"]])).await.unwrap(); // v5
    let out = reset(&p, "spmaster", &["--to-version", "4"]);
    assert!(
        out.contains("will be read from version 4 (was version 2)"),
        "{out}"
    );
    let meta = link_commit_metadata(&p).await;
    let r = &meta[0]["reset"];
    assert_eq!(r["upstream"], "spmaster");
    assert_eq!(r["skipped_versions"], json!([2, 3]));
    assert!(
        r["by"].as_str().is_some_and(|s| !s.is_empty()) && r["at"].is_string(),
        "{r}"
    );

    ws.run_ok(&p);
    let (_, cp) = link_state(&p).await.unwrap();
    assert_eq!(cp.done["spmaster"], 5);
    assert_eq!(
        keys_of_batch(&p, cp.batch_id).await,
        set(&[5]),
        "the insert after the gap"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn vacuumed_files_are_named_not_read_as_empty() {
    let ws = Workspace::new();
    let (mut sp, _) = sp_tables(&ws).await;
    sp.update("diasng_id = 2", &[("name", "'b2'")])
        .await
        .unwrap(); // v1 rewrites the file
    sp.delete("diasng_id = 3").await.unwrap(); // v2
    let removed = sp.vacuum_all().await.unwrap();
    assert!(removed > 0, "vacuum removed nothing");
    // The reader knows the missing file by its error's type (an object store's
    // NotFound), not by its message.
    let u = dlink_rt::config::Upstream::new("spmaster", ws.table("spmaster").display().to_string());
    let t = dlink_rt::cdf::open_latest(&u).await.unwrap();
    let read = dlink_rt::cdf::read_changes(&dlink_rt::cdf::session(), &u, &t, 0, 2).await;
    assert!(
        matches!(
            &read,
            Err(dlink_rt::ReadError::Unreadable {
                version: 0,
                reason: dlink_rt::cdf::history::Unreadable::FilesMissing(_),
                ..
            })
        ),
        "{:?}",
        read.err()
    );
    let p = sp_pipeline(&ws, 10);
    let err = run_fails(&p);
    assert!(err.contains("upstream 'spmaster'"), "{err}");
    assert!(err.contains("removed (VACUUM)"), "{err}");
    assert!(err.contains("--to-latest"), "{err}");
    assert!(link_state(&p).await.is_none(), "nothing committed");

    reset(&p, "spmaster", &["--to-latest"]);
    ws.run_ok(&p);
    let rows = link_rows(&p).await;
    assert_eq!(
        rows.keys().copied().collect::<Vec<_>>(),
        vec![1],
        "only affiliation's key 1 after skipping spmaster"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cleaned_up_log_is_named() {
    let ws = Workspace::new();
    let (mut sp, _) = sp_tables(&ws).await;
    sp.insert(json!([[4, "d", "US"]])).await.unwrap(); // v1
    sp.insert(json!([[5, "e", "NG"]])).await.unwrap(); // v2
    sp.checkpoint_and_clean_log(&ws.table("spmaster"))
        .await
        .unwrap();
    let p = sp_pipeline(&ws, 10);
    let err = run_fails(&p);
    assert!(
        err.contains("upstream 'spmaster': version 0 (_delta_log/00000000000000000000.json) cannot be read: its log entry was removed"),
        "{err}"
    );

    // Resuming at the checkpoint's version reads its change rows.
    reset(&p, "spmaster", &["--to-version", "2"]);
    ws.run_ok(&p);
    assert_eq!(
        link_rows(&p).await.keys().copied().collect::<Vec<_>>(),
        vec![1, 5]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn new_table_with_lower_versions_is_named() {
    let ws = Workspace::new();
    let (mut sp, _) = sp_tables(&ws).await;
    sp.insert(json!([[4, "d", "US"]])).await.unwrap();
    sp.insert(json!([[5, "e", "NG"]])).await.unwrap();
    let p = sp_pipeline(&ws, 10);
    ws.run_ok(&p);

    // Someone drops the table and writes a new one at the same path.
    std::fs::remove_dir_all(ws.table("spmaster")).unwrap();
    DemoTable::create(&ws.table("spmaster"), &SPMASTER, json!([[7, "g", "DE"]]))
        .await
        .unwrap();
    let before = link_state(&p).await.unwrap();
    let err = run_fails(&p);
    assert!(
        err.contains("upstream 'spmaster': the checkpoint says version 2 is done but the table's latest version is 0"),
        "{err}"
    );
    assert!(err.contains("--upstream spmaster --to-version N"), "{err}");
    assert_eq!(link_state(&p).await.unwrap(), before);

    reset(&p, "spmaster", &["--to-version", "0"]);
    ws.run_ok(&p);
    let (_, cp) = link_state(&p).await.unwrap();
    assert_eq!(keys_of_batch(&p, cp.batch_id).await, set(&[7]));
}

/// The checkpoint records which table each upstream was (its `metaData.id`): a new
/// table at the path with *more* versions than were done is named too, not read on
/// from the old table's next version.
#[tokio::test(flavor = "multi_thread")]
async fn new_table_with_more_versions_is_named() {
    let ws = Workspace::new();
    let (mut sp, _) = sp_tables(&ws).await;
    sp.insert(json!([[4, "d", "US"]])).await.unwrap(); // v1
    let p = sp_pipeline(&ws, 10);
    ws.run_ok(&p);

    std::fs::remove_dir_all(ws.table("spmaster")).unwrap();
    let mut new = DemoTable::create(&ws.table("spmaster"), &SPMASTER, json!([[7, "g", "DE"]]))
        .await
        .unwrap();
    for id in 10..14 {
        new.insert(json!([[id, "x", "DE"]])).await.unwrap(); // v1..v4
    }
    let before = link_state(&p).await.unwrap();
    let err = run_fails(&p);
    assert!(
        err.contains(
            "upstream 'spmaster': the table was replaced: its table id (metaData.id) is now"
        ),
        "{err}"
    );
    assert!(err.contains("when it read up to version 1"), "{err}");
    assert!(err.contains("--upstream spmaster --to-version N"), "{err}");
    assert_eq!(link_state(&p).await.unwrap(), before, "nothing committed");

    // validate sees it as well.
    let o = dlink().arg("validate").arg(&p).output().unwrap();
    let (out, verr) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}\n{verr}");
    assert!(verr.contains("the table was replaced"), "{verr}");

    reset(&p, "spmaster", &["--to-version", "0"]);
    ws.run_ok(&p);
    let (_, cp) = link_state(&p).await.unwrap();
    assert_eq!(
        keys_of_batch(&p, cp.batch_id).await,
        set(&[7, 10, 11, 12, 13]),
        "the new table read from its version 0"
    );
    // And from then on its identity is the one checked: the next run is quiet.
    ws.run_ok(&p);
}

/// An upstream commit file that holds no action (truncated to 0 bytes, or lines that
/// are not Delta actions) is not a version without changes: the pipeline stops before
/// it, names table, version and file, and `validate` reports it.
#[tokio::test(flavor = "multi_thread")]
async fn an_empty_commit_file_stops_the_pipeline_before_its_version() {
    let ws = Workspace::new();
    let (mut sp, _) = sp_tables(&ws).await;
    let p = sp_pipeline(&ws, 10);
    ws.run_ok(&p);
    sp.insert(json!([[4, "d", "US"]])).await.unwrap(); // v1
    sp.insert(json!([[5, "e", "NG"]])).await.unwrap(); // v2
    sp.insert(json!([[6, "f", "BR"]])).await.unwrap(); // v3
    let entry = ws
        .table("spmaster")
        .join("_delta_log")
        .join(format!("{:020}.json", 2));
    let original = std::fs::read(&entry).unwrap();
    for (damaged, says) in [
        (&b""[..], "its log entry is empty (0 bytes"),
        (&b"{\"foo\":1}\n"[..], "holds no Delta action"),
    ] {
        std::fs::write(&entry, damaged).unwrap();
        let before = link_state(&p).await.unwrap();
        let err = run_fails(&p);
        assert!(
            err.contains("upstream 'spmaster': version 2 (_delta_log/00000000000000000002.json) cannot be read"),
            "{err}"
        );
        assert!(err.contains(says), "{err}");
        assert!(err.contains("--upstream spmaster --to-version N"), "{err}");
        assert_eq!(link_state(&p).await.unwrap(), before, "nothing committed");

        let o = dlink().arg("validate").arg(&p).output().unwrap();
        let (out, verr) = text(&o);
        assert_eq!(o.status.code(), Some(2), "validate fails:\n{out}\n{verr}");
        assert!(
            verr.contains("version 2 (_delta_log/00000000000000000002.json)"),
            "{verr}"
        );
    }
    // Repaired, the run reads version 2's keys with the others.
    std::fs::write(&entry, original).unwrap();
    ws.run_ok(&p);
    let (_, cp) = link_state(&p).await.unwrap();
    assert_eq!(keys_of_batch(&p, cp.batch_id).await, set(&[4, 5, 6]));
}

#[tokio::test(flavor = "multi_thread")]
async fn added_column_keeps_going() {
    let ws = Workspace::new();
    let (mut sp, _) = sp_tables(&ws).await;
    let p = sp_pipeline(&ws, 10);
    ws.run_ok(&p);
    let wider = [SPMASTER[0], SPMASTER[1], SPMASTER[2], ("email", Col::Str)];
    sp.insert_with_columns(&wider, json!([[8, "h", "FR", "h@x.org"]]))
        .await
        .unwrap();
    sp.update("diasng_id = 1", &[("email", "'a@x.org'")])
        .await
        .unwrap();
    ws.run_ok(&p);
    assert_eq!(keys_of_batch(&p, 2).await, set(&[1, 8]));
}

#[tokio::test(flavor = "multi_thread")]
async fn dropped_column_the_pipeline_needs_is_a_clear_error() {
    let ws = Workspace::new();
    let (mut sp, _) = sp_tables(&ws).await;
    catalog_lines(&ws, "spmaster", "columns = [\"diasng_id\", \"country\"]");
    let p = sp_pipeline(&ws, 10);
    ws.run_ok(&p);
    // The table is rewritten without `country`.
    sp.overwrite_with_columns(
        &[("diasng_id", Col::Long), ("name", Col::Str)],
        json!([[1, "a"]]),
    )
    .await
    .unwrap();
    let before = link_state(&p).await.unwrap();
    let err = run_fails(&p);
    assert!(err.contains("table 'spmaster'"), "{err}");
    assert!(
        err.contains("column 'country'") && err.contains("dropped or renamed"),
        "{err}"
    );
    assert_eq!(link_state(&p).await.unwrap(), before);
}

#[tokio::test(flavor = "multi_thread")]
async fn max_batch_rows_cuts_batches_at_whole_commits() {
    max_batch_rows_cut("").await;
}

/// The same cut when the ranges stream (`chunk_rows = 2`: every range is over one
/// call): the rows per commit come from the log's statistics or the files' footers,
/// not from rows read, and each batch counts the rows it streamed.
#[tokio::test(flavor = "multi_thread")]
async fn max_batch_rows_cuts_streamed_batches_at_whole_commits_too() {
    max_batch_rows_cut("chunk_rows = 2\n").await;
}

async fn max_batch_rows_cut(extra: &str) {
    let ws = Workspace::new();
    let (mut sp, _) = sp_tables(&ws).await; // v0: 3 rows
    for i in 0..4 {
        let rows: Vec<Value> = (0..4)
            .map(|j| json!([100 + i * 10 + j, "x", "DE"]))
            .collect();
        sp.insert(Value::Array(rows)).await.unwrap(); // v1..v4: 4 rows each
    }
    let p = sp_pipeline(&ws, 100);
    add_lines(&p, &format!("max_batch_rows = 9\n{extra}"));
    let out = ws.run_ok(&p);
    let lines: Vec<&str> = out.lines().collect();
    // Budget 9, filled upstream by upstream at whole commits:
    // batch 1: spmaster v0 (3) + v1 (4) = 7, v2 would make 11; affiliation v0 (1) fits: 8.
    // batch 2: spmaster v2 (4) + v3 (4) = 8.   batch 3: spmaster v4 (4).
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].contains("spmaster v0..1, affiliation v0 | 8 change rows"),
        "{out}"
    );
    assert!(
        lines[1].contains("spmaster v2..3, affiliation - | 8 change rows"),
        "{out}"
    );
    assert!(
        lines[2].contains("spmaster v4, affiliation - | 4 change rows"),
        "{out}"
    );
}

/// A range that streams (`chunk_rows = 2`) with a data file that cannot be decoded:
/// the batch fails naming the table, the versions and the file, and nothing is
/// committed (the rows streamed before it were derived, but their keys go nowhere).
#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_file_that_cannot_be_read_fails_the_batch_naming_it() {
    let err = streamed_file_cut_in_half(None).await;
    assert!(!err.is_empty());
}

/// The same in a SQL pipeline, whose query reads the streamed rows as they come: the
/// error is the read's (table, versions, file), not the query's.
#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_file_that_a_query_cannot_read_fails_the_batch_naming_it() {
    let err = streamed_file_cut_in_half(Some(
        "SELECT diasng_id, 'spmaster' AS _upstream FROM spmaster_changes",
    ))
    .await;
    assert!(!err.contains("the query failed"), "{err}");
}

/// A streamed range (`chunk_rows = 2`) of sp_affiliation (or of `query` over the same
/// tables) whose file added at v2 is cut in half: the run fails naming the table, the
/// file and the version, and commits nothing. Returns its error output.
async fn streamed_file_cut_in_half(query: Option<&str>) -> String {
    let ws = Workspace::new();
    let (mut sp, _) = sp_tables(&ws).await;
    for i in 0..3 {
        let rows: Vec<Value> = (0..4)
            .map(|j| json!([200 + i * 10 + j, "x", "DE"]))
            .collect();
        sp.insert(Value::Array(rows)).await.unwrap();
    }
    let p = sp_pipeline(&ws, 100);
    add_lines(&p, "chunk_rows = 2\n");
    if let Some(q) = query {
        common::to_sql(&p, q);
    }
    // The file v2 added, cut in half.
    let log = std::fs::read_to_string(
        ws.table("spmaster")
            .join("_delta_log/00000000000000000002.json"),
    )
    .unwrap();
    let added: Value = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| v.get("add").cloned())
        .expect("v2 adds a file");
    let name = added["path"].as_str().unwrap().to_string();
    let file = ws.table("spmaster").join(&name);
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let err = run_fails(&p);
    assert!(err.contains("'spmaster'"), "{err}");
    assert!(err.contains(&name) && err.contains("version 2"), "{err}");
    assert!(
        link_state(&p).await.is_none(),
        "nothing is committed: {err}"
    );
    err
}

#[tokio::test(flavor = "multi_thread")]
async fn lookup_only_table_is_read_at_the_batch_start_and_recorded() {
    let ws = Workspace::new();
    let emp_cols = EMPLOYEE;
    let dept_cols = DEPARTMENT;
    let mut emp = DemoTable::create(
        &ws.table("employee"),
        &emp_cols,
        json!([[1, "e1", 1, 10], [2, "e2", 2, 20]]),
    )
    .await
    .unwrap();
    let mut dept = DemoTable::create(
        &ws.table("department"),
        &dept_cols,
        json!([[1, 10, "A"], [2, 20, "B"]]),
    )
    .await
    .unwrap();
    let p = ws.pipeline(
        "lo",
        "dept_members",
        &["department"],
        &plugin("lookup_only_table"),
        "emp_id",
        10,
    );
    add_lines(&p, "lookups = [\"employee\"]\n");
    ws.run_ok(&p);
    assert_eq!(keys_of_batch(&p, 1).await, set(&[1, 2]));

    // The employee table moves on without the pipeline watching it ...
    emp.insert(json!([[3, "e3", 1, 10]])).await.unwrap();
    assert!(
        ws.run_ok(&p).contains("up to date"),
        "a lookup table's commits do not trigger batches"
    );
    // ... and the next department change sees its latest version.
    dept.update("dept_id = 1", &[("dept_name", "'A2'")])
        .await
        .unwrap();
    ws.run_ok(&p);
    assert_eq!(keys_of_batch(&p, 2).await, set(&[1, 3]));
    let meta = link_commit_metadata(&p).await;
    assert_eq!(
        meta[0]["lookups"]["employee"],
        json!(1),
        "pinned lookup version recorded: {}",
        meta[0]
    );
}

/// Two runs of the same pipeline at once: each batch is committed once, the link
/// table equals an uninterrupted run's.
#[tokio::test(flavor = "multi_thread")]
async fn two_runs_at_once_commit_each_batch_once() {
    let ws = Workspace::new();
    let (mut sp, mut aff) = sp_tables(&ws).await;
    for i in 0..6 {
        sp.insert(json!([[10 + i, "n", "DE"]])).await.unwrap();
        aff.update(
            &format!("sp_id = {}", if i % 2 == 0 { 1 } else { 10 + i - 1 }),
            &[("sp_id", &format!("{}", 10 + i))],
        )
        .await
        .unwrap();
    }
    let reference = ws.pipeline(
        "ref",
        "sp_affiliation",
        &["spmaster", "affiliation"],
        &plugin("sp_affiliation"),
        "diasng_id",
        1,
    );
    ws.run_ok(&reference);
    let want = link_rows(&reference).await;
    let (_, want_cp) = link_state(&reference).await.unwrap();

    for round in 0..2 {
        let p = ws.pipeline(
            &format!("race{round}"),
            "sp_affiliation",
            &["spmaster", "affiliation"],
            &plugin("sp_affiliation"),
            "diasng_id",
            1,
        );
        let children: Vec<_> = (0..2)
            .map(|_| {
                dlink()
                    .arg("run")
                    .arg(&p)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut printed = 0;
        for c in children {
            let o = c.wait_with_output().unwrap();
            let (out, err) = text(&o);
            assert!(o.status.success(), "round {round}:\n{out}\n{err}");
            let mine = out
                .lines()
                .filter(|l| l.starts_with("sp_affiliation batch "))
                .count();
            let lost = err.matches("was committed by another run").count()
                + out.matches("another run").count();
            eprintln!("round {round}: a run committed {mine} batches and lost {lost} races");
            printed += mine;
        }
        assert_eq!(link_rows(&p).await, want, "round {round}");
        let (_, cp) = link_state(&p).await.unwrap();
        assert_eq!(cp, want_cp, "round {round}");
        let mut ids: Vec<i64> = link_commit_metadata(&p)
            .await
            .iter()
            .filter_map(|m| m["batch_id"].as_i64())
            .collect();
        ids.sort();
        assert_eq!(
            ids,
            (1..=want_cp.batch_id).collect::<Vec<_>>(),
            "each batch committed once (round {round})"
        );
        assert_eq!(
            printed as i64, want_cp.batch_id,
            "each batch reported by exactly one run (round {round})"
        );
    }
}

/// An upstream that cannot be opened (an empty log folder, a log entry of garbage) is
/// one error naming it, with no panic printed after it (the Delta kernel's executor
/// used to panic when the runtime its reads ran on went away at the end of the run).
#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_that_cannot_be_opened_is_one_error_without_a_panic() {
    let ws = Workspace::new();
    sp_tables(&ws).await;
    let p = sp_pipeline(&ws, 10);
    let log = ws.table("spmaster").join("_delta_log");
    std::fs::write(log.join(format!("{:020}.json", 0)), "garbage\n").unwrap();
    for _ in 0..3 {
        let err = run_fails(&p);
        assert!(err.contains("table 'spmaster'"), "{err}");
        assert!(!err.contains("panicked at"), "{err}");
    }
    std::fs::remove_dir_all(&log).unwrap();
    std::fs::create_dir(&log).unwrap();
    for _ in 0..3 {
        let err = run_fails(&p);
        assert!(err.contains("table 'spmaster'"), "{err}");
        assert!(!err.contains("panicked at"), "{err}");
    }
}

/// At the size users run (100k-row tables, the bench's 4-commit history): an empty
/// commit file inside the next window stops the run at that version with nothing
/// committed past the checkpoint; restored, the run catches up.
#[tokio::test(flavor = "multi_thread")]
async fn an_empty_commit_file_at_100k_rows_stops_at_its_version() {
    let (ws, tables, file) = common::emp_dept_at(100_000).await;
    let o = dlink()
        .arg("run")
        .arg(&file)
        .args(["--max-batches", "1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o).1);
    let before = link_state(&file).await.unwrap();
    let done = before.1.done["employee"];
    let log = tables.join("employee/_delta_log");
    let latest = std::fs::read_dir(&log)
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".json")?.parse::<i64>().ok()
        })
        .max()
        .unwrap();
    assert!(latest > done + 1, "versions {done}..{latest} left to read");
    let damaged = done + 2;
    let entry = log.join(format!("{damaged:020}.json"));
    let original = std::fs::read(&entry).unwrap();
    std::fs::write(&entry, b"").unwrap();
    let err = run_fails(&file);
    assert!(
        err.contains(&format!(
            "upstream 'employee': version {damaged} (_delta_log/{damaged:020}.json) cannot be read: its log entry is empty"
        )),
        "{err}"
    );
    // Batches before the damaged version may commit; none reads past it.
    let (_, cp) = link_state(&file).await.unwrap();
    assert!(cp.done["employee"] < damaged, "{cp:?}");
    std::fs::write(&entry, original).unwrap();
    ws.run_ok(&file);
    assert_eq!(link_state(&file).await.unwrap().1.done["employee"], latest);
}
