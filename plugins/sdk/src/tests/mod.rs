//! Native unit tests of the pure parts: decoding, getters, the keys builder, lookups
//! against a fake host. Expected values are written by hand.

use std::sync::Arc;

use arrow_array::types::{Int16Type, Int8Type};
use arrow_array::{
    Array, ArrayRef, DictionaryArray, Int32Array, Int64Array, LargeStringArray, RecordBatch,
    StringArray, StringViewArray, TimestampMicrosecondArray, TimestampMillisecondArray,
};
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{DataType, Field, Schema, TimeUnit};

use crate::lookup::{lookup_i64_with, lookup_str_with};
use crate::*;

const T1: i64 = 1_700_000_000_000_000;
const T2: i64 = 1_700_000_060_000_000;
const T3: i64 = 1_700_000_120_000_000;

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn ipc(batches: &[RecordBatch]) -> Vec<u8> {
    let schema = batches[0].schema();
    let mut writer = StreamWriter::try_new(Vec::new(), &schema).unwrap();
    for b in batches {
        writer.write(b).unwrap();
    }
    writer.finish().unwrap();
    writer.into_inner().unwrap()
}

/// A fake host lookup written against IPC bytes (keys in, rows out), as the contract's
/// columns: the keys column goes through IPC to `f` and its answer back to columns, so
/// the tests also cover the SDK's column conversion both ways.
fn via_ipc<F>(
    mut f: F,
) -> impl FnMut(
    &str,
    &str,
    crate::bindings::dlink::pipeline::types::Column,
    &[String],
) -> Result<crate::bindings::dlink::pipeline::types::RecordBatch, String>
where
    F: FnMut(&str, &str, &[u8], &[String]) -> Result<Vec<u8>, String>,
{
    use crate::bindings::dlink::pipeline::types::{RecordBatch as WitBatch, Values};
    move |table, column, keys, columns| {
        let rows = match &keys.values {
            Values::Int64(v) => v.len(),
            Values::Utf8(v) => v.offsets.len() - 1,
            _ => panic!("the SDK sends int64 or utf8 lookup keys"),
        };
        let asked = crate::columns::from_wit(
            "keys",
            WitBatch {
                num_rows: rows as u32,
                columns: vec![keys],
            },
        )?;
        let answer = f(table, column, &ipc(&[asked]), columns)?;
        if answer.is_empty() {
            return Ok(WitBatch {
                num_rows: 0,
                columns: Vec::new(),
            });
        }
        let (schema, batches) = read_ipc(&answer);
        crate::columns::to_wit(&schema, &batches)
    }
}

fn read_ipc(bytes: &[u8]) -> (Arc<Schema>, Vec<RecordBatch>) {
    let reader = StreamReader::try_new(bytes, None).unwrap();
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>().unwrap();
    (schema, batches)
}

/// spmaster-like change rows: diasng_id is Int32 to exercise widening.
fn spmaster_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("diasng_id", DataType::Int32, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("_change_type", DataType::Utf8, false),
        Field::new("_commit_version", DataType::Int64, false),
        Field::new("_commit_timestamp", ts_type(), true),
    ]))
}

fn spmaster_batch(
    ids: Vec<Option<i32>>,
    names: Vec<Option<&str>>,
    types: Vec<&str>,
    versions: Vec<i64>,
    ts: Vec<Option<i64>>,
) -> RecordBatch {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from(ids)),
        Arc::new(StringArray::from(names)),
        Arc::new(StringArray::from(types)),
        Arc::new(Int64Array::from(versions)),
        Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
    ];
    RecordBatch::try_new(spmaster_schema(), columns).unwrap()
}

/// Five rows over two record batches: an insert, an update (pre + post), a delete
/// with a null id, and an insert with a null name.
fn spmaster_changes() -> Changes {
    let first = spmaster_batch(
        vec![Some(1), Some(2), Some(2)],
        vec![Some("Ada"), Some("Bob"), Some("Robert")],
        vec!["insert", "update_preimage", "update_postimage"],
        vec![5, 6, 6],
        vec![Some(T1), Some(T2), Some(T2)],
    );
    let second = spmaster_batch(
        vec![None, Some(3)],
        vec![Some("Gone"), None],
        vec!["delete", "insert"],
        vec![7, 7],
        vec![Some(T3), None],
    );
    Changes::from_ipc("spmaster", 5, 7, &ipc(&[first, second])).unwrap()
}

mod changes;
mod lookup;
mod output;
mod pipeline;
