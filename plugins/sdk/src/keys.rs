//! The affected-keys builder and its Arrow encoding (the `derive` output).

use std::fmt;
use std::sync::Arc;

use arrow_array::types::Int32Type;
use arrow_array::{
    ArrayRef, DictionaryArray, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow_buffer::{BooleanBufferBuilder, NullBuffer, ScalarBuffer};
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use indexmap::map::Entry;
use indexmap::IndexMap;

use crate::changes::{newest, Changes, Row, COMMIT_TIMESTAMP_COLUMN};
use crate::Batch;

/// Name of the output column that names the upstream whose change caused a key.
pub const UPSTREAM_COLUMN: &str = "_upstream";

/// The Arrow type of [`UPSTREAM_COLUMN`] in the output: utf8, dictionary-encoded (the
/// host also accepts plain utf8).
pub fn upstream_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// The Arrow type of a key column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyType {
    /// int64 ("long").
    Int64,
    /// int32 ("int"); values are given as i64 and must fit.
    Int32,
    /// utf8 ("string").
    Utf8,
}

impl KeyType {
    /// The Arrow data type.
    pub fn data_type(self) -> DataType {
        match self {
            KeyType::Int64 => DataType::Int64,
            KeyType::Int32 => DataType::Int32,
            KeyType::Utf8 => DataType::Utf8,
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyType::Int64 => "int64",
            KeyType::Int32 => "int32",
            KeyType::Utf8 => "utf8",
        })
    }
}

/// One key column of the pipeline, as the pipeline file declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyColumn {
    /// Column name.
    pub name: &'static str,
    /// Column type.
    pub key_type: KeyType,
}

impl KeyColumn {
    /// An int64 key column.
    pub const fn i64(name: &'static str) -> KeyColumn {
        KeyColumn {
            name,
            key_type: KeyType::Int64,
        }
    }

    /// An int32 key column. Its values are given as `i64` (as `Row::i64` returns them)
    /// and must fit in int32.
    pub const fn i32(name: &'static str) -> KeyColumn {
        KeyColumn {
            name,
            key_type: KeyType::Int32,
        }
    }

    /// A utf8 key column.
    pub const fn utf8(name: &'static str) -> KeyColumn {
        KeyColumn {
            name,
            key_type: KeyType::Utf8,
        }
    }
}

impl fmt::Display for KeyColumn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.key_type)
    }
}

/// One value of a key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyValue {
    /// A value of an int64 key column.
    Int64(i64),
    /// A value of a utf8 key column.
    Utf8(String),
}

impl KeyValue {
    fn key_type(&self) -> KeyType {
        match self {
            KeyValue::Int64(_) => KeyType::Int64,
            KeyValue::Utf8(_) => KeyType::Utf8,
        }
    }

    fn fits(&self, key_type: KeyType) -> bool {
        match (self, key_type) {
            (KeyValue::Int64(_), KeyType::Int64) | (KeyValue::Utf8(_), KeyType::Utf8) => true,
            (KeyValue::Int64(v), KeyType::Int32) => i32::try_from(*v).is_ok(),
            _ => false,
        }
    }
}

impl fmt::Display for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyValue::Int64(v) => write!(f, "{v}"),
            KeyValue::Utf8(v) => write!(f, "{v:?}"),
        }
    }
}

/// A value that can be one column of a key; `None` (null) means "no key".
pub trait IntoKeyValue {
    /// The key value, or `None` for null.
    fn into_key_value(self) -> Option<KeyValue>;
}

impl IntoKeyValue for KeyValue {
    fn into_key_value(self) -> Option<KeyValue> {
        Some(self)
    }
}

impl IntoKeyValue for i64 {
    fn into_key_value(self) -> Option<KeyValue> {
        Some(KeyValue::Int64(self))
    }
}

impl IntoKeyValue for &str {
    fn into_key_value(self) -> Option<KeyValue> {
        Some(KeyValue::Utf8(self.to_string()))
    }
}

