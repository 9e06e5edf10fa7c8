//! `dlink-bench --json` at a tiny size: every figure is there and sane. No timing
//! assertions: speed is measured by the bench, never by tests.
//!
//! A test of the bench package (bench/Cargo.toml), kept with the other end-to-end tests
//! and their shared helpers (tests/common). It runs the `dlink-bench` binary alone: the
//! bench runs the pipelines in its own process through dlink-rt's library, and its
//! `--scaling` child processes are `dlink-bench` again, so no `dlink-rt` binary is needed.

mod common;

use std::process::Command;

use common::{plugin, text};
use serde_json::Value;

/// The `dlink-bench` binary with the test cache folder (as `common::dlink` runs
/// `dlink-rt`).
fn dlink_bench() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dlink-bench"));
    c.env("DLINK_CACHE_DIR", common::cache_dir())
        .env_remove("DLINK_TEST_PAUSE_AT");
    c
}

fn num(v: &Value, path: &[&str]) -> f64 {
    let mut x = v;
    for p in path {
        x = &x[*p];
    }
    x.as_f64()
        .unwrap_or_else(|| panic!("{} is not a number in {v}", path.join(".")))
}

/// A tiny workload, the same every time (seed 7).
const TINY: [&str; 15] = [
    "--json",
    "--upstreams",
    "4",
    "--pipelines",
    "3",
    "--rows",
    "40",
    "--versions",
    "4",
    "--change-fraction",
    "0.1",
    "--batch-size",
    "2",
    "--seed",
    "7",
];

#[test]
fn bench_json_has_every_figure() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let o = dlink_bench()
        .args(TINY)
        .arg("--keep")
        .arg("--plugin")
        .arg(plugin("every_upstream_key"))
        .arg("--dir")
        .arg(&work)
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "bench failed:\n{out}\n{err}");
    let line = out.lines().last().unwrap_or_default();
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {out}"));

    for field in [
        "wall_s",
        "change_rows",
        "peak_rss_bytes",
        "limit_read_s",
        "derive_wasm_s",
        "derive_native_s",
        "derive_sql_s",
        "generation_s",
        "generated_change_rows",
    ] {
        assert!(num(&v, &[field]) > 0.0, "{field} must be > 0: {v}");
    }
    // The Wasm derivation's parts: the call is never free, and they add up to at most
    // the whole.
    assert!(num(&v, &["derive_wasm_call_s"]) > 0.0, "{v}");
    let parts: f64 = [
        "derive_wasm_encode_s",
        "derive_wasm_call_s",
        "derive_wasm_collect_s",
    ]
    .iter()
    .map(|p| num(&v, &[p]))
    .sum();
    assert!(parts <= num(&v, &["derive_wasm_s"]), "{v}");
    let stages: f64 = ["open_s", "plan_s", "read_s", "derive_s", "commit_s"]
        .iter()
        .map(|s| num(&v, &["stages", s]))
        .sum();
    assert!(stages > 0.0, "{v}");
    assert!(
        stages <= num(&v, &["wall_s"]),
        "with --jobs 1 the stages fit in the wall time: {v}"
    );
    // The catch-up read exactly the change rows the generator wrote, and so did the
    // raw parquet read of the same files.
    assert_eq!(v["change_rows"], v["generated_change_rows"], "{v}");
    assert_eq!(v["limit_rows"], v["change_rows"], "{v}");
    assert_eq!(v["keys_agree"], Value::Bool(true), "{v}");
    assert!(v["profile"] == "debug" || v["profile"] == "release", "{v}");
    assert_eq!(v["pipelines_plugin"], 2);
    assert_eq!(v["pipelines_sql"], 1);
    // 4 commits after version 0 in batches of 2 versions: 3 batches per pipeline.
    assert_eq!(v["batches"], 9, "{v}");
    assert!(
        work.join("upstreams.toml").is_file(),
        "--keep keeps the workload"
    );

    // Same seed, same workload: the generator's count is reproducible.
    let again = dlink_bench()
        .args(TINY)
        .arg("--plugin")
        .arg(plugin("every_upstream_key"))
        .output()
        .unwrap();
    let (out2, err2) = text(&again);
    assert!(again.status.success(), "{out2}\n{err2}");
    let w: Value = serde_json::from_str(out2.lines().last().unwrap_or_default()).unwrap();
    assert_eq!(w["generated_change_rows"], v["generated_change_rows"]);
    assert_eq!(w["keys"], v["keys"]);
    let tmp = w["dir"].as_str().unwrap();
    assert!(
        !std::path::Path::new(tmp).exists(),
        "the temp workload is removed without --keep"
    );

    // A non-empty --dir is refused.
    let o = dlink_bench()
        .args(["--upstreams", "2", "--pipelines", "1"])
        .arg("--dir")
        .arg(&work)
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert!(!o.status.success() && err.contains("not empty"), "{err}");
}

