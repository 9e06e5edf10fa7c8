//! The files `plugin new` writes: Cargo.toml, src/lib.rs and README.md.

use dlink_rt::config::{KeyColumn, KeyType};

use super::*;

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

pub(super) fn cargo_toml(name: &str, sdk_path: &str) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"
publish = false

[lib]
# A plugin is a WebAssembly component: for wasm32-wasip2 rustc links a cdylib into one.
crate-type = ["cdylib"]

[dependencies]
dlink-plugin-sdk = {{ path = {sdk} }}

# Its own workspace, so the crate builds wherever the folder is, also inside another
# Cargo workspace.
[workspace]

# As in dlink-rt's plugins/Cargo.toml: fat LTO and one codegen unit give a smaller
# component, which the host also compiles faster.
[profile.release]
opt-level = 3
strip = true
lto = true
codegen-units = 1
"#,
        sdk = toml_string(sdk_path)
    )
}

pub(super) fn key_getter(k: &KeyColumn) -> String {
    match k.ty {
        KeyType::Long | KeyType::Int => format!("row.i64({:?})?", k.name),
        KeyType::String => format!("row.str({:?})?", k.name),
    }
}

/// The scaffold's Rust for its keys: the `expect_keys` argument and the statement that
/// adds a row's key, laid out as rustfmt would (one line when short, else one item per
/// line).
fn key_code(keys: &[KeyColumn]) -> (String, String) {
    let key_items: Vec<String> = keys
        .iter()
        .map(|k| {
            let ctor = match k.ty {
                KeyType::Long => "i64",
                KeyType::Int => "i32",
                KeyType::String => "utf8",
            };
            format!("KeyColumn::{ctor}({:?})", k.name)
        })
        .collect();
    let key_decl = format!("[{}]", key_items.join(", "));
    let key_decl = if key_decl.len() <= 60 {
        key_decl
    } else {
        format!("[\n        {},\n    ]", key_items.join(",\n        "))
    };
    let getters: Vec<String> = keys.iter().map(key_getter).collect();
    let key_expr = if keys.len() == 1 {
        getters.join("")
    } else {
        format!("({})", getters.join(", "))
    };
    let add = if key_expr.len() + 6 <= 60 {
        format!("keys.add_from(&row, {key_expr})?;")
    } else if key_expr.len() <= 60 {
        format!("keys.add_from(\n            &row,\n            {key_expr},\n        )?;")
    } else {
        format!(
            "keys.add_from(\n            &row,\n            (\n                {},\n            ),\n        )?;",
            getters.join(",\n                ")
        )
    };
    (key_decl, add)
}

pub(super) fn lib_rs(
    name: &str,
    ty: &str,
    keys: &[KeyColumn],
    upstreams: &[String],
    test_cmd: &str,
) -> String {
    let (key_decl, add) = key_code(keys);
    let key_doc = keys
        .iter()
        .map(|k| format!("`{}` ({})", k.name, key_type_name(k.ty)))
        .collect::<Vec<_>>()
        .join(", ");
    let upstream_doc = upstreams
        .iter()
        .map(|u| format!("`{u}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let checks: String = upstreams
        .iter()
        .map(|u| format!("        pipeline.upstream({u:?})?;\n"))
        .collect();
    let loops = upstreams
        .iter()
        .map(|u| {
            format!(
                "    // A changed `{u}` row affects the key it holds.\n    \
                 for row in batch.changes({u:?})?.rows() {{\n        \
                 {add}\n    \
                 }}\n"
            )
        })
        .collect::<Vec<_>>()
        .join("\n");
    format!(
        r#"//! `{name}`: a dlink-rt pipeline plugin (a WebAssembly component).
//!
//! Upstreams: {upstream_doc}. Key: {key_doc}.
//!
//! Build it and run it on the sample change rows:
//!
//! ```sh
//! cargo build --release --target wasm32-wasip2
//! {test_cmd}
//! ```

use dlink_plugin_sdk::{{
    export_pipeline, Batch, Error, KeyColumn, Keys, NoConfig, Pipeline, PipelineInfo,
}};

struct {ty};

impl Pipeline for {ty} {{
    /// The pipeline's `[plugin.config]`: none. To take one, name a struct that derives
    /// `serde::Deserialize` here (and add `serde` with its `derive` feature).
    type Config = NoConfig;

    /// Checks once that the pipeline is one this plugin serves (`dlink-rt validate`
    /// runs it too): its key columns, as `[link] keys` declares them, and upstreams.
    fn init(_config: NoConfig, pipeline: &PipelineInfo) -> Result<Self, Error> {{
        pipeline.expect_keys(&{key_decl})?;
{checks}        Ok({ty})
    }}

    fn derive(&mut self, batch: &Batch, keys: &mut Keys) -> Result<(), Error> {{
        derive(batch, keys)
    }}
}}

/// The affected keys of one batch of change rows.
///
/// Every change row counts: `insert`, `delete` and BOTH images of an update
/// (`update_preimage`, `update_postimage`). An update that changes a join column affects
/// the old partner (the pre-image) and the new one (the post-image).
fn derive(batch: &Batch, keys: &mut Keys) -> Result<(), Error> {{
{loops}
    // To follow a change through a join, look up the rows of another table (an
    // upstream or a lookup table of the pipeline) as of the batch's version; e.g. every
    // employee of a changed department, caused by that department's change:
    //
    //     keys.add_through(batch.changes("department")?, "dept_id", "employee", "dept_id")?;
    //
    // and give `dlink-rt plugin test` the table's rows with --table employee=FILE.
    Ok(())
}}

export_pipeline!({ty});
"#
    )
}

pub(super) fn readme(
    name: &str,
    artifact: &str,
    keys: &[KeyColumn],
    upstreams: &[String],
    test_cmd: &str,
    expected: &str,
) -> String {
    let ups = upstreams
        .iter()
        .map(|u| toml_string(u))
        .collect::<Vec<_>>()
        .join(", ");
    let key_toml = keys
        .iter()
        .map(|k| {
            format!(
                "{{ name = {}, type = \"{}\" }}",
                toml_string(&k.name),
                key_type_name(k.ty)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let indented = expected
        .lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n");
    format!(
        r#"# {name}

A dlink-rt pipeline plugin, written with the dlink-plugin-sdk (see `plugins/README.md`
in the dlink-rt repository). Its logic is the function `derive` in `src/lib.rs`: it
gets every upstream's change rows of a batch (Delta Change Data Feed rows: `insert`,
`update_preimage`, `update_postimage`, `delete`) and records the pipeline's affected
keys.

## Build

    rustup target add wasm32-wasip2   # once
    cargo build --release --target wasm32-wasip2

The component is `target/wasm32-wasip2/release/{artifact}.wasm` (under
`$CARGO_TARGET_DIR` when that is set).

## Test

`dlink-rt plugin test` runs the component in the host's sandbox on change rows written
by hand, one JSON or CSV file per upstream (named after the upstream, or given as
`UPSTREAM=FILE`), and prints the affected keys:

    {test_cmd}

prints

{indented}

Change rows may set `_change_type` (default `insert`), `_commit_version` (default 1) and
`_commit_timestamp`. Give the rows of looked-up tables with `--table NAME=FILE`, the
plugin's config with `--config '{{...}}'`, and check the key types with
`--key COLUMN:TYPE`; `dlink-rt plugin test --help` tells the rest.

## Use it in a pipeline

```toml
name = "{artifact}"
upstreams = [{ups}]

[plugin]
path = "path/to/{artifact}.wasm"

[link]
uri = "links/{artifact}"
keys = [{key_toml}]
```
"#
    )
}
