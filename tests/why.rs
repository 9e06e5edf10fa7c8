//! `dlink-rt why`: for a key, the batches that reported it, their upstream commits and
//! the change rows that caused it, derived again with the batch's plugin. Checked
//! against what each test wrote (the department it renamed, the version of that commit,
//! the employee rows of the load), on 100k-row tables.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{dlink, emp_dept_at, link_keys, link_log, link_state, plugin, text, Workspace};
use dlink_bench::examples::departments;
use dlink_rt::demo::{DemoTable, AFFILIATION, SPMASTER};
use serde_json::{json, Value};

const ROWS: usize = 100_000;
/// A department the example history never touches (it changes the first ids only).
const DEPT: i64 = 1000;
const NEW_NAME: &str = "Research and Development";

/// An employee of department `dept` at version 0 of the example tables, one the history
/// never touches (it changes the first 400 ids and inserts ids from 10M on).
fn member_of(dept: i64, rows: usize) -> i64 {
    let d = departments(rows);
    // `dept_id = 1 + emp_id % d` at version 0.
    let e = (rows as i64 / 2 / d) * d + (dept - 1);
    assert_eq!(1 + e % d, dept);
    assert!(e > 400 && e <= rows as i64);
    e
}

/// `why FILE ARGS... --json`, asserting success.
fn why_json(file: &Path, args: &[&str]) -> Value {
    let o = dlink()
        .arg("why")
        .arg(file)
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "why {args:?} failed:\n{out}\n{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// `dlink-rt why FILE ARGS` (the text report): stdout, asserting success.
fn why_text(file: &Path, args: &[&str]) -> String {
    let o = dlink().arg("why").arg(file).args(args).output().unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "why {args:?} failed:\n{out}\n{err}");
    out
}

fn upstream<'a>(batch: &'a Value, name: &str) -> &'a Value {
    batch["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == name)
        .unwrap_or_else(|| panic!("no upstream {name} in {batch}"))
}

fn rows(u: &Value) -> &Vec<Value> {
    u["causing_rows"].as_array().unwrap()
}

