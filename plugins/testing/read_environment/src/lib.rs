//! Hostile test plugin: `init` succeeds, `derive` looks at the environment the host
//! gave it and always fails the batch with what it saw: the number and names (never
//! the values) of the environment variables, whether `HOME` is visible, and the number
//! of arguments. The sandbox gives none of these.

use dlink_plugin_sdk::{export_pipeline, Batch, Error, Keys, NoConfig, Pipeline, PipelineInfo};

struct ReadEnvironment;

impl Pipeline for ReadEnvironment {
    type Config = NoConfig;

    fn init(_config: NoConfig, _pipeline: &PipelineInfo) -> Result<Self, Error> {
        Ok(ReadEnvironment)
    }

    fn derive(&mut self, _batch: &Batch, _keys: &mut Keys) -> Result<(), Error> {
        let names: Vec<String> = std::env::vars_os()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        let home = match std::env::var("HOME") {
            Ok(v) => format!("HOME is visible ({} bytes)", v.len()),
            Err(e) => format!("HOME is not visible ({e})"),
        };
        Err(format!(
            "read_environment: {} environment variable(s) [{}]; {home}; {} argument(s)",
            names.len(),
            names.join(", "),
            std::env::args_os().count()
        )
        .into())
    }
}

export_pipeline!(ReadEnvironment);
