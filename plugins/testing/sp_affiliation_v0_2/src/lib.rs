//! Test plugin: the example `sp_affiliation` pipeline as a plugin of contract
//! `dlink:pipeline@0.2.0` (`wit/v0.2/pipeline.wit`), as plugins built with SDK 0.2 are:
//! the `pipeline` resource, change rows in and keys out as Arrow IPC streams, the keys
//! per causing upstream. Every change row of the first upstream (`diasng_id`) and of
//! the second (`sp_id`) is a key. The host must run it and commit the same keys as the
//! 0.3 `sp_affiliation`.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMicrosecondType};
use arrow_array::{ArrayRef, Int64Array, RecordBatch, TimestampMicrosecondArray};
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{DataType, Field, Schema, TimeUnit};

wit_bindgen::generate!({
    path: "../../../wit/v0.2",
    world: "pipeline-plugin",
});

use exports::dlink::pipeline::plugin::{Guest, GuestPipeline, Pipeline as Handle};

/// (key column, upstream position) pairs.
const KEYS: [(&str, usize); 2] = [("diasng_id", 0), ("sp_id", 1)];

struct Export;

impl Guest for Export {
    type Pipeline = SpAffiliationV02;
}

struct SpAffiliationV02;

impl GuestPipeline for SpAffiliationV02 {
    fn init(info: dlink::pipeline::types::PipelineInfo) -> Result<Handle, String> {
        if info.upstreams.len() != 2 {
            return Err(format!(
                "sp_affiliation_v0_2 reads 2 upstreams, pipeline '{}' lists {}",
                info.name,
                info.upstreams.len()
            ));
        }
        match info.config.trim() {
            "" | "{}" => Ok(Handle::new(SpAffiliationV02)),
            other => Err(format!("sp_affiliation_v0_2 takes no config, got {other}")),
        }
    }

    fn derive(
        &self,
        batch: dlink::pipeline::types::Batch,
    ) -> Result<Vec<dlink::pipeline::types::UpstreamKeys>, String> {
        let mut out = Vec::new();
        for (column, position) in KEYS {
            let u = batch
                .upstreams
                .get(position)
                .ok_or("the batch has fewer than 2 upstreams")?;
            if u.changes.is_empty() {
                continue;
            }
            let (mut ids, mut ts) = (Vec::new(), Vec::new());
            let reader = StreamReader::try_new(u.changes.as_slice(), None)
                .map_err(|e| format!("upstream '{}': {e}", u.name))?;
            for b in reader {
                let b = b.map_err(|e| format!("upstream '{}': {e}", u.name))?;
                let id = b
                    .column_by_name(column)
                    .and_then(|c| c.as_primitive_opt::<Int64Type>())
                    .ok_or_else(|| format!("upstream '{}' has no int64 '{column}'", u.name))?;
                let t = b
                    .column_by_name("_commit_timestamp")
                    .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
                    .ok_or_else(|| format!("upstream '{}' has no _commit_timestamp", u.name))?;
                for (id, t) in id.iter().zip(t.iter()) {
                    if let Some(id) = id {
                        ids.push(id);
                        ts.push(t);
                    }
                }
            }
            let schema = Arc::new(Schema::new(vec![
                Field::new("diasng_id", DataType::Int64, false),
                Field::new(
                    "_commit_timestamp",
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                    true,
                ),
            ]));
            let columns: Vec<ArrayRef> = vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
            ];
            let error = |e: arrow_schema::ArrowError| format!("sp_affiliation_v0_2: {e}");
            let keys = RecordBatch::try_new(schema.clone(), columns).map_err(error)?;
            let mut w = StreamWriter::try_new(Vec::new(), &schema).map_err(error)?;
            w.write(&keys).map_err(error)?;
            w.finish().map_err(error)?;
            out.push(dlink::pipeline::types::UpstreamKeys {
                upstream: u.name.clone(),
                keys: w.into_inner().map_err(error)?,
            });
        }
        Ok(out)
    }
}

export!(Export);
