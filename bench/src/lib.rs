//! `dlink-bench`: the benchmarks of dlink-rt, in a crate of their own that uses only the
//! host's public API (`dlink_rt`). The default run: one full catch-up of many pipelines
//! over a generated workload ([`workload`]), timed by stage, with its peak memory, and
//! the references measured on the same data in the same run ([`reference`]): the raw
//! parquet read of the change rows, and the same derivation as Wasm, native Rust and
//! SQL. The other runs: `--follow` ([`latency`]), `--examples [--peer]` ([`compare`],
//! over the tables of [`examples`], against the Python peer of [`peer`]), `--commit`
//! and `--compact` ([`commit`]).

pub mod commit;
pub mod compare;
pub mod examples;
pub mod latency;
pub mod peer;
pub mod reference;
pub mod single;
mod table;
pub mod workload;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dlink_rt::config::{Catalog, Pipeline};
use dlink_rt::engine::{BatchReport, Stages};
use serde::{Deserialize, Serialize};

pub use table::{mib, table};
use workload::{Workload, WorkloadSpec};

/// How to run the benchmark.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub spec: WorkloadSpec,
    /// Where to write the workload (must be empty or absent); default a temp folder.
    pub dir: Option<PathBuf>,
    /// Keep the workload folder after the run.
    pub keep: bool,
    /// Pipelines run at once (and threads of the raw read).
    pub jobs: usize,
    /// How plugin hosts are built (compiled-component cache, profiler).
    pub host: dlink_rt::plugin::HostBuilder,
}

/// Stage times of the catch-up, summed over every batch of every pipeline.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StageSecs {
    /// Opening link tables, checkpoints and upstream tables at the start of each run.
    pub open_s: f64,
    pub plan_s: f64,
    pub read_s: f64,
    pub derive_s: f64,
    pub commit_s: f64,
}

impl From<&dlink_rt::engine::Stages> for StageSecs {
    fn from(s: &dlink_rt::engine::Stages) -> Self {
        StageSecs {
            open_s: secs(s.open),
            plan_s: secs(s.plan),
            read_s: secs(s.read),
            derive_s: secs(s.derive),
            commit_s: secs(s.commit),
        }
    }
}

/// The figures of one run (the `--json` object).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BenchResult {
    /// `debug` or `release`: the profile the binary was built with.
    pub profile: String,
    pub upstreams: usize,
    pub pipelines: usize,
    pub pipelines_plugin: usize,
    pub pipelines_sql: usize,
    pub rows: usize,
    /// Commits per table after version 0 (versions x scale).
    pub versions: usize,
    pub scale: usize,
    pub change_fraction: f64,
    pub seed: u64,
    pub batch_size: i64,
    pub jobs: usize,
    pub dir: String,
    /// Writing the workload (not part of `wall_s`).
    pub generation_s: f64,
    /// Change rows the generator wrote into the tables the pipelines read (its own count).
    pub generated_change_rows: u64,
    /// Compiling (or loading from the cache) the plugin before the catch-up.
    pub plugin_compile_s: f64,
    /// The catch-up of every pipeline (`run_many`).
    pub wall_s: f64,
    pub batches: usize,
    /// Distinct change rows the catch-up read (each upstream range once).
    pub change_rows: u64,
    /// Change rows handed to derivations (an upstream read by 3 pipelines counts 3 times).
    pub change_rows_per_pipeline: u64,
    pub keys: u64,
    pub reads_performed: u64,
    pub reads_requested: u64,
    /// Upstream table opens the pipelines asked for, and the ones that ran (shared).
    pub table_opens_performed: u64,
    pub table_opens_requested: u64,
    /// VmHWM of the catch-up (reset before it when the kernel allows).
    pub peak_rss_bytes: u64,
    /// Whether the peak was reset before the catch-up (else it includes generation).
    pub peak_rss_reset: bool,
    pub stages: StageSecs,
    /// Raw read: each upstream range of the catch-up once, its change files' `id` and
    /// `_change_type` columns with the parquet reader alone, on `jobs` threads.
    pub limit_read_s: f64,
    /// Finding those files in the commit JSON (not part of `limit_read_s`).
    pub limit_list_s: f64,
    pub limit_files: usize,
    pub limit_bytes: u64,
    pub limit_rows: u64,
    /// dlink-rt's change-feed reader over the same ranges, outside the catch-up.
    pub reference_cdf_read_s: f64,
    /// The derivation of every pipeline-batch as the Wasm plugin (IPC encoding, the
    /// call and the host's output checks included).
    pub derive_wasm_s: f64,
    /// Of `derive_wasm_s`: the host's IPC encoding of the change rows.
    pub derive_wasm_encode_s: f64,
    /// Of `derive_wasm_s`: the call (copies in and out, the guest's decode, derive and
    /// encode).
    pub derive_wasm_call_s: f64,
    /// Of `derive_wasm_s`: the host's decode, checks and deduplication of the output.
    pub derive_wasm_collect_s: f64,
    /// The same in Rust, compiled into the host.
    pub derive_native_s: f64,
    /// The same as the UNION ALL query with DataFusion.
    pub derive_sql_s: f64,
    /// Whether the three derivations and the catch-up found the same keys.
    pub keys_agree: bool,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The profile this binary was built with.
