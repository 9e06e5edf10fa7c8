//! Hostile test plugin: `init` succeeds, `derive` returns an output with the right
//! schema (`diasng_id` int64, `_commit_timestamp`, for upstream `spmaster`) but a null key: one row
//! per `spmaster` change row with a non-null `diasng_id`, plus one row whose
//! `diasng_id` is null. The host must reject the output (keys must not be null).
//!
//! The SDK's `Keys` builder skips null keys, so this plugin builds its output columns
//! itself and returns them through the raw component bindings.

use std::sync::Arc;

use dlink_plugin_sdk::arrow_array::{ArrayRef, Int64Array, RecordBatch, TimestampMicrosecondArray};
use dlink_plugin_sdk::arrow_schema::{ArrowError, DataType, Field, Schema, TimeUnit};
use dlink_plugin_sdk::bindings::dlink::pipeline::types;
use dlink_plugin_sdk::bindings::exports::dlink::pipeline::plugin::{
    Guest, GuestPipeline, Pipeline as Handle,
};
use dlink_plugin_sdk::Batch;

struct Export;

impl Guest for Export {
    type Pipeline = NullKeys;
}

struct NullKeys;

impl GuestPipeline for NullKeys {
    fn init(_info: types::PipelineInfo) -> Result<(Handle, Vec<types::Reads>), String> {
        Ok((Handle::new(NullKeys), Vec::new()))
    }

    fn derive(&self, batch: types::Batch) -> Result<Vec<types::UpstreamKeys>, String> {
        let batch = Batch::from_wit("null_keys", batch)?;
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
        let keys: ArrayRef = Arc::new(Int64Array::from(ids));
        // Nullable on purpose, so that arrow lets the null through.
        let field = Field::new("diasng_id", DataType::Int64, true);

        let schema = Arc::new(Schema::new(vec![
            field,
            Field::new(
                "_commit_timestamp",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
        ]));
        let columns: Vec<ArrayRef> = vec![
            keys,
            Arc::new(TimestampMicrosecondArray::from(timestamps).with_timezone("UTC")),
        ];
        let error = |e: ArrowError| format!("null_keys: {e}");
        let output = RecordBatch::try_new(schema.clone(), columns).map_err(error)?;
        Ok(vec![types::UpstreamKeys {
            upstream: "spmaster".to_string(),
            keys: dlink_plugin_sdk::columns::to_wit(&schema, &[output])?,
        }])
    }
}

dlink_plugin_sdk::bindings::export!(Export with_types_in dlink_plugin_sdk::bindings);
