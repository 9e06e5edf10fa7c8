//! Write dlink-rt pipeline plugins in plain Rust.
//!
//! A plugin is a WebAssembly component (`wasm32-wasip2`) that turns one batch of
//! upstream change rows (Delta Lake Change Data Feed) into the pipeline's *affected
//! keys*. This SDK decodes the batch's Arrow IPC streams into [`Batch`] / [`Changes`] /
//! [`Row`], gives the plugin a [`Keys`] builder that encodes the output the host expects
//! (key columns, `_upstream`, `_commit_timestamp`), wraps the host's `lookup` and `log`
//! imports ([`lookup_i64`], [`log`]), and exports the component through
//! [`export_pipeline!`].
//!
//! A complete plugin (`Cargo.toml`: `crate-type = ["cdylib"]`, depends on this crate):
//!
//! ```
//! use dlink_plugin_sdk::{export_pipeline, Batch, KeyColumn, Keys, Pipeline};
//!
//! struct SpAffiliation;
//!
//! impl Pipeline for SpAffiliation {
//!     /// The pipeline's key: one int64 column.
//!     const KEYS: &'static [KeyColumn] = &[KeyColumn::i64("diasng_id")];
//!
//!     fn derive(batch: &Batch, keys: &mut Keys) -> Result<(), String> {
//!         // Every change row counts: inserts, deletes and BOTH images of an update.
//!         for row in batch.changes("spmaster")?.rows() {
//!             keys.add_from(&row, row.i64("diasng_id")?)?;
//!         }
//!         for row in batch.changes("affiliation")?.rows() {
//!             keys.add_from(&row, row.i64("sp_id")?)?;
//!         }
//!         Ok(())
//!     }
//! }
//!
//! export_pipeline!(SpAffiliation);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`; the artifact
//! `target/wasm32-wasip2/release/<crate_name>.wasm` is the component the host loads.
//!
//! Rules of the contract (`wit/pipeline.wit`):
//! - every change row counts, including `update_preimage` (an update that moves a row
//!   from one join partner to another affects both) and `delete`;
//! - a key is recorded with its cause: `keys.add_from(&row, key)` takes the upstream and
//!   commit timestamp from the change row; `keys.add(upstream, ts, key)` is for keys
//!   found through a [`lookup_i64`];
//! - null key values are skipped (a deleted join side can have a null foreign key);
//! - errors are `Err(String)` naming the upstream and the column; a panic is a trap that
//!   fails the batch.
//!
//! The decoding and encoding parts compile natively, so a plugin's `derive` can be
//! unit-tested with `cargo test` by building a [`Batch`] from [`Changes::from_ipc`];
//! only the host calls ([`lookup_i64`]) need the component.

#![warn(missing_docs)]

mod changes;
mod config;
mod host;
mod keys;
pub mod log;
mod lookup;
mod table;

pub use changes::{
    Batch, ChangeType, Changes, Row, Rows, CHANGE_TYPE_COLUMN, COMMIT_TIMESTAMP_COLUMN,
    COMMIT_VERSION_COLUMN,
};
pub use config::Config;
pub use keys::{
    upstream_type, IntoKey, IntoKeyValue, KeyColumn, KeyParts, KeyType, KeyValue, Keys,
    UPSTREAM_COLUMN,
};
pub use lookup::{lookup_i64, lookup_str};
pub use table::{Table, TableRow, TableRows};

/// The JSON crate behind [`Config`].
pub use serde_json;
/// The arrow crates the SDK uses, for plugins that need raw access.
pub use {arrow_array, arrow_ipc, arrow_schema};

/// The raw component bindings generated from `wit/pipeline.wit` (world
/// `pipeline-plugin`). Plugins normally use [`Pipeline`] and [`export_pipeline!`]
/// instead; the raw `bindings::Guest` trait and `bindings::export!` macro are there for
/// plugins that must produce the output bytes themselves.
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "pipeline-plugin",
        pub_export_macro: true,
        default_bindings_module: "dlink_plugin_sdk::bindings",
        export_macro_name: "export",
    });
}

/// A pipeline's logic: what the plugin author implements.
///
/// The component instance lives across calls, so state kept in a `static` (e.g. a
/// `std::sync::OnceLock`) survives from `init` to every `derive`.
pub trait Pipeline {
    /// The pipeline's key columns, as its pipeline file declares them (1..n columns,
    /// int64, int32 or utf8), e.g. `&[KeyColumn::i64("diasng_id")]`.
    const KEYS: &'static [KeyColumn];

    /// Called once after instantiation with the pipeline's `[plugin.config]` (`{}`
    /// when absent). The default accepts any config. [`Batch::config`] gives the same
    /// config to `derive`.
    fn init(config: &Config) -> Result<(), String> {
        let _ = config;
        Ok(())
    }

    /// Records the affected keys of one batch into `keys`.
    fn derive(batch: &Batch, keys: &mut Keys) -> Result<(), String>;
}

/// Runs a [`Pipeline`]'s `derive` as the component does: builds the [`Keys`] from
/// `P::KEYS` and the batch, calls `derive` and returns the keys ([`Keys::to_ipc`] is the
/// component's output). Also for native unit tests of a plugin (where lookups fail).
pub fn run_derive<P: Pipeline>(batch: &Batch) -> Result<Keys, String> {
    let mut keys = Keys::for_batch(P::KEYS, batch)?;
    P::derive(batch, &mut keys)?;
    Ok(keys)
}

/// Exports a [`Pipeline`] implementation as the component's `init` and `derive` (the
/// crate documentation compiles a complete plugin using it):
///
/// ```text
/// dlink_plugin_sdk::export_pipeline!(MyPipeline);
/// ```
#[macro_export]
#[rustfmt::skip]
macro_rules! export_pipeline {
    ($pipeline:ty) => {
        const _: () = {
            use $crate::__private as __dlink;

            struct __DlinkPluginExport;

            impl $crate::bindings::Guest for __DlinkPluginExport {
                fn init(config: __dlink::String) -> __dlink::InitResult {
                    __dlink::init::<$pipeline>(config)
                }

                fn derive(batch: __dlink::WitBatch) -> __dlink::DeriveResult {
                    __dlink::derive::<$pipeline>(batch)
                }
            }

            $crate::bindings::export!(__DlinkPluginExport with_types_in $crate::bindings);
        };
    };
}

/// Glue called by [`export_pipeline!`]; not a public API.
#[doc(hidden)]
pub mod __private {
    use std::sync::{Arc, Mutex};

    use crate::bindings::dlink::pipeline::types;
    use crate::{Batch, Config, Keys, Pipeline};

    pub use std::string::String;
    pub type WitBatch = types::Batch;
    pub type InitResult = Result<(), String>;
    pub type DeriveResult = Result<Vec<u8>, String>;

    static CONFIG: Mutex<Option<Arc<Config>>> = Mutex::new(None);

    fn current_config() -> Arc<Config> {
        let guard = CONFIG.lock().unwrap_or_else(|e| e.into_inner());
        guard.clone().unwrap_or_default()
    }

    pub fn init<P: Pipeline>(config: String) -> Result<(), String> {
        let config = Config::parse(&config)?;
        Keys::new(P::KEYS)?;
        P::init(&config)?;
        *CONFIG.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(config));
        Ok(())
    }

    pub fn derive<P: Pipeline>(batch: types::Batch) -> Result<Vec<u8>, String> {
        let batch = Batch::from_wit(batch)?.with_shared_config(current_config());
        crate::run_derive::<P>(&batch)?.into_ipc()
    }
}

#[cfg(test)]
mod tests;
