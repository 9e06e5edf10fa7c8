//! Tables of rows (the host's columns, or decoded Arrow IPC streams), with by-name typed
//! getters.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type, UInt8Type,
};
use arrow_array::{
    Array, ArrayRef, LargeStringArray, PrimitiveArray, RecordBatch, StringArray, StringViewArray,
};
use arrow_ipc::reader::StreamReader;
use arrow_schema::{DataType, SchemaRef};

/// Rows as Arrow record batches: the result of a lookup, or the data part of an
/// upstream's [`Changes`](crate::Changes).
///
/// An empty stream (zero bytes) is a table with no schema and no rows; its column
/// getters return empty vectors whatever the column name.
#[derive(Debug, Clone)]
pub struct Table {
    /// Names the data in error messages, e.g. `upstream 'spmaster'`.
    source: String,
    schema: Option<SchemaRef>,
    batches: Vec<RecordBatch>,
    len: usize,
}

impl Table {
    /// Decodes an Arrow IPC stream. `source` names the data in error messages (for
    /// example `upstream 'spmaster'`); zero bytes give an empty table.
    pub fn from_ipc(source: impl Into<String>, bytes: &[u8]) -> Result<Table, String> {
        let source = source.into();
        if bytes.is_empty() {
            return Ok(Table::empty(source));
        }
        let reader = StreamReader::try_new(bytes, None)
            .map_err(|e| format!("{source}: cannot read the Arrow IPC stream: {e}"))?;
        let schema = reader.schema();
        let mut batches = Vec::new();
        for batch in reader {
            let batch = batch
                .map_err(|e| format!("{source}: cannot read an Arrow IPC record batch: {e}"))?;
            batches.push(batch);
        }
        Table::from_batches(source, Some(schema), batches)
    }

    /// Decodes an Arrow IPC stream it takes ownership of, without copying the column
    /// data: the arrays point into `bytes` (where a buffer is not aligned for its type,
    /// that buffer alone is copied). This is how the SDK reads the host's change rows.
    pub fn from_ipc_owned(source: impl Into<String>, bytes: Vec<u8>) -> Result<Table, String> {
        let source = source.into();
        if bytes.is_empty() {
            return Ok(Table::empty(source));
        }
        let mut buffer = arrow_buffer::Buffer::from_vec(bytes);
        let mut decoder = arrow_ipc::reader::StreamDecoder::new();
        let mut batches = Vec::new();
        let error = |e: arrow_schema::ArrowError| {
            format!("{source}: cannot read the Arrow IPC stream: {e}")
        };
        while !buffer.is_empty() {
            if let Some(batch) = decoder.decode(&mut buffer).map_err(error)? {
                batches.push(batch);
            }
        }
        decoder.finish().map_err(error)?;
        let schema = decoder.schema();
        if schema.is_none() {
            return Err(format!("{source}: the Arrow IPC stream has no schema"));
        }
        Table::from_batches(source, schema, batches)
    }