/// Renames department `dept` (one UPDATE commit); returns the department table's version.
async fn rename(tables: &Path, dept: i64) -> i64 {
    let mut t = DemoTable::open(&tables.join("department")).await.unwrap();
    t.update(
        &format!("dept_id = {dept}"),
        &[("dept_name", &format!("'{NEW_NAME}'"))],
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn why_names_the_department_rename_and_its_rows() {
    let (ws, tables, file) = emp_dept_at(ROWS).await;
    ws.run_ok(&file);
    let (_, first) = link_state(&file).await.unwrap();
    let version = rename(&tables, DEPT).await;
    ws.run_ok(&file);
    let (_, second) = link_state(&file).await.unwrap();
    let rename_batch = first.batch_id + 1;
    assert_eq!(second.batch_id, rename_batch, "the rename is one batch");
    let emp = member_of(DEPT, ROWS);
    assert!(
        link_keys(&file, rename_batch..=rename_batch)
            .await
            .contains(&emp),
        "the rename batch reported employee {emp}"
    );
    // The batches that reported the employee, from the link table itself: the load's
    // and the rename's.
    let reported: BTreeSet<i64> = link_log(&file)
        .await
        .into_iter()
        .filter(|(k, _, _)| *k == emp)
        .map(|(_, b, _)| b)
        .collect();
    assert_eq!(reported.len(), 2, "{reported:?}");
    let load_batch = *reported.first().unwrap();

    let started = std::time::Instant::now();
    let v = why_json(&file, &[&emp.to_string()]);
    eprintln!("why over 2 batches: {} ms", started.elapsed().as_millis());
    assert_eq!(v["key"]["emp_id"], emp);
    assert_eq!(v["batches_reporting"], 2);
    let batches = v["batches"].as_array().unwrap();
    let ids: Vec<i64> = batches
        .iter()
        .map(|b| b["batch_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![rename_batch, load_batch], "newest first");

    // The rename's batch: the department commit, its operation, and exactly the
    // rename's pre- and post-image.
    let b = &batches[0];
    assert_eq!(b["rederivation"]["status"], "done", "{b}");
    assert_eq!(b["upstreams_recorded"], serde_json::json!(["department"]));
    let dept = upstream(b, "department");
    assert_eq!(dept["caused"], true);
    assert_eq!(dept["start_version"], version);
    assert_eq!(dept["end_version"], version);
    let commits = dept["commits"].as_array().unwrap();
    assert_eq!(commits.len(), 1, "{commits:?}");
    assert_eq!(commits[0]["version"], version);
    assert_eq!(commits[0]["operation"], "UPDATE");
    assert!(commits[0]["timestamp"].is_string());
    assert_eq!(commits[0]["causing_rows"], 2);
    let r = rows(dept);
    assert_eq!(r.len(), 2, "only the rename's images: {r:?}");
    assert_eq!(r[0]["_change_type"], "update_preimage");
    assert_eq!(r[0]["dept_name"], format!("department {DEPT}"));
    assert_eq!(r[1]["_change_type"], "update_postimage");
    assert_eq!(r[1]["dept_name"], NEW_NAME);
    for row in r {
        assert_eq!(row["dept_id"], DEPT);
        assert_eq!(row["_commit_version"], version);
    }
    let employee = upstream(b, "employee");
    assert_eq!(employee["caused"], false);
    assert!(employee["start_version"].is_null(), "no employee commit");
    assert!(rows(employee).is_empty());

    // The load's batch: the employee's own insert and its department's insert, and
    // no other of the 100k rows of each table.
    let b = &batches[1];
    assert_eq!(b["rederivation"]["status"], "done", "{b}");
    let employee = upstream(b, "employee");
    assert_eq!(employee["start_version"], 0);
    let r = rows(employee);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["emp_id"], emp);
    assert_eq!(r[0]["_change_type"], "insert");
    assert_eq!(r[0]["_commit_version"], 0);
    let dept = upstream(b, "department");
    let r = rows(dept);
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["dept_id"], DEPT);
    assert_eq!(r[0]["dept_name"], format!("department {DEPT}"));
    assert_eq!(r[0]["_commit_version"], 0);
    let load = dept["commits"].as_array().unwrap();
    assert_eq!(load[0]["version"], 0);
    assert!(load[0]["operation"].is_string(), "{load:?}");

    // With few derivations the load's rows are not narrowed down: said so, and no
    // unrelated row is listed.
    let v = why_json(&file, &[&emp.to_string(), "--max-derive-calls", "12"]);
    let b = &v["batches"][1];
    let notes = b["notes"].to_string();
    assert!(notes.contains("--max-derive-calls"), "{notes}");
    for (u, column, value) in [("employee", "emp_id", emp), ("department", "dept_id", DEPT)] {
        for r in rows(upstream(b, u)) {
            assert_eq!(r[column], value, "{u}: {r}");
        }
    }
    // The whole answer is two rows (above); the cut one lists fewer.
    let listed = rows(upstream(b, "employee")).len() + rows(upstream(b, "department")).len();
    assert!(listed < 2, "{b}");

    // --batches 1: the rename only. The text report says the same.
    let v = why_json(&file, &[&emp.to_string(), "--batches", "1"]);
    assert_eq!(v["batches"].as_array().unwrap().len(), 1);
    assert_eq!(v["batches"][0]["batch_id"], rename_batch);
    let out = why_text(&file, &[&emp.to_string(), "--batches", "1"]);
    assert!(out.contains(&format!("batch {rename_batch}")), "{out}");
    assert!(
        out.contains(&format!("v{version}")) && out.contains("UPDATE"),
        "{out}"
    );
    assert!(out.contains(NEW_NAME), "{out}");
    assert!(out.contains("update_preimage") && out.contains("update_postimage"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn why_of_a_key_never_reported_or_malformed() {
    let (ws, _tables, file) = emp_dept_at(3_000).await;

    // No link table yet: said so.
    let o = dlink().arg("why").arg(&file).arg("7").output().unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("run the pipeline first"), "{err}");

    ws.run_ok(&file);
    // A key no batch reported: exit 0, said so; the JSON has no batch.
    let out = why_text(&file, &["987654321"]);
    assert!(out.contains("emp_id=987654321 was never reported"), "{out}");
    let v = why_json(&file, &["--key", "emp_id=987654321"]);
    assert_eq!(v["batches_reporting"], 0);
    assert!(v["batches"].as_array().unwrap().is_empty());

    // Malformed keys: exit 2, the column and its type named.
    for (args, want) in [
        (vec!["abc"], "key column 'emp_id' is long"),
        (vec!["1", "2"], "1 column(s) (emp_id long)"),
        (vec!["--key", "dept_id=3"], "'dept_id' is not a key column"),
        (vec!["--key", "emp_id"], "give COLUMN=VALUE"),
        (vec![], "give the key"),
    ] {
        let o = dlink().arg("why").arg(&file).args(&args).output().unwrap();
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn why_after_the_plugin_file_was_replaced_lists_commits_but_cannot_rederive() {
    const SMALL: usize = 5_000;
    let (ws, tables, _) = emp_dept_at(SMALL).await;
    // The pipeline runs a copy of the plugin, which is then replaced.
    let copy = ws.path().join("emp_dept.wasm");
    std::fs::copy(plugin("emp_dept"), &copy).unwrap();
    let recorded = dlink_rt::plugin::sha256_hex(&std::fs::read(&copy).unwrap());
    let file = ws.pipeline(
        "emp_copy",
        "emp_copy",
        &["employee", "department"],
        &copy,
        "emp_id",
        2,
    );
    ws.run_ok(&file);
    let dept = 7;
    let version = rename(&tables, dept).await;
    ws.run_ok(&file);
    let (_, cp) = link_state(&file).await.unwrap();
    let emp = member_of(dept, SMALL);

    // Still available: re-derived.
    let v = why_json(&file, &[&emp.to_string(), "--batches", "1"]);
    assert_eq!(v["batches"][0]["batch_id"], cp.batch_id);
    assert_eq!(v["batches"][0]["rederivation"]["status"], "done");

    // Replaced by another plugin: the ranges and commits, but no rows.
    std::fs::copy(plugin("pub_authors"), &copy).unwrap();
    let v = why_json(&file, &[&emp.to_string(), "--batches", "1"]);
    let b = &v["batches"][0];
    assert_eq!(b["batch_id"], cp.batch_id);
    assert_eq!(b["rederivation"]["status"], "unavailable", "{b}");
    let reason = b["rederivation"]["reason"].as_str().unwrap();
    assert!(
        reason.contains(&copy.display().to_string()) && reason.contains(&recorded),
        "names the plugin's path and sha: {reason}"
    );
    assert!(reason.contains("cannot be re-derived"), "{reason}");
    assert_eq!(b["deriver"]["sha256"], recorded.as_str());
    let d = upstream(b, "department");
    assert_eq!(d["start_version"], version);
    assert_eq!(d["commits"][0]["version"], version);
    assert_eq!(d["commits"][0]["operation"], "UPDATE");
    assert!(rows(d).is_empty());

    // The recorded file removed, the pipeline now pointing at another copy of the same
    // plugin: re-derived with that one, found by its SHA-256.
    std::fs::remove_file(&copy).unwrap();
    let pipeline_at = |path: &Path| {
        ws.pipeline(
            "emp_copy",
            "emp_copy",
            &["employee", "department"],
            path,
            "emp_id",
            2,
        )
    };
    pipeline_at(&plugin("emp_dept"));
    let v = why_json(&file, &[&emp.to_string(), "--batches", "1"]);
    let b = &v["batches"][0];
    assert_eq!(b["rederivation"]["status"], "done", "{b}");
    assert_eq!(
        b["deriver"]["used"],
        plugin("emp_dept").display().to_string()
    );
    assert_eq!(rows(upstream(b, "department")).len(), 2);

    // Removed, and the pipeline's plugin is another one: said so, in text too.
    let other = ws.path().join("other.wasm");
    std::fs::copy(plugin("pub_authors"), &other).unwrap();
    pipeline_at(&other);
    let out = why_text(&file, &[&emp.to_string(), "--batches", "1"]);
    assert!(out.contains("cannot re-derive"), "{out}");
    assert!(out.contains("the file is missing"), "{out}");
    assert!(out.contains(&copy.display().to_string()), "{out}");
    assert!(
        out.contains(&format!("v{version}")) && out.contains("UPDATE"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn why_of_a_sql_pipeline_in_latest_mode() {
    let ws = Workspace::new();
    let mut sp = DemoTable::create(
        &ws.table("spmaster"),
        &SPMASTER,
        json!([[1, "a", "DE"], [2, "b", "FR"], [3, "c", "JP"]]),
    )
    .await
    .unwrap();
    DemoTable::create(
        &ws.table("affiliation"),
        &AFFILIATION,
        json!([[1, 10, 1], [4, 40, 1]]),
    )
    .await
    .unwrap();
    let file = ws.path().join("sp_sql.toml");
    std::fs::write(
        &file,
        "name = \"sp_sql\"\nupstreams = [\"spmaster\", \"affiliation\"]\n\n[sql]\nquery = \"\"\"\n\
         SELECT COALESCE(s.diasng_id, a.sp_id) AS diasng_id FROM spmaster_changes s \
         FULL OUTER JOIN affiliation_changes a ON s.diasng_id = a.sp_id\"\"\"\n\n\
         [link]\nuri = \"links/sp_sql\"\nmode = \"latest\"\nkeys = [{ name = \"diasng_id\", type = \"long\" }]\n",
    )
    .unwrap();
    ws.run_ok(&file);
    let version = sp
        .update("diasng_id = 2", &[("name", "'b renamed'")])
        .await
        .unwrap();
    ws.run_ok(&file);

    // A `latest` table keeps the last batch of a key only: the update's.
    let v = why_json(&file, &["2"]);
    assert_eq!(v["link_mode"], "latest");
    assert_eq!(v["batches_reporting"], 1);
    assert!(v["notes"][0].as_str().unwrap().contains("latest"), "{v}");
    let b = &v["batches"][0];
    assert_eq!(b["batch_id"], 2);
    assert_eq!(b["deriver"]["kind"], "sql");
    assert_eq!(b["rederivation"]["status"], "done", "{b}");
    let s = upstream(b, "spmaster");
    assert_eq!(s["start_version"], version);
    assert_eq!(s["commits"][0]["operation"], "UPDATE");
    let r = rows(s);
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!(r[0]["name"], "b");
    assert_eq!(r[1]["name"], "b renamed");
    assert!(r.iter().all(|r| r["diasng_id"] == 2));

    // Key 4 comes from the affiliation insert alone; a SQL query's keys name no
    // upstream, so spmaster (with rows in that batch too) is tried and left out.
    let v = why_json(&file, &["4"]);
    let b = &v["batches"][0];
    assert_eq!(b["batch_id"], 1);
    let r = rows(upstream(b, "affiliation"));
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["sp_id"], 4);
    assert_eq!(r[0]["_change_type"], "insert");
    assert!(rows(upstream(b, "spmaster")).is_empty());

    // The query changed since: said so.
    let text_now = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text_now.replace("SELECT COALESCE", "SELECT DISTINCT COALESCE"),
    )
    .unwrap();
    let v = why_json(&file, &["2"]);
    let b = &v["batches"][0];
    assert_eq!(b["rederivation"]["status"], "unavailable");
    assert!(
        b["rederivation"]["reason"]
            .as_str()
            .unwrap()
            .contains("SQL query of"),
        "{b}"
    );
}
