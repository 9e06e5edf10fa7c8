//! The loop of one pipeline: plan the window from the checkpoint, then per micro-batch
//! check and read the change feed, call the plugin and commit keys and checkpoint
//! together.

mod follow;
mod many;
mod plan;

pub use follow::{follow, FollowOptions};
pub use many::{run_many, ManyOutcome};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use deltalake::DeltaTable;
use futures::future::try_join_all;

use crate::cdf::{self, Changes, FanOut, LogCheck};
use crate::config::{Derivation, Pipeline, PluginSpec, Upstream};
use crate::error::{Error, Result};
use crate::keys::DefaultCause;
use crate::plugin::{Plugin, PluginHost, UpstreamInput};
use crate::sink::{Commit, LinkTable, UpstreamRange};
use crate::sql::{TableCache, TableLookup};
use crate::sql_pipeline::ChangeTable;

/// After this many lost races in a row (another run committed the batch this one
/// worked on) a run stops and leaves the catch-up to the other run.
const MAX_LOST_IN_A_ROW: usize = 3;

/// What one committed batch did.
#[derive(Debug, Clone)]
pub struct BatchReport {
    pub pipeline: String,
    pub batch_id: i64,
    pub upstreams: Vec<UpstreamRange>,
    pub change_rows: usize,
    pub keys: usize,
    pub link_version: i64,
    pub millis: u128,
    /// Where the batch's time went.
    pub stages: Stages,
}

/// Wall time of a batch's stages.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stages {
    /// Checking the upstreams' logs and planning ranges.
    pub plan: std::time::Duration,
    /// Reading the change feed.
    pub read: std::time::Duration,
    /// Plugin or SQL derivation, lookups and output validation included.
    pub derive: std::time::Duration,
    /// The link-table commit.
    pub commit: std::time::Duration,
}

impl std::fmt::Display for BatchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ranges = self
            .upstreams
            .iter()
            .map(|u| match u.range {
                Some((s, e)) if s == e => format!("{} v{s}", u.name),
                Some((s, e)) => format!("{} v{s}..{e}", u.name),
                None => format!("{} -", u.name),
            })
            .collect::<Vec<_>>()
            .join(", ");
        write!(
            f,
            "{} batch {}: {ranges} | {} change rows | {} keys | {} ms",
            self.pipeline, self.batch_id, self.change_rows, self.keys, self.millis
        )
    }
}

/// The outcome of a run.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    pub batches: Vec<BatchReport>,
    /// Set when the run stopped because another run was committing the same batches.
    pub yielded: Option<String>,
}

/// Where an upstream stands in a run.
struct Cursor {
    upstream: Upstream,
    table: DeltaTable,
    /// Next version to read.
    next: i64,
    latest: i64,
    log: Option<LogCheck>,
}

impl Cursor {
    fn pending(&self) -> bool {
        self.next <= self.latest
    }
}

/// The plugin instance a pipeline runs with, and the ones waiting to replace it.
#[derive(Default)]
pub struct PluginSlot {
    current: Option<Plugin>,
    /// The batch at which `current` took effect.
    active_since: Option<i64>,
    /// New instances (compiled, instantiated and `init`-ed off the batch path).
    incoming: Option<tokio::sync::mpsc::Receiver<Plugin>>,
}

impl PluginSlot {
    /// A slot that also takes new instances from `incoming` between batches.
    pub fn with_incoming(incoming: tokio::sync::mpsc::Receiver<Plugin>) -> Self {
        PluginSlot {
            incoming: Some(incoming),
            ..Default::default()
        }
    }

    /// The SHA-256 of the running plugin, if any.
    pub fn sha256(&self) -> Option<&str> {
        self.current.as_ref().map(|p| p.sha256.as_str())
    }

    /// Swaps in the newest waiting instance, if any, to take effect at `batch_id`.
    fn swap_in(&mut self, pipeline: &str, batch_id: i64) {
        let Some(rx) = self.incoming.as_mut() else {
            return;
        };
        let mut newest = None;
        while let Ok(p) = rx.try_recv() {
            newest = Some(p);
        }
        if let Some(p) = newest {
            let started = Instant::now();
            let old = self.current.replace(p);
            self.active_since = Some(batch_id);
            // Unmapping the old instance's memory takes milliseconds: not on the batch path.
            if let Some(old) = old {
                tokio::task::spawn_blocking(move || drop(old));
            }
            tracing::info!(
                "{pipeline}: plugin {} takes effect at batch {batch_id} (swap pause {} µs)",
                self.sha256().map_or("", |s| &s[..12]),
                started.elapsed().as_micros()
            );
        }
    }

