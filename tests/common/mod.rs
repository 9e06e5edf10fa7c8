//! Helpers shared by the end-to-end tests: a temp folder with upstream tables, a
//! catalog and pipeline files; running the real `dlink-rt` binary; reading link tables.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use deltalake::arrow::array::{Array, AsArray};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Int64Type};
use dlink_rt::config::Pipeline;
use dlink_rt::sink::LinkTable;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("runtime/ has a parent")
        .to_path_buf()
}

/// A plugin built by `make build` into plugins/dist.
pub fn plugin(name: &str) -> PathBuf {
    let p = repo_root()
        .join("plugins/dist")
        .join(format!("{name}.wasm"));
    assert!(
        p.is_file(),
        "{} is missing: build the plugins first with `make build` (make test does)",
        p.display()
    );
    p
}

/// Compiled components are cached here for the whole test run.
pub fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dlink-components")
}

/// The `dlink-rt` binary with the test cache folder. Cargo sets its path
/// (`CARGO_BIN_EXE_dlink-rt`) for the runtime package's tests only; the bench package's
/// test shares these helpers and runs `dlink-bench` instead (tests/bench.rs), never this.
pub fn dlink() -> Command {
    let Some(exe) = option_env!("CARGO_BIN_EXE_dlink-rt") else {
        panic!(
            "dlink() is for the runtime package's tests (cargo sets CARGO_BIN_EXE_dlink-rt there)"
        )
    };
    let mut c = Command::new(exe);
    c.env("DLINK_CACHE_DIR", cache_dir())
        .env_remove("DLINK_TEST_PAUSE_AT");
    c
}

pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A folder with a catalog of the six example upstreams (tables under `tables/`).
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

pub const UPSTREAMS: [&str; 6] = [
    "spmaster",
    "affiliation",
    "employee",
    "department",
    "publications",
    "author_publication_link",
];

