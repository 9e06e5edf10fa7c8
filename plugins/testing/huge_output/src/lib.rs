//! Hostile test plugin: `init` succeeds, `derive` returns a valid but huge output:
//! `keys` distinct keys (config `keys`, default 200000; about 4 MB of Arrow IPC),
//! all attributed to the first upstream. The host must refuse output above
//! `[plugin.limits] max_output_mb`.

use dlink_plugin_sdk::{export_pipeline, Batch, KeyColumn, Keys, Pipeline};

struct HugeOutput;

impl Pipeline for HugeOutput {
    const KEYS: &'static [KeyColumn] = &[KeyColumn::i64("diasng_id")];

    fn derive(batch: &Batch, keys: &mut Keys) -> Result<(), String> {
        let count = match batch.config().get("keys") {
            None => 200_000,
            Some(v) => v
                .as_i64()
                .ok_or_else(|| format!("huge_output: config 'keys' must be an integer, got {v}"))?,
        };
        let upstream = batch
            .upstream_names()
            .next()
            .ok_or("huge_output: the batch has no upstream")?
            .to_string();
        for key in 0..count {
            keys.add(&upstream, None, 1_000_000 + key)?;
        }
        Ok(())
    }
}

export_pipeline!(HugeOutput);
