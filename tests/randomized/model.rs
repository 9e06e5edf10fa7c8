//! An in-memory model of the six upstream tables: the rows the test wrote, changed by
//! the same operations (insert, UPDATE, DELETE, MERGE upsert) it commits to Delta.
//! Predicates are small typed trees that render to SQL for deltalake and evaluate
//! here with SQL's null semantics (a comparison with null is not true).

use std::collections::BTreeMap;

use dlink_rt::demo::{
    Col, AFFILIATION, AUTHOR_PUBLICATION_LINK, DEPARTMENT, EMPLOYEE, PUBLICATIONS, SPMASTER,
};
use serde_json::{json, Value};

/// One cell of a row: the tables only have `long` and `string` columns.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cell {
    Null,
    Long(i64),
    Str(String),
}

impl Cell {
    pub fn long(&self) -> Option<i64> {
        match self {
            Cell::Long(v) => Some(*v),
            _ => None,
        }
    }

    fn json(&self) -> Value {
        match self {
            Cell::Null => Value::Null,
            Cell::Long(v) => json!(v),
            Cell::Str(s) => json!(s),
        }
    }

    /// The cell as an SQL literal.
    pub fn sql(&self) -> String {
        match self {
            Cell::Null => "NULL".into(),
            Cell::Long(v) => v.to_string(),
            Cell::Str(s) => format!("'{}'", s.replace('\'', "''")),
        }
    }
}

pub type Row = Vec<Cell>;

pub fn rows_json(rows: &[Row]) -> Value {
    Value::Array(
        rows.iter()
            .map(|r| Value::Array(r.iter().map(Cell::json).collect()))
            .collect(),
    )
}

/// A table of the example pipelines: columns, primary key (kept unique by the
/// generator) and the columns other tables join on.
pub struct Spec {
    pub name: &'static str,
    pub cols: &'static [(&'static str, Col)],
    /// The unique key, for the four entity tables.
    pub pk: Option<&'static str>,
    /// Foreign-key columns whose update moves a row between join partners.
    pub join_cols: &'static [&'static str],
    /// The column sets a MERGE may match on.
    pub merge_keys: &'static [&'static [&'static str]],
}

impl Spec {
    pub fn col(&self, name: &str) -> usize {
        self.cols
            .iter()
            .position(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("{} has no column {name}", self.name))
    }

    /// Columns that are neither the primary key nor a join column.
    pub fn payload_cols(&self) -> Vec<&'static str> {
        self.cols
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| Some(*n) != self.pk && !self.join_cols.contains(n))
            .collect()
    }
}

pub const TABLES: [Spec; 6] = [
    Spec {
        name: "spmaster",
        cols: &SPMASTER,
        pk: Some("diasng_id"),
        join_cols: &[],
        merge_keys: &[&["diasng_id"]],
    },
    Spec {
        name: "affiliation",
        cols: &AFFILIATION,
        pk: None,
        join_cols: &["sp_id"],
        merge_keys: &[&["sp_id", "institution_key"], &["sp_id", "rank"]],
    },
    Spec {
        name: "employee",
        cols: &EMPLOYEE,
        pk: Some("emp_id"),
        join_cols: &["dept_id"],
        merge_keys: &[&["emp_id"]],
    },
    Spec {
        name: "department",
        cols: &DEPARTMENT,
        pk: Some("dept_id"),
        join_cols: &[],
        merge_keys: &[&["dept_id"]],
    },
    Spec {
        name: "publications",
        cols: &PUBLICATIONS,
        pk: Some("pub_id"),
        join_cols: &[],
        merge_keys: &[&["pub_id"]],
    },
    Spec {
        name: "author_publication_link",
        cols: &AUTHOR_PUBLICATION_LINK,
        pk: None,
        join_cols: &["pub_id", "uid"],
        // The matched side takes the other column: a MERGE that re-points links.
        merge_keys: &[&["pub_id"], &["uid"]],
    },
];

pub fn spec(table: &str) -> &'static Spec {
    TABLES
        .iter()
        .find(|s| s.name == table)
        .unwrap_or_else(|| panic!("unknown table {table}"))
}

