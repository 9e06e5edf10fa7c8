//! `dlink-rt validate [PATH]`: checks a folder of pipelines (or one pipeline file) in
//! phases and prints every problem, each with its file and line, not only the first.
//!
//! 1. the catalog and every pipeline file (syntax, names, types, paths);
//! 2. every upstream table: it opens, the Change Data Feed is on, the catalog's
//!    `columns` exist and its `filter` is a valid predicate;
//! 3. every plugin: it compiles, exports what its WIT contract requires and its `init`
//!    accepts the pipeline;
//!    every SQL query: it plans against the upstreams' schemas and returns the keys;
//! 4. every existing link table: its key columns match the declared types.

use std::path::PathBuf;
use std::process::ExitCode;

use dlink_rt::cdf::{self, history::TableState};
use dlink_rt::config::{Derivation, Pipeline, Upstream};
use dlink_rt::lookup::TableCache;
use std::collections::HashMap;

use deltalake::arrow::datatypes::SchemaRef;
use dlink_rt::plugin::{Contract, HostBuilder, PipelineInfo, PluginError};
use dlink_rt::sink::LinkTable;
use dlink_rt::sql_pipeline::ChangeTable;

use super::{EXIT_CONFIG, EXIT_FAILED};

#[derive(clap::Args, Debug)]
pub struct ValidateArgs {
    /// A folder of pipeline files with its upstreams.toml, or one pipeline file.
    #[arg(default_value = "configs")]
    pub path: PathBuf,
    #[command(flatten)]
    pub select: super::Select,
}

