//! The scan answer of a lookup: a semi-join of the keys (an Arrow array registered as a
//! table) against the table, with a range filter on the lookup column so that the
//! table's file statistics prune files. Its plan has the same few nodes whatever the
//! number of keys: no predicate with one literal per key.

use std::sync::Arc;

use deltalake::arrow::array::{Array, ArrayRef, RecordBatch};
use deltalake::arrow::compute::kernels::sort::{sort_limit, SortOptions};
use deltalake::arrow::compute::{cast, concat, filter, is_not_null};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::datafusion::catalog::TableProvider;
use deltalake::datafusion::common::{Column, JoinType, ScalarValue};
use deltalake::datafusion::prelude::{lit, Expr, SessionContext};

use super::error::{BadKeys, LookupError};
use crate::storage::{Cause, StorageOptions, StoreError};

/// Name of the keys' column in the semi-join.
const KEY: &str = "__dlink_lookup_key";

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
    /// The storage options of the table's store, hidden from errors.
    pub storage: StorageOptions,
}

/// One decoded lookup: the keys as one non-null column of the lookup column's type and
/// the schema of the answer.
pub(crate) struct Request {
    /// The table's name and where it is read, for errors.
    pub table: String,
    pub at: String,
    pub column: String,
    /// The keys, cast to the lookup column's type, nulls removed (they never match).
    pub keys: ArrayRef,
    /// The answer's columns: the requested ones (all when none) in the table's own
    /// types, nullable.
    pub out_schema: SchemaRef,
}

impl Request {
    /// Checks the column names against `schema` and decodes `keys` (an IPC stream of
    /// one column).
    pub fn decode(
        table: &str,
        at: &str,
        schema: &Schema,
        column: &str,
        keys: &[u8],
        columns: &[String],
    ) -> Result<Request, LookupError> {
        let no_column = |column: &str| LookupError::NoColumn {
            table: table.to_string(),
            at: at.to_string(),
            column: column.to_string(),
        };
        let bad_keys = |problem| LookupError::BadKeys {
            table: table.to_string(),
            problem,
        };
        let col_type = schema
            .field_with_name(column)
            .map_err(|_| no_column(column))?
            .data_type()
            .clone();
        let mut out_fields = Vec::new();
        if columns.is_empty() {
            out_fields.extend(schema.fields().iter().map(|f| f.as_ref().clone()));
        } else {
            for c in columns {
                let f = schema.field_with_name(c).map_err(|_| no_column(c))?;
                out_fields.push(f.clone());
            }
        }
        let out_schema = Arc::new(Schema::new(
            out_fields
                .into_iter()
                .map(|f| f.with_nullable(true))
                .collect::<Vec<Field>>(),
        ));
        let (_, key_batches) =
            crate::ipc::decode(keys).map_err(|e| bad_keys(BadKeys::NotIpc(e)))?;
        let mut parts: Vec<ArrayRef> = Vec::with_capacity(key_batches.len());
        for b in &key_batches {
            if b.num_columns() != 1 {
                return Err(bad_keys(BadKeys::Columns(b.num_columns())));
            }
            let as_type = |source| {
                bad_keys(BadKeys::Type {
                    to: col_type.clone(),
                    source,
                })
            };
            let arr = cast(b.column(0), &col_type).map_err(as_type)?;
            let arr = if arr.null_count() > 0 {
                let valid = is_not_null(&arr).map_err(as_type)?;
                filter(&arr, &valid).map_err(as_type)?
            } else {
                arr
            };
            parts.push(arr);
        }
        let keys = match parts.len() {
            0 => deltalake::arrow::array::new_empty_array(&col_type),
            1 => parts.remove(0),
            _ => {
                let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
                concat(&refs).map_err(|source| {
                    bad_keys(BadKeys::Type {
                        to: col_type.clone(),
                        source,
                    })
                })?
            }
        };
        Ok(Request {
            table: table.to_string(),
            at: at.to_string(),
            column: column.to_string(),
            keys,
            out_schema,
        })
    }

    /// The error of a lookup that found more rows than allowed.
    pub fn too_many(&self, max_rows: u64) -> LookupError {
        LookupError::TooManyRows {
            table: self.table.clone(),
            at: self.at.clone(),
            max_rows,
        }
    }

