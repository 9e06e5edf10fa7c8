//! Hostile test plugin: `derive` (or, with `[plugin.config] in_init = true`, `init`)
//! sleeps for an hour. A sleep is a WASI call (`wasi:clocks` + `poll`), so no Wasm runs
//! while it waits and the epoch deadline never fires: only the host's wall-clock bound
//! on the call (`[plugin.limits] timeout_ms`) can stop it.

use std::time::Duration;

use dlink_plugin_sdk::{export_pipeline, Batch, Error, Keys, Pipeline, PipelineInfo};

/// `[plugin.config]`: `in_init` (default false: sleep in `derive`).
#[derive(Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    in_init: bool,
}

struct SleepInHostCall;

const AN_HOUR: Duration = Duration::from_secs(3600);

impl Pipeline for SleepInHostCall {
    type Config = Config;

    fn init(config: Config, _pipeline: &PipelineInfo) -> Result<Self, Error> {
        if config.in_init {
            std::thread::sleep(AN_HOUR);
        }
        Ok(SleepInHostCall)
    }

    fn derive(&mut self, _batch: &Batch, _keys: &mut Keys) -> Result<(), Error> {
        // Said through the host (it logs it), so a test knows the call is under way.
        dlink_plugin_sdk::log::warn("sleeping for an hour");
        std::thread::sleep(AN_HOUR);
        Ok(())
    }
}

export_pipeline!(SleepInHostCall);
