//! `dlink-rt plugin new NAME` and `dlink-rt plugin test PLUGIN.wasm --changes FILE...`:
//! tooling for plugin authors.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use deltalake::arrow::array::{ArrayRef, AsArray};
use deltalake::arrow::datatypes::{DataType, Int32Type, Int64Type};
use dlink_rt::config::{KeyColumn, KeyType, Limits, PluginSpec};
use dlink_rt::fixtures::{self, MemoryLookup};
use dlink_rt::keys::{AffectedKeys, UPSTREAM};
use dlink_rt::plugin::{PluginHost, UpstreamInput};

use super::{EXIT_CONFIG, EXIT_FAILED};

/// Write a new plugin crate, or run a plugin on change rows from JSON or CSV files.
#[derive(clap::Args, Debug)]
pub struct PluginArgs {
    #[command(subcommand)]
    command: PluginCommand,
}

#[derive(clap::Subcommand, Debug)]
enum PluginCommand {
    /// Write a plugin crate that builds as is, its logic in a function named `derive`.
    ///
    /// Writes the folder NAME (in --dir) with Cargo.toml (a cdylib depending on the
    /// dlink-plugin-sdk by path, its own workspace and the release profile of
    /// dlink-rt's plugins), src/lib.rs, README.md and one sample changes file per
    /// upstream, sample/UPSTREAM.json. Refuses to touch an existing folder. Then
    /// `cargo build --release --target wasm32-wasip2` in it builds NAME.wasm and
    /// `dlink-rt plugin test` runs it on the samples. Exit codes: 0 success, 1 the folder
    /// exists or cannot be written, 2 bad usage (also: no SDK found).
    New(NewArgs),
    /// Run a plugin on change rows given as JSON or CSV files and print the affected keys.
    ///
    /// Runs PLUGIN.wasm in the host's sandbox on one batch made of the --changes files,
    /// answers its lookups from the --table files (rows whose column is one of the keys,
    /// as a pipeline run does at the batch's version), checks its output like a pipeline
    /// run and prints the affected keys, sorted, with the upstreams that caused them
    /// and the newest commit time among those changes.
    ///
    /// A file is JSON (an array of objects, or one object per line) or CSV (a header
    /// row). Column types are inferred: integers long, other numbers double, true/false
    /// boolean, the rest string. In CSV an empty field is null and "" the empty string;
    /// a header `name:type` fixes a type (long, int, string, double, boolean). Change
    /// rows may give `_change_type` (insert, update_preimage, update_postimage, delete;
    /// default insert), `_commit_version` (default 1) and `_commit_timestamp` (e.g.
    /// 2024-05-01T12:00:00Z; default null).
    ///
    /// Exit codes: 0 success, 1 bad input or a plugin failure, 2 bad usage. The plugin's
    /// log lines show with DLINK_LOG=debug.
    Test(TestArgs),
}

// Options of `plugin new`.
#[derive(clap::Args, Debug)]
pub struct NewArgs {
    /// The crate's name, also its folder's: lower-case letters, digits, `_` and `-`,
    /// starting with a letter. The component is built as NAME.wasm (`-` becomes `_`).
    pub name: String,
    /// Create the crate folder in DIR.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
    /// A key column of the pipeline's link table, as COLUMN:TYPE with TYPE long, int or
    /// string; repeat for a composite key (up to 4). Default: id:long.
    #[arg(long = "key", value_name = "COLUMN:TYPE")]
    pub keys: Vec<String>,
    /// An upstream of the pipeline (its name in the catalog); repeat in the pipeline
    /// file's order. Default: one upstream named `source`.
    #[arg(long = "upstream", value_name = "NAME")]
    pub upstreams: Vec<String>,
    /// The dlink-plugin-sdk crate folder (plugins/sdk of a dlink-rt checkout). Default:
    /// plugins/sdk in the current folder or above, else the one dlink-rt was built from.
    #[arg(long, value_name = "PATH")]
    pub sdk: Option<PathBuf>,
}