pub fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// The process's peak resident set (VmHWM), in bytes.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resets VmHWM to the current RSS (Linux: `5` to clear_refs), after giving the
/// memory freed so far back to the system (glibc keeps it otherwise, and the RSS the
/// peak starts from would be the workload writer's, not the runs').
fn reset_peak_rss() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap pages; no pointer is involved.
    unsafe {
        libc::malloc_trim(0);
    }
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Removes the workload folder on drop unless kept.
struct Cleanup {
    dir: PathBuf,
    keep: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn workload_dir(dir: Option<&Path>) -> Result<PathBuf, String> {
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            std::env::temp_dir().join(format!("dlink-bench-{}-{nanos}", std::process::id()))
        }
    };
    if dir.exists()
        && std::fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .next()
            .is_some()
    {
        return Err(format!(
            "{} is not empty; give --dir a new or empty folder",
            dir.display()
        ));
    }
    Ok(dir)
}

/// Generates the workload, runs the catch-up and the references; `progress` gets a
/// line per step.
pub async fn run(opts: &BenchOptions, progress: impl Fn(&str)) -> Result<BenchResult, String> {
    let spec = &opts.spec;
    let jobs = opts.jobs.max(1);
    let dir = workload_dir(opts.dir.as_deref())?;
    let _cleanup = Cleanup {
        dir: dir.clone(),
        keep: opts.keep,
    };
    progress(&format!(
        "generating {} tables x {} rows, {} commits each, {} pipelines in {}",
        spec.upstreams,
        spec.rows,
        spec.commits(),
        spec.pipelines,
        dir.display()
    ));
    let w = workload::generate(spec, &dir, 2 * jobs.max(2)).await?;
    progress(&format!("generated in {:.1} s", secs(w.generation)));

    let pipelines = load_pipelines(&w)?;
    let host = opts.host.build().map_err(|e| format!("{e:#}"))?;
    let t = Instant::now();
    let compiled = host
        .compile(&spec.plugin)
        .map_err(|e| format!("plugin {}: {e}", spec.plugin.display()))?;
    let plugin_compile = t.elapsed();

    progress("catching up");
    let peak_rss_reset = reset_peak_rss();
    let (reports, outcome, wall) = run_all(&pipelines, &host, jobs).await?;
    let peak = peak_rss().unwrap_or(0);

    progress(&format!(
        "caught up in {:.1} s ({} batches); measuring the references",
        secs(wall),
        reports.len()
    ));

    let mut r = BenchResult {
        profile: profile().into(),
        upstreams: spec.upstreams,
        pipelines: spec.pipelines,
        pipelines_plugin: w.pipelines.iter().filter(|p| !p.sql).count(),
        pipelines_sql: w.pipelines.iter().filter(|p| p.sql).count(),
        rows: spec.rows,
        versions: spec.commits(),
        scale: spec.scale,
        change_fraction: spec.change_fraction,
        seed: spec.seed,
        batch_size: spec.batch_size,
        jobs,
        dir: dir.display().to_string(),
        generation_s: secs(w.generation),
        generated_change_rows: w.change_rows_read(),
        plugin_compile_s: secs(plugin_compile),
        wall_s: secs(wall),
        batches: reports.len(),
        peak_rss_bytes: peak,
        peak_rss_reset,
        reads_performed: outcome.reads.performed,
        reads_requested: outcome.reads.requested,
        table_opens_performed: outcome.reads.opens_performed,
        table_opens_requested: outcome.reads.opens_requested,
        ..Default::default()
    };
    let totals = Totals::of(&reports);
    r.keys = totals.keys;
    r.change_rows = totals.change_rows;
    r.change_rows_per_pipeline = totals.change_rows_per_pipeline;
    r.stages = StageSecs::from(&totals.stages);
    let ranges = totals.ranges;

    // (a) The raw-read limit.
    raw_read_limit(&dir, &ranges, jobs, &mut r)?;

    // (b), (c) The derivations on the same change rows, batch by batch.
    reference::derivations(&pipelines, &host, &compiled, &reports, &mut r).await?;
    Ok(r)
}

