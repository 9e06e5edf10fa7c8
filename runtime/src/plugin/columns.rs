//! Contract 0.3's tables: Arrow arrays as the WIT `record-batch` (each buffer one
//! list, nothing encoded) and back. What comes back is a guest's, so every length,
//! offset and byte of text is checked before an array is built on it.

use std::sync::Arc;

use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Date32Array, Decimal128Array,
    Float32Array, Float64Array, Int16Array, Int32Array, Int64Array, Int8Array, RecordBatch,
    RecordBatchOptions, StringArray, TimestampMicrosecondArray,
};
use deltalake::arrow::buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use deltalake::arrow::compute::{cast, concat};
use deltalake::arrow::datatypes::{
    ArrowPrimitiveType, DataType, Field, Schema, SchemaRef, TimeUnit,
};
use deltalake::arrow::error::ArrowError;

use super::contract::v0_3::dlink::pipeline::types as w;

/// The name a column's type has in the contract (`field.data-type`).
pub fn type_name(t: &DataType) -> String {
    match t {
        DataType::Boolean => "boolean".into(),
        DataType::Int8 => "int8".into(),
        DataType::Int16 => "int16".into(),
        DataType::Int32 => "int32".into(),
        DataType::Int64 => "int64".into(),
        DataType::Float32 => "float32".into(),
        DataType::Float64 => "float64".into(),
        DataType::Date32 => "date32".into(),
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => "timestamp".into(),
        DataType::Timestamp(TimeUnit::Microsecond, None) => "timestamp-ntz".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "utf8".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "binary".into(),
        DataType::Decimal128(p, s) => format!("decimal({p},{s})"),
        other => other.to_string(),
    }
}

/// A schema's fields as the contract lists them.
pub fn fields(schema: &Schema) -> Vec<w::Field> {
    schema
        .fields()
        .iter()
        .map(|f| w::Field {
            name: f.name().clone(),
            data_type: type_name(f.data_type()),
            nullable: f.is_nullable(),
        })
        .collect()
}

/// The rows of `batches` (all of one schema), only the columns `keep` selects (all
/// when `None`), as one record batch of the contract: each column's buffers copied
/// once into its lists.
pub fn to_wit(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    keep: Option<&[usize]>,
) -> Result<w::RecordBatch, ArrowError> {
    to_wit_coded(schema, batches, keep, None)
}

/// [`to_wit`] with column `change_type` (the change rows' `_change_type`) sent as int8
/// codes: 0 insert, 1 update_preimage, 2 update_postimage, 3 delete.
pub fn to_wit_coded(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    keep: Option<&[usize]>,
    change_type: Option<usize>,
) -> Result<w::RecordBatch, ArrowError> {
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let all: Vec<usize>;
    let keep = match keep {
        Some(k) => k,
        None => {
            all = (0..schema.fields().len()).collect();
            &all
        }
    };
    let mut columns = Vec::with_capacity(keep.len());
    for &i in keep {
        let field = schema.field(i);
        let parts: Vec<&ArrayRef> = batches.iter().map(|b| b.column(i)).collect();
        if Some(i) == change_type {
            columns.push(w::Column {
                name: field.name().clone(),
                values: w::Values::Int8(change_codes(&parts)?),
                validity: None,
            });
            continue;
        }
        columns.push(match parts.as_slice() {
            [] => column(
                field.name(),
                &deltalake::arrow::array::new_empty_array(field.data_type()),
            )?,
            [one] => column(field.name(), one)?,
            many => match appended(field.name(), many)? {
                Some(c) => c,
                // A type not appended part by part: one concatenation first.
                None => {
                    let refs: Vec<&dyn Array> = many.iter().map(|a| a.as_ref()).collect();
                    column(field.name(), &concat(&refs)?)?
                }
            },
        });
    }
    Ok(w::RecordBatch {
        num_rows: u32::try_from(rows).map_err(|_| too_many(rows))?,
        columns,
    })
}

