//! Tooling for plugin authors: `dlink-rt plugin test` runs the real example plugins on
//! change rows and tables written as JSON or CSV, and `dlink-rt plugin new` scaffolds a
//! crate that builds for wasm32-wasip2 and runs on its own sample changes.

mod common;
#[path = "plugin_tooling/scaffold.rs"]
mod scaffold;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Instant;

use common::{dlink, plugin, repo_root, text};
use serde_json::json;

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

/// `dlink-rt plugin test ARGS...` in `dir`.
fn plugin_test(dir: &Path, args: &[&str]) -> Output {
    dlink()
        .current_dir(dir)
        .args(["plugin", "test"])
        .args(args)
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    let (out, err) = text(o);
    assert!(o.status.success(), "expected success:\n{out}\n{err}");
    out
}

fn fails(o: &Output, code: i32) -> String {
    let (out, err) = text(o);
    assert_eq!(o.status.code(), Some(code), "exit code:\n{out}\n{err}");
    err
}

fn sp_affiliation() -> String {
    plugin("sp_affiliation").display().to_string()
}

fn emp_dept() -> String {
    plugin("emp_dept").display().to_string()
}

/// Staff member 1 inserted and 2 deleted; an affiliation moved from sp_id 3 to 4 (an
/// update whose pre- and post-image differ in the join column) and one added for 1.
const SPMASTER_JSON: &str = r#"[
  {"diasng_id": 1, "name": "Ada", "country": "DE", "_change_type": "insert", "_commit_version": 5, "_commit_timestamp": "2024-05-01T10:00:00Z"},
  {"diasng_id": 2, "name": "Bo", "country": null, "_change_type": "delete", "_commit_version": 6, "_commit_timestamp": "2024-05-01T11:00:00Z"}
]
"#;

const AFFILIATION_JSONL: &str = r#"{"sp_id": 3, "institution_key": 10, "rank": 1, "_change_type": "update_preimage", "_commit_version": 4, "_commit_timestamp": "2024-05-01T09:00:00Z"}
{"sp_id": 4, "institution_key": 10, "rank": 1, "_change_type": "update_postimage", "_commit_version": 4, "_commit_timestamp": "2024-05-01T09:00:00Z"}
{"sp_id": 1, "institution_key": 11, "rank": 2, "_change_type": "insert", "_commit_version": 5, "_commit_timestamp": "2024-05-01T10:30:00Z"}
"#;

const SPMASTER_CSV: &str = "diasng_id,name,country,_change_type,_commit_version,_commit_timestamp
1,\"Lovelace, Ada\",DE,insert,5,2024-05-01T10:00:00Z
2,Bo,,delete,6,2024-05-01 11:00:00
";

const AFFILIATION_CSV: &str =
    "sp_id,institution_key:string,rank,_change_type,_commit_version,_commit_timestamp
3,10,1,update_preimage,4,2024-05-01T09:00:00Z
4,10,1,update_postimage,4,2024-05-01T09:00:00Z
1,11,2,,5,2024-05-01T10:30:00Z
";

/// Keys 1 (both upstreams; newest change 10:30), 2 (the delete), 3 and 4 (both images
/// of the moved affiliation).
const SP_EXPECTED: &str = "\
diasng_id  dlink_upstreams       dlink_change_ts
1          affiliation,spmaster  2024-05-01T10:30:00Z
2          spmaster              2024-05-01T11:00:00Z
3          affiliation           2024-05-01T09:00:00Z
4          affiliation           2024-05-01T09:00:00Z
";

#[test]
fn sp_affiliation_on_json_changes_prints_every_affected_key() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "spmaster.json", SPMASTER_JSON);
    write(dir.path(), "affiliation.jsonl", AFFILIATION_JSONL);
    let o = plugin_test(
        dir.path(),
        &[
            &sp_affiliation(),
            "--changes",
            "spmaster.json",
            "affiliation.jsonl",
            "--key",
            "diasng_id:long",
        ],
    );
    assert_eq!(ok(&o), SP_EXPECTED);
    let (_, err) = text(&o);
    assert!(
        err.contains("5 change row(s) of 2 upstream(s), 0 lookup(s): 4 affected key(s)"),
        "{err}"
    );

    // The same as JSON, from the same plugin built against contract 0.1, whose key
    // columns are taken from its output when --key is not given.
    let v0_1 = plugin("sp_affiliation_v0_1").display().to_string();
    let o = plugin_test(
        dir.path(),
        &[
            &v0_1,
            "--changes",
            "spmaster.json",
            "affiliation.jsonl",
            "--json",
        ],
    );
    let printed: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    assert_eq!(
        printed,
        json!([
            {"diasng_id": 1, "dlink_upstreams": ["affiliation", "spmaster"], "dlink_change_ts": "2024-05-01T10:30:00Z"},
            {"diasng_id": 2, "dlink_upstreams": ["spmaster"], "dlink_change_ts": "2024-05-01T11:00:00Z"},
            {"diasng_id": 3, "dlink_upstreams": ["affiliation"], "dlink_change_ts": "2024-05-01T09:00:00Z"},
            {"diasng_id": 4, "dlink_upstreams": ["affiliation"], "dlink_change_ts": "2024-05-01T09:00:00Z"},
        ])
    );
}

