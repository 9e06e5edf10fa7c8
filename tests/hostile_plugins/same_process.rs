//! One process, several pipelines: a hostile plugin fails its pipeline while the others
//! go on, in one host, in a folder run, and without waiting for a spinning plugin.

use super::*;

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
