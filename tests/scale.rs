//! The example pipelines at a user's scale: 100k-row upstream tables written with
//! deltalake (`dlink_rt::bench::examples`), a first run over their history and a
//! 20-commit increment, each checked against keys recomputed from table snapshots
//! (not from the change feed dlink-rt reads); a plugin's lookup of a million keys; and
//! the lookup index against snapshot reads at every version.
//!
//! The tables are written once per test binary: state A (load + history) and state B
//! (A + the increment). Delta writes never modify a file, so a copy of A that later
//! receives B's files has gone through exactly the increment's commits.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use common::{dlink, link_keys, plugin, text, Workspace};
use deltalake::arrow::array::{ArrayRef, Int64Array, RecordBatch};
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use deltalake::arrow::util::display::array_value_to_string;
use dlink_rt::bench::examples::{write_history, write_increment};
use dlink_rt::config::{LookupSettings, Upstream};
use dlink_rt::lookup::{Indexes, TableLookup};
use dlink_rt::plugin::Lookup;

const ROWS: usize = 100_000;
const HISTORY: usize = 4;
const INCREMENT: usize = 20;

struct Fixture {
    _dir: tempfile::TempDir,
    /// The tables after the load and history.
    a: PathBuf,
    /// The same tables after the increment too.
    b: PathBuf,
}

/// Writes states A and B once for the whole test binary (on a runtime of its own).
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        std::thread::spawn(|| {
            let dir = tempfile::tempdir().expect("temp dir");
            let (a, b) = (dir.path().join("a"), dir.path().join("b"));
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            rt.block_on(async {
                write_history(&b, ROWS, HISTORY)
                    .await
                    .expect("write history");
                copy_dir(&b, &a);
                write_increment(&b, ROWS, 0, INCREMENT)
                    .await
                    .expect("write increment");
            });
            Fixture { _dir: dir, a, b }
        })
        .join()
        .expect("fixture writer")
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("file type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

/// A table's rows at `version`, each as its values in table column order.
async fn snapshot(table: &Path, version: i64) -> (Vec<String>, Vec<Vec<String>>) {
    let u = Upstream::new("t", table.display().to_string());
    let t = dlink_rt::cdf::open_at(&u, version)
        .await
        .expect("open at version");
    let ctx = dlink_rt::cdf::session();
    let batches = ctx
        .read_table(t.table_provider().await.expect("provider"))
        .expect("read")
        .collect()
        .await
        .expect("collect");
    let schema = dlink_rt::cdf::arrow_schema(&u, &t).expect("schema");
    let names = schema.fields().iter().map(|f| f.name().clone()).collect();
    (names, rows_of(&batches))
}

fn rows_of(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for b in batches {
        for i in 0..b.num_rows() {
            rows.push(
                b.columns()
                    .iter()
                    .map(|c| array_value_to_string(c, i).expect("display"))
                    .collect(),
            );
        }
    }
    rows
}

/// Rows in one multiset and not the other (both sides).
fn diff(a: &[Vec<String>], b: &[Vec<String>]) -> Vec<Vec<String>> {
    let mut count: HashMap<&Vec<String>, i64> = HashMap::new();
    for r in a {
        *count.entry(r).or_default() += 1;
    }
    for r in b {
        *count.entry(r).or_default() -= 1;
    }
    let mut out = Vec::new();
    for (r, n) in count {
        for _ in 0..n.abs() {
            out.push(r.clone());
        }
    }
    out
}

fn column(names: &[String], rows: &[Vec<String>], col: &str) -> BTreeSet<i64> {
    let i = names.iter().position(|n| n == col).expect("column");
    rows.iter()
        .map(|r| r[i].parse().expect("an integer"))
        .collect()
}

fn latest(table: &Path) -> i64 {
    let mut v = 0;
    while table
        .join(format!("_delta_log/{:020}.json", v + 1))
        .exists()
    {
        v += 1;
    }
    v
}

/// The rows of `table` that changed in versions `from+1..=to`, recomputed from
/// snapshots: the difference of consecutive snapshots from `from` (`-1`: the empty
/// table) to `to` when `consecutive`, else of the two snapshots at `from` and `to`.
async fn changed(
    table: &Path,
    from: i64,
    to: i64,
    consecutive: bool,
) -> (Vec<String>, Vec<Vec<String>>) {
    let mut prev = if from < 0 {
        (Vec::new(), Vec::new())
    } else {
        snapshot(table, from).await
    };
    let steps: Vec<i64> = if consecutive {
        (from + 1..=to).collect()
    } else {
        vec![to]
    };
    let mut out = Vec::new();
    for v in steps {
        let next = snapshot(table, v).await;
        out.extend(diff(&prev.1, &next.1));
        prev = next;
    }
    (prev.0, out)
}

/// Rows of `table` at `version` whose `by` is in `keys`, their `col` values.
async fn looked_up(
    table: &Path,
    version: i64,
    by: &str,
    keys: &BTreeSet<i64>,
    col: &str,
) -> BTreeSet<i64> {
    let (names, rows) = snapshot(table, version).await;
    let (bi, ci) = (
        names.iter().position(|n| n == by).expect("by"),
        names.iter().position(|n| n == col).expect("col"),
    );
    rows.iter()
        .filter(|r| r[bi].parse().is_ok_and(|k: i64| keys.contains(&k)))
        .map(|r| r[ci].parse().expect("an integer"))
        .collect()
}

/// The affected keys the pipeline must report for versions `from+1..=to` of every
/// table (consecutive snapshots or the two ends), lookups as of `to`.
async fn oracle(
    pipeline: &str,
    tables: &Path,
    from: i64,
    to: i64,
    consecutive: bool,
) -> BTreeSet<i64> {
    let t = |n: &str| tables.join(n);
    let ch = |n: &'static str| {
        let p = t(n);
        async move { changed(&p, from, to.min(latest(&p)), consecutive).await }
    };
    let to_of = |n: &str| to.min(latest(&t(n)));
    match pipeline {
        "sp_affiliation" => {
            let (n1, r1) = ch("spmaster").await;
            let (n2, r2) = ch("affiliation").await;
            &column(&n1, &r1, "diasng_id") | &column(&n2, &r2, "sp_id")
        }
        "pub_authors" => {
            let (n1, r1) = ch("publications").await;
            let (n2, r2) = ch("author_publication_link").await;
            &column(&n1, &r1, "pub_id") | &column(&n2, &r2, "pub_id")
        }
        "emp_dept" => {
            let (n1, r1) = ch("employee").await;
            let (n2, r2) = ch("department").await;
            let depts = column(&n2, &r2, "dept_id");
            let members = looked_up(
                &t("employee"),
                to_of("employee"),
                "dept_id",
                &depts,
                "emp_id",
            )
            .await;
            &column(&n1, &r1, "emp_id") | &members
        }
        _ => {
            let (n1, r1) = ch("author_publication_link").await;
            let (n2, r2) = ch("publications").await;
            let pubs = column(&n2, &r2, "pub_id");
            let link = "author_publication_link";
            let authors = looked_up(&t(link), to_of(link), "pub_id", &pubs, "uid").await;
            &column(&n1, &r1, "uid") | &authors
        }
    }
}

