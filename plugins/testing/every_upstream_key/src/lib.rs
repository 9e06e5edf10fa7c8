//! `every_upstream_key`: for the host's many-pipeline tests. Every change row of every
//! upstream yields its `key_column` (config, default `id`) as the key `id`.

use dlink_plugin_sdk::{export_pipeline, Batch, Config, KeyColumn, Keys, Pipeline};

struct EveryUpstreamKey;

impl Pipeline for EveryUpstreamKey {
    const KEYS: &'static [KeyColumn] = &[KeyColumn::i64("id")];

    fn init(config: &Config) -> Result<(), String> {
        config.str("key_column")?;
        Ok(())
    }

    fn derive(batch: &Batch, keys: &mut Keys) -> Result<(), String> {
        let column = batch.config().str_or("key_column", "id")?;
        for changes in batch.upstreams() {
            for row in changes.rows() {
                keys.add_from(&row, row.i64(column)?)?;
            }
        }
        Ok(())
    }
}

export_pipeline!(EveryUpstreamKey);