#[test]
fn sp_affiliation_on_csv_changes_prints_the_same_keys() {
    let dir = tempfile::tempdir().unwrap();
    // Named UPSTREAM=FILE: the file names are not the upstream names.
    write(dir.path(), "sp.csv", SPMASTER_CSV);
    write(dir.path(), "aff.csv", AFFILIATION_CSV);
    let o = plugin_test(
        dir.path(),
        &[
            &sp_affiliation(),
            "--changes",
            "spmaster=sp.csv",
            "affiliation=aff.csv",
            "--key",
            "diasng_id:long",
        ],
    );
    assert_eq!(ok(&o), SP_EXPECTED);

    // The plugin takes its upstreams in the pipeline's order, whatever their names.
    let o = plugin_test(
        dir.path(),
        &[
            &sp_affiliation(),
            "--changes",
            "sp.csv",
            "aff.csv",
            "--key",
            "diasng_id:long",
        ],
    );
    assert_eq!(
        ok(&o),
        "diasng_id  dlink_upstreams  dlink_change_ts\n\
         1          aff,sp           2024-05-01T10:30:00Z\n\
         2          sp               2024-05-01T11:00:00Z\n\
         3          aff              2024-05-01T09:00:00Z\n\
         4          aff              2024-05-01T09:00:00Z\n"
    );
}

/// Employee 10 moved from department 1 to 2; department 1 renamed, department 3
/// deleted, and department 5 renumbered to 6 (the join column changes: both count).
const EMPLOYEE_CSV: &str =
    "emp_id,name,dept_id,manager_id,_change_type,_commit_version,_commit_timestamp
10,Ann,1,,update_preimage,7,2024-06-01T08:00:00Z
10,Ann,2,,update_postimage,7,2024-06-01T08:00:00Z
";

const DEPARTMENT_JSON: &str = r#"[
  {"dept_id": 1, "manager_id": 100, "dept_name": "Sales", "_change_type": "update_preimage", "_commit_version": 3, "_commit_timestamp": "2024-06-01T09:00:00Z"},
  {"dept_id": 1, "manager_id": 100, "dept_name": "Sales EU", "_change_type": "update_postimage", "_commit_version": 3, "_commit_timestamp": "2024-06-01T09:00:00Z"},
  {"dept_id": 3, "manager_id": null, "dept_name": "Legal", "_change_type": "delete", "_commit_version": 4, "_commit_timestamp": "2024-06-01T10:00:00Z"},
  {"dept_id": 5, "manager_id": 101, "dept_name": "Ops", "_change_type": "update_preimage", "_commit_version": 4, "_commit_timestamp": "2024-06-01T10:00:00Z"},
  {"dept_id": 6, "manager_id": 101, "dept_name": "Ops", "_change_type": "update_postimage", "_commit_version": 4, "_commit_timestamp": "2024-06-01T10:00:00Z"}
]
"#;

/// The employee table as of the batch's version (10 already in department 2).
const EMPLOYEE_TABLE_JSON: &str = r#"[
  {"emp_id": 10, "name": "Ann", "dept_id": 2, "manager_id": null},
  {"emp_id": 11, "name": "Ben", "dept_id": 1, "manager_id": 10},
  {"emp_id": 12, "name": "Cy", "dept_id": 1, "manager_id": 10},
  {"emp_id": 13, "name": "Di", "dept_id": 3, "manager_id": null},
  {"emp_id": 14, "name": "Ed", "dept_id": 6, "manager_id": null},
  {"emp_id": 15, "name": "Flo", "dept_id": 2, "manager_id": null}
]
"#;

const EMP_EXPECTED: &str = "\
emp_id  dlink_upstreams  dlink_change_ts
10      employee         2024-06-01T08:00:00Z
11      department       2024-06-01T09:00:00Z
12      department       2024-06-01T09:00:00Z
13      department       2024-06-01T10:00:00Z
14      department       2024-06-01T10:00:00Z
";