/// A change-type column (utf8 of any layout) as int8 codes.
fn change_codes(parts: &[&ArrayRef]) -> Result<Vec<i8>, ArrowError> {
    let mut out = Vec::with_capacity(parts.iter().map(|a| a.len()).sum());
    for a in parts {
        let plain;
        let a = match a.data_type() {
            DataType::Utf8 => a.as_string::<i32>(),
            _ => {
                plain = cast(a, &DataType::Utf8)?;
                plain.as_string::<i32>()
            }
        };
        // One pass over the offsets (the column has no nulls when it is well formed);
        // anything else is looked for again for its message.
        let (offsets, values) = (a.value_offsets(), a.value_data());
        let mut bad = a.null_count() > 0;
        out.extend(offsets.windows(2).map(|w| {
            match values.get(w[0] as usize..w[1] as usize).unwrap_or_default() {
                b"insert" => 0,
                b"update_preimage" => 1,
                b"update_postimage" => 2,
                b"delete" => 3,
                _ => {
                    bad = true;
                    -1
                }
            }
        }));
        if bad {
            let found = (0..a.len())
                .find(|i| {
                    a.is_null(*i)
                        || !matches!(
                            a.value(*i),
                            "insert" | "update_preimage" | "update_postimage" | "delete"
                        )
                })
                .map(|i| a.is_valid(i).then(|| a.value(i).to_string()));
            return Err(ArrowError::InvalidArgumentError(format!(
                "a change row with {} {:?}",
                crate::cdf::CHANGE_TYPE,
                found.flatten()
            )));
        }
    }
    Ok(out)
}

