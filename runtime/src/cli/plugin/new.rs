//! `dlink-rt plugin new NAME`: write a plugin crate that builds as is.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use dlink_rt::config::{KeyColumn, KeyType};

use super::output::{render_table, KeyRow, KeyValue};
use super::templates::{cargo_toml, lib_rs, readme};
use super::*;

/// Names cargo refuses for a package, or that clash in a target folder.
pub(super) const RESERVED: [&str; 10] = [
    "test",
    "std",
    "core",
    "alloc",
    "proc_macro",
    "build",
    "deps",
    "examples",
    "incremental",
    "dlink_plugin_sdk",
];

pub(super) const KEYWORDS: [&str; 51] = [
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern",
    "false", "fn", "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub",
    "ref", "return", "self", "static", "struct", "super", "trait", "true", "type", "unsafe", "use",
    "where", "while", "abstract", "become", "box", "do", "final", "gen", "macro", "override",
    "priv", "try", "typeof", "unsized", "virtual", "yield",
];

pub(super) fn check_crate_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    let first_ok = name.chars().next().is_some_and(|c| c.is_ascii_lowercase());
    if !ok_chars || !first_ok || name.len() > 64 {
        return Err(format!(
            "'{name}' is not a crate name for a plugin: use lower-case letters, digits, `_` and `-`, \
             starting with a letter (at most 64), e.g. orders_by_customer"
        ));
    }
    let artifact = name.replace('-', "_");
    if KEYWORDS.contains(&artifact.as_str()) || RESERVED.contains(&artifact.as_str()) {
        return Err(format!(
            "'{name}' is a Rust keyword or a name cargo reserves; pick another"
        ));
    }
    Ok(())
}

/// `orders_by-customer` -> `OrdersByCustomer`; a name the SDK exports gets `Plugin`.
pub(super) fn type_name(name: &str) -> String {
    let mut out = String::new();
    for part in name.split(['_', '-']).filter(|p| !p.is_empty()) {
        let mut chars = part.chars();
        if let Some(c) = chars.next() {
            out.push(c.to_ascii_uppercase());
            out.extend(chars);
        }
    }
    if ["Batch", "KeyColumn", "Keys", "Pipeline", "Config", "Row"].contains(&out.as_str()) {
        out.push_str("Plugin");
    }
    out
}

pub(super) fn is_sdk(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
        return false;
    };
    let Ok(manifest) = toml::from_str::<toml::Table>(&text) else {
        return false;
    };
    manifest
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        == Some("dlink-plugin-sdk")
}

/// The SDK folder: `--sdk`, else `plugins/sdk` in the current folder or above, else
/// the one of the source tree this binary was built from.
pub(super) fn find_sdk(explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = explicit {
        let dir = if p.file_name().is_some_and(|n| n == "Cargo.toml") {
            p.parent().unwrap_or(Path::new("."))
        } else {
            p
        };
        if !is_sdk(dir) {
            return Err(format!(
                "--sdk {}: no dlink-plugin-sdk crate there; give the folder holding its Cargo.toml \
                 (plugins/sdk in a dlink-rt checkout)",
                p.display()
            ));
        }
        return std::fs::canonicalize(dir).map_err(|e| format!("--sdk {}: {e}", p.display()));
    }
    let mut looked = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        for dir in cwd.ancestors() {
            let sdk = dir.join("plugins").join("sdk");
            if is_sdk(&sdk) {
                return std::fs::canonicalize(&sdk).map_err(|e| format!("{}: {e}", sdk.display()));
            }
        }
        looked.push(format!("plugins/sdk in {} and above", cwd.display()));
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("plugins")
        .join("sdk");
    if is_sdk(&built) {
        return std::fs::canonicalize(&built).map_err(|e| format!("{}: {e}", built.display()));
    }
    looked.push(format!(
        "{} (the source dlink-rt was built from)",
        built.display()
    ));
    Err(format!(
        "cannot find the plugin SDK (crate dlink-plugin-sdk); looked for {}. Pass --sdk PATH \
         with PATH the plugins/sdk folder of a dlink-rt checkout",
        looked.join(" and ")
    ))
}

/// How the new crate's Cargo.toml names the SDK: relative when both are in the same
/// checkout (the folder above `plugins/`), else absolute.
pub(super) fn sdk_dependency_path(crate_dir: &Path, sdk: &Path) -> String {
    if let Some(root) = sdk.parent().and_then(Path::parent) {
        if let (Ok(inside), Ok(sdk_rel)) = (crate_dir.strip_prefix(root), sdk.strip_prefix(root)) {
            let ups = inside.components().count();
            let mut parts: Vec<String> = vec!["..".to_string(); ups];
            parts.extend(
                sdk_rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned()),
            );
            return parts.join("/");
        }
    }
    sdk.to_string_lossy().into_owned()
}

