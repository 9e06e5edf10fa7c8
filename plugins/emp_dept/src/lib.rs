//! `emp_dept`: the affected `emp_id`s of an employee/department pipeline.
//!
//! Upstreams, in the pipeline file's order: employees `(emp_id, name, dept_id,
//! manager_id)`, which is also the table looked up, and departments `(dept_id,
//! manager_id, dept_name)`; key `emp_id` (int64).

use dlink_plugin_sdk::{export_pipeline, Batch, Error, KeyColumn, Keys, NoConfig, Pipeline};

/// The names of the two upstreams.
struct EmpDept(String, String);

impl Pipeline for EmpDept {
    type Config = NoConfig;

    fn init(_: NoConfig, pipeline: &dlink_plugin_sdk::PipelineInfo) -> Result<Self, Error> {
        pipeline.expect_keys(&[KeyColumn::i64("emp_id")])?;
        let [employees, departments] = pipeline.upstreams_as(["employees", "departments"])?;
        employees.require_int("emp_id")?.require_int("dept_id")?;
        departments.require_int("dept_id")?;
        Ok(EmpDept(employees.name().into(), departments.name().into()))
    }

    fn derive(&mut self, batch: &Batch, out: &mut Keys) -> Result<(), Error> {
        // A changed employee is affected (whatever moved: name, dept_id, manager); a
        // changed department, every employee in it. Pre- and post-images both count,
        // so a department whose dept_id changes affects both sides.
        out.add_column(batch.changes(&self.0)?, "emp_id")?;
        out.add_through(batch.changes(&self.1)?, "dept_id", &self.0, "dept_id")?;
        Ok(())
    }
}

export_pipeline!(EmpDept);
