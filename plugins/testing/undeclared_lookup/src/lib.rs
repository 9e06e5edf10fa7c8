use dlink_plugin_sdk::{export_pipeline, lookup_i64, Batch, Error, Keys, Pipeline, PipelineInfo};

/// `[plugin.config]`: `table` (default `employee`).
#[derive(serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    table: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            table: "employee".into(),
        }
    }
}

struct UndeclaredLookup(Config);

impl Pipeline for UndeclaredLookup {
    type Config = Config;

    fn init(config: Config, _pipeline: &PipelineInfo) -> Result<Self, Error> {
        Ok(UndeclaredLookup(config))
    }

    fn derive(&mut self, _batch: &Batch, _keys: &mut Keys) -> Result<(), Error> {
        let table = &self.0.table;
        let rows = lookup_i64(table, "emp_id", &[1, 2, 3], &[])?;
        Err(format!(
            "undeclared_lookup: the host ANSWERED the lookup of '{table}' with {} row(s)",
            rows.len()
        )
        .into())
    }
}

export_pipeline!(UndeclaredLookup);
