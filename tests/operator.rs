//! What an operator sees: output into a closed pipe, JSON logs of a failing run, what
//! `--log info` shows, and the wording of counts, ranges and empty results.

mod common;

use std::process::{Command, Stdio};

use common::{dlink, plugin, sp_tables, text, Workspace};
use serde_json::{json, Value};

/// Runs `cmd` with its stdout a pipe whose reader is already gone (`| head -0`): the
/// first write fails with a broken pipe.
fn into_a_closed_pipe(cmd: &mut Command) -> std::process::Output {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let child = cmd
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .expect("run dlink-rt");
    child.wait_with_output().expect("wait for dlink-rt")
}

async fn sp_workspace() -> (Workspace, std::path::PathBuf) {
    let ws = Workspace::new();
    sp_tables(
        &ws,
        json!([[1, "a", "DE"], [2, "b", "FR"], [3, "c", "JP"]]),
        json!([[1, 10, 1]]),
    )
    .await;
    let p = ws.sp_pipeline(100);
    (ws, p)
}

#[tokio::test(flavor = "multi_thread")]
async fn verbs_writing_into_a_closed_pipe_do_not_panic() {
    let (ws, p) = sp_workspace().await;
    ws.run_ok(&p);
    let cases: Vec<Vec<String>> = vec![
        vec!["schema".into()],
        vec![
            "status".into(),
            ws.path().display().to_string(),
            "--json".into(),
        ],
        vec!["status".into(), p.display().to_string()],
        vec!["graph".into(), ws.path().display().to_string()],
        vec!["run".into(), p.display().to_string()],
        vec!["validate".into(), p.display().to_string()],
    ];
    for args in cases {
        let o = into_a_closed_pipe(dlink().args(&args));
        let (_, err) = text(&o);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(
            o.status.success(),
            "{args:?}: exit {:?}: {err}",
            o.status.code()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_run_with_json_logs_writes_only_json_with_one_error_event() {
    let (ws, _) = sp_workspace().await;
    let p = ws.pipeline(
        "bad",
        "bad",
        &["spmaster", "affiliation"],
        &plugin("panic_on_derive"),
        "diasng_id",
        100,
    );
    let o = dlink()
        .args(["run", "--log-format", "json"])
        .arg(&p)
        .output()
        .expect("run dlink-rt");
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let events: Vec<Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{err}")))
        .collect();
    let errors: Vec<&Value> = events.iter().filter(|e| e["level"] == "ERROR").collect();
    assert_eq!(errors.len(), 1, "{err}");
    let e = errors[0];
    assert_eq!(e["pipeline"], "bad", "{e}");
    assert_eq!(e["batch"], 1, "{e}");
    assert_eq!(e["kind"], "plugin", "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn log_info_shows_dlink_rts_events_without_colour_and_each_committed_batch() {
    let (_ws, p) = sp_workspace().await;
    let o = dlink()
        .args(["run", "--log", "info", "--log-format", "json"])
        .arg(&p)
        .output()
        .expect("run dlink-rt");
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    let events: Vec<Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let foreign: Vec<&Value> = events
        .iter()
        .filter(|e| {
            !e["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("dlink_rt"))
        })
        .filter(|e| e["level"] == "INFO" || e["level"] == "DEBUG")
        .collect();
    assert!(foreign.is_empty(), "other crates at info: {foreign:?}");
    let committed: Vec<&Value> = events
        .iter()
        .filter(|e| e["message"] == "batch committed")
        .collect();
    assert_eq!(committed.len(), 1, "{err}");
    let c = committed[0];
    assert_eq!(c["pipeline"], "sp_affiliation", "{c}");
    assert_eq!(c["batch"], 1, "{c}");
    assert_eq!(c["keys"], 3, "{c}");
    assert!(
        c["upstreams"]
            .as_str()
            .is_some_and(|u| u.contains("spmaster v0")),
        "{c}"
    );
    assert_eq!(c["plugin_sha256"].as_str().map(str::len), Some(64), "{c}");
    // Text logs into a file (a pipe here) carry no colour codes.
    let o = dlink()
        .args(["run", "--log", "debug"])
        .arg(&p)
        .output()
        .expect("run dlink-rt");
    let (_, err) = text(&o);
    assert!(!err.contains('\u{1b}'), "colour codes in a pipe: {err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn counts_and_ranges_read_as_english() {
    let (ws, p) = sp_workspace().await;
    let out = ws.run_ok(ws.path());
    assert!(out.contains("1 pipeline: 1 batch committed"), "{out}");
    let o = dlink().arg("validate").arg(&p).output().expect("validate");
    let (out, err) = text(&o);
    assert!(out.contains("1 pipeline checked"), "{out}{err}");
    // Nothing after the last batch: no empty table, plain words.
    let o = dlink()
        .args(["keys", "--since-batch", "1"])
        .arg(&p)
        .output()
        .expect("keys");
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(!out.contains("++"), "an empty table: {out}");
    assert!(err.contains("nothing new"), "{err}");
    let o = dlink()
        .args(["keys", "--since-batch", "0"])
        .arg(&p)
        .output()
        .expect("keys");
    let (_, err) = text(&o);
    assert!(err.contains("3 keys of batch 1 "), "{err}");
    assert!(!err.contains("..="), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reset_without_user_records_who_ran_it() {
    let (ws, p) = sp_workspace().await;
    ws.run_ok(&p);
    let o = dlink()
        .args(["reset", "--upstream", "spmaster", "--to-latest"])
        .arg(&p)
        .env_remove("USER")
        .env_remove("LOGNAME")
        .output()
        .expect("reset");
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("recorded by uid "), "{out}");
    let o = dlink()
        .args([
            "reset",
            "--upstream",
            "spmaster",
            "--to-latest",
            "--by",
            "oncall-7",
        ])
        .arg(&p)
        .output()
        .expect("reset");
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("recorded by oncall-7"), "{out}");
    // `status` says the last reset in words, not as the commit's JSON.
    let o = dlink().arg("status").arg(&p).output().expect("status");
    let (out, err) = text(&o);
    let line = out
        .lines()
        .find(|l| l.contains("last reset"))
        .unwrap_or_else(|| panic!("no last reset in:\n{out}{err}"));
    assert!(
        line.contains("spmaster from version 1 (was 1) by oncall-7 at "),
        "{line}"
    );
    assert!(!line.contains('{'), "{line}");
}

/// "In effect since batch N" survives a restart with the same plugin (or query): the
/// second process goes on from what the link table recorded, not from its own first
/// batch; a different file starts again.
#[tokio::test(flavor = "multi_thread")]
async fn in_effect_since_survives_a_restart_with_the_same_plugin() {
    let ws = Workspace::new();
    let (mut sp, _) = sp_tables(
        &ws,
        json!([[1, "a", "DE"], [2, "b", "FR"]]),
        json!([[1, 10, 1]]),
    )
    .await;
    let p = ws.sp_pipeline(100);
    let sql = ws.sp_pipeline(100).with_file_name("sql.toml");
    std::fs::copy(&p, &sql).unwrap();
    let text = std::fs::read_to_string(&sql)
        .unwrap()
        .replace("links/sp", "links/sql");
    std::fs::write(&sql, text).unwrap();
    common::to_sql(
        &sql,
        "SELECT diasng_id, 'spmaster' AS _upstream FROM spmaster_changes",
    );
    let since = |file: std::path::PathBuf| async move {
        common::link_commit_metadata(&file).await[0]["plugin"]["active_since_batch"].clone()
    };
    for file in [&p, &sql] {
        ws.run_ok(file);
        assert_eq!(since(file.clone()).await, 1, "{}", file.display());
    }
    sp.insert(json!([[3, "c", "JP"]])).await.unwrap();
    for file in [&p, &sql] {
        ws.run_ok(file);
        assert_eq!(
            since(file.clone()).await,
            1,
            "{}: same file, new process",
            file.display()
        );
    }
    // Another plugin file: in effect since its first batch.
    let other = ws.path().join("other.wasm");
    common::install(
        &other,
        &common::new_version_of(&std::fs::read(plugin("sp_affiliation")).unwrap(), "x"),
    );
    let text = std::fs::read_to_string(&p).unwrap();
    let path = plugin("sp_affiliation").display().to_string();
    std::fs::write(&p, text.replace(&path, &other.display().to_string())).unwrap();
    sp.insert(json!([[4, "d", "US"]])).await.unwrap();
    ws.run_ok(&p);
    assert_eq!(since(p.clone()).await, 3, "a new plugin file");
}

/// `history`: the committed batches newest first, with what their commits recorded;
/// `--last` bounds them, `--json` gives the same as objects; resets are not batches.
#[tokio::test(flavor = "multi_thread")]
async fn history_lists_the_committed_batches_newest_first() {
    let ws = Workspace::new();
    let (mut sp, _) = sp_tables(&ws, json!([[1, "a", "DE"]]), json!([[1, 10, 1]])).await;
    let p = ws.sp_pipeline(1);
    let o = dlink().arg("history").arg(&p).output().expect("history");
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("no batch committed yet"), "{out}");
    ws.run_ok(&p);
    sp.insert(json!([[2, "b", "FR"], [3, "c", "JP"]]))
        .await
        .unwrap();
    ws.run_ok(&p);
    // A reset between batches is not listed.
    let o = dlink()
        .args([
            "reset",
            "--upstream",
            "affiliation",
            "--to-latest",
            "--by",
            "t",
        ])
        .arg(&p)
        .output()
        .expect("reset");
    assert!(o.status.success(), "{}", text(&o).1);
    sp.insert(json!([[4, "d", "US"]])).await.unwrap();
    ws.run_ok(&p);

    let o = dlink()
        .args(["history", "--last", "2", "--json"])
        .arg(&p)
        .output()
        .expect("history");
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let v: Value = serde_json::from_str(&out).expect("one JSON object");
    let batches = v["batches"].as_array().expect("batches");
    assert_eq!(batches.len(), 2, "{out}");
    assert_eq!(batches[0]["batch"], 3, "{out}");
    assert_eq!(batches[1]["batch"], 2, "{out}");
    // Batch 2: spmaster's version 1 (two inserts), two keys.
    let b2 = &batches[1];
    assert_eq!(b2["keys"], 2, "{b2}");
    assert_eq!(b2["change_rows"], 2, "{b2}");
    let sp_range = b2["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["upstream"] == "spmaster")
        .expect("spmaster");
    assert_eq!(sp_range["start_version"], 1, "{b2}");
    assert_eq!(sp_range["end_version"], 1, "{b2}");
    assert!(b2["elapsed_ms"].as_u64().is_some(), "{b2}");
    assert_eq!(b2["plugin_sha256"].as_str().map(str::len), Some(64), "{b2}");
    assert_eq!(b2["contract"], "dlink:pipeline@0.3.0", "{b2}");
    assert!(b2["committed_at"].as_str().is_some(), "{b2}");

    let o = dlink().arg("history").arg(&p).output().expect("history");
    let (out, _) = text(&o);
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("batch ")).collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[2].starts_with("batch 1 "), "{out}");
    assert!(
        lines[1].contains("spmaster v1 ") && lines[1].contains("| 2 keys |"),
        "{out}"
    );
}

/// `--select`: only the named pipelines of a folder, for run, validate, status and
/// compact; a name no pipeline has is a usage error (exit 2) with a did-you-mean.
#[tokio::test(flavor = "multi_thread")]
async fn select_runs_only_the_named_pipelines_of_a_folder() {
    let (ws, sp) = sp_workspace().await;
    let other = ws.pipeline(
        "other",
        "other",
        &["spmaster"],
        &plugin("every_upstream_key"),
        "diasng_id",
        100,
    );
    let file = std::fs::read_to_string(&other).unwrap();
    std::fs::write(
        &other,
        file.replace("[plugin.config]\n", "").replace(
            "[link]",
            "[plugin.config]\nkey_column = \"diasng_id\"\n\n[link]",
        ),
    )
    .unwrap();
    let folder = ws.path().display().to_string();
    let o = dlink()
        .args(["run", &folder, "--select", "sp_affiliation"])
        .output()
        .expect("run");
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("1 pipeline: 1 batch committed"), "{out}");
    assert!(common::link_state(&sp).await.is_some());
    assert!(
        common::link_state(&other).await.is_none(),
        "the other pipeline ran"
    );
    let o = dlink()
        .args(["status", &folder, "--json", "--select", "other"])
        .output()
        .expect("status");
    let v: Value = serde_json::from_str(&text(&o).0).expect("JSON");
    let names: Vec<&str> = v["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["pipeline"].as_str())
        .collect();
    assert_eq!(names, ["other"]);
    for verb in ["run", "validate", "status", "compact"] {
        let o = dlink()
            .args([verb, &folder, "--select", "sp_afiliation"])
            .output()
            .expect("dlink-rt");
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{verb}: {err}");
        assert!(
            err.contains("did you mean 'sp_affiliation'?"),
            "{verb}: {err}"
        );
    }
}

/// `run FILE --dry-run`: the pending batches derived and shown with their first keys;
/// the link table is not created, and the real run then commits the same keys.
#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_shows_the_next_batches_and_commits_nothing() {
    let (ws, p) = sp_workspace().await;
    let o = dlink()
        .args(["run", "--dry-run"])
        .arg(&p)
        .output()
        .expect("dry run");
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(
        out.contains("sp_affiliation batch 1:") && out.contains("| 3 keys |"),
        "{out}"
    );
    assert!(out.contains("(dry run: not committed)"), "{out}");
    assert!(out.contains("first keys: 1, 2, 3"), "{out}");
    assert!(out.contains("nothing committed"), "{out}");
    assert!(
        common::link_state(&p).await.is_none(),
        "a dry run wrote the link table"
    );
    ws.run_ok(&p);
    assert_eq!(common::keys_of_batch(&p, 1).await, common::set(&[1, 2, 3]));
    let o = dlink()
        .args(["run", "--dry-run"])
        .arg(ws.path())
        .output()
        .expect("dry run");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o).1);
}

/// A table path that came from a `${VAR:-default}` with VAR unset: the error says so.
#[tokio::test(flavor = "multi_thread")]
async fn an_error_names_the_defaults_that_paths_came_from() {
    let (ws, p) = sp_workspace().await;
    let catalog = ws.path().join("upstreams.toml");
    let file = std::fs::read_to_string(&catalog).unwrap();
    std::fs::write(
        &catalog,
        file.replace(
            "tables/spmaster",
            "${DLINK_TEST_ELSEWHERE:-elsewhere}/spmaster",
        ),
    )
    .unwrap();
    assert!(
        std::fs::read_to_string(&catalog)
            .unwrap()
            .contains("DLINK_TEST_ELSEWHERE"),
        "the catalog names its tables as tables/NAME"
    );
    let o = dlink()
        .arg("run")
        .arg(&p)
        .env_remove("DLINK_TEST_ELSEWHERE")
        .output()
        .expect("run");
    let (_, err) = text(&o);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("DLINK_TEST_ELSEWHERE is not set: `${DLINK_TEST_ELSEWHERE:-elsewhere}` took its default, elsewhere"),
        "{err}"
    );
}

