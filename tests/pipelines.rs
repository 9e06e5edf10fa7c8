//! The four example pipelines, batch by batch, on real Delta tables written with
//! deltalake and the real plugins from plugins/. Expected keys are written by hand.

mod common;

use common::{dlink, keys_of_batch, link_rows, link_state, plugin, set, text, Workspace};
use dlink_rt::demo::{
    DemoTable, AFFILIATION, AUTHOR_PUBLICATION_LINK as LINKS, DEPARTMENT, EMPLOYEE, PUBLICATIONS,
    SPMASTER,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn sp_affiliation_batch_by_batch() {
    let ws = Workspace::new();
    let mut sp = DemoTable::create(
        &ws.table("spmaster"),
        &SPMASTER,
        json!([
            [1, "Ada", "DE"],
            [2, "Bert", "FR"],
            [3, "Chen", "JP"],
            [4, "Dana", "US"],
            [5, "Emil", "NG"]
        ]),
    )
    .await
    .unwrap();
    let mut aff = DemoTable::create(
        &ws.table("affiliation"),
        &AFFILIATION,
        json!([[1, 100, 1], [2, 100, 1], [3, 200, 1], [3, 201, 2]]),
    )
    .await
    .unwrap();
    let p = ws.sp_pipeline(100);

    ws.run_ok(&p);
    assert_eq!(
        keys_of_batch(&p, 1).await,
        set(&[1, 2, 3, 4, 5]),
        "initial load"
    );
    let rows = link_rows(&p).await;
    assert_eq!(
        rows[&3].1,
        vec!["affiliation".to_string(), "spmaster".into()],
        "3 has both causes"
    );
    assert_eq!(
        rows[&5].1,
        vec!["spmaster".to_string()],
        "5 has no affiliation"
    );

    sp.insert(json!([[6, "Fatima", "BR"]])).await.unwrap();
    ws.run_ok(&p);
    assert_eq!(keys_of_batch(&p, 2).await, set(&[6]), "insert");

    sp.update("diasng_id = 2", &[("name", "'Bert B.'")])
        .await
        .unwrap();
    ws.run_ok(&p);
    assert_eq!(keys_of_batch(&p, 3).await, set(&[2]), "payload update");

    // The join column moves from researcher 3 to 4: both are affected.
    aff.update("sp_id = 3 AND rank = 2", &[("sp_id", "4")])
        .await
        .unwrap();
    ws.run_ok(&p);
    assert_eq!(
        keys_of_batch(&p, 4).await,
        set(&[3, 4]),
        "join-column update: old and new side"
    );

    aff.delete("sp_id = 1").await.unwrap();
    ws.run_ok(&p);
    assert_eq!(
        keys_of_batch(&p, 5).await,
        set(&[1]),
        "delete on the affiliation side only"
    );

    sp.upsert(
        &["diasng_id"],
        json!([[5, "Emil E.", "NG"], [7, "Goran", "DE"]]),
    )
    .await
    .unwrap();
    ws.run_ok(&p);
    assert_eq!(
        keys_of_batch(&p, 6).await,
        set(&[5, 7]),
        "merge: update + insert"
    );

    // Nothing new: nothing committed.
    let before = link_state(&p).await.unwrap();
    let out = ws.run_ok(&p);
    assert!(out.contains("up to date"), "{out}");
    assert_eq!(
        link_state(&p).await.unwrap(),
        before,
        "a run with no new commits commits nothing"
    );
    assert_eq!(before.1.batch_id, 6);
    assert_eq!(before.1.done["spmaster"], 3);
    assert_eq!(before.1.done["affiliation"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn emp_dept_follows_department_changes_through_lookup() {
    let ws = Workspace::new();
    let mut dept = DemoTable::create(
        &ws.table("department"),
        &DEPARTMENT,
        json!([[1, 10, "Research"], [2, 20, "Sales"]]),
    )
    .await
    .unwrap();
    let mut emp = DemoTable::create(
        &ws.table("employee"),
        &EMPLOYEE,
        json!([
            [1, "e1", 1, 10],
            [2, "e2", 1, 10],
            [3, "e3", 2, 20],
            [4, "e4", 1, 10]
        ]),
    )
    .await
    .unwrap();
    let p = ws.pipeline(
        "ed",
        "emp_dept",
        &["employee", "department"],
        &plugin("emp_dept"),
        "emp_id",
        100,
    );

    ws.run_ok(&p);
    assert_eq!(keys_of_batch(&p, 1).await, set(&[1, 2, 3, 4]));

    // A change to a department alone affects every employee of that department.
    dept.update("dept_id = 2", &[("dept_name", "'Sales & Marketing'")])
        .await
        .unwrap();
    ws.run_ok(&p);
    assert_eq!(
        keys_of_batch(&p, 2).await,
        set(&[3]),
        "department-only change"
    );
    assert_eq!(link_rows(&p).await[&3].1, vec!["department".to_string()]);

    // An employee who moves is affected.
    emp.update("emp_id = 1", &[("dept_id", "2"), ("manager_id", "20")])
        .await
        .unwrap();
    ws.run_ok(&p);
    assert_eq!(keys_of_batch(&p, 3).await, set(&[1]), "employee moves");

    // Department 2 now has employees 1 and 3.
    dept.update("dept_id = 2", &[("manager_id", "21")])
        .await
        .unwrap();
    ws.run_ok(&p);
    assert_eq!(
        keys_of_batch(&p, 4).await,
        set(&[1, 3]),
        "lookup reads the pinned version"
    );

    emp.delete("emp_id = 2").await.unwrap();
    ws.run_ok(&p);
    assert_eq!(keys_of_batch(&p, 5).await, set(&[2]), "delete");

    // Merge on department: 1 updated (employee 4 is its only member now), 3 inserted (no one).
    dept.upsert(&["dept_id"], json!([[1, 11, "Research"], [3, 30, "Legal"]]))
        .await
        .unwrap();
    ws.run_ok(&p);
    assert_eq!(keys_of_batch(&p, 6).await, set(&[4]), "merge");

    // A department nobody works in: the batch commits with no key, the checkpoint moves.
    dept.update("dept_id = 3", &[("dept_name", "'Legal & Compliance'")])
        .await
        .unwrap();
    let out = ws.run_ok(&p);
    assert!(out.contains("batch 7") && out.contains("| 0 keys"), "{out}");
    let (_, cp) = link_state(&p).await.unwrap();
    assert_eq!(cp.batch_id, 7);
    assert_eq!(cp.done["department"], 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn pub_authors_and_author_pubs_share_upstreams() {
    let ws = Workspace::new();
    let mut pubs = DemoTable::create(
        &ws.table("publications"),
        &PUBLICATIONS,
        json!([[1, "t1", 2020], [2, "t2", 2021], [3, "t3", 2022]]),
    )
    .await
    .unwrap();
    let mut links = DemoTable::create(
        &ws.table("author_publication_link"),
        &LINKS,
        json!([[1, 100], [1, 101], [2, 101], [3, 102]]),
    )
    .await
    .unwrap();
    let ups = ["publications", "author_publication_link"];
    let pa = ws.pipeline(
        "pa",
        "pub_authors",
        &ups,
        &plugin("pub_authors"),
        "pub_id",
        100,
    );
    let ap = ws.pipeline(
        "ap",
        "author_pubs",
        &ups,
        &plugin("author_pubs"),
        "uid",
        100,
    );
    let run_both = |batch: i64| {
        ws.run_ok(&pa);
        ws.run_ok(&ap);
        batch
    };

    let b = run_both(1);
    assert_eq!(keys_of_batch(&pa, b).await, set(&[1, 2, 3]));
    assert_eq!(keys_of_batch(&ap, b).await, set(&[100, 101, 102]));

    // A publication changes: its authors are found through the link table.
    pubs.update("pub_id = 1", &[("title", "'t1 revised'")])
        .await
        .unwrap();
    let b = run_both(2);
    assert_eq!(keys_of_batch(&pa, b).await, set(&[1]));
    assert_eq!(
        keys_of_batch(&ap, b).await,
        set(&[100, 101]),
        "publication-only change"
    );

    // A link's join column moves from publication 1 to 3: both publications.
    links.update("uid = 100", &[("pub_id", "3")]).await.unwrap();
    let b = run_both(3);
    assert_eq!(
        keys_of_batch(&pa, b).await,
        set(&[1, 3]),
        "old and new side"
    );
    assert_eq!(keys_of_batch(&ap, b).await, set(&[100]));

    pubs.delete("pub_id = 2").await.unwrap();
    let b = run_both(4);
    assert_eq!(keys_of_batch(&pa, b).await, set(&[2]));
    assert_eq!(
        keys_of_batch(&ap, b).await,
        set(&[101]),
        "deleted publication's author"
    );

    // MERGE on the publications side: one update, one insert.
    pubs.upsert(
        &["pub_id"],
        json!([[3, "t3 (2nd ed.)", 2023], [4, "t4", 2024]]),
    )
    .await
    .unwrap();
    let b = run_both(5);
    assert_eq!(keys_of_batch(&pa, b).await, set(&[3, 4]), "merge");
    // Publication 3 has authors 102 and (since batch 3) 100; 4 has none yet.
    assert_eq!(keys_of_batch(&ap, b).await, set(&[100, 102]));

    links.insert(json!([[4, 103]])).await.unwrap();
    let b = run_both(6);
    assert_eq!(keys_of_batch(&pa, b).await, set(&[4]), "link-only change");
    assert_eq!(keys_of_batch(&ap, b).await, set(&[103]));
}

// ---- configuration and table errors of a run ---------------------------------------

#[test]
fn config_error_names_file_and_line_and_exits_2() {
    let ws = Workspace::new();
    let file = ws.path().join("bad.toml");
    std::fs::write(
        &file,
        "name = \"x\"\nupstreams = [\"spmaster\", \"nope\"]\n[plugin]\npath = \"missing.wasm\"\n[link]\nuri = \"l\"\nkeys = [{ name = \"k\", type = \"long\" }]\n",
    )
    .unwrap();
    let o = dlink().arg("run").arg(&file).output().unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "{}:2: upstream 'nope' is not in the catalog",
            file.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("{}:4: plugin file", file.display())),
        "{err}"
    );
}

#[test]
fn missing_upstream_table_is_named() {
    let ws = Workspace::new();
    let file = ws.sp_pipeline(10);
    let o = dlink().arg("run").arg(&file).output().unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("table 'spmaster'") || err.contains("table 'affiliation'"),
        "{err}"
    );
    assert!(err.contains("no Delta table here"), "{err}");
}

/// Plugins built against contract 0.1 (before the `pipeline` resource and per-upstream
/// output) and 0.2 (Arrow IPC) still run: over the same tables each commits what the
/// 0.3 example plugin commits, batch by batch, and each batch's metadata says which
/// contract derived it.
#[tokio::test]
async fn contract_0_1_and_0_2_plugins_commit_what_the_0_3_plugin_commits() {
    let ws = Workspace::new();
    let (mut sp, mut aff) = common::sp_tables(
        &ws,
        serde_json::json!([[1, "a", "DE"], [2, "b", "FR"], [3, "c", "IT"]]),
        serde_json::json!([[1, 10, 1], [2, 20, 1]]),
    )
    .await;
    sp.update("diasng_id = 3", &[("country", "'ES'")])
        .await
        .unwrap();
    // An affiliation moved from researcher 2 to 5: both are affected.
    aff.update("sp_id = 2", &[("sp_id", "5")]).await.unwrap();
    let new = ws.sp_pipeline(1);
    let old = ws.pipeline(
        "old",
        "sp_old",
        &["spmaster", "affiliation"],
        &common::plugin("sp_affiliation_v0_1"),
        "diasng_id",
        1,
    );
    let v02 = ws.pipeline(
        "v02",
        "sp_v02",
        &["spmaster", "affiliation"],
        &common::plugin("sp_affiliation_v0_2"),
        "diasng_id",
        1,
    );
    ws.run_ok(&new);
    ws.run_ok(&old);
    ws.run_ok(&v02);
    let new_log: std::collections::BTreeSet<_> = common::link_log(&new).await.into_iter().collect();
    let old_log: std::collections::BTreeSet<_> = common::link_log(&old).await.into_iter().collect();
    let v02_log: std::collections::BTreeSet<_> = common::link_log(&v02).await.into_iter().collect();
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let expected: std::collections::BTreeSet<(i64, i64, Vec<String>)> = [
        (1, 1, s(&["affiliation", "spmaster"])),
        (2, 1, s(&["affiliation", "spmaster"])),
        (3, 1, s(&["spmaster"])),
        (3, 2, s(&["spmaster"])),
        (2, 2, s(&["affiliation"])),
        (5, 2, s(&["affiliation"])),
    ]
    .into_iter()
    .collect();
    assert_eq!(new_log, expected);
    assert_eq!(old_log, expected);
    assert_eq!(v02_log, expected);

    let o = common::dlink()
        .args(["status", "--json"])
        .arg(ws.path())
        .output()
        .unwrap();
    let (out, err) = common::text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let contract_of = |name: &str| {
        status["pipelines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pipeline"] == name)
            .map(|p| p["plugin"]["contract"].clone())
    };
    assert_eq!(
        contract_of("sp_affiliation"),
        Some(serde_json::json!("dlink:pipeline@0.3.0"))
    );
    assert_eq!(
        contract_of("sp_v02"),
        Some(serde_json::json!("dlink:pipeline@0.2.0"))
    );
    assert_eq!(
        contract_of("sp_old"),
        Some(serde_json::json!("dlink:pipeline@0.1.0"))
    );
}

/// On a terminal (a pseudo-terminal from util-linux `script`), `run` draws a progress
/// bar per pipeline that ends at every upstream version it had to do, with the batch
/// lines above it; through a pipe it prints the batch lines alone.
#[tokio::test(flavor = "multi_thread")]
async fn a_catch_up_on_a_terminal_shows_a_progress_bar_and_a_pipe_gets_plain_lines() {
    let ws = Workspace::new();
    let (mut sp, mut aff) =
        common::sp_tables(&ws, json!([[1, "a", "DE"]]), json!([[1, 10, 1]])).await;
    for i in 2..5 {
        sp.insert(json!([[i, "x", "FR"]])).await.unwrap();
        aff.insert(json!([[i, 20, 1]])).await.unwrap();
    }
    // 4 versions of each upstream (0..=3), two per batch: 8 versions to do.
    let file = ws.sp_pipeline(2);
    let dlink = dlink();
    let command = format!(
        "{} run {}",
        dlink.get_program().to_string_lossy(),
        file.display()
    );
    let o = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .envs(dlink.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .env("TERM", "xterm")
        .env("COLUMNS", "120")
        .output()
        .expect("util-linux `script` runs the command on a pseudo-terminal");
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("8/8 versions"), "no finished bar in: {out:?}");
    assert!(out.contains("change rows/s"), "{out:?}");
    for batch in 1..=2 {
        assert!(
            out.contains(&format!("sp_affiliation batch {batch}:")),
            "{out:?}"
        );
    }

    // Through a pipe (from scratch again): the batch lines and no bar.
    std::fs::remove_dir_all(ws.path().join("links")).unwrap();
    let plain = ws.run_ok(&file);
    assert!(plain.contains("sp_affiliation batch 2:"), "{plain}");
    assert!(!plain.contains("versions,"), "{plain}");
    assert!(
        !plain.contains('\u{1b}'),
        "escape codes in a pipe: {plain:?}"
    );
}
