//! Test plugin for the host's failure tests: `init` succeeds, `derive` panics, which in
//! a wasm32-wasip2 component is a trap (panic = abort). The host must fail the batch
//! and report the trap, not crash.

use dlink_plugin_sdk::{export_pipeline, Batch, Error, Keys, NoConfig, Pipeline, PipelineInfo};

struct PanicOnDerive;

impl Pipeline for PanicOnDerive {
    type Config = NoConfig;

    fn init(_config: NoConfig, _pipeline: &PipelineInfo) -> Result<Self, Error> {
        Ok(PanicOnDerive)
    }

    fn derive(&mut self, batch: &Batch, _keys: &mut Keys) -> Result<(), Error> {
        panic!(
            "panic_on_derive: deliberate panic in batch {} of pipeline '{}'",
            batch.id(),
            batch.pipeline()
        );
    }
}

export_pipeline!(PanicOnDerive);
