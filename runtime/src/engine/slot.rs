//! The plugin a pipeline runs with: loading it (read, compile off the runtime's
//! workers, instantiate against the pipeline's schemas) and the slot that holds the
//! current instance and swaps in the ones waiting to replace it between batches.

use std::time::Instant;

use futures::future::try_join_all;

use super::error::{Error, Result};
use crate::cdf;
use crate::config::{Pipeline, PluginSpec};
use crate::plugin::{PipelineInfo, Plugin, PluginError, PluginHost};

/// The plugin instance a pipeline runs with, and the ones waiting to replace it.
#[derive(Default)]
pub struct PluginSlot {
    current: Option<Plugin>,
    /// The batch at which `current` took effect.
    active_since: Option<i64>,
    /// New instances (compiled, instantiated and `init`-ed off the batch path).
    incoming: Option<tokio::sync::mpsc::Receiver<Plugin>>,
    /// The plugin SHA-256 the link table's last batch recorded and the batch since
    /// which it was in effect (see [`PluginSlot::recorded`]).
    recorded: Option<(String, i64)>,
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

    /// What the link table's last batch recorded of its plugin: its SHA-256 and the
    /// batch since which it had been in effect. A first instance of the same file
    /// takes effect from that batch, not from this process's first, so that "in effect
    /// since" survives restarts.
    pub(crate) fn recorded(&mut self, recorded: Option<(String, i64)>) {
        self.recorded = recorded;
    }

    /// Swaps in the newest waiting instance, if any, to take effect at `batch_id`.
    pub(crate) fn swap_in(&mut self, pipeline: &str, batch_id: i64) {
        let Some(rx) = self.incoming.as_mut() else {
            return;
        };
        let mut newest = None;
        while let Ok(p) = rx.try_recv() {
            newest = Some(p);
        }
        if let Some(p) = newest {
            if self.sha256() == Some(p.sha256.as_str()) {
                // The same file put back (or touched): not a swap.
                tracing::debug!(pipeline, sha256 = %p.sha256, "the plugin file is the running one; nothing to swap");
                tokio::task::spawn_blocking(move || drop(p));
                return;
            }
            let started = Instant::now();
            let old = self.current.replace(p);
            self.active_since = Some(batch_id);
            self.recorded = None;
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
    pub(crate) async fn instance(
        &mut self,
        batch_id: i64,
        load: impl std::future::Future<Output = Result<Plugin>>,
    ) -> Result<(&mut Plugin, i64)> {
        let plugin = match &mut self.current {
            Some(p) => p,
            empty => empty.insert(load.await?),
        };
        let since = match &self.recorded {
            Some((sha, since)) if *sha == plugin.sha256 => *since,
            _ => batch_id,
        };
        Ok((plugin, *self.active_since.get_or_insert(since)))
    }

    /// Drops the running instance (a new one is made for the next batch).
    pub fn drop_current(&mut self) {
        self.current = None;
    }

    /// Waits until a new instance arrives (after a failed batch). `None` when no
    /// watcher feeds this slot.
    pub async fn wait_for_new(&mut self) -> Option<()> {
        let rx = self.incoming.as_mut()?;
        let p = rx.recv().await?;
        self.current = Some(p);
        self.active_since = None;
        self.recorded = None;
        Some(())
    }
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