/// `ack` of a consumer the pipeline file does not register says what that means (and
/// how to register it) rather than leaving `consumers` to say "no registered consumers"
/// without a word.
#[tokio::test(flavor = "multi_thread")]
async fn acking_an_unregistered_consumer_says_it_is_not_registered() {
    let (ws, p) = sp_workspace().await;
    ws.run_ok(&p);
    let o = dlink()
        .args(["ack", "--consumer", "billing", "--batch", "1"])
        .arg(&p)
        .output()
        .expect("ack");
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("batch 0 -> batch 1"), "{out}");
    assert!(
        err.contains("'billing' is not in [link] consumers") && err.contains("add it there"),
        "{err}"
    );
}

/// The progress display under a pseudo-terminal (`script`, as `docker -t` gives): each
/// batch line ends in its own newline with no bar drawn into it, and the first frame
/// is complete; through a pipe there is no display at all.
#[tokio::test(flavor = "multi_thread")]
async fn the_progress_display_under_a_pty_keeps_batch_lines_whole() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("SKIPPED: `script` (util-linux) is not installed; the pty test needs it");
        return;
    }
    let ws = Workspace::new();
    let (mut sp, _) = sp_tables(&ws, json!([[1, "a", "DE"]]), json!([[1, 10, 1]])).await;
    for i in 2..7 {
        sp.insert(json!([[i, "x", "FR"]])).await.unwrap();
    }
    let p = ws.sp_pipeline(1);
    let capture = ws.path().join("pty.txt");
    let exe = env!("CARGO_BIN_EXE_dlink-rt");
    let o = Command::new("script")
        .arg("-qfec")
        .arg(format!("{exe} run {}", p.display()))
        .arg(&capture)
        .env("DLINK_CACHE_DIR", common::cache_dir())
        .output()
        .expect("script");
    assert!(o.status.success(), "{}", text(&o).1);
    let raw = std::fs::read_to_string(&capture).expect("the capture");
    let lines: Vec<&str> = raw
        .match_indices("sp_affiliation batch ")
        .map(|(at, _)| {
            let rest = &raw[at..];
            &rest[..rest.find("\r\n").unwrap_or(rest.len())]
        })
        .collect();
    assert_eq!(lines.len(), 6, "{raw:?}");
    for l in &lines {
        assert!(
            !l.contains('\u{1b}') && !l.contains("versions,"),
            "a bar drawn into a batch line: {l:?}"
        );
    }
    assert!(raw.contains("versions, waiting"), "{raw:?}");
    assert!(
        !raw.contains("versions, , ETA"),
        "an empty first frame: {raw:?}"
    );
    // Through a pipe: the batch lines alone.
    sp.insert(json!([[9, "y", "IT"]])).await.unwrap();
    let out = ws.run_ok(&p);
    assert!(!out.contains('\u{1b}') && !out.contains("ETA"), "{out:?}");
}

