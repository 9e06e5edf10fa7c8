//! The deriver a batch ran, found again (by the SHA-256 it recorded), and the
//! batch's inputs read again.

use super::*;

// ---- explaining --------------------------------------------------------------------

/// Per run: compiled plugins and file hashes, shared by the batches.
#[derive(Default)]
pub(super) struct Plugins {
    pub(super) hashes: HashMap<PathBuf, Option<String>>,
    pub(super) compiled: HashMap<String, crate::plugin::Compiled>,
}

impl Plugins {
    /// The SHA-256 of the file at `path`, `None` when it cannot be read.
    pub(super) fn sha256(&mut self, path: &Path) -> Option<String> {
        self.hashes
            .entry(path.to_path_buf())
            .or_insert_with(|| {
                std::fs::read(path)
                    .ok()
                    .map(|b| crate::plugin::sha256_hex(&b))
            })
            .clone()
    }
}

/// What derives a batch again, or why nothing can.
pub(super) enum Available {
    Plugin { path: PathBuf, spec: PluginSpec },
    Sql { query: String },
    No(String),
}

/// Finds the plugin (or query) a batch ran: the file at the recorded path, or the
/// pipeline's plugin file, with the recorded SHA-256.
pub(super) fn available(p: &Pipeline, meta: &BatchMeta, plugins: &mut Plugins) -> Available {
    let (Some(path), Some(sha)) = (&meta.plugin_path, &meta.plugin_sha256) else {
        return Available::No(format!(
            "the commit of batch {} records no plugin",
            meta.batch_id
        ));
    };
    let short = sha.get(..12).unwrap_or(sha);
    if path == SQL_DERIVER {
        return match &p.derivation {
            Derivation::Sql { query } if crate::plugin::sha256_hex(query.as_bytes()) == *sha => {
                Available::Sql {
                    query: query.clone(),
                }
            }
            Derivation::Sql { .. } => Available::No(format!(
                "the SQL query of {} changed since batch {} (the batch ran a query with sha256 {short}); \
                 the change rows cannot be re-derived",
                p.file.display(),
                meta.batch_id
            )),
            Derivation::Plugin(_) => Available::No(format!(
                "batch {} ran a SQL query (sha256 {short}) and the pipeline now runs a plugin; \
                 the change rows cannot be re-derived",
                meta.batch_id
            )),
        };
    }
    let Some(spec) = p.plugin() else {
        return Available::No(format!(
            "batch {} ran plugin {path} and the pipeline now runs a SQL query; \
             the change rows cannot be re-derived",
            meta.batch_id
        ));
    };
    let recorded = PathBuf::from(path);
    let found = plugins.sha256(&recorded);
    if found.as_deref() == Some(sha.as_str()) {
        return Available::Plugin {
            path: recorded,
            spec: spec.clone(),
        };
    }
    if spec.path != recorded && plugins.sha256(&spec.path).as_deref() == Some(sha.as_str()) {
        return Available::Plugin {
            path: spec.path.clone(),
            spec: spec.clone(),
        };
    }
    let what = match found {
        None => "the file is missing".to_string(),
        Some(now) => format!("the file now has sha256 {}", now.get(..12).unwrap_or(&now)),
    };
    Available::No(format!(
        "plugin {path} with sha256 {sha} is not available ({what}); \
         the change rows cannot be re-derived"
    ))
}

/// Derives the batch again, if it can be, and narrows down the causing rows.
pub(super) async fn rederive(
    run: &mut Run<'_>,
    meta: &BatchMeta,
    recorded: &[&RecordedRange],
    unusable: Vec<String>,
    b: &mut BatchWhy,
) -> std::result::Result<Rederivation, Rederivation> {
    let p = run.p;
    let unavailable = |reason: String| Rederivation::Unavailable { reason };
    let chosen = match available(p, meta, &mut run.plugins) {
        Available::No(reason) => return Err(unavailable(reason)),
        _ if !unusable.is_empty() => {
            return Err(unavailable(format!(
            "the pipeline's upstreams changed since batch {}: the change rows cannot be re-derived",
            meta.batch_id
        )))
        }
        chosen => chosen,
    };
    let ctx = cdf::session();
    let (inputs, mut pinned) = read_inputs(run, &ctx, recorded, b)
        .await
        .map_err(|e| unavailable(format!("the change rows cannot be read again: {e}")))?;
    for (t, v) in &meta.lookups {
        match p.table(t) {
            Some(u) => pinned.push((u.clone(), *v)),
            None => b.notes.push(format!(
                "lookup table '{t}' (version {v} in the batch) is no longer a lookup of the pipeline"
            )),
        }
    }
    let engine = match chosen {
        Available::Plugin { path, spec } => {
            b.deriver.used = Some(path.display().to_string());
            plugin_engine(run, meta, path, spec, pinned, ctx).await?
        }
        Available::Sql { query } => Engine::Sql {
            query,
            pinned,
            cache: run.cache.clone(),
        },
        Available::No(reason) => return Err(unavailable(reason)),
    };
    let mut rd = Rederive {
        p,
        key: run.key,
        batch_id: meta.batch_id,
        inputs,
        engine,
        calls: 0,
        budget: run.opts.max_derive_calls.max(1),
    };
    narrow_batch(&mut rd, run.opts, b)
        .await
        .map_err(|error| Rederivation::Failed {
            derive_calls: rd.calls,
            error,
        })
}

