//! Random commits: a seeded PRNG and the generator of one operation on one table,
//! drawn against the model so that primary keys stay unique, MERGE sources are
//! unique on their key, and most predicates hit live rows.

use std::collections::BTreeSet;

use super::model::{spec, Cell, Model, Op, Pred, Row, Spec};

/// splitmix64: a seed fully determines the sequence.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }

    pub fn percent(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.next() as usize % items.len()]
    }
}

/// The id space of each `long` column: small, so that joins collide often.
fn value_range(col: &str) -> (i64, i64) {
    match col {
        "diasng_id" | "sp_id" | "emp_id" | "manager_id" => (1, 30),
        "dept_id" => (1, 8),
        "pub_id" | "uid" => (1, 20),
        "institution_key" => (1, 12),
        "rank" => (1, 4),
        "year" => (2018, 2025),
        other => panic!("no value range for {other}"),
    }
}

/// A random value for `col`: join and payload columns are sometimes null.
pub fn value(rng: &mut Rng, s: &Spec, col: &str) -> Cell {
    let nullable = Some(col) != s.pk && col != "name" && col != "title";
    if nullable && rng.percent(5) {
        return Cell::Null;
    }
    match s.cols[s.col(col)].1 {
        dlink_rt::demo::Col::Str => Cell::Str(format!("{}{}", &col[..1], rng.range(1, 6))),
        dlink_rt::demo::Col::Long => {
            let (lo, hi) = value_range(col);
            Cell::Long(rng.range(lo, hi))
        }
    }
}

fn random_row(rng: &mut Rng, s: &Spec) -> Row {
    s.cols.iter().map(|(c, _)| value(rng, s, c)).collect()
}

/// Up to `n` new rows; a primary key is drawn among the ids not yet live (and not
/// already drawn), so fewer rows come back when the id space is nearly full.
pub fn new_rows(rng: &mut Rng, m: &Model, table: &str, n: usize) -> Vec<Row> {
    let s = spec(table);
    let Some(pk) = s.pk else {
        return (0..n).map(|_| random_row(rng, s)).collect();
    };
    let (lo, hi) = value_range(pk);
    let mut taken: BTreeSet<i64> = m.ids(table).into_iter().collect();
    let mut out = Vec::new();
    for _ in 0..n {
        let free: Vec<i64> = (lo..=hi).filter(|i| !taken.contains(i)).collect();
        if free.is_empty() {
            break;
        }
        let id = rng.pick(&free);
        taken.insert(id);
        let mut row = random_row(rng, s);
        row[s.col(pk)] = Cell::Long(id);
        out.push(row);
    }
    out
}

/// A predicate on `col`: one value (usually a live one), a residue or a range.
fn predicate(rng: &mut Rng, m: &Model, s: &Spec, col: &'static str, bulk: bool) -> Pred {
    let live: Vec<i64> = m
        .rows(s.name)
        .iter()
        .filter_map(|r| r[s.col(col)].long())
        .collect();
    let (lo, hi) = value_range(col);
    if !bulk {
        let v = if !live.is_empty() && rng.percent(90) {
            rng.pick(&live)
        } else {
            rng.range(lo, hi)
        };
        return Pred::Eq(col, v);
    }
    if rng.percent(50) {
        let m = rng.range(2, 4);
        Pred::Mod(col, m, rng.range(0, m - 1))
    } else {
        let a = rng.range(lo, hi);
        let width = (hi - lo) / 3;
        Pred::Between(col, a, (a + rng.range(0, width)).min(hi))
    }
}

/// A predicate picking one row: by primary key, or by all the columns of a live row
/// for the tables without one (which hits its duplicates too).
fn one_row(rng: &mut Rng, m: &Model, s: &Spec) -> Pred {
    if let Some(pk) = s.pk {
        return predicate(rng, m, s, pk, false);
    }
    let rows = m.rows(s.name);
    let row = if rows.is_empty() {
        random_row(rng, s)
    } else {
        rows[rng.next() as usize % rows.len()].clone()
    };
    let parts: Vec<Pred> = s
        .cols
        .iter()
        .zip(&row)
        .filter_map(|((c, _), v)| Some(Pred::Eq(c, v.long()?)))
        .collect();
    if parts.is_empty() {
        predicate(rng, m, s, s.cols[0].0, false)
    } else {
        Pred::And(parts)
    }
}