    /// A failed read of the rows (`storage` hidden from the text).
    pub fn read_err(&self, e: impl Into<Cause>, storage: &StorageOptions) -> LookupError {
        LookupError::Read {
            table: self.table.clone(),
            at: self.at.clone(),
            source: StoreError::new(e, storage),
        }
    }

    /// The answer as an IPC stream in [`Request::out_schema`] (each batch cast and
    /// ordered into it), or the row-limit error.
    pub fn finish(&self, batches: &[RecordBatch], max_rows: u64) -> Result<Vec<u8>, LookupError> {
        let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        if rows > max_rows {
            return Err(self.too_many(max_rows));
        }
        let batches = batches
            .iter()
            .map(|b| crate::cdf::conform(b, &self.out_schema))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.read_err(e, &StorageOptions::default()))?;
        crate::ipc::encode(&self.out_schema, &batches)
            .map_err(|e| self.read_err(e, &StorageOptions::default()))
    }
}

/// Answers one `lookup` against `target` by a scan: its rows whose `column` is one of
/// `keys` (an Arrow IPC stream of one column, cast to the column's type; nulls never
/// match), projected to `columns` (all when empty), at most `max_rows` rows, as an IPC
/// stream in the table's own column types (nullable).
pub async fn answer(
    ctx: &SessionContext,
    target: &LookupTarget,
    max_rows: u64,
    column: &str,
    keys: &[u8],
    columns: &[String],
) -> Result<Vec<u8>, LookupError> {
    let req = Request::decode(
        &target.name,
        &target.at,
        &target.schema,
        column,
        keys,
        columns,
    )?;
    scan(ctx, target, &req, max_rows).await
}

/// The semi-join of `req.keys` against `target`.
pub(crate) async fn scan(
    ctx: &SessionContext,
    target: &LookupTarget,
    req: &Request,
    max_rows: u64,
) -> Result<Vec<u8>, LookupError> {
    if req.keys.is_empty() {
        return req.finish(&[], max_rows);
    }
    let out_err =
        |e: deltalake::datafusion::error::DataFusionError| req.read_err(e, &target.storage);
    let t_col = |name: &str| Expr::Column(Column::new(Some("t"), name));
    let key_schema = Arc::new(Schema::new(vec![Field::new(
        KEY,
        req.keys.data_type().clone(),
        false,
    )]));
    let key_batch = RecordBatch::try_new(key_schema, vec![req.keys.clone()])
        .map_err(|e| req.read_err(e, &target.storage))?;
    let keys = ctx
        .read_batch(key_batch)
        .and_then(|df| df.alias("k"))
        .map_err(out_err)?;
    let mut df = ctx
        .read_table(target.provider.clone())
        .and_then(|df| df.alias("t"))
        .map_err(out_err)?;
    // Two literals whatever the number of keys: lets file statistics skip files whose
    // range of the lookup column holds no key.
    if let Some((min, max)) = key_range(&req.keys).map_err(out_err)? {
        df = df
            .filter(t_col(&req.column).between(lit(min), lit(max)))
            .map_err(out_err)?;
    }
    let projection: Vec<Expr> = req
        .out_schema
        .fields()
        .iter()
        .map(|f| t_col(f.name()))
        .collect();
    let df = df
        .join_on(
            keys,
            JoinType::LeftSemi,
            [t_col(&req.column).eq(Expr::Column(Column::new(Some("k"), KEY)))],
        )
        .and_then(|df| df.select(projection))
        .and_then(|df| {
            df.limit(
                0,
                Some(
                    usize::try_from(max_rows)
                        .unwrap_or(usize::MAX)
                        .saturating_add(1),
                ),
            )
        })
        .map_err(out_err)?;
    let batches = df.collect().await.map_err(out_err)?;
    req.finish(&batches, max_rows)
}

/// The smallest and largest key, for types whose order statistics prune files.
fn key_range(
    keys: &ArrayRef,
) -> Result<Option<(ScalarValue, ScalarValue)>, deltalake::datafusion::error::DataFusionError> {
    let orderable = matches!(
        keys.data_type(),
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Date32
            | DataType::Date64
    );
    if !orderable || keys.is_empty() {
        return Ok(None);
    }
    let end = |descending: bool| {
        let opts = SortOptions {
            descending,
            nulls_first: false,
        };
        let one = sort_limit(keys, Some(opts), Some(1))?;
        ScalarValue::try_from_array(&one, 0)
    };
    Ok(Some((end(false)?, end(true)?)))
}