impl Workspace {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut catalog = String::new();
        for u in UPSTREAMS {
            catalog.push_str(&format!("[upstreams.{u}]\nuri = \"tables/{u}\"\n\n"));
        }
        std::fs::write(dir.path().join("upstreams.toml"), catalog).expect("write catalog");
        Workspace { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn table(&self, name: &str) -> PathBuf {
        self.path().join("tables").join(name)
    }

    /// Writes `<file>.toml` for a pipeline named `name` with a plugin file and the
    /// link table at `links/<file>`.
    pub fn pipeline(
        &self,
        file: &str,
        name: &str,
        upstreams: &[&str],
        plugin: &Path,
        key: &str,
        batch_size: i64,
    ) -> PathBuf {
        let ups = upstreams
            .iter()
            .map(|u| format!("\"{u}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let text = format!(
            "name = \"{name}\"\nupstreams = [{ups}]\nbatch_size = {batch_size}\n\n\
             [plugin]\npath = \"{}\"\n\n[link]\nuri = \"links/{file}\"\nkeys = [{{ name = \"{key}\", type = \"long\" }}]\n",
            plugin.display()
        );
        let p = self.path().join(format!("{file}.toml"));
        std::fs::write(&p, text).expect("write pipeline");
        p
    }

    /// `sp.toml`: the pipeline `sp_affiliation` on spmaster and affiliation (key
    /// `diasng_id`) with the example plugin.
    pub fn sp_pipeline(&self, batch_size: i64) -> PathBuf {
        self.pipeline(
            "sp",
            "sp_affiliation",
            &["spmaster", "affiliation"],
            &plugin("sp_affiliation"),
            "diasng_id",
            batch_size,
        )
    }

    /// Runs `dlink-rt run FILE`, asserting success; returns stdout.
    pub fn run_ok(&self, file: &Path) -> String {
        let o = dlink().arg("run").arg(file).output().expect("run dlink-rt");
        let (out, err) = text(&o);
        assert!(
            o.status.success(),
            "dlink-rt run {} failed:\n{out}\n{err}",
            file.display()
        );
        out
    }
}

/// The link table's keys as key -> (the last batch that reported it, causing
/// upstreams in that batch). Reads a change log (one row per key and batch) and a
/// `latest` table (one row per key) alike; a key reported twice in one batch fails.
pub async fn link_rows(pipeline_file: &Path) -> BTreeMap<i64, (i64, Vec<String>)> {
    let mut out: BTreeMap<i64, (i64, Vec<String>)> = BTreeMap::new();
    for (k, batch, names) in link_log(pipeline_file).await {
        match out.get(&k) {
            Some((b, _)) if *b == batch => panic!("key {k} is in batch {batch} twice"),
            Some((b, _)) if *b > batch => {}
            _ => {
                out.insert(k, (batch, names));
            }
        }
    }
    out
}

/// The distinct keys reported by the batches in `batches`.
pub async fn link_keys(
    pipeline_file: &Path,
    batches: std::ops::RangeInclusive<i64>,
) -> BTreeSet<i64> {
    link_log(pipeline_file)
        .await
        .into_iter()
        .filter(|(_, b, _)| batches.contains(b))
        .map(|(k, _, _)| k)
        .collect()
}

/// Every row of the link table as (key, batch id, causing upstreams).
pub async fn link_log(pipeline_file: &Path) -> Vec<(i64, i64, Vec<String>)> {
    let p = Pipeline::load(pipeline_file).expect("pipeline loads");
    let table = link_table(&p).await;
    let ctx = dlink_rt::cdf::session();
    let df = ctx
        .read_table(table.table_provider().await.expect("provider"))
        .expect("read link");
    let key = &p.keys[0].name;
    let mut out = Vec::new();
    for b in df.collect().await.expect("collect link") {
        let k = b
            .column_by_name(key)
            .expect("key column")
            .as_primitive::<Int64Type>()
            .clone();
        let id = b
            .column_by_name("dlink_batch_id")
            .expect("batch id")
            .as_primitive::<Int64Type>()
            .clone();
        let ups = b
            .column_by_name("dlink_upstreams")
            .expect("upstreams")
            .as_list::<i32>()
            .clone();
        for i in 0..b.num_rows() {
            let names = cast(&ups.value(i), &DataType::Utf8).expect("names as utf8");
            let names = names.as_string::<i32>();
            let names = (0..names.len())
                .map(|j| names.value(j).to_string())
                .collect();
            out.push((k.value(i), id.value(i), names));
        }
    }
    out
}

/// Keys whose last reporting batch is `batch`.
pub async fn keys_of_batch(pipeline_file: &Path, batch: i64) -> BTreeSet<i64> {
    link_rows(pipeline_file)
        .await
        .into_iter()
        .filter(|(_, (b, _))| *b == batch)
        .map(|(k, _)| k)
        .collect()
}

/// The link table's (Delta version, checkpoint), or None before the first commit.
pub async fn link_state(pipeline_file: &Path) -> Option<(i64, dlink_rt::sink::Checkpoint)> {
    let p = Pipeline::load(pipeline_file).expect("pipeline loads");
    let mut link = LinkTable::open(&p).await.expect("open link");
    let version = link.table()?.version()? as i64;
    Some((version, link.checkpoint().await.expect("checkpoint")))
}

/// Turns a plugin pipeline file (as [`Workspace::pipeline`] writes it) into a SQL one:
/// its `[plugin]` table replaced by `[sql] query`.
pub fn to_sql(file: &Path, query: &str) {
    let text = std::fs::read_to_string(file).expect("read the pipeline file");
    let start = text.find("[plugin]\n").expect("a [plugin] table");
    let end = text[start..]
        .find("\n\n")
        .map_or(text.len(), |e| start + e + 2);
    let sql = format!("[sql]\nquery = \"\"\"{query}\"\"\"\n\n");
    std::fs::write(file, format!("{}{sql}{}", &text[..start], &text[end..]))
        .expect("write the pipeline file");
}

pub fn set(v: &[i64]) -> BTreeSet<i64> {
    v.iter().copied().collect()
}

/// The Python of the peer's venv (`$DLINK_PEER_PYTHON`, else the one `make peer-venv`
/// makes), or None after saying the test is skipped. In CI (`CI` set) a missing venv
/// fails the test: a skip would prove nothing.
pub fn peer_python(what: &str) -> Option<PathBuf> {
    let python = std::env::var_os("DLINK_PEER_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/dlink-rt/peer-venv/bin/python"))
        });
    let found = python.filter(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI: the peer's venv is missing; `make peer-venv` makes it"
        );
        eprintln!("SKIPPED: no peer venv (run `make peer-venv`); {what} is not tested");
    }
    found
}