/// The long columns a predicate may filter on.
fn filter_col(rng: &mut Rng, s: &Spec) -> &'static str {
    let longs: Vec<&'static str> = s
        .cols
        .iter()
        .filter(|(_, t)| *t == dlink_rt::demo::Col::Long)
        .map(|(c, _)| *c)
        .collect();
    rng.pick(&longs)
}

/// The kinds of commit the generator draws.
#[derive(Clone, Copy, Debug)]
enum Kind {
    AppendOne,
    AppendBulk,
    PayloadUpdate,
    JoinUpdate,
    DeleteOne,
    DeleteBulk,
    Merge,
}

/// One random commit on `table`.
pub fn random_op(rng: &mut Rng, m: &Model, table: &str) -> Op {
    use Kind::*;
    let s = spec(table);
    let bulk = rng.percent(35);
    let kind = rng.pick(&[
        AppendOne,
        AppendBulk,
        PayloadUpdate,
        PayloadUpdate,
        JoinUpdate,
        JoinUpdate,
        DeleteOne,
        DeleteBulk,
        Merge,
        Merge,
    ]);
    match kind {
        AppendOne => Op::Insert(new_rows(rng, m, table, 1)),
        AppendBulk => {
            let n = rng.range(5, 20) as usize;
            Op::Insert(new_rows(rng, m, table, n))
        }
        PayloadUpdate | JoinUpdate => {
            let payload = s.payload_cols();
            let cols = match kind {
                JoinUpdate if !s.join_cols.is_empty() => s.join_cols.to_vec(),
                _ if payload.is_empty() => s.join_cols.to_vec(),
                _ => payload,
            };
            let mut set: Vec<(&'static str, Cell)> = Vec::new();
            for _ in 0..rng.range(1, cols.len() as i64) {
                let c = rng.pick(&cols);
                if !set.iter().any(|(d, _)| *d == c) {
                    set.push((c, value(rng, s, c)));
                }
            }
            let pred = if bulk {
                let col = filter_col(rng, s);
                predicate(rng, m, s, col, true)
            } else {
                one_row(rng, m, s)
            };
            Op::Update(pred, set)
        }
        DeleteOne => Op::Delete(one_row(rng, m, s)),
        DeleteBulk => {
            let col = filter_col(rng, s);
            Op::Delete(predicate(rng, m, s, col, true))
        }
        Merge => merge(rng, m, s),
    }
}

/// A MERGE source unique on its key: some rows matching live rows (with new values in
/// the other columns), some new.
fn merge(rng: &mut Rng, m: &Model, s: &Spec) -> Op {
    let on: Vec<&'static str> = rng.pick(s.merge_keys).to_vec();
    let on_idx: Vec<usize> = on.iter().map(|c| s.col(c)).collect();
    let key_of = |r: &Row| -> Vec<Cell> { on_idx.iter().map(|&i| r[i].clone()).collect() };
    let mut seen = BTreeSet::new();
    let mut source = Vec::new();
    let live = m.rows(s.name);
    for _ in 0..rng.range(0, 4).min(live.len() as i64) {
        let mut r = random_row(rng, s);
        let target = &live[rng.next() as usize % live.len()];
        for &i in &on_idx {
            r[i] = target[i].clone();
        }
        if key_of(&r).iter().all(|c| *c != Cell::Null) && seen.insert(key_of(&r)) {
            source.push(r);
        }
    }
    let n = rng.range(0, 4) as usize;
    for mut r in new_rows(rng, m, s.name, n) {
        for (&i, c) in on_idx.iter().zip(&on) {
            if r[i] == Cell::Null {
                let (lo, hi) = value_range(c);
                r[i] = Cell::Long(rng.range(lo, hi));
            }
        }
        if key_of(&r).iter().all(|c| *c != Cell::Null) && seen.insert(key_of(&r)) {
            source.push(r);
        }
    }
    Op::Upsert(on, source)
}
