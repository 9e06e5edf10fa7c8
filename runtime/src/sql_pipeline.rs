//! SQL pipelines: the keys of a batch derived by a DataFusion query over
//! `<upstream>_changes` (the batch's change rows of each upstream) and `<table>` (each
//! upstream and lookup table as of the batch's pinned version).

use std::collections::HashSet;
use std::sync::Arc;

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::datafusion::datasource::MemTable;
use deltalake::datafusion::error::DataFusionError;
use deltalake::datafusion::prelude::SessionContext;

use crate::config::Upstream;
use crate::lookup::TableCache;

/// Why a SQL derivation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqlError {
    /// A table could not be registered for the query (`name` is the query's name
    /// for it: `<upstream>_changes` or the table).
    #[error("{name}: {source}")]
    Register {
        name: String,
        #[source]
        source: DataFusionError,
    },
    /// A table the query reads could not be opened at its pinned version.
    #[error(transparent)]
    Table(Box<crate::cdf::ReadError>),
    /// The query does not plan or failed while running.
    #[error("the query failed: {0}")]
    Query(#[source] DataFusionError),
}

/// One upstream's change rows of a batch.
pub struct ChangeTable<'a> {
    pub name: &'a str,
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

/// Registers the batch's tables in a fresh session: the change tables, and those
/// tables at their pinned versions that `query` names (opening a Delta table at a
/// version costs a log replay; most queries read only the changes).
async fn session(
    query: &str,
    changes: Vec<ChangeTable<'_>>,
    pinned: &[(Upstream, i64)],
    cache: &TableCache,
) -> Result<SessionContext, SqlError> {
    let ctx = crate::cdf::session();
    let named = referenced_tables(&ctx, query);
    for c in changes {
        let name = format!("{}_changes", c.name);
        let registered = MemTable::try_new(c.schema, vec![c.batches])
            .and_then(|t| ctx.register_table(name.as_str(), Arc::new(t)));
        if let Err(source) = registered {
            return Err(SqlError::Register { name, source });
        }
    }
    for (u, version) in pinned {
        if named.as_ref().is_some_and(|n| !n.contains(&u.name)) {
            continue;
        }
        let table = {
            let mut cache = cache.lock().await;
            match cache.get(&(u.name.clone(), *version)) {
                Some(t) => t.clone(),
                None => {
                    let t = crate::cdf::open_at(u, *version)
                        .await
                        .map_err(|e| SqlError::Table(Box::new(e)))?;
                    cache.insert((u.name.clone(), *version), t.clone());
                    t
                }
            }
        };
        let provider = table
            .table_provider()
            .await
            .map_err(|e| SqlError::Register {
                name: u.name.clone(),
                source: DataFusionError::External(Box::new(e)),
            })?;
        ctx.register_table(u.name.as_str(), provider)
            .map_err(|source| SqlError::Register {
                name: u.name.clone(),
                source,
            })?;
    }
    Ok(ctx)
}

/// Runs `query` for one batch; returns its rows.
pub async fn derive(
    query: &str,
    changes: Vec<ChangeTable<'_>>,
    pinned: &[(Upstream, i64)],
    cache: &TableCache,
) -> Result<(SchemaRef, Vec<RecordBatch>), SqlError> {
    let ctx = session(query, changes, pinned, cache).await?;
    let df = ctx.sql(query).await.map_err(SqlError::Query)?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await.map_err(SqlError::Query)?;
    Ok((schema, batches))
}

/// Plans `query` against empty change tables of the given schemas and the tables at
/// the given versions, without running it; returns the output schema.
pub async fn plan(
    query: &str,
    changes: Vec<ChangeTable<'_>>,
    pinned: &[(Upstream, i64)],
    cache: &TableCache,
) -> Result<SchemaRef, SqlError> {
    let ctx = session(query, changes, pinned, cache).await?;
    let df = ctx.sql(query).await.map_err(SqlError::Query)?;
    Ok(Arc::new(df.schema().as_arrow().clone()))
}

/// The table names `query` refers to, as DataFusion resolves them; `None` when the
/// query does not parse (then every table is registered and the query's own error is
/// reported).
fn referenced_tables(ctx: &SessionContext, query: &str) -> Option<HashSet<String>> {
    let state = ctx.state();
    let dialect = state.config().options().sql_parser.dialect;
    let statement = state.sql_to_statement(query, &dialect).ok()?;
    let refs = state.resolve_table_references(&statement).ok()?;
    Some(refs.iter().map(|r| r.table().to_string()).collect())
}
