//! dlink-rt: affected-key pipelines over Delta Lake's Change Data Feed, with each
//! pipeline's join/filter/key logic in a sandboxed WebAssembly component.
//!
//! Data flow of one batch (each module owns one step):
//! [`config`] → [`engine`] plans the window → [`cdf`] reads the change feed →
//! [`plugin`] derives keys (lookups answered by [`lookup`]) → [`keys`] validates and
//! deduplicates → [`sink`] commits keys and checkpoint in one Delta commit. Downstream,
//! [`consumer`] reads the keys of a window of batches back.

pub mod bench;
pub mod cdf;
pub mod compact;
pub mod config;
pub mod consumer;
pub mod demo;
pub mod engine;
pub mod error;
pub mod fixtures;
pub mod ipc;
pub mod keys;
pub mod lookup;
pub mod plugin;
pub mod sink;
pub mod sql_pipeline;
pub mod why;

pub use error::{BatchFailure, Error, Result};
