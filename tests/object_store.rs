//! Tables on S3: a real S3 API server on loopback (moto's standalone server, started by
//! each test) holds the upstream tables and the link tables. The example pipelines
//! catch up over 100k-row tables there as they do on local disk; a SIGKILLed catch-up
//! resumes to the same link table; two runners of one pipeline commit every batch once;
//! a vacuumed upstream file stops the run naming its version; and the secret key given
//! through `${VAR}` never appears in anything dlink-rt prints, debug logs included.
//!
//! The server is `$DLINK_MOTO_SERVER`, else the `moto_server` of the venv `make
//! peer-venv` makes. Without it the tests skip loudly; with `CI` set they fail.

mod common;

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{batch_ids_in_log, dlink, link_rows, link_state, plugin, sp_history, text, Workspace};
use dlink_bench::{compare::PIPELINES, examples};
use dlink_rt::storage::StorageOptions;

/// What the runs get as the secret key, through the environment.
const SECRET: &str = "dlink-test-secret-7f3a9c";
const SECRET_VAR: &str = "DLINK_TEST_S3_SECRET";

/// A moto S3 server on a free loopback port, stopped when dropped.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto_binary() -> Option<PathBuf> {
    let bin = std::env::var_os("DLINK_MOTO_SERVER")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/dlink-rt/peer-venv/bin/moto_server"))
        })?;
    if bin.is_file() {
        return Some(bin);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI is set but the S3 test server is not at {} (run `make peer-venv`, or set DLINK_MOTO_SERVER)",
        bin.display()
    );
    eprintln!(
        "\n!!! SKIPPED: the S3 test server (moto_server) is not at {}; run `make peer-venv` !!!\n",
        bin.display()
    );
    None
}

impl Moto {
    fn start() -> Option<Moto> {
        let bin = moto_binary()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto.http("PUT", "/lake");
        Some(moto)
    }

    /// One request with an empty body; panics unless the answer is 2xx.
    fn http(&self, method: &str, path: &str) {
        use std::io::{Read, Write};
        let addr = self.endpoint.trim_start_matches("http://");
        let mut s = TcpStream::connect(addr).expect("connect to moto");
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .expect("request");
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        assert!(
            answer.starts_with("HTTP/1.1 2"),
            "{method} {path}: {answer}"
        );
    }

    /// The `[storage]` table of a catalog for this server (the secret from `${VAR}`;
    /// moto accepts any, so the tests' own reads use the default).
    fn storage_toml(&self) -> String {
        format!(
            "[storage]\naws_endpoint_url = \"{}\"\naws_region = \"us-east-1\"\naws_allow_http = \"true\"\n\
             aws_access_key_id = \"dlink-test\"\naws_secret_access_key = \"${{{SECRET_VAR}:-any}}\"\n\n",
            self.endpoint
        )
    }

