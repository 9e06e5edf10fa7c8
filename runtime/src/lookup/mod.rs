//! The lookup service: the answers to a plugin's `lookup` calls, rows of a table as of
//! the batch's pinned version whose lookup column is one of the keys asked.
//!
//! A lookup costs the keys asked and the rows returned, never a predicate with one
//! literal per key: it is a hash probe of the table's [index](Indexes) (built on first
//! use, kept across batches and advanced along the table's change feed) or, when the
//! index cannot answer, a semi-join scan ([`answer`]) that the in-memory tables of
//! `dlink-rt plugin test` ([`crate::fixtures`]) share.
//!
//! Lookups run as ordinary tokio tasks, off the Wasm fiber's small stack (see
//! `plugin::host`).

mod error;
mod index;
mod scan;

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use futures::future::BoxFuture;
use tokio::sync::Mutex;

use crate::config::{LookupSettings, Upstream};

pub use error::{BadKeys, LookupError};
pub use index::{IndexStats, Indexes};
pub use scan::{answer, LookupTarget};

/// Answers a plugin's `lookup` calls for one batch (tables at pinned versions).
pub trait Lookup: Send + Sync {
    /// Rows of `table` whose `column` is in `keys` (an IPC stream of one column),
    /// projected to `columns` (all when empty), as an IPC stream.
    fn lookup<'a>(
        &'a self,
        table: &'a str,
        column: &'a str,
        keys: &'a [u8],
        columns: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<u8>, LookupError>>;
}

/// Tables loaded at pinned versions, reused by later batches of the same run.
pub type TableCache = Arc<Mutex<HashMap<(String, i64), DeltaTable>>>;

/// Holds `table` as `name` at `version` in a [`TableCache`]'s map. Batches pin ever
/// newer versions, so only the newest version of each table is kept.
pub(crate) fn hold(
    cache: &mut HashMap<(String, i64), DeltaTable>,
    name: &str,
    version: i64,
    table: &DeltaTable,
) {
    cache.retain(|(n, v), _| n != name || *v >= version);
    cache
        .entry((name.to_string(), version))
        .or_insert_with(|| table.clone());
}

/// Tables of one batch at their pinned versions.
pub struct TableLookup {
    pipeline: String,
    /// Rows one lookup may return.
    max_rows: u64,
    /// name -> (table, pinned version)
    pinned: HashMap<String, (Upstream, i64)>,
    /// Loaded tables by (name, version), shared across the batches of a run.
    cache: TableCache,
    ctx: SessionContext,
    indexes: Arc<Indexes>,
    settings: LookupSettings,
}

impl TableLookup {
    pub fn new(
        pipeline: &str,
        max_rows: u64,
        pinned: impl IntoIterator<Item = (Upstream, i64)>,
        cache: TableCache,
        ctx: SessionContext,
        indexes: Arc<Indexes>,
        settings: LookupSettings,
    ) -> Self {
        TableLookup {
            pipeline: pipeline.to_string(),
            max_rows,
            pinned: pinned
                .into_iter()
                .map(|(u, v)| (u.name.clone(), (u, v)))
                .collect(),
            cache,
            ctx,
            indexes,
            settings,
        }
    }

    async fn table(&self, u: &Upstream, version: i64) -> Result<DeltaTable, LookupError> {
        let mut cache = self.cache.lock().await;
        if let Some(t) = cache.get(&(u.name.clone(), version)) {
            return Ok(t.clone());
        }
        let t = crate::cdf::open_at(u, version)
            .await
            .map_err(|e| LookupError::Table(Box::new(e)))?;
        hold(&mut cache, &u.name, version, &t);
        Ok(t)
    }

    async fn answer(
        &self,
        table: &str,
        column: &str,
        keys: &[u8],
        columns: &[String],
    ) -> Result<Vec<u8>, LookupError> {
        let Some((u, version)) = self.pinned.get(table) else {
            let mut known: Vec<String> = self.pinned.keys().cloned().collect();
            known.sort();
            return Err(LookupError::UnknownTable {
                table: table.to_string(),
                pipeline: self.pipeline.clone(),
                known,
            });
        };
        let t = self.table(u, *version).await?;
        let at = format!(" at version {version}");
        let schema =
            crate::cdf::arrow_schema(u, &t).map_err(|e| LookupError::Table(Box::new(e)))?;
        let req = scan::Request::decode(table, &at, &schema, column, keys, columns)?;
        if let Some(answer) = self
            .indexes
            .answer(
                &index::Pinned {
                    ctx: &self.ctx,
                    upstream: u,
                    table: &t,
                    version: *version,
                },
                &req,
                self.max_rows,
                &self.settings,
            )
            .await
        {
            return answer;
        }
        let target = LookupTarget {
            name: table.to_string(),
            at,
            schema,
            provider: t
                .table_provider()
                .await
                .map_err(|e| req.read_err(e, &u.storage))?,
            storage: u.storage.clone(),
        };
        scan::scan(&self.ctx, &target, &req, self.max_rows).await
    }
}

impl Lookup for TableLookup {
    fn lookup<'a>(
        &'a self,
        table: &'a str,
        column: &'a str,
        keys: &'a [u8],
        columns: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<u8>, LookupError>> {
        Box::pin(self.answer(table, column, keys, columns))
    }
}
