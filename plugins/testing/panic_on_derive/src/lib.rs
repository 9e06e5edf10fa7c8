//! Test plugin for the host's failure tests: `init` succeeds, `derive` panics, which in
//! a wasm32-wasip2 component is a trap (panic = abort). The host must fail the batch
//! and report the trap, not crash.

use dlink_plugin_sdk::{export_pipeline, Batch, KeyColumn, Keys, Pipeline};

struct PanicOnDerive;

impl Pipeline for PanicOnDerive {
    const KEYS: &'static [KeyColumn] = &[KeyColumn::i64("diasng_id")];

    fn derive(batch: &Batch, _keys: &mut Keys) -> Result<(), String> {
        panic!(
            "panic_on_derive: deliberate panic in batch {} of pipeline '{}'",
            batch.id(),
            batch.pipeline()
        );
    }
}

export_pipeline!(PanicOnDerive);
