//! Typed lookups: rows of a table at the batch's pinned version, by key column.

use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_schema::DataType;

use crate::Table;

use crate::bindings::dlink::pipeline::types as wit;

/// The host's `lookup` import, as a function (swapped out in unit tests).
pub(crate) type HostLookup<'a> =
    &'a mut dyn FnMut(&str, &str, wit::Column, &[String]) -> Result<wit::RecordBatch, String>;

/// Rows of `table` (an upstream of the pipeline or one of its declared lookup tables),
/// as of the batch's pinned version, whose int64 `column` equals one of `keys`,
/// projected to `columns` (all columns when empty).
///
/// Keys are deduplicated before the call, and no call is made when `keys` is empty
/// (the result is then an empty table). Errors name the table and the column.
///
/// ```no_run
/// # fn f() -> Result<(), String> {
/// let employees = dlink_plugin_sdk::lookup_i64("employee", "dept_id", &[10, 20], &["emp_id"])?;
/// for row in employees.rows() {
///     let _emp_id = row.i64("emp_id")?;
/// }
/// # Ok(()) }
/// ```
pub fn lookup_i64(
    table: &str,
    column: &str,
    keys: &[i64],
    columns: &[&str],
) -> Result<Table, String> {
    lookup_i64_with(&mut crate::host::lookup, table, column, keys, columns)
}

/// Like [`lookup_i64`], for a utf8 lookup column.
pub fn lookup_str(
    table: &str,
    column: &str,
    keys: &[&str],
    columns: &[&str],
) -> Result<Table, String> {
    lookup_str_with(&mut crate::host::lookup, table, column, keys, columns)
}

pub(crate) fn lookup_i64_with(
    host: HostLookup<'_>,
    table: &str,
    column: &str,
    keys: &[i64],
    columns: &[&str],
) -> Result<Table, String> {
    let mut keys = keys.to_vec();
    keys.sort_unstable();
    keys.dedup();
    let len = keys.len();
    let array: ArrayRef = Arc::new(Int64Array::from(keys));
    call(host, table, column, DataType::Int64, array, len, columns)
}

pub(crate) fn lookup_str_with(
    host: HostLookup<'_>,
    table: &str,
    column: &str,
    keys: &[&str],
    columns: &[&str],
) -> Result<Table, String> {
    let mut keys = keys.to_vec();
    keys.sort_unstable();
    keys.dedup();
    let len = keys.len();
    let array: ArrayRef = Arc::new(StringArray::from(keys));
    call(host, table, column, DataType::Utf8, array, len, columns)
}

fn call(
    host: HostLookup<'_>,
    table: &str,
    column: &str,
    data_type: DataType,
    keys: ArrayRef,
    len: usize,
    columns: &[&str],
) -> Result<Table, String> {
    let source = format!("lookup of '{table}' by '{column}'");
    if len == 0 {
        return Ok(Table::empty(source));
    }
    let request = keys_column(column, data_type, keys).map_err(|e| format!("{source}: {e}"))?;
    let columns: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
    let answer = host(table, column, request, &columns).map_err(|e| format!("{source}: {e}"))?;
    let rows = answer.num_rows;
    let batch = crate::columns::from_wit(&source, answer)?;
    if rows == 0 {
        return Table::from_batches(source, Some(batch.schema()), Vec::new());
    }
    Table::from_batches(source, None, vec![batch])
}

/// The keys as the contract's column, named after the lookup column.
fn keys_column(column: &str, data_type: DataType, keys: ArrayRef) -> Result<wit::Column, String> {
    if keys.data_type() != &data_type {
        return Err(format!(
            "lookup keys of type {} where {data_type} was meant",
            keys.data_type()
        ));
    }
    crate::columns::column(column, &keys)
}

/// Sorts `(value, commit time)` pairs and keeps one per value, with its newest time.
fn newest_per_value<T: Ord>(pairs: &mut Vec<(T, Option<i64>)>) {
    pairs.sort_unstable();
    pairs.dedup_by(|later, kept| {
        let same = later.0 == kept.0;
        if same {
            kept.1 = crate::changes::newest(kept.1, later.1);
        }
        same
    });
}

