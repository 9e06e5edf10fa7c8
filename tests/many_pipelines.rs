//! The seeds' model at scale in one process: 100 upstream tables in one catalog and 20
//! pipelines (2-8 upstreams each, plugin and SQL alternating), `validate` and one
//! catch-up with `dlink-rt run <folder>`, each upstream range read once and fanned out.
//! Also: `validate` reports every problem of a broken folder with file and line.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Instant;

use common::{dlink, plugin, text};
use dlink_rt::demo::{Col, DemoTable};
use serde_json::{json, Value};

const TABLES: usize = 100;
const PIPELINES: usize = 20;
const COLS: [(&str, Col); 3] = [("id", Col::Long), ("ref_id", Col::Long), ("val", Col::Str)];

/// A small deterministic generator (the test must not depend on a seed to pass).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Writes table `t{i}` with 2-3 versions; returns every id in its change feed.
async fn write_table(dir: &Path, i: usize, rng: &mut Lcg) -> BTreeSet<i64> {
    let ids: BTreeSet<i64> = (0..4).map(|_| 1 + rng.next(60) as i64).collect();
    let rows: Vec<Value> = ids
        .iter()
        .map(|id| json!([id, rng.next(60), format!("v{i}")]))
        .collect();
    let mut t = DemoTable::create(&dir.join(format!("t{i:03}")), &COLS, Value::Array(rows))
        .await
        .unwrap();
    let first = *ids.iter().next().unwrap();
    t.update(&format!("id = {first}"), &[("val", "'changed'")])
        .await
        .unwrap();
    if i.is_multiple_of(3) {
        let last = *ids.iter().last().unwrap();
        t.delete(&format!("id = {last}")).await.unwrap();
    }
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn hundred_upstreams_twenty_pipelines_validate_and_catch_up() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let started = Instant::now();
    let mut rng = Lcg(42);
    let mut ids: Vec<BTreeSet<i64>> = Vec::new();
    let mut catalog = String::new();
    for i in 0..TABLES {
        ids.push(write_table(&d.join("tables"), i, &mut rng).await);
        catalog.push_str(&format!(
            "[upstreams.t{i:03}]\nuri = \"tables/t{i:03}\"\nkeys = [\"id\"]\n\n"
        ));
    }
    std::fs::write(d.join("upstreams.toml"), catalog).unwrap();
    eprintln!(
        "wrote {TABLES} tables in {} ms",
        started.elapsed().as_millis()
    );

    let every = plugin("every_upstream_key");
    let mut expected: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    let mut upstream_uses = 0;
    let mut used_tables: BTreeSet<usize> = BTreeSet::new();
    for p in 0..PIPELINES {
        let k = 2 + rng.next(7) as usize;
        let mut ups: BTreeSet<usize> = BTreeSet::new();
        while ups.len() < k {
            ups.insert(rng.next(TABLES as u64) as usize);
        }
        upstream_uses += ups.len();
        used_tables.extend(ups.iter().copied());
        let names: Vec<String> = ups.iter().map(|i| format!("t{i:03}")).collect();
        let list = names
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let derive = if p.is_multiple_of(2) {
            format!(
                "[plugin]\npath = \"{}\"\n[plugin.config]\nkey_column = \"id\"\n",
                every.display()
            )
        } else {
            let q = names
                .iter()
                .map(|n| format!("SELECT id FROM {n}_changes"))
                .collect::<Vec<_>>()
                .join(" UNION ALL ");
            format!("[sql]\nquery = \"{q}\"\n")
        };
        let name = format!("p{p:02}");
        std::fs::write(
            d.join(format!("{name}.toml")),
            format!(
                "name = \"{name}\"\nupstreams = [{list}]\nbatch_size = 100\n\n{derive}\n[link]\nuri = \"links/{name}\"\nkeys = [{{ name = \"id\", type = \"long\" }}]\n"
            ),
        )
        .unwrap();
        expected.insert(
            name,
            ups.iter().flat_map(|i| ids[*i].iter().copied()).collect(),
        );
    }

    let t = Instant::now();
    let o = dlink().arg("validate").arg(d).output().unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "validate:\n{out}\n{err}");
    assert!(
        out.contains(&format!("{PIPELINES} pipelines checked")) && out.contains("all valid"),
        "{out}"
    );
    eprintln!(
        "validate of {TABLES} x {PIPELINES}: {} ms ({})",
        t.elapsed().as_millis(),
        out.trim()
    );

    let t = Instant::now();
    let o = dlink()
        .args(["run", "--jobs", "4"])
        .arg(d)
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "run:\n{out}\n{err}");
    let summary = out.lines().last().unwrap_or_default().to_string();
    eprintln!(
        "catch-up of {TABLES} x {PIPELINES}: {} ms; {summary}",
        t.elapsed().as_millis()
    );
    assert!(
        summary.starts_with(&format!(
            "{PIPELINES} pipelines: {PIPELINES} batches committed, 0 failed"
        )),
        "{out}"
    );
    // Every pipeline read each of its upstreams once; shared ranges were read once.
    let requested = format!("for {upstream_uses} requested");
    assert!(
        summary.contains(&requested),
        "{summary} (expected {requested})"
    );
    let performed: usize = summary
        .split("change-feed reads: ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    let distinct: BTreeSet<&str> = expected.keys().map(String::as_str).collect();
    assert!(!distinct.is_empty());
    assert!(performed < upstream_uses, "no read was shared: {summary}");
    // Each upstream table was opened once for all the pipelines that read it.
    let opens = format!("table opens: {} for {upstream_uses}", used_tables.len());
    assert!(summary.contains(&opens), "{summary} (expected {opens})");

    for (name, want) in &expected {
        let keys: BTreeSet<i64> = common::link_rows(&d.join(format!("{name}.toml")))
            .await
            .into_keys()
            .collect();
        assert_eq!(&keys, want, "pipeline {name}");
    }
    let o = dlink().args(["run"]).arg(d).output().unwrap();
    let (out, _) = text(&o);
    assert!(
        out.contains(&format!("{PIPELINES} pipelines: 0 batches committed")),
        "second run: {out}"
    );
}

