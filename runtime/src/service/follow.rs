//! `run --follow`: poll the upstreams and run batches as commits arrive, while a
//! watcher hot-swaps the plugin.
//!
//! The watcher checks the plugin file every `watch_interval`. A changed file (new
//! SHA-256) is compiled, instantiated and `init`-ed in the background, off the batch
//! path; the ready instance is handed to the batch loop, which swaps it in before its
//! next batch and records the batch id and hash in that commit's metadata. A file that
//! fails to compile, instantiate or `init` is rejected with a log line and the running
//! plugin stays. A plugin that fails a batch stops the pipeline at that batch (nothing
//! committed); the next version of the file is then tried on the same batch.
//!
//! Replace plugin files atomically (write a temporary file, then rename it over the
//! old one) so the watcher never reads a half-written file.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cdf::FanOut;
use crate::config::{Pipeline, PluginSpec};
use crate::engine::error::{CommitError, Error, Result};
use crate::engine::{watchdog, BatchReport, PluginSlot, RunSummary, Session};
use crate::plugin::source;
use crate::plugin::{sha256_hex, Plugin, PluginError, PluginHost};
use watch::watch;

mod watch;

/// How `follow` polls.
#[derive(Debug, Clone, Copy)]
pub struct FollowOptions {
    /// Pause between two polls of the upstreams. Default 1 s.
    pub interval: Duration,
    /// Pause between two checks of the plugin file. Default 250 ms.
    pub watch_interval: Duration,
}

impl Default for FollowOptions {
    fn default() -> Self {
        FollowOptions {
            interval: Duration::from_secs(1),
            watch_interval: Duration::from_millis(250),
        }
    }
}

/// What a followed pipeline reports besides its batches: the service's metrics and
/// health listen to it. Every method defaults to nothing.
pub trait FollowEvents: Send + Sync {
    /// A batch was committed.
    fn batch(&self, _report: &BatchReport) {}
    /// A poll ended without an error (the pipeline is healthy).
    fn polled(&self, _pipeline: &str) {}
    /// A poll failed; the pipeline retries (after a pause, or a new plugin file).
    fn failed(&self, _pipeline: &str, _error: &Error) {}
    /// A new plugin file is loaded and takes effect at the next batch.
    fn swapped(&self, _pipeline: &str, _sha256: &str) {}
    /// A new plugin file was rejected; the running plugin stays.
    fn rejected(&self, _pipeline: &str, _reason: &str) {}
    /// The plugin file loads again, or is the running version again (after a
    /// rejected one).
    fn plugin_file_ok(&self, _pipeline: &str) {}
}

/// Listens to nothing.
pub struct NoEvents;

impl FollowEvents for NoEvents {}

/// The pause after `failures` failed polls in a row: the interval, doubled per failure
/// up to a minute (or the interval, when that is longer).
pub fn backoff(interval: Duration, failures: u32) -> Duration {
    let cap = interval.max(Duration::from_secs(60));
    interval.saturating_mul(1 << failures.min(16)).min(cap)
}

/// Follows `pipeline` until `stop` resolves. Errors of a poll (an unreadable table, a
/// failed batch) are logged and do not end the loop.
pub async fn follow(
    pipeline: &Pipeline,
    host: Arc<PluginHost>,
    opts: FollowOptions,
    on_batch: impl FnMut(&BatchReport),
    stop: impl Future<Output = ()>,
) -> Result<()> {
    let token = CancellationToken::new();
    let run = follow_until(
        pipeline,
        host,
        opts,
        Arc::new(NoEvents),
        on_batch,
        token.clone(),
        None,
    );
    tokio::pin!(run);
    tokio::pin!(stop);
    tokio::select! {
        r = &mut run => return r,
        _ = &mut stop => token.cancel(),
    }
    run.await
}

