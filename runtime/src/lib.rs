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
//! 1. **plan** (`engine/plan.rs`, pure): the versions each upstream takes
//!    (`batch_size`).
//! 2. **read** (`engine/read.rs` over [`cdf`]): each upstream's log entries up to its
//!    range's end checked (`cdf/logcheck.rs`, `cdf/history.rs`: the feed is on, the
//!    table was not replaced, the entry is there and holds actions), its change rows
//!    read (shared by the pipelines of one `run FOLDER` through `cdf/fanout.rs`), cut to
//!    `max_batch_rows` at whole commits (`engine/budget.rs`), every table pinned
//!    (`plan::pin`) and the lookup-only tables brought to their latest version.
//! 3. **derive** (`engine/derive.rs`): one `Derive` trait, implemented by the Wasm
//!    plugin ([`plugin`]; its lookups answered by [`lookup`] at the pinned versions) and
//!    by the SQL query ([`sql_pipeline`]); the output is checked and folded to one row
//!    per key by [`affected`]. The bench's native reference (crate dlink-bench)
//!    implements the same trait: the derive stage's contract is public.
//! 4. **commit** ([`sink`]; its protocol, without IO, in `sink/protocol.rs`, its commit
//!    metadata in [`sink::meta`]): the keys and the checkpoint (`txn` actions) in one
//!    Delta commit.
//!
//! # Layers
//!
//! The modules import one way: `storage`, `ipc` → `config` → `cdf` → `lookup` →
//! `affected` → `plugin` → `sql_pipeline` → `sink` → `engine` → `consumer`, `compact`,
//! `why`, `status` → `service` (the follow loop, hot swap, scheduled compaction, the
//! folder's supervisor and its HTTP endpoints, above one run) → the binary's `cli`.
//! Each layer returns its own error: [`ConfigError`] (`config/error.rs`), [`ReadError`]
//! (`cdf/error.rs`), [`lookup::LookupError`], [`affected::InvalidKeys`],
//! [`plugin::PluginError`], [`sql_pipeline::SqlError`] and [`CommitError`]
//! (`sink/error.rs`). The run's [`Error`] (`engine/error.rs`) holds them (a plugin's or
//! a query's failure inside a batch's [`BatchFailure`]) and is built only where the
//! engine composes the layers; nothing below the engine names it. A storage failure is
//! a [`storage::StoreError`]: its kind (a missing file, the store down, a lost race)
//! read from the error's type, its text with the storage options' values hidden.
//! Downstream, [`consumer`] reads the keys of a window of batches back, [`compact`]
//! applies retention and [`why`] explains a key.

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
