//! Hostile test plugin: `init` succeeds, `derive` looks up a table the pipeline does
//! not declare (config `table`, default `employee`; the pipeline's upstreams are
//! `spmaster` and `affiliation`). The host must refuse the lookup; the plugin passes the
//! refusal on with `?`. Should the lookup be answered, it fails the batch saying so.

use dlink_plugin_sdk::{export_pipeline, lookup_i64, Batch, KeyColumn, Keys, Pipeline};

struct UndeclaredLookup;

impl Pipeline for UndeclaredLookup {
    const KEYS: &'static [KeyColumn] = &[KeyColumn::i64("diasng_id")];

    fn derive(batch: &Batch, _keys: &mut Keys) -> Result<(), String> {
        let table = batch.config().str_or("table", "employee")?;
        let rows = lookup_i64(table, "emp_id", &[1, 2, 3], &[])?;
        Err(format!(
            "undeclared_lookup: the host ANSWERED the lookup of '{table}' with {} row(s)",
            rows.len()
        ))
    }
}

export_pipeline!(UndeclaredLookup);
