//! `dlink-rt plugin new`: a scaffolded crate builds and passes its own sample.

use super::*;

/// The target folder the test's own cargo uses (the scaffold reuses the compiled
/// dependencies of the example plugins there).
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .unwrap()
            .to_path_buf(),
    }
}

#[test]
fn plugin_new_scaffolds_a_crate_that_builds_and_passes_its_own_sample() {
    let dir = tempfile::tempdir().unwrap();
    let name = "tooling_scaffold_check";
    // Outside any checkout: the SDK is the one of the source dlink-rt was built from.
    let o = dlink()
        .current_dir(dir.path())
        .args([
            "plugin",
            "new",
            name,
            "--upstream",
            "orders",
            "--upstream",
            "customers",
            "--key",
            "order_id:long",
        ])
        .output()
        .unwrap();
    let out = ok(&o);
    assert!(
        out.contains("cargo build --release --target wasm32-wasip2"),
        "{out}"
    );
    assert!(
        out.contains("--changes sample/orders.json sample/customers.json"),
        "{out}"
    );
    let crate_dir = dir.path().join(name);
    let sdk = std::fs::canonicalize(repo_root().join("plugins/sdk")).unwrap();
    let manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap();
    assert!(
        manifest.contains(&format!(
            "dlink-plugin-sdk = {{ path = \"{}\" }}",
            sdk.display()
        )),
        "{manifest}"
    );
    assert!(manifest.contains("[workspace]") && manifest.contains("crate-type = [\"cdylib\"]"));
    let lib = std::fs::read_to_string(crate_dir.join("src/lib.rs")).unwrap();
    assert!(
        lib.contains("fn derive(batch: &Batch, keys: &mut Keys)"),
        "{lib}"
    );
    assert!(lib.contains("KeyColumn::i64(\"order_id\")"), "{lib}");

    // Never over an existing folder; bad names are usage errors.
    let again = dlink()
        .current_dir(dir.path())
        .args(["plugin", "new", name])
        .output()
        .unwrap();
    assert!(fails(&again, 1).contains("already exists"));
    let bad = dlink()
        .current_dir(dir.path())
        .args(["plugin", "new", "Bad Name"])
        .output()
        .unwrap();
    assert!(fails(&bad, 2).contains("not a crate name"));
    let bad = dlink()
        .current_dir(dir.path())
        .args(["plugin", "new", "x", "--sdk", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(fails(&bad, 2).contains("no dlink-plugin-sdk crate there"));
    assert!(!dir.path().join("x").exists());

    let target = target_dir();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let started = Instant::now();
    let build = std::process::Command::new(cargo)
        .current_dir(&crate_dir)
        .env("CARGO_TARGET_DIR", &target)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .output()
        .unwrap();
    let (bout, berr) = text(&build);
    println!(
        "plugin new: cargo build --release --target wasm32-wasip2 of the scaffold took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        build.status.success(),
        "the scaffold builds:\n{bout}\n{berr}"
    );
    // Take the component out of the shared target folder: `make plugins` copies every
    // .wasm there into plugins/dist.
    let release = target.join("wasm32-wasip2/release");
    let wasm = dir.path().join(format!("{name}.wasm"));
    std::fs::copy(release.join(format!("{name}.wasm")), &wasm).unwrap();
    let _ = std::fs::remove_file(release.join(format!("{name}.wasm")));
    let _ = std::fs::remove_file(release.join(format!("{name}.d")));

    let o = plugin_test(
        &crate_dir,
        &[
            wasm.to_str().unwrap(),
            "--changes",
            "sample/orders.json",
            "sample/customers.json",
            "--key",
            "order_id:long",
        ],
    );
    let expected = "\
order_id  dlink_upstreams   dlink_change_ts
1         customers,orders  2024-05-01T12:00:00Z
2         customers,orders  2024-05-01T12:05:00Z
3         customers,orders  2024-05-01T12:10:00Z
";
    assert_eq!(ok(&o), expected);
    let readme = std::fs::read_to_string(crate_dir.join("README.md")).unwrap();
    let indented: String = expected.lines().map(|l| format!("    {l}\n")).collect();
    assert!(
        readme.contains(&indented),
        "the README shows the output:\n{readme}"
    );
}
