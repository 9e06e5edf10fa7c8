use dlink_plugin_sdk::{export_pipeline, Batch, Error, Keys, Pipeline, PipelineInfo};

/// `[plugin.config]`: `keys`, how many keys to return (default 200,000).
#[derive(serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    keys: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config { keys: 200_000 }
    }
}

struct HugeOutput(Config);

impl Pipeline for HugeOutput {
    type Config = Config;

    fn init(config: Config, _pipeline: &PipelineInfo) -> Result<Self, Error> {
        Ok(HugeOutput(config))
    }

    fn derive(&mut self, batch: &Batch, keys: &mut Keys) -> Result<(), Error> {
        let upstream = batch
            .upstream_names()
            .next()
            .ok_or("huge_output: the batch has no upstream")?
            .to_string();
        for key in 0..self.0.keys {
            keys.add(&upstream, None, 1_000_000 + key)?;
        }
        Ok(())
    }
}

export_pipeline!(HugeOutput);
