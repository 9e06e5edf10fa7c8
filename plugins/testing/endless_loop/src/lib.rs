//! Hostile test plugin: `init` succeeds, `derive` never returns (a busy loop that never
//! calls the host). The host's wall-time budget (`[plugin.limits] timeout_ms`, epoch
//! interruption) must stop it with a clear error; the process must not hang.

use dlink_plugin_sdk::{export_pipeline, Batch, Error, Keys, NoConfig, Pipeline, PipelineInfo};

struct EndlessLoop;

impl Pipeline for EndlessLoop {
    type Config = NoConfig;

    fn init(_config: NoConfig, _pipeline: &PipelineInfo) -> Result<Self, Error> {
        Ok(EndlessLoop)
    }

    fn derive(&mut self, batch: &Batch, _keys: &mut Keys) -> Result<(), Error> {
        // `black_box` keeps the optimizer from proving anything about the loop.
        let mut state = batch.id() as u64;
        loop {
            state = std::hint::black_box(
                state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1),
            );
        }
    }
}

export_pipeline!(EndlessLoop);