pub async fn validate(args: ValidateArgs, host: HostBuilder) -> ExitCode {
    let started = std::time::Instant::now();
    let (mut pipelines, mut problems) = match super::run::load_path(&args.path) {
        Ok(x) => x,
        Err(e) => {
            super::say_problem(&e.to_string());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Err(e) = args.select.apply(&mut pipelines) {
        say!("error: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let host = match host.build() {
        Ok(h) => h,
        Err(e) => {
            say!("error: cannot start the plugin host: {e:#}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    // Phase 2: each upstream once.
    let (schemas, table_schemas) = check_upstreams(&pipelines, &mut problems).await;
    // Phases 3 and 4: each pipeline.
    let cache = TableCache::default();
    for p in &pipelines {
        check_pipeline(&host, p, &schemas, &table_schemas, &cache, &mut problems).await;
    }
    for p in &problems {
        super::say_problem(p);
    }
    outln!(
        "{} checked in {} ms: {}",
        super::plural(pipelines.len(), "pipeline", "pipelines"),
        started.elapsed().as_millis(),
        if problems.is_empty() {
            "all valid".to_string()
        } else {
            super::plural(problems.len(), "problem", "problems")
        }
    );
    if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_CONFIG)
    }
}

/// Opens every upstream and lookup table of the pipelines once and checks its options;
/// returns each one's change-row schema and version, and its table schema.
async fn check_upstreams(
    pipelines: &[dlink_rt::config::Pipeline],
    problems: &mut Vec<String>,
) -> (Schemas, HashMap<String, SchemaRef>) {
    let mut upstreams: Vec<&Upstream> = pipelines
        .iter()
        .flat_map(|p| p.upstreams.iter().chain(&p.lookups))
        .collect();
    upstreams.sort_by(|a, b| a.name.cmp(&b.name));
    upstreams.dedup_by(|a, b| a.name == b.name);
    let mut schemas = HashMap::new();
    let mut table_schemas = HashMap::new();
    for u in upstreams {
        match check_upstream(u).await {
            Ok((schema, version, table_schema)) => {
                schemas.insert(u.name.clone(), (schema, version));
                table_schemas.insert(u.name.clone(), table_schema);
            }
            Err(e) => problems.push(e),
        }
    }
    (schemas, table_schemas)
}

/// Checks one pipeline: its plugin's `init` (or its query) against the tables, its
/// link table, and that the link table's store supports conditional writes.
async fn check_pipeline(
    host: &dlink_rt::plugin::PluginHost,
    p: &dlink_rt::config::Pipeline,
    schemas: &Schemas,
    table_schemas: &HashMap<String, SchemaRef>,
    cache: &TableCache,
    problems: &mut Vec<String>,
) {
    let at = format!("{}:{}", p.file.display(), p.derivation_line);
    match &p.derivation {
        Derivation::Plugin(spec) => {
            match check_plugin(host, p, spec, schemas, table_schemas).await {
                Ok(Some(contract)) => outln!(
                    "pipeline '{}': plugin {} speaks {contract}; init accepted the pipeline",
                    p.name,
                    spec.path.display()
                ),
                Ok(None) => {}
                Err(e) => problems.push(format!("{at}: plugin {}: {e}", spec.path.display())),
            }
        }
        Derivation::Sql { query } => {
            if let Err(e) = check_sql(p, query, schemas, cache).await {
                problems.push(format!("{at}: [sql] query of pipeline '{}': {e}", p.name));
            }
        }
    }
    if let Err(e) = LinkTable::open(p).await {
        problems.push(format!("{}: {e}", p.file.display()));
    } else if p.upstreams.iter().all(|u| schemas.contains_key(&u.name)) {
        // (An upstream that did not open is reported above already.)
        if let Err(e) = dlink_rt::engine::check_pending(p, PENDING_CHECKED).await {
            problems.push(format!("{}: pipeline '{}': {e}", p.file.display(), p.name));
        }
    }
    if let Err(e) = dlink_rt::storage::check_conditional_put(&p.link_uri, &p.link_storage).await {
        problems.push(format!(
            "{}: link table {} of pipeline '{}': {e}",
            p.file.display(),
            p.link_uri,
            p.name
        ));
    }
}

/// Pending versions per upstream whose log entries `validate` reads (a backlog's
/// first ones; a run checks every version before it reads it).
const PENDING_CHECKED: i64 = 10_000;

type Schemas = std::collections::HashMap<String, (deltalake::arrow::datatypes::SchemaRef, i64)>;

/// Opens the upstream and checks its options; returns its change-row schema and version.
/// The plugin compiled, its imports and exports checked, then instantiated under the
/// pipeline's limits with `init` called: a contract 0.2/0.3 plugin sees the pipeline's
/// tables and keys, so a wrong key type or an unknown upstream fails here as well as a
/// configuration the plugin refuses. `None` when a table is unreadable (reported
/// already; init would only repeat it).
async fn check_plugin(
    host: &dlink_rt::plugin::PluginHost,
    p: &Pipeline,
    spec: &dlink_rt::config::PluginSpec,
    schemas: &HashMap<String, (SchemaRef, i64)>,
    table_schemas: &HashMap<String, SchemaRef>,
) -> Result<Option<Contract>, PluginError> {
    let info = PipelineInfo {
        name: p.name.clone(),
        upstreams: p
            .upstreams
            .iter()
            .filter_map(|u| Some((u.name.clone(), schemas.get(&u.name)?.0.clone())))
            .collect(),
        lookups: p
            .lookups
            .iter()
            .filter_map(|u| Some((u.name.clone(), table_schemas.get(&u.name)?.clone())))
            .collect(),
        keys: p.keys.clone(),
    };
    if info.upstreams.len() + info.lookups.len() < p.upstreams.len() + p.lookups.len() {
        return Ok(None);
    }
    let wasm = dlink_rt::plugin::source::read(spec)
        .await
        .map_err(PluginError::Read)?;
    let c = host.compile_bytes(&spec.path, wasm)?;
    host.check(&c)?;
    host.instantiate(&c, &info, spec).await?;
    Ok(Some(c.contract))
}

/// The upstream's change-row schema, latest version and table schema.
async fn check_upstream(u: &Upstream) -> Result<(SchemaRef, i64, SchemaRef), String> {
    let t = cdf::open_latest(u).await.map_err(|e| e.to_string())?;
    let version = cdf::version_of(u, &t).map_err(|e| e.to_string())?;
    let state: TableState = cdf::state_of(u, &t).map_err(|e| e.to_string())?;
    if !state.cdf_enabled {
        return Err(format!(
            "upstream '{}' ({}): the Change Data Feed is off at its latest version {version}; \
             turn on delta.enableChangeDataFeed",
            u.name, u.uri
        ));
    }
    let table_schema = cdf::arrow_schema(u, &t).map_err(|e| e.to_string())?;
    let schema = cdf::change_schema(u, &table_schema).map_err(|e| e.to_string())?;
    if let Some(f) = &u.filter {
        let ctx = cdf::session();
        let df = ctx
            .read_batch(deltalake::arrow::array::RecordBatch::new_empty(
                table_schema.clone(),
            ))
            .map_err(|e| e.to_string())?;
        df.parse_sql_expr(f).map_err(|e| {
            format!("upstream '{}': the catalog's filter `{f}` is not a valid predicate on the table: {e}", u.name)
        })?;
    }
    Ok((schema, version, table_schema))
}

async fn check_sql(
    p: &Pipeline,
    query: &str,
    schemas: &Schemas,
    cache: &TableCache,
) -> Result<(), String> {
    let mut tables = Vec::new();
    let mut pinned = Vec::new();
    for u in p.upstreams.iter().chain(&p.lookups) {
        let Some((schema, version)) = schemas.get(&u.name) else {
            return Err(format!(
                "upstream '{}' could not be checked (see above)",
                u.name
            ));
        };
        if p.upstreams.iter().any(|x| x.name == u.name) {
            tables.push(ChangeTable {
                name: &u.name,
                schema: schema.clone(),
                batches: Vec::new(),
            });
        }
        pinned.push((u.clone(), *version));
    }
    let out = dlink_rt::sql_pipeline::plan(query, tables, &pinned, cache)
        .await
        .map_err(|e| e.to_string())?;
    for k in &p.keys {
        let f = out.field_with_name(&k.name).map_err(|_| {
            let names: Vec<&str> = out.fields().iter().map(|f| f.name().as_str()).collect();
            format!(
                "returns no key column '{}' (it returns: {})",
                k.name,
                names.join(", ")
            )
        })?;
        let want = dlink_rt::affected::arrow_type(k.ty);
        if !deltalake::arrow::compute::can_cast_types(f.data_type(), &want) {
            return Err(format!(
                "returns key column '{}' as {}, which cannot be read as {want}",
                k.name,
                f.data_type()
            ));
        }
    }
    Ok(())
}
