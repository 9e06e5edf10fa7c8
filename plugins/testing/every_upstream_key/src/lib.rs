//! `every_upstream_key`: for the host's many-pipeline tests and `dlink-rt bench`. Every
//! change row of every upstream yields its `key_column` (config, default `id`) as the
//! key `id`. The key column is taken once per upstream (`i64_column`), the fast way to
//! write a hot loop with the SDK: a per-row `row.i64(name)` looks the column up by
//! name and type for every row.

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
            let ids = changes.i64_column(column)?;
            for (row, id) in changes.rows().zip(ids) {
                keys.add_from(&row, id)?;
            }
        }
        Ok(())
    }
}

export_pipeline!(EveryUpstreamKey);
