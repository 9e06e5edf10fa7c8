//! `dlink-rt status`: what it says of each pipeline equals what the link tables and
//! upstream logs hold, for a pipeline that ran, one that never did (disabled), and one
//! whose upstream is missing; the command exits 0 throughout.

mod common;

use std::path::Path;

use common::{dlink, link_state, plugin, text, Workspace};
use serde_json::{json, Value};

fn status(dir: &Path) -> Value {
    let o = dlink()
        .arg("status")
        .arg(dir)
        .arg("--json")
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "status failed:\n{out}\n{err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn pipeline<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pipeline"] == name)
        .unwrap_or_else(|| panic!("no {name} in {v}"))
}

fn upstream<'a>(p: &'a Value, name: &str) -> &'a Value {
    p["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {p}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn status_says_what_the_tables_hold() {
    let ws = Workspace::new();
    let (mut sp, _) = common::sp_tables(
        &ws,
        json!([[1, "a", "DE"], [2, "b", "FR"]]),
        json!([[1, 10, 1]]),
    )
    .await;
    let sp_file = ws.pipeline(
        "sp",
        "sp",
        &["spmaster", "affiliation"],
        &plugin("sp_affiliation"),
        "diasng_id",
        10,
    );
    let never = ws.pipeline(
        "never",
        "never",
        &["spmaster"],
        &plugin("sp_affiliation"),
        "diasng_id",
        10,
    );
    let text_of = std::fs::read_to_string(&never).unwrap();
    std::fs::write(&never, format!("enabled = false\n{text_of}")).unwrap();
    // No employee table in the workspace.
    ws.pipeline(
        "emp",
        "emp",
        &["employee"],
        &plugin("emp_dept"),
        "emp_id",
        10,
    );

    ws.run_ok(&sp_file);
    sp.insert(json!([[3, "c", "JP"]])).await.unwrap(); // v1
    sp.insert(json!([[4, "d", "US"]])).await.unwrap(); // v2

    let v = status(ws.path());
    let s = pipeline(&v, "sp");
    let (link_version, cp) = link_state(&sp_file).await.unwrap();
    assert_eq!(s["last_batch"], cp.batch_id);
    assert_eq!(s["link_version"], link_version);
    assert_eq!(s["enabled"], true);
    let wasm = std::fs::read(plugin("sp_affiliation")).unwrap();
    assert_eq!(
        s["plugin"]["sha256"],
        dlink_rt::plugin::sha256_hex(&wasm),
        "{s}"
    );
    assert_eq!(s["plugin"]["active_since_batch"], 1);
    assert!(s["last_batch_at"].as_str().is_some(), "{s}");
    let spm = upstream(s, "spmaster");
    assert_eq!(spm["checkpoint"], cp.done["spmaster"]);
    assert_eq!(spm["latest"], 2);
    assert_eq!(spm["lag_versions"], 2);
    assert!(spm["lag_seconds"].as_f64().unwrap() >= 0.0, "{spm}");
    let aff = upstream(s, "affiliation");
    assert_eq!(
        (aff["latest"].clone(), aff["lag_versions"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(aff["lag_seconds"], 0.0);

    // Never run, and disabled: no link table; every version of its upstream to do.
    let n = pipeline(&v, "never");
    assert_eq!(n["enabled"], false);
    assert_eq!(n["link_version"], Value::Null);
    assert_eq!(n["last_batch"], 0);
    assert_eq!(upstream(n, "spmaster")["lag_versions"], 3);

    // A missing upstream is said in its place.
    let e = upstream(pipeline(&v, "emp"), "employee");
    assert!(
        e["error"].as_str().is_some_and(|m| m.contains("employee")),
        "{e}"
    );

    // After a reset, the reset is shown and the lag follows the moved checkpoint.
    let o = dlink()
        .arg("reset")
        .arg(&sp_file)
        .args(["--upstream", "spmaster", "--to-latest"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{:?}", text(&o));
    let v = status(ws.path());
    let s = pipeline(&v, "sp");
    assert_eq!(s["last_reset"]["upstream"], "spmaster", "{s}");
    assert_eq!(upstream(s, "spmaster")["lag_versions"], 0);

    // The text form names every pipeline and the missing table.
    let o = dlink().arg("status").arg(ws.path()).output().unwrap();
    let (out, _) = text(&o);
    assert!(o.status.success());
    assert!(out.contains("never (disabled)"), "{out}");
    assert!(out.contains("not created yet"), "{out}");
    assert!(out.contains("cannot be read"), "{out}");
}

/// Graphviz's `dot`, or None after saying the render is skipped. In CI (`CI` set) a
/// missing `dot` fails: `.ci/run` installs it.
fn graphviz() -> Option<&'static str> {
    let found = std::process::Command::new("dot")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI: Graphviz `dot` is missing (apt-get install graphviz)"
        );
        eprintln!("SKIPPED: no Graphviz `dot`; the DOT output is checked but not rendered");
    }
    found.then_some("dot")
}

#[test]
fn graph_shows_tables_pipelines_and_link_tables_and_renders() {
    let ws = Workspace::new();
    let sp = ws.pipeline(
        "sp",
        "sp",
        &["spmaster", "affiliation"],
        &plugin("sp_affiliation"),
        "diasng_id",
        10,
    );
    let emp = ws.pipeline(
        "emp",
        "emp",
        &["employee"],
        &plugin("emp_dept"),
        "emp_id",
        10,
    );
    let t = std::fs::read_to_string(&emp).unwrap();
    std::fs::write(
        &emp,
        format!("enabled = false\nlookups = [\"department\"]\n{t}"),
    )
    .unwrap();
    let _ = sp;

    let o = dlink().arg("graph").arg(ws.path()).output().unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success() && err.is_empty(), "{err}");
    for want in [
        "\"table:spmaster\" -> \"pipeline:sp\"",
        "\"table:affiliation\" -> \"pipeline:sp\"",
        "\"pipeline:sp\" -> \"link:sp\"",
        "\"table:department\" -> \"pipeline:emp\" [style=dashed",
        "(disabled)",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    if let Some(dot) = graphviz() {
        let mut child = std::process::Command::new(dot)
            .arg("-Tsvg")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(out.as_bytes())
            .unwrap();
        let r = child.wait_with_output().unwrap();
        let svg = String::from_utf8_lossy(&r.stdout);
        assert!(
            r.status.success(),
            "dot: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        assert!(svg.contains("<svg") && svg.contains("spmaster"), "{svg}");
        assert!(svg.contains("emp (disabled)"), "{svg}");
    }

    let o = dlink()
        .arg("graph")
        .arg(ws.path())
        .args(["--format", "mermaid"])
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.starts_with("flowchart LR\n"), "{out}");
    assert!(out.contains(" -. lookup .-> p_emp_"), "{out}");
    assert!(out.contains("classDef disabled"), "{out}");
}

/// Pipeline `sp` over one-row spmaster and affiliation tables with test plugin `name`.
async fn sp_pipeline_with(name: &str) -> (Workspace, std::path::PathBuf) {
    let ws = Workspace::new();
    common::sp_tables(&ws, json!([[1, "a", "DE"]]), json!([[1, 10, 1]])).await;
    let file = ws.pipeline(
        "sp",
        "sp",
        &["spmaster", "affiliation"],
        &plugin(name),
        "diasng_id",
        10,
    );
    (ws, file)
}

/// `--log-format json`: every stderr line is one JSON event, with its fields as keys.
#[tokio::test(flavor = "multi_thread")]
async fn json_logs_are_one_object_per_event_with_fields() {
    let (_ws, file) = sp_pipeline_with("sp_affiliation").await;
    let o = dlink()
        .env("DLINK_LOG", "dlink_rt=info")
        .args(["--log-format", "json", "run"])
        .arg(&file)
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    let events: Vec<Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l}")))
        .collect();
    let wasm = std::fs::read(plugin("sp_affiliation")).unwrap();
    let load = events
        .iter()
        .find(|e| e["target"] == "dlink_rt::plugin" && e.get("sha256").is_some())
        .unwrap_or_else(|| panic!("no plugin load event in {err}"));
    assert_eq!(load["sha256"], dlink_rt::plugin::sha256_hex(&wasm));
    assert_eq!(load["level"], "INFO");
    assert!(load["ms"].as_u64().is_some(), "{load}");
}

/// A followed pipeline's failed batch is an ERROR event whose fields say which
/// pipeline, batch and kind of failure (what a log shipper filters on), and the
/// pipeline's events carry the pipeline as a field of their span.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_batch_is_logged_with_its_pipeline_batch_and_kind_as_fields() {
    let (_ws, file) = sp_pipeline_with("panic_on_derive").await;
    let mut child = dlink()
        .env("DLINK_LOG", "dlink_rt=info")
        .args([
            "--log-format",
            "json",
            "run",
            "--follow",
            "--interval",
            "100ms",
        ])
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let err = common::lines(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    let line = common::wait_for(&err, "\"level\":\"ERROR\"", &mut seen);
    let _ = child.kill();
    let _ = child.wait();
    let event: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(event["pipeline"], "sp", "{event}");
    assert_eq!(event["batch"], 1, "{event}");
    assert_eq!(event["kind"], "plugin", "{event}");
    assert!(
        event["message"]
            .as_str()
            .is_some_and(|m| m.contains("panic_on_derive")),
        "{event}"
    );
}