#[test]
fn validate_reports_every_problem_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        DemoTable::create(&d.join("tables/a"), &COLS, json!([[1, 1, "x"]]))
            .await
            .unwrap();
    });
    std::fs::write(
        d.join("upstreams.toml"),
        "[upstreams.a]\nuri = \"tables/a\"\n\n[upstreams.gone]\nuri = \"tables/gone\"\n\n[upstreams.filtered]\nuri = \"tables/a\"\nfilter = \"no_such_column > 1\"\n",
    )
    .unwrap();
    let garbage = d.join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm\x01\0\0\0").unwrap();
    let link = "\n[link]\nuri = \"links/NAME\"\nkeys = [{ name = \"id\", type = \"long\" }]\n";
    let every_key = common::plugin("every_upstream_key");
    let sp_affiliation = common::plugin("sp_affiliation");
    let files = [
        (
            "bad_upstream",
            "upstreams = [\"a\", \"nope\"]\n[sql]\nquery = \"SELECT id FROM a_changes\"\n",
        ),
        (
            "bad_sql",
            "upstreams = [\"a\"]\n[sql]\nquery = \"SELECT missing_col AS id FROM a_changes\"\n",
        ),
        (
            "bad_key",
            "upstreams = [\"a\"]\n[sql]\nquery = \"SELECT val AS other FROM a_changes\"\n",
        ),
        (
            "bad_plugin",
            &format!(
                "upstreams = [\"a\"]\n[plugin]\npath = \"{}\"\n",
                garbage.display()
            ),
        ),
        (
            "no_table",
            "upstreams = [\"gone\"]\n[sql]\nquery = \"SELECT id FROM gone_changes\"\n",
        ),
        (
            "bad_filter",
            "upstreams = [\"filtered\"]\n[sql]\nquery = \"SELECT id FROM filtered_changes\"\n",
        ),
        (
            "good",
            "upstreams = [\"a\"]\n[sql]\nquery = \"SELECT id FROM a_changes\"\n",
        ),
        // validate runs the plugin's init on the pipeline and its [plugin.config]: a
        // config of the wrong type, a key column the upstream lacks, a key the plugin
        // does not produce and upstreams it does not read all fail here.
        (
            "bad_config",
            &format!(
                "upstreams = [\"a\"]\n[plugin]\npath = \"{}\"\n[plugin.config]\nkey_column = 5\n",
                every_key.display()
            ),
        ),
        (
            "bad_column",
            &format!(
                "upstreams = [\"a\"]\n[plugin]\npath = \"{}\"\n[plugin.config]\nkey_column = \"nope\"\n",
                every_key.display()
            ),
        ),
        (
            "wrong_plugin",
            &format!(
                "upstreams = [\"a\"]\n[plugin]\npath = \"{}\"\n",
                sp_affiliation.display()
            ),
        ),
        (
            "good_plugin",
            &format!(
                "upstreams = [\"a\"]\n[plugin]\npath = \"{}\"\n[plugin.config]\nkey_column = \"id\"\n",
                every_key.display()
            ),
        ),
    ];
    for (name, body) in files {
        std::fs::write(
            d.join(format!("{name}.toml")),
            format!("name = \"{name}\"\n{body}{}", link.replace("NAME", name)),
        )
        .unwrap();
    }
    let o = dlink().arg("validate").arg(d).output().unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}\n{err}");
    let f = |name: &str| d.join(format!("{name}.toml")).display().to_string();
    for want in [
        format!(
            "{}:2: upstream 'nope' is not in the catalog",
            f("bad_upstream")
        ),
        format!("{}:4: [sql] query of pipeline 'bad_sql'", f("bad_sql")),
        format!(
            "{}:4: [sql] query of pipeline 'bad_key': returns no key column 'id'",
            f("bad_key")
        ),
        format!("{}:4: plugin {}", f("bad_plugin"), garbage.display()),
        "upstream 'gone'".to_string(),
        "upstream 'filtered': the catalog's filter `no_such_column > 1` is not a valid predicate"
            .to_string(),
    ] {
        assert!(err.contains(&want), "missing {want:?} in:\n{err}");
    }
    assert!(err.contains("missing_col"), "DataFusion's message: {err}");
    for (name, plugin, why) in [
        ("bad_config", &every_key, "[plugin.config]: invalid type: integer `5`, expected a string"),
        ("bad_column", &every_key, "table 'a' has no column 'nope'"),
        (
            "wrong_plugin",
            &sp_affiliation,
            "pipeline 'wrong_plugin' declares the key (id int64) in [link] keys, but this plugin produces (diasng_id int64)",
        ),
    ] {
        let want = format!(
            "{}:4: plugin {}: init rejected the pipeline: {why}",
            f(name),
            plugin.display()
        );
        assert!(err.contains(&want), "missing {want:?} in:\n{err}");
    }
    assert!(
        out.contains(&format!(
            "pipeline 'good_plugin': plugin {} speaks dlink:pipeline@0.3.0; init accepted the pipeline",
            every_key.display()
        )),
        "{out}"
    );
    assert!(
        !err.contains("good.toml") && !err.contains("good_plugin.toml"),
        "the valid pipelines have no problem: {err}"
    );
    assert!(out.contains(" problem"), "{out}");
}