#[test]
fn emp_dept_answers_its_lookup_from_a_table_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "employee.csv", EMPLOYEE_CSV);
    write(dir.path(), "department.json", DEPARTMENT_JSON);
    write(dir.path(), "employee_at_v7.json", EMPLOYEE_TABLE_JSON);
    let o = plugin_test(
        dir.path(),
        &[
            &emp_dept(),
            "--changes",
            "employee.csv",
            "department.json",
            "--table",
            "employee=employee_at_v7.json",
            "--key",
            "emp_id:long",
        ],
    );
    assert_eq!(ok(&o), EMP_EXPECTED);
    let (_, err) = text(&o);
    assert!(err.contains("1 lookup(s): 5 affected key(s)"), "{err}");

    // The same table as CSV.
    let csv = "emp_id,name,dept_id,manager_id\n10,Ann,2,\n11,Ben,1,10\n12,Cy,1,10\n13,Di,3,\n14,Ed,6,\n15,Flo,2,\n";
    write(dir.path(), "employee_table.csv", csv);
    let o = plugin_test(
        dir.path(),
        &[
            &emp_dept(),
            "--changes",
            "employee.csv",
            "department.json",
            "--table",
            "employee=employee_table.csv",
            "--key",
            "emp_id:long",
        ],
    );
    assert_eq!(ok(&o), EMP_EXPECTED);
}

#[test]
fn a_missing_table_file_is_named_in_the_plugins_error() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "employee.csv", EMPLOYEE_CSV);
    write(dir.path(), "department.json", DEPARTMENT_JSON);
    let o = plugin_test(
        dir.path(),
        &[
            &emp_dept(),
            "--changes",
            "employee.csv",
            "department.json",
            "--key",
            "emp_id:long",
        ],
    );
    let err = fails(&o, 1);
    assert!(err.contains("emp_dept.wasm"), "names the plugin: {err}");
    assert!(
        err.contains("lookup of table 'employee': no rows given for it (tables given: none)"),
        "{err}"
    );
    assert!(
        err.contains("--table employee=FILE"),
        "says what to pass: {err}"
    );
}

#[test]
fn an_upstream_the_plugin_does_not_get_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "spmaster.json", SPMASTER_JSON);
    // The plugin reads two upstreams; the test gives one.
    let o = plugin_test(
        dir.path(),
        &[
            &sp_affiliation(),
            "--changes",
            "spmaster.json",
            "--key",
            "diasng_id:long",
        ],
    );
    let err = fails(&o, 1);
    assert!(err.contains("sp_affiliation.wasm"), "{err}");
    assert!(
        err.contains(
            "this plugin reads 2 upstream(s), in this order: staff, affiliations; pipeline \
             'sp_affiliation' lists 1: spmaster"
        ),
        "{err}"
    );
    assert!(
        err.contains("--upstream NAME"),
        "says how to add one: {err}"
    );

    // An upstream without change rows: a CSV file with only its typed header gives its
    // columns (what a 0.2 plugin's init checks) ...
    let only_spmaster = "diasng_id  dlink_upstreams  dlink_change_ts\n\
         1          spmaster         2024-05-01T10:00:00Z\n\
         2          spmaster         2024-05-01T11:00:00Z\n";
    write(
        dir.path(),
        "no_affiliations.csv",
        "sp_id:long,institution_key:long\n",
    );
    let o = plugin_test(
        dir.path(),
        &[
            &sp_affiliation(),
            "--changes",
            "spmaster.json",
            "affiliation=no_affiliations.csv",
            "--key",
            "diasng_id:long",
        ],
    );
    assert_eq!(ok(&o), only_spmaster);
    // ... and --upstream NAME one without columns, which a 0.2 plugin that checks them
    // refuses (naming the column), and a 0.1 plugin takes.
    let with_upstream = |plugin: &str| {
        plugin_test(
            dir.path(),
            &[
                plugin,
                "--changes",
                "spmaster.json",
                "--upstream",
                "affiliation",
                "--key",
                "diasng_id:long",
            ],
        )
    };
    assert!(fails(&with_upstream(&sp_affiliation()), 1)
        .contains("table 'affiliation' has no column 'sp_id'"));
    let v0_1 = plugin("sp_affiliation_v0_1").display().to_string();
    assert_eq!(ok(&with_upstream(&v0_1)), only_spmaster);
}

