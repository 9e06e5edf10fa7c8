//! `dlink-rt run --follow`: batches as upstream commits arrive, and plugin hot swap
//! without a restart: a new file takes effect between batches (recorded in the commit
//! metadata), a broken file is rejected while the running plugin stays, and a plugin
//! that fails a batch is replaced and the same batch retried.

mod common;

use std::path::Path;
use std::process::Child;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::{
    dlink, install, keys_of_batch, link_state, new_version_of, plugin, set, wait_for, Workspace,
    WAIT,
};
use dlink_rt::demo::DemoTable;
use serde_json::{json, Value};

fn sha(bytes: &[u8]) -> String {
    dlink_rt::plugin::sha256_hex(bytes)
}

async fn last_commit_plugin(file: &Path) -> Value {
    common::link_commit_metadata(file).await[0]["plugin"].clone()
}

struct Follower(Child);

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// spmaster (key 1) and affiliation: the tables of the sp_affiliation pipeline.
async fn sp_affiliation_tables(ws: &Workspace) -> DemoTable {
    common::sp_tables(ws, json!([[1, "a", "DE"]]), json!([[1, 10, 1]]))
        .await
        .0
}

/// `dlink-rt run --follow --interval 100ms <pipeline>`: the process and its stdout and
/// stderr lines.
fn follow(pipeline: &Path) -> (Follower, Receiver<String>, Receiver<String>) {
    let (child, out, err) = common::spawn_with_lines(
        dlink()
            .args(["run", "--follow", "--interval", "100ms"])
            .arg(pipeline)
            .env("DLINK_LOG", "warn,dlink_rt=info"),
    );
    (Follower(child), out, err)
}

#[tokio::test(flavor = "multi_thread")]
async fn follow_runs_batches_as_commits_arrive_and_hot_swaps_the_plugin() {
    let ws = Workspace::new();
    let mut sp = sp_affiliation_tables(&ws).await;
    let good = std::fs::read(plugin("sp_affiliation")).unwrap();
    let live = ws.path().join("live.wasm");
    install(&live, &good);
    let p = ws.pipeline(
        "sp",
        "sp_affiliation",
        &["spmaster", "affiliation"],
        &live,
        "diasng_id",
        10,
    );

    let (follower, out, err) = follow(&p);
    let (mut o, mut e) = (Vec::new(), Vec::new());

    wait_for(&out, "sp_affiliation batch 1:", &mut o);

    // A commit arrives: picked up without a restart.
    sp.insert(json!([[2, "b", "FR"]])).await.unwrap();
    let t = Instant::now();
    wait_for(&out, "sp_affiliation batch 2:", &mut o);
    eprintln!(
        "follow: commit to committed batch in {} ms (interval 100 ms)",
        t.elapsed().as_millis()
    );
    assert_eq!(keys_of_batch(&p, 2).await, set(&[2]));
    assert_eq!(last_commit_plugin(&p).await["sha256"], sha(&good));

    // A new version of the plugin file: swapped in between batches, recorded.
    let v2 = new_version_of(&good, "v2");
    install(&live, &v2);
    wait_for(&err, &format!("({}) ready", &sha(&v2)[..12]), &mut e);
    sp.insert(json!([[3, "c", "JP"]])).await.unwrap();
    wait_for(&out, "sp_affiliation batch 3:", &mut o);
    let swap = wait_for(&err, "takes effect at batch 3", &mut e);
    eprintln!("follow: {swap}");
    let meta = last_commit_plugin(&p).await;
    assert_eq!(meta["sha256"], sha(&v2));
    assert_eq!(meta["active_since_batch"], 3);

    // A broken file is rejected; the running plugin stays.
    install(&live, b"\0asm not really a component");
    wait_for(&err, "rejected new plugin file", &mut e);
    sp.insert(json!([[4, "d", "US"]])).await.unwrap();
    wait_for(&out, "sp_affiliation batch 4:", &mut o);
    assert_eq!(
        last_commit_plugin(&p).await["sha256"],
        sha(&v2),
        "v2 still runs"
    );
    assert_eq!(keys_of_batch(&p, 4).await, set(&[4]));

    // The running file put back (after the rejected one): not a swap, so v2 is still
    // in effect since batch 3. (The watcher polls every 100 ms; a second is ten polls.)
    install(&live, &v2);
    std::thread::sleep(Duration::from_secs(1));
    sp.insert(json!([[6, "f", "BR"]])).await.unwrap();
    wait_for(&out, "sp_affiliation batch 5:", &mut o);
    let meta = last_commit_plugin(&p).await;
    assert_eq!(meta["sha256"], sha(&v2));
    assert_eq!(
        meta["active_since_batch"], 3,
        "putting v2 back is not a swap"
    );

    // A plugin that fails a batch: the pipeline stops at that batch ...
    let bad = std::fs::read(plugin("wrong_output_schema")).unwrap();
    install(&live, &bad);
    wait_for(&err, &format!("({}) ready", &sha(&bad)[..12]), &mut e);
    let before = link_state(&p).await.unwrap();
    sp.insert(json!([[5, "e", "NG"]])).await.unwrap();
    wait_for(&err, "pipeline 'sp_affiliation', batch 6, plugin", &mut e);
    wait_for(&err, "waiting for a new version", &mut e);
    assert_eq!(
        link_state(&p).await.unwrap(),
        before,
        "nothing committed for the failed batch"
    );
    // ... and the next version of the file is tried on the same batch.
    let v3 = new_version_of(&good, "v3");
    install(&live, &v3);
    wait_for(&out, "sp_affiliation batch 6:", &mut o);
    assert_eq!(keys_of_batch(&p, 6).await, set(&[5]));
    let meta = last_commit_plugin(&p).await;
    assert_eq!(meta["sha256"], sha(&v3));
    assert_eq!(meta["active_since_batch"], 6);

    // SIGTERM stops it cleanly.
    let pid = follower.0.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let mut follower = follower;
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = follower.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status:?}");
}

/// A follower keeps its tables open between polls; a `reset` of the link table by
/// another process moves the checkpoint under it. The next poll must notice, reopen and
/// read from the reset version (before, every poll reopened everything).
#[tokio::test(flavor = "multi_thread")]
async fn follow_honours_a_reset_made_while_it_runs() {
    let ws = Workspace::new();
    let mut sp = sp_affiliation_tables(&ws).await;
    let p = ws.sp_pipeline(10);
    let (_follower, out, _err) = follow(&p);
    let mut o = Vec::new();
    wait_for(&out, "sp_affiliation batch 1:", &mut o);
    assert_eq!(sp.insert(json!([[2, "b", "FR"]])).await.unwrap(), 1);
    wait_for(&out, "sp_affiliation batch 2:", &mut o);
    sp.insert(json!([[3, "c", "JP"]])).await.unwrap();
    wait_for(&out, "sp_affiliation batch 3:", &mut o);
    assert_eq!(keys_of_batch(&p, 3).await, set(&[3]));

    // Re-read spmaster from version 1 (the commit of key 2).
    let o2 = dlink()
        .args(["reset", "--upstream", "spmaster", "--to-version", "1"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(
        o2.status.success(),
        "{}",
        String::from_utf8_lossy(&o2.stderr)
    );
    let line = wait_for(&out, "sp_affiliation batch 4:", &mut o);
    assert!(line.contains("spmaster v1..2"), "{line}");
    assert_eq!(keys_of_batch(&p, 4).await, set(&[2, 3]));
    let (_, cp) = link_state(&p).await.unwrap();
    assert_eq!(cp.batch_id, 4);
    assert_eq!(cp.done.get("spmaster"), Some(&2));
}