impl IntoKeyValue for String {
    fn into_key_value(self) -> Option<KeyValue> {
        Some(KeyValue::Utf8(self))
    }
}

impl<T: IntoKeyValue> IntoKeyValue for Option<T> {
    fn into_key_value(self) -> Option<KeyValue> {
        self.and_then(IntoKeyValue::into_key_value)
    }
}

/// A whole key: one value per key column, in declaration order. Implemented for single
/// values (`i64`, `&str`, `String`, `Option` of those, [`KeyValue`]), tuples of up to
/// four of them, and `Vec<KeyValue>`. A key with any null part is no key (skipped).
pub trait IntoKey {
    /// The key's values, or `None` when a part is null.
    fn into_key(self) -> Option<Vec<KeyValue>>;

    /// The key's values without allocating a `Vec` for a one-part key (what [`Keys`]
    /// stores). The default goes through [`IntoKey::into_key`].
    #[doc(hidden)]
    fn into_parts(self) -> Option<KeyParts>
    where
        Self: Sized,
    {
        self.into_key().map(KeyParts::from_vec)
    }
}

/// A key as [`Keys`] stores it: one-part keys (the usual case) without a `Vec`.
#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyParts {
    One(KeyValue),
    Many(Vec<KeyValue>),
}

impl KeyParts {
    fn from_vec(mut v: Vec<KeyValue>) -> KeyParts {
        match (v.len(), v.pop()) {
            (1, Some(one)) => KeyParts::One(one),
            (_, last) => {
                v.extend(last);
                KeyParts::Many(v)
            }
        }
    }

    fn as_slice(&self) -> &[KeyValue] {
        match self {
            KeyParts::One(v) => std::slice::from_ref(v),
            KeyParts::Many(v) => v,
        }
    }
}

impl<T: IntoKeyValue> IntoKey for T {
    fn into_key(self) -> Option<Vec<KeyValue>> {
        self.into_key_value().map(|v| vec![v])
    }

    fn into_parts(self) -> Option<KeyParts> {
        self.into_key_value().map(KeyParts::One)
    }
}

impl<A: IntoKeyValue, B: IntoKeyValue> IntoKey for (A, B) {
    fn into_key(self) -> Option<Vec<KeyValue>> {
        Some(vec![self.0.into_key_value()?, self.1.into_key_value()?])
    }
}

impl<A: IntoKeyValue, B: IntoKeyValue, C: IntoKeyValue> IntoKey for (A, B, C) {
    fn into_key(self) -> Option<Vec<KeyValue>> {
        Some(vec![
            self.0.into_key_value()?,
            self.1.into_key_value()?,
            self.2.into_key_value()?,
        ])
    }
}

impl<A: IntoKeyValue, B: IntoKeyValue, C: IntoKeyValue, D: IntoKeyValue> IntoKey for (A, B, C, D) {
    fn into_key(self) -> Option<Vec<KeyValue>> {
        Some(vec![
            self.0.into_key_value()?,
            self.1.into_key_value()?,
            self.2.into_key_value()?,
            self.3.into_key_value()?,
        ])
    }
}

impl IntoKey for Vec<KeyValue> {
    fn into_key(self) -> Option<Vec<KeyValue>> {
        Some(self)
    }
}

/// foldhash: SipHash costs more than the rest of a typical `derive` per row.
type Map<K> = IndexMap<K, Option<i64>, foldhash::fast::RandomState>;

/// Recorded (key, upstream) pairs with their newest commit timestamp, in recorded
/// order.
#[derive(Debug, Clone)]
enum Entries {
    /// One integer key column (the usual case): appended as plain columns, not
    /// de-duplicated here. The host de-duplicates the output once, natively; hashing
    /// every key in the guest (wasm32) cost more than the rest of a typical `derive`,
    /// and the growing map was most of the plugin's memory. A key recorded again right
    /// after itself for the same upstream (the two images of an update) is merged.
    Int(IntRows),
    /// Any other key shape: one map holds each (key, upstream) pair once.
    Parts(Map<(KeyParts, usize)>),
}