// Options of `plugin test`.
#[derive(clap::Args, Debug)]
pub struct TestArgs {
    /// The plugin component (.wasm, built for wasm32-wasip2).
    pub plugin: PathBuf,
    /// Change rows of one upstream; the upstream is named after the file (spmaster.json
    /// is `spmaster`) unless given as UPSTREAM=FILE. One file per upstream, in the
    /// pipeline file's order.
    #[arg(long = "changes", value_name = "[UPSTREAM=]FILE", num_args = 1.., required = true)]
    pub changes: Vec<String>,
    /// An upstream with no change rows in this batch (the plugin still sees it).
    #[arg(long = "upstream", value_name = "NAME")]
    pub empty_upstreams: Vec<String>,
    /// Rows of a table the plugin looks up (an upstream or a lookup table) as of the
    /// batch's version, JSON or CSV; named after the file unless given as NAME=FILE.
    #[arg(long = "table", value_name = "[NAME=]FILE")]
    pub tables: Vec<String>,
    /// A key column the output must have, as COLUMN:TYPE with TYPE long, int or string
    /// (as the pipeline file's [link] keys); repeat for a composite key. Default: every
    /// output column but `_upstream` and `_commit_timestamp`, with its type.
    #[arg(long = "key", value_name = "COLUMN:TYPE")]
    pub keys: Vec<String>,
    /// The plugin's configuration ([plugin.config] of a pipeline file) as a JSON object.
    #[arg(long, value_name = "JSON", default_value = "{}")]
    pub config: String,
    /// The batch id handed to the plugin.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub batch_id: i64,
    /// The pipeline name handed to the plugin. Default: the plugin file's name.
    #[arg(long, value_name = "NAME")]
    pub pipeline: Option<String>,
    /// Print the keys as a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Why a subcommand stopped: bad usage (exit 2) or a failure (exit 1).
enum Fail {
    Usage(String),
    Failed(String),
}

impl Fail {
    fn exit(self) -> ExitCode {
        let (code, msg) = match self {
            Fail::Usage(m) => (EXIT_CONFIG, m),
            Fail::Failed(m) => (EXIT_FAILED, m),
        };
        eprintln!("error: {msg}");
        ExitCode::from(code)
    }
}

pub async fn plugin(args: PluginArgs, cache_dir: Option<PathBuf>) -> ExitCode {
    let result = match args.command {
        PluginCommand::New(a) => new(&a),
        PluginCommand::Test(a) => test(&a, cache_dir).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.exit(),
    }
}

// ---------------------------------------------------------------------------------
// Shared: key columns, and printing keys
// ---------------------------------------------------------------------------------

/// Lower-case letters, digits and `_`, starting with a letter or `_` (the pipeline
/// file's rule for names).
fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn key_type_name(t: KeyType) -> &'static str {
    match t {
        KeyType::Long => "long",
        KeyType::Int => "int",
        KeyType::String => "string",
    }
}

/// `COLUMN:TYPE` as the pipeline file's `[link] keys` allow it.
fn parse_key(s: &str) -> Result<KeyColumn, String> {
    let Some((name, ty)) = s.rsplit_once(':') else {
        return Err(format!(
            "--key '{s}': write COLUMN:TYPE with TYPE long, int or string, e.g. --key {s}:long"
        ));
    };
    let ty = match ty.trim().to_ascii_lowercase().as_str() {
        "long" => KeyType::Long,
        "int" => KeyType::Int,
        "string" => KeyType::String,
        other => {
            return Err(format!(
                "--key '{s}': unknown type '{other}'; a key column is long, int or string"
            ))
        }
    };
    let name = name.trim();
    if !is_identifier(name) || name.starts_with("dlink_") {
        return Err(format!(
            "--key '{s}': key column '{name}' must be lower-case letters, digits and `_`, not starting with `dlink_`"
        ));
    }
    Ok(KeyColumn {
        name: name.to_string(),
        ty,
    })
}

