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
