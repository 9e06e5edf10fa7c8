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
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use super::{BatchReport, PluginSlot, RunSummary, Session};
use crate::config::{Pipeline, PluginSpec};
use crate::error::{Error, Result};
use crate::plugin::{sha256_hex, Plugin, PluginError, PluginHost};

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

/// Follows `pipeline` until `stop` resolves. Errors of a poll (an unreadable table, a
/// failed batch) are logged and do not end the loop.
pub async fn follow(
    pipeline: &Pipeline,
    host: Arc<PluginHost>,
    opts: FollowOptions,
    mut on_batch: impl FnMut(&BatchReport),
    stop: impl Future<Output = ()>,
) -> Result<()> {
    let (tx, rx) = mpsc::channel(2);
    let watcher = match pipeline.plugin() {
        Some(spec) => {
            let initial = std::fs::read(&spec.path)
                .map(|b| sha256_hex(&b))
                .map_err(|e| Error::PluginLoad {
                    path: spec.path.clone(),
                    pipeline: pipeline.name.clone(),
                    source: PluginError::Read(e),
                })?;
            Some(tokio::spawn(watch(
                pipeline.clone(),
                spec.clone(),
                host.clone(),
                tx,
                initial,
                opts.watch_interval,
            )))
        }
        None => None,
    };
    let mut slot = PluginSlot::with_incoming(rx);
    let mut compactor = Compactor::new(pipeline);
    // Kept open from poll to poll: a poll reads only the log entries that are new.
    let mut session: Option<Session> = None;
    tokio::pin!(stop);
    loop {
        let outcome = tokio::select! {
            _ = &mut stop => break,
            r = poll(pipeline, &host, &mut slot, &mut session, &mut on_batch) => r,
        };
        if outcome.is_err() {
            // Start the next poll from what the tables hold.
            session = None;
        }
        match outcome {
            Ok(()) => {}
            Err(e @ Error::Concurrent { .. }) => {
                tracing::warn!("{e}; continuing from the link table's checkpoint");
                // The instance may hold state of the abandoned batch; start a fresh one.
                slot.drop_current();
            }
            Err(e @ Error::Batch { .. }) => {
                tracing::error!("{e}");
                tracing::warn!(
                    "{}: waiting for a new version of {} to retry the batch",
                    pipeline.name,
                    pipeline.deriver()
                );
                tokio::select! {
                    _ = &mut stop => break,
                    got = slot.wait_for_new() => if got.is_none() { break },
                }
                continue;
            }
            Err(e) => tracing::error!("{e}"),
        }
        compactor.maybe_start();
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(opts.interval) => {}
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
                    "{}: compacted the link table: removed batches {}, {} -> {} files, vacuumed {} files, in {:.2}s",
                    p.name,
                    r.removed_batches
                        .map_or_else(|| "none".to_string(), |(a, b)| format!("{a}..={b}")),
                    r.files_before,
                    r.files_after,
                    r.vacuumed_files,
                    r.seconds
                ),
                Err(e) => tracing::error!("{}: compaction failed (retried at the next compact_every): {e}", p.name),
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
        None => session.insert(Session::open(pipeline, None).await?),
    };
    if !s.pending() {
        return Ok(());
    }
    let mut summary = RunSummary::default();
    s.run(pipeline, host, slot, None, &mut summary, on_batch)
        .await
        .map_err(|e| e.with_pipeline_file(&pipeline.file))
}

/// Identity of a file cheap to check often.
fn stamp(path: &Path) -> Option<(u64, SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

async fn watch(
    pipeline: Pipeline,
    spec: PluginSpec,
    host: Arc<PluginHost>,
    tx: mpsc::Sender<Plugin>,
    mut known: String,
    every: Duration,
) {
    let path: PathBuf = spec.path.clone();
    let mut last_stamp = stamp(&path);
    loop {
        tokio::time::sleep(every).await;
        let now = stamp(&path);
        if now.is_none() || now == last_stamp {
            continue;
        }
        last_stamp = now;
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let sha = sha256_hex(&bytes);
        if sha == known {
            continue;
        }
        known = sha.clone();
        let started = Instant::now();
        let h = host.clone();
        let p = path.clone();
        let compiled = match tokio::task::spawn_blocking(move || h.compile(&p)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::error!(
                    "{}: rejected new plugin file {} ({}): {e}; the running plugin stays",
                    pipeline.name,
                    path.display(),
                    &sha[..12]
                );
                continue;
            }
            Err(e) => {
                tracing::error!(
                    "{}: compiling {} failed: {e}",
                    pipeline.name,
                    path.display()
                );
                continue;
            }
        };
        // The new plugin's init sees the tables as they are now.
        let info = match super::pipeline_info(&pipeline).await {
            Ok(i) => i,
            Err(e) => {
                tracing::error!(
                    "{}: cannot load new plugin file {} ({}): {e}; the running plugin stays",
                    pipeline.name,
                    path.display(),
                    &sha[..12]
                );
                continue;
            }
        };
        match host.instantiate(&compiled, &info, &spec).await {
            Ok(plugin) => {
                tracing::info!(
                    "{}: new plugin file {} ({}) ready in {} ms; it takes effect at the next batch",
                    pipeline.name,
                    path.display(),
                    &sha[..12],
                    started.elapsed().as_millis()
                );
                if tx.send(plugin).await.is_err() {
                    return;
                }
            }
            Err(e) => tracing::error!(
                "{}: rejected new plugin file {} ({}): {e}; the running plugin stays",
                pipeline.name,
                path.display(),
                &sha[..12]
            ),
        }
    }
}