/// Integer keys as columns: one entry per recorded key, each column ready to become
/// an Arrow array without a copy.
#[derive(Debug, Clone, Default)]
struct IntRows {
    keys: Vec<i64>,
    /// Index of the causing upstream in [`Keys::upstreams`] (the `_upstream`
    /// dictionary's keys).
    upstreams: Vec<i32>,
    /// Commit timestamps (0 where unknown).
    timestamps: Vec<i64>,
    /// Entries whose commit timestamp is unknown, ascending (rare).
    unknown: Vec<usize>,
}

impl IntRows {
    fn push(&mut self, key: i64, upstream: i32, commit_timestamp: Option<i64>) {
        let n = self.keys.len();
        if n > 0 && self.keys[n - 1] == key && self.upstreams[n - 1] == upstream {
            let last_unknown = self.unknown.last() == Some(&(n - 1));
            let recorded = (!last_unknown).then_some(self.timestamps[n - 1]);
            if let Some(ts) = newest(recorded, commit_timestamp) {
                self.timestamps[n - 1] = ts;
                if last_unknown {
                    self.unknown.pop();
                }
            }
            return;
        }
        self.keys.push(key);
        self.upstreams.push(upstream);
        self.timestamps.push(commit_timestamp.unwrap_or(0));
        if commit_timestamp.is_none() {
            self.unknown.push(n);
        }
    }

    fn reserve(&mut self, additional: usize) {
        self.keys.reserve(additional);
        self.upstreams.reserve(additional);
        self.timestamps.reserve(additional);
    }

    /// The timestamps' validity (`None`: all known).
    fn nulls(&self) -> Option<NullBuffer> {
        if self.unknown.is_empty() {
            return None;
        }
        let mut valid = BooleanBufferBuilder::new(self.keys.len());
        valid.append_n(self.keys.len(), true);
        for i in &self.unknown {
            valid.set_bit(*i, false);
        }
        Some(NullBuffer::new(valid.finish()))
    }

    /// The key, `_upstream` dictionary key and timestamp columns, moved into arrays.
    fn into_arrays(self, key_type: KeyType) -> (ArrayRef, Int32Array, TimestampMicrosecondArray) {
        let nulls = self.nulls();
        let keys: ArrayRef = match key_type {
            KeyType::Int32 => Arc::new(
                self.keys
                    .iter()
                    .map(|v| i32::try_from(*v).ok())
                    .collect::<Int32Array>(),
            ),
            _ => Arc::new(Int64Array::new(ScalarBuffer::from(self.keys), None)),
        };
        let upstreams = Int32Array::new(ScalarBuffer::from(self.upstreams), None);
        let timestamps = TimestampMicrosecondArray::new(ScalarBuffer::from(self.timestamps), nulls);
        (keys, upstreams, timestamps)
    }
}

impl Entries {
    fn len(&self) -> usize {
        match self {
            Entries::Int(rows) => rows.keys.len(),
            Entries::Parts(m) => m.len(),
        }
    }
}

/// One key column of the output from the general map's values.
fn key_array<'a>(
    key_type: KeyType,
    values: impl Iterator<Item = Option<&'a KeyValue>>,
) -> ArrayRef {
    match key_type {
        KeyType::Int64 => Arc::new(
            values
                .map(|v| match v {
                    Some(KeyValue::Int64(v)) => Some(*v),
                    _ => None,
                })
                .collect::<Int64Array>(),
        ),
        KeyType::Int32 => Arc::new(
            values
                .map(|v| match v {
                    Some(KeyValue::Int64(v)) => i32::try_from(*v).ok(),
                    _ => None,
                })
                .collect::<Int32Array>(),
        ),
        KeyType::Utf8 => Arc::new(
            values
                .map(|v| match v {
                    Some(KeyValue::Utf8(v)) => Some(v.as_str()),
                    _ => None,
                })
                .collect::<StringArray>(),
        ),
    }
}

