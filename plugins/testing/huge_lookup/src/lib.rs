//! `huge_lookup`: for the host's test of lookups at scale. Whatever changed in
//! `department`, it looks up `employee` by `emp_id` with the keys 1..=1,000,000 in one
//! call and reports every employee found (attributed to `department`). A lookup this
//! size once crashed the host (a predicate with one literal per key, planned on the
//! Wasm fiber's stack); it must return its rows, or fail with `max_lookup_rows`.

use dlink_plugin_sdk::{
    export_pipeline, lookup_i64, Batch, Error, Keys, NoConfig, Pipeline, PipelineInfo,
};

/// Keys asked in the one lookup.
const KEYS: i64 = 1_000_000;

struct HugeLookup;

impl Pipeline for HugeLookup {
    type Config = NoConfig;

    fn init(_config: NoConfig, _pipeline: &PipelineInfo) -> Result<Self, Error> {
        Ok(HugeLookup)
    }

    fn derive(&mut self, batch: &Batch, keys: &mut Keys) -> Result<(), Error> {
        if batch.changes("department")?.is_empty() {
            return Ok(());
        }
        let ids: Vec<i64> = (1..=KEYS).collect();
        for row in lookup_i64("employee", "emp_id", &ids, &["emp_id"])?.rows() {
            keys.add("department", None, row.i64("emp_id")?)?;
        }
        Ok(())
    }
}

export_pipeline!(HugeLookup);
