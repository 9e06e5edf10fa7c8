//! `dlink-rt run FOLDER --follow --listen 127.0.0.1:0`: the service, as a real process
//! scraped over real HTTP. A folder of three pipelines is followed while upstream
//! commits arrive, a plugin file is replaced (by one that fails, then by a good one), a
//! pipeline file is added, another disabled and a third broken; `/metrics` agrees with
//! the link tables, `/healthz` turns 503 while a plugin fails and 200 after, and
//! SIGTERM ends the process with exit 0 and every link table complete: each holds the
//! keys a run from scratch over the same tables finds, and its checkpoint is at the
//! upstreams' latest versions.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use common::{dlink, install, link_log, link_state, plugin, text, wait_for, Workspace, WAIT};
use serde_json::json;

/// `GET path` on `addr`: (status code, body).
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the service");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read the answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    (code, body.to_string())
}

/// The metric samples of `/metrics`: "name{labels}" -> value.
fn metrics(addr: &str) -> BTreeMap<String, f64> {
    let (code, body) = get(addr, "/metrics");
    assert_eq!(code, 200, "{body}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn sample(m: &BTreeMap<String, f64>, name: &str, pipeline: &str) -> f64 {
    m.get(&format!("{name}{{pipeline=\"{pipeline}\"}}"))
        .copied()
        .unwrap_or(0.0)
}

/// Waits until `ok` holds for the scraped metrics.
fn wait_metrics(addr: &str, what: &str, ok: impl Fn(&BTreeMap<String, f64>) -> bool) {
    let deadline = Instant::now() + WAIT;
    let mut last = BTreeMap::new();
    while Instant::now() < deadline {
        last = metrics(addr);
        if ok(&last) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("metrics never showed {what}; last scrape: {last:#?}");
}

fn wait_health(addr: &str, want: u16) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let (code, body) = get(addr, "/healthz");
        if code == want {
            return body;
        }
        assert!(Instant::now() < deadline, "/healthz stayed {code}: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sql_pipeline(ws: &Workspace, name: &str, query: &str, enabled: bool) -> PathBuf {
    let p = ws.path().join(format!("{name}.toml"));
    std::fs::write(
        &p,
        format!(
            "name = \"{name}\"\nenabled = {enabled}\nupstreams = [\"spmaster\", \"affiliation\"]\n\n\
             [sql]\nquery = \"{query}\"\n\n[link]\nuri = \"links/{name}\"\n\
             keys = [{{ name = \"diasng_id\", type = \"long\" }}]\n"
        ),
    )
    .unwrap();
    p
}

/// The distinct keys of a link table.
async fn keys_of(file: &Path) -> BTreeSet<i64> {
    link_log(file)
        .await
        .into_iter()
        .map(|(k, _, _)| k)
        .collect()
}

struct Service(Child);

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_followed_folder_is_scraped_reloaded_and_stopped_cleanly() {
    let ws = Workspace::new();
    let (mut sp, mut aff) = common::sp_tables(
        &ws,
        json!([[1, "a", "DE"], [2, "b", "FR"]]),
        json!([[1, 10, 1]]),
    )
    .await;
    // The plugin pipeline runs a copy of the example plugin that the test replaces.
    let wasm = ws.path().join("sp.wasm");
    std::fs::copy(plugin("sp_affiliation"), &wasm).unwrap();
    let sp_file = ws.pipeline(
        "sp",
        "sp_affiliation",
        &["spmaster", "affiliation"],
        &wasm,
        "diasng_id",
        100,
    );
    let staff = sql_pipeline(&ws, "staff", "SELECT diasng_id FROM spmaster_changes", true);
    let moved = sql_pipeline(
        &ws,
        "moved",
        "SELECT sp_id AS diasng_id FROM affiliation_changes",
        true,
    );

    let (mut service, addr, out, err) =
        follow_listening(ws.path(), &[("DLINK_LOG", "dlink_rt=info")]);
    let (mut seen, mut seen_err) = (Vec::new(), Vec::new());

    // The first batch of each pipeline.
    wait_metrics(&addr, "a first batch of each pipeline", |m| {
        ["sp_affiliation", "staff", "moved"]
            .iter()
            .all(|p| sample(m, "dlink_batches_total", p) >= 1.0)
    });
    assert_eq!(get(&addr, "/healthz").0, 200);

    // Upstream commits arrive.
    sp.insert(json!([[3, "c", "IT"]])).await.unwrap();
    aff.update("sp_id = 1", &[("sp_id", "4")]).await.unwrap();
    wait_metrics(&addr, "the commits' batches", |m| {
        m.iter()
            .filter(|(k, _)| k.starts_with("dlink_lag_versions{"))
            .all(|(_, v)| *v == 0.0)
            && sample(m, "dlink_batches_total", "sp_affiliation") >= 2.0
    });

    // A plugin that fails its batches: /healthz turns 503, naming the pipeline.
    install(&wasm, &std::fs::read(plugin("panic_on_derive")).unwrap());
    wait_metrics(&addr, "the swap to the failing plugin", |m| {
        sample(m, "dlink_plugin_swaps_total", "sp_affiliation") >= 1.0
    });
    sp.insert(json!([[5, "e", "PT"]])).await.unwrap();
    let body = wait_health(&addr, 503);
    assert!(
        body.contains("sp_affiliation") && body.contains("panic_on_derive"),
        "{body}"
    );
    let m = metrics(&addr);
    assert!(
        m.get("dlink_failures_total{kind=\"plugin\",pipeline=\"sp_affiliation\"}")
            .is_some_and(|v| *v >= 1.0),
        "{m:#?}"
    );
    // The good plugin back: the same batch is retried and /healthz is 200 again.
    install(&wasm, &std::fs::read(plugin("sp_affiliation")).unwrap());
    wait_health(&addr, 200);

    // A plugin file that does not load: the running plugin goes on, /healthz stays
    // 200 but says `degraded`, naming the pipeline and why; the good file back
    // clears it.
    install(&wasm, b"\0asm not really a component");
    let deadline = Instant::now() + WAIT;
    let body = loop {
        let (code, body) = get(&addr, "/healthz");
        assert_eq!(code, 200, "{body}");
        if body.contains("\"status\":\"degraded\"") {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz never said degraded: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        body.contains("\"degraded\":{\"sp_affiliation\":{\"rejected_plugin_file\":"),
        "{body}"
    );
    install(&wasm, &std::fs::read(plugin("sp_affiliation")).unwrap());
    let deadline = Instant::now() + WAIT;
    loop {
        let (code, body) = get(&addr, "/healthz");
        if code == 200 && body.contains("\"status\":\"ok\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz stayed degraded: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A new pipeline file starts; a disabled one stops; a broken one is reported and
    // its running version keeps going.
    let added = sql_pipeline(&ws, "added", "SELECT diasng_id FROM spmaster_changes", true);
    sql_pipeline(
        &ws,
        "moved",
        "SELECT sp_id AS diasng_id FROM affiliation_changes",
        false,
    );
    std::fs::write(&staff, "name = \"staff\"\nupstreams = [\"spmaster\"\n").unwrap();
    wait_metrics(
        &addr,
        "the added pipeline running and the disabled one stopped",
        |m| {
            sample(m, "dlink_pipeline_running", "added") == 1.0
                && sample(m, "dlink_batches_total", "added") >= 1.0
                && sample(m, "dlink_pipeline_running", "moved") == 0.0
        },
    );
    wait_for(&err, &format!("{}:", staff.display()), &mut seen_err);
    let moved_at = link_state(&moved).await.unwrap();
    sp.insert(json!([[6, "f", "NL"]])).await.unwrap();
    aff.insert(json!([[6, 60, 1]])).await.unwrap();
    let staff_before = sample(&metrics(&addr), "dlink_batches_total", "staff");
    wait_metrics(&addr, "the broken file's running version going on", |m| {
        sample(m, "dlink_batches_total", "staff") > staff_before
            && sample(m, "dlink_pipeline_running", "staff") == 1.0
    });

    // /metrics agrees with the link tables, once no batch is in flight: the table read
    // between two scrapes that show the same last batch.
    for (name, file) in [("sp_affiliation", &sp_file), ("added", &added)] {
        let deadline = Instant::now() + WAIT;
        loop {
            let before = metrics(&addr);
            let (batch, _) = link_state(file).await.unwrap();
            let rows = link_log(file).await.len();
            let m = metrics(&addr);
            let last = sample(&m, "dlink_last_batch", name);
            if last != sample(&before, "dlink_last_batch", name) || last != batch as f64 {
                assert!(Instant::now() < deadline, "{name}: never settled");
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            assert_eq!(
                sample(&m, "dlink_batches_total", name),
                batch as f64,
                "{name}"
            );
            assert_eq!(sample(&m, "dlink_keys_total", name), rows as f64, "{name}");
            break;
        }
    }
    // The pipelines read the same two upstreams and wake on the same ticks: commits
    // they all see are read once for all of them.
    let m = metrics(&addr);
    let requested = m["dlink_change_feed_reads_requested_total"];
    let performed = m["dlink_change_feed_reads_performed_total"];
    assert!(
        performed > 0.0 && performed < requested,
        "reads: {performed} performed for {requested} requested"
    );
    let (code, status) = get(&addr, "/status");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        status["pipelines"].as_array().map(Vec::len),
        Some(4),
        "{status}"
    );

    // SIGTERM: exit 0 once every pipeline has finished its batch.
    let pid = service.0.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let code = service.0.wait().unwrap();
    assert_eq!(code.code(), Some(0), "stderr: {}", seen_err.join("\n"));
    wait_for(
        &out,
        "stopped: every pipeline finished its current batch",
        &mut seen,
    );

    // The disabled pipeline ran no batch after it was disabled.
    assert_eq!(link_state(&moved).await.unwrap(), moved_at);
    assert!(moved_at.1.done.get("affiliation") < Some(&aff.version()));

    // Nothing lost or doubled: each link table holds the keys of a run from scratch.
    let latest = [sp.version(), aff.version()];
    for (file, fresh_name) in [(&sp_file, "sp_fresh"), (&added, "added_fresh")] {
        let body = std::fs::read_to_string(file).unwrap().replace(
            &format!("links/{}", file.file_stem().unwrap().to_string_lossy()),
            &format!("links/{fresh_name}"),
        );
        let fresh = ws.path().join(format!("{fresh_name}.toml.fresh"));
        std::fs::write(&fresh, body).unwrap();
        let o = dlink().arg("run").arg(&fresh).output().unwrap();
        assert!(o.status.success(), "{:?}", text(&o));
        assert_eq!(
            keys_of(file).await,
            keys_of(&fresh).await,
            "{}",
            file.display()
        );
        let (_, cp) = link_state(file).await.unwrap();
        assert_eq!(
            cp.done.get("spmaster"),
            Some(&latest[0]),
            "{}",
            file.display()
        );
        assert_eq!(
            cp.done.get("affiliation"),
            Some(&latest[1]),
            "{}",
            file.display()
        );
        common::link_rows(file).await; // panics on a key twice in one batch
    }
}

/// The address of the service's "listening on http://ADDR" line on `out`.
fn listening_addr(out: &std::sync::mpsc::Receiver<String>, seen: &mut Vec<String>) -> String {
    let line = wait_for(out, "listening on http://", seen);
    line.split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("an address after http://")
        .to_string()
}

/// Starts `run PATH --follow --interval 100ms --listen 127.0.0.1:0` (with `envs`); returns the
/// service, its address and its stdout and stderr lines (stdout must be kept open:
/// the service prints its batches there).
fn follow_listening(
    file: &Path,
    envs: &[(&str, &str)],
) -> (
    Service,
    String,
    std::sync::mpsc::Receiver<String>,
    std::sync::mpsc::Receiver<String>,
) {
    let (child, out, err) = common::spawn_with_lines(
        dlink()
            .args([
                "run",
                "--follow",
                "--interval",
                "100ms",
                "--listen",
                "127.0.0.1:0",
            ])
            .arg(file)
            .envs(envs.iter().copied())
            .env("NO_COLOR", "1"),
    );
    let addr = listening_addr(&out, &mut Vec::new());
    (Service(child), addr, out, err)
}

/// Waits for `/healthz` to answer `want` within `within`: a failure must show within
/// a few polls (here 100 ms each), not whenever something else happens.
fn health_within(addr: &str, want: u16, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let (code, body) = get(addr, "/healthz");
        if code == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz still {code} after {within:?} (want {want}): {body}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for a stderr line containing `needle`.
fn err_line(err: &std::sync::mpsc::Receiver<String>, needle: &str) -> String {
    wait_for(err, needle, &mut Vec::new())
}

/// While following, an upstream moved away is an ERROR, a `dlink_failures_total`
/// increment and `/healthz` 503 naming it, within a few polls; put back, the
/// pipeline is healthy again. A link table removed after it held batches stops the
/// pipeline with a named error instead of being created again from batch 1.
#[tokio::test(flavor = "multi_thread")]
async fn a_vanished_upstream_or_link_table_shows_while_following() {
    let ws = Workspace::new();
    let (mut sp, _aff) = common::sp_tables(
        &ws,
        json!([[1, "a", "DE"], [2, "b", "FR"]]),
        json!([[1, 10, 1]]),
    )
    .await;
    let staff = sql_pipeline(&ws, "staff", "SELECT diasng_id FROM spmaster_changes", true);
    let (mut service, addr, _out, err) = follow_listening(&staff, &[]);
    wait_metrics(&addr, "the first batch", |m| {
        sample(m, "dlink_batches_total", "staff") >= 1.0
    });
    assert_eq!(get(&addr, "/healthz").0, 200);

    let table = ws.table("spmaster");
    let away = ws.path().join("spmaster.away");
    std::fs::rename(&table, &away).unwrap();
    let body = health_within(&addr, 503, Duration::from_secs(10));
    assert!(
        body.contains("staff") && body.contains("spmaster"),
        "{body}"
    );
    let line = err_line(&err, "the table is gone");
    assert!(line.contains("ERROR"), "an ERROR event: {line}");
    let m = metrics(&addr);
    assert!(
        m.get("dlink_failures_total{kind=\"read\",pipeline=\"staff\"}")
            .copied()
            .unwrap_or(0.0)
            >= 1.0,
        "{m:#?}"
    );

    // Back in place, with a new commit: healthy, and the commit is read.
    std::fs::rename(&away, &table).unwrap();
    sp.insert(json!([[3, "c", "IT"]])).await.unwrap();
    health_within(&addr, 200, WAIT);
    wait_metrics(&addr, "a second batch", |m| {
        sample(m, "dlink_batches_total", "staff") >= 2.0
    });

    // The link table removed: a named failure, and no new table from batch 1.
    let link = ws.path().join("links/staff");
    assert!(link.is_dir(), "{}", link.display());
    std::fs::remove_dir_all(&link).unwrap();
    let body = health_within(&addr, 503, Duration::from_secs(10));
    assert!(body.contains("is gone: it held batch 2"), "{body}");
    sp.insert(json!([[4, "d", "PT"]])).await.unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        !link.join("_delta_log").exists(),
        "the link table was created again"
    );
    assert_eq!(get(&addr, "/healthz").0, 503);
    let _ = service.0.kill();
}
