//! One opened run of a pipeline: its link table with the checkpoint, a cursor per
//! upstream and the lookup tables, kept open from batch to batch and, in `--follow`
//! mode, from poll to poll (only new log entries are read then).

use std::sync::Arc;
use std::time::{Duration, Instant};

use deltalake::DeltaTable;
use futures::future::try_join_all;

use super::derive::{BatchInput, Derive, Derived, Deriver, Lap, UpstreamBatch};
use super::read::{self, Cursor};
use super::{budget, plan, test_pause, watchdog, BatchReport, PluginSlot, RunSummary, Stages};
use crate::cdf::{self, FanOut, LogCheck, Rows};
use crate::config::{Pipeline, Upstream};
use crate::engine::error::{BatchFailure, Error, ReadError, Result};
use crate::lookup::TableCache;
use crate::plugin::PluginHost;
use crate::sink::{Checkpoint, Commit, LinkTable, UpstreamRange};

/// What the read stage hands on to derive and commit.
struct ReadBatch {
    /// The versions the batch takes (cut to the row budget).
    plan: plan::Ranges,
    /// Each upstream's change rows, read or streamed (taken by the derive stage).
    changes: Vec<Option<Rows>>,
    /// The rows counted as they stream, per streamed upstream (its `change_rows` is
    /// known once the derive stage has read them).
    streamed: Vec<Option<Arc<std::sync::atomic::AtomicUsize>>>,
    /// Each upstream's part, for the report and the commit metadata.
    ranges: Vec<UpstreamRange>,
    /// Every table a lookup may read, at the batch's version.
    pinned: Vec<(Upstream, i64)>,
    /// The lookup-only tables' versions, for the commit metadata.
    lookup_versions: Vec<(String, i64)>,
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
    /// Once cancelled, no new batch starts (the running one finishes).
    stop: Option<tokio_util::sync::CancellationToken>,
    /// Whether the plugin (or query) the last committed batch recorded was looked up
    /// (a process that starts with the same file goes on counting "in effect since"
    /// from there).
    looked_up_record: bool,
    /// Derive the batches but commit nothing (`run --dry-run`).
    dry_run: bool,
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
                open_cursors(pipeline, &checkpoint, fanout),
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
            stop: None,
            looked_up_record: false,
            dry_run: false,
        })
    }

    /// Derives batches without committing them (the cursors move in memory only).
    pub(crate) fn dry_run(&mut self) {
        self.dry_run = true;
    }

    /// Starts no batch after `stop` is cancelled (the one running finishes).
    pub(crate) fn stop_on(&mut self, stop: tokio_util::sync::CancellationToken) {
        self.stop = Some(stop);
    }

    /// The error of a link table that is gone after it held `batch_id`.
    pub(crate) fn link_gone(&self, batch_id: i64) -> Error {
        self.link.gone(batch_id).into()
    }

    /// The last batch committed.
    pub(crate) fn batch_id(&self) -> i64 {
        self.batch_id
    }

    /// Checks the log entries of every version not done yet (at most `limit` per
    /// upstream), without reading or committing anything: `validate`'s look at what the
    /// next run will read.
    pub(crate) async fn check_pending(&mut self, limit: i64) -> Result<()> {
        for c in &mut self.cursors {
            if let Some(log) = c.log.as_mut() {
                let end = c.latest.min(c.next.saturating_add(limit - 1));
                log.check_to(&c.upstream, &c.table, end).await?;
            }
        }
        Ok(())
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

    /// Runs batches until every upstream is done (or `max_batches` of the pipeline):
    /// each batch walks the stages plan, read, derive and commit, once each.
    pub(crate) async fn run(
        &mut self,
        pipeline: &Pipeline,
        host: &PluginHost,
        slot: &mut PluginSlot,
        fanout: Option<&FanOut>,
        summary: &mut RunSummary,
        on_batch: &mut impl FnMut(&BatchReport),
    ) -> Result<()> {
        if !self.looked_up_record {
            // Once per session: what the last committed batch recorded of its plugin.
            self.looked_up_record = true;
            let recorded = match self.batch_id {
                0 => None,
                b => self
                    .link
                    .batch_record(b)
                    .await
                    .and_then(|m| Some((m.plugin_sha256?, m.plugin_active_since?))),
            };
            if let (crate::config::Derivation::Sql { query }, Some((sha, since))) =
                (&pipeline.derivation, &recorded)
            {
                if *sha == crate::plugin::sha256_hex(query.as_bytes()) {
                    self.first_batch = *since;
                }
            }
            slot.recorded(recorded);
        }
        let mut deriver = Deriver::of(pipeline, host, slot, self.first_batch);
        while self.pending() && !self.stop.as_ref().is_some_and(|s| s.is_cancelled()) {
            if pipeline
                .max_batches
                .is_some_and(|max| summary.batches.len() as u64 >= max)
            {
                break;
            }
            let report = self.batch(pipeline, &mut deriver, fanout).await?;
            on_batch(&report);
            summary.batches.push(report);
        }
        Ok(())
    }

    /// One batch: plan, read, derive, commit, once each. On an error nothing is
    /// committed and the cursors stay where they were.
    async fn batch(
        &mut self,
        pipeline: &Pipeline,
        deriver: &mut Deriver<'_>,
        fanout: Option<&FanOut>,
    ) -> Result<BatchReport> {
        let batch_id = self.batch_id + 1;
        let started = Instant::now();
        let mut lap = Lap::start();
        let mut stages = Stages {
            open: self.open_time.take().unwrap_or_default(),
            ..Stages::default()
        };
        let step =
            |stage: &str| watchdog::at(&pipeline.name, format_args!("batch {batch_id}: {stage}"));
        step("plan");
        let wanted = self.plan(pipeline);
        stages.plan = lap.next();
        step("read");
        let mut read = self.read(pipeline, batch_id, wanted, fanout).await?;
        stages.read = lap.next();
        test_pause("after-read", batch_id);
        step("derive");
        let derived = self.derive(pipeline, batch_id, deriver, &mut read).await?;
        for (r, counted) in read.ranges.iter_mut().zip(&read.streamed) {
            if let Some(n) = counted {
                r.change_rows = n.load(std::sync::atomic::Ordering::Relaxed);
            }
        }
        stages.derive = lap.next();
        test_pause("before-commit", batch_id);
        let dry_run_keys = if self.dry_run {
            Some(first_keys(&derived.keys, DRY_RUN_KEYS))
        } else {
            None
        };
        let link_version = if self.dry_run {
            -1
        } else {
            step("commit");
            self.commit(pipeline, batch_id, &read, &derived, started.elapsed())
                .await?
        };
        stages.commit = lap.next();
        test_pause("after-commit", batch_id);
        self.advance(&read.plan, batch_id);
        let report = BatchReport {
            pipeline: pipeline.name.clone(),
            batch_id,
            change_rows: read.ranges.iter().map(|r| r.change_rows).sum(),
            upstreams: read.ranges,
            keys: derived.keys.len(),
            link_version,
            millis: started.elapsed().as_millis(),
            stages,
            dry_run_keys,
        };
        tracing::info!(
            pipeline = %pipeline.name,
            batch = batch_id,
            dry_run = self.dry_run,
            upstreams = %report.ranges(),
            change_rows = report.change_rows,
            keys = report.keys,
            ms = report.millis as u64,
            link_version,
            plugin_sha256 = %derived.sha256,
            contract = %derived
                .contract
                .map_or_else(|| "none (SQL)".to_string(), |c| c.to_string()),
            "{}",
            if self.dry_run {
                "batch derived (dry run, not committed)"
            } else {
                "batch committed"
            }
        );
        Ok(report)
    }

    /// The plan stage (no IO): at most `batch_size` versions per pending upstream.
    fn plan(&self, pipeline: &Pipeline) -> plan::Ranges {
        plan::wanted(self.positions(), pipeline.batch_size)
    }

    /// The read stage: the planned ranges' log entries checked (a version that cannot
    /// be read fails the batch before any row is read), their change rows read and cut
    /// to the row budget at whole commits, and every table pinned (upstreams at their
    /// ranges' ends, lookup-only tables at their latest version).
    async fn read(
        &mut self,
        pipeline: &Pipeline,
        batch_id: i64,
        wanted: plan::Ranges,
        fanout: Option<&FanOut>,
    ) -> Result<ReadBatch> {
        read::check_logs(&mut self.cursors, &wanted).await?;
        // Ranges over one plugin call (`chunk_rows`) stream into the derive stage as
        // they are read (into the plugin's calls, or into the SQL query); the others
        // are read now (shared by the run's pipelines through the fan-out).
        let plans = read::plan_streams(&self.cursors, &wanted, pipeline.chunk_rows).await?;
        let now: plan::Ranges = wanted
            .iter()
            .zip(&plans)
            .map(|(w, p)| if p.is_some() { None } else { *w })
            .collect();
        let changes = read::read_ranges(&self.ctx, &self.cursors, &now, fanout).await?;
        let budget_err = |source| Error::Batch {
            pipeline: pipeline.name.clone(),
            batch_id,
            plugin: pipeline.deriver(),
            cause: BatchFailure::Budget { source },
        };
        // The cut to max_batch_rows at whole commits: streamed ranges counted from the
        // log's statistics (or the files' footers), read ones from their rows.
        let plan = match pipeline.max_batch_rows {
            None => wanted.clone(),
            Some(budget) => {
                let mut counts = Vec::with_capacity(plans.len());
                for (p, ch) in plans.iter().zip(&changes) {
                    counts.push(match (p, ch) {
                        (Some(p), _) => Some(
                            p.rows_per_version()
                                .await?
                                .into_iter()
                                .map(|(v, n)| (v, usize::try_from(n).unwrap_or(usize::MAX)))
                                .collect(),
                        ),
                        (None, Some(ch)) => Some(budget::counts_of(ch).map_err(budget_err)?),
                        (None, None) => None,
                    });
                }
                budget::cut(&wanted, &counts, budget)
            }
        };
        let mut rows = Vec::with_capacity(plans.len());
        let mut streamed = Vec::with_capacity(plans.len());
        for (((p, ch), cut), w) in plans.into_iter().zip(changes).zip(&plan).zip(&wanted) {
            let (row, counter) = match (cut, p, ch) {
                (Some((s, c)), Some(mut p), _) => {
                    tracing::debug!(pipeline = %pipeline.name, batch_id, upstream = p.name(), start = s, end = c, "change rows streamed");
                    p.up_to(*c);
                    let s = p.stream();
                    let counter = s.delivered();
                    (Some(Rows::Stream(s)), Some(counter))
                }
                (Some((_, c)), None, Some(ch)) => {
                    let ch = match w {
                        Some((_, e)) if e == c => ch,
                        _ => budget::up_to(ch, *c).map_err(budget_err)?,
                    };
                    (Some(Rows::Read(ch)), None)
                }
                _ => (None, None),
            };
            rows.push(row);
            streamed.push(counter);
        }
        let changes = rows;
        let pins = plan::pin(&plan, self.positions());
        let ranges = self.ranges(&plan, &changes, &pins);
        let lookup_pins = read::pin_lookups(&mut self.lookups).await?;
        let pinned: Vec<(Upstream, i64)> = self
            .cursors
            .iter()
            .map(|c| c.upstream.clone())
            .zip(pins)
            .chain(lookup_pins.iter().cloned())
            .collect();
        hold_open_tables(&self.cache, &self.cursors, &self.lookups, &pinned).await;
        Ok(ReadBatch {
            plan,
            changes,
            streamed,
            ranges,
            pinned,
            lookup_versions: lookup_pins.into_iter().map(|(u, v)| (u.name, v)).collect(),
        })
    }

    /// The derive stage: the pipeline's plugin or query over the batch's change rows
    /// (handed over, so each upstream's are freed once the plugin has its copy).
    async fn derive(
        &self,
        pipeline: &Pipeline,
        batch_id: i64,
        deriver: &mut Deriver<'_>,
        read: &mut ReadBatch,
    ) -> Result<Derived> {
        let upstreams = self
            .cursors
            .iter()
            .zip(std::mem::take(&mut read.changes))
            .zip(&read.ranges)
            .map(|((c, changes), range)| UpstreamBatch {
                upstream: &c.upstream,
                range,
                changes,
                table: &c.table,
            })
            .collect();
        deriver
            .derive(BatchInput {
                pipeline,
                batch_id,
                upstreams,
                pinned: read.pinned.clone(),
                lookup_tables: &self.lookups,
                cache: &self.cache,
                ctx: &self.ctx,
            })
            .await
    }

    /// The commit stage: the keys and the checkpoint in one commit of the link table;
    /// returns its version.
    async fn commit(
        &mut self,
        pipeline: &Pipeline,
        batch_id: i64,
        read: &ReadBatch,
        derived: &Derived,
        elapsed: Duration,
    ) -> Result<i64> {
        self.link
            .commit(Commit {
                batch_id,
                keys: &derived.keys,
                upstreams: &read.ranges,
                lookups: &read.lookup_versions,
                plugin_path: pipeline.deriver(),
                plugin_sha256: derived.sha256.clone(),
                plugin_active_since: derived.active_since,
                plugin_contract: derived.contract,
                elapsed_ms: elapsed.as_millis() as u64,
            })
            .await
            .map_err(Error::from)
    }

    /// Each upstream's part of the batch, for the report and the commit metadata.
    fn ranges(
        &self,
        plan: &plan::Ranges,
        changes: &[Option<Rows>],
        pins: &[i64],
    ) -> Vec<UpstreamRange> {
        self.cursors
            .iter()
            .zip(plan)
            .zip(changes)
            .zip(pins)
            .map(|(((c, r), ch), pin)| UpstreamRange {
                name: c.upstream.name.clone(),
                range: *r,
                pinned: *pin,
                change_rows: match ch {
                    Some(Rows::Read(ch)) => ch.rows(),
                    // Counted as they stream (set after the derive stage).
                    Some(Rows::Stream(_)) | None => 0,
                },
                table_id: c.table_id.clone(),
            })
            .collect()
    }

    /// After the commit of `batch_id`: each upstream's next version follows its range.
    fn advance(&mut self, plan: &plan::Ranges, batch_id: i64) {
        for (c, r) in self.cursors.iter_mut().zip(plan) {
            if let Some((_, e)) = r {
                c.next = e + 1;
            }
        }
        self.batch_id = batch_id;
    }

    /// Each upstream's (next version to read, latest version).
    fn positions(&self) -> Vec<(i64, i64)> {
        self.cursors.iter().map(|c| (c.next, c.latest)).collect()
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

async fn open_cursors(
    pipeline: &Pipeline,
    checkpoint: &Checkpoint,
    fanout: Option<&FanOut>,
) -> Result<Vec<Cursor>> {
    try_join_all(
        pipeline
            .upstreams
            .iter()
            .map(|u| open_cursor(u, checkpoint, fanout)),
    )
    .await
}

/// Opens one upstream at its latest version and starts the log check of the versions
/// after the checkpoint's (all upstreams side by side). The table must be the one the
/// checkpoint's versions were read from (its recorded table id), whatever its
/// version count.
async fn open_cursor(
    u: &Upstream,
    checkpoint: &Checkpoint,
    fanout: Option<&FanOut>,
) -> Result<Cursor> {
    let done = checkpoint.done.get(&u.name);
    let t0 = Instant::now();
    let table = match fanout {
        Some(f) => f.open(u).await?,
        None => cdf::open_latest(u).await?,
    };
    let table_ms = t0.elapsed().as_secs_f64() * 1e3;
    let latest = cdf::version_of(u, &table)?;
    let next = match done {
        Some(d) if *d > latest => {
            return Err(Error::Read(ReadError::CheckpointAhead {
                table: u.name.clone(),
                done: *d,
                latest,
                pipeline_file: None,
            }))
        }
        Some(d) => d + 1,
        None => u.start_version,
    };
    let log = if next <= latest {
        Some(LogCheck::start(u, &table, next).await?)
    } else {
        None
    };
    // The table's id as of the last version done: the log check's state before `next`,
    // or, caught up, the latest version's.
    let table_id = match &log {
        Some(l) => l.state().id.clone(),
        None => cdf::state_of(u, &table)?.id,
    };
    if let Some(d) = done {
        if !checkpoint.same_table(&u.name, &table_id) {
            return Err(Error::Read(ReadError::Replaced {
                table: u.name.clone(),
                done: *d,
                table_id,
                pipeline_file: None,
            }));
        }
    }
    tracing::debug!(
        upstream = %u.name,
        table_ms,
        log_check_ms = t0.elapsed().as_secs_f64() * 1e3 - table_ms,
        "upstream opened"
    );
    Ok(Cursor {
        upstream: u.clone(),
        table,
        next,
        latest,
        log,
        table_id,
    })
}

/// How many keys a dry run shows per batch.
const DRY_RUN_KEYS: usize = 5;

/// The first `n` keys of a batch as text (`(a, b)` for a composite key).
fn first_keys(keys: &crate::affected::Keys, n: usize) -> Vec<String> {
    use deltalake::arrow::util::display::array_value_to_string;
    let Ok(mut chunks) = keys.chunks(n) else {
        return Vec::new();
    };
    let Some(Ok(first)) = chunks.next() else {
        return Vec::new();
    };
    (0..first.len().min(n))
        .map(|r| {
            let cols: Vec<String> = first
                .columns
                .iter()
                .map(|c| array_value_to_string(c, r).unwrap_or_else(|_| "?".into()))
                .collect();
            match cols.as_slice() {
                [one] => one.clone(),
                many => format!("({})", many.join(", ")),
            }
        })
        .collect()
}