/// Checks a key against the key columns: as many values, each of the column's type.
fn check_key(columns: &[KeyColumn], key: &[KeyValue]) -> Result<(), String> {
    let matches =
        key.len() == columns.len() && key.iter().zip(columns).all(|(v, c)| v.fits(c.key_type));
    if matches {
        return Ok(());
    }
    let values: Vec<String> = key
        .iter()
        .map(|v| format!("{v} ({})", v.key_type()))
        .collect();
    let columns: Vec<String> = columns.iter().map(ToString::to_string).collect();
    Err(format!(
        "key [{}] does not match the key columns [{}]",
        values.join(", "),
        columns.join(", ")
    ))
}

/// Keeps the newer of the recorded and the new commit timestamp.
fn upsert<K: std::hash::Hash + Eq>(map: &mut Map<K>, key: K, commit_timestamp: Option<i64>) {
    match map.entry(key) {
        Entry::Occupied(mut e) => {
            let ts = e.get_mut();
            *ts = newest(*ts, commit_timestamp);
        }
        Entry::Vacant(e) => {
            e.insert(commit_timestamp);
        }
    }
}

/// The affected keys of one batch: the `derive` output being built.
///
/// Each key is recorded with its cause: the upstream whose change caused it and that
/// change's commit timestamp. The host folds the output into one row per key (with
/// every causing upstream and the newest timestamp), so recording a key twice is
/// harmless: one-column integer keys are appended as they come (a key recorded again
/// right after itself for the same upstream, like the two images of an update, is
/// merged), other key shapes keep each (key, upstream) pair once. Keys whose value is
/// null are skipped: a deleted or unmatched join side can have a null foreign key, and
/// a null key affects nothing.
#[derive(Debug, Clone)]
pub struct Keys {
    columns: Vec<KeyColumn>,
    /// Known upstream names; `_upstream` values index into it.
    upstreams: Vec<String>,
    /// When set, `_upstream` must be one of `upstreams`.
    closed: bool,
    /// (key, upstream index) -> newest commit timestamp, in first-recorded order.
    entries: Entries,
    /// Index of the last upstream looked up: the change rows of one upstream come in
    /// a run, so it is usually the next one too.
    last_upstream: usize,
}

impl Keys {
    /// An empty builder for the given key columns, accepting any upstream name.
    pub fn new(columns: &[KeyColumn]) -> Result<Keys, String> {
        if columns.is_empty() {
            return Err("the pipeline declares no key columns (Pipeline::KEYS is empty)".into());
        }
        for (i, c) in columns.iter().enumerate() {
            if c.name.is_empty() {
                return Err("a key column has an empty name".into());
            }
            if c.name == UPSTREAM_COLUMN || c.name == COMMIT_TIMESTAMP_COLUMN {
                return Err(format!(
                    "key column '{}' clashes with an output column the SDK adds",
                    c.name
                ));
            }
            if columns[..i].iter().any(|o| o.name == c.name) {
                return Err(format!("key column '{}' is declared twice", c.name));
            }
        }
        Ok(Keys {
            columns: columns.to_vec(),
            upstreams: Vec::new(),
            closed: false,
            entries: match columns {
                [c] if c.key_type != KeyType::Utf8 => Entries::Int(IntRows::default()),
                _ => Entries::Parts(Map::default()),
            },
            last_upstream: 0,
        })
    }

    /// An empty builder for the given key columns that accepts only the batch's
    /// upstreams as causes. This is what `derive` receives.
    pub fn for_batch(columns: &[KeyColumn], batch: &Batch) -> Result<Keys, String> {
        let mut keys = Keys::new(columns)?;
        keys.upstreams = batch.upstream_names().map(str::to_string).collect();
        keys.closed = true;
        Ok(keys)
    }

