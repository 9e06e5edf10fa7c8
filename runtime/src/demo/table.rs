//! A small writer for CDF-enabled Delta tables of `long` and `string` columns, with
//! rows given as JSON arrays. Used by `dlink-rt demo` and by the tests to build
//! upstream histories (insert, update, delete, merge) exactly as deltalake writes them.

use std::path::Path;
use std::sync::Arc;

use deltalake::arrow::array::{ArrayRef, Int64Builder, RecordBatch, StringBuilder};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder, TableProperty};
use serde_json::Value;

/// Column types a demo table may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Col {
    Long,
    Str,
}

/// A CDF-enabled Delta table being written.
pub struct DemoTable {
    table: DeltaTable,
    schema: SchemaRef,
}

type DynResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

impl DemoTable {
    /// Creates the table at `path` (version 0) with `rows` (a JSON array of arrays).
    pub async fn create(path: &Path, columns: &[(&str, Col)], rows: Value) -> DynResult<Self> {
        std::fs::create_dir_all(path)?;
        let schema = schema_of(columns);
        let batch = to_batch(&schema, &rows)?;
        let url = deltalake::ensure_table_uri(path.to_string_lossy())?;
        let table = DeltaTableBuilder::from_url(url)?
            .build()?
            .write(vec![batch])
            .with_save_mode(SaveMode::ErrorIfExists)
            .with_configuration([(TableProperty::EnableChangeDataFeed.as_ref(), Some("true"))])
            .await?;
        Ok(DemoTable { table, schema })
    }

    /// Opens an existing table for more writes.
    pub async fn open(path: &Path) -> DynResult<Self> {
        let url = deltalake::ensure_table_uri(path.to_string_lossy())?;
        let table = deltalake::open_table(url).await?;
        let schema = table.snapshot()?.snapshot().arrow_schema();
        Ok(DemoTable { table, schema })
    }

    /// The table's current version.
    pub fn version(&self) -> i64 {
        self.table.version().map_or(-1, |v| v as i64)
    }

    /// Appends `rows` (one commit).
    pub async fn insert(&mut self, rows: Value) -> DynResult<i64> {
        let batch = to_batch(&self.schema, &rows)?;
        self.table = self
            .table
            .clone()
            .write(vec![batch])
            .with_save_mode(SaveMode::Append)
            .await?;
        Ok(self.version())
    }

    /// `UPDATE ... SET col = expr, ... WHERE predicate` (one commit).
    pub async fn update(&mut self, predicate: &str, set: &[(&str, &str)]) -> DynResult<i64> {
        let mut b = self.table.clone().update().with_predicate(predicate);
        for (c, e) in set {
            b = b.with_update(*c, *e);
        }
        let (t, _) = b.await?;
        self.table = t;
        Ok(self.version())
    }

    /// `DELETE WHERE predicate` (one commit).
    pub async fn delete(&mut self, predicate: &str) -> DynResult<i64> {
        let (t, _) = self
            .table
            .clone()
            .delete()
            .with_predicate(predicate)
            .await?;
        self.table = t;
        Ok(self.version())
    }

    /// `MERGE` upsert of `rows` on the `on` columns: matched rows take every column of
    /// the source row, unmatched ones are inserted (one commit).
    pub async fn upsert(&mut self, on: &[&str], rows: Value) -> DynResult<i64> {
        let batch = to_batch(&self.schema, &rows)?;
        let ctx = crate::cdf::session();
        let df = ctx.read_batch(batch)?;
        let predicate = on
            .iter()
            .map(|c| format!("t.{c} = s.{c}"))
            .collect::<Vec<_>>()
            .join(" AND ");
        let names: Vec<String> = self
            .schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let (t, _) = self
            .table
            .clone()
            .merge(df, predicate)
            .with_source_alias("s")
            .with_target_alias("t")
            .when_matched_update(|u| {
                names
                    .iter()
                    .filter(|n| !on.contains(&n.as_str()))
                    .fold(u, |u, n| u.update(n.as_str(), format!("s.{n}")))
            })?
            .when_not_matched_insert(|i| {
                names
                    .iter()
                    .fold(i, |i, n| i.set(n.as_str(), format!("s.{n}")))
            })?
            .await?;
        self.table = t;
        Ok(self.version())
    }
}

