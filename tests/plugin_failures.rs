//! A plugin that traps and one that returns the wrong schema: a clear error naming
//! pipeline, batch and plugin; the link table and checkpoint do not move; the next run
//! with a good plugin commits the same batch.

mod common;

use std::path::Path;

use common::{dlink, keys_of_batch, link_state, plugin, set, text, Workspace};
use dlink_rt::demo::{Col, DemoTable};
use serde_json::json;

async fn setup() -> (Workspace, DemoTable) {
    let ws = Workspace::new();
    let cols = [
        ("diasng_id", Col::Long),
        ("name", Col::Str),
        ("country", Col::Str),
    ];
    let sp = DemoTable::create(
        &ws.table("spmaster"),
        &cols,
        json!([[1, "a", "DE"], [2, "b", "FR"]]),
    )
    .await
    .unwrap();
    let cols = [
        ("sp_id", Col::Long),
        ("institution_key", Col::Long),
        ("rank", Col::Long),
    ];
    DemoTable::create(&ws.table("affiliation"), &cols, json!([[1, 10, 1]]))
        .await
        .unwrap();
    (ws, sp)
}

fn pipeline_with(ws: &Workspace, plugin_path: &Path) -> std::path::PathBuf {
    ws.pipeline(
        "sp",
        "sp_affiliation",
        &["spmaster", "affiliation"],
        plugin_path,
        "diasng_id",
        10,
    )
}

async fn failing_plugin_leaves_link_table_unchanged(bad: &str, expect_in_error: &str) {
    let (ws, mut sp) = setup().await;
    let good = pipeline_with(&ws, &plugin("sp_affiliation"));
    ws.run_ok(&good);
    let before = link_state(&good).await.expect("batch 1 committed");
    assert_eq!(before.1.batch_id, 1);

    sp.insert(json!([[3, "c", "JP"]])).await.unwrap();
    let bad_file = pipeline_with(&ws, &plugin(bad));
    let o = dlink().arg("run").arg(&bad_file).output().unwrap();
    let (out, err) = text(&o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "a failed batch exits 1:\n{out}\n{err}"
    );
    assert!(
        err.contains("pipeline 'sp_affiliation', batch 2, plugin "),
        "{err}"
    );
    assert!(
        err.contains(&format!("{bad}.wasm")),
        "names the plugin file: {err}"
    );
    assert!(
        err.contains(expect_in_error),
        "says what went wrong ({expect_in_error}): {err}"
    );
    assert!(err.contains("nothing was committed"), "{err}");
    assert_eq!(
        link_state(&bad_file).await.unwrap(),
        before,
        "link table and checkpoint unchanged"
    );

    // Nothing lost: with the good plugin back in the same pipeline file, batch 2
    // commits the pending change.
    pipeline_with(&ws, &plugin("sp_affiliation"));
    ws.run_ok(&good);
    assert_eq!(keys_of_batch(&good, 2).await, set(&[3]));
}

#[tokio::test(flavor = "multi_thread")]
async fn trapping_plugin_fails_the_batch_and_moves_nothing() {
    failing_plugin_leaves_link_table_unchanged("panic_on_derive", "derive trapped").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_output_schema_fails_the_batch_and_moves_nothing() {
    failing_plugin_leaves_link_table_unchanged(
        "wrong_output_schema",
        "key column 'diasng_id' as Utf8",
    )
    .await;
}

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
    let file = pipeline_with(&ws, &plugin("sp_affiliation"));
    let o = dlink().arg("run").arg(&file).output().unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("table 'spmaster'") || err.contains("table 'affiliation'"),
        "{err}"
    );
    assert!(err.contains("no Delta table here"), "{err}");
}