    /// The key columns.
    pub fn columns(&self) -> &[KeyColumn] {
        &self.columns
    }

    /// Number of (key, upstream) entries of the output so far (see [`Keys`] for when a
    /// key recorded twice counts once).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no key was recorded.
    pub fn is_empty(&self) -> bool {
        self.entries.len() == 0
    }

    /// Records a key caused by a change row: `_upstream` and `_commit_timestamp` come
    /// from the row. A null key (or key part) is skipped.
    pub fn add_from(&mut self, row: &Row<'_>, key: impl IntoKey) -> Result<(), String> {
        self.add(row.upstream(), row.commit_timestamp(), key)
    }

    /// Records a key caused by a change of `upstream` committed at `commit_timestamp`
    /// (microseconds since the epoch, UTC), e.g. a key found through a lookup. A null
    /// key (or key part) is skipped.
    pub fn add(
        &mut self,
        upstream: &str,
        commit_timestamp: Option<i64>,
        key: impl IntoKey,
    ) -> Result<(), String> {
        let Some(key) = key.into_parts() else {
            return Ok(());
        };
        check_key(&self.columns, key.as_slice())?;
        let upstream = self.upstream_index(upstream)?;
        self.insert(upstream, commit_timestamp, key);
        Ok(())
    }

    /// Records the key of each change row of one upstream: the n-th key was caused by
    /// the n-th row of `changes` (as [`Keys::add_from`] with that row). Give exactly
    /// one key per row; null keys are skipped. The fast way to record a column of keys:
    /// the upstream and the commit timestamps are looked up once, not per row.
    ///
    /// ```
    /// # use dlink_plugin_sdk::{Batch, Keys};
    /// # fn derive(batch: &Batch, keys: &mut Keys) -> Result<(), String> {
    /// for changes in batch.upstreams() {
    ///     keys.add_each(changes, changes.i64_column("id")?)?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn add_each<K: IntoKey>(
        &mut self,
        changes: &Changes,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<(), String> {
        let upstream = self.upstream_index(changes.name())?;
        let timestamps = changes.commit_timestamps();
        if let Entries::Int(rows) = &mut self.entries {
            rows.reserve(timestamps.len());
        }
        let mut given = 0;
        for key in keys {
            let Some(ts) = timestamps.get(given) else {
                return Err(format!(
                    "add_each: more keys than the {} change rows of upstream '{}'; give one \
                     key per change row",
                    timestamps.len(),
                    changes.name()
                ));
            };
            given += 1;
            if let Some(key) = key.into_parts() {
                check_key(&self.columns, key.as_slice())?;
                self.insert(upstream, *ts, key);
            }
        }
        if given != timestamps.len() {
            return Err(format!(
                "add_each: {given} keys for the {} change rows of upstream '{}'; give one key \
                 per change row",
                timestamps.len(),
                changes.name()
            ));
        }
        Ok(())
    }

    /// Records a key that passed [`check_key`]; `upstream` indexes `self.upstreams`.
    fn insert(&mut self, upstream: usize, commit_timestamp: Option<i64>, key: KeyParts) {
        match (&mut self.entries, key) {
            (Entries::Int(rows), KeyParts::One(KeyValue::Int64(v))) => {
                // Fewer than 2^31 upstreams: the batch's names are in memory.
                rows.push(v, upstream as i32, commit_timestamp)
            }
            (Entries::Parts(map), key) => upsert(map, (key, upstream), commit_timestamp),
            // An integer column only gets one integer value past check_key.
            (Entries::Int(_), _) => {}
        }
    }

