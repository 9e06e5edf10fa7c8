//! `dlink-rt plugin test PLUGIN.wasm --changes FILE...`: run a plugin on change rows
//! written by hand.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use deltalake::arrow::datatypes::DataType;
use dlink_rt::affected::UPSTREAM;
use dlink_rt::config::{KeyColumn, KeyType, Limits, PluginSpec};
use dlink_rt::fixtures::{self, MemoryLookup};
use dlink_rt::plugin::{Contract, HostBuilder, Output, PipelineInfo, PluginError, UpstreamInput};

use super::output::*;
use super::*;

/// `[NAME=]FILE`: the name defaults to the file's stem.
pub(super) fn named_file(flag: &str, spec: &str) -> Result<(String, PathBuf), String> {
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
/// `_commit_timestamp`. Bytes that do not decode are left to [`dlink_rt::affected::collect`].
pub(super) fn output_keys(output: &[u8]) -> Result<Vec<KeyColumn>, String> {
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

/// The schema of change rows with no data columns (an upstream given without rows).
fn cdf_only_schema() -> deltalake::arrow::datatypes::SchemaRef {
    use deltalake::arrow::datatypes::{Field, Schema};
    Arc::new(Schema::new(vec![
        Field::new(dlink_rt::cdf::CHANGE_TYPE, DataType::Utf8, false),
        Field::new(dlink_rt::cdf::COMMIT_VERSION, DataType::Int64, false),
        Field::new(
            dlink_rt::cdf::COMMIT_TIMESTAMP,
            dlink_rt::cdf::timestamp_type(),
            true,
        ),
    ]))
}

/// A hint for a plugin that refused what the test gave it (most often an upstream the
/// test did not name): which upstreams a test has.
fn upstream_hint(e: &PluginError) -> &'static str {
    if matches!(e, PluginError::Rejected { .. }) {
        "; the upstreams of a test are named after the --changes files (or UPSTREAM=FILE), \
         and --upstream NAME adds one without change rows"
    } else {
        ""
    }
}

/// `--config` must be a JSON object.
fn check_config(config: &str) -> Result<(), Fail> {
    match serde_json::from_str::<serde_json::Value>(config) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        Ok(other) => Err(Fail::Usage(format!(
            "--config must be a JSON object such as '{{\"min_rank\": 1}}', not {other}"
        ))),
        Err(e) => Err(Fail::Usage(format!(
            "--config is not JSON: {e}; write a JSON object such as '{{\"min_rank\": 1}}'"
        ))),
    }
}

/// The test's upstreams (`--changes` files, then `--upstream` names without rows) and
/// lookup tables (`--table`), each named once.
type Named = (Vec<(String, Option<PathBuf>)>, Vec<(String, PathBuf)>);

fn named_inputs(args: &TestArgs) -> Result<Named, Fail> {
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
    Ok((upstreams, tables))
}

/// Every upstream's change rows, read before the plugin starts so that input errors
/// come first.
fn read_inputs(
    upstreams: &[(String, Option<PathBuf>)],
) -> Result<Vec<(String, Option<fixtures::ChangeRows>)>, Fail> {
    let mut read = Vec::with_capacity(upstreams.len());
    for (name, path) in upstreams {
        let rows = match path {
            Some(p) => {
                let c = fixtures::read_change_rows(name, p).map_err(Fail::Failed)?;
                for w in &c.warnings {
                    say!("warning: {w}");
                }
                Some(c)
            }
            None => None,
        };
        read.push((name.clone(), rows));
    }
    Ok(read)
}

/// The change rows as the host hands them to `derive`, and how many there are.
/// Upstreams without rows are "read up to" the newest version of the batch.
fn encode_inputs(
    read: &[(String, Option<fixtures::ChangeRows>)],
    info: &PipelineInfo,
    plugin: &dlink_rt::plugin::Plugin,
) -> Result<Vec<UpstreamInput>, Fail> {
    let newest = read
        .iter()
        .filter_map(|(_, c)| c.as_ref().and_then(|c| c.versions))
        .map(|(_, end)| end)
        .max()
        .unwrap_or(fixtures::DEFAULT_COMMIT_VERSION);
    let mut inputs = Vec::with_capacity(read.len());
    for ((name, rows), (_, schema)) in read.iter().zip(&info.upstreams) {
        let encode_err = |e| Fail::Failed(format!("cannot encode the changes of '{name}': {e}"));
        let (start, end, changes) = match rows {
            Some(c) if c.batch.num_rows() > 0 => {
                let (start, end) = c.versions.unwrap_or((newest, newest));
                let changes = plugin
                    .encode(name, &c.batch.schema(), std::slice::from_ref(&c.batch))
                    .map_err(encode_err)?;
                (start, end, changes)
            }
            _ => {
                let changes = plugin.encode(name, schema, &[]).map_err(encode_err)?;
                (newest + 1, newest, changes)
            }
        };
        inputs.push(UpstreamInput {
            name: name.clone(),
            start_version: start,
            end_version: end,
            changes,
        });
    }
    Ok(inputs)
}

