//! `lookup_only_table`: for the host's test of lookup-only tables. Its only upstream is
//! `department`; `employee` is a lookup table it does not watch. A changed department
//! affects its employees as of the batch's pinned version of `employee`.

use dlink_plugin_sdk::{
    export_pipeline, lookup_i64, Batch, Error, Keys, NoConfig, Pipeline, PipelineInfo,
};

struct LookupOnlyTable;

impl Pipeline for LookupOnlyTable {
    type Config = NoConfig;

    fn init(_config: NoConfig, _pipeline: &PipelineInfo) -> Result<Self, Error> {
        Ok(LookupOnlyTable)
    }

    fn derive(&mut self, batch: &Batch, keys: &mut Keys) -> Result<(), Error> {
        let changed = batch
            .changes("department")?
            .newest_commit_by_i64("dept_id")?;
        let ids: Vec<i64> = changed.keys().copied().collect();
        for member in lookup_i64("employee", "dept_id", &ids, &["emp_id", "dept_id"])?.rows() {
            let ts = member
                .i64("dept_id")?
                .and_then(|d| changed.get(&d).copied().flatten());
            keys.add("department", ts, member.i64("emp_id")?)?;
        }
        Ok(())
    }
}

export_pipeline!(LookupOnlyTable);
