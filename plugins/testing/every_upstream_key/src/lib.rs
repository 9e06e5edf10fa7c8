//! `every_upstream_key`: for the host's many-pipeline tests and `dlink-rt bench`. Every
//! change row of every upstream yields its `key_column` (config, default `id`) as the
//! key `id`. The key column is taken once per upstream (`i64_column`) and recorded
//! with `Keys::add_each`, the fast way to write a hot loop with the SDK: a per-row
//! `row.i64(name)` looks the column up by name and type for every row, and a per-row
//! `add_from` looks up the row's upstream.

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
            keys.add_each(changes, changes.i64_column(column)?)?;
        }
        Ok(())
    }
}

export_pipeline!(EveryUpstreamKey);