/// A workspace with the six example tables at `rows` rows and a 4-commit history
/// (written by the bench's generator), and the emp_dept pipeline in batches of two
/// versions. Returns (workspace, tables folder, pipeline file).
pub async fn emp_dept_at(rows: usize) -> (Workspace, PathBuf, PathBuf) {
    let ws = Workspace::new();
    let tables = ws.path().join("tables");
    dlink_bench::examples::write_history(&tables, rows, 4)
        .await
        .expect("write the example tables");
    let file = ws.pipeline(
        "emp_dept",
        "emp_dept",
        &["employee", "department"],
        &plugin("emp_dept"),
        "emp_id",
        2,
    );
    (ws, tables, file)
}

/// The `emp_id`s of JSON lines (`keys --format json`, the Python recipe).
pub fn json_emp_ids(out: &str) -> BTreeSet<i64> {
    out.lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            v["emp_id"]
                .as_i64()
                .unwrap_or_else(|| panic!("no emp_id: {l}"))
        })
        .collect()
}

/// The sp_affiliation pipeline's upstream tables in `ws`: spmaster with `spmaster`
/// rows and affiliation with `affiliation` rows, in the example columns of
/// `dlink_rt::demo`. Returns the two tables for further commits.
pub async fn sp_tables(
    ws: &Workspace,
    spmaster: serde_json::Value,
    affiliation: serde_json::Value,
) -> (dlink_rt::demo::DemoTable, dlink_rt::demo::DemoTable) {
    use dlink_rt::demo::{DemoTable, AFFILIATION, SPMASTER};
    let sp = DemoTable::create(&ws.table("spmaster"), &SPMASTER, spmaster)
        .await
        .expect("write spmaster");
    let aff = DemoTable::create(&ws.table("affiliation"), &AFFILIATION, affiliation)
        .await
        .expect("write affiliation");
    (sp, aff)
}

/// Upstreams with 6 (spmaster) and 5 (affiliation) versions: 6 batches of 1 version.
pub async fn sp_history(ws: &Workspace) {
    let (mut sp, mut aff) = sp_tables(
        ws,
        serde_json::json!([[1, "a", "DE"], [2, "b", "FR"], [3, "c", "JP"]]),
        serde_json::json!([[1, 10, 1], [2, 20, 1]]),
    )
    .await;
    sp.insert(serde_json::json!([[4, "d", "US"]]))
        .await
        .unwrap();
    aff.update("sp_id = 2", &[("sp_id", "3")]).await.unwrap();
    sp.update("diasng_id = 1", &[("country", "'BR'")])
        .await
        .unwrap();
    aff.insert(serde_json::json!([[5, 50, 1], [6, 60, 1]]))
        .await
        .unwrap();
    sp.delete("diasng_id = 4").await.unwrap();
    aff.delete("sp_id = 1").await.unwrap();
    sp.upsert(
        &["diasng_id"],
        serde_json::json!([[2, "b2", "FR"], [7, "g", "NG"]]),
    )
    .await
    .unwrap();
    aff.upsert(
        &["sp_id", "rank"],
        serde_json::json!([[3, 21, 1], [8, 80, 1]]),
    )
    .await
    .unwrap();
    sp.insert(serde_json::json!([[9, "i", "DE"]]))
        .await
        .unwrap();
}

