//! Hostile test plugin: `init` succeeds, `derive` looks at the environment the host
//! gave it and always fails the batch with what it saw: the number and names (never
//! the values) of the environment variables, whether `HOME` is visible, and the number
//! of arguments. The sandbox gives none of these.

use dlink_plugin_sdk::{export_pipeline, Batch, KeyColumn, Keys, Pipeline};

struct ReadEnvironment;

impl Pipeline for ReadEnvironment {
    const KEYS: &'static [KeyColumn] = &[KeyColumn::i64("diasng_id")];

    fn derive(_batch: &Batch, _keys: &mut Keys) -> Result<(), String> {
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
        ))
    }
}

export_pipeline!(ReadEnvironment);
