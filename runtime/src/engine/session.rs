//! One opened run of a pipeline: its link table with the checkpoint, a cursor per
//! upstream and the lookup tables, kept open from batch to batch and, in `--follow`
//! mode, from poll to poll (only new log entries are read then).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deltalake::DeltaTable;
use futures::future::try_join_all;

use super::{load_plugin, plan, test_pause, BatchReport, PluginSlot, RunSummary, Stages};
use crate::cdf::{self, Changes, FanOut, LogCheck};
use crate::config::{Derivation, Pipeline, Upstream};
use crate::error::{BatchFailure, Error, Result};
use crate::keys::DefaultCause;
use crate::lookup::{TableCache, TableLookup};
use crate::plugin::{PluginError, PluginHost, UpstreamInput};
use crate::sink::{Commit, LinkTable, UpstreamRange};
use crate::sql_pipeline::ChangeTable;

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

    /// Reads the log entries committed since the table was loaded. A caught-up cursor
    /// keeps its log check, which stands at the next version; one that was caught up
    /// when opened starts it from the state of its last version (read once).
    async fn refresh(&mut self) -> Result<()> {
        if self.pending() {
            return Ok(());
        }
        let u = &self.upstream;
        if self.log.is_none() && self.next == self.latest + 1 {
            self.log = Some(LogCheck::at(cdf::state_of(u, &self.table)?, self.next));
        }
        self.table
            .update_state()
            .await
            .map_err(|e| cdf::table_err(u, e))?;
        self.latest = cdf::version_of(u, &self.table)?;
        if self.pending() && self.log.is_none() {
            self.log = Some(LogCheck::start(u, &self.table, self.next).await?);
        }
        Ok(())
    }
}

/// A pipeline opened for batches.
pub(crate) struct Session {
    link: LinkTable,
    cursors: Vec<Cursor>,
    lookups: Vec<(Upstream, DeltaTable)>,
    ctx: deltalake::datafusion::prelude::SessionContext,
    cache: TableCache,
    /// The last batch committed.
    batch_id: i64,
    /// The first batch of this session (a SQL derivation's `active_since`).
    first_batch: i64,
    /// Time spent opening, reported with the first batch.
    open_time: Option<Duration>,
}

impl Session {
    /// Opens the link table, reads the checkpoint and opens every upstream and lookup
    /// table at its latest version.
    pub(crate) async fn open(pipeline: &Pipeline, fanout: Option<&FanOut>) -> Result<Session> {
        let started = Instant::now();
        let mut lap = Lap::start();
        let mut link = LinkTable::open(pipeline).await?;
        let link_ms = lap.next().as_millis();
        let checkpoint = link.checkpoint().await?;
        let checkpoint_ms = lap.next().as_millis();
        let (cursors, lookups) =
            futures::try_join!(
                open_cursors(pipeline, &checkpoint.done, fanout),
                try_join_all(pipeline.lookups.iter().map(|u| async move {
                    Ok::<_, Error>((u.clone(), cdf::open_latest(u).await?))
                }))
            )?;
        tracing::debug!(
            pipeline = %pipeline.name,
            link_ms,
            checkpoint_ms,
            upstreams_ms = lap.next().as_millis(),
            "session opened"
        );
        Ok(Session {
            link,
            cursors,
            lookups,
            ctx: cdf::session(),
            cache: Arc::default(),
            batch_id: checkpoint.batch_id,
            first_batch: checkpoint.batch_id + 1,
            open_time: Some(started.elapsed()),
        })
    }

    /// The last batch committed.
    pub(crate) fn batch_id(&self) -> i64 {
        self.batch_id
    }

    /// Whether some upstream has versions not done yet.
    pub(crate) fn pending(&self) -> bool {
        self.cursors.iter().any(Cursor::pending)
    }

    /// Catches up with versions committed upstream since the session opened or last
    /// refreshed, reading only new log entries. Returns `false` when the link table
    /// moved under the session (another run's batch, a reset): open a new session then.
    pub(crate) async fn refresh(&mut self) -> Result<bool> {
        if !self.link.unchanged().await? {
            return Ok(false);
        }
        let started = Instant::now();
        try_join_all(self.cursors.iter_mut().map(Cursor::refresh)).await?;
        self.open_time = Some(started.elapsed());
        Ok(true)
    }