/// Follows `pipeline` until `stop` is cancelled: then the batch running (if any) is
/// finished and committed, and no other starts. A failing poll is retried after a
/// pause that doubles with each failure in a row (see [`backoff`]). With `reads`, the
/// change-feed reads are shared with the other pipelines of the process that read the
/// same upstream range (they wake on the same ticks, so a new upstream commit is
/// usually read once for all of them).
pub async fn follow_until(
    pipeline: &Pipeline,
    host: Arc<PluginHost>,
    opts: FollowOptions,
    events: Arc<dyn FollowEvents>,
    mut on_batch: impl FnMut(&BatchReport),
    stop: CancellationToken,
    reads: Option<Arc<FanOut>>,
) -> Result<()> {
    let (tx, rx) = mpsc::channel(2);
    let watcher = start_watcher(pipeline, &host, tx, opts, &events).await?;
    let mut slot = PluginSlot::with_incoming(rx);
    let mut compactor = Compactor::new(pipeline);
    // Kept open from poll to poll: a poll reads only the log entries that are new.
    let mut session: Option<Session> = None;
    // The highest batch seen in the link table: once it held batches, a link table
    // that is gone is an error, not a table to create again.
    let mut seen_batch = 0;
    let mut failures = 0;
    let mut report = |b: &BatchReport| {
        events.batch(b);
        on_batch(b);
    };
    while !stop.is_cancelled() {
        // Not raced against `stop`: the poll ends after its current batch.
        watchdog::at(&pipeline.name, "a poll");
        let outcome = poll(
            pipeline,
            &host,
            &mut slot,
            &mut session,
            (&stop, reads.as_deref()),
            &mut seen_batch,
            &mut report,
        )
        .await;
        watchdog::rest(&pipeline.name);
        match &outcome {
            Ok(()) => {
                failures = 0;
                events.polled(&pipeline.name);
            }
            Err(e) => {
                failures += 1;
                events.failed(&pipeline.name, e);
                // Start the next poll from what the tables hold.
                session = None;
                if let AfterFailure::WaitForNewPlugin = after_failure(pipeline, &mut slot, e) {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        got = slot.wait_for_new() => if got.is_none() { break },
                    }
                    continue;
                }
            }
        }
        compactor.maybe_start();
        let pause = if failures == 0 {
            opts.interval
        } else {
            backoff(opts.interval, failures - 1)
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = sleep_aligned(pause) => {}
        }
    }
    if let Some(w) = watcher {
        w.abort();
    }
    // Each step of a compaction is one Delta commit: stopping between two leaves a
    // table the next compaction finishes.
    compactor.stop();
    Ok(())
}

/// Starts watching the pipeline's plugin file (none for a SQL pipeline): new versions
/// are compiled beside the batches and sent to `tx`.
async fn start_watcher(
    pipeline: &Pipeline,
    host: &Arc<PluginHost>,
    tx: mpsc::Sender<Plugin>,
    opts: FollowOptions,
    events: &Arc<dyn FollowEvents>,
) -> Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(spec) = pipeline.plugin() else {
        return Ok(None);
    };
    let initial = crate::plugin::source::read(spec)
        .await
        .map(|b| sha256_hex(&b))
        .map_err(|e| Error::PluginLoad {
            path: spec.path.clone(),
            pipeline: pipeline.name.clone(),
            source: PluginError::Read(e),
        })?;
    Ok(Some(tokio::spawn(watch(
        pipeline.clone(),
        spec.clone(),
        host.clone(),
        tx,
        initial,
        opts.watch_interval,
        events.clone(),
    ))))
}

/// What the follow loop does after a failed poll.
enum AfterFailure {
    /// Pause (with backoff) and poll again.
    Pause,
    /// The plugin failed the batch: retry it once a new plugin file is loaded.
    WaitForNewPlugin,
}

/// Logs a failed poll and says what comes next.
fn after_failure(pipeline: &Pipeline, slot: &mut PluginSlot, e: &Error) -> AfterFailure {
    match e {
        Error::Commit(CommitError::Concurrent { .. }) => {
            tracing::warn!(
                pipeline = %pipeline.name,
                batch = e.batch_id(),
                kind = e.kind(),
                "{e}; continuing from the link table's checkpoint"
            );
            // The instance may hold state of the abandoned batch; start a fresh one.
            slot.drop_current();
            AfterFailure::Pause
        }
        Error::Batch { .. } => {
            e.log(&pipeline.name);
            tracing::warn!(
                pipeline = %pipeline.name,
                batch = e.batch_id(),
                "{}: waiting for a new version of {} to retry the batch",
                pipeline.name,
                pipeline.deriver()
            );
            AfterFailure::WaitForNewPlugin
        }
        e => {
            e.log(&pipeline.name);
            AfterFailure::Pause
        }
    }
}

/// `[link] compact_every`: a compaction of the link table in the background, beside
/// the pipeline's batches (their commits and the compaction's go through side by side).
struct Compactor {
    pipeline: Pipeline,
    last: Instant,
    running: Option<tokio::task::JoinHandle<()>>,
}

impl Compactor {
    fn new(pipeline: &Pipeline) -> Self {
        Compactor {
            pipeline: pipeline.clone(),
            last: Instant::now(),
            running: None,
        }
    }

