//! The catalog's per-upstream options: `start_version`, `columns` (a projection),
//! `filter` (an SQL predicate pushed into the change-feed read) and `change_types`.

mod common;

use common::{keys_of_batch, set, Workspace};
use deltalake::arrow::array::AsArray;
use deltalake::arrow::datatypes::Int64Type;
use dlink_rt::config::Upstream;
use dlink_rt::demo::{DemoTable, AFFILIATION, SPMASTER};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn projection_filter_and_change_types_apply_inside_the_read() {
    let ws = Workspace::new();
    let mut sp = DemoTable::create(
        &ws.table("spmaster"),
        &SPMASTER,
        json!([[1, "a", "DE"], [2, "b", "XX"]]),
    )
    .await
    .unwrap();
    sp.update("diasng_id = 1", &[("country", "'FR'")])
        .await
        .unwrap(); // v1
    sp.insert(json!([[3, "c", "XX"], [4, "d", "JP"]]))
        .await
        .unwrap(); // v2

    let mut u = Upstream::new("spmaster", ws.table("spmaster").display().to_string());
    u.columns = Some(vec!["diasng_id".into(), "country".into()]);
    u.filter = Some("country <> 'XX'".into());
    u.change_types = Some(vec![
        "insert".into(),
        "update_postimage".into(),
        "delete".into(),
    ]);
    let table = dlink_rt::cdf::open_latest(&u).await.unwrap();
    let changes = dlink_rt::cdf::read_changes(&dlink_rt::cdf::session(), &u, &table, 0, 2)
        .await
        .unwrap();
    let names: Vec<&str> = changes
        .schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(
        names,
        [
            "diasng_id",
            "country",
            "_change_type",
            "_commit_version",
            "_commit_timestamp"
        ]
    );
    let mut rows = Vec::new();
    for b in &changes.batches {
        let id = b.column(0).as_primitive::<Int64Type>();
        let ct = b.column(2).as_string::<i32>();
        for i in 0..b.num_rows() {
            rows.push((id.value(i), ct.value(i).to_string()));
        }
    }
    rows.sort();
    // v0 inserts 1 (2 is XX); v1 post-image of 1 (no pre-image kept); v2 inserts 4 (3 is XX).
    assert_eq!(
        rows,
        vec![
            (1, "insert".to_string()),
            (1, "update_postimage".into()),
            (4, "insert".into())
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn start_version_and_filter_shape_a_pipelines_keys() {
    let ws = Workspace::new();
    let mut sp = DemoTable::create(&ws.table("spmaster"), &SPMASTER, json!([[1, "a", "DE"]]))
        .await
        .unwrap();
    sp.insert(json!([[2, "b", "FR"], [3, "c", "XX"]]))
        .await
        .unwrap(); // v1
    let cols = AFFILIATION;
    DemoTable::create(&ws.table("affiliation"), &cols, json!([[9, 90, 1]]))
        .await
        .unwrap();
    let catalog = ws.path().join("upstreams.toml");
    let text = std::fs::read_to_string(&catalog).unwrap().replace(
        "[upstreams.spmaster]\n",
        "[upstreams.spmaster]\nstart_version = 1\nfilter = \"country <> 'XX'\"\n",
    );
    std::fs::write(&catalog, text).unwrap();
    let p = ws.sp_pipeline(10);
    ws.run_ok(&p);
    assert_eq!(
        keys_of_batch(&p, 1).await,
        set(&[2, 9]),
        "v0 (key 1) skipped, XX rows (key 3) filtered"
    );
}

#[test]
fn unknown_change_type_is_a_config_error_with_its_line() {
    let ws = Workspace::new();
    let catalog = ws.path().join("upstreams.toml");
    let text = std::fs::read_to_string(&catalog).unwrap().replace(
        "[upstreams.spmaster]\n",
        "[upstreams.spmaster]\nchange_types = [\"insert\", \"upsert\"]\n",
    );
    std::fs::write(&catalog, text).unwrap();
    let err = dlink_rt::config::Catalog::load(&catalog)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!(
            "{}:2: upstream 'spmaster': unknown change type 'upsert'",
            catalog.display()
        )),
        "{err}"
    );
}
