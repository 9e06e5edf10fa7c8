//! Arrow IPC stream bytes: the format tables cross the Wasm boundary in.

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::ipc::reader::StreamReader;
use deltalake::arrow::ipc::writer::StreamWriter;

/// Encodes `batches` (all of `schema`) as one IPC stream.
pub fn encode(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, ArrowError> {
    let mut w = StreamWriter::try_new(Vec::with_capacity(encoded_size(batches) + 1024), schema)?;
    for b in batches {
        w.write(b)?;
    }
    w.finish()?;
    w.into_inner()
}

/// The bytes the rows of `batches` take (their slices, not the buffers they point
/// into: an array decoded without a copy shares one buffer with every other column of
/// its stream, and counting that buffer per array once over-reserved a 4 MB output by
/// hundreds of MB).
pub fn encoded_size(batches: &[RecordBatch]) -> usize {
    batches
        .iter()
        .flat_map(|b| b.columns())
        .map(|a| a.to_data().get_slice_memory_size().unwrap_or(0))
        .sum()
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
    fn the_encoded_size_of_zero_copy_batches_counts_their_rows_not_the_shared_buffer() {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let batches: Vec<RecordBatch> = (0..50)
            .map(|i| {
                let ids = Int64Array::from_iter_values(i * 1000..(i + 1) * 1000);
                RecordBatch::try_new(schema.clone(), vec![Arc::new(ids)]).unwrap()
            })
            .collect();
        let bytes = encode(&schema, &batches).unwrap();
        let stream = bytes.len();
        let (_, owned) = decode_owned(bytes).unwrap();
        // 50 batches of 1000 int64s: 400,000 bytes of rows in one shared stream buffer.
        assert_eq!(encoded_size(&owned), 400_000);
        assert!(encoded_size(&owned) <= stream);
        let again = encode(&schema, &owned).unwrap();
        assert_eq!(again.len(), stream);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode(b"not arrow at all").is_err());
        assert!(decode_owned(b"not arrow at all".to_vec()).is_err());
        assert!(decode_owned(Vec::new()).is_err(), "no schema");
    }
}