    fn upstream_index(&mut self, upstream: &str) -> Result<usize, String> {
        if self
            .upstreams
            .get(self.last_upstream)
            .is_some_and(|u| u == upstream)
        {
            return Ok(self.last_upstream);
        }
        if let Some(i) = self.upstreams.iter().position(|u| u == upstream) {
            self.last_upstream = i;
            return Ok(i);
        }
        if self.closed {
            return Err(format!(
                "'{upstream}' is not an upstream of this pipeline (upstreams: {}); a key's \
                 _upstream must name the upstream whose change caused it",
                self.upstreams.join(", ")
            ));
        }
        self.upstreams.push(upstream.to_string());
        Ok(self.upstreams.len() - 1)
    }

    /// The output schema: the key columns (non-null), `_upstream` (utf8, dictionary
    /// encoded, non-null) and
    /// `_commit_timestamp` (timestamp[us, UTC], nullable).
    pub fn schema(&self) -> SchemaRef {
        let mut fields: Vec<Field> = self
            .columns
            .iter()
            .map(|c| Field::new(c.name, c.key_type.data_type(), false))
            .collect();
        fields.push(Field::new(UPSTREAM_COLUMN, upstream_type(), false));
        fields.push(Field::new(
            COMMIT_TIMESTAMP_COLUMN,
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            true,
        ));
        Arc::new(Schema::new(fields))
    }

    /// The recorded keys as one record batch, in first-recorded order.
    pub fn to_record_batch(&self) -> Result<RecordBatch, String> {
        self.clone().into_record_batch()
    }

    /// [`Keys::to_record_batch`] without copying the recorded columns.
    pub fn into_record_batch(self) -> Result<RecordBatch, String> {
        let schema = self.schema();
        let names = StringArray::from_iter_values(self.upstreams.iter());
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.columns.len() + 2);
        let (indexes, timestamps) = match self.entries {
            Entries::Int(rows) => {
                let key_type = self.columns.first().map_or(KeyType::Int64, |c| c.key_type);
                let (keys, indexes, timestamps) = rows.into_arrays(key_type);
                columns.push(keys);
                (indexes, timestamps)
            }
            Entries::Parts(map) => {
                for (i, column) in self.columns.iter().enumerate() {
                    let values = map.keys().map(|(key, _)| key.as_slice().get(i));
                    columns.push(key_array(column.key_type, values));
                }
                let indexes = map
                    .keys()
                    .map(|(_, u)| i32::try_from(*u).unwrap_or(i32::MAX))
                    .collect::<Int32Array>();
                (indexes, map.values().copied().collect())
            }
        };
        // `_upstream` as a dictionary over the upstream names: a few bytes per key.
        let upstreams = DictionaryArray::<Int32Type>::try_new(indexes, Arc::new(names))
            .map_err(|e| format!("cannot build the _upstream column: {e}"))?;
        columns.push(Arc::new(upstreams));
        columns.push(Arc::new(timestamps.with_timezone("UTC")));
        RecordBatch::try_new(schema, columns)
            .map_err(|e| format!("cannot build the affected-keys record batch: {e}"))
    }

    /// The recorded keys as one Arrow IPC stream: the `derive` output. No record batch
    /// is written when there are no keys (schema and end-of-stream marker only).
    pub fn to_ipc(&self) -> Result<Vec<u8>, String> {
        self.clone().into_ipc()
    }

    /// [`Keys::to_ipc`] without copying the recorded columns (what the component
    /// returns).
    pub fn into_ipc(self) -> Result<Vec<u8>, String> {
        let schema = self.schema();
        let error = |e: arrow_schema::ArrowError| format!("cannot write the affected keys: {e}");
        // Room for the columns and the framing: the stream is written without regrowing.
        let capacity = 4096 + self.len() * (self.columns.len() * 8 + 12) * 9 / 8;
        let mut writer =
            StreamWriter::try_new(Vec::with_capacity(capacity), &schema).map_err(error)?;
        if !self.is_empty() {
            writer.write(&self.into_record_batch()?).map_err(error)?;
        }
        writer.finish().map_err(error)?;
        writer.into_inner().map_err(error)
    }
}
