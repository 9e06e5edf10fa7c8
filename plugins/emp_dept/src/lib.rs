//! `emp_dept`: the affected `emp_id`s of an employee/department pipeline.
//!
//! Upstreams `employee(emp_id, name, dept_id, manager_id)` and
//! `department(dept_id, manager_id, dept_name)`; key `emp_id` (int64).
//! Config (optional): `{"employee": "...", "department": "..."}` renames the upstreams
//! (the employee upstream is also the table looked up).

use dlink_plugin_sdk::{
    export_pipeline, log, lookup_i64, Batch, Config, KeyColumn, Keys, Pipeline,
};

struct EmpDept;

impl Pipeline for EmpDept {
    const KEYS: &'static [KeyColumn] = &[KeyColumn::i64("emp_id")];

    fn init(config: &Config) -> Result<(), String> {
        config.str("employee")?;
        config.str("department")?;
        Ok(())
    }

    fn derive(batch: &Batch, keys: &mut Keys) -> Result<(), String> {
        let employee = batch.config().str_or("employee", "employee")?;
        let department = batch.config().str_or("department", "department")?;

        // A changed employee is affected (whatever moved: name, dept_id, manager).
        let employees = batch.changes(employee)?;
        keys.add_each(employees, employees.i64_values("emp_id")?)?;

        // A changed department affects every employee in it. Pre- and post-images
        // both count, so a department whose dept_id changes affects both sides.
        let changed = batch.changes(department)?.newest_commit_by_i64("dept_id")?;
        let dept_ids: Vec<i64> = changed.keys().copied().collect();
        let members = lookup_i64(employee, "dept_id", &dept_ids, &["emp_id", "dept_id"])?;
        log::debug(format!(
            "{} changed department(s), {} employee(s) in them",
            dept_ids.len(),
            members.len()
        ));
        let member_depts = members.i64_values("dept_id")?;
        for (emp_id, dept_id) in members.i64_values("emp_id")?.zip(member_depts) {
            let committed = dept_id.and_then(|v| changed.get(&v).copied().flatten());
            keys.add(department, committed, emp_id)?;
        }
        Ok(())
    }
}

export_pipeline!(EmpDept);
