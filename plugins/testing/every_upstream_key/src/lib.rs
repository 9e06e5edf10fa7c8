use dlink_plugin_sdk::{export_pipeline, Batch, Error, Keys, Pipeline, PipelineInfo};

/// `[plugin.config]`: `key_column` (default `id`).
#[derive(serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    key_column: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            key_column: "id".into(),
        }
    }
}

struct EveryUpstreamKey(Config);

impl Pipeline for EveryUpstreamKey {
    type Config = Config;

    fn init(config: Config, pipeline: &PipelineInfo) -> Result<Self, Error> {
        for u in pipeline.upstreams() {
            u.require_int(&config.key_column)?;
        }
        Ok(EveryUpstreamKey(config))
    }

    fn derive(&mut self, batch: &Batch, keys: &mut Keys) -> Result<(), Error> {
        for changes in batch.upstreams() {
            keys.add_column(changes, &self.0.key_column)?;
        }
        Ok(())
    }
}

export_pipeline!(EveryUpstreamKey);
