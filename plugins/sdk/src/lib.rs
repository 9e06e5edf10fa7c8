//! Write dlink-rt pipeline plugins in plain Rust (contract `dlink:pipeline@0.3.0`).
//!
//! A plugin is a WebAssembly component (`wasm32-wasip2`) that turns one batch of
//! upstream change rows (Delta Lake Change Data Feed) into the pipeline's *affected
//! keys*. The host creates one instance per pipeline with [`Pipeline::init`], which
//! gets the plugin's typed config and the pipeline ([`PipelineInfo`]: upstreams and
//! lookup tables with their Arrow schemas, key columns) and may reject them; then it
//! calls [`Pipeline::derive`] on the instance once per chunk of a batch. This SDK
//! tells the host which columns `init` checked (the columns it reads: only those are
//! sent), takes the batch's columns (Arrow buffers as WIT lists, no decoding) as
//! [`Batch`] / [`Changes`] / [`Row`], gives `derive` a [`Keys`] builder that returns
//! the output per causing upstream in the same form, wraps the host's
//! `lookup` and `log` imports ([`Keys::add_through`], [`lookup_i64`], [`log`]), and
//! exports the component through [`export_pipeline!`].
//!
//! A complete plugin (`Cargo.toml`: `crate-type = ["cdylib"]`, depends on this crate
//! and on `serde` with its `derive` feature):
//!
//! ```
//! use dlink_plugin_sdk::{export_pipeline, Batch, Error, KeyColumn, Keys, Pipeline, PipelineInfo};
//!
//! /// `[plugin.config]` of the pipeline file; both fields may be left out.
//! #[derive(serde::Deserialize)]
//! #[serde(default, deny_unknown_fields)]
//! struct Config {
//!     spmaster: String,
//!     affiliation: String,
//! }
//!
//! impl Default for Config {
//!     fn default() -> Self {
//!         Config { spmaster: "spmaster".into(), affiliation: "affiliation".into() }
//!     }
//! }
//!
//! struct SpAffiliation(Config);
//!
//! impl Pipeline for SpAffiliation {
//!     type Config = Config;
//!
//!     fn init(config: Config, pipeline: &PipelineInfo) -> Result<Self, Error> {
//!         // Checked once, so `dlink-rt validate` reports a mismatch.
//!         pipeline.expect_keys(&[KeyColumn::i64("diasng_id")])?;
//!         pipeline.upstream(&config.spmaster)?.require_int("diasng_id")?;
//!         pipeline.upstream(&config.affiliation)?.require_int("sp_id")?;
//!         Ok(SpAffiliation(config))
//!     }
//!
//!     fn derive(&mut self, batch: &Batch, out: &mut Keys) -> Result<(), Error> {
//!         // Every change row counts: inserts, deletes and BOTH images of an update.
//!         out.add_column(batch.changes(&self.0.spmaster)?, "diasng_id")?;
//!         out.add_column(batch.changes(&self.0.affiliation)?, "sp_id")?;
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
//! - a key is recorded with its cause: [`Keys::add_column`] and [`Keys::add_from`] take
//!   the upstream and commit timestamp from the change rows, [`Keys::add_through`]
//!   attributes the keys found through a lookup to the changes that led to them, and
//!   [`Keys::add`] is for anything else;
//! - keys may repeat (the host de-duplicates once); null key values are skipped (a
//!   deleted join side can have a null foreign key);
//! - errors are an [`Error`] naming the upstream and the column; a panic is a trap that
//!   fails the batch.
//!
//! The decoding and encoding parts compile natively, so a plugin's `init` and `derive`
//! can be unit-tested with `cargo test` ([`run_derive`]); only the host calls (lookups)
//! need the component.

#![warn(missing_docs)]

mod changes;
pub mod columns;
mod error;
mod host;
mod info;
pub mod log;
mod lookup;
mod output;
mod table;

pub use changes::{
    Batch, ChangeType, Changes, Row, Rows, CHANGE_TYPE_COLUMN, COMMIT_TIMESTAMP_COLUMN,
    COMMIT_VERSION_COLUMN,
};
pub use error::Error;
pub use info::{encode_schema, PipelineInfo, TableInfo};
pub use lookup::{lookup_i64, lookup_str};
pub use output::{IntoKey, IntoKeyValue, KeyColumn, KeyType, KeyValue, Keys};
pub use table::{Table, TableRow, TableRows};

/// Said where a change-row column is missing: it may exist but not have been asked for.
pub(crate) const NOT_READ_HINT: &str = "; a plugin receives only the columns its init checks (column, require_int, require_str) or declares (TableInfo::reads), and every column of a table it does neither for";

