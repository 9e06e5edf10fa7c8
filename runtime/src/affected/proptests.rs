//! Property tests of the plugin-output decoder: whatever bytes a plugin returns, in
//! either contract's form, the host gets a typed error or keys, never a panic.

use std::sync::Arc;

use deltalake::arrow::array::{Int64Array, RecordBatch, StringArray};
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use proptest::prelude::*;

use super::{collect, collect_per_upstream};
use crate::config::{KeyColumn, KeyType};

fn keys() -> Vec<KeyColumn> {
    vec![KeyColumn {
        name: "id".into(),
        ty: KeyType::Long,
    }]
}

/// A valid output of `n` keys (contract 0.1's form when `combined`: with `_upstream`).
fn valid(n: usize, combined: bool) -> Vec<u8> {
    let ids = Arc::new(Int64Array::from_iter_values(0..n as i64));
    let mut fields = vec![Field::new("id", DataType::Int64, false)];
    let mut cols: Vec<deltalake::arrow::array::ArrayRef> = vec![ids];
    if combined {
        fields.push(Field::new("_upstream", DataType::Utf8, false));
        cols.push(Arc::new(StringArray::from(vec!["a"; n])));
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), cols).expect("a valid batch");
    crate::ipc::encode(&schema, &[batch]).expect("encodes")
}

/// `bytes` damaged: some bytes overwritten, then cut at `cut` (a fraction).
fn damaged(mut bytes: Vec<u8>, edits: &[(usize, u8)], cut: f64) -> Vec<u8> {
    for (at, b) in edits {
        if !bytes.is_empty() {
            let i = at % bytes.len();
            bytes[i] = *b;
        }
    }
    let keep = ((bytes.len() as f64) * cut) as usize;
    bytes.truncate(keep.max(1));
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_are_a_typed_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = collect(&bytes, &keys(), &["a"]);
        let _ = collect_per_upstream(vec![("a".into(), bytes)], &keys(), &["a"]);
    }

    #[test]
    fn damaged_outputs_are_a_typed_error_not_a_panic(
        n in 0usize..50,
        combined in any::<bool>(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        cut in 0.0f64..=1.0,
    ) {
        let bytes = damaged(valid(n, combined), &edits, cut);
        let _ = if combined {
            collect(&bytes, &keys(), &["a"])
        } else {
            collect_per_upstream(vec![("a".into(), bytes)], &keys(), &["a"])
        };
    }
}