    /// Runs batches until every upstream is done (or `max_batches` of the pipeline).
    pub(crate) async fn run(
        &mut self,
        pipeline: &Pipeline,
        host: &PluginHost,
        slot: &mut PluginSlot,
        fanout: Option<&FanOut>,
        summary: &mut RunSummary,
        on_batch: &mut impl FnMut(&BatchReport),
    ) -> Result<()> {
        let Session {
            link,
            cursors,
            lookups,
            ctx,
            cache,
            batch_id: committed_batch,
            first_batch,
            open_time,
        } = self;
        let first_batch = *first_batch;
        let plugin_label = pipeline.deriver();
        let mut batch_id = *committed_batch;
        while cursors.iter().any(Cursor::pending) {
            if let Some(max) = pipeline.max_batches {
                if summary.batches.len() as u64 >= max {
                    break;
                }
            }
            batch_id += 1;
            let started = Instant::now();
            let batch_err = |cause: BatchFailure| Error::Batch {
                pipeline: pipeline.name.clone(),
                batch_id,
                plugin: plugin_label.clone(),
                cause,
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
            let mut stages = Stages {
                open: open_time.take().unwrap_or_default(),
                ..Stages::default()
            };
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
            let (plan, changes) = plan::trim_to_budget(wanted, changes, pipeline.max_batch_rows)
                .map_err(|e| {
                    Error::Other(format!(
                        "pipeline '{}', batch {batch_id}: cannot cut the batch to max_batch_rows: {e}",
                        pipeline.name
                    ))
                })?;

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
            for (u, t) in lookups.iter_mut() {
                t.update_state().await.map_err(|e| cdf::table_err(u, e))?;
                let v = cdf::version_of(u, t)?;
                pinned.push((u.clone(), v));
                lookup_versions.push((u.name.clone(), v));
            }
            hold_open_tables(cache, cursors, lookups, &pinned).await;
            let names: Vec<&str> = pipeline.upstreams.iter().map(|u| u.name.as_str()).collect();
            let (keys, deriver_sha256, active_since) = match &pipeline.derivation {
                Derivation::Plugin(spec) => {
                    slot.swap_in(&pipeline.name, batch_id);
                    let mut lap = Lap::start();
                    if slot.current.is_none() {
                        slot.current = Some(load_plugin(pipeline, spec, host).await?);
                    }
                    let load_time = lap.next();
                    let active_since = *slot.active_since.get_or_insert(batch_id);
                    let Some(plugin) = slot.current.as_mut() else {
                        return Err(Error::Other("plugin not loaded".into()));
                    };
                    let mut inputs = Vec::with_capacity(cursors.len());
                    for ((c, ch), r) in cursors.iter().zip(&changes).zip(&ranges) {
                        let bytes = match ch {
                            Some(ch) if r.change_rows > 0 => {
                                crate::ipc::encode(&ch.schema, &ch.batches).map_err(|source| {
                                    batch_err(BatchFailure::Encode {
                                        upstream: r.name.clone(),
                                        source,
                                    })
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
                    let encode_time = lap.next();
                    let lookup = Arc::new(TableLookup::new(
                        &pipeline.name,
                        spec.limits.max_lookup_rows,
                        pinned,
                        cache.clone(),
                        ctx.clone(),
                        host.indexes().clone(),
                        pipeline.lookup_settings,
                    ));
                    let output = match plugin
                        .derive(&pipeline.name, batch_id, inputs, lookup)
                        .await
                    {
                        Ok(o) => o,
                        Err(e) => {
                            // A trapped instance must not run again.
                            slot.current = None;
                            return Err(batch_err(e.into()));
                        }
                    };
                    let call_time = lap.next();
                    let keys = crate::keys::collect(&output, &pipeline.keys, &names).map_err(
                        |reason| batch_err(PluginError::InvalidOutput { reason }.into()),
                    )?;
                    tracing::debug!(
                        pipeline = pipeline.name,
                        batch_id,
                        load_ms = load_time.as_millis(),
                        encode_ms = encode_time.as_millis(),
                        call_ms = call_time.as_millis(),
                        collect_ms = lap.next().as_millis(),
                        output_bytes = output.len(),
                        "derive stages"
                    );
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
                            default.change_ts =
                                default.change_ts.max(cdf::newest_commit_ts(&batches));
                        }
                        tables.push(ChangeTable {
                            name: &c.upstream.name,
                            schema,
                            batches,
                        });
                    }
                    let (schema, rows) = crate::sql_pipeline::derive(query, tables, &pinned, cache)
                        .await
                        .map_err(|e| batch_err(BatchFailure::Sql(e)))?;
                    let keys = crate::keys::collect_batches(
                        &schema,
                        &rows,
                        &pipeline.keys,
                        &names,
                        Some(&default),
                    )
                    .map_err(|e| batch_err(BatchFailure::Sql(e)))?;
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
            *committed_batch = batch_id;
            on_batch(&report);
            summary.batches.push(report);
        }
        Ok(())
    }
}

/// Lets lookups read the tables this session holds open when they are at the pinned
/// version (the last batch of a run), instead of loading them again.
async fn hold_open_tables(
    cache: &TableCache,
    cursors: &[Cursor],
    lookups: &[(Upstream, DeltaTable)],
    pinned: &[(Upstream, i64)],
) {
    let mut held = cache.lock().await;
    let open = cursors
        .iter()
        .map(|c| (&c.upstream, &c.table))
        .chain(lookups.iter().map(|(u, t)| (u, t)));
    for (u, t) in open {
        let pin = pinned
            .iter()
            .find(|(p, _)| p.name == u.name)
            .map(|(_, v)| *v);
        if let Some(pin) = pin.filter(|p| t.version().map(|v| v as i64) == Some(*p)) {
            crate::lookup::hold(&mut held, &u.name, pin, t);
        }
    }
}

/// Successive intervals of one stage (`next` returns the time since the last call).
struct Lap(Instant);

impl Lap {
    fn start() -> Self {
        Lap(Instant::now())
    }

    fn next(&mut self) -> Duration {
        let now = Instant::now();
        let lap = now - self.0;
        self.0 = now;
        lap
    }
}

async fn open_cursors(
    pipeline: &Pipeline,
    done: &BTreeMap<String, i64>,
    fanout: Option<&FanOut>,
) -> Result<Vec<Cursor>> {
    try_join_all(
        pipeline
            .upstreams
            .iter()
            .map(|u| open_cursor(u, done.get(&u.name), fanout)),
    )
    .await
}

/// Opens one upstream at its latest version and starts the log check of the versions
/// after `done` (all upstreams side by side).
async fn open_cursor(u: &Upstream, done: Option<&i64>, fanout: Option<&FanOut>) -> Result<Cursor> {
    let table = match fanout {
        Some(f) => f.open(u).await?,
        None => cdf::open_latest(u).await?,
    };
    let latest = cdf::version_of(u, &table)?;
    let next = match done {
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
        Some(LogCheck::start(u, &table, next).await?)
    } else {
        None
    };
    Ok(Cursor {
        upstream: u.clone(),
        table,
        next,
        latest,
        log,
    })
}