    /// Waits until a new instance arrives (after a failed batch). `None` when no
    /// watcher feeds this slot.
    async fn wait_for_new(&mut self) -> Option<()> {
        let rx = self.incoming.as_mut()?;
        let p = rx.recv().await?;
        self.current = Some(p);
        self.active_since = None;
        Some(())
    }
}

/// Runs `pipeline` until it has caught up with its upstreams' latest versions as of
/// the start of the run (or `max_batches` batches). Calls `on_batch` after each
/// commit. A run with nothing new commits nothing. When another run of the same
/// pipeline commits a batch first, this one starts over from the new checkpoint; after
/// [`MAX_LOST_IN_A_ROW`] such losses in a row it stops (successfully, with
/// `yielded` set) and leaves the catch-up to the other run.
pub async fn run_pipeline(
    pipeline: &Pipeline,
    host: &PluginHost,
    mut on_batch: impl FnMut(&BatchReport),
) -> Result<RunSummary> {
    run_with(
        pipeline,
        host,
        &mut PluginSlot::default(),
        None,
        &mut on_batch,
    )
    .await
}

/// [`run_pipeline`] with a given plugin slot, which keeps its instance across runs
/// and may swap in new ones between batches (see [`follow`]).
pub async fn run_with(
    pipeline: &Pipeline,
    host: &PluginHost,
    slot: &mut PluginSlot,
    fanout: Option<&FanOut>,
    on_batch: &mut impl FnMut(&BatchReport),
) -> Result<RunSummary> {
    let mut summary = RunSummary::default();
    let mut lost_in_a_row = 0;
    loop {
        let committed = summary.batches.len();
        match run_once(pipeline, host, slot, fanout, &mut summary, on_batch).await {
            Err(Error::Concurrent {
                batch_id, found, ..
            }) => {
                lost_in_a_row = if summary.batches.len() > committed {
                    1
                } else {
                    lost_in_a_row + 1
                };
                let what = format!(
                    "batch {batch_id} was committed by another run (link table at batch {found})"
                );
                if lost_in_a_row >= MAX_LOST_IN_A_ROW {
                    summary.yielded = Some(format!(
                        "another run is committing this pipeline's batches ({what}); stopping and leaving the catch-up to it"
                    ));
                    return Ok(summary);
                }
                tracing::warn!("{}: {what}; continuing from there", pipeline.name);
                // The instance may hold state of the abandoned batch; start a fresh one.
                slot.current = None;
            }
            other => {
                return other
                    .map(|()| summary)
                    .map_err(|e| e.with_pipeline_file(&pipeline.file))
            }
        }
    }
}

