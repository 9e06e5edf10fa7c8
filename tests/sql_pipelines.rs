//! SQL pipelines: the same link tables, checkpoints and exactly-once commit as plugin
//! pipelines, with the keys derived by a DataFusion query over `<upstream>_changes`
//! and `<table>` (as of the batch's pinned version). Expected keys by hand.

mod common;

use std::path::PathBuf;

use common::{dlink, keys_of_batch, link_rows, set, text, Workspace};
use dlink_rt::demo::{DemoTable, AFFILIATION, DEPARTMENT, EMPLOYEE, SPMASTER};
use serde_json::json;

/// The seed's `link_sp_affiliation`, adapted to the `<upstream>_changes` naming.
const LINK_SP_AFFILIATION: &str = "
    SELECT COALESCE(s.diasng_id, a.sp_id) AS diasng_id
    FROM spmaster_changes s
    FULL OUTER JOIN affiliation_changes a ON s.diasng_id = a.sp_id";

fn sql_pipeline(
    ws: &Workspace,
    file: &str,
    name: &str,
    upstreams: &[&str],
    key: &str,
    query: &str,
) -> PathBuf {
    let ups = upstreams
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        "name = \"{name}\"\nupstreams = [{ups}]\nbatch_size = 100\n\n[sql]\nquery = \"\"\"{query}\"\"\"\n\n\
         [link]\nuri = \"links/{file}\"\nkeys = [{{ name = \"{key}\", type = \"long\" }}]\n"
    );
    let p = ws.path().join(format!("{file}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_full_outer_join_runs_as_written() {
    let ws = Workspace::new();
    let cols = SPMASTER;
    let mut sp = DemoTable::create(
        &ws.table("spmaster"),
        &cols,
        json!([[1, "a", "DE"], [2, "b", "FR"], [3, "c", "JP"]]),
    )
    .await
    .unwrap();
    let cols = AFFILIATION;
    let mut aff = DemoTable::create(
        &ws.table("affiliation"),
        &cols,
        json!([[1, 10, 1], [4, 40, 1]]),
    )
    .await
    .unwrap();
    let p = sql_pipeline(
        &ws,
        "sp_sql",
        "sp_affiliation",
        &["spmaster", "affiliation"],
        "diasng_id",
        LINK_SP_AFFILIATION,
    );

    let out = ws.run_ok(&p);
    assert!(out.contains("sp_affiliation batch 1:"), "{out}");
    assert_eq!(keys_of_batch(&p, 1).await, set(&[1, 2, 3, 4]));
    let rows = link_rows(&p).await;
    assert_eq!(
        rows[&1].1,
        vec!["affiliation".to_string(), "spmaster".into()]
    );

    sp.update("diasng_id = 2", &[("country", "'US'")])
        .await
        .unwrap();
    ws.run_ok(&p);
    assert_eq!(keys_of_batch(&p, 2).await, set(&[2]), "payload update");
    assert_eq!(
        link_rows(&p).await[&2].1,
        vec!["spmaster".to_string()],
        "only spmaster changed"
    );

    aff.update("sp_id = 4", &[("sp_id", "3")]).await.unwrap();
    ws.run_ok(&p);
    assert_eq!(
        keys_of_batch(&p, 3).await,
        set(&[3, 4]),
        "join column: old and new side"
    );

    aff.delete("sp_id = 1").await.unwrap();
    ws.run_ok(&p);
    assert_eq!(
        keys_of_batch(&p, 4).await,
        set(&[1]),
        "delete on one side only"
    );
    assert!(ws.run_ok(&p).contains("up to date"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_reads_the_pinned_tables_for_joins() {
    let ws = Workspace::new();
    let emp_cols = EMPLOYEE;
    let dept_cols = DEPARTMENT;
    let mut emp = DemoTable::create(
        &ws.table("employee"),
        &emp_cols,
        json!([[1, "e1", 1, 10], [2, "e2", 2, 20], [3, "e3", 2, 20]]),
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
    let query = "
        SELECT emp_id, 'employee' AS _upstream FROM employee_changes
        UNION
        SELECT e.emp_id, 'department' AS _upstream
        FROM department_changes d JOIN employee e ON e.dept_id = d.dept_id";
    let p = sql_pipeline(
        &ws,
        "ed_sql",
        "emp_dept",
        &["employee", "department"],
        "emp_id",
        query,
    );
    ws.run_ok(&p);
    assert_eq!(keys_of_batch(&p, 1).await, set(&[1, 2, 3]));

    dept.update("dept_id = 2", &[("dept_name", "'B2'")])
        .await
        .unwrap();
    ws.run_ok(&p);
    assert_eq!(
        keys_of_batch(&p, 2).await,
        set(&[2, 3]),
        "department-only change"
    );
    assert_eq!(
        link_rows(&p).await[&2].1,
        vec!["department".to_string()],
        "the query's own _upstream"
    );

    emp.update("emp_id = 1", &[("dept_id", "2")]).await.unwrap();
    dept.update("dept_id = 2", &[("manager_id", "21")])
        .await
        .unwrap();
    ws.run_ok(&p);
    assert_eq!(
        keys_of_batch(&p, 3).await,
        set(&[1, 2, 3]),
        "employee 1 moved into department 2 before the pin"
    );
}

#[test]
fn sql_error_names_the_pipeline_and_the_query_problem() {
    let ws = Workspace::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let cols = SPMASTER;
        DemoTable::create(&ws.table("spmaster"), &cols, json!([[1, "a", "DE"]]))
            .await
            .unwrap();
        let cols = AFFILIATION;
        DemoTable::create(&ws.table("affiliation"), &cols, json!([[1, 10, 1]]))
            .await
            .unwrap();
    });
    let p = sql_pipeline(
        &ws,
        "bad",
        "sp_affiliation",
        &["spmaster", "affiliation"],
        "diasng_id",
        "SELECT nope FROM spmaster_changes",
    );
    let o = dlink().arg("run").arg(&p).output().unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("pipeline 'sp_affiliation', batch 1, plugin [sql] query"),
        "{err}"
    );
    assert!(
        err.contains("nope"),
        "DataFusion's message names the column: {err}"
    );
    // In process, the failure is a value: the batch's SQL query, as DataFusion's error.
    let pipeline = dlink_rt::config::Pipeline::load(&p).unwrap();
    let host = dlink_rt::plugin::PluginHost::new(None).unwrap();
    let r = rt.block_on(dlink_rt::engine::run_pipeline(&pipeline, &host, |_| {}));
    assert!(
        matches!(
            &r,
            Err(dlink_rt::Error::Batch {
                batch_id: 1,
                cause: dlink_rt::BatchFailure::Sql(dlink_rt::sql_pipeline::SqlError::Query(_)),
                ..
            })
        ),
        "{r:?}"
    );
}