/// The end of `run FOLDER` on one CPU shared with a busy process, where a run once
/// committed every pipeline's last batch and then hung before its summary: 12 runs of
/// four pipelines (six batches each, `--jobs` 1, 2 and 4), each of which must print its
/// summary and exit within a minute.
#[tokio::test(flavor = "multi_thread")]
async fn the_end_of_a_folder_run_under_cpu_contention_never_hangs() {
    if std::process::Command::new("taskset")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "SKIPPED: `taskset` (util-linux) is not installed; the contention stress needs it"
        );
        return;
    }
    let ws = common::Workspace::new();
    common::sp_history(&ws).await;
    for name in ["pa", "pb", "pc", "pd"] {
        ws.pipeline(
            name,
            name,
            &["spmaster", "affiliation"],
            &plugin("sp_affiliation"),
            "diasng_id",
            1,
        );
    }
    // A busy loop on the same CPU.
    let hog = std::process::Command::new("taskset")
        .args(["-c", "0", "sh", "-c", "while :; do :; done"])
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _hog = Kill(hog);
    for i in 0..12 {
        let _ = std::fs::remove_dir_all(ws.path().join("links"));
        let jobs = [1, 2, 4][i % 3].to_string();
        let o = common::output_within(
            std::process::Command::new("taskset")
                .args(["-c", "0"])
                .arg(env!("CARGO_BIN_EXE_dlink-rt"))
                .env("DLINK_CACHE_DIR", common::cache_dir())
                .args(["run", "--jobs", &jobs])
                .arg(ws.path()),
            std::time::Duration::from_secs(60),
        );
        let (out, err) = text(&o);
        assert!(o.status.success(), "run {i}:\n{out}\n{err}");
        assert!(
            out.contains("4 pipelines: 24 batches committed, 0 failed"),
            "run {i} printed its summary:\n{out}\n{err}"
        );
    }
}
