//! DataFusion-backed reads of tables at pinned versions: the answers to a plugin's
//! `lookup` calls. [`answer`] is the filtering itself, shared with the in-memory tables
//! of `dlink-rt plugin test` ([`crate::fixtures`]).

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::arrow::array::Array;
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::datafusion::catalog::TableProvider;
use deltalake::datafusion::common::ScalarValue;
use deltalake::datafusion::prelude::{ident, lit, Expr, SessionContext};
use deltalake::DeltaTable;
use futures::future::BoxFuture;
use tokio::sync::Mutex;

use crate::config::Upstream;
use crate::plugin::Lookup;

/// Tables of one batch at their pinned versions.
pub struct TableLookup {
    pipeline: String,
    /// Rows one lookup may return.
    max_rows: u64,
    /// name -> (table, pinned version)
    pinned: HashMap<String, (Upstream, i64)>,
    /// Loaded tables by (name, version), shared across the batches of a run.
    cache: Arc<Mutex<HashMap<(String, i64), DeltaTable>>>,
    ctx: SessionContext,
}

/// Tables loaded at pinned versions, reused by later batches of the same run.
pub type TableCache = Arc<Mutex<HashMap<(String, i64), DeltaTable>>>;

impl TableLookup {
    pub fn new(
        pipeline: &str,
        max_rows: u64,
        pinned: impl IntoIterator<Item = (Upstream, i64)>,
        cache: TableCache,
        ctx: SessionContext,
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
        }
    }

    async fn table(&self, u: &Upstream, version: i64) -> Result<DeltaTable, String> {
        let key = (u.name.clone(), version);
        let mut cache = self.cache.lock().await;
        if let Some(t) = cache.get(&key) {
            return Ok(t.clone());
        }
        let t = crate::cdf::open_at(u, version)
            .await
            .map_err(|e| e.to_string())?;
        cache.insert(key, t.clone());
        Ok(t)
    }

    async fn run(
        &self,
        table: &str,
        column: &str,
        keys: &[u8],
        columns: &[String],
    ) -> Result<Vec<u8>, String> {
        let Some((u, version)) = self.pinned.get(table) else {
            let mut known: Vec<&str> = self.pinned.keys().map(String::as_str).collect();
            known.sort();
            return Err(format!(
                "lookup of table '{table}': not an upstream or lookup table of pipeline '{}' (it may look up: {}); \
                 declare it in the pipeline file's `lookups`",
                self.pipeline,
                known.join(", ")
            ));
        };
        let t = self.table(u, *version).await?;
        let target = LookupTarget {
            name: table.to_string(),
            at: format!(" at version {version}"),
            schema: crate::cdf::arrow_schema(u, &t).map_err(|e| e.to_string())?,
            provider: t.table_provider().await.map_err(|e| e.to_string())?,
        };
        answer(&self.ctx, &target, self.max_rows, column, keys, columns).await
    }
}

/// A table a lookup reads: a Delta table at a pinned version, or rows held in memory
/// (see [`crate::fixtures::MemoryLookup`]).
pub struct LookupTarget {
    /// The table's name, as the plugin asks for it.
    pub name: String,
    /// Where the rows come from, appended to the name in errors, e.g. " at version 3".
    pub at: String,
    /// The table's columns, in its own types.
    pub schema: SchemaRef,
    pub provider: Arc<dyn TableProvider>,
}

/// Answers one `lookup` against `target`: its rows whose `column` is one of `keys` (an
/// Arrow IPC stream of one column, cast to the column's type; nulls never match),
/// projected to `columns` (all when empty), at most `max_rows` rows, as an IPC stream
/// in the table's own column types (nullable).
pub async fn answer(
    ctx: &SessionContext,
    target: &LookupTarget,
    max_rows: u64,
    column: &str,
    keys: &[u8],
    columns: &[String],
) -> Result<Vec<u8>, String> {
    let (table, at, schema) = (&target.name, &target.at, &target.schema);
    let col_type = schema
        .field_with_name(column)
        .map_err(|_| format!("lookup of table '{table}'{at}: no column '{column}'"))?
        .data_type()
        .clone();
    for c in columns {
        if schema.field_with_name(c).is_err() {
            return Err(format!("lookup of table '{table}'{at}: no column '{c}'"));
        }
    }
    let (_, key_batches) = crate::ipc::decode(keys)
        .map_err(|e| format!("lookup of table '{table}': keys are not an Arrow IPC stream: {e}"))?;
    let mut values = Vec::new();
    for b in &key_batches {
        if b.num_columns() != 1 {
            return Err(format!(
                "lookup of table '{table}': keys must be one column, got {}",
                b.num_columns()
            ));
        }
        let arr = cast(b.column(0), &col_type).map_err(|e| {
            format!("lookup of table '{table}': keys cannot be read as {col_type}: {e}")
        })?;
        for i in 0..arr.len() {
            if arr.is_valid(i) {
                values.push(ScalarValue::try_from_array(&arr, i).map_err(|e| e.to_string())?);
            }
        }
    }
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    values.dedup();
    let projection: Vec<Expr> = if columns.is_empty() {
        schema.fields().iter().map(|f| ident(f.name())).collect()
    } else {
        columns.iter().map(ident).collect()
    };
    let out_err = |e: deltalake::datafusion::error::DataFusionError| {
        format!("lookup of table '{table}'{at}: {e}")
    };
    let df = ctx
        .read_table(target.provider.clone())
        .map_err(out_err)?
        .filter(ident(column).in_list(values.into_iter().map(lit).collect(), false))
        .map_err(out_err)?
        .select(projection)
        .map_err(out_err)?
        .limit(
            0,
            Some(
                usize::try_from(max_rows)
                    .unwrap_or(usize::MAX)
                    .saturating_add(1),
            ),
        )
        .map_err(out_err)?;
    // Answer in the table's own types (DataFusion may read strings as views).
    let out_schema = Arc::new(deltalake::arrow::datatypes::Schema::new(
        df.schema()
            .fields()
            .iter()
            .map(|f| match schema.field_with_name(f.name()) {
                Ok(t) => t.clone().with_nullable(true),
                Err(_) => f.as_ref().clone(),
            })
            .collect::<Vec<_>>(),
    ));
    let batches = if key_batches.iter().all(|b| b.num_rows() == 0) {
        Vec::new()
    } else {
        df.collect().await.map_err(out_err)?
    };
    let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    if rows > max_rows {
        return Err(format!(
            "lookup of table '{table}'{at} returned more than {max_rows} rows ([plugin.limits] max_lookup_rows)"
        ));
    }
    let batches = batches
        .iter()
        .map(|b| crate::cdf::conform(b, &out_schema))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("lookup of table '{table}'{at}: {e}"))?;
    crate::ipc::encode(&out_schema, &batches).map_err(|e| e.to_string())
}

impl Lookup for TableLookup {
    fn lookup<'a>(
        &'a self,
        table: &'a str,
        column: &'a str,
        keys: &'a [u8],
        columns: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<u8>, String>> {
        Box::pin(self.run(table, column, keys, columns))
    }
}
