//! Many pipelines in one process: each runs its own batches with its own checkpoint,
//! concurrently (at most `jobs` at a time), sharing one plugin host and one read of
//! each upstream range ([`FanOut`]). A failing pipeline is reported; the others go on.

use futures::stream::{self, StreamExt};

use super::{run_with, BatchReport, PluginSlot, RunSummary};
use crate::cdf::{FanOut, FanOutStats};
use crate::config::Pipeline;
use crate::error::Result;
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

/// Runs every pipeline until caught up. `on_batch` is called after each commit of
/// any pipeline.
pub async fn run_many(
    pipelines: &[Pipeline],
    host: &PluginHost,
    jobs: usize,
    on_batch: impl Fn(&BatchReport) + Sync,
) -> ManyOutcome {
    let fanout = FanOut::new(
        pipelines
            .iter()
            .map(|p| p.upstreams.iter().map(|u| u.uri.as_str()).collect()),
    );
    let on_batch = &on_batch;
    let fanout_ref = &fanout;
    let mut results: Vec<(usize, String, Result<RunSummary>)> =
        stream::iter(pipelines.iter().enumerate())
            .map(|(i, p)| async move {
                let mut report = |b: &BatchReport| on_batch(b);
                let r = run_with(
                    p,
                    host,
                    &mut PluginSlot::default(),
                    Some(fanout_ref),
                    &mut report,
                )
                .await;
                (i, p.name.clone(), r)
            })
            .buffer_unordered(jobs.max(1))
            .collect()
            .await;
    results.sort_by_key(|(i, _, _)| *i);
    ManyOutcome {
        results: results.into_iter().map(|(_, n, r)| (n, r)).collect(),
        reads: fanout.stats(),
    }
}
