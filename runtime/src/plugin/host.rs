//! The `dlink:pipeline/host` interface as seen by a plugin: `lookup` and `log`, the
//! same for both contracts (0.1 and 0.2 each have their own copy of the interface).

use super::contract::{v0_1, v0_2};
use super::State;

/// Log levels of both contracts, as one.
#[derive(Debug, Clone, Copy)]
enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl State {
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
        let failed = match task.await {
            Ok(Ok(answer)) => return Ok(answer),
            Ok(Err(e)) => e,
            Err(e) => crate::lookup::LookupError::Task(e.to_string()),
        };
        // The plugin gets the text (the contract's `result<_, string>`); the host's
        // log keeps what kind of failure it was.
        tracing::debug!(pipeline = %self.pipeline, batch = self.batch, error = ?failed, "lookup failed");
        Err(failed.to_string())
    }

    fn log(&mut self, level: Level, message: String) {
        if self.log_bytes > self.log_budget {
            return;
        }
        self.log_bytes += message.len();
        if self.log_bytes > self.log_budget {
            tracing::warn!(
                pipeline = %self.pipeline,
                batch = self.batch,
                "{}: plugin log budget of {} bytes per call ([plugin.limits] max_log_kb) used up; dropping further lines",
                self.label,
                self.log_budget
            );
            return;
        }
        let (label, pipeline, batch) = (&self.label, &self.pipeline, self.batch);
        // `from_plugin` tells a plugin's own lines from the host's.
        match level {
            Level::Trace => {
                tracing::trace!(pipeline, batch, from_plugin = true, "{label}: {message}")
            }
            Level::Debug => {
                tracing::debug!(pipeline, batch, from_plugin = true, "{label}: {message}")
            }
            Level::Info => {
                tracing::info!(pipeline, batch, from_plugin = true, "{label}: {message}")
            }
            Level::Warn => {
                tracing::warn!(pipeline, batch, from_plugin = true, "{label}: {message}")
            }
            Level::Error => {
                tracing::error!(pipeline, batch, from_plugin = true, "{label}: {message}")
            }
        }
    }
}

/// Implements one contract's copy of the host interface on [`State`].
macro_rules! host_interface {
    ($v:ident) => {
        impl $v::dlink::pipeline::types::Host for State {}

        impl $v::dlink::pipeline::host::Host for State {
            async fn lookup(
                &mut self,
                table: String,
                column: String,
                keys: Vec<u8>,
                columns: Vec<String>,
            ) -> Result<Vec<u8>, String> {
                State::lookup(self, table, column, keys, columns).await
            }

            async fn log(&mut self, level: $v::dlink::pipeline::types::Level, message: String) {
                use $v::dlink::pipeline::types::Level as L;
                let level = match level {
                    L::Trace => Level::Trace,
                    L::Debug => Level::Debug,
                    L::Info => Level::Info,
                    L::Warn => Level::Warn,
                    L::Error => Level::Error,
                };
                State::log(self, level, message)
            }
        }
    };
}

host_interface!(v0_1);
host_interface!(v0_2);
