//! Building an index from a snapshot read of its table, and bringing it forward
//! along the table's change feed.

use std::sync::Arc;

use deltalake::arrow::datatypes::{Schema, SchemaRef};
use deltalake::DeltaTable;

use super::*;

/// The table's columns as the index holds them (nullable).
fn index_schema(u: &Upstream, table: &DeltaTable) -> Result<SchemaRef, Refusal> {
    let schema =
        crate::cdf::arrow_schema(u, table).map_err(|e| Refusal::Transient(e.to_string()))?;
    Ok(Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect::<Vec<_>>(),
    )))
}

/// Builds the index of the pinned table's `column` from a snapshot read.
pub(super) async fn build(
    at: &Pinned<'_>,
    column: &str,
    budget: usize,
) -> Result<Box<Index>, Refusal> {
    let Pinned {
        ctx,
        upstream: u,
        table,
        version,
    } = *at;
    let started = Instant::now();
    let schema = index_schema(u, table)?;
    let mut ix = Box::new(Index::new(schema.clone(), column, version, budget)?);
    let transient =
        |e: deltalake::datafusion::error::DataFusionError| Refusal::Transient(e.to_string());
    let provider = table
        .table_provider()
        .await
        .map_err(|e| Refusal::Transient(e.to_string()))?;
    let mut stream = ctx
        .read_table(provider)
        .map_err(transient)?
        .execute_stream()
        .await
        .map_err(transient)?;
    while let Some(b) = stream.next().await {
        let b = b.map_err(transient)?;
        let b = crate::cdf::conform(&b, &schema).map_err(|e| Refusal::Transient(e.to_string()))?;
        ix.add_batch(&b)?;
    }
    ix.build_time = started.elapsed();
    tracing::debug!(
        "index of {}.{column} at version {version}: {} rows, {} bytes, built in {} ms",
        u.name,
        ix.live,
        ix.bytes(),
        ix.build_time.as_millis()
    );
    Ok(ix)
}

/// Moves `ix` to the pinned version by applying the table's change feed in between.
pub(super) async fn advance(mut ix: Box<Index>, at: &Pinned<'_>) -> Result<Box<Index>, Refusal> {
    let Pinned {
        ctx,
        upstream: u,
        table,
        version,
    } = *at;
    if index_schema(u, table)? != ix.schema {
        return Err(Refusal::Transient("the table's schema changed".into()));
    }
    // Every column and change type, unfiltered: the index mirrors the table itself.
    let plain = Upstream::new(u.name.clone(), u.uri.clone());
    let changes = crate::cdf::read_changes(ctx, &plain, table, ix.version + 1, version)
        .await
        .map_err(|e| Refusal::Transient(e.to_string()))?;
    ix.apply(&changes.batches, version)?;
    Ok(ix)
}