/// The plugin of the batch, instantiated again, with lookups at the batch's pinned
/// versions.
async fn plugin_engine(
    run: &mut Run<'_>,
    meta: &BatchMeta,
    path: PathBuf,
    spec: PluginSpec,
    pinned: Vec<(crate::config::Upstream, i64)>,
    ctx: deltalake::datafusion::prelude::SessionContext,
) -> std::result::Result<Engine, Rederivation> {
    let p = run.p;
    let unavailable = |reason: String| Rederivation::Unavailable { reason };
    let failed = |e: crate::plugin::PluginError| Rederivation::Failed {
        derive_calls: 0,
        error: format!("plugin {}: {e}", path.display()),
    };
    let sha = meta.plugin_sha256.clone().unwrap_or_default();
    let compiled = match run.plugins.compiled.get(&sha) {
        Some(c) => c.clone(),
        None => {
            let c = run.host.compile(&path).map_err(failed)?;
            run.plugins.compiled.insert(sha, c.clone());
            c
        }
    };
    let info = crate::engine::pipeline_info(p)
        .await
        .map_err(|e| unavailable(format!("the pipeline's tables cannot be opened: {e}")))?;
    let plugin = run
        .host
        .instantiate(&compiled, &info, &spec)
        .await
        .map_err(failed)?;
    Ok(Engine::Plugin {
        plugin: Box::new(plugin),
        lookup: Arc::new(TableLookup::new(
            &p.name,
            spec.limits.max_lookup_rows,
            pinned,
            run.cache.clone(),
            ctx,
            run.host.indexes().clone(),
            p.lookup_settings,
        )),
    })
}

/// Reads the recorded ranges again, each upstream as of its pinned version (kept in
/// the run's table cache for the lookups). Returns the inputs and the pinned tables.
pub(super) async fn read_inputs(
    run: &Run<'_>,
    ctx: &deltalake::datafusion::prelude::SessionContext,
    recorded: &[&RecordedRange],
    b: &mut BatchWhy,
) -> Result<(Vec<Input>, Vec<(Upstream, i64)>)> {
    let mut inputs = Vec::with_capacity(recorded.len());
    let mut pinned = Vec::new();
    for r in recorded {
        let Some(u) = run.p.table(&r.name) else {
            continue;
        };
        let t = cdf::open_at(u, r.pinned).await?;
        run.cache
            .lock()
            .await
            .insert((u.name.clone(), r.pinned), t.clone());
        let schema = cdf::change_schema(u, cdf::arrow_schema(u, &t)?.as_ref())?;
        let rows = match r.range {
            Some((s, e)) => {
                let ch = cdf::read_changes(ctx, u, &t, s, e).await?;
                concat_batches(&ch.schema, &ch.batches).map_err(|e| cdf::table_err(u, e))?
            }
            None => RecordBatch::new_empty(schema.clone()),
        };
        if rows.num_rows() as u64 != r.change_rows {
            b.notes.push(format!(
                "'{}': {} change rows read again, the batch read {} (the catalog's columns, filter or \
                 change_types may have changed since)",
                r.name,
                rows.num_rows(),
                r.change_rows
            ));
        }
        pinned.push((u.clone(), r.pinned));
        inputs.push(Input {
            upstream: u.clone(),
            range: r.range,
            pinned: r.pinned,
            schema,
            rows,
        });
    }
    Ok((inputs, pinned))
}
