//! The `dlink:pipeline/host` interface as seen by a plugin: `lookup` and `log`, the
//! same for every contract (each has its own copy of the interface; 0.3 passes tables
//! as columns rather than IPC bytes).

use super::contract::{v0_1, v0_2, v0_3};
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
                State::log(self, level.into(), message)
            }
        }
    };
}

/// A contract's log level as the host's.
macro_rules! level_from {
    ($v:ident) => {
        impl From<$v::dlink::pipeline::types::Level> for Level {
            fn from(level: $v::dlink::pipeline::types::Level) -> Level {
                use $v::dlink::pipeline::types::Level as L;
                match level {
                    L::Trace => Level::Trace,
                    L::Debug => Level::Debug,
                    L::Info => Level::Info,
                    L::Warn => Level::Warn,
                    L::Error => Level::Error,
                }
            }
        }
    };
}

level_from!(v0_1);
level_from!(v0_2);
level_from!(v0_3);

host_interface!(v0_1);
host_interface!(v0_2);

impl v0_3::dlink::pipeline::types::Host for State {}

impl v0_3::dlink::pipeline::host::Host for State {
    /// The 0.3 lookup: the keys and the answer as columns. The host's lookup speaks
    /// IPC inside the process (its cache and index are shared with 0.2 plugins), so
    /// the column is encoded here and the answer decoded: host-side copies only.
    async fn lookup(
        &mut self,
        table: String,
        column: String,
        keys: v0_3::dlink::pipeline::types::Column,
        columns: Vec<String>,
    ) -> Result<v0_3::dlink::pipeline::types::RecordBatch, String> {
        let bad = |e: deltalake::arrow::error::ArrowError| {
            format!("lookup of table '{table}' by '{column}': the keys are not a valid column: {e}")
        };
        let Some(rows) = super::columns::values_len(&keys.values) else {
            return Err(format!(
                "lookup of table '{table}' by '{column}': keys must be integers, dates, timestamps, decimals, text or bytes (not booleans or nested values)"
            ));
        };
        let array = super::columns::array_from_wit(&column, keys.values, keys.validity, rows)
            .map_err(bad)?;
        let schema = std::sync::Arc::new(deltalake::arrow::datatypes::Schema::new(vec![
            deltalake::arrow::datatypes::Field::new(&column, array.data_type().clone(), true),
        ]));
        let batch = deltalake::arrow::array::RecordBatch::try_new(schema.clone(), vec![array])
            .map_err(bad)?;
        let ipc = crate::ipc::encode(&schema, &[batch]).map_err(bad)?;
        let answer = State::lookup(self, table.clone(), column.clone(), ipc, columns).await?;
        let (schema, batches) = crate::ipc::decode_owned(answer)
            .map_err(|e| format!("lookup of table '{table}': {e}"))?;
        super::columns::to_wit(&schema, &batches, None)
            .map_err(|e| format!("lookup of table '{table}': {e}"))
    }

    async fn log(&mut self, level: v0_3::dlink::pipeline::types::Level, message: String) {
        State::log(self, level.into(), message)
    }
}
