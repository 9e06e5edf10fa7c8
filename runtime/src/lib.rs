//! dlink-rt: affected-key pipelines over Delta Lake's Change Data Feed, with each
//! pipeline's join/filter/key logic in a sandboxed WebAssembly component.
//!
//! # How a batch flows
//!
//! A run opens a session (`engine/session.rs`): the pipeline's link table and its
//! checkpoint ([`sink`]), a cursor per upstream (the table at its latest version and the
//! next version to read) and the lookup-only tables. `Session::batch` then walks each
//! batch through four stages, once each, in this order:
//!
//! 1. **plan** (`engine/plan.rs`, no IO): the versions each upstream takes
//!    (`batch_size`), the cut to `max_batch_rows` at whole commits, and the version each
//!    table is pinned at.
//! 2. **read** (`engine/read.rs` over [`cdf`]): each upstream's log entries checked
//!    (`cdf/history.rs`: the feed is on, the table was not replaced, the entry is
//!    there), its change rows read (shared by the pipelines of one `run FOLDER` through
//!    `cdf/fanout.rs`), and the lookup-only tables pinned.
//! 3. **derive** (`engine/derive.rs`): one `Derive` trait, implemented by the Wasm
//!    plugin ([`plugin`]; its lookups answered by [`lookup`] at the pinned versions) and
//!    by the SQL query ([`sql_pipeline`]); the output is checked and folded to one row
//!    per key by [`keys`]. The bench's native reference implements the same trait.
//! 4. **commit** ([`sink`]; its protocol, without IO, in `sink/protocol.rs`): the keys
//!    and the checkpoint (`txn` actions) in one Delta commit.
//!
//! Errors carry their kind up, one enum per layer under [`Error`]: [`ConfigError`]
//! (`config/error.rs`), [`ReadError`] (`cdf/error.rs`), [`plugin::PluginError`] inside
//! a load or a batch's [`BatchFailure`] (with [`lookup::LookupError`] and
//! [`sql_pipeline::SqlError`]), and [`CommitError`] (`sink/error.rs`). A storage failure
//! is a [`storage::StoreError`]: its kind (a missing file, the store down, a lost race)
//! read from the error's type, its text with the storage options' values hidden.
//! Downstream, [`consumer`] reads the keys of
//! a window of batches back, [`compact`] applies retention and [`why`] explains a key.

pub mod affected;
pub mod cdf;
pub mod compact;
pub mod config;
pub mod consumer;
pub mod demo;
pub mod engine;
pub mod fixtures;
pub mod graph;
pub mod ipc;
pub mod lookup;
pub mod plugin;
pub mod service;
pub mod shard;
pub mod sink;
pub mod sql_pipeline;
pub mod status;
pub mod storage;
pub mod why;

pub use cdf::ReadError;
pub use config::ConfigError;
pub use engine::error::{BatchFailure, Error, Result};
pub use sink::CommitError;
