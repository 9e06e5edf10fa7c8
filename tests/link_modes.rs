//! The link table's two modes, read from the Delta log itself: the default change log
//! appends one file per batch whose statistics say which batch it holds (so "batches
//! after N" skips the rest) and never rewrites a file; the `latest` mode keeps one row
//! per key and its MERGE rewrites only the files that hold one of the batch's keys; a
//! table created before modes existed stays `latest`.

mod common;

use std::path::{Path, PathBuf};

use common::{dlink, link_log, link_rows, plugin, text, Workspace};
use dlink_rt::demo::{DemoTable, AFFILIATION, SPMASTER};
use serde_json::{json, Value};

/// The actions of every commit of the Delta table at `dir`, oldest first.
fn commits(dir: &Path) -> Vec<Vec<Value>> {
    let mut out = Vec::new();
    let mut v = 0;
    loop {
        let f = dir.join(format!("_delta_log/{v:020}.json"));
        let Ok(text) = std::fs::read_to_string(&f) else {
            return out;
        };
        out.push(
            text.lines()
                .map(|l| serde_json::from_str(l).expect("a JSON action"))
                .collect(),
        );
        v += 1;
    }
}

fn paths(actions: &[Value], kind: &str) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| a.get(kind)?.get("path")?.as_str().map(String::from))
        .collect()
}

/// The data files of the table's latest version.
fn live_files(dir: &Path) -> Vec<String> {
    let mut live = Vec::new();
    for c in commits(dir) {
        let removed = paths(&c, "remove");
        live.retain(|p| !removed.contains(p));
        live.extend(paths(&c, "add"));
    }
    live.sort();
    live
}

/// A workspace with spmaster holding `ids` and an empty affiliation table.
async fn workspace(ids: impl Iterator<Item = i64>) -> (Workspace, DemoTable) {
    let ws = Workspace::new();
    let rows: Vec<Value> = ids.map(|i| json!([i, format!("r{i}"), "DE"])).collect();
    let sp = DemoTable::create(&ws.table("spmaster"), &SPMASTER, Value::Array(rows))
        .await
        .unwrap();
    DemoTable::create(&ws.table("affiliation"), &AFFILIATION, json!([[1, 1, 1]]))
        .await
        .unwrap();
    (ws, sp)
}

fn pipeline(ws: &Workspace, mode: Option<&str>) -> PathBuf {
    let p = ws.pipeline(
        "sp",
        "sp_affiliation",
        &["spmaster", "affiliation"],
        &plugin("sp_affiliation"),
        "diasng_id",
        1,
    );
    if let Some(mode) = mode {
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(
            &p,
            text.replace("[link]\n", &format!("[link]\nmode = \"{mode}\"\n")),
        )
        .unwrap();
    }
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn change_log_appends_one_file_per_batch_with_its_batch_in_the_stats() {
    let (ws, mut sp) = workspace(1..=50).await;
    let p = pipeline(&ws, None);
    ws.run_ok(&p);
    sp.update("diasng_id <= 10", &[("country", "'FR'")])
        .await
        .unwrap();
    ws.run_ok(&p);
    sp.update("diasng_id <= 5", &[("country", "'JP'")])
        .await
        .unwrap();
    ws.run_ok(&p);

    let link = ws.path().join("links/sp");
    let log = commits(&link);
    let meta = log[0]
        .iter()
        .find_map(|a| a.get("metaData"))
        .expect("metaData in the first commit");
    assert!(
        meta["description"]
            .as_str()
            .is_some_and(|d| d.ends_with("dlink.link.mode=log")),
        "{meta}"
    );
    let mut files = 0;
    for c in &log {
        assert!(
            paths(c, "remove").is_empty(),
            "a change log never removes a file: {c:?}"
        );
        for a in c.iter().filter_map(|a| a.get("add")) {
            let stats: Value = serde_json::from_str(a["stats"].as_str().expect("stats")).unwrap();
            let (min, max) = (
                &stats["minValues"]["dlink_batch_id"],
                &stats["maxValues"]["dlink_batch_id"],
            );
            assert!(
                min.is_i64() && min == max,
                "one batch per file, in its stats: {stats}"
            );
            files += 1;
        }
    }
    // Batch 1: 50 keys (affiliation's sp_id 1 is one of them); batch 2: 10; batch 3: 5.
    assert_eq!(files, 3, "one file per batch");
    let rows = link_log(&p).await;
    assert_eq!(rows.len(), 50 + 10 + 5, "one row per (key, batch)");
    assert_eq!(
        rows.iter().filter(|(k, _, _)| *k == 3).count(),
        3,
        "key 3 in all three batches"
    );
    assert_eq!(link_rows(&p).await[&3].0, 3, "its last batch is 3");
}

#[tokio::test(flavor = "multi_thread")]
async fn latest_mode_rewrites_only_the_files_holding_the_batchs_keys() {
    // Odd ids at version 0, even ids at version 1: the link table's two files then hold
    // overlapping key ranges, so only the MERGE itself can tell them apart.
    let (ws, mut sp) = workspace((1..=199).step_by(2)).await;
    let p = pipeline(&ws, Some("latest"));
    ws.run_ok(&p);
    let link = ws.path().join("links/sp");
    let odd = live_files(&link);
    assert_eq!(odd.len(), 1);

    let even: Vec<Value> = (2..=200)
        .step_by(2)
        .map(|i| json!([i, format!("r{i}"), "DE"]))
        .collect();
    sp.insert(Value::Array(even)).await.unwrap();
    ws.run_ok(&p);
    let after_even = live_files(&link);
    assert!(
        after_even.contains(&odd[0]),
        "a batch of new keys rewrites no file"
    );
    assert_eq!(after_even.len(), 2);
    let even_file: Vec<&String> = after_even.iter().filter(|f| **f != odd[0]).collect();

    sp.update("diasng_id = 51", &[("country", "'FR'")])
        .await
        .unwrap();
    ws.run_ok(&p);
    let after_update = live_files(&link);
    assert!(
        !after_update.contains(&odd[0]),
        "the file holding key 51 is rewritten"
    );
    assert!(
        after_update.contains(even_file[0]),
        "the file without key 51 is not"
    );
    let rows = link_rows(&p).await;
    assert_eq!(rows.len(), 200, "one row per key");
    assert_eq!(rows[&51].0, 3);
    assert_eq!(link_log(&p).await.len(), 200, "no key twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_link_table_from_before_modes_stays_latest() {
    let (ws, mut sp) = workspace(1..=20).await;
    // The first run writes a `latest` table; removing its mode property makes it the
    // table dlink-rt 0.1 wrote (same columns, no dlink.link.mode).
    let p = pipeline(&ws, Some("latest"));
    ws.run_ok(&p);
    let link = ws.path().join("links/sp");
    let first = link.join("_delta_log/00000000000000000000.json");
    let log = std::fs::read_to_string(&first).unwrap();
    let old = log.replace(" dlink.link.mode=latest", "");
    assert_ne!(log, old, "the mode is recorded at creation");
    std::fs::write(&first, old).unwrap();
    let p = pipeline(&ws, None);

    sp.update("diasng_id <= 4", &[("country", "'FR'")])
        .await
        .unwrap();
    ws.run_ok(&p);
    assert_eq!(
        link_log(&p).await.len(),
        20,
        "merged: still one row per key"
    );
    assert_eq!(link_rows(&p).await[&4].0, 2);

    let wrong = pipeline(&ws, Some("log"));
    let o = dlink().arg("run").arg(&wrong).output().unwrap();
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        err.contains("mode = \"log\"") && err.contains("\"latest\" table"),
        "{err}"
    );
}
