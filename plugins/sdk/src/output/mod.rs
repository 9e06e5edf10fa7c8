//! The affected-keys builder and its Arrow encoding (the `derive` output of contract
//! 0.2: per causing upstream, the key columns and `_commit_timestamp`).
//!
//! Nothing is de-duplicated here: the host de-duplicates the output once, natively.
//! Hashing every key in the guest (wasm32) cost more than the rest of a typical
//! `derive`. Whole columns of change rows are passed through without a per-row step.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::{
    Array, ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::changes::{Changes, Row, COMMIT_TIMESTAMP_COLUMN};
use crate::error::Error;
use crate::info::PipelineInfo;
use crate::Batch;

mod types;

pub use types::{IntoKey, IntoKeyValue, KeyColumn, KeyType, KeyValue};

/// Values of one key column recorded row by row.
#[derive(Debug, Clone)]
enum Values {
    Int64(Vec<i64>),
    Int32(Vec<i32>),
    Utf8(Vec<String>),
}

impl Values {
    fn new(t: KeyType) -> Values {
        match t {
            KeyType::Int64 => Values::Int64(Vec::new()),
            KeyType::Int32 => Values::Int32(Vec::new()),
            KeyType::Utf8 => Values::Utf8(Vec::new()),
        }
    }

    /// Appends `v` if it fits the column (else says why not, naming the column).
    fn push(&mut self, column: &KeyColumn, v: KeyValue) -> Result<(), Error> {
        match (self, v) {
            (Values::Int64(out), KeyValue::Int64(v)) => out.push(v),
            (Values::Int32(out), KeyValue::Int64(v)) => match i32::try_from(v) {
                Ok(v) => out.push(v),
                Err(_) => {
                    return Err(Error::new(format!(
                        "key value {v} does not fit key column {column}"
                    )))
                }
            },
            (Values::Utf8(out), KeyValue::Utf8(v)) => out.push(v),
            (_, v) => {
                return Err(Error::new(format!(
                    "key value {v} does not fit key column {column}"
                )))
            }
        }
        Ok(())
    }

    fn take(&mut self) -> ArrayRef {
        match self {
            Values::Int64(v) => Arc::new(Int64Array::from(std::mem::take(v))),
            Values::Int32(v) => Arc::new(Int32Array::from(std::mem::take(v))),
            Values::Utf8(v) => Arc::new(StringArray::from(std::mem::take(v))),
        }
    }
}

/// The keys one upstream's changes caused: whole record batches (columns passed
/// through) and keys recorded row by row.
#[derive(Debug, Clone)]
struct Part {
    batches: Vec<RecordBatch>,
    values: Vec<Values>,
    timestamps: Vec<Option<i64>>,
}

/// The affected keys of a batch, per causing upstream, as `derive` records them.
///
/// A key is recorded with its cause: the upstream whose change caused it and that
/// change's commit timestamp. Keys may be recorded more than once (the host keeps one
/// row per key with every cause and the newest timestamp); a key with a null part is
/// skipped (a deleted join side can have a null foreign key).
#[derive(Debug, Clone)]
pub struct Keys {
    columns: Vec<KeyColumn>,
    schema: SchemaRef,
    upstreams: Vec<String>,
    parts: Vec<Part>,
    len: usize,
}

/// `_commit_timestamp` as the output carries it.
fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

impl Keys {
    /// An empty builder for key `columns` (at least one) caused by `upstreams`.
    pub fn new(columns: Vec<KeyColumn>, upstreams: Vec<String>) -> Result<Keys, Error> {
        if columns.is_empty() {
            return Err(Error::new("a pipeline needs at least one key column"));
        }
        let mut fields: Vec<Field> = columns
            .iter()
            .map(|c| Field::new(&c.name, c.key_type.data_type(), false))
            .collect();
        fields.push(Field::new(COMMIT_TIMESTAMP_COLUMN, timestamp_type(), true));
        let parts = upstreams
            .iter()
            .map(|_| Part {
                batches: Vec::new(),
                values: columns.iter().map(|c| Values::new(c.key_type)).collect(),
                timestamps: Vec::new(),
            })
            .collect();
        Ok(Keys {
            schema: Arc::new(Schema::new(fields)),
            columns,
            upstreams,
            parts,
            len: 0,
        })
    }

