//! The example configuration: every file in configs/ loads, and the JSON Schemas in
//! configs/schemas are the ones `dlink-rt schema` prints (regenerate them with
//! `dlink-rt schema --out configs/schemas` after changing the file formats).

mod common;

use common::{dlink, repo_root, text};
use dlink_rt::config::{Catalog, Pipeline};

#[test]
fn every_example_config_loads() {
    let dir = repo_root().join("configs");
    let catalog = Catalog::load(&dir.join("upstreams.toml")).unwrap();
    assert_eq!(catalog.upstreams.len(), 6);
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") && !p.ends_with("upstreams.toml") {
            let pipeline = Pipeline::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert!(pipeline.enabled);
            n += 1;
        }
    }
    assert_eq!(n, 4, "the four example pipelines");
}

#[test]
fn committed_schemas_are_current() {
    for kind in ["catalog", "pipeline"] {
        let o = dlink().args(["schema", kind]).output().unwrap();
        let (out, err) = text(&o);
        assert!(o.status.success(), "{err}");
        let printed: serde_json::Value = serde_json::from_str(&out).unwrap();
        let path = repo_root().join(format!("configs/schemas/{kind}.schema.json"));
        let committed: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(
            printed,
            committed,
            "{} is stale: run `dlink-rt schema --out configs/schemas`",
            path.display()
        );
        // The schema forbids what the parser forbids.
        assert_eq!(committed["additionalProperties"], false, "{kind}");
    }
}

/// The README's path: `make demo` writes `./demo-data` beside `configs/`, and then
/// `dlink-rt validate configs/` and `dlink-rt run configs/x.toml` work as they are, from
/// another working directory and without `DLINK_DATA`.
#[test]
fn example_configs_find_the_demo_data_without_dlink_data() {
    let root = tempfile::tempdir().unwrap();
    let configs = root.path().join("configs");
    std::fs::create_dir(&configs).unwrap();
    for e in std::fs::read_dir(repo_root().join("configs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            std::fs::copy(&p, configs.join(p.file_name().unwrap())).unwrap();
        }
    }
    // The plugins resolve as `../plugins/dist/*.wasm` from the pipeline files.
    std::os::unix::fs::symlink(repo_root().join("plugins"), root.path().join("plugins")).unwrap();
    let demo = dlink()
        .env_remove("DLINK_DATA")
        .current_dir(root.path())
        .args(["demo", "--rows", "1"])
        .output()
        .unwrap();
    let (out, err) = text(&demo);
    assert!(demo.status.success(), "demo: {out}\n{err}");
    assert!(
        root.path().join("demo-data/spmaster/_delta_log").is_dir(),
        "{out}"
    );

    let elsewhere = tempfile::tempdir().unwrap();
    let validate = dlink()
        .env_remove("DLINK_DATA")
        .current_dir(elsewhere.path())
        .arg("validate")
        .arg(&configs)
        .output()
        .unwrap();
    let (out, err) = text(&validate);
    assert!(validate.status.success(), "validate: {out}\n{err}");
    assert!(!err.contains("no Delta table here"), "{err}");

    // The demo committed everything; a run of one file finds its link table there.
    let run = dlink()
        .env_remove("DLINK_DATA")
        .current_dir(elsewhere.path())
        .arg("run")
        .arg(configs.join("emp_dept.toml"))
        .output()
        .unwrap();
    let (out, err) = text(&run);
    assert!(run.status.success(), "run: {out}\n{err}");
    assert!(
        out.contains("emp_dept: up to date, nothing committed"),
        "the demo's batches are not redone: {out}"
    );
}

/// The environment variables a user may set are the command line's, shown in `--help`.
#[test]
fn environment_variables_are_documented_options() {
    let o = dlink().arg("--help").output().unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("[env: DLINK_CACHE_DIR="), "{out}");
    assert!(out.contains("--wasm-profiler"), "{out}");
    assert!(out.contains("[env: DLINK_WASM_PROFILER="), "{out}");
    let o = dlink().args(["demo", "--help"]).output().unwrap();
    assert!(text(&o).0.contains("[env: DLINK_DATA="), "{}", text(&o).0);
    // A wrong value is refused by name, not ignored.
    let o = dlink()
        .env("DLINK_WASM_PROFILER", "vtune")
        .args(["schema", "catalog"])
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("vtune") && err.contains("perfmap"), "{err}");
}

/// The library's plugin host reads no environment: what it caches where is the
/// builder's (the command line's) choice.
#[test]
fn plugin_host_reads_no_environment() {
    let cache = tempfile::tempdir().unwrap();
    // SAFETY of set_var: this test binary's other tests do not read the variable.
    std::env::set_var("DLINK_CACHE_DIR", cache.path());
    let host = dlink_rt::plugin::PluginHost::new(None).unwrap();
    host.compile(&common::plugin("sp_affiliation")).unwrap();
    assert_eq!(
        std::fs::read_dir(cache.path()).unwrap().count(),
        0,
        "the host cached into $DLINK_CACHE_DIR"
    );
    let host = dlink_rt::plugin::PluginHost::builder()
        .cache_dir(Some(cache.path().to_path_buf()))
        .build()
        .unwrap();
    host.compile(&common::plugin("sp_affiliation")).unwrap();
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 1);
}

/// An editor shows each setting's default: the schemas carry the values the parser
/// falls back to.
#[test]
fn schemas_show_the_defaults() {
    let read = |kind: &str| -> serde_json::Value {
        let p = repo_root().join(format!("configs/schemas/{kind}.schema.json"));
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    let pipeline = read("pipeline");
    let props = &pipeline["properties"];
    assert_eq!(
        props["batch_size"]["default"],
        dlink_rt::config::DEFAULT_BATCH_SIZE
    );
    assert_eq!(props["enabled"]["default"], true);
    assert_eq!(
        props["catalog"]["default"],
        dlink_rt::config::DEFAULT_CATALOG
    );
    let text = pipeline.to_string();
    assert!(text.contains("\"default\":60000"), "plugin limits: {text}");
    assert!(
        text.contains(&format!(
            "\"default\":{}",
            dlink_rt::config::DEFAULT_MERGE_SMALL_FILES
        )),
        "merge_small_files"
    );
    let catalog = read("catalog").to_string();
    assert!(
        catalog.contains("\"default\":[\"insert\",\"update_preimage\""),
        "{catalog}"
    );
}
