//! Test plugin: the example `sp_affiliation` pipeline as a plugin of contract
//! `dlink:pipeline@0.1.0` (`wit/v0.1/pipeline.wit`), as plugins built before contract
//! 0.2 are: `init(config)` and `derive(batch)` as plain exports, the output one Arrow
//! IPC stream with the key, `_upstream` and `_commit_timestamp`. Every change row of the
//! first upstream (`diasng_id`) and of the second (`sp_id`) is a key. The host must run
//! it and commit the same keys as the 0.2 `sp_affiliation`.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMicrosecondType};
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{DataType, Field, Schema, TimeUnit};

wit_bindgen::generate!({
    path: "../../../wit/v0.1",
    world: "pipeline-plugin",
});

struct SpAffiliationV01;

/// (key column, upstream position) pairs.
const KEYS: [(&str, usize); 2] = [("diasng_id", 0), ("sp_id", 1)];

impl Guest for SpAffiliationV01 {
    fn init(config: String) -> Result<(), String> {
        match config.trim() {
            "" | "{}" => Ok(()),
            other => Err(format!("sp_affiliation_v0_1 takes no config, got {other}")),
        }
    }

    fn derive(batch: Batch) -> Result<Vec<u8>, String> {
        let (mut ids, mut ups, mut ts) = (Vec::new(), Vec::new(), Vec::new());
        for (column, position) in KEYS {
            let u = batch.upstreams.get(position).ok_or_else(|| {
                format!("pipeline '{}' has fewer than 2 upstreams", batch.pipeline)
            })?;
            if u.changes.is_empty() {
                continue;
            }
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
                        ups.push(u.name.clone());
                        ts.push(t);
                    }
                }
            }
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("diasng_id", DataType::Int64, false),
            Field::new("_upstream", DataType::Utf8, false),
            Field::new(
                "_commit_timestamp",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(ups)),
            Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
        ];
        let error = |e: arrow_schema::ArrowError| format!("sp_affiliation_v0_1: {e}");
        let out = RecordBatch::try_new(schema.clone(), columns).map_err(error)?;
        let mut w = StreamWriter::try_new(Vec::new(), &schema).map_err(error)?;
        w.write(&out).map_err(error)?;
        w.finish().map_err(error)?;
        w.into_inner().map_err(error)
    }
}

export!(SpAffiliationV01);
