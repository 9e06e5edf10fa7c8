//! SQL derivations' output: any key column types that cast to the declared ones, and
//! `_upstream` optional (without it, a key's causes are the batch's changed upstreams).

use std::sync::Arc;

use deltalake::arrow::array::{ArrayRef, RecordBatch, StringArray};
use deltalake::arrow::compute::{cast, concat_batches};
use deltalake::arrow::datatypes::{DataType, Field, Schema};

use super::{arrow_type, collect_batches, AffectedKeys, DefaultCause, InvalidKeys, UPSTREAM};
use crate::config::KeyColumn;

/// SQL output: key columns are cast to their declared types and the rows take the
/// standard shape, then go through the same validation. Without `_upstream`, every
/// key's causes are the batch's changed upstreams.
pub(super) fn collect_with_default(
    schema: &deltalake::arrow::datatypes::SchemaRef,
    batches: &[RecordBatch],
    keys: &[KeyColumn],
    upstream_names: &[&str],
    d: &DefaultCause,
) -> Result<AffectedKeys, InvalidKeys> {
    let mut k = query_keys(schema, batches, keys, upstream_names)?;
    if schema.column_with_name(UPSTREAM).is_none() {
        let mut all_causes = d.upstreams.clone();
        all_causes.sort();
        let all_causes: Arc<[String]> = all_causes.into();
        for (causes, ts) in k.upstreams.iter_mut().zip(k.change_ts.iter_mut()) {
            causes.clone_from(&all_causes);
            *ts = (*ts).max(d.change_ts);
        }
    }
    Ok(k)
}

/// Rows of a SQL query's output as distinct keys: key columns cast to their declared
/// types, then the same validation as a plugin's. Without an `_upstream` column every
/// key is put down to the first upstream; the caller gives them the batch's changed
/// upstreams once it knows them (see [`collect_with_default`]).
pub fn query_keys(
    schema: &deltalake::arrow::datatypes::SchemaRef,
    batches: &[RecordBatch],
    keys: &[KeyColumn],
    upstream_names: &[&str],
) -> Result<AffectedKeys, InvalidKeys> {
    let all = concat_batches(schema, batches)?;
    let mut fields = Vec::with_capacity(keys.len() + 2);
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(keys.len() + 2);
    for k in keys {
        let col = all
            .column_by_name(&k.name)
            .ok_or_else(|| InvalidKeys::QueryMissingKey {
                column: k.name.clone(),
                returned: schema.fields().iter().map(|f| f.name().clone()).collect(),
            })?;
        let want = arrow_type(k.ty);
        cols.push(
            cast(col, &want).map_err(|source| InvalidKeys::QueryKeyType {
                column: k.name.clone(),
                found: col.data_type().clone(),
                wanted: want.clone(),
                source,
            })?,
        );
        fields.push(Field::new(&k.name, want, true));
    }
    let given = all.column_by_name(UPSTREAM);
    cols.push(match given {
        Some(u) => cast(u, &DataType::Utf8)?,
        None => {
            let placeholder = upstream_names.first().copied().unwrap_or_default();
            Arc::new(StringArray::from(vec![placeholder; all.num_rows()]))
        }
    });
    fields.push(Field::new(UPSTREAM, DataType::Utf8, false));
    if let Some(t) = all.column_by_name(crate::cdf::COMMIT_TIMESTAMP) {
        cols.push(t.clone());
        fields.push(Field::new(
            crate::cdf::COMMIT_TIMESTAMP,
            t.data_type().clone(),
            true,
        ));
    }
    let schema = Arc::new(Schema::new(fields));
    let b = RecordBatch::try_new(schema.clone(), cols)?;
    collect_batches(&schema, &[b], keys, upstream_names, None)
}