    /// The builder for one batch of the pipeline: its key columns, its upstreams.
    pub fn for_batch(pipeline: &PipelineInfo, batch: &Batch) -> Result<Keys, Error> {
        Keys::new(
            pipeline.keys().to_vec(),
            batch.upstream_names().map(str::to_string).collect(),
        )
    }

    /// The pipeline's key columns.
    pub fn columns(&self) -> &[KeyColumn] {
        &self.columns
    }

    /// Number of keys recorded (repeats included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn part(&mut self, upstream: &str) -> Result<usize, Error> {
        self.upstreams
            .iter()
            .position(|u| u == upstream)
            .ok_or_else(|| {
                Error::new(format!(
                    "a key's cause '{upstream}' is not an upstream of the batch (upstreams: {})",
                    self.upstreams.join(", ")
                ))
            })
    }

    /// Records `key`, caused by the change `row` (its upstream and commit timestamp).
    pub fn add_from(&mut self, row: &Row<'_>, key: impl IntoKey) -> Result<(), Error> {
        self.add(row.upstream(), row.commit_timestamp(), key)
    }

    /// Records `key`, caused by a change of `upstream` committed at `commit_timestamp`
    /// (microseconds since the epoch, UTC). For keys found through a lookup.
    pub fn add(
        &mut self,
        upstream: &str,
        commit_timestamp: Option<i64>,
        key: impl IntoKey,
    ) -> Result<(), Error> {
        let Some(values) = key.into_key() else {
            return Ok(());
        };
        if values.len() != self.columns.len() {
            return Err(Error::new(format!(
                "a key of {} value(s) for {} key column(s) ({})",
                values.len(),
                self.columns.len(),
                self.column_list()
            )));
        }
        let p = self.part(upstream)?;
        // Check every part before appending any, so a rejected key leaves no trace.
        let part = &mut self.parts[p];
        for ((column, out), v) in self.columns.iter().zip(&part.values).zip(&values) {
            let fits = matches!(
                (out, v),
                (Values::Int64(_), KeyValue::Int64(_)) | (Values::Utf8(_), KeyValue::Utf8(_))
            ) || matches!((out, v), (Values::Int32(_), KeyValue::Int64(x)) if i32::try_from(*x).is_ok());
            if !fits {
                return Err(Error::new(format!(
                    "key value {v} does not fit key column {column}"
                )));
            }
        }
        for ((column, out), v) in self.columns.iter().zip(&mut part.values).zip(values) {
            out.push(column, v)?;
        }
        part.timestamps.push(commit_timestamp);
        self.len += 1;
        Ok(())
    }

    /// Records one key per change row of `changes`, in row order (`keys` yields one
    /// key per row, e.g. [`Changes::i64_values`]), each caused by its row.
    pub fn add_each<K: IntoKey>(
        &mut self,
        changes: &Changes,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<(), Error> {
        let mut n = 0;
        for (key, ts) in keys.into_iter().zip(changes.commit_timestamps()) {
            self.add(changes.name(), *ts, key)?;
            n += 1;
        }
        if n != changes.len() {
            return Err(Error::new(format!(
                "add_each on upstream '{}' got {n} key(s) for {} change row(s)",
                changes.name(),
                changes.len()
            )));
        }
        Ok(())
    }

    /// Records the value of `column` of every change row of `changes` as a one-column
    /// key, caused by its row: the fast way (the column's arrays are passed to the host
    /// as they are, without a step per row). Rows where it is null are skipped.
    pub fn add_column(&mut self, changes: &Changes, column: &str) -> Result<(), Error> {
        self.add_columns(changes, &[column])
    }

    /// [`Keys::add_column`] for a key of several columns: `columns` of the change rows,
    /// one per key column in order.
    pub fn add_columns(&mut self, changes: &Changes, columns: &[&str]) -> Result<(), Error> {
        if columns.len() != self.columns.len() {
            return Err(Error::new(format!(
                "add_columns got {} column(s) for {} key column(s) ({})",
                columns.len(),
                self.columns.len(),
                self.column_list()
            )));
        }
        let p = self.part(changes.name())?;
        let mut offset = 0;
        for batch in changes.table().record_batches() {
            let rows = batch.num_rows();
            let mut arrays = Vec::with_capacity(columns.len() + 1);
            let mut whole = true;
            for (c, key) in columns.iter().zip(&self.columns) {
                let a = batch.column_by_name(c).ok_or_else(|| {
                    Error::new(format!(
                        "upstream '{}': the change rows have no column '{c}' (columns: {}){}",
                        changes.name(),
                        changes.table().column_names().join(", "),
                        crate::NOT_READ_HINT
                    ))
                })?;
                match key_array(a, key.key_type) {
                    Some(a) if a.null_count() == 0 => arrays.push(a),
                    Some(_) => whole = false,
                    None => {
                        return Err(Error::new(format!(
                            "upstream '{}': column '{c}' is {}, which cannot be key column {key}",
                            changes.name(),
                            a.data_type()
                        )))
                    }
                }
            }
            // Decoded only when the arrays cannot be passed through.
            let ts = || &changes.commit_timestamps()[offset..offset + rows];
            if whole {
                let t = match batch.column_by_name(COMMIT_TIMESTAMP_COLUMN) {
                    Some(t) if t.data_type() == &timestamp_type() => t.clone(),
                    _ => Arc::new(
                        TimestampMicrosecondArray::from(ts().to_vec()).with_timezone("UTC"),
                    ),
                };
                arrays.push(t);
                let b = RecordBatch::try_new(self.schema.clone(), arrays)
                    .map_err(|e| Error::new(format!("cannot build the keys: {e}")))?;
                self.parts[p].batches.push(b);
                self.len += rows;
            } else {
                // Nulls in a key column: row by row, skipping the rows with a null.
                let cols: Vec<&ArrayRef> = columns
                    .iter()
                    .filter_map(|c| batch.column_by_name(c))
                    .collect();
                for (row, t) in ts().iter().enumerate() {
                    let key: Option<Vec<KeyValue>> =
                        cols.iter().map(|a| value_at(a, row)).collect();
                    if let Some(key) = key {
                        self.add(changes.name(), *t, key)?;
                    }
                }
            }
            offset += rows;
        }
        Ok(())
    }

    /// Records one whole array of a single int64 key column with a commit time per
    /// value, caused by `upstream`: no step per row. `key` has no nulls and is int64;
    /// the caller checks both.
    pub(crate) fn add_key_array(
        &mut self,
        upstream: &str,
        key: ArrayRef,
        timestamps: Vec<Option<i64>>,
    ) -> Result<(), Error> {
        let p = self.part(upstream)?;
        let rows = key.len();
        let ts = Arc::new(TimestampMicrosecondArray::from(timestamps).with_timezone("UTC"));
        let b = RecordBatch::try_new(self.schema.clone(), vec![key, ts])
            .map_err(|e| Error::new(format!("cannot build the keys: {e}")))?;
        self.parts[p].batches.push(b);
        self.len += rows;
        Ok(())
    }

    fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The output schema: the key columns and `_commit_timestamp`.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The recorded keys per upstream, as record batches of [`Keys::schema`]
    /// (upstreams without keys are left out).
    pub fn into_batches(mut self) -> Result<Vec<(String, Vec<RecordBatch>)>, Error> {
        let mut out = Vec::new();
        for (upstream, part) in self.upstreams.iter().zip(&mut self.parts) {
            let mut batches = std::mem::take(&mut part.batches);
            if !part.timestamps.is_empty() {
                let mut arrays: Vec<ArrayRef> = part.values.iter_mut().map(Values::take).collect();
                arrays.push(Arc::new(
                    TimestampMicrosecondArray::from(std::mem::take(&mut part.timestamps))
                        .with_timezone("UTC"),
                ));
                batches.push(
                    RecordBatch::try_new(self.schema.clone(), arrays)
                        .map_err(|e| Error::new(format!("cannot build the keys: {e}")))?,
                );
            }
            if !batches.is_empty() {
                out.push((upstream.clone(), batches));
            }
        }
        Ok(out)
    }

    /// The output as the component returns it: per upstream, the key columns and
    /// `_commit_timestamp` as contract 0.3's record batch.
    pub fn into_wit(
        self,
    ) -> Result<Vec<crate::bindings::dlink::pipeline::types::UpstreamKeys>, Error> {
        let schema = self.schema.clone();
        self.into_batches()?
            .into_iter()
            .map(|(upstream, batches)| {
                let keys = crate::columns::to_wit(&schema, &batches)
                    .map_err(|e| Error::new(format!("cannot pass the keys: {e}")))?;
                Ok(crate::bindings::dlink::pipeline::types::UpstreamKeys { upstream, keys })
            })
            .collect()
    }

    /// The output as an Arrow IPC stream per upstream (contract 0.2's form).
    pub fn into_ipc(self) -> Result<Vec<(String, Vec<u8>)>, Error> {
        let schema = self.schema.clone();
        let error =
            |e: arrow_schema::ArrowError| Error::new(format!("cannot encode the keys: {e}"));
        self.into_batches()?
            .into_iter()
            .map(|(upstream, batches)| {
                // The rows' own bytes: a passed-through column shares the input's
                // whole IPC buffer, which `get_array_memory_size` would count per batch.
                let size: usize = batches
                    .iter()
                    .flat_map(|b| b.columns())
                    .map(|a| a.to_data().get_slice_memory_size().unwrap_or(0))
                    .sum();
                let mut w = StreamWriter::try_new(Vec::with_capacity(size + 512), &schema)
                    .map_err(error)?;
                for b in &batches {
                    w.write(b).map_err(error)?;
                }
                w.finish().map_err(error)?;
                Ok((upstream, w.into_inner().map_err(error)?))
            })
            .collect()
    }
}