    /// Builds a table from record batches that share `schema`. Dictionary-encoded string
    /// columns are decoded to plain utf8 so the getters need not care.
    pub fn from_batches(
        source: impl Into<String>,
        schema: Option<SchemaRef>,
        batches: Vec<RecordBatch>,
    ) -> Result<Table, String> {
        let source = source.into();
        let schema = schema.or_else(|| batches.first().map(|b| b.schema()));
        let batches = batches
            .into_iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| decode_dictionaries(&source, b))
            .collect::<Result<Vec<_>, _>>()?;
        let schema = match batches.first() {
            Some(first) => Some(first.schema()),
            None => schema,
        };
        let len = batches.iter().map(RecordBatch::num_rows).sum();
        Ok(Table {
            source,
            schema,
            batches,
            len,
        })
    }

    /// A table with no schema and no rows.
    pub fn empty(source: impl Into<String>) -> Table {
        Table {
            source: source.into(),
            schema: None,
            batches: Vec::new(),
            len: 0,
        }
    }

    /// What the table holds, as used in error messages (e.g. `upstream 'spmaster'`).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The Arrow schema; `None` for an empty stream.
    pub fn schema(&self) -> Option<&SchemaRef> {
        self.schema.as_ref()
    }

    /// The decoded record batches (empty ones dropped).
    pub fn record_batches(&self) -> &[RecordBatch] {
        &self.batches
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The column names, in schema order.
    pub fn column_names(&self) -> Vec<&str> {
        match &self.schema {
            Some(schema) => schema.fields().iter().map(|f| f.name().as_str()).collect(),
            None => Vec::new(),
        }
    }

    /// True when the schema has a column `name`.
    pub fn has_column(&self, name: &str) -> bool {
        self.schema
            .as_ref()
            .is_some_and(|s| s.index_of(name).is_ok())
    }

    /// The rows, in stream order.
    pub fn rows(&self) -> TableRows<'_> {
        TableRows {
            table: self,
            batch: 0,
            index: 0,
            position: 0,
        }
    }

    /// Every value of an integer column, widened to i64 (null -> `None`).
    pub fn i64_column(&self, column: &str) -> Result<Vec<Option<i64>>, String> {
        Ok(self.i64_values(column)?.collect())
    }

    /// [`Table::i64_column`] as an iterator, without a vector of every value: the column's
    /// type is checked in every record batch first, so the iteration cannot fail.
    pub fn i64_values(
        &self,
        column: &str,
    ) -> Result<impl Iterator<Item = Option<i64>> + '_, String> {
        let mut columns = Vec::with_capacity(self.batches.len());
        if self.schema.is_some() {
            self.check_column(column)?;
            for batch in &self.batches {
                let ints = IntColumn::new(&self.source, column, self.array(batch, column)?)?;
                columns.push((ints, batch.num_rows()));
            }
        }
        Ok(columns
            .into_iter()
            .flat_map(|(ints, rows)| (0..rows).map(move |i| ints.get(i))))
    }

    /// Every value of a string column (null -> `None`).
    pub fn str_column(&self, column: &str) -> Result<Vec<Option<&str>>, String> {
        let mut out = Vec::with_capacity(self.len);
        if self.schema.is_none() {
            return Ok(out);
        }
        self.check_column(column)?;
        for batch in &self.batches {
            let strs = StrColumn::new(&self.source, column, self.array(batch, column)?)?;
            out.extend((0..batch.num_rows()).map(|i| strs.get(i)));
        }
        Ok(out)
    }

    fn check_column(&self, column: &str) -> Result<(), String> {
        if self.has_column(column) {
            Ok(())
        } else {
            Err(self.missing_column(column))
        }
    }

    fn missing_column(&self, column: &str) -> String {
        let hint = if self.source.starts_with("upstream") {
            crate::NOT_READ_HINT
        } else {
            ""
        };
        format!(
            "{}: no column '{column}' (columns: {}){hint}",
            self.source,
            self.column_names().join(", ")
        )
    }

    fn array<'a>(&self, batch: &'a RecordBatch, column: &str) -> Result<&'a ArrayRef, String> {
        batch
            .column_by_name(column)
            .ok_or_else(|| self.missing_column(column))
    }
}

/// Iterator over the rows of a [`Table`].
#[derive(Debug, Clone)]
pub struct TableRows<'a> {
    table: &'a Table,
    batch: usize,
    index: usize,
    position: usize,
}

impl<'a> Iterator for TableRows<'a> {
    type Item = TableRow<'a>;

    fn next(&mut self) -> Option<TableRow<'a>> {
        let batch = self.table.batches.get(self.batch)?;
        let row = TableRow {
            table: self.table,
            batch,
            index: self.index,
            position: self.position,
        };
        self.position += 1;
        self.index += 1;
        if self.index >= batch.num_rows() {
            self.batch += 1;
            self.index = 0;
        }
        Some(row)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.table.len - self.position;
        (left, Some(left))
    }
}

impl ExactSizeIterator for TableRows<'_> {}

/// One row of a [`Table`]. Getters look the column up by name.
#[derive(Debug, Clone, Copy)]
pub struct TableRow<'a> {
    table: &'a Table,
    batch: &'a RecordBatch,
    index: usize,
    position: usize,
}

impl<'a> TableRow<'a> {
    /// The row's position in its table (0-based, across record batches).
    pub fn position(&self) -> usize {
        self.position
    }

    /// The value of an integer column (Int8..Int64, UInt8..UInt32), widened to i64;
    /// `None` when null.
    pub fn i64(&self, column: &str) -> Result<Option<i64>, String> {
        let array = self.table.array(self.batch, column)?;
        Ok(IntColumn::new(&self.table.source, column, array)?.get(self.index))
    }

    /// The value of a string column (Utf8, LargeUtf8, Utf8View); `None` when null.
    pub fn str(&self, column: &str) -> Result<Option<&'a str>, String> {
        let array = self.table.array(self.batch, column)?;
        Ok(StrColumn::new(&self.table.source, column, array)?.get(self.index))
    }

    /// True when the column is null in this row.
    pub fn is_null(&self, column: &str) -> Result<bool, String> {
        Ok(self.table.array(self.batch, column)?.is_null(self.index))
    }

    /// Raw access for other types: the column's array in this row's record batch and
    /// the row's index in that array.
    pub fn array(&self, column: &str) -> Result<(&'a ArrayRef, usize), String> {
        Ok((self.table.array(self.batch, column)?, self.index))
    }
}