/// The sample rows: (change type, commit version, commit timestamp, note) of rows
/// holding the keys 1, 2, 3.
pub(super) const SAMPLE: [(&str, i64, &str, &str); 4] = [
    ("insert", 1, "2024-05-01T12:00:00Z", "a new row"),
    (
        "update_preimage",
        2,
        "2024-05-01T12:05:00Z",
        "before an update",
    ),
    (
        "update_postimage",
        2,
        "2024-05-01T12:05:00Z",
        "after the update",
    ),
    ("delete", 3, "2024-05-01T12:10:00Z", "a deleted row"),
];

/// Key number `n` (1..=3) of column `k` in the samples.
pub(super) fn sample_key(k: &KeyColumn, n: i64) -> KeyValue {
    match k.ty {
        KeyType::Long | KeyType::Int => KeyValue::Int(n),
        KeyType::String => KeyValue::Str(format!("k{n}")),
    }
}

pub(super) fn sample_changes(keys: &[KeyColumn]) -> String {
    let note = if keys.iter().any(|k| k.name == "note") {
        "note_"
    } else {
        "note"
    };
    let rows: Vec<String> = SAMPLE
        .iter()
        .map(|(change, version, ts, text)| {
            let n = *version;
            let mut fields: Vec<String> = keys
                .iter()
                .map(|k| {
                    format!(
                        "{}: {}",
                        serde_json::Value::from(k.name.as_str()),
                        sample_key(k, n).json()
                    )
                })
                .collect();
            fields.push(format!("\"{note}\": \"{text}\""));
            fields.push(format!("\"_change_type\": \"{change}\""));
            fields.push(format!("\"_commit_version\": {version}"));
            fields.push(format!("\"_commit_timestamp\": \"{ts}\""));
            format!("  {{{}}}", fields.join(", "))
        })
        .collect();
    format!("[\n{}\n]\n", rows.join(",\n"))
}

/// What `plugin test` prints for the samples.
pub(super) fn sample_output(keys: &[KeyColumn], upstreams: &[String]) -> String {
    let mut causes = upstreams.to_vec();
    causes.sort();
    let rows: Vec<KeyRow> = [(1, 0), (2, 1), (3, 3)]
        .iter()
        .map(|(n, sample)| KeyRow {
            key: keys.iter().map(|k| sample_key(k, *n)).collect(),
            upstreams: causes.clone(),
            change_ts: fixtures_time(SAMPLE[*sample].2),
        })
        .collect();
    render_table(
        &keys.iter().map(|k| k.name.clone()).collect::<Vec<_>>(),
        &rows,
    )
}

pub(super) fn fixtures_time(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_micros())
}

pub(super) fn new(args: &NewArgs) -> Result<(), Fail> {
    check_crate_name(&args.name).map_err(Fail::Usage)?;
    let keys = checked_keys(args)?;
    let upstreams = checked_upstreams(args)?;
    let sdk = find_sdk(args.sdk.as_deref()).map_err(Fail::Usage)?;

    let target = args.dir.join(&args.name);
    if target.exists() {
        return Err(Fail::Failed(format!(
            "{} already exists; nothing was written (pick another name or --dir)",
            target.display()
        )));
    }
    std::fs::create_dir_all(&args.dir)
        .map_err(|e| Fail::Failed(format!("cannot create {}: {e}", args.dir.display())))?;
    let parent = std::fs::canonicalize(&args.dir)
        .map_err(|e| Fail::Failed(format!("{}: {e}", args.dir.display())))?;
    let crate_dir = parent.join(&args.name);
    let sdk_path = sdk_dependency_path(&crate_dir, &sdk);

    let artifact = args.name.replace('-', "_");
    let samples: Vec<String> = upstreams
        .iter()
        .map(|u| format!("sample/{u}.json"))
        .collect();
    let wasm = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(_) => format!("$CARGO_TARGET_DIR/wasm32-wasip2/release/{artifact}.wasm"),
        None => format!("target/wasm32-wasip2/release/{artifact}.wasm"),
    };
    let key_args: String = keys
        .iter()
        .map(|k| format!(" --key {}:{}", k.name, key_type_name(k.ty)))
        .collect();
    let test_cmd = |wasm: &str| {
        format!(
            "dlink-rt plugin test {wasm} --changes {}{key_args}",
            samples.join(" ")
        )
    };
    let doc_cmd = test_cmd(&format!("target/wasm32-wasip2/release/{artifact}.wasm"));
    let expected = sample_output(&keys, &upstreams);

    let mut files: Vec<(PathBuf, String)> = vec![
        ("Cargo.toml".into(), cargo_toml(&args.name, &sdk_path)),
        (
            "src/lib.rs".into(),
            lib_rs(
                &args.name,
                &type_name(&args.name),
                &keys,
                &upstreams,
                &doc_cmd,
            ),
        ),
        (
            "README.md".into(),
            readme(
                &args.name, &artifact, &keys, &upstreams, &doc_cmd, &expected,
            ),
        ),
        (".gitignore".into(), "/target\n".into()),
        // As plugins/.cargo/config.toml: WebAssembly SIMD and bulk memory, which
        // wasmtime runs, make the guest's Arrow copies faster.
        (
            ".cargo/config.toml".into(),
            "[target.wasm32-wasip2]\nrustflags = [\"-C\", \"target-feature=+simd128,+bulk-memory\"]\n"
                .into(),
        ),
    ];
    for path in &samples {
        files.push((path.into(), sample_changes(&keys)));
    }
    files.extend(sdk_lock(&sdk));

    write_crate(&crate_dir, &target, &files)?;

    print_next_steps(args, &target, &sdk, &test_cmd(&wasm));
    Ok(())
}