    fn options(&self) -> StorageOptions {
        StorageOptions::new(BTreeMap::from(
            [
                ("aws_endpoint_url", self.endpoint.as_str()),
                ("aws_region", "us-east-1"),
                ("aws_allow_http", "true"),
                ("aws_access_key_id", "dlink-test"),
                ("aws_secret_access_key", "any"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        ))
    }

    /// The bucket's store rooted at `uri`.
    fn store(&self, uri: &str) -> std::sync::Arc<dyn deltalake::ObjectStore> {
        dlink_rt::storage::object_store(uri, &self.options()).expect("the bucket's store")
    }

    /// Copies a local table folder to `s3://lake/<prefix>` (Delta never rewrites a
    /// file, so a copy is the table).
    async fn upload(&self, local: &Path, prefix: &str) {
        use object_store::ObjectStoreExt;
        let store = self.store(&format!("s3://lake/{prefix}"));
        let mut stack = vec![local.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).expect("read dir") {
                let p = e.expect("entry").path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                let rel = p.strip_prefix(local).expect("under the table");
                let key = deltalake::Path::from(rel.to_string_lossy().as_ref());
                let bytes = std::fs::read(&p).expect("read file");
                store.put(&key, bytes.into()).await.expect("upload");
            }
        }
    }

    async fn put(&self, key: &str, bytes: &[u8]) {
        use object_store::ObjectStoreExt;
        let store = self.store("s3://lake");
        store
            .put(&deltalake::Path::from(key), bytes.to_vec().into())
            .await
            .expect("put");
    }

    async fn delete(&self, key: &str) {
        use object_store::ObjectStoreExt;
        let store = self.store("s3://lake");
        store
            .delete(&deltalake::Path::from(key))
            .await
            .expect("delete");
    }
}

/// `dlink-rt ARGS` with the secret in the environment and debug logs on.
fn run_s3(args: &[&str], path: &Path) -> Output {
    dlink()
        .args(args)
        .arg(path)
        .env(SECRET_VAR, SECRET)
        .env("DLINK_LOG", "debug")
        .output()
        .expect("run dlink-rt")
}

/// Asserts that a run succeeded and printed nothing of the secret, nor any other
/// storage option's value (the access key id, the endpoint), debug logs included.
fn ok_without_secret(what: &str, o: &Output) -> String {
    let (out, err) = text(o);
    assert!(o.status.success(), "{what} failed:\n{out}\n{err}");
    assert!(
        !out.contains(SECRET) && !err.contains(SECRET),
        "{what} printed the secret key"
    );
    for value in ["dlink-test", "http://127.0.0.1:"] {
        if let Some(line) = out.lines().chain(err.lines()).find(|l| l.contains(value)) {
            panic!("{what} printed the storage option value {value:?}: {line}");
        }
    }
    out
}

/// A folder with a catalog of `tables` on the server (`s3://lake/tables/NAME`) and
/// pipeline files whose link tables are on the server too.
fn s3_folder(moto: &Moto, tables: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut catalog = moto.storage_toml();
    for t in tables {
        catalog.push_str(&format!(
            "[upstreams.{t}]\nuri = \"s3://lake/tables/{t}\"\n\n"
        ));
    }
    std::fs::write(dir.path().join("upstreams.toml"), catalog).expect("catalog");
    dir
}

fn pipeline_file(
    dir: &Path,
    name: &str,
    upstreams: [&str; 2],
    key: &str,
    link: &str,
    batch_size: i64,
) -> PathBuf {
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(
        &file,
        format!(
            "name = \"{name}\"\nupstreams = [\"{}\", \"{}\"]\nbatch_size = {batch_size}\n\n[plugin]\npath = \"{}\"\n\n\
             [link]\nuri = \"{link}\"\nkeys = [{{ name = \"{key}\", type = \"long\" }}]\n",
            upstreams[0],
            upstreams[1],
            plugin(name).display()
        ),
    )
    .expect("pipeline file");
    file
}

#[tokio::test(flavor = "multi_thread")]
async fn example_pipelines_catch_up_over_s3_as_on_local_disk_at_100k_rows() {
    let Some(moto) = Moto::start() else { return };
    let local = tempfile::tempdir().unwrap();
    let tables = local.path().join("tables");
    examples::write_history(&tables, 100_000, 4)
        .await
        .expect("write tables");
    let names: Vec<&str> = examples::TABLES.iter().map(|t| t.0).collect();
    for t in &names {
        moto.upload(&tables.join(t), &format!("tables/{t}")).await;
    }
    // The same pipelines on local disk (catalog of local paths) and on S3.
    let mut catalog = String::new();
    for t in &names {
        catalog.push_str(&format!("[upstreams.{t}]\nuri = \"tables/{t}\"\n\n"));
    }
    std::fs::write(local.path().join("upstreams.toml"), catalog).unwrap();
    let s3 = s3_folder(&moto, &names);
    for (name, ups, key) in PIPELINES {
        pipeline_file(local.path(), name, ups, key, &format!("links/{name}"), 100);
        pipeline_file(
            s3.path(),
            name,
            ups,
            key,
            &format!("s3://lake/links/{name}"),
            100,
        );
    }
    let o = dlink().arg("run").arg(local.path()).output().unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "local run:\n{out}\n{err}");

