//! Arrow IPC stream bytes: the format tables cross the Wasm boundary in.

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::ipc::reader::StreamReader;
use deltalake::arrow::ipc::writer::StreamWriter;

/// Encodes `batches` (all of `schema`) as one IPC stream.
pub fn encode(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, ArrowError> {
    let size: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
    let mut w = StreamWriter::try_new(Vec::with_capacity(size + 1024), schema)?;
    for b in batches {
        w.write(b)?;
    }
    w.finish()?;
    w.into_inner()
}

/// Decodes one IPC stream into its schema and batches.
pub fn decode(bytes: &[u8]) -> Result<(SchemaRef, Vec<RecordBatch>), ArrowError> {
    let reader = StreamReader::try_new(std::io::Cursor::new(bytes), None)?;
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    Ok((schema, batches))
}

/// Decodes one IPC stream it owns without copying the column data: the arrays point
/// into `bytes` (a buffer not aligned for its type is copied alone).
pub fn decode_owned(bytes: Vec<u8>) -> Result<(SchemaRef, Vec<RecordBatch>), ArrowError> {
    let mut buffer = deltalake::arrow::buffer::Buffer::from_vec(bytes);
    let mut decoder = deltalake::arrow::ipc::reader::StreamDecoder::new();
    let mut batches = Vec::new();
    while !buffer.is_empty() {
        if let Some(b) = decoder.decode(&mut buffer)? {
            batches.push(b);
        }
    }
    decoder.finish()?;
    let schema = decoder
        .schema()
        .ok_or_else(|| ArrowError::IpcError("the stream has no schema".into()))?;
    Ok((schema, batches))
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Int64Array, StringArray};
    use deltalake::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    #[test]
    fn round_trip_keeps_schema_and_rows() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec![Some("a"), None])),
            ],
        )
        .unwrap();
        let bytes = encode(&schema, &[b.clone(), b]).unwrap();
        let (s, batches) = decode(&bytes).unwrap();
        assert_eq!(s, schema);
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[1].num_rows(), 2);
        let (s, owned) = decode_owned(bytes).unwrap();
        assert_eq!(s, schema);
        assert_eq!(owned, batches);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode(b"not arrow at all").is_err());
        assert!(decode_owned(b"not arrow at all".to_vec()).is_err());
        assert!(decode_owned(Vec::new()).is_err(), "no schema");
    }
}
