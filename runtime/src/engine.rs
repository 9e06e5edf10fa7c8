//! The loop of one pipeline: plan the window from the checkpoint, then per micro-batch
//! check and read the change feed, call the plugin and commit keys and checkpoint
//! together.

mod budget;
mod chunk;
mod derive;
pub mod error;
mod many;
mod pause;
mod plan;
mod read;
mod report;
mod session;
mod slot;
pub mod watchdog;

// Public for embedders and benchmarks (dlink-bench): the derive-stage contract.
pub use derive::{
    BatchInput, Derive, Derived, PluginDerive, PluginTimings, SqlDerive, UpstreamBatch,
};
pub use many::{default_jobs, run_many, ManyOutcome};
pub use pause::pause_at;
pub(crate) use pause::test_pause;
pub use report::{BatchReport, RunSummary, Stages};
pub(crate) use session::Session;
pub(crate) use slot::load_plugin;
pub use slot::{pipeline_info, PluginSlot};

use crate::cdf::FanOut;
use crate::config::Pipeline;
use crate::engine::error::{CommitError, Error, Result};
use crate::plugin::PluginHost;

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

/// After this many lost races in a row (another run committed the batch this one
/// worked on) a run stops and leaves the catch-up to the other run.
const MAX_LOST_IN_A_ROW: usize = 3;

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

/// Derives the pending batches of `pipeline` as a run would (up to `max_batches`),
/// calling `on_batch` after each with its first keys, and commits nothing: the link
/// table is not created or written (`run --dry-run`).
pub async fn dry_run(
    pipeline: &Pipeline,
    host: &PluginHost,
    mut on_batch: impl FnMut(&BatchReport),
) -> crate::Result<RunSummary> {
    let mut summary = RunSummary::default();
    let mut session = Session::open(pipeline, None)
        .await
        .map_err(|e| e.with_pipeline_file(&pipeline.file))?;
    session.dry_run();
    session
        .run(
            pipeline,
            host,
            &mut PluginSlot::default(),
            None,
            &mut summary,
            &mut on_batch,
        )
        .await
        .map_err(|e| e.with_pipeline_file(&pipeline.file))?;
    Ok(summary)
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