/// `dlink-bench --single`: one upstream of 120k rows (ids 1..=120000, each once),
/// streamed in calls of 5,000 rows with a key set of 1 MiB, so it spills: every id is
/// one key of the link table, once, and the JSON carries the figures.
#[test]
fn bench_single_runs_one_big_upstream_to_as_many_keys() {
    let o = dlink_bench()
        .args([
            "--single",
            "--rows",
            "120000",
            "--chunk-rows",
            "5000",
            "--memory-mb",
            "1",
        ])
        .args(["--json"])
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    let v: Value = serde_json::from_str(&out).expect("one JSON object");
    assert_eq!(v["rows"], 120_000);
    assert_eq!(v["change_rows"], 120_000, "{v}");
    assert_eq!(v["keys"], 120_000, "{v}");
    assert_eq!(v["memory_mb"], 1);
    assert!(num(&v, &["peak_rss_bytes"]) > 0.0 && num(&v, &["change_rows_per_s"]) > 0.0);
}

/// `dlink-bench --follow`: each sample's commit is found in the link table, and the
/// figures are the samples'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_follow_measures_commits_that_reach_the_link_table() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let o = dlink_bench()
        .args([
            "--follow",
            "--json",
            "--upstreams",
            "3",
            "--pipelines",
            "1",
            "--rows",
            "20",
            "--versions",
            "2",
            "--samples",
            "4",
            "--interval",
            "50ms",
            "--keep",
        ])
        .arg("--plugin")
        .arg(plugin("every_upstream_key"))
        .arg("--dir")
        .arg(&work)
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "bench --follow failed:\n{out}\n{err}");
    let v: Value = serde_json::from_str(out.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["samples"], 4, "{v}");
    assert_eq!(num(&v, &["interval_ms"]), 50.0, "{v}");
    let lat: Vec<f64> = v["latency_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(lat.len(), 4, "{v}");
    assert!(lat.iter().all(|l| *l > 0.0), "{v}");
    let max = lat.iter().copied().fold(0.0, f64::max);
    assert_eq!(num(&v, &["max_ms"]), max, "{v}");
    assert!(num(&v, &["min_ms"]) <= num(&v, &["median_ms"]), "{v}");

    // Every inserted id is in the pipeline's link table, in a batch after the catch-up.
    let rows = common::link_rows(&work.join("p000.toml")).await;
    let inserted: Vec<i64> = v["inserted_ids"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()))
        .collect();
    assert_eq!(inserted.len(), 4 * 10, "{v}");
    let mut batches = std::collections::BTreeSet::new();
    for id in &inserted {
        let (batch, _) = rows
            .get(id)
            .unwrap_or_else(|| panic!("id {id} is not in the link table"));
        batches.insert(*batch);
    }
    assert_eq!(batches.len(), 4, "one batch per sample: {batches:?}");
}

/// `dlink-bench --examples --peer` at a small size: both runs of the four example
/// pipelines (catch-up, then an increment) find, pipeline by pipeline, the same keys
/// as the Python peer (delta-rs + polars), and every figure of the issue is reported.
/// Needs the peer's venv (`make peer-venv`, which `make test` runs); without it the
/// test says so and skips, except in CI (`CI` set), where a skip would prove nothing.
#[test]
fn bench_examples_agrees_with_the_python_peer() {
    let Some(python) = common::peer_python("the peer comparison") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let o = dlink_bench()
        .current_dir(common::repo_root())
        .args([
            "--examples",
            "--peer",
            "--json",
            "--rows",
            "3000",
            "--commits",
            "3",
        ])
        .arg("--python")
        .arg(&python)
        .arg("--dir")
        .arg(dir.path().join("work"))
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "bench --examples failed:\n{out}\n{err}");
    let v: Value = serde_json::from_str(out.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    assert_eq!(v["keys_agree_with_peer"], Value::Bool(true), "{v}\n{err}");
    assert_eq!(v["rows"], 3000, "{v}");
    for field in [
        "catch_up_s",
        "increment_s",
        "peer_catch_up_s",
        "peer_increment_s",
        "peak_rss_bytes",
        "lookup_index_build_s",
        "lookup_index_bytes",
        "lookup_probe_s",
    ] {
        assert!(num(&v, &[field]) > 0.0, "{field} must be > 0: {v}");
    }
    for run in ["catch_up", "increment"] {
        for field in ["limit_read_s", "limit_write_s", "limit_s", "change_rows"] {
            assert!(
                num(&v, &[run, field]) > 0.0,
                "{run}.{field} must be > 0: {v}"
            );
        }
        assert!(num(&v, &[run, "keys"]) > 0.0, "{run} found no keys: {v}");
    }
    // The lookup figure asks min(100k, rows) pub_ids of author_publication_link.
    assert_eq!(v["lookup_keys"], 3000, "{v}");
    let found = num(&v, &["lookup_rows"]);
    assert!(
        found > 0.0 && found <= num(&v, &["lookup_table_rows"]),
        "{v}"
    );
}