    ok_without_secret("validate", &run_s3(&["validate"], s3.path()));
    let out = ok_without_secret("run", &run_s3(&["run"], s3.path()));
    assert!(
        out.contains("4 pipelines: 4 batches committed, 0 failed"),
        "{out}"
    );
    for (name, _, _) in PIPELINES {
        let on_s3 = link_rows(&s3.path().join(format!("{name}.toml"))).await;
        let on_disk = link_rows(&local.path().join(format!("{name}.toml"))).await;
        assert!(on_disk.len() > 10_000, "{name}: {} keys", on_disk.len());
        assert_eq!(on_s3, on_disk, "{name}: keys on S3 differ from local disk");
    }
    let status = ok_without_secret("status", &run_s3(&["status", "--json"], s3.path()));
    let status: serde_json::Value = serde_json::from_str(&status).expect("status --json");
    let listed = status["pipelines"].as_array().expect("pipelines");
    assert_eq!(listed.len(), 4, "{status}");
    for p in listed {
        assert_eq!(p["last_batch"], 1, "{p}");
        assert!(p["error"].is_null(), "{p}");
    }
    // Up to date: a second run commits nothing.
    let again = ok_without_secret("second run", &run_s3(&["run"], s3.path()));
    assert!(again.contains("0 batches committed"), "{again}");
}