fn parse_keys(specs: &[String]) -> Result<Vec<KeyColumn>, String> {
    let mut keys: Vec<KeyColumn> = Vec::new();
    for s in specs {
        let k = parse_key(s)?;
        if keys.iter().any(|o| o.name == k.name) {
            return Err(format!("--key: column '{}' is given twice", k.name));
        }
        keys.push(k);
    }
    Ok(keys)
}

/// One value of a key, ordered: numbers by value, strings by bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum KeyValue {
    Int(i64),
    Str(String),
}

impl KeyValue {
    fn text(&self) -> String {
        match self {
            KeyValue::Int(v) => v.to_string(),
            KeyValue::Str(s) => s.clone(),
        }
    }

    fn json(&self) -> serde_json::Value {
        match self {
            KeyValue::Int(v) => (*v).into(),
            KeyValue::Str(s) => s.clone().into(),
        }
    }
}

/// One affected key with its causes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct KeyRow {
    key: Vec<KeyValue>,
    upstreams: Vec<String>,
    change_ts: Option<i64>,
}

/// The printed columns besides the keys: the link table's names for the same things.
const UPSTREAMS_COLUMN: &str = "dlink_upstreams";
const CHANGE_TS_COLUMN: &str = "dlink_change_ts";

fn key_rows(keys: &AffectedKeys) -> Result<Vec<KeyRow>, String> {
    let mut rows: Vec<KeyRow> = (0..keys.len())
        .map(|i| KeyRow {
            key: Vec::with_capacity(keys.columns.len()),
            upstreams: keys.upstreams[i].clone(),
            change_ts: keys.change_ts[i],
        })
        .collect();
    for col in &keys.columns {
        let values = values_of(col)?;
        for (row, v) in rows.iter_mut().zip(values) {
            row.key.push(v);
        }
    }
    rows.sort();
    Ok(rows)
}

fn values_of(col: &ArrayRef) -> Result<Vec<KeyValue>, String> {
    Ok(match col.data_type() {
        DataType::Int64 => col
            .as_primitive::<Int64Type>()
            .values()
            .iter()
            .map(|v| KeyValue::Int(*v))
            .collect(),
        DataType::Int32 => col
            .as_primitive::<Int32Type>()
            .values()
            .iter()
            .map(|v| KeyValue::Int(i64::from(*v)))
            .collect(),
        DataType::Utf8 => col
            .as_string::<i32>()
            .iter()
            .map(|v| KeyValue::Str(v.unwrap_or_default().to_string()))
            .collect(),
        other => return Err(format!("a key column of type {other} cannot be printed")),
    })
}

