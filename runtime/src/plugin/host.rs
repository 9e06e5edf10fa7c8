//! The `dlink:pipeline/host` interface as seen by a plugin: `lookup` and `log`.

use super::generated::dlink::pipeline::{host, types};
use super::State;

impl types::Host for State {}

impl host::Host for State {
    async fn lookup(
        &mut self,
        table: String,
        column: String,
        keys: Vec<u8>,
        columns: Vec<String>,
    ) -> Result<Vec<u8>, String> {
        let Some(lookup) = self.lookup.clone() else {
            return Err("lookup is only available during derive".into());
        };
        // This future is polled on the Wasm fiber's stack, which is small: the work
        // (planning, scanning, probing) runs as its own task on an ordinary worker
        // thread, and only the wait for it happens here.
        let task =
            tokio::spawn(async move { lookup.lookup(&table, &column, &keys, &columns).await });
        match task.await {
            Ok(answer) => answer,
            Err(e) => Err(format!("the host's lookup task failed: {e}")),
        }
    }

    async fn log(&mut self, level: types::Level, message: String) {
        if self.log_bytes > self.log_budget {
            return;
        }
        self.log_bytes += message.len();
        if self.log_bytes > self.log_budget {
            tracing::warn!(
                "{}: plugin log budget of {} bytes per call ([plugin.limits] max_log_kb) used up; dropping further lines",
                self.label,
                self.log_budget
            );
            return;
        }
        let label = &self.label;
        match level {
            types::Level::Trace => tracing::trace!("{label}: {message}"),
            types::Level::Debug => tracing::debug!("{label}: {message}"),
            types::Level::Info => tracing::info!("{label}: {message}"),
            types::Level::Warn => tracing::warn!("{label}: {message}"),
            types::Level::Error => tracing::error!("{label}: {message}"),
        }
    }
}