/// How long a test waits for a line of a running process or a state of its tables.
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Lines of a child's stream, read on a thread.
pub fn lines(stream: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stream)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Starts `cmd` with its stdout and stderr piped, each read line by line on a thread.
pub fn spawn_with_lines(
    cmd: &mut Command,
) -> (
    std::process::Child,
    std::sync::mpsc::Receiver<String>,
    std::sync::mpsc::Receiver<String>,
) {
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dlink-rt");
    let out = lines(child.stdout.take().expect("piped stdout"));
    let err = lines(child.stderr.take().expect("piped stderr"));
    (child, out, err)
}

/// Waits for a line containing `needle`; returns it (and keeps everything seen).
pub fn wait_for(
    rx: &std::sync::mpsc::Receiver<String>,
    needle: &str,
    seen: &mut Vec<String>,
) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(100)) {
            seen.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }
    panic!(
        "no line with {needle:?} within {WAIT:?}; seen:\n{}",
        seen.join("\n")
    );
}

/// Replaces `dst` atomically, as a deployment should.
pub fn install(dst: &Path, bytes: &[u8]) {
    let tmp = dst.with_extension("tmp");
    std::fs::write(&tmp, bytes).expect("write the new file");
    std::fs::rename(tmp, dst).expect("rename it over the old one");
}

/// The `dlink` commit metadata of every commit of the link table, newest first (the
/// one reader of the link table's history the tests share).
pub async fn link_commit_metadata(file: &Path) -> Vec<serde_json::Value> {
    use futures::StreamExt;
    let p = dlink_rt::config::Pipeline::load(file).unwrap();
    let table = link_table(&p).await;
    let mut out = Vec::new();
    let mut history = table.history(None);
    while let Some(ci) = history.next().await {
        if let Some(m) = ci.unwrap().info.get("dlink") {
            out.push(m.clone());
        }
    }
    out
}

/// The `dlink.batch_id` of every commit in the link table's log, in order.
pub async fn batch_ids_in_log(file: &Path) -> Vec<i64> {
    let mut ids: Vec<i64> = link_commit_metadata(file)
        .await
        .iter()
        .filter_map(|m| m["batch_id"].as_i64())
        .collect();
    ids.sort();
    ids
}

/// Starts a run that stops at `point` (see engine::test_pause), waits until it is
/// there, and SIGKILLs it.
pub fn kill_at(file: &Path, point: &str, envs: &[(&str, &str)]) {
    use std::io::BufRead;
    let mut child = dlink()
        .arg("run")
        .arg(file)
        .env("DLINK_TEST_PAUSE_AT", point)
        .envs(envs.iter().copied())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut seen = String::new();
    for line in std::io::BufReader::new(stderr).lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.starts_with("DLINK_TEST_PAUSED") {
            break;
        }
    }
    assert!(
        seen.contains(&format!("DLINK_TEST_PAUSED {point}")),
        "never reached {point}:\n{seen}"
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

/// A pipeline's link table at its latest version (with its storage options).
pub async fn link_table(p: &Pipeline) -> deltalake::DeltaTable {
    dlink_rt::storage::builder(&p.link_uri, &p.link_storage)
        .expect("link url")
        .load()
        .await
        .expect("link table exists")
}

/// The same component with a custom section appended: same behaviour, new hash.
pub fn new_version_of(wasm: &[u8], tag: &str) -> Vec<u8> {
    let name = b"dlink-test";
    let mut body = vec![name.len() as u8];
    body.extend_from_slice(name);
    body.extend_from_slice(tag.as_bytes());
    let mut out = wasm.to_vec();
    out.push(0); // custom section id
    let mut n = body.len();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        out.push(if n == 0 { byte } else { byte | 0x80 });
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&body);
    out
}

/// Runs `cmd` to its end like `Command::output`, but kills it and fails the test when
/// it has not ended within `limit` (a hang is a failure, not a test that never ends).
pub fn output_within(cmd: &mut Command, limit: std::time::Duration) -> Output {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dlink-rt");
    let read_all = |mut s: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = s.read_to_end(&mut b);
            b
        })
    };
    let out = read_all(Box::new(child.stdout.take().expect("piped stdout")));
    let err = read_all(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for dlink-rt") {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let err = String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned();
            panic!("still running after {limit:?} (killed): the process hangs; stderr:\n{err}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}