/// An upstream's change-row schema as a contract 0.3 plugin sees it: `_change_type`
/// as int8 codes.
pub fn change_codes_schema(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            if f.name() == crate::cdf::CHANGE_TYPE {
                Field::new(f.name(), DataType::Int8, false)
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The parts of one column appended straight into its lists (one copy, no
/// concatenation first), for the types a change row's columns usually have; `None`
/// for the others.
fn appended(name: &str, parts: &[&ArrayRef]) -> Result<Option<w::Column>, ArrowError> {
    use deltalake::arrow::datatypes as t;
    fn prims<T: ArrowPrimitiveType>(parts: &[&ArrayRef]) -> Vec<T::Native> {
        let mut v = Vec::with_capacity(parts.iter().map(|a| a.len()).sum());
        for a in parts {
            v.extend_from_slice(a.as_primitive::<T>().values());
        }
        v
    }
    let Some(first) = parts.first() else {
        return Ok(None);
    };
    if parts.iter().any(|a| a.data_type() != first.data_type()) {
        return Ok(None);
    }
    let values = match first.data_type() {
        DataType::Int32 => w::Values::Int32(prims::<t::Int32Type>(parts)),
        DataType::Int64 => w::Values::Int64(prims::<t::Int64Type>(parts)),
        DataType::Float64 => w::Values::Float64(prims::<t::Float64Type>(parts)),
        DataType::Date32 => w::Values::Date32(prims::<t::Date32Type>(parts)),
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => {
            w::Values::Timestamp(prims::<t::TimestampMicrosecondType>(parts))
        }
        DataType::Timestamp(TimeUnit::Microsecond, None) => {
            w::Values::TimestampNtz(prims::<t::TimestampMicrosecondType>(parts))
        }
        DataType::Utf8 => {
            let rows: usize = parts.iter().map(|a| a.len()).sum();
            let bytes: usize = parts
                .iter()
                .map(|a| {
                    let o = a.as_string::<i32>().value_offsets();
                    (o[o.len() - 1] - o[0]) as usize
                })
                .sum();
            let (mut offsets, mut data) = (Vec::with_capacity(rows + 1), Vec::with_capacity(bytes));
            offsets.push(0i32);
            for a in parts {
                let s = a.as_string::<i32>();
                let o = s.value_offsets();
                let (first, last) = (o[0], o[o.len() - 1]);
                let base = i32::try_from(data.len()).map_err(|_| {
                    ArrowError::InvalidArgumentError(format!(
                        "column '{name}': over 2 GiB of text in one call"
                    ))
                })? - first;
                data.extend_from_slice(&s.value_data()[first as usize..last as usize]);
                offsets.extend(o[1..].iter().map(|x| x + base));
            }
            w::Values::Utf8(w::VarWidth { offsets, data })
        }
        _ => return Ok(None),
    };
    let validity = if parts.iter().any(|a| a.logical_null_count() > 0) {
        let mut b =
            deltalake::arrow::array::BooleanBufferBuilder::new(parts.iter().map(|a| a.len()).sum());
        for a in parts {
            match a.logical_nulls() {
                Some(n) => b.append_buffer(n.inner()),
                None => b.append_n(a.len(), true),
            }
        }
        Some(bits(&b.finish()))
    } else {
        None
    };
    Ok(Some(w::Column {
        name: name.to_string(),
        values,
        validity,
    }))
}

fn too_many(rows: usize) -> ArrowError {
    ArrowError::InvalidArgumentError(format!(
        "{rows} rows in one call: more than a contract 0.3 record batch holds (u32)"
    ))
}

/// One array as a contract column named `name`.
pub fn column(name: &str, a: &ArrayRef) -> Result<w::Column, ArrowError> {
    let validity = a
        .logical_nulls()
        .filter(|n| n.null_count() > 0)
        .map(|n| bits(n.inner()));
    let values = match a.data_type() {
        DataType::Boolean => w::Values::Boolean(bits(a.as_boolean().values())),
        DataType::Int8 => w::Values::Int8(prim(
            a.as_primitive::<deltalake::arrow::datatypes::Int8Type>(),
        )),
        DataType::Int16 => w::Values::Int16(prim(
            a.as_primitive::<deltalake::arrow::datatypes::Int16Type>(),
        )),
        DataType::Int32 => w::Values::Int32(prim(
            a.as_primitive::<deltalake::arrow::datatypes::Int32Type>(),
        )),
        DataType::Int64 => w::Values::Int64(prim(
            a.as_primitive::<deltalake::arrow::datatypes::Int64Type>(),
        )),
        DataType::Float32 => w::Values::Float32(prim(
            a.as_primitive::<deltalake::arrow::datatypes::Float32Type>(),
        )),
        DataType::Float64 => w::Values::Float64(prim(
            a.as_primitive::<deltalake::arrow::datatypes::Float64Type>(),
        )),
        DataType::Date32 => w::Values::Date32(prim(
            a.as_primitive::<deltalake::arrow::datatypes::Date32Type>(),
        )),
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            let v = prim(a.as_primitive::<deltalake::arrow::datatypes::TimestampMicrosecondType>());
            if tz.is_some() {
                w::Values::Timestamp(v)
            } else {
                w::Values::TimestampNtz(v)
            }
        }
        DataType::Utf8 => w::Values::Utf8(var_width(a.as_string::<i32>())),
        DataType::LargeUtf8 | DataType::Utf8View => {
            let a = cast(a, &DataType::Utf8)?;
            w::Values::Utf8(var_width(a.as_string::<i32>()))
        }
        DataType::Binary => w::Values::Binary(var_width(a.as_binary::<i32>())),
        DataType::LargeBinary | DataType::BinaryView => {
            let a = cast(a, &DataType::Binary)?;
            w::Values::Binary(var_width(a.as_binary::<i32>()))
        }
        DataType::Decimal128(precision, scale) => {
            let d = a.as_primitive::<deltalake::arrow::datatypes::Decimal128Type>();
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
        _ => {
            let schema = Arc::new(Schema::new(vec![Field::new(
                name,
                a.data_type().clone(),
                true,
            )]));
            let batch = RecordBatch::try_new(schema.clone(), vec![a.clone()])?;
            w::Values::ArrowIpc(crate::ipc::encode(&schema, &[batch])?)
        }
    };
    Ok(w::Column {
        name: name.to_string(),
        values,
        validity,
    })
}

fn prim<T: ArrowPrimitiveType>(a: &deltalake::arrow::array::PrimitiveArray<T>) -> Vec<T::Native> {
    a.values().to_vec()
}

/// A bitmap from offset 0, as bytes.
fn bits(b: &BooleanBuffer) -> Vec<u8> {
    if b.offset() == 0 {
        let bytes = b.len().div_ceil(8);
        b.inner().as_slice()[..bytes].to_vec()
    } else {
        b.sliced().as_slice().to_vec()
    }
}

fn var_width<T: deltalake::arrow::datatypes::ByteArrayType<Offset = i32>>(
    a: &deltalake::arrow::array::GenericByteArray<T>,
) -> w::VarWidth {
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

/// A contract record batch as Arrow: the guest's lists checked (every column `num-rows`
/// long, offsets in bounds and ascending, text valid UTF-8) and moved into buffers
/// without a copy (text and decimals aside).
pub fn from_wit(b: w::RecordBatch) -> Result<RecordBatch, ArrowError> {
    let rows = b.num_rows as usize;
    let mut fields = Vec::with_capacity(b.columns.len());
    let mut arrays = Vec::with_capacity(b.columns.len());
    for c in b.columns {
        let (name, nullable) = (c.name, c.validity.is_some());
        let a = array_from_wit(&name, c.values, c.validity, rows)?;
        fields.push(Field::new(name, a.data_type().clone(), nullable));
        arrays.push(a);
    }
    RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        arrays,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
}

/// One contract column as an Arrow array of `rows` rows.
pub fn array_from_wit(
    name: &str,
    values: w::Values,
    validity: Option<Vec<u8>>,
    rows: usize,
) -> Result<ArrayRef, ArrowError> {
    let bad = |what: String| ArrowError::InvalidArgumentError(format!("column '{name}': {what}"));
    let nulls = match validity {
        None => None,
        Some(bytes) => {
            if bytes.len() < rows.div_ceil(8) {
                return Err(bad(format!(
                    "its validity holds {} bytes, {rows} rows need {}",
                    bytes.len(),
                    rows.div_ceil(8)
                )));
            }
            Some(NullBuffer::new(BooleanBuffer::new(
                Buffer::from_vec(bytes),
                0,
                rows,
            )))
        }
    };
    let len_check = |n: usize, per: &str| {
        if n == rows {
            Ok(())
        } else {
            Err(bad(format!("{n} {per} for {rows} rows")))
        }
    };
    let a: ArrayRef = match values {
        w::Values::Boolean(bytes) => {
            if bytes.len() < rows.div_ceil(8) {
                return Err(bad(format!(
                    "{} bytes of booleans for {rows} rows",
                    bytes.len()
                )));
            }
            let values = BooleanBuffer::new(Buffer::from_vec(bytes), 0, rows);
            Arc::new(BooleanArray::new(values, nulls))
        }
        w::Values::Int8(v) => {
            len_check(v.len(), "values")?;
            Arc::new(Int8Array::try_new(ScalarBuffer::from(v), nulls)?)
        }
        w::Values::Int16(v) => {
            len_check(v.len(), "values")?;
            Arc::new(Int16Array::try_new(ScalarBuffer::from(v), nulls)?)
        }
        w::Values::Int32(v) => {
            len_check(v.len(), "values")?;
            Arc::new(Int32Array::try_new(ScalarBuffer::from(v), nulls)?)
        }
        w::Values::Int64(v) => {
            len_check(v.len(), "values")?;
            Arc::new(Int64Array::try_new(ScalarBuffer::from(v), nulls)?)
        }
        w::Values::Float32(v) => {
            len_check(v.len(), "values")?;
            Arc::new(Float32Array::try_new(ScalarBuffer::from(v), nulls)?)
        }
        w::Values::Float64(v) => {
            len_check(v.len(), "values")?;
            Arc::new(Float64Array::try_new(ScalarBuffer::from(v), nulls)?)
        }
        w::Values::Date32(v) => {
            len_check(v.len(), "values")?;
            Arc::new(Date32Array::try_new(ScalarBuffer::from(v), nulls)?)
        }
        w::Values::Timestamp(v) => {
            len_check(v.len(), "values")?;
            Arc::new(
                TimestampMicrosecondArray::try_new(ScalarBuffer::from(v), nulls)?
                    .with_timezone("UTC"),
            )
        }
        w::Values::TimestampNtz(v) => {
            len_check(v.len(), "values")?;
            Arc::new(TimestampMicrosecondArray::try_new(
                ScalarBuffer::from(v),
                nulls,
            )?)
        }
        w::Values::Utf8(vw) => {
            let offsets = offsets(vw.offsets, vw.data.len(), rows).map_err(bad)?;
            Arc::new(StringArray::try_new(
                offsets,
                Buffer::from_vec(vw.data),
                nulls,
            )?)
        }
        w::Values::Binary(vw) => {
            let offsets = offsets(vw.offsets, vw.data.len(), rows).map_err(bad)?;
            Arc::new(BinaryArray::try_new(
                offsets,
                Buffer::from_vec(vw.data),
                nulls,
            )?)
        }
        w::Values::Decimal(d) => {
            len_check(d.values.len() / 16, "decimals")?;
            if d.values.len() % 16 != 0 {
                return Err(bad(format!(
                    "{} bytes of decimals: not a multiple of 16",
                    d.values.len()
                )));
            }
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
                Decimal128Array::try_new(ScalarBuffer::from(values), nulls)?
                    .with_precision_and_scale(d.precision, d.scale)?,
            )
        }
        w::Values::ArrowIpc(bytes) => {
            let (_, batches) = crate::ipc::decode_owned(bytes)?;
            let parts: Vec<&dyn Array> = batches
                .iter()
                .filter(|b| b.num_columns() == 1)
                .map(|b| b.column(0).as_ref())
                .collect();
            if parts.len() != batches.len() || parts.is_empty() {
                return Err(bad("its Arrow IPC stream does not hold one column".into()));
            }
            let a = concat(&parts)?;
            len_check(a.len(), "values")?;
            a
        }
    };
    Ok(a)
}

/// Offsets checked: `rows + 1` of them, from 0 or more, ascending, the last within
/// `data` bytes.
fn offsets(v: Vec<i32>, data: usize, rows: usize) -> Result<OffsetBuffer<i32>, String> {
    if v.len() != rows + 1 {
        return Err(format!(
            "{} offsets for {rows} rows (want rows + 1)",
            v.len()
        ));
    }
    if v[0] < 0 || v.windows(2).any(|p| p[1] < p[0]) {
        return Err("offsets that are negative or not ascending".into());
    }
    if v[rows] as usize > data {
        return Err(format!("offsets up to {} in {data} bytes of data", v[rows]));
    }
    Ok(OffsetBuffer::new(ScalarBuffer::from(v)))
}

/// The rows a column's values hold (for a lookup's key column, which comes without a
/// row count); none for bit-packed booleans and IPC-encoded columns, which do not say.
pub fn values_len(v: &w::Values) -> Option<usize> {
    Some(match v {
        w::Values::Boolean(_) | w::Values::ArrowIpc(_) => return None,
        w::Values::Int8(v) => v.len(),
        w::Values::Int16(v) => v.len(),
        w::Values::Int32(v) | w::Values::Date32(v) => v.len(),
        w::Values::Float32(v) => v.len(),
        w::Values::Int64(v) | w::Values::Timestamp(v) | w::Values::TimestampNtz(v) => v.len(),
        w::Values::Float64(v) => v.len(),
        w::Values::Utf8(vw) | w::Values::Binary(vw) => vw.offsets.len().saturating_sub(1),
        w::Values::Decimal(d) => d.values.len() / 16,
    })
}

/// The bytes a contract record batch holds (for the output cap).
pub fn size(b: &w::RecordBatch) -> usize {
    b.columns
        .iter()
        .map(|c| {
            let v = match &c.values {
                w::Values::Boolean(v) | w::Values::ArrowIpc(v) => v.len(),
                w::Values::Int8(v) => v.len(),
                w::Values::Int16(v) => v.len() * 2,
                w::Values::Int32(v) | w::Values::Date32(v) => v.len() * 4,
                w::Values::Float32(v) => v.len() * 4,
                w::Values::Int64(v) | w::Values::Timestamp(v) | w::Values::TimestampNtz(v) => {
                    v.len() * 8
                }
                w::Values::Float64(v) => v.len() * 8,
                w::Values::Utf8(vw) | w::Values::Binary(vw) => vw.offsets.len() * 4 + vw.data.len(),
                w::Values::Decimal(d) => d.values.len(),
            };
            v + c.validity.as_ref().map_or(0, Vec::len) + c.name.len()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use deltalake::arrow::array::{
        BooleanArray, Date32Array, Decimal128Array, Float64Array, Int32Array, ListArray,
        StringArray,
    };
    use deltalake::arrow::datatypes::Int32Type;

    use super::*;

    /// Every type the contract spells, with nulls, sliced (offsets not at 0), and a
    /// nested column (sent as IPC): through `to_wit` and `from_wit`, equal to what went in.
    #[test]
    fn every_type_round_trips_with_nulls_and_slices() {
        let list: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
            Some(vec![Some(1), None]),
            None,
            Some(vec![]),
            Some(vec![Some(4)]),
        ]));
        let columns: Vec<(&str, ArrayRef)> = vec![
            (
                "b",
                Arc::new(BooleanArray::from(vec![
                    Some(true),
                    None,
                    Some(false),
                    Some(true),
                ])),
            ),
            (
                "i",
                Arc::new(Int32Array::from(vec![Some(1), Some(2), None, Some(4)])),
            ),
            ("l", Arc::new(Int64Array::from(vec![10, 20, 30, 40]))),
            (
                "f",
                Arc::new(Float64Array::from(vec![0.5, 1.5, f64::NAN, -2.0])),
            ),
            (
                "d",
                Arc::new(Date32Array::from(vec![Some(1), None, Some(3), Some(4)])),
            ),
            (
                "t",
                Arc::new(
                    TimestampMicrosecondArray::from(vec![Some(1), Some(2), None, Some(4)])
                        .with_timezone("UTC"),
                ),
            ),
            (
                "n",
                Arc::new(TimestampMicrosecondArray::from(vec![5, 6, 7, 8])),
            ),
            (
                "s",
                Arc::new(StringArray::from(vec![
                    Some("a"),
                    None,
                    Some(""),
                    Some("ünï"),
                ])),
            ),
            (
                "y",
                Arc::new(BinaryArray::from(vec![&b"x"[..], b"", b"yz", b"\0"])),
            ),
            (
                "m",
                Arc::new(
                    Decimal128Array::from(vec![Some(12345), None, Some(-1), Some(0)])
                        .with_precision_and_scale(10, 2)
                        .unwrap(),
                ),
            ),
            ("list", list),
        ];
        let schema = Arc::new(Schema::new(
            columns
                .iter()
                .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
                .collect::<Vec<_>>(),
        ));
        let batch = RecordBatch::try_new(
            schema.clone(),
            columns.iter().map(|(_, a)| a.clone()).collect(),
        )
        .unwrap();
        // Two batches, the second a slice: rows 1..4 of the first.
        let parts = [batch.slice(0, 2), batch.slice(1, 3)];
        let wit = to_wit(&schema, &parts, None).unwrap();
        assert_eq!(wit.num_rows, 5);
        let back = from_wit(wit).unwrap();
        for (i, (name, a)) in columns.iter().enumerate() {
            let want = concat(&[a.slice(0, 2).as_ref(), a.slice(1, 3).as_ref()]).unwrap();
            let got = back.column(i);
            assert_eq!(got.data_type(), want.data_type(), "{name}");
            // NaN != NaN: compare the float column by bits.
            if *name == "f" {
                let (g, w) = (
                    got.as_primitive::<deltalake::arrow::datatypes::Float64Type>(),
                    want.as_primitive::<deltalake::arrow::datatypes::Float64Type>(),
                );
                assert!(g
                    .values()
                    .iter()
                    .zip(w.values().iter())
                    .all(|(a, b)| a.to_bits() == b.to_bits()));
            } else {
                assert_eq!(got.as_ref(), want.as_ref(), "{name}");
            }
        }
        // Only the kept columns, in the order asked.
        let kept = to_wit(&schema, &parts, Some(&[2, 7])).unwrap();
        let names: Vec<&str> = kept.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["l", "s"]);
    }

    /// `_change_type` crosses as one int8 code per row, from any string layout; a value
    /// that is no change type is an error, not a code.
    #[test]
    fn change_types_cross_as_codes() {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "_change_type",
            DataType::Utf8,
            false,
        )]));
        let b = |v: Vec<&str>| {
            RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(StringArray::from(v)) as ArrayRef],
            )
            .unwrap()
        };
        let parts = [
            b(vec!["insert", "update_preimage"]),
            b(vec!["update_postimage", "delete", "insert"]).slice(1, 2),
        ];
        let wit = to_wit_coded(&schema, &parts, None, Some(0)).unwrap();
        let w::Values::Int8(codes) = &wit.columns[0].values else {
            panic!("not codes");
        };
        assert_eq!(codes, &[0, 1, 3, 0]);
        let e = to_wit_coded(&schema, &[b(vec!["upsert"])], None, Some(0)).unwrap_err();
        assert!(e.to_string().contains("upsert"), "{e}");
        let coded = change_codes_schema(&schema);
        assert_eq!(coded.field(0).data_type(), &DataType::Int8);
        assert_eq!(type_name(coded.field(0).data_type()), "int8");
    }

    fn one(values: w::Values, validity: Option<Vec<u8>>, rows: u32) -> w::RecordBatch {
        w::RecordBatch {
            num_rows: rows,
            columns: vec![w::Column {
                name: "k".into(),
                values,
                validity,
            }],
        }
    }

    /// What a guest hands back is checked: each malformed column is an error naming
    /// it, never a panic or an array reading past its buffers.
    #[test]
    fn malformed_guest_columns_are_errors() {
        let err = |b| from_wit(b).unwrap_err().to_string();
        let e = err(one(w::Values::Int64(vec![1, 2]), None, 3));
        assert!(
            e.contains("column 'k'") && e.contains("2 values for 3 rows"),
            "{e}"
        );
        let e = err(one(w::Values::Int64(vec![1, 2, 3]), Some(vec![]), 3));
        assert!(e.contains("validity holds 0 bytes"), "{e}");
        let vw = |offsets: Vec<i32>, data: &[u8]| {
            w::Values::Utf8(w::VarWidth {
                offsets,
                data: data.to_vec(),
            })
        };
        let e = err(one(vw(vec![0, 1], b"ab"), None, 2));
        assert!(e.contains("2 offsets for 2 rows"), "{e}");
        let e = err(one(vw(vec![0, 2, 1], b"ab"), None, 2));
        assert!(e.contains("not ascending"), "{e}");
        let e = err(one(vw(vec![0, 1, 9], b"ab"), None, 2));
        assert!(e.contains("offsets up to 9 in 2 bytes"), "{e}");
        let e = err(one(vw(vec![-1, 1, 2], b"ab"), None, 2));
        assert!(e.contains("negative"), "{e}");
        let e = err(one(vw(vec![0, 1, 2], &[0xff, 0xfe]), None, 2));
        assert!(e.to_lowercase().contains("utf"), "{e}");
        let e = err(one(w::Values::Boolean(vec![]), None, 9));
        assert!(e.contains("0 bytes of booleans for 9 rows"), "{e}");
        let e = err(one(
            w::Values::Decimal(w::DecimalValues {
                precision: 5,
                scale: 0,
                values: vec![0; 17],
            }),
            None,
            1,
        ));
        assert!(e.contains("column 'k'"), "{e}");
        let e = err(one(w::Values::ArrowIpc(b"not arrow".to_vec()), None, 1));
        assert!(
            e.to_lowercase().contains("ipc") || e.contains("arrow"),
            "{e}"
        );
        assert!(from_wit(one(w::Values::Int64(vec![7]), None, 1)).is_ok());
    }
}
