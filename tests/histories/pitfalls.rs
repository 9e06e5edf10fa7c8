//! The seed's pitfalls, each as its own regression test.

use super::*;

/// A change-type filter must never drop updates: both images yield keys.
#[tokio::test(flavor = "multi_thread")]
async fn an_update_yields_keys_of_both_images() {
    let ws = Workspace::new();
    let (_, mut aff) = sp_tables(&ws).await;
    let p = sp_pipeline(&ws, 10);
    ws.run_ok(&p);
    aff.update("sp_id = 1", &[("sp_id", "2")]).await.unwrap();
    ws.run_ok(&p);
    assert_eq!(keys_of_batch(&p, 2).await, set(&[1, 2]));
}

/// A change only on the "static" (non-driving) side of a join yields keys.
#[tokio::test(flavor = "multi_thread")]
async fn a_change_on_the_static_side_of_a_join_yields_keys() {
    let ws = Workspace::new();
    let emp_cols = EMPLOYEE;
    let dept_cols = DEPARTMENT;
    DemoTable::create(
        &ws.table("employee"),
        &emp_cols,
        json!([[1, "e1", 7, 10], [2, "e2", 8, 20]]),
    )
    .await
    .unwrap();
    let mut dept = DemoTable::create(
        &ws.table("department"),
        &dept_cols,
        json!([[7, 10, "A"], [8, 20, "B"]]),
    )
    .await
    .unwrap();
    let p = ws.pipeline(
        "ed",
        "emp_dept",
        &["employee", "department"],
        &plugin("emp_dept"),
        "emp_id",
        10,
    );
    ws.run_ok(&p);
    dept.delete("dept_id = 8").await.unwrap();
    ws.run_ok(&p);
    assert_eq!(
        keys_of_batch(&p, 2).await,
        set(&[2]),
        "deleting a department affects its employee"
    );
}

/// A delete yields the deleted row's key.
#[tokio::test(flavor = "multi_thread")]
async fn a_delete_yields_keys() {
    let ws = Workspace::new();
    let (mut sp, _) = sp_tables(&ws).await;
    let p = sp_pipeline(&ws, 10);
    ws.run_ok(&p);
    sp.delete("diasng_id = 3").await.unwrap();
    ws.run_ok(&p);
    assert_eq!(keys_of_batch(&p, 2).await, set(&[3]));
}
