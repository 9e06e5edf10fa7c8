//! The example pipelines at a user's scale: 100k-row upstream tables written with
//! deltalake (`dlink_bench::examples`), a first run over their history and a
//! 20-commit increment, each checked against keys recomputed from table snapshots
//! (not from the change feed dlink-rt reads); a plugin's lookup of a million keys; and
//! the lookup index against snapshot reads at every version.
//!
//! The tables are written once per test binary: state A (load + history) and state B
//! (A + the increment). Delta writes never modify a file, so a copy of A that later
//! receives B's files has gone through exactly the increment's commits.

mod common;
#[path = "scale/lookups.rs"]
mod lookups;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use common::{dlink, link_keys, plugin, text, Workspace};
use deltalake::arrow::array::{ArrayRef, Int64Array, RecordBatch};
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use deltalake::arrow::util::display::array_value_to_string;
use dlink_bench::examples::{write_history, write_increment};
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
    first_run_and_increment_in_chunks(name, name, upstreams, key, None).await;
}

/// [`first_run_and_increment`] with the plugin called per `chunk_rows` change rows
/// (the pipeline file's `chunk_rows`; `None`: the default, one call for batches up to
/// 65,536 rows).
async fn first_run_and_increment_in_chunks(
    name: &str,
    plugin_name: &str,
    upstreams: &[&str],
    key: &str,
    chunk_rows: Option<u64>,
) {
    first_run_and_increment_with(name, plugin_name, upstreams, key, chunk_rows, None, None).await;
}