fn format_ts(micros: Option<i64>) -> Option<String> {
    micros
        .and_then(chrono::DateTime::from_timestamp_micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

/// An aligned table: the key columns, `dlink_upstreams`, `dlink_change_ts`.
fn render_table(key_names: &[String], rows: &[KeyRow]) -> String {
    let mut cells: Vec<Vec<String>> = vec![key_names
        .iter()
        .cloned()
        .chain([UPSTREAMS_COLUMN.to_string(), CHANGE_TS_COLUMN.to_string()])
        .collect()];
    for r in rows {
        cells.push(
            r.key
                .iter()
                .map(KeyValue::text)
                .chain([
                    r.upstreams.join(","),
                    format_ts(r.change_ts).unwrap_or_else(|| "-".into()),
                ])
                .collect(),
        );
    }
    let widths: Vec<usize> = (0..cells[0].len())
        .map(|c| {
            cells
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in &cells {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A JSON array, one object per key: the key columns, `dlink_upstreams`,
/// `dlink_change_ts` (RFC 3339 or null).
fn render_json(key_names: &[String], rows: &[KeyRow]) -> String {
    if rows.is_empty() {
        return "[]\n".into();
    }
    let mut out = String::from("[\n");
    for (i, r) in rows.iter().enumerate() {
        let mut fields: Vec<String> = key_names
            .iter()
            .zip(&r.key)
            .map(|(n, v)| format!("{}: {}", serde_json::Value::from(n.as_str()), v.json()))
            .collect();
        fields.push(format!(
            "\"{UPSTREAMS_COLUMN}\": {}",
            serde_json::Value::from(r.upstreams.clone())
        ));
        fields.push(format!(
            "\"{CHANGE_TS_COLUMN}\": {}",
            format_ts(r.change_ts).map_or(serde_json::Value::Null, serde_json::Value::from)
        ));
        out.push_str(&format!("  {{{}}}", fields.join(", ")));
        out.push_str(if i + 1 < rows.len() { ",\n" } else { "\n" });
    }
    out.push_str("]\n");
    out
}

// ---------------------------------------------------------------------------------
// plugin test
// ---------------------------------------------------------------------------------

/// `[NAME=]FILE`: the name defaults to the file's stem.
fn named_file(flag: &str, spec: &str) -> Result<(String, PathBuf), String> {
    if let Some((name, file)) = spec.split_once('=') {
        if !name.is_empty() && !name.contains(['/', '\\']) {
            if file.is_empty() {
                return Err(format!("{flag} '{spec}': no file after '='"));
            }
            return Ok((name.to_string(), PathBuf::from(file)));
        }
    }
    let path = PathBuf::from(spec);
    match path.file_stem().and_then(|s| s.to_str()) {
        Some(stem) if !stem.is_empty() => Ok((stem.to_string(), path)),
        _ => Err(format!(
            "{flag} '{spec}': cannot name the table after this file; write NAME=FILE"
        )),
    }
}

/// The key columns of the plugin's output: every column but `_upstream` and
/// `_commit_timestamp`. Bytes that do not decode are left to [`dlink_rt::keys::collect`].
fn output_keys(output: &[u8]) -> Result<Vec<KeyColumn>, String> {
    if output.is_empty() {
        return Ok(Vec::new());
    }
    let Ok((schema, _)) = dlink_rt::ipc::decode(output) else {
        return Ok(Vec::new());
    };
    let mut keys = Vec::new();
    for f in schema.fields() {
        let name = f.name().as_str();
        if name == UPSTREAM || name == dlink_rt::cdf::COMMIT_TIMESTAMP {
            continue;
        }
        let ty = match f.data_type() {
            DataType::Int64 => KeyType::Long,
            DataType::Int32 => KeyType::Int,
            DataType::Utf8 => KeyType::String,
            other => {
                return Err(format!(
                "derive returned column '{name}' as {other}; a key column is Int64, Int32 or Utf8 \
                     (long, int or string in a pipeline file)"
            ))
            }
        };
        keys.push(KeyColumn {
            name: name.to_string(),
            ty,
        });
    }
    if keys.is_empty() {
        return Err(format!(
            "derive returned no key column (its columns: {})",
            schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(keys)
}

async fn test(args: &TestArgs, cache_dir: Option<PathBuf>) -> Result<(), Fail> {
    let started = Instant::now();
    let declared = parse_keys(&args.keys).map_err(Fail::Usage)?;
    match serde_json::from_str::<serde_json::Value>(&args.config) {
        Ok(serde_json::Value::Object(_)) => {}
        Ok(other) => {
            return Err(Fail::Usage(format!(
                "--config must be a JSON object such as '{{\"min_rank\": 1}}', not {other}"
            )))
        }
        Err(e) => {
            return Err(Fail::Usage(format!(
                "--config is not JSON: {e}; write a JSON object such as '{{\"min_rank\": 1}}'"
            )))
        }
    }
    let mut upstreams: Vec<(String, Option<PathBuf>)> = Vec::new();
    for spec in &args.changes {
        let (name, path) = named_file("--changes", spec).map_err(Fail::Usage)?;
        upstreams.push((name, Some(path)));
    }
    for name in &args.empty_upstreams {
        upstreams.push((name.clone(), None));
    }
    let mut seen = BTreeSet::new();
    for (name, path) in &upstreams {
        if !seen.insert(name.as_str()) {
            return Err(Fail::Usage(format!(
                "upstream '{name}' is given twice{}; name the files UPSTREAM=FILE",
                path.as_ref()
                    .map(|p| format!(" (again by {})", p.display()))
                    .unwrap_or_default()
            )));
        }
    }
    let mut tables = Vec::new();
    for spec in &args.tables {
        let (name, path) = named_file("--table", spec).map_err(Fail::Usage)?;
        if tables.iter().any(|(n, _)| *n == name) {
            return Err(Fail::Usage(format!(
                "--table: table '{name}' is given twice"
            )));
        }
        tables.push((name, path));
    }
    let pipeline = args.pipeline.clone().unwrap_or_else(|| {
        args.plugin
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "plugin".into())
    });

    // Read every file before starting the plugin: input errors come first.
    let mut read = Vec::with_capacity(upstreams.len());
    for (name, path) in &upstreams {
        let rows = match path {
            Some(p) => {
                let c = fixtures::read_changes(name, p).map_err(Fail::Failed)?;
                for w in &c.warnings {
                    eprintln!("warning: {w}");
                }
                Some(c)
            }
            None => None,
        };
        read.push((name.clone(), rows));
    }
    let limits = Limits::default();
    let mut lookup = MemoryLookup::new(limits.max_lookup_rows);
    for (name, path) in &tables {
        let batch = fixtures::read_table(path).map_err(Fail::Failed)?;
        lookup
            .add(name, &path.display().to_string(), batch)
            .map_err(Fail::Failed)?;
    }
    let lookup = Arc::new(lookup);
    // Upstreams without rows are "read up to" the newest version of the batch.
    let newest = read
        .iter()
        .filter_map(|(_, c)| c.as_ref().and_then(|c| c.versions))
        .map(|(_, end)| end)
        .max()
        .unwrap_or(fixtures::DEFAULT_COMMIT_VERSION);
    let mut inputs = Vec::with_capacity(read.len());
    let mut change_rows = 0;
    for (name, rows) in &read {
        let (start, end, bytes) = match rows {
            Some(c) if c.batch.num_rows() > 0 => {
                let (start, end) = c.versions.unwrap_or((newest, newest));
                change_rows += c.batch.num_rows();
                let bytes =
                    dlink_rt::ipc::encode(&c.batch.schema(), std::slice::from_ref(&c.batch))
                        .map_err(|e| {
                            Fail::Failed(format!("cannot encode the changes of '{name}': {e}"))
                        })?;
                (start, end, bytes)
            }
            _ => (newest + 1, newest, Vec::new()),
        };
        inputs.push(UpstreamInput {
            name: name.clone(),
            start_version: start,
            end_version: end,
            changes: bytes,
        });
    }

    let plugin_label = args.plugin.display().to_string();
    let plugin_err = |e: String| Fail::Failed(format!("plugin {plugin_label}: {e}"));
    let host = PluginHost::new(cache_dir)
        .map_err(|e| Fail::Failed(format!("cannot start the plugin host: {e:#}")))?;
    let compiled = host.compile(&args.plugin).map_err(plugin_err)?;
    let spec = PluginSpec {
        path: args.plugin.clone(),
        config_json: args.config.clone(),
        limits,
        read_dirs: Vec::new(),
    };
    let mut instance = host
        .instantiate(&compiled, &pipeline, &spec)
        .await
        .map_err(plugin_err)?;
    let output = instance
        .derive(&pipeline, args.batch_id, inputs, lookup.clone())
        .await
        .map_err(|e| {
            let hint = if e.contains("has no upstream") {
                "; the upstreams of a test are named after the --changes files (or UPSTREAM=FILE), \
                 and --upstream NAME adds one without change rows"
            } else {
                ""
            };
            plugin_err(format!("{e}{hint}"))
        })?;
    let keys = if declared.is_empty() {
        output_keys(&output).map_err(plugin_err)?
    } else {
        declared
    };
    let names: Vec<&str> = upstreams.iter().map(|(n, _)| n.as_str()).collect();
    let affected = dlink_rt::keys::collect(&output, &keys, &names).map_err(|e| {
        let hint = if args.keys.is_empty() {
            ""
        } else {
            " (the key columns are the --key options)"
        };
        plugin_err(format!("{e}{hint}"))
    })?;
    let rows = key_rows(&affected).map_err(plugin_err)?;
    let key_names: Vec<String> = keys.iter().map(|k| k.name.clone()).collect();
    if args.json {
        print!("{}", render_json(&key_names, &rows));
    } else {
        print!("{}", render_table(&key_names, &rows));
    }
    let calls = lookup.calls();
    eprintln!(
        "{plugin_label}: {change_rows} change row(s) of {} upstream(s), {calls} lookup(s): {} affected key(s) ({} ms)",
        names.len(),
        rows.len(),
        started.elapsed().as_millis()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------
// plugin new
// ---------------------------------------------------------------------------------

/// Names cargo refuses for a package, or that clash in a target folder.
const RESERVED: [&str; 10] = [
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

const KEYWORDS: [&str; 51] = [
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern",
    "false", "fn", "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub",
    "ref", "return", "self", "static", "struct", "super", "trait", "true", "type", "unsafe", "use",
    "where", "while", "abstract", "become", "box", "do", "final", "gen", "macro", "override",
    "priv", "try", "typeof", "unsized", "virtual", "yield",
];

fn check_crate_name(name: &str) -> Result<(), String> {
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
fn type_name(name: &str) -> String {
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

fn is_sdk(dir: &Path) -> bool {
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
fn find_sdk(explicit: Option<&Path>) -> Result<PathBuf, String> {
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
fn sdk_dependency_path(crate_dir: &Path, sdk: &Path) -> String {
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

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

/// The sample rows: (change type, commit version, commit timestamp, note) of rows
/// holding the keys 1, 2, 3.
const SAMPLE: [(&str, i64, &str, &str); 4] = [
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
fn sample_key(k: &KeyColumn, n: i64) -> KeyValue {
    match k.ty {
        KeyType::Long | KeyType::Int => KeyValue::Int(n),
        KeyType::String => KeyValue::Str(format!("k{n}")),
    }
}

fn sample_changes(keys: &[KeyColumn]) -> String {
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
fn sample_output(keys: &[KeyColumn], upstreams: &[String]) -> String {
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

fn fixtures_time(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_micros())
}

fn cargo_toml(name: &str, sdk_path: &str) -> String {
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

fn key_getter(k: &KeyColumn) -> String {
    match k.ty {
        KeyType::Long | KeyType::Int => format!("row.i64({:?})?", k.name),
        KeyType::String => format!("row.str({:?})?", k.name),
    }
}

fn lib_rs(
    name: &str,
    ty: &str,
    keys: &[KeyColumn],
    upstreams: &[String],
    test_cmd: &str,
) -> String {
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
    // Laid out as rustfmt would: one line when short, else one item per line.
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

use dlink_plugin_sdk::{{export_pipeline, Batch, KeyColumn, Keys, Pipeline}};

struct {ty};

impl Pipeline for {ty} {{
    /// The link table's key columns, as the pipeline file's `[link] keys` declares them.
    const KEYS: &'static [KeyColumn] = &{key_decl};

    // `fn init(config: &dlink_plugin_sdk::Config) -> Result<(), String>` may check the
    // pipeline's `[plugin.config]`; by default any config is accepted.

    fn derive(batch: &Batch, keys: &mut Keys) -> Result<(), String> {{
        derive(batch, keys)
    }}
}}

/// The affected keys of one batch of change rows.
///
/// Every change row counts: `insert`, `delete` and BOTH images of an update
/// (`update_preimage`, `update_postimage`). An update that changes a join column affects
/// the old partner (the pre-image) and the new one (the post-image).
fn derive(batch: &Batch, keys: &mut Keys) -> Result<(), String> {{
{loops}
    // To follow a change through a join, look up the rows of another table (an
    // upstream or a lookup table of the pipeline) as of the batch's version:
    //
    //     let changed = batch.changes("department")?.newest_commit_by_i64("dept_id")?;
    //     let ids: Vec<i64> = changed.keys().copied().collect();
    //     let members =
    //         dlink_plugin_sdk::lookup_i64("employee", "dept_id", &ids, &["emp_id", "dept_id"])?;
    //     for member in members.rows() {{
    //         let ts = member.i64("dept_id")?.and_then(|d| changed.get(&d).copied().flatten());
    //         keys.add("department", ts, member.i64("emp_id")?)?;
    //     }}
    //
    // and give `dlink-rt plugin test` the table's rows with --table employee=FILE.
    Ok(())
}}

export_pipeline!({ty});
"#
    )
}

fn readme(
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

fn new(args: &NewArgs) -> Result<(), Fail> {
    check_crate_name(&args.name).map_err(Fail::Usage)?;
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
    let test_cmd = |wasm: &str| {
        format!(
            "dlink-rt plugin test {wasm} --changes {}",
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
    ];
    for path in &samples {
        files.push((path.into(), sample_changes(&keys)));
    }
    // The SDK workspace's lock file pins the versions the SDK is tested with (and lets
    // the build reuse what building the SDK's own plugins compiled).
    if let Some(lock) = sdk.parent().map(|p| p.join("Cargo.lock")) {
        if let Ok(text) = std::fs::read_to_string(&lock) {
            files.push(("Cargo.lock".into(), text));
        }
    }

    match std::fs::create_dir(&crate_dir) {
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
        for (rel, text) in &files {
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
        let _ = std::fs::remove_dir_all(&crate_dir);
        return Err(Fail::Failed(format!(
            "cannot write {}: {e}; nothing was left behind",
            target.display()
        )));
    }

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
    println!("    {}", test_cmd(&wasm));
    println!();
    println!("Its logic is `derive` in src/lib.rs; README.md shows the expected output.");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_like_the_pipeline_file() {
        let k = parse_key("emp_id:long").unwrap();
        assert_eq!((k.name.as_str(), k.ty), ("emp_id", KeyType::Long));
        assert!(parse_key("emp_id").unwrap_err().contains("COLUMN:TYPE"));
        assert!(parse_key("emp_id:bigint")
            .unwrap_err()
            .contains("long, int or string"));
        assert!(parse_key("Emp:int").unwrap_err().contains("lower-case"));
        assert!(parse_keys(&["a:int".into(), "a:long".into()])
            .unwrap_err()
            .contains("twice"));
    }

    #[test]
    fn crate_names() {
        assert!(check_crate_name("orders_by-customer").is_ok());
        for bad in ["", "1abc", "Abc", "a b", "fn", "test", "a.b"] {
            assert!(check_crate_name(bad).is_err(), "{bad}");
        }
        assert_eq!(type_name("orders_by-customer"), "OrdersByCustomer");
        assert_eq!(type_name("pipeline"), "PipelinePlugin");
    }

    #[test]
    fn sdk_path_is_relative_inside_the_checkout() {
        let sdk = Path::new("/repo/plugins/sdk");
        assert_eq!(
            sdk_dependency_path(Path::new("/repo/plugins/mine"), sdk),
            "../../plugins/sdk"
        );
        assert_eq!(
            sdk_dependency_path(Path::new("/elsewhere/mine"), sdk),
            "/repo/plugins/sdk"
        );
    }

    #[test]
    fn table_is_aligned_and_sorted_by_key() {
        let mut rows = vec![
            KeyRow {
                key: vec![KeyValue::Int(10)],
                upstreams: vec!["b".into()],
                change_ts: None,
            },
            KeyRow {
                key: vec![KeyValue::Int(9)],
                upstreams: vec!["a".into(), "b".into()],
                change_ts: Some(1_714_564_800_000_000),
            },
        ];
        rows.sort();
        let t = render_table(&["id".into()], &rows);
        assert_eq!(
            t,
            "id  dlink_upstreams  dlink_change_ts\n\
             9   a,b              2024-05-01T12:00:00Z\n\
             10  b                -\n"
        );
        let j = render_json(&["id".into()], &rows);
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v[0]["id"], 9);
        assert_eq!(v[1]["dlink_change_ts"], serde_json::Value::Null);
    }
}