/// The SDK workspace's lock file, which pins the versions the SDK is tested with (and
/// lets the build reuse what building the SDK's own plugins compiled), if readable.
fn sdk_lock(sdk: &std::path::Path) -> Option<(PathBuf, String)> {
    let lock = sdk.parent()?.join("Cargo.lock");
    let text = std::fs::read_to_string(lock).ok()?;
    Some(("Cargo.lock".into(), text))
}

/// What to do with the new crate.
fn print_next_steps(
    args: &NewArgs,
    target: &std::path::Path,
    sdk: &std::path::Path,
    test_cmd: &str,
) {
    println!(
        "Created the plugin crate '{}' in {} (dlink-plugin-sdk from {}).",
        args.name,
        target.display(),
        sdk.display()
    );
    println!();
    println!("Build it and run it on its sample changes:");
    println!();
    println!("    cd {}", target.display());
    println!("    cargo build --release --target wasm32-wasip2   # once before: rustup target add wasm32-wasip2");
    println!("    {test_cmd}");
    println!();
    println!("Its logic is `derive` in src/lib.rs; README.md shows the expected output.");
}

/// `--key` (default `id:long`), at most 4 columns.
fn checked_keys(args: &NewArgs) -> Result<Vec<KeyColumn>, Fail> {
    let keys = if args.keys.is_empty() {
        vec![KeyColumn {
            name: "id".into(),
            ty: KeyType::Long,
        }]
    } else {
        parse_keys(&args.keys).map_err(Fail::Usage)?
    };
    if keys.len() > 4 {
        return Err(Fail::Usage(format!(
            "--key: {} key columns; the SDK's composite keys have at most 4",
            keys.len()
        )));
    }
    Ok(keys)
}

/// `--upstream` (default `source`): catalog names, each once.
fn checked_upstreams(args: &NewArgs) -> Result<Vec<String>, Fail> {
    let upstreams = if args.upstreams.is_empty() {
        vec!["source".to_string()]
    } else {
        args.upstreams.clone()
    };
    let mut seen = BTreeSet::new();
    for u in &upstreams {
        if !is_identifier(u) {
            return Err(Fail::Usage(format!(
                "--upstream '{u}': an upstream name is lower-case letters, digits and `_` (as in the catalog)"
            )));
        }
        if !seen.insert(u) {
            return Err(Fail::Usage(format!("--upstream '{u}' is given twice")));
        }
    }
    Ok(upstreams)
}

/// Creates `crate_dir` (which must not exist) and writes `files` into it; on a failure
/// it leaves nothing behind.
fn write_crate(
    crate_dir: &std::path::Path,
    target: &std::path::Path,
    files: &[(PathBuf, String)],
) -> Result<(), Fail> {
    match std::fs::create_dir(crate_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Fail::Failed(format!(
                "{} already exists; nothing was written (pick another name or --dir)",
                target.display()
            )))
        }
        Err(e) => {
            return Err(Fail::Failed(format!(
                "cannot create {}: {e}",
                target.display()
            )))
        }
    }
    let write_all = || -> std::io::Result<()> {
        for (rel, text) in files {
            let p = crate_dir.join(rel);
            if let Some(dir) = p.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&p, text)?;
        }
        Ok(())
    };
    if let Err(e) = write_all() {
        // Only this run created the folder: take it away again.
        let _ = std::fs::remove_dir_all(crate_dir);
        return Err(Fail::Failed(format!(
            "cannot write {}: {e}; nothing was left behind",
            target.display()
        )));
    }
    Ok(())
}