/// With `--log-format json`, every line on stderr is JSON in every verb: a folder with
/// a broken file through validate, run, status and compact; keys' summary and ack's
/// note; an unknown --select.
#[tokio::test(flavor = "multi_thread")]
async fn json_logs_hold_in_every_verb() {
    let (ws, p) = sp_workspace().await;
    ws.run_ok(&p);
    std::fs::write(
        ws.path().join("broken.toml"),
        "name = \"broken\"\nbatchsize = 3\n",
    )
    .unwrap();
    let folder = ws.path().display().to_string();
    let file = p.display().to_string();
    let cases: Vec<Vec<&str>> = vec![
        vec!["validate", &folder],
        vec!["run", &folder],
        vec!["status", &folder],
        vec!["compact", &folder],
        vec!["keys", "--since-batch", "1", &file],
        vec!["ack", "--consumer", "x", "--batch", "1", &file],
        vec!["run", "--select", "nope", &folder],
    ];
    for args in cases {
        let o = dlink()
            .args(["--log-format", "json"])
            .args(&args)
            .output()
            .expect("dlink-rt");
        let (_, err) = text(&o);
        // (An INFO line, such as keys' summary, is below the default level.)
        for line in err.lines() {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {line}\n{err}"));
            assert!(v["level"].is_string(), "{args:?}: {line}");
        }
    }
}

