//! `run FOLDER --shard I/N`: N processes split a folder's pipelines between them
//! without coordination (each pipeline in exactly one shard, all of them run), and two
//! processes given the same shard by mistake stay correct: every batch of every
//! pipeline committed exactly once, the keys those of a single run.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Instant;

use common::{
    batch_ids_in_log, dlink, link_rows, link_state, plugin, sp_history, text, Workspace, WAIT,
};

const PIPELINES: usize = 8;
/// Batches of each pipeline (batch_size 1 over sp_history's versions).
const BATCHES: i64 = 6;

/// A workspace with sp_history's tables and `PIPELINES` copies of sp_affiliation (names
/// `sp_0`.., link tables `links/p0`..).
async fn folder() -> (Workspace, Vec<PathBuf>) {
    let ws = Workspace::new();
    sp_history(&ws).await;
    let files = (0..PIPELINES)
        .map(|i| {
            ws.pipeline(
                &format!("p{i}"),
                &format!("sp_{i}"),
                &["spmaster", "affiliation"],
                &plugin("sp_affiliation"),
                "diasng_id",
                1,
            )
        })
        .collect();
    (ws, files)
}

/// The keys of one run of the same pipeline alone, in a workspace of its own.
async fn single_run() -> BTreeMap<i64, (i64, Vec<String>)> {
    let ws = Workspace::new();
    sp_history(&ws).await;
    let file = ws.sp_pipeline(1);
    ws.run_ok(&file);
    link_rows(&file).await
}

fn links_present(ws: &Workspace) -> BTreeSet<String> {
    std::fs::read_dir(ws.path().join("links"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn three_shards_run_every_pipeline_of_a_folder_exactly_once() {
    let (ws, files) = folder().await;
    let want = single_run().await;
    assert!(want.len() > 3, "the single run found {} keys", want.len());
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut counted = 0;
    for i in 0..3 {
        let o = dlink()
            .args(["run", "--shard", &format!("{i}/3")])
            .arg(ws.path())
            .output()
            .unwrap();
        let (out, err) = text(&o);
        assert!(o.status.success(), "shard {i}/3:\n{out}\n{err}");
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("shard {i}/3: ")))
            .unwrap_or_else(|| panic!("no shard line:\n{out}"));
        let n: usize = line["shard 0/3: ".len()..]
            .split(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{line}"));
        assert!(
            line.contains(&format!("of the folder's {PIPELINES} ")),
            "{line}"
        );
        let now = links_present(&ws);
        let new: BTreeSet<String> = now.difference(&seen).cloned().collect();
        assert_eq!(
            new.len(),
            n,
            "shard {i}/3 said {n} pipelines but wrote {new:?}"
        );
        assert!(
            out.contains(&format!(
                "{n} pipelines: {} batches committed",
                n as i64 * BATCHES
            )),
            "{out}"
        );
        counted += n;
        seen = now;
    }
    assert_eq!(
        counted, PIPELINES,
        "the shards ran {counted} pipelines in all"
    );
    for f in &files {
        assert_eq!(link_rows(f).await, want, "{}", f.display());
        assert_eq!(batch_ids_in_log(f).await, (1..=BATCHES).collect::<Vec<_>>());
    }
    // A shard that does not exist, and a shard of one file, are refused up front.
    let refused = [
        (
            dlink()
                .args(["run", "--shard", "3/3"])
                .arg(ws.path())
                .output(),
            "I must be less than N",
        ),
        (
            dlink()
                .args(["run", "--shard", "0/2", "--follow"])
                .arg(&files[0])
                .output(),
            "splits the pipelines of a folder",
        ),
    ];
    for (o, needle) in refused {
        let o = o.unwrap();
        let (out, err) = text(&o);
        assert!(!o.status.success(), "succeeded:\n{out}");
        assert!(err.contains(needle), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_processes_following_the_same_shard_commit_every_batch_once() {
    let (ws, files) = folder().await;
    let want = single_run().await;
    let start = |_| {
        dlink()
            .args(["run", "--follow", "--interval", "50ms", "--shard", "0/1"])
            .arg(ws.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut runners: Vec<_> = (0..2).map(start).collect();
    let deadline = Instant::now() + WAIT;
    for f in &files {
        loop {
            match link_state(f).await {
                Some((_, c)) if c.batch_id == BATCHES => break,
                _ if Instant::now() > deadline => {
                    panic!("{} never reached batch {BATCHES}", f.display())
                }
                _ => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
    }
    let mut logs = String::new();
    for r in &mut runners {
        // SIGTERM: each stops after its current batch.
        let _ = std::process::Command::new("kill")
            .arg(r.id().to_string())
            .status();
    }
    for r in runners {
        let o = r.wait_with_output().unwrap();
        logs.push_str(&String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success(), "a runner failed:\n{logs}");
    }
    for f in &files {
        assert_eq!(link_rows(f).await, want, "{}", f.display());
        assert_eq!(
            batch_ids_in_log(f).await,
            (1..=BATCHES).collect::<Vec<_>>(),
            "{}: a batch committed twice or not at all\n{logs}",
            f.display()
        );
    }
    eprintln!(
        "runners met {} times (a batch committed by the other first)",
        logs.matches("was committed by another run").count()
    );
}
