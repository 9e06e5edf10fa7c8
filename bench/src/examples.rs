//! The six upstream tables of the example pipelines at a user's scale (`rows` per
//! table, 100k by default), written with deltalake: a load and a short history
//! ([`write_history`]), then rounds of small commits ([`write_increment`]).
//!
//! Every commit changes the rows it touches (no update sets a value it already has),
//! and the commits of one increment touch disjoint rows and never insert and delete the
//! same row, so the affected rows of an increment are exactly the difference between
//! the snapshots before and after it. The scale tests rely on that.

use std::path::Path;

use dlink_rt::demo::{
    Col, DemoTable, AFFILIATION, AUTHOR_PUBLICATION_LINK, DEPARTMENT, EMPLOYEE, PUBLICATIONS,
    SPMASTER,
};
use serde_json::{json, Value};

type DynResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A table's name, its columns and the id column commits select rows by.
pub type TableSpec = (&'static str, &'static [(&'static str, Col)], &'static str);

/// The example tables.
pub const TABLES: [TableSpec; 6] = [
    ("spmaster", &SPMASTER, "diasng_id"),
    ("affiliation", &AFFILIATION, "sp_id"),
    ("employee", &EMPLOYEE, "emp_id"),
    ("department", &DEPARTMENT, "dept_id"),
    ("publications", &PUBLICATIONS, "pub_id"),
    (
        "author_publication_link",
        &AUTHOR_PUBLICATION_LINK,
        "pub_id",
    ),
];

const COUNTRIES: [&str; 5] = ["DE", "FR", "JP", "NG", "US"];

/// Departments for `rows` employees (about 50 employees each).
pub fn departments(rows: usize) -> i64 {
    (rows as i64 / 50).max(10)
}

/// Rows of `table` at version 0.
fn initial_rows(table: &str, rows: usize) -> Vec<Value> {
    let n = rows as i64;
    let d = departments(rows);
    let authors = (n / 2).max(1);
    match table {
        "spmaster" => (1..=n)
            .map(|i| json!([i, format!("researcher {i}"), COUNTRIES[(i % 5) as usize]]))
            .collect(),
        "affiliation" => (1..=n)
            .flat_map(|i| {
                let mut v = vec![json!([i, 100 + i % 97, 1])];
                if i % 3 == 0 {
                    v.push(json!([i, 300 + i % 89, 2]));
                }
                v
            })
            .collect(),
        "employee" => (1..=n)
            .map(|e| json!([e, format!("employee {e}"), 1 + e % d, (1 + e % d) * 10]))
            .collect(),
        "department" => (1..=d)
            .map(|i| json!([i, i * 10, format!("department {i}")]))
            .collect(),
        "publications" => (1..=n)
            .map(|p| json!([p, format!("publication {p}"), 1990 + p % 35]))
            .collect(),
        _ => (1..=n)
            .flat_map(|p| {
                let mut v = vec![json!([p, 1 + (p * 7919) % authors])];
                if p % 2 == 0 {
                    v.push(json!([p, 1 + (p * 104_729) % authors]));
                }
                v
            })
            .collect(),
    }
}

/// A row of `table` for id `id` whose every non-id value is new (`tag` is unique per
/// commit), for inserts and MERGE sources.
fn fresh_row(table: &str, id: i64, tag: &str, rows: usize) -> Value {
    let d = departments(rows);
    match table {
        "spmaster" => json!([id, format!("researcher {id} {tag}"), "BR"]),
        "affiliation" => json!([id, 900_000 + id % 1000, 7]),
        "employee" => json!([id, format!("employee {id} {tag}"), 1 + id % d, 7]),
        "department" => json!([id, 7, format!("department {id} {tag}")]),
        "publications" => json!([id, format!("publication {id} {tag}"), 2100]),
        _ => json!([id, 5_000_000 + id]),
    }
}

/// `UPDATE` assignments that change every row they touch.
fn changed_values(table: &str) -> Vec<(&'static str, &'static str)> {
    match table {
        "spmaster" => vec![("name", "concat(name, ' *')")],
        "affiliation" => vec![("rank", "rank + 10")],
        "employee" => vec![("dept_id", "dept_id + 1"), ("name", "concat(name, ' *')")],
        "department" => vec![("dept_name", "concat(dept_name, ' *')")],
        "publications" => vec![("title", "concat(title, ' *')")],
        _ => vec![("uid", "uid + 10000000")],
    }
}

async fn open_or_create(
    dir: &Path,
    table: &str,
    cols: &[(&str, Col)],
    rows: usize,
) -> DynResult<DemoTable> {
    let path = dir.join(table);
    if path.join("_delta_log").is_dir() {
        return DemoTable::open(&path).await;
    }
    DemoTable::create(&path, cols, Value::Array(initial_rows(table, rows))).await
}

/// One commit of kind `k % 4` (update, insert, delete, merge) over the ids `lo..hi`
/// of `table`; inserted ids start at `fresh`.
async fn commit(
    t: &mut DemoTable,
    (table, id): (&str, &str),
    k: usize,
    (lo, hi): (i64, i64),
    fresh: i64,
    tag: &str,
    rows: usize,
) -> DynResult<()> {
    let range = format!("{id} >= {lo} AND {id} < {hi}");
    match k % 4 {
        0 => {
            t.update(&range, &changed_values(table)).await?;
        }
        1 => {
            let new: Vec<Value> = (fresh..fresh + (hi - lo))
                .map(|i| fresh_row(table, i, tag, rows))
                .collect();
            t.insert(Value::Array(new)).await?;
        }
        2 => {
            t.delete(&range).await?;
        }
        _ if table == "author_publication_link" || table == "affiliation" => {
            // No unique key to merge on: an update of another column instead.
            t.update(&range, &changed_values(table)).await?;
        }
        _ => {
            // Half the range updated in place, as many new ids inserted.
            let half = lo + (hi - lo) / 2;
            let src: Vec<Value> = (lo..half)
                .chain(fresh..fresh + (half - lo))
                .map(|i| fresh_row(table, i, tag, rows))
                .collect();
            t.upsert(&[id], Value::Array(src)).await?;
        }
    }
    Ok(())
}

/// Rows one commit touches at `rows` per table (0.1%, at least 4).
fn width(table: &str, rows: usize) -> i64 {
    let n = if table == "department" {
        departments(rows) as usize * 20
    } else {
        rows
    };
    (n as i64 / 1000).max(4)
}

/// Writes the six tables under `dir`: version 0 with `rows` rows each (departments:
/// [`departments`]), then `history` commits per table (update, insert, delete, merge
/// in turn) over the first quarter of the ids.
pub async fn write_history(dir: &Path, rows: usize, history: usize) -> DynResult<()> {
    for (table, cols, id) in TABLES {
        let mut t = open_or_create(dir, table, cols, rows).await?;
        let w = width(table, rows);
        for k in 0..history {
            let lo = 1 + k as i64 * w;
            let fresh = 10_000_000 + k as i64 * w;
            commit(
                &mut t,
                (table, id),
                k,
                (lo, lo + w),
                fresh,
                &format!("h{k}"),
                rows,
            )
            .await?;
        }
    }
    Ok(())
}

/// Writes increment `round` (0, 1, ...): `commits` small commits per table over ids no
/// earlier commit touched, each changing every row it touches.
pub async fn write_increment(
    dir: &Path,
    rows: usize,
    round: usize,
    commits: usize,
) -> DynResult<()> {
    for (table, cols, id) in TABLES {
        let mut t = open_or_create(dir, table, cols, rows).await?;
        let w = width(table, rows);
        let n = if table == "department" {
            departments(rows)
        } else {
            rows as i64
        };
        // Ids from the middle of the table upwards, one slot per (round, commit).
        for k in 0..commits {
            let slot = (round * commits + k) as i64;
            let lo = n / 2 + slot * w;
            if lo + w > n {
                return Err(format!("increment {round} runs past the {n} ids of {table}").into());
            }
            let fresh = 20_000_000 + slot * w;
            commit(
                &mut t,
                (table, id),
                k,
                (lo, lo + w),
                fresh,
                &format!("r{round}c{k}"),
                rows,
            )
            .await?;
        }
    }
    Ok(())
}