    /// Starts a compaction when one is due and none runs.
    fn maybe_start(&mut self) {
        let Some(every) = self.pipeline.compact_every else {
            return;
        };
        if self.running.as_ref().is_some_and(|h| !h.is_finished()) || self.last.elapsed() < every {
            return;
        }
        self.last = Instant::now();
        let p = self.pipeline.clone();
        self.running = Some(tokio::spawn(async move {
            match crate::compact::compact(&p, chrono::Utc::now()).await {
                Ok(r) => tracing::info!(
                    pipeline = %p.name,
                    files_before = r.files_before,
                    files_after = r.files_after,
                    "{}: compacted the link table: removed batches {}, {} -> {} files, vacuumed {} files, in {:.2}s",
                    p.name,
                    r.removed_batches
                        .map_or_else(|| "none".to_string(), |(a, b)| format!("{a} to {b}")),
                    r.files_before,
                    r.files_after,
                    r.vacuumed_files,
                    r.seconds
                ),
                Err(e) => tracing::error!(
                    pipeline = %p.name,
                    kind = e.kind(),
                    "{}: compaction failed (retried at the next compact_every): {e}",
                    p.name
                ),
            }
        }));
    }

    fn stop(&mut self) {
        if let Some(h) = self.running.take() {
            h.abort();
        }
    }
}

/// One poll: refresh the open session (or open one) and run the batches that are due.
async fn poll(
    pipeline: &Pipeline,
    host: &PluginHost,
    slot: &mut PluginSlot,
    session: &mut Option<Session>,
    (stop, reads): (&CancellationToken, Option<&FanOut>),
    seen_batch: &mut i64,
    on_batch: &mut impl FnMut(&BatchReport),
) -> Result<()> {
    let mut current = session.take();
    if let Some(s) = current.as_mut() {
        if !s.refresh().await? {
            // The link table moved under the session (another run, a reset).
            current = None;
        }
    }
    let s = match current {
        Some(s) => session.insert(s),
        None => {
            let s = Session::open(pipeline, reads).await?;
            if s.batch_id() == 0 && *seen_batch > 0 {
                return Err(s.link_gone(*seen_batch));
            }
            session.insert(s)
        }
    };
    *seen_batch = (*seen_batch).max(s.batch_id());
    s.stop_on(stop.clone());
    if !s.pending() {
        return Ok(());
    }
    let mut summary = RunSummary::default();
    let r = s
        .run(pipeline, host, slot, reads, &mut summary, on_batch)
        .await
        .map_err(|e| e.with_pipeline_file(&pipeline.file));
    *seen_batch = (*seen_batch).max(s.batch_id());
    r
}

/// Sleeps until the next multiple of `every` counted from the process's first call,
/// at most `every`. The pipelines a process follows then wake on the same ticks: the
/// runtime wakes once per tick for all of them rather than once per pipeline, which is
/// most of what an idle service costs.
pub(crate) async fn sleep_aligned(every: Duration) {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    tokio::time::sleep_until(next_tick(start, Instant::now(), every).into()).await;
}

/// The first instant after `now` that is a whole number of `every`s after `start`.
fn next_tick(start: Instant, now: Instant, every: Duration) -> Instant {
    let every_ns = every.as_nanos().max(1);
    let since = now.saturating_duration_since(start).as_nanos();
    let ticks = since / every_ns + 1;
    let offset = u64::try_from(ticks.saturating_mul(every_ns)).unwrap_or(u64::MAX);
    start + Duration::from_nanos(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_fall_on_whole_intervals_from_the_start() {
        let start = Instant::now();
        let every = Duration::from_millis(100);
        let at = |ms| start + Duration::from_millis(ms);
        assert_eq!(next_tick(start, at(0), every), at(100));
        assert_eq!(next_tick(start, at(1), every), at(100));
        assert_eq!(next_tick(start, at(99), every), at(100));
        assert_eq!(next_tick(start, at(100), every), at(200));
        assert_eq!(next_tick(start, at(250), every), at(300));
        // Two pipelines polling at different moments wake on the same tick.
        assert_eq!(
            next_tick(start, at(1210), every),
            next_tick(start, at(1290), every)
        );
    }

    #[test]
    fn backoff_doubles_up_to_a_minute_or_the_interval() {
        let s = Duration::from_secs;
        assert_eq!(backoff(s(1), 0), s(1));
        assert_eq!(backoff(s(1), 3), s(8));
        assert_eq!(backoff(s(1), 10), s(60));
        assert_eq!(backoff(Duration::from_millis(100), 40), s(60));
        assert_eq!(backoff(s(120), 5), s(120));
    }
}
