//! The long-running service: `dlink-rt run FOLDER --follow [--listen ADDR]`.
//!
//! One process follows every enabled pipeline of a folder, each on a task of its own
//! with one shared plugin host (each hot-swaps its own plugin, as `run FILE --follow`
//! does). The folder itself is rescanned: a new pipeline file starts, a removed or
//! `enabled = false` one stops after its current batch, a changed one is stopped and
//! started again from its new version; a file that does not load is reported with its
//! `file:line` and the running version keeps going. A pipeline whose polls fail retries
//! with a growing pause ([`backoff`]) and never stops the others. On stop (Ctrl-C,
//! SIGTERM) every pipeline finishes the batch it runs, commits it, and starts no other.
//!
//! [`Monitor`] keeps the metrics and health that `--listen` serves ([`http`]).

mod follow;
pub mod http;
mod monitor;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use monitor::{Health, Monitor};

use crate::cdf::FanOut;
use crate::config::Pipeline;
use crate::engine::error::Error;
use crate::engine::BatchReport;
use crate::plugin::{sha256_hex, PluginHost};
pub use follow::{backoff, follow, follow_until, FollowEvents, FollowOptions, NoEvents};

/// How the service follows a folder.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// Each pipeline's polling and plugin watching.
    pub follow: FollowOptions,
    /// Pause between two scans of the folder's files. Default 1 s.
    pub rescan: Duration,
    /// Follow only this shard's pipelines (`--shard I/N`); files that do not load are
    /// reported by every shard.
    pub shard: Option<crate::shard::Shard>,
    /// Follow only the pipelines of these names (`--select`); none: every one.
    pub select: Vec<String>,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            follow: FollowOptions::default(),
            rescan: Duration::from_secs(1),
            shard: None,
            select: Vec::new(),
        }
    }
}

/// Called with every committed batch of every pipeline.
pub type OnBatch = Arc<dyn Fn(&BatchReport) + Send + Sync>;

/// A pipeline file as the service last saw it.
struct Entry {
    /// SHA-256 of the catalog's and the file's text: a change of either reloads it.
    fingerprint: String,
    /// The last version of the file that loaded.
    pipeline: Option<Pipeline>,
    /// The task following it, when it is enabled and loaded.
    running: Option<Running>,
}

struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops the pipeline after its current batch and waits for it.
    async fn stop(self) {
        self.stop.cancel();
        if let Err(e) = self.task.await {
            tracing::error!("a pipeline's task ended abnormally: {e}");
        }
    }
}

/// Follows every enabled pipeline of `dir` until `stop` is cancelled (see the module
/// documentation). Returns once every pipeline has stopped.
pub async fn follow_folder(
    dir: &Path,
    host: Arc<PluginHost>,
    opts: ServiceOptions,
    monitor: Arc<Monitor>,
    on_batch: OnBatch,
    stop: CancellationToken,
) {
    let mut entries: BTreeMap<PathBuf, Entry> = BTreeMap::new();
    let mut catalog_problem: Option<String> = None;
    // Pipelines that read one upstream wake on the same ticks and share its reads.
    let reads = Arc::new(FanOut::default());
    monitor.set_fanout(reads.clone());
    while !stop.is_cancelled() {
        match scan(dir, opts.shard, &opts.select) {
            Err(e) => {
                let text = e.to_string();
                if catalog_problem.as_deref() != Some(text.as_str()) {
                    tracing::error!(kind = "config", "{text}; the running pipelines keep going");
                    catalog_problem = Some(text);
                }
            }
            Ok(files) => {
                catalog_problem = None;
                let ctx = Ctx {
                    host: &host,
                    opts: &opts,
                    monitor: &monitor,
                    on_batch: &on_batch,
                    stop: &stop,
                    reads: &reads,
                };
                apply(&mut entries, files, &ctx).await;
                reads.set_pipelines(
                    entries
                        .values()
                        .filter(|e| e.running.is_some())
                        .filter_map(|e| e.pipeline.as_ref())
                        .map(|p| p.upstreams.iter().map(|u| u.uri.as_str()).collect()),
                );
                monitor.set_pipelines(
                    entries
                        .values()
                        .filter_map(|e| e.pipeline.clone())
                        .collect(),
                );
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(opts.rescan) => {}
        }
    }
    // Each pipeline's token is a child of `stop`: all are cancelled; wait for their
    // current batches.
    let stopping = entries
        .into_values()
        .filter_map(|e| e.running)
        .map(Running::stop);
    futures::future::join_all(stopping).await;
}

/// A folder's pipeline files: each with its fingerprint and what loading it gave.
type Scanned = Vec<(PathBuf, String, crate::Result<Pipeline>)>;

fn scan(
    dir: &Path,
    shard: Option<crate::shard::Shard>,
    select: &[String],
) -> crate::Result<Scanned> {
    let (catalog, files) = crate::config::folder_files(dir)?;
    let catalog_text = std::fs::read(dir.join(crate::config::DEFAULT_CATALOG)).unwrap_or_default();
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        // A file removed between the listing and the read is gone: not listed.
        let Ok(text) = std::fs::read(&f) else {
            continue;
        };
        let fingerprint = sha256_hex(&[catalog_text.as_slice(), b"\0", text.as_slice()].concat());
        let loaded = Pipeline::load_with_catalog(&f, &catalog).map_err(Error::from);
        if let (Some(shard), Ok(p)) = (shard, &loaded) {
            if !shard.has(&p.name) {
                continue;
            }
        }
        if let Ok(p) = &loaded {
            if !select.is_empty() && !select.contains(&p.name) {
                continue;
            }
        }
        out.push((f, fingerprint, loaded));
    }
    Ok(out)
}

