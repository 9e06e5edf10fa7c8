//! Contract 0.3's tables (`record-batch`: each Arrow buffer one WIT list) to Arrow
//! record batches and back. Arrays are built on the lists the canonical ABI filled,
//! without a copy (text offsets and decimals aside), and checked before use.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    ByteArrayType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int16Type, Int32Type,
    Int64Type, Int8Type, TimestampMicrosecondType,
};
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float32Array,
    Float64Array, GenericByteArray, Int16Array, Int32Array, Int64Array, Int8Array, PrimitiveArray,
    RecordBatch, RecordBatchOptions, StringArray, TimestampMicrosecondArray,
};
use arrow_buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::bindings::dlink::pipeline::types as w;

/// Rows of `batches` (all of `schema`) as one contract record batch.
pub fn to_wit(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<w::RecordBatch, String> {
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (i, field) in schema.fields().iter().enumerate() {
        let parts: Vec<&dyn Array> = batches.iter().map(|b| b.column(i).as_ref()).collect();
        let array = match parts.as_slice() {
            [] => arrow_array::new_empty_array(field.data_type()),
            [one] => one.slice(0, one.len()),
            many => arrow_select::concat::concat(many).map_err(|e| e.to_string())?,
        };
        columns.push(column(field.name(), &array)?);
    }
    Ok(w::RecordBatch {
        num_rows: u32::try_from(rows)
            .map_err(|_| format!("{rows} rows: more than a record batch holds"))?,
        columns,
    })
}

/// One array as a contract column named `name`.
pub fn column(name: &str, a: &ArrayRef) -> Result<w::Column, String> {
    let validity = a
        .logical_nulls()
        .filter(|n| n.null_count() > 0)
        .map(|n| bits(n.inner()));
    let values = match a.data_type() {
        DataType::Boolean => w::Values::Boolean(bits(a.as_boolean().values())),
        DataType::Int8 => w::Values::Int8(prim(a.as_primitive::<Int8Type>())),
        DataType::Int16 => w::Values::Int16(prim(a.as_primitive::<Int16Type>())),
        DataType::Int32 => w::Values::Int32(prim(a.as_primitive::<Int32Type>())),
        DataType::Int64 => w::Values::Int64(prim(a.as_primitive::<Int64Type>())),
        DataType::Float32 => w::Values::Float32(prim(a.as_primitive::<Float32Type>())),
        DataType::Float64 => w::Values::Float64(prim(a.as_primitive::<Float64Type>())),
        DataType::Date32 => w::Values::Date32(prim(a.as_primitive::<Date32Type>())),
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            let v = prim(a.as_primitive::<TimestampMicrosecondType>());
            if tz.is_some() {
                w::Values::Timestamp(v)
            } else {
                w::Values::TimestampNtz(v)
            }
        }
        DataType::Utf8 => w::Values::Utf8(var_width(a.as_string::<i32>())),
        DataType::Binary => w::Values::Binary(var_width(a.as_binary::<i32>())),
        DataType::Decimal128(precision, scale) => {
            let d = a.as_primitive::<Decimal128Type>();
            let mut values = Vec::with_capacity(d.len() * 16);
            for v in d.values().iter() {
                values.extend_from_slice(&v.to_le_bytes());
            }
            w::Values::Decimal(w::DecimalValues {
                precision: *precision,
                scale: *scale,
                values,
            })
        }
        _ => w::Values::ArrowIpc(ipc_column(name, a).map_err(|e| e.to_string())?),
    };
    Ok(w::Column {
        name: name.to_string(),
        values,
        validity,
    })
}

fn ipc_column(name: &str, a: &ArrayRef) -> Result<Vec<u8>, ArrowError> {
    let schema = Arc::new(Schema::new(vec![Field::new(
        name,
        a.data_type().clone(),
        true,
    )]));
    let batch = RecordBatch::try_new(schema.clone(), vec![a.clone()])?;
    let mut w = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &schema)?;
    w.write(&batch)?;
    w.finish()?;
    w.into_inner()
}

fn prim<T: arrow_array::ArrowPrimitiveType>(a: &PrimitiveArray<T>) -> Vec<T::Native> {
    a.values().to_vec()
}

/// A bitmap from offset 0, as bytes.
fn bits(b: &BooleanBuffer) -> Vec<u8> {
    if b.offset() == 0 {
        b.inner().as_slice()[..b.len().div_ceil(8)].to_vec()
    } else {
        b.sliced().as_slice().to_vec()
    }
}

fn var_width<T: ByteArrayType<Offset = i32>>(a: &GenericByteArray<T>) -> w::VarWidth {
    let offsets = a.value_offsets();
    let (first, last) = (offsets[0], offsets[offsets.len() - 1]);
    let data = a.value_data()[first as usize..last as usize].to_vec();
    let offsets = if first == 0 {
        offsets.to_vec()
    } else {
        offsets.iter().map(|o| o - first).collect()
    };
    w::VarWidth { offsets, data }
}

/// A contract record batch as Arrow, checked; `source` names it in errors.
pub fn from_wit(source: &str, b: w::RecordBatch) -> Result<RecordBatch, String> {
    let rows = b.num_rows as usize;
    let mut fields = Vec::with_capacity(b.columns.len());
    let mut arrays = Vec::with_capacity(b.columns.len());
    for c in b.columns {
        let nullable = c.validity.is_some();
        let a = array(&c.name, c.values, c.validity, rows)
            .map_err(|e| format!("{source}: column '{}': {e}", c.name))?;
        fields.push(Field::new(c.name, a.data_type().clone(), nullable));
        arrays.push(a);
    }
    RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        arrays,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
    .map_err(|e| format!("{source}: {e}"))
}