async fn run_once(
    pipeline: &Pipeline,
    host: &PluginHost,
    slot: &mut PluginSlot,
    fanout: Option<&FanOut>,
    summary: &mut RunSummary,
    on_batch: &mut impl FnMut(&BatchReport),
) -> Result<()> {
    let mut link = LinkTable::open(pipeline).await?;
    let checkpoint = link.checkpoint().await?;
    let mut cursors = open_cursors(pipeline, &checkpoint.done).await?;
    if !cursors.iter().any(Cursor::pending) {
        tracing::info!(
            "{}: up to date at batch {}",
            pipeline.name,
            checkpoint.batch_id
        );
        return Ok(());
    }
    let mut lookups: Vec<(Upstream, DeltaTable)> = Vec::new();
    for u in &pipeline.lookups {
        lookups.push((u.clone(), cdf::open_latest(u).await?));
    }
    let plugin_label = pipeline.deriver();
    let ctx = cdf::session();
    let cache: TableCache = Arc::default();
    let mut batch_id = checkpoint.batch_id;
    let first_batch = batch_id + 1;
    while cursors.iter().any(Cursor::pending) {
        if let Some(max) = pipeline.max_batches {
            if summary.batches.len() as u64 >= max {
                break;
            }
        }
        batch_id += 1;
        let started = Instant::now();
        let batch_err = |message: String| Error::Batch {
            pipeline: pipeline.name.clone(),
            batch_id,
            plugin: plugin_label.clone(),
            message,
        };
        // Plan at most batch_size versions per pending upstream, check their log
        // entries, read them, then trim the plan to the row budget.
        let wanted: Vec<Option<(i64, i64)>> = cursors
            .iter()
            .map(|c| {
                c.pending()
                    .then(|| (c.next, (c.next + pipeline.batch_size - 1).min(c.latest)))
            })
            .collect();
        let mut stages = Stages::default();
        for (c, r) in cursors.iter_mut().zip(&wanted) {
            if let (Some((_, e)), Some(log)) = (r, c.log.as_mut()) {
                log.check_to(&c.upstream, &c.table, *e).await?;
            }
        }
        stages.plan = started.elapsed();
        let read_started = Instant::now();
        let changes: Vec<Option<Changes>> =
            try_join_all(cursors.iter().zip(&wanted).map(|(c, r)| {
                let ctx = &ctx;
                async move {
                    match (r, fanout) {
                        (Some((s, e)), Some(f)) => f
                            .read(ctx, &c.upstream, &c.table, *s, *e)
                            .await
                            .map(|shared| Some(Changes::clone(&shared))),
                        (Some((s, e)), None) => {
                            cdf::read_changes(ctx, &c.upstream, &c.table, *s, *e)
                                .await
                                .map(Some)
                        }
                        (None, _) => Ok(None),
                    }
                }
            }))
            .await?;
        let (plan, changes) = plan::trim_to_budget(wanted, changes, pipeline.max_batch_rows);

        let mut ranges = Vec::with_capacity(cursors.len());
        let mut pinned = Vec::new();
        for ((c, r), ch) in cursors.iter().zip(&plan).zip(&changes) {
            let pin = match r {
                Some((_, e)) => *e,
                None => (c.next - 1).clamp(0, c.latest),
            };
            pinned.push((c.upstream.clone(), pin));
            ranges.push(UpstreamRange {
                name: c.upstream.name.clone(),
                range: *r,
                pinned: pin,
                change_rows: ch.as_ref().map_or(0, Changes::rows),
            });
        }
        stages.read = read_started.elapsed();
        test_pause("after-read", batch_id);
        let derive_started = Instant::now();
        // Lookup-only tables are pinned at their latest version as of the batch start.
        let mut lookup_versions = Vec::with_capacity(lookups.len());
        for (u, t) in &mut lookups {
            t.update_state().await.map_err(|e| Error::Table {
                table: u.name.clone(),
                uri: u.uri.clone(),
                message: e.to_string(),
            })?;
            let v = cdf::version_of(u, t)?;
            pinned.push((u.clone(), v));
            lookup_versions.push((u.name.clone(), v));
        }
        let names: Vec<&str> = pipeline.upstreams.iter().map(|u| u.name.as_str()).collect();
        let (keys, deriver_sha256, active_since) = match &pipeline.derivation {
            Derivation::Plugin(spec) => {
                slot.swap_in(&pipeline.name, batch_id);
                if slot.current.is_none() {
                    slot.current = Some(load_plugin(pipeline, spec, host).await?);
                }
                let active_since = *slot.active_since.get_or_insert(batch_id);
                let Some(plugin) = slot.current.as_mut() else {
                    return Err(Error::Other("plugin not loaded".into()));
                };
                let mut inputs = Vec::with_capacity(cursors.len());
                for ((c, ch), r) in cursors.iter().zip(&changes).zip(&ranges) {
                    let bytes = match ch {
                        Some(ch) if r.change_rows > 0 => {
                            crate::ipc::encode(&ch.schema, &ch.batches).map_err(|e| {
                                batch_err(format!("cannot encode the changes of '{}': {e}", r.name))
                            })?
                        }
                        _ => Vec::new(),
                    };
                    let (start, end) = r.range.unwrap_or((r.pinned + 1, r.pinned));
                    inputs.push(UpstreamInput {
                        name: c.upstream.name.clone(),
                        start_version: start,
                        end_version: end,
                        changes: bytes,
                    });
                }
                drop(changes);
                let lookup = Arc::new(TableLookup::new(
                    &pipeline.name,
                    spec.limits.max_lookup_rows,
                    pinned,
                    cache.clone(),
                    ctx.clone(),
                ));
                let output = match plugin
                    .derive(&pipeline.name, batch_id, inputs, lookup)
                    .await
                {
                    Ok(o) => o,
                    Err(e) => {
                        // A trapped instance must not run again.
                        slot.current = None;
                        return Err(batch_err(e));
                    }
                };
                let keys =
                    crate::keys::collect(&output, &pipeline.keys, &names).map_err(&batch_err)?;
                (keys, plugin.sha256.clone(), active_since)
            }
            Derivation::Sql { query } => {
                let mut tables = Vec::with_capacity(cursors.len());
                let mut default = DefaultCause::default();
                for ((c, ch), r) in cursors.iter().zip(changes).zip(&ranges) {
                    let (schema, batches) = match ch {
                        Some(ch) => (ch.schema.clone(), ch.batches),
                        None => (
                            cdf::change_schema(
                                &c.upstream,
                                cdf::arrow_schema(&c.upstream, &c.table)?.as_ref(),
                            )?,
                            Vec::new(),
                        ),
                    };
                    if r.change_rows > 0 {
                        default.upstreams.push(r.name.clone());
                        default.change_ts = default.change_ts.max(cdf::newest_commit_ts(&batches));
                    }
                    tables.push(ChangeTable {
                        name: &c.upstream.name,
                        schema,
                        batches,
                    });
                }
                let (schema, rows) = crate::sql_pipeline::derive(query, tables, &pinned, &cache)
                    .await
                    .map_err(&batch_err)?;
                let keys = crate::keys::collect_batches(
                    &schema,
                    &rows,
                    &pipeline.keys,
                    &names,
                    Some(&default),
                )
                .map_err(&batch_err)?;
                (
                    keys,
                    crate::plugin::sha256_hex(query.as_bytes()),
                    first_batch,
                )
            }
        };
        stages.derive = derive_started.elapsed();
        test_pause("before-commit", batch_id);
        let commit_started = Instant::now();
        let link_version = link
            .commit(Commit {
                batch_id,
                keys: &keys,
                upstreams: &ranges,
                lookups: &lookup_versions,
                plugin_path: plugin_label.clone(),
                plugin_sha256: deriver_sha256,
                plugin_active_since: active_since,
            })
            .await?;
        stages.commit = commit_started.elapsed();
        test_pause("after-commit", batch_id);
        for (c, r) in cursors.iter_mut().zip(&plan) {
            if let Some((_, e)) = r {
                c.next = e + 1;
            }
        }
        let report = BatchReport {
            pipeline: pipeline.name.clone(),
            batch_id,
            change_rows: ranges.iter().map(|r| r.change_rows).sum(),
            upstreams: ranges,
            keys: keys.len(),
            link_version,
            millis: started.elapsed().as_millis(),
            stages,
        };
        on_batch(&report);
        summary.batches.push(report);
    }
    Ok(())
}