/// `graph --status`: each pipeline coloured by its health and lag, its last batch and
/// lag in its label: amber before the first run, green after it, red when an upstream
/// cannot be read.
#[tokio::test(flavor = "multi_thread")]
async fn graph_status_colours_pipelines_by_health_and_lag() {
    let (ws, p) = sp_workspace().await;
    let folder = ws.path().display().to_string();
    let graph = |format: &'static str| {
        let o = dlink()
            .args(["graph", &folder, "--status", "--format", format])
            .output()
            .expect("graph");
        assert!(o.status.success(), "{}", text(&o).1);
        text(&o).0
    };
    let before = graph("dot");
    assert!(
        before.contains("batch 0, 2 versions to do") && before.contains("#fff3cd"),
        "{before}"
    );
    ws.run_ok(&p);
    let after = graph("dot");
    assert!(
        after.contains("batch 1, up to date") && after.contains("#d4edda"),
        "{after}"
    );
    let mermaid = graph("mermaid");
    assert!(mermaid.contains("class p_sp_affiliation_"), "{mermaid}");
    assert!(mermaid.contains(" uptodate"), "{mermaid}");
    std::fs::rename(ws.table("spmaster"), ws.path().join("moved-away")).unwrap();
    let failing = graph("dot");
    assert!(
        failing.contains("cannot be read") && failing.contains("#f8d7da"),
        "{failing}"
    );
    // Without --status: no colours.
    let o = dlink().args(["graph", &folder]).output().expect("graph");
    assert!(!text(&o).0.contains("#d4edda"));
}
