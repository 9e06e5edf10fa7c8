//! The host imports. Inside the component (wasm32) they call dlink-rt; in native builds
//! (unit tests) `lookup` fails with a clear message and `log` prints to stderr.

use crate::log::Level;

use crate::bindings::dlink::pipeline::types::{Column, RecordBatch};

#[cfg(target_arch = "wasm32")]
pub(crate) fn lookup(
    table: &str,
    column: &str,
    keys: Column,
    columns: &[String],
) -> Result<RecordBatch, String> {
    crate::bindings::dlink::pipeline::host::lookup(table, column, &keys, columns)
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn lookup(
    _table: &str,
    _column: &str,
    _keys: Column,
    _columns: &[String],
) -> Result<RecordBatch, String> {
    Err(
        "host lookups are only available when the plugin runs inside dlink-rt \
         (wasm32-wasip2 build)"
            .to_string(),
    )
}

#[cfg(target_arch = "wasm32")]
pub(crate) fn log(level: Level, message: &str) {
    use crate::bindings::dlink::pipeline::types::Level as Wit;
    let level = match level {
        Level::Trace => Wit::Trace,
        Level::Debug => Wit::Debug,
        Level::Info => Wit::Info,
        Level::Warn => Wit::Warn,
        Level::Error => Wit::Error,
    };
    crate::bindings::dlink::pipeline::host::log(level, message);
}

#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn log(level: Level, message: &str) {
    eprintln!("[{level:?}] {message}");
}