/// Operations that make a table's history hard to read, for the tests of what
/// dlink-rt does about them.
impl DemoTable {
    /// Sets a table property, e.g. `delta.enableChangeDataFeed` (one commit).
    pub async fn set_property(&mut self, key: &str, value: &str) -> DynResult<i64> {
        self.table = self
            .table
            .clone()
            .set_tbl_properties()
            .with_properties([(key.to_string(), value.to_string())].into())
            .await?;
        Ok(self.version())
    }

    /// Appends `rows` with extra columns (schema evolution, one commit).
    pub async fn insert_with_columns(
        &mut self,
        columns: &[(&str, Col)],
        rows: Value,
    ) -> DynResult<i64> {
        use deltalake::operations::write::SchemaMode;
        self.write_schema(columns, rows, SaveMode::Append, SchemaMode::Merge)
            .await
    }

    /// Overwrites data and schema with `rows` of `columns` (one commit, same table id).
    pub async fn overwrite_with_columns(
        &mut self,
        columns: &[(&str, Col)],
        rows: Value,
    ) -> DynResult<i64> {
        use deltalake::operations::write::SchemaMode;
        self.write_schema(columns, rows, SaveMode::Overwrite, SchemaMode::Overwrite)
            .await
    }

    async fn write_schema(
        &mut self,
        columns: &[(&str, Col)],
        rows: Value,
        mode: SaveMode,
        schema_mode: deltalake::operations::write::SchemaMode,
    ) -> DynResult<i64> {
        let schema = schema_of(columns);
        let batch = to_batch(&schema, &rows)?;
        self.table = self
            .table
            .clone()
            .write(vec![batch])
            .with_save_mode(mode)
            .with_schema_mode(schema_mode)
            .await?;
        self.schema = schema;
        Ok(self.version())
    }

    /// Removes every file the latest version does not reference, with no retention
    /// (what `VACUUM ... RETAIN 0 HOURS` does).
    pub async fn vacuum_all(&mut self) -> DynResult<usize> {
        let (t, metrics) = self
            .table
            .clone()
            .vacuum()
            .with_retention_period(chrono::Duration::zero())
            .with_enforce_retention_duration(false)
            .with_mode(deltalake::operations::vacuum::VacuumMode::Full)
            .await?;
        self.table = t;
        Ok(metrics.files_deleted.len())
    }

    /// Writes a checkpoint at the latest version and deletes the log entries before
    /// it (what log retention does).
    pub async fn checkpoint_and_clean_log(&mut self, dir: &Path) -> DynResult<()> {
        deltalake::checkpoints::create_checkpoint(&self.table, None).await?;
        for v in 0..self.version() {
            let f = dir.join("_delta_log").join(format!("{v:020}.json"));
            if f.exists() {
                std::fs::remove_file(f)?;
            }
        }
        Ok(())
    }
}

fn schema_of(columns: &[(&str, Col)]) -> SchemaRef {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|(n, c)| {
                let t = match c {
                    Col::Long => DataType::Int64,
                    Col::Str => DataType::Utf8,
                };
                Field::new(*n, t, true)
            })
            .collect::<Vec<_>>(),
    ))
}

/// Builds a batch of `schema` from a JSON array of row arrays.
pub fn to_batch(schema: &SchemaRef, rows: &Value) -> DynResult<RecordBatch> {
    let rows = rows
        .as_array()
        .ok_or("rows must be a JSON array of arrays")?;
    let mut cols: Vec<ArrayRef> = Vec::new();
    for (i, f) in schema.fields().iter().enumerate() {
        let cell = |r: &Value| -> DynResult<Value> {
            let r = r.as_array().ok_or("each row must be a JSON array")?;
            r.get(i)
                .cloned()
                .ok_or_else(|| format!("row {r:?} has no value for column {}", f.name()).into())
        };
        match f.data_type() {
            DataType::Int64 => {
                let mut b = Int64Builder::new();
                for r in rows {
                    match cell(r)? {
                        Value::Null => b.append_null(),
                        v => b.append_value(
                            v.as_i64()
                                .ok_or_else(|| format!("{v} is not a long ({})", f.name()))?,
                        ),
                    }
                }
                cols.push(Arc::new(b.finish()));
            }
            DataType::Utf8 => {
                let mut b = StringBuilder::new();
                for r in rows {
                    match cell(r)? {
                        Value::Null => b.append_null(),
                        Value::String(s) => b.append_value(s),
                        v => b.append_value(v.to_string()),
                    }
                }
                cols.push(Arc::new(b.finish()));
            }
            t => return Err(format!("column {} has unsupported type {t}", f.name()).into()),
        }
    }
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}
