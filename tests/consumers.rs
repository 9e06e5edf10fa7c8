//! Consumers: `keys --consumer NAME` returns the batches after NAME's acknowledged one,
//! `ack` moves it (never back without --force, never past the newest batch), and acks of
//! several consumers run concurrently with each other and with the pipeline's own
//! commits without losing anything. On 100k-row tables; checked against the link table
//! read directly.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;

use common::{dlink, emp_dept_at, json_emp_ids, link_keys, link_log, link_state, text};
use dlink_bench::examples::write_increment;
use dlink_rt::config::Pipeline;
use dlink_rt::consumer::Consumer;
use serde_json::Value;

const ROWS: usize = 100_000;

fn ack(file: &Path, name: &str, batch: i64, extra: &[&str]) -> Output {
    dlink()
        .arg("ack")
        .arg(file)
        .args(["--consumer", name, "--batch", &batch.to_string()])
        .args(extra)
        .output()
        .unwrap()
}

fn consumer_keys(file: &Path, name: &str) -> (BTreeSet<i64>, String) {
    let o = dlink()
        .arg("keys")
        .arg(file)
        .args(["--consumer", name, "--format", "json"])
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "keys --consumer {name}: {err}");
    (json_emp_ids(&out), err)
}

async fn position(file: &Path, name: &str) -> i64 {
    Consumer::new(Pipeline::load(file).unwrap(), name)
        .unwrap()
        .position()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_read_each_batch_once_and_ack_concurrently() {
    let (ws, tables, file) = emp_dept_at(ROWS).await;
    let mut text_of_file = std::fs::read_to_string(&file).unwrap();
    text_of_file.push_str("consumers = [\"a\", \"b\", \"c\"]\n");
    std::fs::write(&file, text_of_file).unwrap();
    // Before the first run there is no link table: the commit layer's error, typed.
    let none = Consumer::new(Pipeline::load(&file).unwrap(), "a")
        .unwrap()
        .position()
        .await
        .unwrap_err();
    assert!(
        matches!(
            &none,
            dlink_rt::Error::Commit(dlink_rt::CommitError::Link { source, .. })
                if source.kind() == dlink_rt::storage::StoreErrorKind::NotATable
        ),
        "{none:?}"
    );
    assert!(
        none.to_string().contains("run the pipeline first"),
        "{none}"
    );
    ws.run_ok(&file);
    let first = link_state(&file).await.unwrap().1.batch_id;
    assert!(first >= 2);

    // Three consumers at different positions.
    assert!(ack(&file, "a", first, &[]).status.success());
    assert!(ack(&file, "b", 1, &[]).status.success());
    let (keys, _) = consumer_keys(&file, "a");
    assert!(keys.is_empty(), "a is done: {keys:?}");
    let (keys, err) = consumer_keys(&file, "b");
    assert_eq!(keys, link_keys(&file, 2..=first).await);
    assert!(
        err.contains(&format!("--consumer b --batch {first}")),
        "says how to ack: {err}"
    );
    let (keys, _) = consumer_keys(&file, "c");
    assert_eq!(keys, link_keys(&file, 1..=first).await, "c never acked");

    // The registered consumers, listed with their positions and lag.
    let o = dlink()
        .arg("consumers")
        .arg(&file)
        .arg("--json")
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let list = v["consumers"].as_array().unwrap();
    let names: Vec<&str> = list.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    for (c, position) in list.iter().zip([first, 1, 0]) {
        assert_eq!(c["position"], position, "{c}");
        assert_eq!(c["lag_batches"], first - position, "{c}");
        assert_eq!(c["newest_batch"], first, "{c}");
        let lag = c["lag_seconds"].as_f64().unwrap();
        assert_eq!(lag > 0.0, position < first, "{c}");
        assert!(lag < 600.0, "{c}");
    }

    // Never back without --force, never past the newest batch.
    let o = ack(&file, "a", 1, &[]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("move it back") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(position(&file, "a").await, first);
    let o = ack(&file, "a", first + 5, &[]);
    let (_, err) = text(&o);
    assert!(
        !o.status.success() && err.contains(&format!("the newest batch is {first}")),
        "{err}"
    );
    assert!(ack(&file, "a", 1, &["--force"]).status.success());
    assert_eq!(position(&file, "a").await, 1);

    // The pipeline commits its increment while b and c ack, each from two racing
    // processes.
    write_increment(&tables, ROWS, 0, 6).await.unwrap();
    let run = dlink().arg("run").arg(&file).spawn().unwrap();
    let racers: Vec<_> = [("b", first), ("b", first - 1), ("c", first), ("c", first)]
        .into_iter()
        .map(|(name, batch)| {
            dlink()
                .arg("ack")
                .arg(&file)
                .args(["--consumer", name, "--batch", &batch.to_string()])
                .spawn()
                .unwrap()
        })
        .collect();
    let ok: Vec<bool> = racers
        .into_iter()
        .map(|mut r| r.wait().unwrap().success())
        .collect();
    // Two acks of c to the same batch both succeed, whichever loses the Delta race
    // (it reads again and finds the position already there); of b's, the newer one
    // does.
    assert!(ok[2] && ok[3], "{ok:?}");
    assert!(ok[0], "{ok:?}");
    let o = run.wait_with_output().unwrap();
    assert!(o.status.success());
    assert_eq!(position(&file, "b").await, first, "the newer ack stands");
    assert_eq!(position(&file, "c").await, first);
    assert_eq!(position(&file, "a").await, 1);

    // The pipeline lost nothing: every batch after the first run is there once, and
    // the checkpoint is the newest batch.
    let last = link_state(&file).await.unwrap().1.batch_id;
    assert!(last > first + 1, "the increment took more than one batch");
    let batches: BTreeSet<i64> = link_log(&file).await.iter().map(|(_, b, _)| *b).collect();
    assert!(batches.iter().all(|b| (1..=last).contains(b)));
    assert!(batches.contains(&last));

    // The library API: next_keys then ack, and the next call is empty.
    let c = Consumer::new(Pipeline::load(&file).unwrap(), "c").unwrap();
    let w = c.next_keys().await.unwrap();
    assert_eq!(w.through_batch, last);
    let mut got = BTreeSet::new();
    for b in &w.keys {
        let k = b
            .column_by_name("emp_id")
            .unwrap()
            .as_any()
            .downcast_ref::<deltalake::arrow::array::Int64Array>()
            .unwrap();
        got.extend(k.values().iter().copied());
    }
    assert_eq!(got, link_keys(&file, first + 1..=last).await);
    assert_eq!(c.ack(w.through_batch, false).await.unwrap(), first);
    assert!(c.next_keys().await.unwrap().is_empty());

    // A bad name is refused before anything is written.
    let o = ack(&file, "bad name", 1, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o).1);
}

/// The Python recipe (`examples/consumer.py`, delta-rs + polars from PyPI) reads the
/// same keys as `dlink-rt keys --consumer`, and its ack is the position dlink-rt reads.
/// Needs the peer's venv (`make peer-venv`, run by `make test`); skips loudly without
/// it, except in CI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_recipe_reads_and_acks_the_same_positions() {
    let Some(python) = common::peer_python("the Python recipe") else {
        return;
    };
    let (ws, _, file) = emp_dept_at(ROWS).await;
    ws.run_ok(&file);
    let first = link_state(&file).await.unwrap().1.batch_id;
    assert!(ack(&file, "py", 1, &[]).status.success());
    let recipe = |extra: &[&str]| {
        let o = std::process::Command::new(&python)
            .arg(common::repo_root().join("examples/consumer.py"))
            .arg(ws.path().join("links/emp_dept"))
            .args(["emp_dept", "py"])
            .args(extra)
            .output()
            .unwrap();
        let (out, err) = text(&o);
        assert!(o.status.success(), "consumer.py failed:\n{err}");
        json_emp_ids(&out)
    };
    let (ours, _) = consumer_keys(&file, "py");
    assert_eq!(ours, link_keys(&file, 2..=first).await);
    assert_eq!(recipe(&["--ack"]), ours, "Python reads what dlink-rt reads");
    assert_eq!(
        position(&file, "py").await,
        first,
        "the Python ack is the position"
    );
    assert!(recipe(&[]).is_empty());
    assert!(consumer_keys(&file, "py").0.is_empty());
}