fn array(
    name: &str,
    values: w::Values,
    validity: Option<Vec<u8>>,
    rows: usize,
) -> Result<ArrayRef, String> {
    let nulls = match validity {
        None => None,
        Some(bytes) if bytes.len() >= rows.div_ceil(8) => Some(NullBuffer::new(
            BooleanBuffer::new(Buffer::from_vec(bytes), 0, rows),
        )),
        Some(bytes) => {
            return Err(format!(
                "its validity holds {} bytes for {rows} rows",
                bytes.len()
            ))
        }
    };
    let len = |n: usize| {
        if n == rows {
            Ok(())
        } else {
            Err(format!("{n} values for {rows} rows"))
        }
    };
    let e = |e: ArrowError| e.to_string();
    Ok(match values {
        w::Values::Boolean(bytes) => {
            if bytes.len() < rows.div_ceil(8) {
                return Err(format!("{} bytes of booleans for {rows} rows", bytes.len()));
            }
            Arc::new(BooleanArray::new(
                BooleanBuffer::new(Buffer::from_vec(bytes), 0, rows),
                nulls,
            ))
        }
        w::Values::Int8(v) => {
            len(v.len())?;
            Arc::new(Int8Array::try_new(ScalarBuffer::from(v), nulls).map_err(e)?)
        }
        w::Values::Int16(v) => {
            len(v.len())?;
            Arc::new(Int16Array::try_new(ScalarBuffer::from(v), nulls).map_err(e)?)
        }
        w::Values::Int32(v) => {
            len(v.len())?;
            Arc::new(Int32Array::try_new(ScalarBuffer::from(v), nulls).map_err(e)?)
        }
        w::Values::Int64(v) => {
            len(v.len())?;
            Arc::new(Int64Array::try_new(ScalarBuffer::from(v), nulls).map_err(e)?)
        }
        w::Values::Float32(v) => {
            len(v.len())?;
            Arc::new(Float32Array::try_new(ScalarBuffer::from(v), nulls).map_err(e)?)
        }
        w::Values::Float64(v) => {
            len(v.len())?;
            Arc::new(Float64Array::try_new(ScalarBuffer::from(v), nulls).map_err(e)?)
        }
        w::Values::Date32(v) => {
            len(v.len())?;
            Arc::new(Date32Array::try_new(ScalarBuffer::from(v), nulls).map_err(e)?)
        }
        w::Values::Timestamp(v) => {
            len(v.len())?;
            Arc::new(
                TimestampMicrosecondArray::try_new(ScalarBuffer::from(v), nulls)
                    .map_err(e)?
                    .with_timezone("UTC"),
            )
        }
        w::Values::TimestampNtz(v) => {
            len(v.len())?;
            Arc::new(TimestampMicrosecondArray::try_new(ScalarBuffer::from(v), nulls).map_err(e)?)
        }
        w::Values::Utf8(vw) => {
            let offsets = offsets(vw.offsets, vw.data.len(), rows)?;
            Arc::new(StringArray::try_new(offsets, Buffer::from_vec(vw.data), nulls).map_err(e)?)
        }
        w::Values::Binary(vw) => {
            let offsets = offsets(vw.offsets, vw.data.len(), rows)?;
            Arc::new(BinaryArray::try_new(offsets, Buffer::from_vec(vw.data), nulls).map_err(e)?)
        }
        w::Values::Decimal(d) => {
            if d.values.len() % 16 != 0 {
                return Err(format!("{} bytes of decimals", d.values.len()));
            }
            len(d.values.len() / 16)?;
            let values: Vec<i128> = d
                .values
                .chunks_exact(16)
                .map(|c| {
                    let mut b = [0u8; 16];
                    b.copy_from_slice(c);
                    i128::from_le_bytes(b)
                })
                .collect();
            Arc::new(
                Decimal128Array::try_new(ScalarBuffer::from(values), nulls)
                    .and_then(|a| a.with_precision_and_scale(d.precision, d.scale))
                    .map_err(e)?,
            )
        }
        w::Values::ArrowIpc(bytes) => {
            let t = crate::Table::from_ipc_owned(format!("column '{name}'"), bytes)?;
            let parts: Vec<&dyn Array> = t
                .record_batches()
                .iter()
                .filter(|b| b.num_columns() == 1)
                .map(|b| b.column(0).as_ref())
                .collect();
            let a = match parts.as_slice() {
                [] => return Err("its Arrow IPC stream holds no column".into()),
                [one] => one.slice(0, one.len()),
                many => arrow_select::concat::concat(many).map_err(e)?,
            };
            len(a.len())?;
            a
        }
    })
}

fn offsets(v: Vec<i32>, data: usize, rows: usize) -> Result<OffsetBuffer<i32>, String> {
    if v.len() != rows + 1 {
        return Err(format!("{} offsets for {rows} rows", v.len()));
    }
    if v[0] < 0 || v.windows(2).any(|p| p[1] < p[0]) || v[rows] as usize > data {
        return Err("offsets out of order or past the data".into());
    }
    Ok(OffsetBuffer::new(ScalarBuffer::from(v)))
}
