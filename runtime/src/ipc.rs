//! Arrow IPC stream bytes: the format tables cross the Wasm boundary in.

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::arrow::error::ArrowError;
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

/// Decodes one IPC stream into its schema and batches (a copy of `bytes`: see
/// [`decode_owned`]).
pub fn decode(bytes: &[u8]) -> Result<(SchemaRef, Vec<RecordBatch>), ArrowError> {
    decode_owned(bytes.to_vec())
}

/// Decodes one IPC stream it owns without copying the column data: the arrays point
/// into `bytes` (a buffer not aligned for its type is copied alone).
///
/// The bytes come from plugins, so anything may be in them: arrow's decoder reads
/// them incrementally (a declared length larger than the bytes is an error, not an
/// allocation of that size), and where it panics on a malformed schema (arrow-ipc
/// 59's `unimplemented!` for an unknown type, `panic!` for an odd integer width) the
/// panic is caught, kept off stderr and returned as an `IpcError`.
pub fn decode_owned(bytes: Vec<u8>) -> Result<(SchemaRef, Vec<RecordBatch>), ArrowError> {
    quiet_panics::catch(move || decode_unguarded(bytes)).unwrap_or_else(|message| {
        Err(ArrowError::IpcError(format!(
            "malformed Arrow IPC stream: {message}"
        )))
    })
}

fn decode_unguarded(bytes: Vec<u8>) -> Result<(SchemaRef, Vec<RecordBatch>), ArrowError> {
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

/// Catching a library's panic on bad input without its message on stderr.
mod quiet_panics {
    use std::cell::Cell;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::Once;

    thread_local! {
        /// Set while this thread runs a [`catch`]: its panics are not printed.
        static QUIET: Cell<bool> = const { Cell::new(false) };
    }

    /// Runs `f`; a panic in it is returned as its message instead of unwinding (and
    /// not printed by the panic hook).
    pub(super) fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
        static HOOK: Once = Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if !QUIET.with(Cell::get) {
                    previous(info);
                }
            }));
        });
        let was = QUIET.with(|q| q.replace(true));
        let r = catch_unwind(AssertUnwindSafe(f));
        QUIET.with(|q| q.set(was));
        r.map_err(|p| {
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the decoder panicked".into())
        })
    }
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
