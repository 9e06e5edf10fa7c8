//! Hostile plugins, each a real `.wasm` built from `plugins/testing/<name>`: an endless
//! loop, a memory bomb, a huge output, a panic, a wrong output schema, null keys, reads
//! of `/etc/passwd` and of the environment, sockets, a lookup of an undeclared table.
//! Each run of the real binary must end (exit 1) with a clear error naming pipeline,
//! batch and plugin and saying what went wrong; the link table and checkpoint must not
//! move; the next run with the good plugin commits the same batch (nothing lost).
//!
//! Granted folders (`[plugin.read_dirs]`): a plugin reads the folder it is granted, and
//! nothing outside it (`..`, a symlink out, absolute host paths, writes).
//!
//! In one process: hostile pipelines fail while a good one on other tables commits its
//! batches with the same `PluginHost`, which stays usable afterwards; `dlink-rt run
//! <folder>` reports the hostile pipeline and commits the others; and (stricter) the
//! good pipeline's batches must not wait for a spinning plugin's time budget to end.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{dlink, keys_of_batch, link_state, plugin, set, text, Workspace};
use dlink_rt::config::{KeyColumn, KeyType, Pipeline};
use dlink_rt::demo::DemoTable;
use dlink_rt::engine::run_pipeline;
use dlink_rt::plugin::{Call, Contract, PipelineInfo, PluginError, PluginHost};
use dlink_rt::{BatchFailure, Error};
use serde_json::json;

/// The small limits every hostile run gets.
const TIMEOUT_MS: u64 = 500;
const MEMORY_MB: u64 = 64;
const MAX_OUTPUT_MB: u64 = 1;

/// An endless loop must end well before this (a generous bound: the budget is 500 ms).
const NOT_STUCK: Duration = Duration::from_secs(30);

async fn setup() -> (Workspace, DemoTable) {
    let ws = Workspace::new();
    let (sp, _) = common::sp_tables(
        &ws,
        json!([[1, "a", "DE"], [2, "b", "FR"]]),
        json!([[1, 10, 1]]),
    )
    .await;
    (ws, sp)
}

/// Writes `<file>.toml` (pipeline `name` on spmaster and affiliation) with
/// `plugin_path`, the small limits and `extra` TOML (e.g. `[plugin.config]`).
fn pipeline_in(
    ws: &Workspace,
    file: &str,
    name: &str,
    plugin_path: &Path,
    batch_size: i64,
    extra: &str,
) -> PathBuf {
    let p = ws.pipeline(
        file,
        name,
        &["spmaster", "affiliation"],
        plugin_path,
        "diasng_id",
        batch_size,
    );
    let mut toml = std::fs::read_to_string(&p).unwrap();
    toml.push_str(&format!(
        "\n[plugin.limits]\ntimeout_ms = {TIMEOUT_MS}\nmemory_mb = {MEMORY_MB}\nmax_output_mb = {MAX_OUTPUT_MB}\n\n{extra}\n"
    ));
    std::fs::write(&p, toml).unwrap();
    p
}

/// The pipeline `sp_affiliation` in `sp.toml`.
fn sp_pipeline(ws: &Workspace, plugin_path: &Path, extra: &str) -> PathBuf {
    pipeline_in(ws, "sp", "sp_affiliation", plugin_path, 10, extra)
}

/// A failed batch 2 of `sp_affiliation` with a hostile plugin.
struct Failed {
    ws: Workspace,
    file: PathBuf,
    /// The binary's stderr.
    err: String,
    elapsed: Duration,
}