/// The columns a join lookup asks for: the key columns and the lookup column.
fn projection<'a>(names: &'a [String], column: &'a str) -> Vec<&'a str> {
    let mut projection: Vec<&str> = names.iter().map(String::as_str).collect();
    if !projection.contains(&column) {
        projection.push(column);
    }
    projection
}

/// The lookup column and the key columns of a batch of found rows.
fn found_columns<'a>(
    batch: &'a RecordBatch,
    table: &str,
    column: &str,
    names: &[String],
) -> Result<(&'a ArrayRef, Vec<&'a ArrayRef>), String> {
    let by = batch
        .column_by_name(column)
        .ok_or_else(|| format!("lookup of '{table}' returned no column '{column}'"))?;
    let key_cols = names
        .iter()
        .map(|k| {
            batch
                .column_by_name(k)
                .ok_or_else(|| format!("lookup of '{table}' returned no key column '{k}'"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((by, key_cols))
}

impl crate::Keys {
    /// The keys found through a lookup, the join step of most pipelines: for the change
    /// rows of `changes`, the rows of `table` (at the batch's pinned version) whose
    /// `column` equals a change row's `via` value, each recorded with its key columns
    /// (the columns of `table` named like the pipeline's keys) and caused by `changes`'
    /// upstream at the newest commit time of the change rows holding that value.
    ///
    /// Pre-images and post-images both count, so a row that moves from one partner to
    /// another affects the keys of both. `via` and `column` hold integers or strings.
    /// Returns the number of rows found.
    ///
    /// ```no_run
    /// # fn f(batch: &dlink_plugin_sdk::Batch, out: &mut dlink_plugin_sdk::Keys) -> Result<(), dlink_plugin_sdk::Error> {
    /// // Every employee of a changed department (key `emp_id`).
    /// out.add_through(batch.changes("department")?, "dept_id", "employee", "dept_id")?;
    /// # Ok(()) }
    /// ```
    pub fn add_through(
        &mut self,
        changes: &crate::Changes,
        via: &str,
        table: &str,
        column: &str,
    ) -> Result<usize, crate::Error> {
        self.add_through_with(&mut crate::host::lookup, changes, via, table, column)
    }

    pub(crate) fn add_through_with(
        &mut self,
        host: HostLookup<'_>,
        changes: &crate::Changes,
        via: &str,
        table: &str,
        column: &str,
    ) -> Result<usize, crate::Error> {
        use crate::output::{value_at, KeyValue};
        if let Some(n) = self.add_through_ints(&mut *host, changes, via, table, column)? {
            return Ok(n);
        }
        // Each distinct value with the newest commit time of the rows holding it.
        let mut pairs: Vec<(KeyValue, Option<i64>)> = Vec::with_capacity(changes.len());
        let mut offset = 0;
        for batch in changes.table().record_batches() {
            let a = batch.column_by_name(via).ok_or_else(|| {
                format!(
                    "upstream '{}': the change rows have no column '{via}' (columns: {}){}",
                    changes.name(),
                    changes.table().column_names().join(", "),
                    crate::NOT_READ_HINT
                )
            })?;
            let ts = &changes.commit_timestamps()[offset..offset + batch.num_rows()];
            pairs.extend((0..batch.num_rows()).filter_map(|i| value_at(a, i).map(|v| (v, ts[i]))));
            offset += batch.num_rows();
        }
        newest_per_value(&mut pairs);
        if pairs.is_empty() {
            return Ok(0);
        }
        let names: Vec<String> = self.columns().iter().map(|k| k.name.clone()).collect();
        let projection = projection(&names, column);
        // Integer join values took `add_through_ints`: these are strings.
        let keys: Vec<String> = pairs.iter().map(|(v, _)| v.to_plain()).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let found = lookup_str_with(host, table, column, &keys, &projection)?;
        let mut n = 0;
        for batch in found.record_batches() {
            let (by, key_cols) = found_columns(batch, table, column, &names)?;
            for i in 0..batch.num_rows() {
                let Some(v) = value_at(by, i) else { continue };
                let ts = pairs
                    .binary_search_by(|(p, _)| p.cmp(&v))
                    .ok()
                    .and_then(|j| pairs[j].1);
                let key: Option<Vec<KeyValue>> = key_cols.iter().map(|a| value_at(a, i)).collect();
                if let Some(key) = key {
                    self.add(changes.name(), ts, key)?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// [`Keys::add_through`] when `via` holds integers (the usual join column): the
    /// values sorted as plain integers, and found rows whose key is one int64 column
    /// without nulls recorded as whole arrays, with no step per row that allocates.
    /// `None` when `via` is not an integer column (the general path handles it).
    fn add_through_ints(
        &mut self,
        host: HostLookup<'_>,
        changes: &crate::Changes,
        via: &str,
        table: &str,
        column: &str,
    ) -> Result<Option<usize>, crate::Error> {
        use crate::output::{value_at, KeyType, KeyValue};
        use arrow_array::cast::AsArray;
        use arrow_array::types::Int64Type;
        use arrow_array::Array;
        let batches = changes.table().record_batches();
        let ints = |a: Option<&ArrayRef>| {
            a.is_some_and(|a| matches!(a.data_type(), DataType::Int64 | DataType::Int32))
        };
        if batches.is_empty() || !batches.iter().all(|b| ints(b.column_by_name(via))) {
            return Ok(None);
        }
        // Each distinct value with the newest commit time of the rows holding it.
        let mut pairs = int_values_with_times(changes, via);
        newest_per_value(&mut pairs);
        if pairs.is_empty() {
            return Ok(Some(0));
        }
        let names: Vec<String> = self.columns().iter().map(|k| k.name.clone()).collect();
        let projection = projection(&names, column);
        let keys: Vec<i64> = pairs.iter().map(|(v, _)| *v).collect();
        let found = lookup_i64_with(host, table, column, &keys, &projection)?;
        let ts_of = |v: i64| {
            pairs
                .binary_search_by_key(&v, |(p, _)| *p)
                .ok()
                .and_then(|j| pairs[j].1)
        };
        let one_int_key = matches!(self.columns(), [k] if k.key_type == KeyType::Int64);
        let mut n = 0;
        for batch in found.record_batches() {
            let (by, key_cols) = found_columns(batch, table, column, &names)?;
            let whole = match (key_cols.as_slice(), by.as_primitive_opt::<Int64Type>()) {
                ([key], Some(by))
                    if one_int_key
                        && key.data_type() == &DataType::Int64
                        && key.null_count() == 0
                        && by.null_count() == 0 =>
                {
                    Some(((*key).clone(), by))
                }
                _ => None,
            };
            if let Some((key, by)) = whole {
                let ts = by.values().iter().map(|v| ts_of(*v)).collect();
                n += key.len();
                self.add_key_array(changes.name(), key, ts)?;
                continue;
            }
            for i in 0..batch.num_rows() {
                let Some(KeyValue::Int64(v)) = value_at(by, i) else {
                    continue;
                };
                let key: Option<Vec<KeyValue>> = key_cols.iter().map(|a| value_at(a, i)).collect();
                if let Some(key) = key {
                    self.add(changes.name(), ts_of(v), key)?;
                    n += 1;
                }
            }
        }
        Ok(Some(n))
    }
}

/// Each non-null value of the integer column `via` of the change rows with its row's
/// commit time (not yet de-duplicated).
fn int_values_with_times(changes: &crate::Changes, via: &str) -> Vec<(i64, Option<i64>)> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int32Type, Int64Type};
    use arrow_array::Array;
    let batches = changes.table().record_batches();
    let mut pairs: Vec<(i64, Option<i64>)> = Vec::with_capacity(changes.len());
    let mut offset = 0;
    for batch in batches {
        let ts = &changes.commit_timestamps()[offset..offset + batch.num_rows()];
        offset += batch.num_rows();
        let Some(a) = batch.column_by_name(via) else {
            continue;
        };
        let valid = |i: usize| a.is_valid(i);
        if let Some(p) = a.as_primitive_opt::<Int64Type>() {
            pairs.extend(
                (0..p.len())
                    .filter(|i| valid(*i))
                    .map(|i| (p.value(i), ts[i])),
            );
        } else if let Some(p) = a.as_primitive_opt::<Int32Type>() {
            pairs.extend(
                (0..p.len())
                    .filter(|i| valid(*i))
                    .map(|i| (i64::from(p.value(i)), ts[i])),
            );
        }
    }
    pairs
}