/// An integer column of any width that fits i64.
pub(crate) enum IntColumn<'a> {
    I64(&'a PrimitiveArray<Int64Type>),
    I32(&'a PrimitiveArray<Int32Type>),
    I16(&'a PrimitiveArray<Int16Type>),
    I8(&'a PrimitiveArray<Int8Type>),
    U32(&'a PrimitiveArray<UInt32Type>),
    U16(&'a PrimitiveArray<UInt16Type>),
    U8(&'a PrimitiveArray<UInt8Type>),
    Null,
}

impl<'a> IntColumn<'a> {
    pub(crate) fn new(source: &str, column: &str, array: &'a ArrayRef) -> Result<Self, String> {
        let col = match array.data_type() {
            DataType::Int64 => array.as_primitive_opt().map(IntColumn::I64),
            DataType::Int32 => array.as_primitive_opt().map(IntColumn::I32),
            DataType::Int16 => array.as_primitive_opt().map(IntColumn::I16),
            DataType::Int8 => array.as_primitive_opt().map(IntColumn::I8),
            DataType::UInt32 => array.as_primitive_opt().map(IntColumn::U32),
            DataType::UInt16 => array.as_primitive_opt().map(IntColumn::U16),
            DataType::UInt8 => array.as_primitive_opt().map(IntColumn::U8),
            DataType::Null => Some(IntColumn::Null),
            _ => None,
        };
        col.ok_or_else(|| {
            format!(
                "{source}: column '{column}' is {}, not an integer column that fits int64",
                array.data_type()
            )
        })
    }

    pub(crate) fn get(&self, i: usize) -> Option<i64> {
        fn at<T>(a: &PrimitiveArray<T>, i: usize) -> Option<i64>
        where
            T: arrow_array::ArrowPrimitiveType,
            T::Native: Into<i64>,
        {
            if i >= a.len() || a.is_null(i) {
                None
            } else {
                Some(a.value(i).into())
            }
        }
        match self {
            IntColumn::I64(a) => at(a, i),
            IntColumn::I32(a) => at(a, i),
            IntColumn::I16(a) => at(a, i),
            IntColumn::I8(a) => at(a, i),
            IntColumn::U32(a) => at(a, i),
            IntColumn::U16(a) => at(a, i),
            IntColumn::U8(a) => at(a, i),
            IntColumn::Null => None,
        }
    }
}

/// A string column in any of Arrow's plain string layouts.
pub(crate) enum StrColumn<'a> {
    Utf8(&'a StringArray),
    Large(&'a LargeStringArray),
    View(&'a StringViewArray),
    Null,
}

impl<'a> StrColumn<'a> {
    pub(crate) fn new(source: &str, column: &str, array: &'a ArrayRef) -> Result<Self, String> {
        let col = match array.data_type() {
            DataType::Utf8 => array.as_string_opt().map(StrColumn::Utf8),
            DataType::LargeUtf8 => array.as_string_opt().map(StrColumn::Large),
            DataType::Utf8View => array.as_string_view_opt().map(StrColumn::View),
            DataType::Null => Some(StrColumn::Null),
            _ => None,
        };
        col.ok_or_else(|| {
            format!(
                "{source}: column '{column}' is {}, not a string column",
                array.data_type()
            )
        })
    }

    pub(crate) fn get(&self, i: usize) -> Option<&'a str> {
        match self {
            StrColumn::Utf8(a) if i < a.len() && a.is_valid(i) => Some(a.value(i)),
            StrColumn::Large(a) if i < a.len() && a.is_valid(i) => Some(a.value(i)),
            StrColumn::View(a) if i < a.len() && a.is_valid(i) => Some(a.value(i)),
            _ => None,
        }
    }
}

/// Replaces dictionary-encoded string columns by plain utf8 ones.
fn decode_dictionaries(source: &str, batch: RecordBatch) -> Result<RecordBatch, String> {
    let schema = batch.schema();
    let is_string_dictionary = |t: &DataType| {
        matches!(t, DataType::Dictionary(_, v)
            if matches!(**v, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View))
    };
    if !schema
        .fields()
        .iter()
        .any(|f| is_string_dictionary(f.data_type()))
    {
        return Ok(batch);
    }
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (field, array) in schema.fields().iter().zip(batch.columns()) {
        if !is_string_dictionary(field.data_type()) {
            fields.push(field.clone());
            columns.push(array.clone());
            continue;
        }
        let dictionary = array.as_any_dictionary_opt().ok_or_else(|| {
            format!(
                "{source}: column '{}' is not a dictionary array",
                field.name()
            )
        })?;
        let values = StrColumn::new(source, field.name(), dictionary.values())?;
        let keys = dictionary.normalized_keys();
        let decoded: StringArray = (0..array.len())
            .map(|i| {
                if array.is_null(i) {
                    None
                } else {
                    keys.get(i).and_then(|&k| values.get(k))
                }
            })
            .collect();
        fields.push(Arc::new(
            field
                .as_ref()
                .clone()
                .with_data_type(DataType::Utf8)
                .with_nullable(true),
        ));
        columns.push(Arc::new(decoded));
    }
    let schema = Arc::new(arrow_schema::Schema::new_with_metadata(
        fields,
        schema.metadata().clone(),
    ));
    RecordBatch::try_new(schema, columns)
        .map_err(|e| format!("{source}: cannot decode dictionary columns: {e}"))
}
