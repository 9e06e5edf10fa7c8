//! `dlink-rt demo`: writes the six upstream tables of the example pipelines with a
//! short history (appends, updates, deletes, merges) into a folder.

mod table;

use std::path::Path;

use serde_json::{json, Value};

pub use table::{to_batch, Col, DemoTable};

type DynResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Columns of the example upstream tables (all ids `long`).
pub const SPMASTER: [(&str, Col); 3] = [
    ("diasng_id", Col::Long),
    ("name", Col::Str),
    ("country", Col::Str),
];
pub const AFFILIATION: [(&str, Col); 3] = [
    ("sp_id", Col::Long),
    ("institution_key", Col::Long),
    ("rank", Col::Long),
];
pub const EMPLOYEE: [(&str, Col); 4] = [
    ("emp_id", Col::Long),
    ("name", Col::Str),
    ("dept_id", Col::Long),
    ("manager_id", Col::Long),
];
pub const DEPARTMENT: [(&str, Col); 3] = [
    ("dept_id", Col::Long),
    ("manager_id", Col::Long),
    ("dept_name", Col::Str),
];
pub const PUBLICATIONS: [(&str, Col); 3] = [
    ("pub_id", Col::Long),
    ("title", Col::Str),
    ("year", Col::Long),
];
pub const AUTHOR_PUBLICATION_LINK: [(&str, Col); 2] = [("pub_id", Col::Long), ("uid", Col::Long)];

/// Marker file that identifies a folder written by `dlink-rt demo`.
pub const MARKER: &str = ".dlink-demo";

const FIRST: [&str; 12] = [
    "Ada", "Bert", "Chen", "Dana", "Emil", "Fatima", "Goran", "Hana", "Ivo", "Jun", "Kemal", "Lea",
];
const LAST: [&str; 8] = [
    "Novak", "Okafor", "Petrov", "Quist", "Rossi", "Sato", "Tanaka", "Urban",
];
const COUNTRIES: [&str; 6] = ["DE", "FR", "JP", "NG", "US", "BR"];
const DEPTS: [&str; 5] = ["Research", "Platform", "Finance", "Sales", "Legal"];
const TOPICS: [&str; 6] = [
    "graph joins",
    "change feeds",
    "Wasm sandboxes",
    "query planning",
    "Delta logs",
    "key derivation",
];

fn name(i: i64) -> String {
    format!(
        "{} {}",
        FIRST[(i as usize) % FIRST.len()],
        LAST[(i as usize * 7) % LAST.len()]
    )
}

/// One line of what the demo wrote.
pub struct Written {
    pub table: &'static str,
    pub versions: i64,
}

/// Writes the six tables under `dir` (which must be empty or a previous demo folder,
/// which is replaced).
pub async fn write_upstreams(dir: &Path) -> DynResult<Vec<Written>> {
    prepare(dir)?;
    let mut out = Vec::new();
    write_researchers(dir, &mut out).await?;
    write_staff(dir, &mut out).await?;
    write_publications(dir, &mut out).await?;
    Ok(out)
}

/// Makes `dir` an empty demo folder (refusing a folder the demo did not write).
fn prepare(dir: &Path) -> DynResult<()> {
    if dir.exists() {
        let empty = std::fs::read_dir(dir)?.next().is_none();
        if !empty && !dir.join(MARKER).exists() {
            return Err(format!(
                "{} exists and was not written by `dlink-rt demo`; choose an empty or new folder",
                dir.display()
            )
            .into());
        }
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join(MARKER),
        "written by dlink-rt demo; safe to delete\n",
    )?;
    Ok(())
}