/// A row filter on `long` columns.
#[derive(Clone, Debug)]
pub enum Pred {
    Eq(&'static str, i64),
    Mod(&'static str, i64, i64),
    Between(&'static str, i64, i64),
    And(Vec<Pred>),
}

impl Pred {
    pub fn sql(&self) -> String {
        match self {
            Pred::Eq(c, v) => format!("{c} = {v}"),
            Pred::Mod(c, m, r) => format!("{c} % {m} = {r}"),
            Pred::Between(c, lo, hi) => format!("{c} >= {lo} AND {c} <= {hi}"),
            Pred::And(ps) => ps
                .iter()
                .map(|p| format!("({})", p.sql()))
                .collect::<Vec<_>>()
                .join(" AND "),
        }
    }

    pub fn matches(&self, spec: &Spec, row: &Row) -> bool {
        let value = |c: &str| row[spec.col(c)].long();
        match self {
            Pred::Eq(c, v) => value(c) == Some(*v),
            Pred::Mod(c, m, r) => value(c).is_some_and(|x| x % m == *r),
            Pred::Between(c, lo, hi) => value(c).is_some_and(|x| *lo <= x && x <= *hi),
            Pred::And(ps) => ps.iter().all(|p| p.matches(spec, row)),
        }
    }
}

/// One commit to one table.
#[derive(Clone, Debug)]
pub enum Op {
    Insert(Vec<Row>),
    /// `UPDATE SET col = literal, ... WHERE pred`.
    Update(Pred, Vec<(&'static str, Cell)>),
    Delete(Pred),
    /// MERGE on `on`: matched rows take the source row, the others are inserted.
    Upsert(Vec<&'static str>, Vec<Row>),
}

/// Every table's rows, in no particular order.
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub tables: BTreeMap<&'static str, Vec<Row>>,
}

impl Model {
    pub fn rows(&self, table: &str) -> &[Row] {
        self.tables.get(table).map_or(&[], Vec::as_slice)
    }

    /// The live values of a primary key.
    pub fn ids(&self, table: &str) -> Vec<i64> {
        let s = spec(table);
        let pk = s.col(s.pk.expect("table has a primary key"));
        self.rows(table)
            .iter()
            .filter_map(|r| r[pk].long())
            .collect()
    }

    pub fn apply(&mut self, table: &'static str, op: &Op) {
        let s = spec(table);
        let rows = self.tables.entry(table).or_default();
        match op {
            Op::Insert(new) => rows.extend(new.iter().cloned()),
            Op::Update(pred, set) => {
                for r in rows.iter_mut().filter(|r| pred.matches(s, r)) {
                    for (c, v) in set {
                        r[s.col(c)] = v.clone();
                    }
                }
            }
            Op::Delete(pred) => rows.retain(|r| !pred.matches(s, r)),
            Op::Upsert(on, source) => {
                let on: Vec<usize> = on.iter().map(|c| s.col(c)).collect();
                let same_key = |t: &Row, src: &Row| {
                    on.iter()
                        .all(|&i| t[i] != Cell::Null && src[i] != Cell::Null && t[i] == src[i])
                };
                let mut matched = vec![false; source.len()];
                for t in rows.iter_mut() {
                    if let Some(i) = source.iter().position(|src| same_key(t, src)) {
                        matched[i] = true;
                        t.clone_from(&source[i]);
                    }
                }
                rows.extend(
                    source
                        .iter()
                        .zip(&matched)
                        .filter(|(_, m)| !**m)
                        .map(|(r, _)| r.clone()),
                );
            }
        }
    }
}

fn row_text(r: &Row) -> String {
    let cells: Vec<String> = r.iter().map(Cell::sql).collect();
    format!("({})", cells.join(", "))
}

/// A one-line description of `op` for failure messages.
pub fn describe(op: &Op) -> String {
    let rows = |rs: &[Row]| rs.iter().map(row_text).collect::<Vec<_>>().join(" ");
    match op {
        Op::Insert(rs) => format!("INSERT {}", rows(rs)),
        Op::Update(p, set) => {
            let set: Vec<String> = set
                .iter()
                .map(|(c, v)| format!("{c} = {}", v.sql()))
                .collect();
            format!("UPDATE SET {} WHERE {}", set.join(", "), p.sql())
        }
        Op::Delete(p) => format!("DELETE WHERE {}", p.sql()),
        Op::Upsert(on, rs) => format!("MERGE ON {} {}", on.join(", "), rows(rs)),
    }
}

impl Op {
    /// True for an insert or merge without rows (not committed).
    pub fn is_empty(&self) -> bool {
        matches!(self, Op::Insert(rs) | Op::Upsert(_, rs) if rs.is_empty())
    }
}

/// True when deltalake 1.1 would write an incomplete change feed for the UPDATE `op`.
/// It derives an UPDATE's CDF as `pre EXCEPT ALL post` (pre-images) and `post EXCEPT
/// ALL pre` (post-images) over the rows of the rewritten files
/// (deltalake-core `operations/cdc.rs`, `CDCTracker::collect`), and DataFusion plans
/// `EXCEPT ALL` as a plain anti join (nulls equal): an updated row's pre-image is
/// dropped when any row after the update equals it, its post-image when any row before
/// equals it. E.g. `UPDATE SET sp_id = 23 WHERE ...` turning (1, 5, 2) into a second
/// (23, 5, 2) records only the pre-image, so nothing tells a reader that researcher 23
/// gained a row. Checked over the whole table, a superset of the rewritten files.
pub fn update_cdf_is_lossy(m: &Model, table: &'static str, op: &Op) -> bool {
    if !matches!(op, Op::Update(..)) {
        return false;
    }
    let before = m.rows(table);
    let mut after = m.clone();
    after.apply(table, op); // an UPDATE changes rows in place: the orders match
    let after = after.rows(table);
    before
        .iter()
        .zip(after)
        .any(|(a, b)| a != b && (after.contains(a) || before.contains(b)))
}
