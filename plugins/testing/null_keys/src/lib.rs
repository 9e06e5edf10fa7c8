//! Hostile test plugin: `init` succeeds, `derive` returns an output with the right
//! schema (`diasng_id` int64, `_upstream`, `_commit_timestamp`) but a null key: one row
//! per `spmaster` change row with a non-null `diasng_id`, plus one row whose
//! `diasng_id` is null. The host must reject the output (keys must not be null).
//!
//! The SDK's `Keys` builder skips null keys, so this plugin writes the Arrow IPC stream
//! itself through the raw component bindings.

use std::sync::Arc;

use dlink_plugin_sdk::arrow_array::{
    ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use dlink_plugin_sdk::arrow_ipc::writer::StreamWriter;
use dlink_plugin_sdk::arrow_schema::{ArrowError, DataType, Field, Schema, TimeUnit};
use dlink_plugin_sdk::bindings::dlink::pipeline::types;
use dlink_plugin_sdk::bindings::Guest;
use dlink_plugin_sdk::Batch;

struct NullKeys;

impl Guest for NullKeys {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn derive(batch: types::Batch) -> Result<Vec<u8>, String> {
        let batch = Batch::from_wit(batch)?;
        let mut ids: Vec<Option<i64>> = Vec::new();
        let mut timestamps = Vec::new();
        for row in batch.changes("spmaster")?.rows() {
            if let Some(id) = row.i64("diasng_id")? {
                ids.push(Some(id));
                timestamps.push(row.commit_timestamp());
            }
        }
        // The hostile part: a null key.
        ids.push(None);
        timestamps.push(None);
        let upstreams = vec!["spmaster"; ids.len()];

        let schema = Arc::new(Schema::new(vec![
            // Nullable on purpose, so that arrow lets the null through.
            Field::new("diasng_id", DataType::Int64, true),
            Field::new("_upstream", DataType::Utf8, false),
            Field::new(
                "_commit_timestamp",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(upstreams)),
            Arc::new(TimestampMicrosecondArray::from(timestamps).with_timezone("UTC")),
        ];
        let error = |e: ArrowError| format!("null_keys: {e}");
        let output = RecordBatch::try_new(schema.clone(), columns).map_err(error)?;
        let mut writer = StreamWriter::try_new(Vec::new(), &schema).map_err(error)?;
        writer.write(&output).map_err(error)?;
        writer.finish().map_err(error)?;
        writer.into_inner().map_err(error)
    }
}

dlink_plugin_sdk::bindings::export!(NullKeys with_types_in dlink_plugin_sdk::bindings);
