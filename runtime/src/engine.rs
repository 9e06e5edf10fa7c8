//! The loop of one pipeline: plan the window from the checkpoint, then per micro-batch
//! check and read the change feed, call the plugin and commit keys and checkpoint
//! together.

mod derive;
mod follow;
mod many;
mod plan;
mod read;
mod session;
pub mod watchdog;

// Public for embedders and benchmarks (dlink-bench): the derive-stage contract.
pub use derive::{
    BatchInput, Derive, Derived, PluginDerive, PluginTimings, SqlDerive, UpstreamBatch,
};
pub use follow::{backoff, follow, follow_until, FollowEvents, FollowOptions, NoEvents};
pub use many::{default_jobs, run_many, ManyOutcome};
pub(crate) use session::Session;

/// Checks, without reading changes or committing, that the next run of `pipeline` can
/// read what it would: its checkpoint against each upstream (the same table, not
/// ahead of it) and the log entries of up to `limit` pending versions per upstream
/// (none empty, corrupt or missing, the Change Data Feed on). `dlink-rt validate`
/// runs it.
pub async fn check_pending(pipeline: &Pipeline, limit: i64) -> crate::Result<()> {
    let mut session = Session::open(pipeline, None)
        .await
        .map_err(|e| e.with_pipeline_file(&pipeline.file))?;
    session
        .check_pending(limit)
        .await
        .map_err(|e| e.with_pipeline_file(&pipeline.file))
}

use std::time::Instant;

use futures::future::try_join_all;

use crate::cdf::{self, FanOut};
use crate::config::{Pipeline, PluginSpec};
use crate::error::{CommitError, Error, Result};
use crate::plugin::{PipelineInfo, Plugin, PluginError, PluginHost};
use crate::sink::UpstreamRange;

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
    /// Opening the link table, its checkpoint, the upstreams and lookup tables at the
    /// start of a run (counted in the run's first batch).
    pub open: std::time::Duration,
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
            let sha256 = self.sha256().unwrap_or("");
            let swap_pause_us = started.elapsed().as_micros() as u64;
            tracing::info!(
                pipeline,
                batch = batch_id,
                sha256,
                swap_pause_us,
                "{pipeline}: plugin {} takes effect at batch {batch_id} (swap pause {swap_pause_us} µs)",
                &sha256[..sha256.len().min(12)]
            );
        }
    }

    /// The running instance and the batch since which it has been in effect; when
    /// there is none, the one `load` makes, in effect from `batch_id`.
    async fn instance(
        &mut self,
        batch_id: i64,
        load: impl std::future::Future<Output = Result<Plugin>>,
    ) -> Result<(&mut Plugin, i64)> {
        let plugin = match &mut self.current {
            Some(p) => p,
            empty => empty.insert(load.await?),
        };
        Ok((plugin, *self.active_since.get_or_insert(batch_id)))
    }

    /// Drops the running instance (a new one is made for the next batch).
    fn drop_current(&mut self) {
        self.current = None;
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
        watchdog::at(&pipeline.name, "opening its tables");
        let once = run_once(pipeline, host, slot, fanout, &mut summary, on_batch).await;
        watchdog::rest(&pipeline.name);
        match once {
            Err(Error::Commit(CommitError::Concurrent {
                batch_id, found, ..
            })) => {
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
                tracing::warn!(
                    pipeline = %pipeline.name,
                    batch = batch_id,
                    found,
                    "{}: {what}; continuing from there",
                    pipeline.name
                );
                // The instance may hold state of the abandoned batch; start a fresh one.
                slot.drop_current();
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
    let mut session = Session::open(pipeline, fanout).await?;
    if !session.pending() {
        tracing::info!(
            pipeline = %pipeline.name,
            batch = session.batch_id(),
            "{}: up to date at batch {}",
            pipeline.name,
            session.batch_id()
        );
        return Ok(());
    }
    session
        .run(pipeline, host, slot, fanout, summary, on_batch)
        .await
}

pub(crate) async fn load_plugin(
    pipeline: &Pipeline,
    spec: &PluginSpec,
    host: &PluginHost,
    info: &PipelineInfo,
) -> Result<Plugin> {
    let path = &spec.path;
    let load_err = |source| Error::PluginLoad {
        path: path.clone(),
        pipeline: pipeline.name.clone(),
        source,
    };
    let wasm = crate::plugin::source::read(spec)
        .await
        .map_err(|e| load_err(PluginError::Read(e)))?;
    // Compiling (Cranelift, seconds for a big plugin) and waiting for another
    // pipeline's compile of the same file both block a thread: not a runtime worker's,
    // whose other tasks (the kernel's reads among them) would wait meanwhile.
    let compiled = {
        let (host, path) = (host.clone(), path.clone());
        tokio::task::spawn_blocking(move || host.compile_bytes(&path, wasm))
            .await
            .map_err(|e| load_err(PluginError::Read(std::io::Error::other(e))))?
            .map_err(load_err)?
    };
    host.instantiate(&compiled, info, spec)
        .await
        .map_err(load_err)
}

/// What a plugin's `init` is told about `pipeline`, from each of its tables opened at
/// the latest version (for loads outside a run: `validate`, a swap, `why`).
pub async fn pipeline_info(pipeline: &Pipeline) -> Result<PipelineInfo> {
    let upstreams = try_join_all(pipeline.upstreams.iter().map(|u| async move {
        let t = cdf::open_latest(u).await?;
        let schema = cdf::change_schema(u, cdf::arrow_schema(u, &t)?.as_ref())?;
        Ok::<_, Error>((u.name.clone(), schema))
    }));
    let lookups = try_join_all(pipeline.lookups.iter().map(|u| async move {
        let t = cdf::open_latest(u).await?;
        Ok::<_, Error>((u.name.clone(), cdf::arrow_schema(u, &t)?))
    }));
    let (upstreams, lookups) = futures::try_join!(upstreams, lookups)?;
    Ok(PipelineInfo {
        name: pipeline.name.clone(),
        upstreams,
        lookups,
        keys: pipeline.keys.clone(),
    })
}

/// Where [`pause_at`] stops the process, if anywhere.
static PAUSE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Test hook: with `<point>:<batch>` (the command line's hidden `--test-pause-at`,
/// `DLINK_TEST_PAUSE_AT`), the process announces `DLINK_TEST_PAUSED <point>:<batch>`
/// on stderr and stops there, so a test can SIGKILL it at an exact point. Points:
/// `after-read`, `before-commit`, `after-commit`. Set once, before the first batch.
pub fn pause_at(point: String) {
    let _first_setting_wins = PAUSE.set(point);
}

fn test_pause(point: &str, batch_id: i64) {
    let Some(want) = PAUSE.get() else {
        return;
    };
    if *want == format!("{point}:{batch_id}") {
        eprintln!("DLINK_TEST_PAUSED {want}");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}
