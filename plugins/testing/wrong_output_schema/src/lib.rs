//! Test plugin for the host's failure tests: `init` succeeds, `derive` returns an Arrow
//! record batch whose key column `diasng_id` is utf8 instead of int64 (with a correct
//! `_commit_timestamp` column), one row per `spmaster` change row
//! (with a non-null `diasng_id`). The host must reject the output as not matching the
//! pipeline's declared key type.
//!
//! It bypasses the SDK's `Pipeline` trait and `Keys` builder (which would refuse a utf8
//! value for an int64 key), using the raw component bindings and
//! arrow directly.

use std::sync::Arc;

use dlink_plugin_sdk::arrow_array::{
    ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use dlink_plugin_sdk::arrow_schema::{ArrowError, DataType, Field, Schema, TimeUnit};
use dlink_plugin_sdk::bindings::dlink::pipeline::types;
use dlink_plugin_sdk::bindings::exports::dlink::pipeline::plugin::{
    Guest, GuestPipeline, Pipeline as Handle,
};
use dlink_plugin_sdk::Batch;

struct Export;

impl Guest for Export {
    type Pipeline = WrongOutputSchema;
}

struct WrongOutputSchema;

impl GuestPipeline for WrongOutputSchema {
    fn init(_info: types::PipelineInfo) -> Result<(Handle, Vec<types::Reads>), String> {
        Ok((Handle::new(WrongOutputSchema), Vec::new()))
    }

    fn derive(&self, batch: types::Batch) -> Result<Vec<types::UpstreamKeys>, String> {
        let batch = Batch::from_wit("wrong_output_schema", batch)?;
        let changes = batch.changes("spmaster")?;
        let mut ids = Vec::with_capacity(changes.len());
        let mut timestamps = Vec::with_capacity(changes.len());
        for row in changes.rows() {
            if let Some(id) = row.i64("diasng_id")? {
                ids.push(id.to_string());
                timestamps.push(row.commit_timestamp());
            }
        }
        let keys: ArrayRef = Arc::new(StringArray::from(ids));
        // Wrong on purpose: the pipeline declares diasng_id as int64.
        let field = Field::new("diasng_id", DataType::Utf8, false);

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
        let error = |e: ArrowError| format!("wrong_output_schema: {e}");
        let output = RecordBatch::try_new(schema.clone(), columns).map_err(error)?;
        Ok(vec![types::UpstreamKeys {
            upstream: "spmaster".to_string(),
            keys: dlink_plugin_sdk::columns::to_wit(&schema, &[output])?,
        }])
    }
}

dlink_plugin_sdk::bindings::export!(Export with_types_in dlink_plugin_sdk::bindings);