/// [`first_run_and_increment_in_chunks`] with the catalog's `[engine] memory_mb` set to
/// `memory_mb`: a first run whose key set is over it must say that it spilled; with
/// `query`, the pipeline is that SQL query instead of the plugin.
async fn first_run_and_increment_with(
    name: &str,
    plugin_name: &str,
    upstreams: &[&str],
    key: &str,
    chunk_rows: Option<u64>,
    memory_mb: Option<u64>,
    query: Option<&str>,
) {
    let f = fixture();
    let ws = Workspace::new();
    let tables = ws.path().join("tables");
    copy_dir(&f.a, &tables);
    let file = ws.pipeline(name, name, upstreams, &plugin(plugin_name), key, 100);
    if let Some(q) = query {
        common::to_sql(&file, q);
    }
    if let Some(n) = chunk_rows {
        let text = std::fs::read_to_string(&file).expect("read the pipeline file");
        std::fs::write(&file, format!("chunk_rows = {n}\n{text}")).expect("write it back");
    }
    if let Some(mb) = memory_mb {
        let catalog = ws.path().join("upstreams.toml");
        let text = std::fs::read_to_string(&catalog).expect("read the catalog");
        let spill = ws.path().join("spill");
        std::fs::create_dir_all(&spill).expect("spill folder");
        std::fs::write(
            &catalog,
            format!("{text}\n[engine]\nmemory_mb = {mb}\nspill_dir = \"spill\"\n"),
        )
        .expect("write the catalog");
        let o = common::dlink()
            .args(["run", "--log", "info"])
            .arg(&file)
            .output()
            .expect("run dlink-rt");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{name}: first run failed:\n{err}");
        assert!(
            err.contains("went to disk"),
            "{name}: the first run's key set should have spilled at memory_mb = {mb}:\n{err}"
        );
        let left: Vec<_> = std::fs::read_dir(&spill).expect("spill folder").collect();
        assert!(left.is_empty(), "spill files left behind: {left:?}");
    } else {
        ws.run_ok(&file);
    }
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

/// A batch over `chunk_rows` calls the plugin once per chunk (here 1,000 rows, so the
/// 100k-row load is a hundred calls and the history's update commits fall across chunk
/// edges): the keys are still exactly the snapshots' (pairs kept whole, keys merged).
#[tokio::test(flavor = "multi_thread")]
async fn sp_affiliation_at_100k_rows_in_chunks_of_1000() {
    first_run_and_increment_in_chunks(
        "sp_affiliation",
        "sp_affiliation",
        &["spmaster", "affiliation"],
        "diasng_id",
        Some(1000),
    )
    .await;
}

/// The same with the contract 0.1 build of the plugin (one combined output stream per
/// call): its chunks' keys merge the same way.
#[tokio::test(flavor = "multi_thread")]
async fn sp_affiliation_contract_0_1_at_100k_rows_in_chunks_of_1000() {
    first_run_and_increment_in_chunks(
        "sp_affiliation",
        "sp_affiliation_v0_1",
        &["spmaster", "affiliation"],
        "diasng_id",
        Some(1000),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sp_affiliation_contract_0_2_at_100k_rows_in_chunks_of_1000() {
    first_run_and_increment_in_chunks(
        "sp_affiliation",
        "sp_affiliation_v0_2",
        &["spmaster", "affiliation"],
        "diasng_id",
        Some(1000),
    )
    .await;
}

/// The contract 0.3 types are readable without an Arrow library: `sp_affiliation` in
/// Python (plugins/python, built by componentize-py), reading and returning plain
/// lists, commits the keys the oracle computes.
#[tokio::test(flavor = "multi_thread")]
async fn sp_affiliation_in_python_at_100k_rows_in_chunks_of_1000() {
    first_run_and_increment_in_chunks(
        "sp_affiliation",
        "sp_affiliation_py",
        &["spmaster", "affiliation"],
        "diasng_id",
        Some(1000),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn emp_dept_at_100k_rows_in_chunks_of_1000() {
    first_run_and_increment_in_chunks(
        "emp_dept",
        "emp_dept",
        &["employee", "department"],
        "emp_id",
        Some(1000),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn author_pubs_at_100k_rows_in_chunks_of_1000() {
    first_run_and_increment_in_chunks(
        "author_pubs",
        "author_pubs",
        &["publications", "author_publication_link"],
        "uid",
        Some(1000),
    )
    .await;
}

/// A first run whose key set is over `[engine] memory_mb` (1 MiB; the first run's
/// 100k keys take about 4 MiB, the chunks' outputs more): the set spills to disk in
/// parts, is merged back by DataFusion within the same budget and streamed into the
/// link table; the keys are still exactly the snapshots', with every cause (the
/// increment's keys come from both upstreams).
#[tokio::test(flavor = "multi_thread")]
async fn pub_authors_at_100k_rows_with_its_key_set_spilled() {
    first_run_and_increment_with(
        "pub_authors",
        "pub_authors",
        &["publications", "author_publication_link"],
        "pub_id",
        Some(1000),
        Some(1),
        None,
    )
    .await;
}

/// `emp_dept` as a SQL query, its change rows streamed into the query in pieces of at
/// most 1,000 rows (the 100k-row load) and its rows folded into the key set as they
/// come: the keys are the snapshots'.
#[tokio::test(flavor = "multi_thread")]
async fn emp_dept_in_sql_at_100k_rows_streamed_in_chunks_of_1000() {
    first_run_and_increment_with(
        "emp_dept",
        "emp_dept",
        &["employee", "department"],
        "emp_id",
        Some(1000),
        None,
        Some(
            "SELECT emp_id, 'employee' AS _upstream FROM employee_changes
             UNION ALL
             SELECT e.emp_id, 'department' AS _upstream
             FROM department_changes d JOIN employee e ON e.dept_id = d.dept_id",
        ),
    )
    .await;
}

/// A query that scans a streamed change table twice (the second scan reads the files
/// again) and returns no `_upstream` (every key's causes are the upstreams with
/// change rows, counted from all of them), with its key set spilled past 1 MiB.
#[tokio::test(flavor = "multi_thread")]
async fn emp_dept_in_sql_scanning_its_changes_twice_with_its_key_set_spilled() {
    first_run_and_increment_with(
        "emp_dept",
        "emp_dept",
        &["employee", "department"],
        "emp_id",
        Some(1000),
        Some(1),
        Some(
            "SELECT emp_id FROM employee_changes WHERE _change_type <> 'delete'
             UNION ALL
             SELECT emp_id FROM employee_changes WHERE _change_type = 'delete'
             UNION ALL
             SELECT e.emp_id FROM department_changes d JOIN employee e ON e.dept_id = d.dept_id",
        ),
    )
    .await;
}

/// The change feed read straight from the files (the default) gives the same rows as
/// deltalake's change-feed scan, commit timestamps included, for every example table
/// over its whole history, the increment alone, and one change type with two columns.
#[tokio::test(flavor = "multi_thread")]
async fn the_direct_change_feed_reader_reads_like_deltalakes_scan_at_100k_rows() {
    use dlink_rt::cdf::{read_changes_with, Reader};
    let f = fixture();
    let ctx = dlink_rt::cdf::session();
    for (name, cols, _) in dlink_bench::examples::TABLES {
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
