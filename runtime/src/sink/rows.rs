//! The rows a batch writes to the link table, in the table's own Arrow schema.

use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, Int64Array, ListBuilder, RecordBatch, StringBuilder, TimestampMicrosecondArray,
};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::DeltaTable;

use super::LinkTable;
use super::Result;
use crate::affected::AffectedKeys;

impl LinkTable {
    /// One row per key, in the link table's own Arrow schema (every column nullable for
    /// a MERGE source).
    pub(super) fn rows(
        &self,
        t: &DeltaTable,
        batch_id: i64,
        k: &AffectedKeys,
        nullable: bool,
    ) -> Result<RecordBatch> {
        let schema: SchemaRef = t
            .snapshot()
            .map_err(|e| self.err(e))?
            .snapshot()
            .arrow_schema();
        let n = k.len();
        let now = chrono::Utc::now().timestamp_micros();
        let mut ups = ListBuilder::new(StringBuilder::new());
        for names in &k.upstreams {
            for name in names.iter() {
                ups.values().append_value(name);
            }
            ups.append(true);
        }
        let mut cols: Vec<ArrayRef> = k.columns.clone();
        cols.push(Arc::new(Int64Array::from(vec![batch_id; n])));
        cols.push(Arc::new(ups.finish()));
        cols.push(Arc::new(
            TimestampMicrosecondArray::from(k.change_ts.clone()).with_timezone("UTC"),
        ));
        cols.push(Arc::new(
            TimestampMicrosecondArray::from(vec![now; n]).with_timezone("UTC"),
        ));
        // Cast each column to the table's exact type (list field names, tz spelling).
        let cols = cols
            .into_iter()
            .zip(schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c)
                } else {
                    cast(&c, f.data_type())
                        .map_err(|e| self.err(format!("column {}: {e}", f.name())))
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let schema = if nullable {
            Arc::new(deltalake::arrow::datatypes::Schema::new(
                schema
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone().with_nullable(true))
                    .collect::<Vec<_>>(),
            ))
        } else {
            schema
        };
        RecordBatch::try_new(schema, cols).map_err(|e| self.err(e))
    }
}
