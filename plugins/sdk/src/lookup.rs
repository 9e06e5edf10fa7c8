//! Typed lookups: rows of a table at the batch's pinned version, by key column.

use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{DataType, Field, Schema};

use crate::Table;

/// The host's `lookup` import, as a function (swapped out in unit tests).
pub(crate) type HostLookup<'a> =
    &'a mut dyn FnMut(&str, &str, &[u8], &[String]) -> Result<Vec<u8>, String>;

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
    let request = encode_keys(column, data_type, keys).map_err(|e| format!("{source}: {e}"))?;
    let columns: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
    let answer = host(table, column, &request, &columns).map_err(|e| format!("{source}: {e}"))?;
    Table::from_ipc(source, &answer)
}

/// One non-null column named after the lookup column, as an Arrow IPC stream.
fn encode_keys(column: &str, data_type: DataType, keys: ArrayRef) -> Result<Vec<u8>, String> {
    let schema = Arc::new(Schema::new(vec![Field::new(column, data_type, false)]));
    let error = |e: arrow_schema::ArrowError| format!("cannot encode the lookup keys: {e}");
    let batch = RecordBatch::try_new(schema.clone(), vec![keys]).map_err(error)?;
    let mut writer = StreamWriter::try_new(Vec::new(), &schema).map_err(error)?;
    writer.write(&batch).map_err(error)?;
    writer.finish().map_err(error)?;
    writer.into_inner().map_err(error)
}