/// `a` as an array of key type `t`, when its type is one the key can take without
/// loss (int32 and int64 widen or narrow only to the declared type exactly; strings
/// of any layout become utf8).
fn key_array(a: &ArrayRef, t: KeyType) -> Option<ArrayRef> {
    match (a.data_type(), t) {
        (DataType::Int64, KeyType::Int64)
        | (DataType::Int32, KeyType::Int32)
        | (DataType::Utf8, KeyType::Utf8) => Some(a.clone()),
        (DataType::Int32, KeyType::Int64) => Some(Arc::new(
            a.as_primitive::<Int32Type>()
                .unary::<_, Int64Type>(i64::from),
        )),
        (DataType::LargeUtf8, KeyType::Utf8) => Some(Arc::new(
            a.as_string::<i64>().iter().collect::<StringArray>(),
        )),
        (DataType::Utf8View, KeyType::Utf8) => {
            Some(Arc::new(a.as_string_view().iter().collect::<StringArray>()))
        }
        (DataType::Int64, KeyType::Int32) => {
            let p = a.as_primitive::<Int64Type>();
            let narrow: Option<Vec<Option<i32>>> = p
                .iter()
                .map(|v| match v {
                    Some(v) => i32::try_from(v).ok().map(Some),
                    None => Some(None),
                })
                .collect();
            narrow.map(|v| Arc::new(Int32Array::from(v)) as ArrayRef)
        }
        _ => None,
    }
}

/// The value of row `i` of a key-able column (`None` for null or an unsupported type).
pub(crate) fn value_at(a: &ArrayRef, i: usize) -> Option<KeyValue> {
    if a.is_null(i) {
        return None;
    }
    match a.data_type() {
        DataType::Int64 => Some(KeyValue::Int64(a.as_primitive::<Int64Type>().value(i))),
        DataType::Int32 => Some(KeyValue::Int64(i64::from(
            a.as_primitive::<Int32Type>().value(i),
        ))),
        DataType::Utf8 => Some(KeyValue::Utf8(a.as_string::<i32>().value(i).to_string())),
        DataType::LargeUtf8 => Some(KeyValue::Utf8(a.as_string::<i64>().value(i).to_string())),
        DataType::Utf8View => Some(KeyValue::Utf8(a.as_string_view().value(i).to_string())),
        _ => None,
    }
}