/// Commits batch 1 with the good plugin, adds an upstream commit (spmaster key 3),
/// switches the pipeline file to the plugin `bad` (with `extra` TOML) and runs the
/// binary. Checks what every hostile run must show: exit 1 (a clean failure, not a
/// crash), the error naming pipeline, batch 2 and the plugin file, nothing committed,
/// link table version and checkpoint unchanged.
async fn fail_batch_2(bad: &str, extra: &str, prepare: impl FnOnce(&Workspace)) -> Failed {
    let (ws, mut sp) = setup().await;
    let good = sp_pipeline(&ws, &plugin("sp_affiliation"), "");
    ws.run_ok(&good);
    let before = link_state(&good).await.expect("batch 1 committed");
    assert_eq!(before.1.batch_id, 1);

    sp.insert(json!([[3, "c", "JP"]])).await.unwrap();
    prepare(&ws);
    let file = sp_pipeline(&ws, &plugin(bad), extra);
    let started = Instant::now();
    let o = dlink()
        .env("DLINK_HOSTILE_TEST_SECRET", "do-not-leak-this")
        .arg("run")
        .arg(&file)
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    let (out, err) = text(&o);
    eprintln!(
        "{bad}: exit {:?} after {elapsed:?}; stderr:\n{err}",
        o.status.code()
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "a failed batch exits 1 (not a crash or a signal):\n{out}\n{err}"
    );
    assert!(
        err.contains("pipeline 'sp_affiliation', batch 2, plugin "),
        "names pipeline and batch: {err}"
    );
    assert!(
        err.contains(&plugin(bad).display().to_string()),
        "names the plugin file {bad}.wasm: {err}"
    );
    assert!(err.contains("nothing was committed"), "{err}");
    assert_no_host_panic(&err);
    assert!(
        !out.contains("batch 2"),
        "no batch was reported committed: {out}"
    );
    assert_eq!(
        link_state(&file).await.expect("link table still there"),
        before,
        "link table version and checkpoint unchanged"
    );
    Failed {
        ws,
        file,
        err,
        elapsed,
    }
}

/// No thread of the host panicked (a plugin's own panic, quoted from its stderr, is
/// on its thread `<unnamed>`).
fn assert_no_host_panic(stderr: &str) {
    for line in stderr.lines() {
        assert!(
            !line.contains(" panicked at ") || line.contains("thread '<unnamed>'"),
            "the host panicked: {stderr}"
        );
    }
}

