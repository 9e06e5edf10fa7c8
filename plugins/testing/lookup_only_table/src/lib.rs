//! `lookup_only_table`: for the host's test of lookup-only tables. Its only upstream is
//! `department`; `employee` is a lookup table it does not watch. A changed department
//! affects its employees as of the batch's pinned version of `employee`.

use dlink_plugin_sdk::{export_pipeline, lookup_i64, Batch, KeyColumn, Keys, Pipeline};

struct LookupOnlyTable;

impl Pipeline for LookupOnlyTable {
    const KEYS: &'static [KeyColumn] = &[KeyColumn::i64("emp_id")];

    fn derive(batch: &Batch, keys: &mut Keys) -> Result<(), String> {
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
