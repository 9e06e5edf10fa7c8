//! Compiled components are cached by content hash: a second start (a new engine, as
//! in a new process) with the same plugins compiles nothing. Prints cold and warm
//! start times; `DLINK_START_PLUGINS=20` measures with 20 distinct plugins.

mod common;

use std::time::Instant;

use dlink_rt::plugin::{Origin, PluginHost};

#[test]
fn second_start_compiles_nothing() {
    let n: usize = std::env::var("DLINK_START_PLUGINS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let base = std::fs::read(root.join("plugins/dist/sp_affiliation.wasm"))
        .expect("plugins/dist/sp_affiliation.wasm: run `make build` first");
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let files: Vec<_> = (0..n)
        .map(|i| {
            let p = dir.path().join(format!("p{i}.wasm"));
            std::fs::write(&p, common::new_version_of(&base, &i.to_string())).unwrap();
            p
        })
        .collect();

    let start = |label: &str| {
        let t = Instant::now();
        let host = PluginHost::new(Some(cache.clone())).unwrap();
        let origins: Vec<Origin> = files
            .iter()
            .map(|f| host.compile(f).unwrap().origin)
            .collect();
        let ms = t.elapsed().as_millis();
        eprintln!(
            "{label} start with {n} plugins: {ms} ms ({} ms per plugin)",
            ms / n as u128
        );
        origins
    };
    let cold = start("cold");
    assert!(cold.iter().all(|o| *o == Origin::Compiled), "{cold:?}");
    let warm = start("warm");
    assert!(
        warm.iter().all(|o| *o == Origin::Cached),
        "the second start compiled: {warm:?}"
    );
    let entries = std::fs::read_dir(&cache).unwrap().count();
    assert_eq!(entries, n, "one cache entry per distinct plugin");
}