async fn open_cursors(pipeline: &Pipeline, done: &BTreeMap<String, i64>) -> Result<Vec<Cursor>> {
    let tables = try_join_all(pipeline.upstreams.iter().map(cdf::open_latest)).await?;
    let mut cursors = Vec::with_capacity(tables.len());
    for (u, table) in pipeline.upstreams.iter().zip(tables) {
        let latest = cdf::version_of(u, &table)?;
        let next = match done.get(&u.name) {
            Some(d) if *d > latest => {
                return Err(Error::CheckpointAhead {
                    table: u.name.clone(),
                    done: *d,
                    latest,
                    pipeline_file: None,
                })
            }
            Some(d) => d + 1,
            None => u.start_version,
        };
        let log = if next <= latest {
            Some(LogCheck::start(u, next).await?)
        } else {
            None
        };
        cursors.push(Cursor {
            upstream: u.clone(),
            table,
            next,
            latest,
            log,
        });
    }
    Ok(cursors)
}

pub(crate) async fn load_plugin(
    pipeline: &Pipeline,
    spec: &PluginSpec,
    host: &PluginHost,
) -> Result<Plugin> {
    let path = &spec.path;
    let load_err = |message: String| Error::PluginLoad {
        path: path.clone(),
        message: format!("pipeline '{}': {message}", pipeline.name),
    };
    let compiled = host.compile(path).map_err(load_err)?;
    host.instantiate(&compiled, &pipeline.name, spec)
        .await
        .map_err(load_err)
}

/// Test hook: `DLINK_TEST_PAUSE_AT=<point>:<batch>` makes the process announce
/// `DLINK_TEST_PAUSED <point>:<batch>` on stderr and stop there, so a test can SIGKILL
/// it at an exact point. Points: `after-read`, `before-commit`, `after-commit`.
fn test_pause(point: &str, batch_id: i64) {
    static PAUSE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let Some(want) = PAUSE.get_or_init(|| std::env::var("DLINK_TEST_PAUSE_AT").ok()) else {
        return;
    };
    if *want == format!("{point}:{batch_id}") {
        eprintln!("DLINK_TEST_PAUSED {want}");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}
