//! Many pipelines in one process: each runs its own batches with its own checkpoint,
//! concurrently (at most `jobs` at a time), sharing one plugin host and one read of
//! each upstream range ([`FanOut`]). A failing pipeline is reported; the others go on.

use std::sync::Arc;

use futures::stream::{self, StreamExt};

use super::{run_with, BatchReport, PluginSlot, RunSummary};
use crate::cdf::{FanOut, FanOutStats};
use crate::config::Pipeline;
use crate::engine::error::{Error, Result};
use crate::plugin::PluginHost;

/// Pipelines run at once by default: one per CPU (more only contend for the same
/// cores and hold more memory at once).
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// What a multi-pipeline run did.
pub struct ManyOutcome {
    /// Per pipeline, in the order given.
    pub results: Vec<(String, Result<RunSummary>)>,
    pub reads: FanOutStats,
}

/// A pipeline's task, aborted when the run is dropped (as the pipeline's future was
/// when it ran inside the caller's task): nothing outlives a cancelled run.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs every pipeline until caught up. `on_batch` is called after each commit of
/// any pipeline (on the caller's task, in commit order).
///
/// Each pipeline runs on a task of its own, so the CPU-bound parts of different
/// pipelines (the plugin's `derive`, the host's checks of its output, encoding) use
/// every core; at most `jobs` run at once.
pub async fn run_many(
    pipelines: &[Pipeline],
    host: &PluginHost,
    jobs: usize,
    on_batch: impl Fn(&BatchReport),
) -> ManyOutcome {
    let fanout = Arc::new(FanOut::new(
        pipelines
            .iter()
            .map(|p| p.upstreams.iter().map(|u| u.uri.as_str()).collect()),
    ));
    let (reports_tx, mut reports_rx) = tokio::sync::mpsc::unbounded_channel::<BatchReport>();
    let task_fanout = fanout.clone();
    let tasks = stream::iter(pipelines.iter().cloned().enumerate())
        .map(move |(i, p)| {
            let (host, fanout, reports_tx) =
                (host.clone(), task_fanout.clone(), reports_tx.clone());
            let name = p.name.clone();
            // Every event of the pipeline's task (lookups, plugin lines, deltalake's
            // own) carries the pipeline as a field of this span.
            let span = tracing::info_span!("pipeline", pipeline = %p.name);
            let mut task = AbortOnDrop(tokio::spawn(tracing::Instrument::instrument(
                async move {
                    let mut report = |b: &BatchReport| {
                        // The receiver lives until every task has ended.
                        let _ = reports_tx.send(b.clone());
                    };
                    let r = run_with(
                        &p,
                        &host,
                        &mut PluginSlot::default(),
                        Some(&fanout),
                        &mut report,
                    )
                    .await;
                    (i, p.name, r)
                },
                span,
            )));
            async move {
                (&mut task.0).await.unwrap_or_else(|e| {
                    // A panic in the pipeline's task: that pipeline's failure, not the run's.
                    let message =
                        format!("the task running pipeline '{name}' ended abnormally: {e}");
                    (i, name, Err(Error::Other(message)))
                })
            }
        })
        .buffer_unordered(jobs.max(1))
        .collect::<Vec<_>>();
    let mut tasks = std::pin::pin!(tasks);
    let mut results: Vec<(usize, String, Result<RunSummary>)> = loop {
        tokio::select! {
            Some(b) = reports_rx.recv() => on_batch(&b),
            done = &mut tasks => break done,
        }
    };
    // Every task has ended: what they sent is all in the channel.
    while let Ok(b) = reports_rx.try_recv() {
        on_batch(&b);
    }
    results.sort_by_key(|(i, _, _)| *i);
    ManyOutcome {
        results: results.into_iter().map(|(_, n, r)| (n, r)).collect(),
        reads: fanout.stats(),
    }
}