impl Failed {
    /// Nothing lost: with the good plugin back in the same pipeline file, batch 2
    /// commits the pending change.
    async fn good_plugin_commits_batch_2(self) {
        sp_pipeline(&self.ws, &plugin("sp_affiliation"), "");
        let out = self.ws.run_ok(&self.file);
        assert!(out.contains("sp_affiliation batch 2:"), "{out}");
        assert_eq!(keys_of_batch(&self.file, 2).await, set(&[3]));
        assert_eq!(link_state(&self.file).await.unwrap().1.batch_id, 2);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn endless_loop_is_stopped_by_the_time_budget() {
    let f = fail_batch_2("endless_loop", "", |_| {}).await;
    // Trap::Interrupt (the epoch deadline) is what the host words as "time budget";
    // any other trap would read "derive trapped (...)".
    assert!(
        f.err.contains(&format!(
            "derive exceeded its time budget of {TIMEOUT_MS} ms ([plugin.limits] timeout_ms)"
        )),
        "{}",
        f.err
    );
    assert!(!f.err.contains("derive trapped"), "{}", f.err);
    assert!(
        f.elapsed < NOT_STUCK,
        "the run took {:?}: the process is stuck",
        f.elapsed
    );
    f.good_plugin_commits_batch_2().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_bomb_is_stopped_by_the_memory_cap() {
    let f = fail_batch_2("memory_bomb", "", |_| {}).await;
    // The store limiter traps on the failed grow; without trap_on_grow_failure the
    // plugin would abort by itself ("derive trapped (wasm `unreachable` ...)") or,
    // with no cap, report that it allocated 4 GiB.
    assert!(
        f.err.contains(&format!(
            "derive exceeded its memory cap of {MEMORY_MB} MiB ([plugin.limits] memory_mb)"
        )),
        "{}",
        f.err
    );
    assert!(!f.err.contains("without hitting a memory cap"), "{}", f.err);
    f.good_plugin_commits_batch_2().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_output_is_refused_by_the_output_cap() {
    let f = fail_batch_2("huge_output", "[plugin.config]\nkeys = 200000\n", |_| {}).await;
    let cap = format!(
        "bytes, more than the output cap of {MAX_OUTPUT_MB} MiB ([plugin.limits] max_output_mb)"
    );
    assert!(f.err.contains(&cap), "{}", f.err);
    let bytes: u64 = f
        .err
        .split("derive returned ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("says how many bytes: {}", f.err));
    assert!(bytes > MAX_OUTPUT_MB << 20, "{bytes} bytes");
    f.good_plugin_commits_batch_2().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn panic_is_a_trap_that_fails_the_batch() {
    let f = fail_batch_2("panic_on_derive", "", |_| {}).await;
    assert!(f.err.contains("derive trapped"), "{}", f.err);
    // The panic message reaches the error through the captured stderr.
    assert!(
        f.err
            .contains("panic_on_derive: deliberate panic in batch 2 of pipeline 'sp_affiliation'"),
        "{}",
        f.err
    );
    f.good_plugin_commits_batch_2().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_output_schema_is_refused() {
    let f = fail_batch_2("wrong_output_schema", "", |_| {}).await;
    assert!(
        f.err.contains(
            "derive returned key column 'diasng_id' as Utf8, but the pipeline declares it"
        ),
        "{}",
        f.err
    );
    assert!(f.err.contains("(Int64)"), "{}", f.err);
    f.good_plugin_commits_batch_2().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn null_keys_are_refused() {
    let f = fail_batch_2("null_keys", "", |_| {}).await;
    assert!(
        f.err.contains(
            "derive returned 1 null value(s) in key column 'diasng_id'; keys must not be null"
        ),
        "{}",
        f.err
    );
    f.good_plugin_commits_batch_2().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reading_etc_passwd_is_denied() {
    let f = fail_batch_2("read_etc_passwd", "", |_| {}).await;
    assert!(
        f.err
            .contains("derive returned an error: could not read /etc/passwd: "),
        "{}",
        f.err
    );
    assert!(f.err.contains("could not list /: "), "{}", f.err);
    assert!(!f.err.contains("READ /etc/passwd"), "{}", f.err);
    assert!(!f.err.contains("LISTED /"), "{}", f.err);
    if let Ok(passwd) = std::fs::read_to_string("/etc/passwd") {
        if let Some(first) = passwd.lines().next().filter(|l| !l.is_empty()) {
            assert!(!f.err.contains(first), "leaked {first}: {}", f.err);
        }
    }
    f.good_plugin_commits_batch_2().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn environment_is_empty() {
    // fail_batch_2 runs the binary with HOME (inherited) and DLINK_HOSTILE_TEST_SECRET.
    let f = fail_batch_2("read_environment", "", |_| {}).await;
    assert!(
        f.err
            .contains("read_environment: 0 environment variable(s) []; HOME is not visible"),
        "{}",
        f.err
    );
    assert!(f.err.contains("; 0 argument(s)"), "{}", f.err);
    assert!(!f.err.contains("DLINK_HOSTILE_TEST_SECRET"), "{}", f.err);
    assert!(!f.err.contains("do-not-leak-this"), "{}", f.err);
    f.good_plugin_commits_batch_2().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sockets_are_refused() {
    // A real listener the plugin is told to connect to: it must see no connection.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let f = fail_batch_2(
        "open_socket",
        &format!("[plugin.config]\ntcp_addr = \"{addr}\"\n"),
        |_| {},
    )
    .await;
    for attempt in [
        format!("TCP connect to {addr} failed: "),
        "UDP bind failed: ".to_string(),
        "name lookup failed: ".to_string(),
    ] {
        assert!(f.err.contains(&attempt), "{attempt}: {}", f.err);
    }
    assert!(!f.err.contains("SUCCEEDED"), "{}", f.err);
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the listener saw a connection: {other:?}"),
    }
    f.good_plugin_commits_batch_2().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lookup_of_an_undeclared_table_is_refused() {
    // `employee` is in the catalog but neither an upstream nor a lookup of the pipeline.
    let f = fail_batch_2("undeclared_lookup", "", |_| {}).await;
    assert!(
        f.err.contains(
            "lookup of table 'employee': not an upstream or lookup table of pipeline 'sp_affiliation' \
             (it may look up: affiliation, spmaster)"
        ),
        "{}",
        f.err
    );
    assert!(!f.err.contains("ANSWERED"), "{}", f.err);
    f.good_plugin_commits_batch_2().await;
}

// ---- granted folders ----------------------------------------------------------------

/// `reference/keys.txt` (keys 7 and 8) in the workspace, beside a `secret.txt` the
/// plugin must not read, and a symlink `reference/escape` pointing at it.
fn reference_folder(ws: &Workspace) {
    let dir = ws.path().join("reference");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("keys.txt"), "7\n8\n").unwrap();
    std::fs::write(ws.path().join("secret.txt"), "top secret\n").unwrap();
    std::os::unix::fs::symlink(ws.path().join("secret.txt"), dir.join("escape")).unwrap();
}

const GRANT: &str = "[plugin.read_dirs]\nreference = \"reference\"\n";

#[tokio::test(flavor = "multi_thread")]
async fn granted_folder_is_readable() {
    let (ws, mut sp) = setup().await;
    let good = sp_pipeline(&ws, &plugin("sp_affiliation"), "");
    ws.run_ok(&good);
    sp.insert(json!([[3, "c", "JP"]])).await.unwrap();
    reference_folder(&ws);
    let file = sp_pipeline(
        &ws,
        &plugin("read_granted_dir"),
        &format!("[plugin.config]\nfile = \"keys.txt\"\n\n{GRANT}"),
    );
    let out = ws.run_ok(&file);
    assert!(out.contains("sp_affiliation batch 2:"), "{out}");
    assert_eq!(keys_of_batch(&file, 2).await, set(&[7, 8]));
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_outside_the_granted_folder_are_denied() {
    let f = fail_batch_2(
        "read_granted_dir",
        "[plugin.config]\nfile = \"keys.txt\"\n",
        reference_folder,
    )
    .await;
    // fail_batch_2 ran without the grant: the plugin cannot read even /reference.
    assert!(
        f.err
            .contains("read_granted_dir: could not read /reference/keys.txt: "),
        "{}",
        f.err
    );
    let before = link_state(&f.file).await.unwrap();

    // With the grant: the granted file is read in the same call, everything else fails.
    let secret_path = f.ws.path().join("secret.txt").display().to_string();
    let outside = [
        "/reference/../secret.txt",
        "/reference/escape",
        secret_path.as_str(),
        "/etc/passwd",
        "/etc/hostname",
    ];
    let list = outside
        .iter()
        .map(|p| format!("\"{p}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let file = sp_pipeline(
        &f.ws,
        &plugin("read_granted_dir"),
        &format!(
            "[plugin.config]\nfile = \"keys.txt\"\noutside = [{list}]\nwrite = \"/reference/written.txt\"\n\n{GRANT}"
        ),
    );
    let o = dlink().arg("run").arg(&file).output().unwrap();
    let (out, err) = text(&o);
    eprintln!("read_granted_dir with the grant: stderr:\n{err}");
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert_no_host_panic(&err);
    assert!(
        err.contains("pipeline 'sp_affiliation', batch 2, plugin "),
        "{err}"
    );
    assert!(
        err.contains(
            "read_granted_dir: read 2 key(s) from /reference/keys.txt; outside the grant: "
        ),
        "the granted read works in the same call: {err}"
    );
    for p in outside {
        assert!(err.contains(&format!("{p}: denied (")), "{p}: {err}");
    }
    assert!(
        err.contains("write /reference/written.txt: denied ("),
        "{err}"
    );
    assert!(!err.contains("SUCCEEDED"), "{err}");
    assert!(!err.contains("top secret"), "{err}");
    assert!(!f.ws.path().join("reference/written.txt").exists());
    assert_eq!(link_state(&file).await.unwrap(), before);
    f.good_plugin_commits_batch_2().await;
}

// ---- one process, several pipelines -------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn other_pipelines_in_the_same_process_go_on() {
    let host = PluginHost::new(Some(common::cache_dir())).expect("plugin host");

    // Two hostile pipelines, each in its own workspace (tables and link table).
    let (loop_ws, _loop_sp) = setup().await;
    let loop_file = pipeline_in(
        &loop_ws,
        "looping",
        "looping",
        &plugin("endless_loop"),
        10,
        "",
    );
    let looping = Pipeline::load(&loop_file).unwrap();
    let (bomb_ws, _bomb_sp) = setup().await;
    let bomb_file = pipeline_in(
        &bomb_ws,
        "bombing",
        "bombing",
        &plugin("memory_bomb"),
        10,
        "",
    );
    let bombing = Pipeline::load(&bomb_file).unwrap();
    // A good pipeline on other tables: spmaster v0..v2 in batches of one version.
    let (good_ws, mut good_sp) = setup().await;
    good_sp.insert(json!([[3, "c", "JP"]])).await.unwrap();
    good_sp.insert(json!([[4, "d", "IT"]])).await.unwrap();
    let good_file = pipeline_in(&good_ws, "good", "good", &plugin("sp_affiliation"), 1, "");
    let good = Pipeline::load(&good_file).unwrap();

    let started = Instant::now();
    let mut good_batches = Vec::new();
    let ((looped, loop_end), (bombed, bomb_end), (went_on, good_end)) = tokio::join!(
        timed(started, run_pipeline(&looping, &host, |_| {})),
        timed(started, run_pipeline(&bombing, &host, |_| {})),
        timed(
            started,
            run_pipeline(&good, &host, |b| good_batches.push(b.batch_id))
        ),
    );
    let elapsed = started.elapsed();
    // For the record (not asserted): the three futures share one task, so while the
    // loop spins inside a wasm call the others wait for its budget to run out.
    eprintln!(
        "in one task: endless_loop failed after {loop_end:?}, memory_bomb after {bomb_end:?}, \
         the good pipeline committed 3 batches after {good_end:?}"
    );

    // The failure's kind is a value (a timeout, a memory cap), and its text says so.
    let expect_batch_error = |r: dlink_rt::Result<_>, name: &str, what: &str| match r {
        Err(Error::Batch {
            pipeline,
            batch_id,
            plugin,
            cause: BatchFailure::Plugin(cause),
        }) => {
            assert_eq!(pipeline, name);
            assert_eq!(batch_id, 1);
            assert!(
                plugin.ends_with(&format!("{}.wasm", name_to_plugin(name))),
                "{plugin}"
            );
            let kind_matches = match name {
                "looping" => matches!(
                    cause,
                    PluginError::Timeout { call: Call::Derive, timeout_ms, .. } if timeout_ms == TIMEOUT_MS
                ),
                _ => matches!(
                    cause,
                    PluginError::MemoryCap { call: Call::Derive, memory_mb, .. } if memory_mb == MEMORY_MB
                ),
            };
            assert!(kind_matches, "{name}: {cause:?}");
            assert!(cause.to_string().contains(what), "{cause}");
        }
        other => panic!("{name}: expected a failed batch 1, got {other:?}"),
    };
    expect_batch_error(
        looped,
        "looping",
        &format!("derive exceeded its time budget of {TIMEOUT_MS} ms"),
    );
    expect_batch_error(
        bombed,
        "bombing",
        &format!("derive exceeded its memory cap of {MEMORY_MB} MiB"),
    );
    let summary = went_on.expect("the good pipeline commits");
    assert_eq!(good_batches, vec![1, 2, 3]);
    assert_eq!(summary.batches.len(), 3);
    assert_eq!(keys_of_batch(&good_file, 3).await, set(&[4]));
    assert!(elapsed < NOT_STUCK, "took {elapsed:?}");
    for f in [&loop_file, &bomb_file] {
        assert!(
            link_state(f).await.is_none(),
            "{}: a hostile pipeline committed",
            f.display()
        );
    }

    // The host is still healthy: the good pipeline goes on after another commit, and
    // the hostile ones fail the same way again (no state left from the first run).
    good_sp.insert(json!([[5, "e", "ES"]])).await.unwrap();
    let again = run_pipeline(&good, &host, |_| {})
        .await
        .expect("good again");
    assert_eq!(
        again.batches.iter().map(|b| b.batch_id).collect::<Vec<_>>(),
        vec![4]
    );
    assert_eq!(keys_of_batch(&good_file, 4).await, set(&[5]));
    expect_batch_error(
        run_pipeline(&looping, &host, |_| {}).await,
        "looping",
        "time budget",
    );
    expect_batch_error(
        run_pipeline(&bombing, &host, |_| {}).await,
        "bombing",
        "memory cap",
    );
}

/// `f`'s output and when it was ready, counted from `started`.
async fn timed<T>(started: Instant, f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let out = f.await;
    (out, started.elapsed())
}

fn name_to_plugin(pipeline: &str) -> &'static str {
    match pipeline {
        "looping" => "endless_loop",
        "bombing" => "memory_bomb",
        other => panic!("no plugin for {other}"),
    }
}

/// `dlink-rt run <folder>`: a hostile pipeline and a good one in one process; the
/// hostile one is reported (exit 1) and moves nothing, the good one commits.
#[tokio::test(flavor = "multi_thread")]
async fn folder_run_reports_the_hostile_pipeline_and_runs_the_others() {
    let (ws, mut sp) = setup().await;
    let hostile = sp_pipeline(&ws, &plugin("sp_affiliation"), "");
    ws.run_ok(&hostile);
    let before = link_state(&hostile).await.expect("batch 1 committed");
    sp.insert(json!([[3, "c", "JP"]])).await.unwrap();
    sp_pipeline(&ws, &plugin("endless_loop"), "");
    // The good pipeline reads the same upstreams into its own link table.
    let good = pipeline_in(&ws, "good", "good", &plugin("sp_affiliation"), 1, "");

    let started = Instant::now();
    let o = dlink()
        .arg("run")
        .arg(ws.path())
        .arg("--jobs")
        .arg("2")
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    let (out, err) = text(&o);
    eprintln!("folder run after {elapsed:?}:\n{out}\n{err}");
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert_no_host_panic(&err);
    assert!(
        err.contains(&format!(
            "pipeline 'sp_affiliation', batch 2, plugin {}: derive exceeded its time budget of {TIMEOUT_MS} ms",
            plugin("endless_loop").display()
        )),
        "{err}"
    );
    assert!(elapsed < NOT_STUCK, "took {elapsed:?}");
    assert_eq!(link_state(&hostile).await.unwrap(), before);
    // spmaster v0..v1 and affiliation v0, one version per batch: two batches.
    assert!(out.contains("good batch 1:"), "{out}");
    assert!(out.contains("good batch 2:"), "{out}");
    assert!(out.contains("1 failed"), "{out}");
    assert_eq!(keys_of_batch(&good, 2).await, set(&[3]));

    sp_pipeline(&ws, &plugin("sp_affiliation"), "");
    ws.run_ok(&hostile);
    assert_eq!(keys_of_batch(&hostile, 2).await, set(&[3]));
}

/// Stricter than `other_pipelines_in_the_same_process_go_on`: with the runtime's own
/// multi-pipeline path (`engine::run_many`, behind `dlink-rt run <folder>`), the good
/// pipeline's batches must not wait for a spinning plugin's time budget to run out.
#[tokio::test(flavor = "multi_thread")]
async fn other_pipelines_go_on_while_a_plugin_spins() {
    const SPIN_MS: u64 = 5000;
    let host = PluginHost::new(Some(common::cache_dir())).expect("plugin host");
    let (loop_ws, _loop_sp) = setup().await;
    let loop_file = loop_ws.pipeline(
        "looping",
        "looping",
        &["spmaster", "affiliation"],
        &plugin("endless_loop"),
        "diasng_id",
        10,
    );
    let mut toml = std::fs::read_to_string(&loop_file).unwrap();
    toml.push_str(&format!("\n[plugin.limits]\ntimeout_ms = {SPIN_MS}\n"));
    std::fs::write(&loop_file, toml).unwrap();
    let looping = Pipeline::load(&loop_file).unwrap();
    // Six versions of spmaster in batches of one: more work than the loop needs to
    // reach its `derive`, so the good pipeline has batches left while the loop spins.
    let (good_ws, mut good_sp) = setup().await;
    for id in 3..8 {
        good_sp
            .insert(json!([[id, format!("n{id}"), "DE"]]))
            .await
            .unwrap();
    }
    let good_file = pipeline_in(&good_ws, "good", "good", &plugin("sp_affiliation"), 1, "");
    let good = Pipeline::load(&good_file).unwrap();

    let started = Instant::now();
    let commits = std::sync::Mutex::new(Vec::new());
    let outcome = dlink_rt::engine::run_many(&[looping, good], &host, 2, |b| {
        commits
            .lock()
            .unwrap()
            .push((b.pipeline.clone(), b.batch_id, started.elapsed()))
    })
    .await;
    let elapsed = started.elapsed();
    let commits = commits.into_inner().unwrap();
    eprintln!("run_many: done after {elapsed:?}; commits {commits:?}");

    match &outcome.results[0].1 {
        Err(Error::Batch {
            batch_id,
            cause: BatchFailure::Plugin(PluginError::Timeout { call, .. }),
            ..
        }) => {
            assert_eq!(*batch_id, 1);
            assert_eq!(*call, Call::Derive);
        }
        other => panic!("looping: expected a failed batch 1, got {other:?}"),
    }
    let summary = outcome.results[1].1.as_ref().expect("good commits");
    assert_eq!(summary.batches.len(), 6);
    let good_done = commits
        .iter()
        .filter(|(p, _, _)| p == "good")
        .map(|(_, _, t)| *t)
        .max()
        .expect("good committed");
    assert!(
        good_done < Duration::from_millis(SPIN_MS),
        "the good pipeline's last batch committed after {good_done:?}, once the spinning plugin's \
         {SPIN_MS} ms budget had run out (the run took {elapsed:?}): a plugin stuck in wasm code \
         holds up every pipeline polled on the same task"
    );
}

/// Loading failures are values too: a missing file, a file that is not a component and
/// a configuration `init` refuses each have their variant (and the text a user reads).
#[tokio::test]
async fn load_failures_are_typed() {
    let host = PluginHost::new(Some(common::cache_dir())).unwrap();
    let missing = host.compile(Path::new("/nonexistent/x.wasm"));
    assert!(
        matches!(&missing, Err(PluginError::Read(e)) if e.kind() == std::io::ErrorKind::NotFound),
        "{:?}",
        missing.err()
    );

    let ws = Workspace::new();
    let not_wasm = ws.path().join("not.wasm");
    std::fs::write(&not_wasm, b"this is not wasm").unwrap();
    let bad = host.compile(&not_wasm);
    let Err(e @ PluginError::NotAComponent(_)) = bad else {
        panic!("expected NotAComponent, got {:?}", bad.err());
    };
    assert!(
        e.to_string()
            .starts_with("not a valid WebAssembly component (build it for wasm32-wasip2"),
        "{e}"
    );

    // A contract 0.2 plugin's init sees the pipeline: a config, key or upstream it
    // cannot work with is refused there (and so at `validate`).
    let path = plugin("sp_affiliation");
    let compiled = host.compile(&path).unwrap();
    assert_eq!(compiled.contract, Contract::V0_2);
    let spec = |config: &str| dlink_rt::config::PluginSpec {
        path: path.clone(),
        config_json: config.into(),
        limits: Default::default(),
        read_dirs: Vec::new(),
        storage: Default::default(),
    };
    let good = sp_info(KeyType::Long, 2);
    let refusal = |r: Result<dlink_rt::plugin::Plugin, PluginError>| match r {
        Err(PluginError::Rejected {
            call: Call::Init,
            message,
        }) => message,
        Err(other) => panic!("expected init's rejection, got {other:?}"),
        Ok(_) => panic!("init accepted it"),
    };
    let m = refusal(
        host.instantiate(&compiled, &good, &spec(r#"{"spmaster": 5}"#))
            .await,
    );
    assert!(m.contains("unknown field `spmaster`"), "{m}");
    let m = refusal(
        host.instantiate(&compiled, &sp_info(KeyType::String, 2), &spec("{}"))
            .await,
    );
    assert_eq!(
        m,
        "pipeline 'typed' declares the key (diasng_id utf8) in [link] keys, but this plugin \
         produces (diasng_id int64)"
    );
    let m = refusal(
        host.instantiate(&compiled, &sp_info(KeyType::Long, 1), &spec("{}"))
            .await,
    );
    assert_eq!(
        m,
        "this plugin reads 2 upstream(s), in this order: staff, affiliations; pipeline 'typed' \
         lists 1: spmaster"
    );
    let ok = host
        .instantiate(&compiled, &good, &spec("{}"))
        .await
        .unwrap();
    assert_eq!(ok.contract, Contract::V0_2);

    // A 0.1 plugin gets the config alone, and is told so.
    let old = host.compile(&plugin("sp_affiliation_v0_1")).unwrap();
    assert_eq!(old.contract, Contract::V0_1);
    assert_eq!(old.contract.to_string(), "dlink:pipeline@0.1.0");
    host.check(&old).unwrap();
    let m = refusal(host.instantiate(&old, &good, &spec(r#"{"x": 1}"#)).await);
    assert_eq!(m, r#"sp_affiliation_v0_1 takes no config, got {"x": 1}"#);
}

/// The `typed` pipeline over `spmaster` (and `affiliation`) as init sees it.
fn sp_info(key: KeyType, upstreams: usize) -> PipelineInfo {
    use deltalake::arrow::datatypes::{DataType, Field, Schema};
    let change = |id: &str| {
        Arc::new(Schema::new(vec![
            Field::new(id, DataType::Int64, true),
            Field::new("_change_type", DataType::Utf8, false),
            Field::new("_commit_version", DataType::Int64, false),
            Field::new("_commit_timestamp", dlink_rt::cdf::timestamp_type(), true),
        ]))
    };
    PipelineInfo {
        name: "typed".into(),
        upstreams: [("spmaster", "diasng_id"), ("affiliation", "sp_id")]
            .into_iter()
            .take(upstreams)
            .map(|(t, id)| (t.to_string(), change(id)))
            .collect(),
        lookups: Vec::new(),
        keys: vec![KeyColumn {
            name: "diasng_id".into(),
            ty: key,
        }],
    }
}