/// The JSON crate the config is parsed with.
pub use serde_json;
/// The arrow crates the SDK uses, for plugins that need raw access.
pub use {arrow_array, arrow_ipc, arrow_schema};

/// The raw component bindings generated from `wit/pipeline.wit` (world
/// `pipeline-plugin`). Plugins normally use [`Pipeline`] and [`export_pipeline!`]
/// instead.
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

/// A pipeline's logic with its state: what the plugin author implements.
pub trait Pipeline: Sized + 'static {
    /// The pipeline's `[plugin.config]` table, deserialized from JSON (`{}` when the
    /// pipeline file has none). [`NoConfig`] accepts only an empty one.
    type Config: serde::de::DeserializeOwned;

    /// Checks the pipeline against what the plugin needs (its upstreams and their
    /// columns, its key columns) and returns the instance `derive` is called on.
    /// `dlink-rt validate` runs it, so a mismatch fails validation, not a batch.
    fn init(config: Self::Config, pipeline: &PipelineInfo) -> Result<Self, Error>;

    /// Records the affected keys of one batch into `out`.
    fn derive(&mut self, batch: &Batch, out: &mut Keys) -> Result<(), Error>;
}

/// The config of a plugin that takes none: an empty `[plugin.config]` (or none).
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoConfig {}

/// Parses a plugin's config JSON (an empty string is `{}`); the error names the
/// field and says what was expected.
pub fn parse_config<C: serde::de::DeserializeOwned>(json: &str) -> Result<C, Error> {
    let json = if json.trim().is_empty() { "{}" } else { json };
    serde_json::from_str(json).map_err(|e| Error::new(format!("[plugin.config]: {e}")))
}

/// Runs `init` and one `derive` as the component does, natively: for unit tests of a
/// plugin (where lookups fail). Returns the recorded keys.
pub fn run_derive<P: Pipeline>(
    config_json: &str,
    pipeline: &PipelineInfo,
    batch: &Batch,
) -> Result<Keys, Error> {
    let mut p = P::init(parse_config(config_json)?, pipeline)?;
    let mut keys = Keys::for_batch(pipeline, batch)?;
    p.derive(batch, &mut keys)?;
    Ok(keys)
}

/// Exports a [`Pipeline`] implementation as the component's `plugin.pipeline`
/// resource (the crate documentation compiles a complete plugin using it):
///
/// ```text
/// dlink_plugin_sdk::export_pipeline!(MyPipeline);
/// ```
#[macro_export]
#[rustfmt::skip]
macro_rules! export_pipeline {
    ($pipeline:ty) => {
        const _: () = {
            struct __DlinkPluginExport;

            impl $crate::bindings::exports::dlink::pipeline::plugin::Guest for __DlinkPluginExport {
                type Pipeline = $crate::__private::Instance<$pipeline>;
            }

            $crate::bindings::export!(__DlinkPluginExport with_types_in $crate::bindings);
        };
    };
}

/// Glue used by [`export_pipeline!`]; not a public API.
#[doc(hidden)]
pub mod __private {
    use std::cell::RefCell;

    use crate::bindings::dlink::pipeline::types;
    use crate::bindings::exports::dlink::pipeline::plugin;
    use crate::{Batch, Keys, Pipeline, PipelineInfo};

    /// One plugin instance: the author's state and the pipeline it serves.
    pub struct Instance<P> {
        state: RefCell<P>,
        pipeline: PipelineInfo,
    }

    impl<P: Pipeline> plugin::GuestPipeline for Instance<P> {
        fn init(
            info: types::PipelineInfo,
        ) -> Result<(plugin::Pipeline, Vec<types::Reads>), String> {
            let (pipeline, config) = PipelineInfo::from_wit(info)?;
            let config = crate::parse_config::<P::Config>(&config)?;
            let state = P::init(config, &pipeline)?;
            let reads = pipeline
                .reads()
                .into_iter()
                .map(|(table, columns)| types::Reads { table, columns })
                .collect();
            Ok((
                plugin::Pipeline::new(Instance {
                    state: RefCell::new(state),
                    pipeline,
                }),
                reads,
            ))
        }

        fn derive(&self, batch: types::Batch) -> Result<Vec<types::UpstreamKeys>, String> {
            let batch = Batch::from_wit(self.pipeline.name(), batch)?;
            let mut keys = Keys::for_batch(&self.pipeline, &batch)?;
            self.state
                .try_borrow_mut()
                .map_err(|_| "derive called while another derive runs".to_string())?
                .derive(&batch, &mut keys)?;
            Ok(keys.into_wit()?)
        }
    }
}

#[cfg(test)]
mod tests;
