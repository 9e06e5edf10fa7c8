//! The watcher of a followed pipeline's plugin file: it polls the file's stamp, and a
//! new version is compiled, instantiated and handed to the pipeline between batches.

use super::*;

/// The plugin file as a watcher last saw it.
struct FilePoll {
    /// The stamp of the last version read.
    last_stamp: Option<String>,
    /// The failure last reported, so that a file missing for a while is reported once,
    /// not at every poll.
    failing: Option<String>,
}

impl FilePoll {
    /// The file's bytes when its stamp changed since the last read. Until the file can
    /// be read, its new stamp is not taken as seen: the next poll tries again, so a new
    /// file is never missed because one read of it failed.
    async fn new_bytes(&mut self, pipeline: &str, spec: &PluginSpec) -> Option<Vec<u8>> {
        let polled = match source::stamp(spec).await {
            Ok(now) if Some(&now) == self.last_stamp.as_ref() => return None,
            Ok(now) => source::read(spec).await.map(|bytes| (now, bytes)),
            Err(e) => Err(e),
        };
        match polled {
            Ok((now, bytes)) => {
                self.last_stamp = Some(now);
                self.failing = None;
                Some(bytes)
            }
            Err(e) => {
                let e = e.to_string();
                if self.failing.as_ref() != Some(&e) {
                    tracing::warn!(
                        pipeline,
                        plugin = %spec.path.display(),
                        "{pipeline}: cannot read the plugin file {} to look for a new version: {e}; \
                         the running plugin stays, and the file is polled again",
                        spec.path.display()
                    );
                    self.failing = Some(e);
                }
                None
            }
        }
    }
}

/// Polls the plugin file every `every` and sends each new version that loads to `tx`
/// (a rejected one is reported through `events`; the running plugin stays).
pub(super) async fn watch(
    pipeline: Pipeline,
    spec: PluginSpec,
    host: Arc<PluginHost>,
    tx: mpsc::Sender<Plugin>,
    mut known: String,
    every: Duration,
    events: Arc<dyn FollowEvents>,
) {
    let path: PathBuf = spec.path.clone();
    // `known`: the version sent to run (at first the running one); `seen`: the last
    // version looked at (a rejected one is not tried again until the file changes).
    let mut seen = known.clone();
    let mut poll = FilePoll {
        last_stamp: source::stamp(&spec).await.ok(),
        failing: None,
    };
    loop {
        sleep_aligned(every).await;
        let Some(bytes) = poll.new_bytes(&pipeline.name, &spec).await else {
            continue;
        };
        let sha = sha256_hex(&bytes);
        if sha == seen {
            continue;
        }
        seen = sha.clone();
        if sha == known {
            // The running file put back (after a rejected one, or touched): no swap.
            events.plugin_file_ok(&pipeline.name);
            tracing::debug!(
                pipeline = %pipeline.name,
                sha256 = %sha,
                "the plugin file is the running version again; nothing to swap"
            );
            continue;
        }
        let started = Instant::now();
        match load_new(&pipeline, &spec, &host, bytes).await {
            Ok(plugin) => {
                tracing::info!(
                    pipeline = %pipeline.name,
                    plugin = %path.display(),
                    sha256 = %sha,
                    ms = started.elapsed().as_millis() as u64,
                    "{}: new plugin file {} ({}) ready in {} ms; it takes effect at the next batch",
                    pipeline.name,
                    path.display(),
                    &sha[..12],
                    started.elapsed().as_millis()
                );
                events.plugin_file_ok(&pipeline.name);
                events.swapped(&pipeline.name, &sha);
                known = sha;
                if tx.send(plugin).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                // The running plugin goes on: a warning, and `degraded` in /healthz.
                tracing::warn!(
                    pipeline = %pipeline.name,
                    plugin = %path.display(),
                    sha256 = %sha,
                    kind = "plugin_rejected",
                    "{}: rejected new plugin file {} ({}): {e}; the running plugin stays",
                    pipeline.name,
                    path.display(),
                    &sha[..12]
                );
                events.rejected(&pipeline.name, &e);
            }
        }
    }
}

/// A new plugin file compiled (off the async threads), then instantiated and `init`-ed
/// against the tables as they are now.
async fn load_new(
    pipeline: &Pipeline,
    spec: &PluginSpec,
    host: &Arc<PluginHost>,
    wasm: Vec<u8>,
) -> std::result::Result<Plugin, String> {
    let (h, p) = (host.clone(), spec.path.clone());
    let compiled = match tokio::task::spawn_blocking(move || h.compile_bytes(&p, wasm)).await {
        Ok(r) => r.map_err(|e| e.to_string())?,
        Err(e) => return Err(format!("compiling failed: {e}")),
    };
    let info = crate::engine::pipeline_info(pipeline)
        .await
        .map_err(|e| e.to_string())?;
    host.instantiate(&compiled, &info, spec)
        .await
        .map_err(|e| e.to_string())
}