/// sp_history's tables on the server and a pipeline (batch_size 1: 6 batches) whose
/// link table is there; the same pipeline on local disk gives the expected keys.
async fn sp_on_s3(
    moto: &Moto,
    link: &str,
) -> (
    Workspace,
    tempfile::TempDir,
    PathBuf,
    BTreeMap<i64, (i64, Vec<String>)>,
) {
    let ws = Workspace::new();
    sp_history(&ws).await;
    for t in ["spmaster", "affiliation"] {
        moto.upload(&ws.table(t), &format!("tables/{t}")).await;
    }
    let reference = ws.sp_pipeline(1);
    ws.run_ok(&reference);
    let want = link_rows(&reference).await;
    let dir = s3_folder(moto, &["spmaster", "affiliation"]);
    let file = pipeline_file(
        dir.path(),
        "sp_affiliation",
        ["spmaster", "affiliation"],
        "diasng_id",
        &format!("s3://lake/links/{link}"),
        1,
    );
    (ws, dir, file, want)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sigkilled_catch_up_on_s3_resumes_to_the_uninterrupted_result() {
    let Some(moto) = Moto::start() else { return };
    let (_ws, _dir, file, want) = sp_on_s3(&moto, "killed").await;
    for point in ["after-read:2", "before-commit:3", "after-commit:4"] {
        common::kill_at(&file, point, &[(SECRET_VAR, SECRET)]);
    }
    ok_without_secret("resume", &run_s3(&["run"], &file));
    assert_eq!(link_rows(&file).await, want);
    assert_eq!(batch_ids_in_log(&file).await, (1..=6).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread")]
async fn two_runners_of_one_pipeline_on_s3_commit_every_batch_once() {
    let Some(moto) = Moto::start() else { return };
    let (_ws, _dir, file, want) = sp_on_s3(&moto, "shared").await;
    let start = || {
        dlink()
            .args(["run", "--follow", "--interval", "50ms"])
            .arg(&file)
            .env(SECRET_VAR, SECRET)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let runners = [start(), start()];
    let deadline = Instant::now() + common::WAIT;
    while link_state(&file).await.map(|(_, c)| c.batch_id) != Some(6) {
        assert!(Instant::now() < deadline, "never reached batch 6");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut logs = String::new();
    for r in runners {
        let _ = Command::new("kill").arg(r.id().to_string()).status();
        let o = r.wait_with_output().unwrap();
        logs.push_str(&String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success(), "a runner failed:\n{logs}");
    }
    assert!(!logs.contains(SECRET));
    assert_eq!(link_rows(&file).await, want);
    assert_eq!(
        batch_ids_in_log(&file).await,
        (1..=6).collect::<Vec<_>>(),
        "a batch committed twice or not at all:\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vacuumed_upstream_file_on_s3_stops_the_run_naming_version_and_file() {
    let Some(moto) = Moto::start() else { return };
    let (_ws, _dir, file, _) = sp_on_s3(&moto, "vacuumed").await;
    // The data file spmaster's version 1 added.
    let log = read_object(
        &moto,
        "tables/spmaster/_delta_log/00000000000000000001.json",
    )
    .await;
    let added = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v["add"]["path"].as_str().map(String::from))
        .expect("version 1 adds a file");
    moto.delete(&format!("tables/spmaster/{added}")).await;
    let o = run_s3(&["run"], &file);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "the run succeeded:\n{out}");
    assert!(!out.contains(SECRET) && !err.contains(SECRET));
    assert!(
        err.contains("spmaster") && err.contains("version 1") && err.contains(&added),
        "{err}"
    );
    // Batch 1 (version 0 of each) committed; nothing at or after version 1.
    let (_, checkpoint) = link_state(&file).await.expect("batch 1 committed");
    assert_eq!(checkpoint.batch_id, 1, "{err}");
}

async fn read_object(moto: &Moto, key: &str) -> String {
    use object_store::ObjectStoreExt;
    let store = moto.store("s3://lake");
    let bytes = store
        .get(&deltalake::Path::from(key))
        .await
        .expect("get")
        .bytes()
        .await
        .expect("bytes");
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_in_the_bucket_is_loaded_and_swapped_by_uploading_a_new_one() {
    use common::{new_version_of, spawn_with_lines, wait_for};
    let Some(moto) = Moto::start() else { return };
    let (ws, dir, _, _) = sp_on_s3(&moto, "unused").await;
    let good = std::fs::read(plugin("sp_affiliation")).unwrap();
    moto.put("plugins/sp.wasm", &good).await;
    let file = dir.path().join("swap.toml");
    std::fs::write(
        &file,
        "name = \"sp_affiliation\"\nupstreams = [\"spmaster\", \"affiliation\"]\n\n\
         [plugin]\npath = \"s3://lake/plugins/sp.wasm\"\n\n\
         [link]\nuri = \"s3://lake/links/swap\"\nkeys = [{ name = \"diasng_id\", type = \"long\" }]\n",
    )
    .unwrap();
    ok_without_secret("validate", &run_s3(&["validate"], &file));
    let (mut child, out, err) = spawn_with_lines(
        dlink()
            .args(["run", "--follow", "--interval", "100ms"])
            .arg(&file)
            .env(SECRET_VAR, SECRET)
            .env("DLINK_LOG", "warn,dlink_rt=info"),
    );
    let (mut o, mut e) = (Vec::new(), Vec::new());
    wait_for(&out, "sp_affiliation batch 1:", &mut o);
    // An upload that is not a component is rejected; the running plugin stays.
    moto.put("plugins/sp.wasm", b"\0asm not really a component")
        .await;
    wait_for(&err, "rejected new plugin file", &mut e);
    // A new version: compiled beside the batches, in effect from the next batch.
    let v2 = new_version_of(&good, "v2");
    let sha = dlink_rt::plugin::sha256_hex(&v2);
    moto.put("plugins/sp.wasm", &v2).await;
    wait_for(&err, &format!("({}) ready", &sha[..12]), &mut e);
    let mut sp = dlink_rt::demo::DemoTable::open(&ws.table("spmaster"))
        .await
        .unwrap();
    sp.insert(serde_json::json!([[42, "x", "DE"]]))
        .await
        .unwrap();
    moto.upload(&ws.table("spmaster"), "tables/spmaster").await;
    wait_for(&out, "sp_affiliation batch 2:", &mut o);
    wait_for(&err, "takes effect at batch 2", &mut e);
    let _ = child.kill();
    let _ = child.wait();
    assert!(!e.iter().chain(&o).any(|l| l.contains(SECRET)));
    let keys = link_rows(&file).await;
    assert_eq!(keys.get(&42).map(|(b, _)| *b), Some(2), "{keys:?}");
}
