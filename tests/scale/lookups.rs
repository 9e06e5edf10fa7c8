//! Lookups at scale: a million keys, the index against snapshot reads at every pinned
//! version, its memory budget and when it is built.

use super::*;

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
    capped_lookup(u, version, indexes, settings, 10_000_000)
}

/// [`table_lookup`] returning at most `max_rows` rows a lookup.
fn capped_lookup(
    u: &Upstream,
    version: i64,
    indexes: &Arc<Indexes>,
    settings: LookupSettings,
    max_rows: u64,
) -> TableLookup {
    TableLookup::new(
        "p",
        max_rows,
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

/// A refused lookup says what went wrong as a type (the plugin reads its text): an
/// undeclared table, a missing column, keys of a type the column cannot take, more rows
/// than `max_lookup_rows`, by the index and by the scan alike.
#[tokio::test(flavor = "multi_thread")]
async fn refused_lookups_are_typed() {
    use dlink_rt::lookup::{BadKeys, LookupError};
    let f = fixture();
    let path = f.b.join("employee");
    let u = Upstream::new("employee", path.display().to_string());
    let version = latest(&path);
    let keys = keys_ipc(&(1..=50).collect::<Vec<i64>>());
    for index in [true, false] {
        let settings = LookupSettings {
            index,
            index_after: 0,
            ..LookupSettings::default()
        };
        let lookup = capped_lookup(&u, version, &Arc::default(), settings, 100);
        let e = lookup
            .lookup("payroll", "dept_id", &keys, &[])
            .await
            .unwrap_err();
        assert!(
            matches!(&e, LookupError::UnknownTable { table, known, .. } if table == "payroll" && known == &["employee"]),
            "{e:?}"
        );
        let e = lookup
            .lookup("employee", "nope", &keys, &[])
            .await
            .unwrap_err();
        assert!(
            matches!(&e, LookupError::NoColumn { column, .. } if column == "nope"),
            "{e:?}"
        );
        let e = lookup
            .lookup("employee", "dept_id", &keys, &["salary_x".into()])
            .await
            .unwrap_err();
        assert!(
            matches!(&e, LookupError::NoColumn { column, .. } if column == "salary_x"),
            "{e:?}"
        );
        let e = lookup
            .lookup("employee", "dept_id", b"not arrow", &[])
            .await
            .unwrap_err();
        assert!(
            matches!(
                &e,
                LookupError::BadKeys {
                    problem: BadKeys::NotIpc(_),
                    ..
                }
            ),
            "{e:?}"
        );
        // About 50 employees in each department: 50 departments are far over 100 rows.
        let e = lookup
            .lookup("employee", "dept_id", &keys, &[])
            .await
            .unwrap_err();
        assert!(
            matches!(&e, LookupError::TooManyRows { max_rows: 100, .. }),
            "index {index}: {e:?}"
        );
        assert!(e.to_string().contains("max_lookup_rows"), "{e}");
    }
}
