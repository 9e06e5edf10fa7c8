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
#[path = "hostile_plugins/load.rs"]
mod load;
#[path = "hostile_plugins/same_process.rs"]
mod same_process;

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
fn pipeline_with_memory(
    ws: &Workspace,
    file: &str,
    name: &str,
    plugin_path: &Path,
    batch_size: i64,
    extra: &str,
    memory_mb: u64,
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
        "\n[plugin.limits]\ntimeout_ms = {TIMEOUT_MS}\nmemory_mb = {memory_mb}\nmax_output_mb = {MAX_OUTPUT_MB}\n\n{extra}\n"
    ));
    std::fs::write(&p, toml).unwrap();
    p
}

/// The pipeline `sp_affiliation` in `sp.toml`.
fn sp_pipeline(ws: &Workspace, plugin_path: &Path, extra: &str) -> PathBuf {
    pipeline_in(ws, "sp", "sp_affiliation", plugin_path, 10, extra)
}

/// [`pipeline_with_memory`] with the small memory cap.
fn pipeline_in(
    ws: &Workspace,
    file: &str,
    name: &str,
    plugin_path: &Path,
    batch_size: i64,
    extra: &str,
) -> PathBuf {
    pipeline_with_memory(ws, file, name, plugin_path, batch_size, extra, MEMORY_MB)
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
    fail_batch_2_with_memory(bad, extra, prepare, MEMORY_MB).await
}

/// [`fail_batch_2`] with the plugin's memory cap at `memory_mb`.
async fn fail_batch_2_with_memory(
    bad: &str,
    extra: &str,
    prepare: impl FnOnce(&Workspace),
    memory_mb: u64,
) -> Failed {
    let (ws, mut sp) = setup().await;
    let good = sp_pipeline(&ws, &plugin("sp_affiliation"), "");
    ws.run_ok(&good);
    let before = link_state(&good).await.expect("batch 1 committed");
    assert_eq!(before.1.batch_id, 1);

    sp.insert(json!([[3, "c", "JP"]])).await.unwrap();
    prepare(&ws);
    let file = pipeline_with_memory(
        &ws,
        "sp",
        "sp_affiliation",
        &plugin(bad),
        10,
        extra,
        memory_mb,
    );
    let started = Instant::now();
    let o = common::output_within(
        dlink()
            .env("DLINK_HOSTILE_TEST_SECRET", "do-not-leak-this")
            .arg("run")
            .arg(&file),
        NOT_STUCK,
    );
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

/// What the host says of a `call` stopped at the small time budget.
fn time_budget(call: &str) -> String {
    format!("{call} exceeded its time budget of {TIMEOUT_MS} ms ([plugin.limits] timeout_ms)")
}

#[tokio::test(flavor = "multi_thread")]
async fn endless_loop_is_stopped_by_the_time_budget() {
    let f = fail_batch_2("endless_loop", "", |_| {}).await;
    // Trap::Interrupt (the epoch deadline) is what the host words as "time budget";
    // any other trap would read "derive trapped (...)".
    assert!(f.err.contains(&time_budget("derive")), "{}", f.err);
    assert!(!f.err.contains("derive trapped"), "{}", f.err);
    assert!(
        f.elapsed < NOT_STUCK,
        "the run took {:?}: the process is stuck",
        f.elapsed
    );
    f.good_plugin_commits_batch_2().await;
}

/// A sleep is a WASI call: no Wasm runs while it waits, so the epoch deadline that
/// stops a busy loop never fires; the call's wall-clock bound must end it.
#[tokio::test(flavor = "multi_thread")]
async fn derive_blocked_in_a_wasi_sleep_is_stopped_at_its_time_budget() {
    let f = fail_batch_2("sleep_in_host_call", "", |_| {}).await;
    assert!(f.err.contains(&time_budget("derive")), "{}", f.err);
    f.good_plugin_commits_batch_2().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn init_blocked_in_a_wasi_sleep_is_stopped_at_its_time_budget() {
    let (ws, _sp) = setup().await;
    let file = sp_pipeline(
        &ws,
        &plugin("sleep_in_host_call"),
        "[plugin.config]\nin_init = true\n",
    );
    let o = common::output_within(dlink().arg("run").arg(&file), NOT_STUCK);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    assert!(err.contains(&time_budget("init")), "{err}");
    assert_no_host_panic(&err);
    assert!(link_state(&file).await.is_none(), "nothing was committed");
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

/// An output far past the cap does not even reach the host's check: wasmtime's copy
/// budget (hostcall fuel) stops it, sized from the same setting, and the error names
/// that setting rather than "fuel allocated for hostcalls".
#[tokio::test(flavor = "multi_thread")]
async fn an_output_far_past_the_cap_names_the_cap() {
    // Room for the keys themselves: the cap that must apply is the output's.
    let f = fail_batch_2_with_memory(
        "huge_output",
        "[plugin.config]\nkeys = 2400000\n",
        |_| {},
        1024,
    )
    .await;
    assert!(
        f.err.contains(&format!(
            "derive tried to hand the host more than the output cap of {MAX_OUTPUT_MB} MiB in one call ([plugin.limits] max_output_mb)"
        )),
        "{}",
        f.err
    );
    assert!(!f.err.contains("hostcalls"), "{}", f.err);
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

/// SIGTERM ends a follower within 10 s even while its plugin is blocked in a host call
/// with a long budget: the current batch is abandoned without committing (exit 1,
/// saying so), and the next run commits it.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_ends_a_follower_whose_plugin_is_blocked() {
    let (ws, mut sp) = setup().await;
    let good = sp_pipeline(&ws, &plugin("sp_affiliation"), "");
    ws.run_ok(&good);
    let before = link_state(&good).await.expect("batch 1 committed");
    sp.insert(json!([[3, "c", "JP"]])).await.unwrap();
    let file = ws.pipeline(
        "sp",
        "sp_affiliation",
        &["spmaster", "affiliation"],
        &plugin("sleep_in_host_call"),
        "diasng_id",
        10,
    );
    let mut toml = std::fs::read_to_string(&file).unwrap();
    toml.push_str("\n[plugin.limits]\ntimeout_ms = 3600000\n");
    std::fs::write(&file, toml).unwrap();
    let (child, _out, err) = common::spawn_with_lines(
        dlink()
            .args(["run", "--follow", "--interval", "100ms"])
            .arg(&file),
    );
    let mut child = Killed(child);
    let mut seen = Vec::new();
    common::wait_for(&err, "sleeping for an hour", &mut seen);
    let pid = child.0.id().to_string();
    let sent = Instant::now();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr: Vec<String> = seen.into_iter().chain(err.try_iter()).collect();
    let stderr = stderr.join("\n");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("abandoned"), "{stderr}");
    assert_no_host_panic(&stderr);
    assert_eq!(
        link_state(&file).await.unwrap(),
        before,
        "nothing committed"
    );
    // The good plugin back in the same file: it commits the abandoned batch.
    let good = sp_pipeline(&ws, &plugin("sp_affiliation"), "");
    ws.run_ok(&good);
    assert_eq!(link_state(&good).await.unwrap().1.batch_id, 2);
}

/// Kills the child when dropped (a failed assertion must not leave it running).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