/// What the pipelines' tasks share.
struct Ctx<'a> {
    host: &'a Arc<PluginHost>,
    opts: &'a ServiceOptions,
    monitor: &'a Arc<Monitor>,
    on_batch: &'a OnBatch,
    stop: &'a CancellationToken,
    reads: &'a Arc<FanOut>,
}

/// Brings the running pipelines in line with the scanned files.
async fn apply(entries: &mut BTreeMap<PathBuf, Entry>, files: Scanned, ctx: &Ctx<'_>) {
    let listed: Vec<PathBuf> = files.iter().map(|(f, _, _)| f.clone()).collect();
    for (file, fingerprint, loaded) in files {
        if entries
            .get(&file)
            .is_some_and(|e| e.fingerprint == fingerprint)
        {
            continue;
        }
        let entry = entries.entry(file.clone()).or_insert(Entry {
            fingerprint: String::new(),
            pipeline: None,
            running: None,
        });
        entry.fingerprint = fingerprint;
        let p = match loaded {
            Ok(p) => p,
            Err(e) => {
                let problems = match e {
                    Error::Config(crate::config::ConfigError { problems }) => problems,
                    other => vec![other.to_string()],
                };
                let keeps = if entry.running.is_some() {
                    "; the running version keeps going"
                } else {
                    ""
                };
                for p in problems {
                    tracing::error!(file = %file.display(), kind = "config", "{p}{keeps}");
                }
                continue;
            }
        };
        if let Some(r) = entry.running.take() {
            tracing::info!(pipeline = %p.name, file = %file.display(), "{}: {} changed; stopping after the current batch to reload it", p.name, file.display());
            r.stop().await;
        }
        entry.pipeline = Some(p.clone());
        if !p.enabled {
            tracing::info!(pipeline = %p.name, file = %file.display(), "{}: disabled (enabled = false in {})", p.name, file.display());
            continue;
        }
        let clash = entries.iter().find(|(f, e)| {
            **f != file
                && e.running.is_some()
                && e.pipeline
                    .as_ref()
                    .is_some_and(|o| o.name == p.name || o.link_uri == p.link_uri)
        });
        if let Some((other, _)) = clash {
            tracing::error!(
                pipeline = %p.name,
                file = %file.display(),
                kind = "config",
                "{}: pipeline '{}' has the same name or link table as {}; each pipeline needs its own (not started)",
                file.display(),
                p.name,
                other.display()
            );
            continue;
        }
        let running = start(p, ctx);
        if let Some(e) = entries.get_mut(&file) {
            e.running = Some(running);
        }
    }
    let gone: Vec<PathBuf> = entries
        .keys()
        .filter(|f| !listed.contains(f))
        .cloned()
        .collect();
    for f in gone {
        if let Some(e) = entries.remove(&f) {
            if let (Some(r), Some(p)) = (e.running, e.pipeline) {
                tracing::info!(pipeline = %p.name, "{}: {} was removed; stopping after the current batch", p.name, f.display());
                r.stop().await;
            }
        }
    }
}

/// Starts following `p` on a task of its own.
fn start(p: Pipeline, ctx: &Ctx<'_>) -> Running {
    let stop = ctx.stop.child_token();
    let (host, monitor, on_batch, opts, reads) = (
        ctx.host.clone(),
        ctx.monitor.clone(),
        ctx.on_batch.clone(),
        ctx.opts.follow,
        ctx.reads.clone(),
    );
    let token = stop.clone();
    tracing::info!(pipeline = %p.name, "{}: following ({})", p.name, p.deriver());
    let span = tracing::info_span!("pipeline", pipeline = %p.name);
    let task = tokio::spawn(tracing::Instrument::instrument(
        async move {
            monitor.set_running(&p.name, true);
            let mut failures = 0;
            loop {
                let events: Arc<dyn FollowEvents> = monitor.clone();
                let on = on_batch.clone();
                match follow_until(
                    &p,
                    host.clone(),
                    opts,
                    events,
                    move |b| on(b),
                    token.clone(),
                    Some(reads.clone()),
                )
                .await
                {
                    Ok(()) => break,
                    Err(e) => {
                        // It could not start (e.g. its plugin file is unreadable): retried.
                        e.log(&p.name);
                        monitor.failed(&p.name, &e);
                        tokio::select! {
                            _ = token.cancelled() => break,
                            _ = tokio::time::sleep(backoff(opts.interval, failures)) => {}
                        }
                        failures += 1;
                    }
                }
            }
            monitor.set_running(&p.name, false);
        },
        span,
    ));
    Running { stop, task }
}