#[test]
fn bad_input_names_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "affiliation.json", "[]");
    let cases: [(&str, &str, &str); 5] = [
        (
            "spmaster.json",
            "[\n  {\"diasng_id\": 1},\n  {\"diasng_id\": 2,}\n]\n",
            "spmaster.json:3:",
        ),
        (
            "spmaster.json",
            "[{\"diasng_id\": 1},\n {\"diasng_id\": \"two\"}]",
            "spmaster.json:2: column 'diasng_id' is a string here but a number on line 1",
        ),
        (
            "spmaster.csv",
            "diasng_id,name\n1,a\n2,b,c\n",
            "spmaster.csv:3: 3 field(s), but the header has 2 column(s)",
        ),
        (
            "spmaster.csv",
            "diasng_id,_change_type\n1,insert\n2,upsert\n",
            "spmaster.csv:3: _change_type 'upsert' is not one of insert, update_preimage, update_postimage, delete",
        ),
        (
            "spmaster.jsonl",
            "{\"diasng_id\": 1, \"_commit_timestamp\": \"yesterday\"}\n",
            "spmaster.jsonl:1: _commit_timestamp 'yesterday' is not a time",
        ),
    ];
    for (file, content, expected) in cases {
        write(dir.path(), file, content);
        let o = plugin_test(
            dir.path(),
            &[&sp_affiliation(), "--changes", file, "affiliation.json"],
        );
        let err = fails(&o, 1);
        assert!(
            err.contains(expected),
            "{file}: expected '{expected}' in:\n{err}"
        );
    }

    // A missing file.
    let o = plugin_test(
        dir.path(),
        &[&sp_affiliation(), "--changes", "nowhere.json"],
    );
    assert!(fails(&o, 1).contains("nowhere.json: cannot read the file"));
}

#[test]
fn output_that_breaks_the_declared_keys_fails_and_bad_usage_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "spmaster.json", SPMASTER_JSON);
    // Contract 0.1: the output is checked against the declared keys.
    let base = [
        plugin("sp_affiliation_v0_1").display().to_string(),
        "--changes".into(),
        "spmaster.json".into(),
        "--upstream".into(),
        "affiliation".into(),
    ];
    let with = |extra: &[&str]| {
        let mut a: Vec<&str> = base.iter().map(String::as_str).collect();
        a.extend(extra);
        plugin_test(dir.path(), &a)
    };
    let err = fails(&with(&["--key", "diasng_id:string"]), 1);
    assert!(
        err.contains("key column 'diasng_id' as Int64, but the pipeline declares it string (Utf8)"),
        "{err}"
    );
    assert!(err.contains("--key"), "{err}");
    let err = fails(&with(&["--key", "uid:long"]), 1);
    assert!(
        err.contains("unexpected column 'diasng_id'; the output columns are: uid Int64"),
        "{err}"
    );

    assert!(fails(&with(&["--key", "diasng_id"]), 2).contains("COLUMN:TYPE"));
    assert!(fails(&with(&["--config", "[1]"]), 2).contains("JSON object"));
    assert!(fails(&with(&["--config", "{\"spmaster\": 5}"]), 1).contains("init"));
    // Contract 0.2: init is told the keys, and refuses those it does not produce.
    let o = plugin_test(
        dir.path(),
        &[
            &sp_affiliation(),
            "--changes",
            "spmaster.json",
            "--upstream",
            "affiliation",
            "--key",
            "diasng_id:string",
        ],
    );
    assert!(
        fails(&o, 1).contains(
            "init rejected the pipeline: pipeline 'sp_affiliation' declares the key \
             (diasng_id utf8) in [link] keys, but this plugin produces (diasng_id int64)"
        ),
        "{}",
        text(&o).1
    );
    // ... and needs --key.
    let o = plugin_test(
        dir.path(),
        &[&sp_affiliation(), "--changes", "spmaster.json"],
    );
    assert!(fails(&o, 2).contains("give them with --key NAME:TYPE"));
    assert!(fails(&with(&["--upstream", "spmaster"]), 2).contains("given twice"));
    // clap's own usage errors exit 2 too.
    let o = dlink().args(["plugin", "test", "x.wasm"]).output().unwrap();
    assert!(fails(&o, 2).contains("--changes"));
    // Not a component.
    let not_wasm = write(dir.path(), "junk.wasm", "junk");
    let o = plugin_test(
        dir.path(),
        &[not_wasm.to_str().unwrap(), "--changes", "spmaster.json"],
    );
    assert!(fails(&o, 1).contains("not a valid WebAssembly component"));
}