pub(super) async fn test(args: &TestArgs, host: HostBuilder) -> Result<(), Fail> {
    let started = Instant::now();
    let declared = parse_keys(&args.keys).map_err(Fail::Usage)?;
    check_config(&args.config)?;
    let (upstreams, tables) = named_inputs(args)?;
    let pipeline = args.pipeline.clone().unwrap_or_else(|| {
        args.plugin
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "plugin".into())
    });
    let read = read_inputs(&upstreams)?;
    let limits = Limits::default();
    let mut lookup = MemoryLookup::new(limits.max_lookup_rows);
    // What a 0.2 plugin's init is told: the tables' schemas and the --key columns.
    let mut info = PipelineInfo {
        name: pipeline.clone(),
        upstreams: read
            .iter()
            .map(|(n, c)| {
                let schema = c.as_ref().map(|c| c.batch.schema());
                (n.clone(), schema.unwrap_or_else(cdf_only_schema))
            })
            .collect(),
        lookups: Vec::new(),
        keys: declared.clone(),
    };
    for (name, path) in &tables {
        let batch = fixtures::read_table(path).map_err(Fail::Failed)?;
        info.lookups.push((name.clone(), batch.schema()));
        lookup
            .add(name, &path.display().to_string(), batch)
            .map_err(Fail::Failed)?;
    }
    let lookup = Arc::new(lookup);
    let change_rows: usize = read
        .iter()
        .filter_map(|(_, c)| c.as_ref().map(|c| c.batch.num_rows()))
        .sum();

    let plugin_label = args.plugin.display().to_string();
    let plugin_err = |e: String| Fail::Failed(format!("plugin {plugin_label}: {e}"));
    let run = PluginRun {
        args,
        info: &info,
        declared: &declared,
        pipeline: &pipeline,
        limits,
    };
    let output = run.call(host, &read, lookup.clone()).await?;
    let keys = match (&output, declared.is_empty()) {
        (Output::Combined(ipc), true) => output_keys(ipc).map_err(plugin_err)?,
        _ => declared,
    };
    let names: Vec<&str> = upstreams.iter().map(|(n, _)| n.as_str()).collect();
    let affected = output.collect(&keys, &names).map_err(|e| {
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
    say!(
        "{plugin_label}: {change_rows} change row(s) of {} upstream(s), {calls} lookup(s): {} affected key(s) ({} ms)",
        names.len(),
        rows.len(),
        started.elapsed().as_millis()
    );
    Ok(())
}

/// One call of the plugin under test.
struct PluginRun<'a> {
    args: &'a TestArgs,
    info: &'a PipelineInfo,
    declared: &'a [KeyColumn],
    pipeline: &'a str,
    /// The limits of the run (also the lookup's row cap).
    limits: Limits,
}

impl PluginRun<'_> {
    /// Compiles the plugin, instantiates it (its `init` told `info`) and calls `derive`.
    async fn call(
        &self,
        host: HostBuilder,
        read: &[(String, Option<fixtures::ChangeRows>)],
        lookup: Arc<MemoryLookup>,
    ) -> Result<Output, Fail> {
        let (args, info, declared, pipeline) = (self.args, self.info, self.declared, self.pipeline);
        let plugin_label = args.plugin.display().to_string();
        let plugin_err = |e: String| Fail::Failed(format!("plugin {plugin_label}: {e}"));
        let limits = self.limits;
        let call_err = |e: PluginError| plugin_err(e.to_string());
        let host = host
            .build()
            .map_err(|e| Fail::Failed(format!("cannot start the plugin host: {e:#}")))?;
        let compiled = host.compile(&args.plugin).map_err(call_err)?;
        if compiled.contract != Contract::V0_1 && declared.is_empty() {
            return Err(Fail::Usage(format!(
                "{plugin_label} speaks {}, whose init is told the pipeline's key columns: \
                 give them with --key NAME:TYPE (e.g. --key id:long)",
                compiled.contract
            )));
        }
        let spec = PluginSpec {
            path: args.plugin.clone(),
            config_json: args.config.clone(),
            limits,
            read_dirs: Vec::new(),
            storage: Default::default(),
        };
        let mut instance = host
            .instantiate(&compiled, info, &spec)
            .await
            .map_err(|e| plugin_err(format!("{e}{}", upstream_hint(&e))))?;
        let inputs = encode_inputs(read, info, &instance)?;
        let output = instance
            .derive(pipeline, args.batch_id, inputs, lookup)
            .await
            .map_err(|e| plugin_err(format!("{e}{}", upstream_hint(&e))))?;
        Ok(output)
    }
}
