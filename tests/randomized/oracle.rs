//! The oracle: each pipeline's entities recomputed from a snapshot of the model.
//! An entity is everything a key's downstream output is computed from (the key's own
//! row and its joined rows); a key is *changed* between two snapshots when its entity
//! differs. A key absent from a snapshot has the empty entity.

use std::collections::{BTreeMap, BTreeSet};

use super::model::{spec, Cell, Model, Row};

/// The joined rows of one key, each prefixed with the name of its table (or joined
/// pair), sorted so that two entities compare as multisets.
pub type Entity = Vec<Row>;

fn tagged(tag: &str, parts: &[&[Cell]]) -> Row {
    let mut row = vec![Cell::Str(tag.into())];
    for p in parts {
        row.extend(p.iter().cloned());
    }
    row
}

/// Rows of a table with a unique key, by key.
fn by_pk<'a>(m: &'a Model, table: &str) -> BTreeMap<i64, &'a Row> {
    let s = spec(table);
    let pk = s.col(s.pk.expect("table has a primary key"));
    m.rows(table)
        .iter()
        .filter_map(|r| Some((r[pk].long()?, r)))
        .collect()
}

/// Adds `row` to the entity of `key` (skipping null keys).
fn add(out: &mut BTreeMap<i64, Entity>, key: &Cell, row: Row) {
    if let Some(k) = key.long() {
        out.entry(k).or_default().push(row);
    }
}

/// Every key's entity in snapshot `m` for pipeline `name`.
pub fn entities(name: &str, m: &Model) -> BTreeMap<i64, Entity> {
    let mut out = BTreeMap::new();
    match name {
        // diasng_id -> (its spmaster row, its affiliations)
        "sp_affiliation" => {
            for r in m.rows("spmaster") {
                add(&mut out, &r[0], tagged("spmaster", &[r]));
            }
            for r in m.rows("affiliation") {
                add(&mut out, &r[0], tagged("affiliation", &[r]));
            }
        }
        // emp_id -> (its employee row, the department of its dept_id)
        "emp_dept" => {
            let depts = by_pk(m, "department");
            for e in m.rows("employee") {
                let dept = e[2].long().and_then(|d| depts.get(&d));
                add(&mut out, &e[0], tagged("employee", &[e]));
                if let Some(d) = dept {
                    add(&mut out, &e[0], tagged("department", &[d]));
                }
            }
        }
        // pub_id -> (its publication row, its author links)
        "pub_authors" => {
            for r in m.rows("publications") {
                add(&mut out, &r[0], tagged("publication", &[r]));
            }
            for r in m.rows("author_publication_link") {
                add(&mut out, &r[0], tagged("link", &[r]));
            }
        }
        // uid -> its links, each joined with the publication it points to
        "author_pubs" => {
            let pubs = by_pk(m, "publications");
            let none = [Cell::Null, Cell::Null, Cell::Null];
            for l in m.rows("author_publication_link") {
                let p = l[0].long().and_then(|p| pubs.get(&p));
                let p: &[Cell] = p.map_or(&none, |p| p.as_slice());
                add(&mut out, &l[1], tagged("link+publication", &[l, p]));
            }
        }
        other => panic!("no oracle for pipeline {other}"),
    }
    for e in out.values_mut() {
        e.sort();
    }
    out
}

/// The keys whose entity differs between the snapshots `before` and `after`.
pub fn changed_keys(name: &str, before: &Model, after: &Model) -> BTreeSet<i64> {
    let (b, a) = (entities(name, before), entities(name, after));
    b.keys()
        .chain(a.keys())
        .filter(|k| b.get(k) != a.get(k))
        .copied()
        .collect()
}

/// The entity of `key` before and after, for failure messages.
pub fn explain(name: &str, key: i64, before: &Model, after: &Model) -> String {
    format!(
        "before: {:?}\n  after:  {:?}",
        entities(name, before).get(&key),
        entities(name, after).get(&key)
    )
}