/// spmaster and affiliation, with their histories.
async fn write_researchers(dir: &Path, out: &mut Vec<Written>) -> DynResult<()> {
    // spmaster(diasng_id, name, country): 40 researchers.
    let rows: Vec<Value> = (1..=40)
        .map(|i| json!([i, name(i), COUNTRIES[(i as usize) % COUNTRIES.len()]]))
        .collect();
    let mut t = DemoTable::create(&dir.join("spmaster"), &SPMASTER, Value::Array(rows)).await?;
    t.insert(json!([[41, name(41), "DE"], [42, name(42), "JP"]]))
        .await?; // new hires
    t.update("diasng_id IN (3, 4)", &[("country", "'US'")])
        .await?; // payload update
    t.delete("diasng_id = 40").await?; // researcher removed
    t.upsert(
        &["diasng_id"],
        json!([[5, "Dana Rossi-Novak", "FR"], [43, name(43), "NG"]]),
    )
    .await?; // merge: one update, one insert
    out.push(Written {
        table: "spmaster",
        versions: t.version() + 1,
    });

    // affiliation(sp_id, institution_key, rank): 1-2 per researcher.
    let rows: Vec<Value> = (1..=40)
        .flat_map(|i| {
            let mut v = vec![json!([i, 100 + i % 7, 1])];
            if i % 3 == 0 {
                v.push(json!([i, 200 + i % 5, 2]));
            }
            v
        })
        .collect();
    let mut t =
        DemoTable::create(&dir.join("affiliation"), &AFFILIATION, Value::Array(rows)).await?;
    t.update("sp_id = 7 AND rank = 1", &[("institution_key", "999")])
        .await?; // moves institution
    t.update("sp_id = 12", &[("sp_id", "13")]).await?; // join column: 12 -> 13
    t.insert(json!([[41, 101, 1], [42, 102, 1]])).await?;
    t.delete("sp_id = 9").await?;
    t.upsert(&["sp_id", "rank"], json!([[20, 555, 1], [21, 300, 3]]))
        .await?;
    out.push(Written {
        table: "affiliation",
        versions: t.version() + 1,
    });
    Ok(())
}

/// department and employee, with their histories.
async fn write_staff(dir: &Path, out: &mut Vec<Written>) -> DynResult<()> {
    // department(dept_id, manager_id, dept_name) and employee(emp_id, name, dept_id, manager_id).
    let rows: Vec<Value> = (1..=5)
        .map(|d| json!([d, d * 10, DEPTS[(d - 1) as usize]]))
        .collect();
    let mut t = DemoTable::create(&dir.join("department"), &DEPARTMENT, Value::Array(rows)).await?;
    t.update("dept_id = 2", &[("dept_name", "'Platform & Data'")])
        .await?; // dept-only change
    t.upsert(&["dept_id"], json!([[4, 31, "Sales"], [6, 60, "Security"]]))
        .await?;
    out.push(Written {
        table: "department",
        versions: t.version() + 1,
    });

    let rows: Vec<Value> = (1..=30)
        .map(|e| json!([e, name(e + 100), 1 + e % 5, (1 + e % 5) * 10]))
        .collect();
    let mut t = DemoTable::create(&dir.join("employee"), &EMPLOYEE, Value::Array(rows)).await?;
    t.update("emp_id = 6", &[("dept_id", "3"), ("manager_id", "30")])
        .await?; // moves 2 -> 3
    t.insert(json!([[31, name(131), 6, 60], [32, name(132), 6, 60]]))
        .await?;
    t.delete("emp_id = 30").await?;
    out.push(Written {
        table: "employee",
        versions: t.version() + 1,
    });
    Ok(())
}

/// publications and author_publication_link, with their histories.
async fn write_publications(dir: &Path, out: &mut Vec<Written>) -> DynResult<()> {
    // publications(pub_id, title, year) and author_publication_link(pub_id, uid).
    let rows: Vec<Value> = (1..=50)
        .map(|p| {
            json!([
                p,
                format!("On {} {}", TOPICS[(p as usize) % TOPICS.len()], p),
                2015 + p % 10
            ])
        })
        .collect();
    let mut t =
        DemoTable::create(&dir.join("publications"), &PUBLICATIONS, Value::Array(rows)).await?;
    t.update("pub_id = 7", &[("title", "'On change feeds, revisited'")])
        .await?;
    t.insert(json!([[51, "Affected keys at scale", 2026]]))
        .await?;
    t.delete("pub_id = 50").await?;
    t.upsert(
        &["pub_id"],
        json!([
            [8, "On graph joins 8 (2nd ed.)", 2025],
            [52, "Exactly once", 2026]
        ]),
    )
    .await?;
    out.push(Written {
        table: "publications",
        versions: t.version() + 1,
    });

    let rows: Vec<Value> = (1..=50)
        .flat_map(|p| {
            let mut v = vec![json!([p, 1000 + p % 20])];
            if p % 2 == 0 {
                v.push(json!([p, 1000 + (p + 7) % 20]));
            }
            v
        })
        .collect();
    let mut t = DemoTable::create(
        &dir.join("author_publication_link"),
        &AUTHOR_PUBLICATION_LINK,
        Value::Array(rows),
    )
    .await?;
    t.insert(json!([[51, 1003], [51, 1004], [52, 1005]]))
        .await?;
    t.delete("pub_id = 50").await?;
    t.update("pub_id = 11", &[("uid", "1019")]).await?; // re-attributed
    out.push(Written {
        table: "author_publication_link",
        versions: t.version() + 1,
    });
    Ok(())
}