/// Runs every pipeline until caught up (`run_many`, `jobs` at a time): the batch
/// reports, what `run_many` says and the wall time; the first pipeline that failed is
/// an error.
pub(crate) async fn run_all(
    pipelines: &[Pipeline],
    host: &dlink_rt::plugin::PluginHost,
    jobs: usize,
) -> Result<(Vec<BatchReport>, dlink_rt::engine::ManyOutcome, Duration), String> {
    let reports: Mutex<Vec<BatchReport>> = Mutex::default();
    let t = Instant::now();
    let outcome = dlink_rt::engine::run_many(pipelines, host, jobs, |b| {
        reports
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(b.clone());
    })
    .await;
    let wall = t.elapsed();
    for (name, r) in &outcome.results {
        if let Err(e) = r {
            return Err(format!("pipeline '{name}' failed: {e}"));
        }
    }
    let reports = reports.into_inner().unwrap_or_else(|p| p.into_inner());
    Ok((reports, outcome, wall))
}

/// Reads the change files of the catch-up's ranges with the parquet reader alone.
fn raw_read_limit(
    dir: &Path,
    ranges: &BTreeSet<(String, i64, i64)>,
    jobs: usize,
    r: &mut BenchResult,
) -> Result<(), String> {
    let t = Instant::now();
    let mut files = Vec::new();
    for (name, s, e) in ranges {
        files.extend(reference::change_files(
            &dir.join("tables").join(name),
            *s,
            *e,
        )?);
    }
    r.limit_list_s = secs(t.elapsed());
    let limit = reference::read_files(&files, &["id", dlink_rt::cdf::CHANGE_TYPE], jobs)?;
    r.limit_read_s = secs(limit.time);
    r.limit_files = limit.files;
    r.limit_bytes = limit.bytes;
    r.limit_rows = limit.rows;
    Ok(())
}

fn load_pipelines(w: &Workload) -> Result<Vec<Pipeline>, String> {
    let catalog =
        Catalog::load(&w.dir.join(dlink_rt::config::DEFAULT_CATALOG)).map_err(|e| e.to_string())?;
    w.pipelines
        .iter()
        .map(|p| {
            Pipeline::load_with_catalog(&w.dir.join(format!("{}.toml", p.name)), &catalog)
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// What a run's batch reports add up to.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    pub stages: Stages,
    pub keys: u64,
    /// Change rows of each distinct (upstream, version range) read: a range shared by
    /// several pipelines is read once and counted once.
    pub change_rows: u64,
    /// Change rows as each pipeline saw them (shared ranges counted per pipeline).
    pub change_rows_per_pipeline: u64,
    /// The distinct (upstream, first version, last version) ranges read.
    pub ranges: BTreeSet<(String, i64, i64)>,
}

impl Totals {
    pub(crate) fn of(reports: &[BatchReport]) -> Totals {
        let mut t = Totals::default();
        for b in reports {
            t.stages.open += b.stages.open;
            t.stages.plan += b.stages.plan;
            t.stages.read += b.stages.read;
            t.stages.derive += b.stages.derive;
            t.stages.commit += b.stages.commit;
            t.keys += b.keys as u64;
            t.change_rows_per_pipeline += b.change_rows as u64;
            for u in &b.upstreams {
                if let Some((s, e)) = u.range {
                    if t.ranges.insert((u.name.clone(), s, e)) {
                        t.change_rows += u.change_rows as u64;
                    }
                }
            }
        }
        t
    }
}