/// A first run and a 20-commit increment of one example pipeline at 100k rows.
async fn first_run_and_increment(name: &str, upstreams: &[&str], key: &str) {
    let f = fixture();
    let ws = Workspace::new();
    let tables = ws.path().join("tables");
    copy_dir(&f.a, &tables);
    let file = ws.pipeline(name, name, upstreams, &plugin(name), key, 100);
    ws.run_ok(&file);
    let first = link_keys(&file, 1..=i64::MAX).await;
    let want = oracle(name, &tables, -1, i64::MAX, true).await;
    assert_eq!(first.len(), want.len(), "{name}: first run, key count");
    assert!(
        first == want,
        "{name}: first run: keys differ from the snapshots' ({} extra, {} missing)",
        first.difference(&want).count(),
        want.difference(&first).count()
    );
    let (_, cp) = common::link_state(&file).await.expect("link state");
    let before: Vec<i64> = upstreams.iter().map(|u| latest(&tables.join(u))).collect();

    copy_dir(&f.b, &tables);
    ws.run_ok(&file);
    let incr = link_keys(&file, cp.batch_id + 1..=i64::MAX).await;
    // Both ends of the increment: every table went from its state-A version to B's.
    let from = before.iter().copied().min().unwrap_or(0);
    assert!(
        before.iter().all(|v| *v == from),
        "the history gives every table the same versions"
    );
    let want = oracle(name, &tables, from, i64::MAX, false).await;
    assert!(!want.is_empty());
    assert!(
        incr == want,
        "{name}: increment: keys differ from the two snapshots' ({} extra, {} missing)",
        incr.difference(&want).count(),
        want.difference(&incr).count()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sp_affiliation_at_100k_rows() {
    first_run_and_increment("sp_affiliation", &["spmaster", "affiliation"], "diasng_id").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pub_authors_at_100k_rows() {
    first_run_and_increment(
        "pub_authors",
        &["publications", "author_publication_link"],
        "pub_id",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn emp_dept_at_100k_rows() {
    first_run_and_increment("emp_dept", &["employee", "department"], "emp_id").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn author_pubs_at_100k_rows() {
    first_run_and_increment(
        "author_pubs",
        &["publications", "author_publication_link"],
        "uid",
    )
    .await;
}

/// A plugin's lookup of a million keys returns its rows, or fails the batch naming
/// `max_lookup_rows`: never a signal.
#[tokio::test(flavor = "multi_thread")]
async fn lookup_of_a_million_keys_returns_rows_or_names_the_limit() {
    let f = fixture();
    let ws = Workspace::new();
    copy_dir(&f.a, &ws.path().join("tables"));
    let write = |file: &str, limits: &str| {
        let text = format!(
            "name = \"{file}\"\nupstreams = [\"department\"]\nlookups = [\"employee\"]\n\n\
             [plugin]\npath = \"{}\"\n{limits}\n[link]\nuri = \"links/{file}\"\nkeys = [{{ name = \"emp_id\", type = \"long\" }}]\n",
            plugin("huge_lookup").display()
        );
        let p = ws.path().join(format!("{file}.toml"));
        std::fs::write(&p, text).expect("write pipeline");
        p
    };
    let ok = write("huge", "");
    ws.run_ok(&ok);
    let employee = ws.table("employee");
    let (names, rows) = snapshot(&employee, latest(&employee)).await;
    let asked: BTreeSet<i64> = column(&names, &rows, "emp_id")
        .into_iter()
        .filter(|e| (1..=1_000_000).contains(e))
        .collect();
    assert!(asked.len() > 90_000);
    assert!(
        link_keys(&ok, 1..=i64::MAX).await == asked,
        "every employee asked for, no other"
    );

    let capped = write("capped", "[plugin.limits]\nmax_lookup_rows = 1000\n");
    let o = dlink().arg("run").arg(&capped).output().expect("run");
    let (out, err) = text(&o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "a failed batch, not a signal:\n{out}\n{err}"
    );
    assert!(
        err.contains("max_lookup_rows") && err.contains("more than 1000 rows"),
        "{err}"
    );
}

fn keys_ipc(keys: &[i64]) -> Vec<u8> {
    let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)]));
    let arr: ArrayRef = Arc::new(Int64Array::from(keys.to_vec()));
    let b = RecordBatch::try_new(schema.clone(), vec![arr]).expect("batch");
    dlink_rt::ipc::encode(&schema, &[b]).expect("ipc")
}

/// The answer of a lookup as a sorted multiset of rows.
fn answer_rows(bytes: &[u8]) -> Vec<Vec<String>> {
    let (_, batches) = dlink_rt::ipc::decode(bytes).expect("ipc answer");
    let mut rows = rows_of(&batches);
    rows.sort();
    rows
}

/// The index answers exactly as a snapshot read at the pinned version does, while it
/// advances along the change feed through updates, deletes and merges, and when asked
/// for an older version than it holds.
#[tokio::test(flavor = "multi_thread")]
async fn lookup_index_answers_as_the_snapshot_at_every_pinned_version() {
    let f = fixture();
    let cases = [
        ("employee", "dept_id", "emp_id"),
        ("author_publication_link", "pub_id", "uid"),
    ];
    for (table, by, _) in cases {
        let path = f.b.join(table);
        let u = Upstream::new(table, path.display().to_string());
        let indexes = Arc::new(Indexes::default());
        let last = latest(&path);
        let keys: Vec<i64> = (0..4000)
            .map(|i| i * 13 % 60_000)
            .chain([-5, 20_000_007])
            .collect();
        let wanted: BTreeSet<i64> = keys.iter().copied().collect();
        // Forward (the index advances), then back to an older version (a scan).
        for version in [0, 2, HISTORY as i64, last - 7, last, 1] {
            let lookup = |index: bool| {
                table_lookup(
                    &u,
                    version,
                    &indexes,
                    LookupSettings {
                        index,
                        memory_mb: 512,
                        // The index from the first lookup on, at every version.
                        index_after: 0,
                    },
                )
            };
            let (names, rows) = snapshot(&path, version).await;
            let bi = names.iter().position(|n| n == by).expect("column");
            let mut want: Vec<Vec<String>> = rows
                .into_iter()
                .filter(|r| r[bi].parse().is_ok_and(|k: i64| wanted.contains(&k)))
                .collect();
            want.sort();
            for index in [true, false] {
                let got = lookup(index)
                    .lookup(table, by, &keys_ipc(&keys), &[])
                    .await
                    .expect("lookup");
                assert_eq!(
                    answer_rows(&got),
                    want,
                    "{table}.{by} at version {version}, index {index}"
                );
            }
        }
        let stats = indexes.stats().await;
        assert_eq!(stats.len(), 1, "one index of {table}.{by}");
        assert_eq!(
            stats[0].version, last,
            "the index stays at the newest version asked"
        );
    }
}

/// The lookup service of a pipeline `p` that may look up `u` at `version`.
fn table_lookup(
    u: &Upstream,
    version: i64,
    indexes: &Arc<Indexes>,
    settings: LookupSettings,
) -> TableLookup {
    TableLookup::new(
        "p",
        10_000_000,
        [(u.clone(), version)],
        Arc::default(),
        dlink_rt::cdf::session(),
        indexes.clone(),
        settings,
    )
}

/// An index that would exceed its memory budget is dropped: lookups are answered by
/// scans, with the same rows.
#[tokio::test(flavor = "multi_thread")]
async fn lookup_index_over_budget_falls_back_to_a_scan() {
    let f = fixture();
    let path = f.b.join("employee");
    let u = Upstream::new("employee", path.display().to_string());
    let version = latest(&path);
    let keys: Vec<i64> = (1..=50).collect();
    let mut answers = Vec::new();
    for memory_mb in [1, 512] {
        let indexes = Arc::new(Indexes::default());
        let lookup = table_lookup(
            &u,
            version,
            &indexes,
            LookupSettings {
                index: true,
                memory_mb,
                index_after: 0,
            },
        );
        let got = lookup
            .lookup("employee", "dept_id", &keys_ipc(&keys), &["emp_id".into()])
            .await
            .expect("lookup");
        answers.push(answer_rows(&got));
        assert_eq!(
            indexes.stats().await.len(),
            usize::from(memory_mb > 1),
            "an index is kept within 512 MiB, not past 1 MiB"
        );
    }
    assert_eq!(answers[0], answers[1]);
    assert!(
        answers[0].len() > 1000,
        "about 50 employees in each of 50 departments"
    );
}

/// By default the first lookup of a table and column is a scan and builds no index (a
/// one-shot run that asks once never pays for one); the second builds it, with the
/// same answer.
#[tokio::test(flavor = "multi_thread")]
async fn lookup_index_is_built_on_the_second_lookup() {
    let f = fixture();
    let path = f.b.join("employee");
    let u = Upstream::new("employee", path.display().to_string());
    let version = latest(&path);
    let keys: Vec<i64> = (1..=50).collect();
    let indexes = Arc::new(Indexes::default());
    let lookup = table_lookup(&u, version, &indexes, LookupSettings::default());
    let mut answers = Vec::new();
    for built in [0, 1, 1] {
        let got = lookup
            .lookup("employee", "dept_id", &keys_ipc(&keys), &["emp_id".into()])
            .await
            .expect("lookup");
        answers.push(answer_rows(&got));
        assert_eq!(indexes.stats().await.len(), built, "indexes after a lookup");
    }
    assert!(
        answers[0].len() > 1000,
        "about 50 employees in each of 50 departments"
    );
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[1], answers[2]);
}

/// The change feed read straight from the files (the default) gives the same rows as
/// deltalake's change-feed scan, commit timestamps included, for every example table
/// over its whole history, the increment alone, and one change type with two columns.
#[tokio::test(flavor = "multi_thread")]
async fn the_direct_change_feed_reader_reads_like_deltalakes_scan_at_100k_rows() {
    use dlink_rt::cdf::{read_changes_with, Reader};
    let f = fixture();
    let ctx = dlink_rt::cdf::session();
    for (name, cols, _) in dlink_rt::bench::examples::TABLES {
        let path = f.b.join(name);
        let u = Upstream::new(name, path.display().to_string());
        let t = dlink_rt::cdf::open_latest(&u).await.expect("open");
        let (a_end, b_end) = (latest(&f.a.join(name)), latest(&path));
        let mut narrow = u.clone();
        narrow.columns = Some(cols.iter().take(2).map(|(c, _)| c.to_string()).collect());
        narrow.change_types = Some(vec!["update_postimage".into(), "delete".into()]);
        for (up, s, e) in [(&u, 0, b_end), (&u, a_end + 1, b_end), (&narrow, 0, b_end)] {
            let read = |r| read_changes_with(&ctx, up, &t, s, e, r);
            let direct = read(Reader::Auto).await.expect("direct read");
            let scan = read(Reader::Deltalake).await.expect("deltalake's scan");
            assert_eq!(direct.schema, scan.schema, "{name} {s}..={e}: schema");
            let (d, r) = (rows_of(&direct.batches), rows_of(&scan.batches));
            assert!(
                d.len() > 100,
                "{name} {s}..={e}: only {} change rows",
                d.len()
            );
            let differ = diff(&d, &r);
            assert!(
                differ.is_empty(),
                "{name} {s}..={e}: {} rows differ, e.g. {:?}",
                differ.len(),
                differ.first()
            );
        }
    }
}
