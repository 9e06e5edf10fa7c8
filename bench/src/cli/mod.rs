//! The options of `dlink-bench` (those `dlink-rt bench` took) and the run each selects:
//! by default one catch-up over a generated workload, with the references.

use std::path::PathBuf;

use dlink_rt::plugin::HostBuilder;
use std::process::ExitCode;

use dlink_bench::{
    self as bench, compare::ExamplesOptions, latency::LatencyOptions, workload::WorkloadSpec,
    BenchOptions, BenchResult,
};

use dlink_rt::config::LinkMode;

use super::{EXIT_CONFIG, EXIT_FAILED};
use scaling::scaling;

mod scaling;

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Upstream tables [default: 100; 8 with --follow].
    #[arg(long)]
    pub upstreams: Option<usize>,
    /// Pipelines (2-8 upstreams each; plugin and SQL alternating) [default: 20; 2 with
    /// --follow].
    #[arg(long)]
    pub pipelines: Option<usize>,
    /// Rows of each table at version 0 [default: 1000; 100000 with --examples].
    #[arg(long)]
    pub rows: Option<usize>,
    /// Commits per table after version 0 (append, update, delete or merge), before --scale.
    #[arg(long, default_value_t = 4)]
    pub versions: usize,
    /// Fraction of --rows one commit touches.
    #[arg(long, default_value_t = 0.02)]
    pub change_fraction: f64,
    /// Seed of the workload (same seed, same workload).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Versions per upstream per batch.
    #[arg(long, default_value_t = 5)]
    pub batch_size: i64,
    /// Multiplies the backlog (--versions).
    #[arg(long, default_value_t = 1)]
    pub scale: usize,
    /// Pipelines run at once (and threads of the raw read).
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Where to write the workload (new or empty folder; default a temp folder).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Keep the workload folder after the run.
    #[arg(long)]
    pub keep: bool,
    /// With --examples or --single: the pipelines' `chunk_rows` (change rows per plugin
    /// call) [default: the pipeline file's default, 65536].
    #[arg(long)]
    pub chunk_rows: Option<u64>,
    /// The every_upstream_key plugin (default plugins/dist/every_upstream_key.wasm).
    #[arg(long, value_name = "FILE")]
    pub plugin: Option<PathBuf>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Run the catch-up at 1x, 3x and 10x the backlog (each in its own process) and
    /// print time and peak memory of each.
    #[arg(long, conflicts_with = "follow")]
    pub scaling: bool,
    /// Measure latency instead: follow the first plugin pipeline (`run --follow`) and
    /// time --samples small upstream commits from landing to the link table.
    #[arg(long)]
    pub follow: bool,
    /// Poll interval of the follow loop with --follow (e.g. 100ms, 1s).
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub interval: std::time::Duration,
    /// Commits measured with --follow.
    #[arg(long, default_value_t = 20)]
    pub samples: usize,
    /// With --follow: follow every pipeline of the workload as `run FOLDER --follow`
    /// does (the service), not only the measured one, and measure the process's idle
    /// CPU between commits [default workload: 100 upstreams, 20 pipelines].
    #[arg(long, requires = "follow")]
    pub service: bool,
    /// The four example pipelines (with their lookups) in one process over the example
    /// tables at --rows rows: a catch-up, then an increment of --commits commits per
    /// table, each against its limit; then a lookup of 100k keys through the index.
    #[arg(long, conflicts_with_all = ["follow", "scaling"])]
    pub examples: bool,
    /// With --examples: commits per table of the increment.
    #[arg(long, default_value_t = 20, requires = "examples")]
    pub commits: usize,
    /// With --examples: run the Python peer (bench/peer/peer.py, delta-rs + polars) on
    /// the same data in the same run and print the ratios. Skipped, saying so, when its
    /// venv is missing (`make peer-venv`).
    #[arg(long, requires = "examples")]
    pub peer: bool,
    /// A first run over ONE upstream of --rows rows (every_upstream_key keyed by `id`:
    /// as many keys as rows), written in appends of 1M rows: time, change rows per
    /// second and peak RSS [e.g. --rows 100000000].
    #[arg(long, conflicts_with_all = ["follow", "scaling", "examples"])]
    pub single: bool,
    /// With --single: the catalog's `[engine] memory_mb` [default: the runtime's].
    #[arg(long, requires = "single")]
    pub memory_mb: Option<u64>,
    /// With --single: derive with a SQL query (`SELECT id FROM events_changes`) instead
    /// of the plugin.
    #[arg(long, requires = "single")]
    pub sql: bool,
    /// The link-table commit of a 2,000-key batch as the link table grows: the change
    /// log from 100k rows to --rows rows [default 10M], the one-row-per-key MERGE
    /// (`mode = "latest"`) at 100k and 1M.
    #[arg(long, conflicts_with_all = ["follow", "scaling", "examples"])]
    pub commit: bool,
    /// `dlink-rt compact` of a change log of --batches single-batch files (1,000 keys
    /// each): files before and after, time, and a read of the newest batch after it.
    #[arg(long, conflicts_with_all = ["follow", "scaling", "examples", "commit"])]
    pub compact: bool,
    /// With --compact: batches (files) of the change log.
    #[arg(long, default_value_t = 1000, requires = "compact")]
    pub batches: i64,
    /// The peer's Python [default: ~/.cache/dlink-rt/peer-venv/bin/python].
    #[arg(long, value_name = "FILE", env = "DLINK_PEER_PYTHON")]
    pub python: Option<PathBuf>,
}

impl BenchArgs {
    fn upstreams(&self) -> usize {
        self.upstreams
            .unwrap_or(if self.follow && !self.service { 8 } else { 100 })
    }

    fn pipelines(&self) -> usize {
        self.pipelines
            .unwrap_or(if self.follow && !self.service { 2 } else { 20 })
    }

    fn rows(&self) -> usize {
        self.rows
            .unwrap_or(if self.examples { 100_000 } else { 1000 })
    }
}

fn plugins_dir() -> PathBuf {
    let rel = PathBuf::from("plugins/dist");
    if rel.is_dir() {
        return std::fs::canonicalize(&rel).unwrap_or(rel);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

/// `bench --commit`.
async fn commit(args: &BenchArgs) -> ExitCode {
    let top = args.rows.unwrap_or(10_000_000).max(100_000) as u64;
    let mut sizes: Vec<u64> = [100_000, 1_000_000, top]
        .into_iter()
        .filter(|s| *s <= top)
        .collect();
    sizes.dedup();
    let dir = match tempfile_dir(args.dir.as_deref()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let progress = |m: &str| eprintln!("bench: {m}");
    let mut points = Vec::new();
    for (mode, sizes) in [
        (LinkMode::Log, sizes.clone()),
        (
            LinkMode::Latest,
            sizes.iter().copied().filter(|s| *s <= 1_000_000).collect(),
        ),
    ] {
        match bench::commit::run(&dir, mode, &sizes, progress).await {
            Ok(p) => points.extend(p),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_FAILED);
            }
        }
    }
    if !args.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if args.json {
        return print_json(&serde_json::json!({ "profile": bench::profile(), "commits": points }));
    }
    print_header("--commit");
    println!(
        "  {:<7} {:>12} {:>7} {:>8} {:>14} {:>22}",
        "mode", "table rows", "files", "version", "2k-key commit", "1k-key window (files)"
    );
    for p in &points {
        let window = match (p.window_s, p.window_files) {
            (Some(s), Some(f)) => format!("{:.1} ms ({f})", s * 1e3),
            _ => "-".to_string(),
        };
        println!(
            "  {:<7} {:>12} {:>7} {:>8} {:>11.1} ms {:>22}",
            p.mode,
            p.table_rows,
            p.files,
            p.version,
            p.commit_s * 1e3,
            window
        );
    }
    let log: Vec<&bench::commit::CommitPoint> = points.iter().filter(|p| p.mode == "log").collect();
    if let (Some(a), Some(b)) = (log.first(), log.last()) {
        println!(
            "  change log: {} -> {} rows: commit x{:.2}",
            a.table_rows,
            b.table_rows,
            b.commit_s / a.commit_s.max(1e-9)
        );
    }
    ExitCode::SUCCESS
}

/// `bench --compact`.
async fn compact(args: &BenchArgs) -> ExitCode {
    let dir = match tempfile_dir(args.dir.as_deref()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let progress = |m: &str| eprintln!("bench: {m}");
    let point = bench::commit::compaction(&dir, args.batches.max(2), progress).await;
    if !args.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let p = match point {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    if args.json {
        return print_json(&serde_json::json!({ "profile": bench::profile(), "compact": p }));
    }
    print_header("--compact");
    println!(
        "  {} batches ({} rows) written in {:.2} s; compact: {} -> {} files in {:.2} s; newest batch read after it: {:.1} ms ({} files)",
        p.batches, p.rows, p.write_s, p.files_before, p.files_after, p.compact_s, p.window_s * 1e3, p.window_files
    );
    println!(
        "  one 1,000-key commit: {:.1} ms at the first batches, {:.1} ms at {} files, {:.1} ms after compaction",
        p.commit_first_s * 1e3,
        p.commit_last_s * 1e3,
        p.files_before,
        p.commit_after_s * 1e3
    );
    println!(
        "  with merge_small_files (default): {:.1} ms at the last batches, all {} written in {:.2} s, {} files",
        p.merged_commit_last_s * 1e3,
        p.batches,
        p.merged_write_s,
        p.merged_files
    );
    ExitCode::SUCCESS
}

/// The first line of a bench's report: what ran and the build profile.
fn print_header(what: &str) {
    println!(
        "dlink-rt bench {what} (profile: {}){}",
        bench::profile(),
        debug_notice(bench::profile())
    );
}

/// `dir` if given (created), else a new folder under the system's temp folder.
fn tempfile_dir(dir: Option<&std::path::Path>) -> Result<PathBuf, String> {
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => std::env::temp_dir().join(format!("dlink-bench-commit-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

/// `bench --examples [--peer]`.
async fn examples(args: &BenchArgs, host: HostBuilder) -> ExitCode {
    let plugins = plugins_dir();
    if !plugins.join("emp_dept.wasm").is_file() {
        eprintln!(
            "error: the example plugins are not in {}; build them (`make build`)",
            plugins.display()
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    let (peer, skipped) = match (args.peer, bench::peer::python(args.python.as_deref())) {
        (false, _) => (None, None),
        (true, Ok(p)) => (Some(p), None),
        (true, Err(why)) => {
            eprintln!("bench: the peer is skipped: {why}");
            (None, Some(why))
        }
    };
    let opts = ExamplesOptions {
        rows: args.rows(),
        history: 4,
        commits: args.commits.max(1),
        dir: args.dir.clone(),
        keep: args.keep,
        host: host.clone(),
        plugins,
        peer,
        chunk_rows: args.chunk_rows,
    };
    let outcome = bench::compare::run(&opts, |m| eprintln!("bench: {m}"))
        .await
        .map(|mut r| {
            r.peer_skipped = skipped;
            r
        });
    finish(outcome, args.json, |r| {
        format!("{}{}\n", bench::compare::table(r), debug_notice(&r.profile))
    })
}

fn default_plugin() -> PathBuf {
    let rel = PathBuf::from("plugins/dist/every_upstream_key.wasm");
    if rel.is_file() {
        return rel;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

/// The every_upstream_key plugin (--plugin, else the built one), as an absolute path;
/// a missing file is a configuration error, said.
fn bench_plugin(args: &BenchArgs) -> Result<PathBuf, ExitCode> {
    let plugin = args.plugin.clone().unwrap_or_else(default_plugin);
    if !plugin.is_file() {
        eprintln!(
            "error: plugin {} not found; build the plugins (`make build`) or give --plugin",
            plugin.display()
        );
        return Err(ExitCode::from(EXIT_CONFIG));
    }
    Ok(std::fs::canonicalize(&plugin).unwrap_or(plugin))
}

pub async fn bench(args: BenchArgs, host: HostBuilder) -> ExitCode {
    if args.examples {
        return examples(&args, host).await;
    }
    if args.single {
        return single(&args, host).await;
    }
    if args.commit {
        return commit(&args).await;
    }
    if args.compact {
        return compact(&args).await;
    }
    if args.scaling {
        return scaling(&args, host.cache_dir_path());
    }
    let plugin = match bench_plugin(&args) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let spec = WorkloadSpec {
        upstreams: args.upstreams(),
        pipelines: args.pipelines(),
        rows: args.rows(),
        versions: args.versions,
        change_fraction: args.change_fraction,
        seed: args.seed,
        scale: args.scale.max(1),
        batch_size: args.batch_size.max(1),
        plugin,
    };
    if args.follow {
        return latency(&args, spec, host).await;
    }
    let opts = BenchOptions {
        spec,
        dir: args.dir.clone(),
        keep: args.keep,
        jobs: args.jobs.max(1),
        host: host.clone(),
    };
    let outcome = bench::run(&opts, |m| eprintln!("bench: {m}")).await;
    finish(outcome, args.json, |r| {
        format!("{}\n{}", header(r), bench::table(r))
    })
}

/// `bench --single`: a first run over one upstream of --rows rows.
async fn single(args: &BenchArgs, host: HostBuilder) -> ExitCode {
    let plugin = match bench_plugin(args) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let opts = bench::single::SingleOptions {
        rows: args.rows.unwrap_or(1_000_000),
        dir: args.dir.clone(),
        keep: args.keep,
        host,
        plugin,
        chunk_rows: args.chunk_rows,
        memory_mb: args.memory_mb,
        sql: args.sql,
    };
    let outcome = bench::single::run(&opts, |m| eprintln!("bench: {m}")).await;
    finish(outcome, args.json, |r| {
        format!("{}{}\n", bench::single::table(r), debug_notice(&r.profile))
    })
}

/// `bench --follow`: the latency of one small commit in `--follow` mode.
async fn latency(args: &BenchArgs, spec: WorkloadSpec, host: HostBuilder) -> ExitCode {
    if args.samples == 0 {
        eprintln!("error: --samples must be 1 or more");
        return ExitCode::from(EXIT_CONFIG);
    }
    let opts = LatencyOptions {
        spec,
        dir: args.dir.clone(),
        keep: args.keep,
        host: host.clone(),
        interval: args.interval,
        samples: args.samples,
        rows_per_commit: 10,
        service: args.service,
    };
    let outcome = bench::latency::run(&opts, |m| eprintln!("bench: {m}")).await;
    finish(outcome, args.json, |r| {
        format!(
            "dlink-rt bench --follow (profile: {}){}\n{}",
            r.profile,
            debug_notice(&r.profile),
            bench::latency::table(r)
        )
    })
}

/// Prints a run's outcome: its error, or its JSON (one line), or its text.
fn finish<T: serde::Serialize>(
    outcome: Result<T, String>,
    json: bool,
    text: impl FnOnce(&T) -> String,
) -> ExitCode {
    match outcome {
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_FAILED)
        }
        Ok(r) if json => print_json(&r),
        Ok(r) => {
            print!("{}", text(&r));
            ExitCode::SUCCESS
        }
    }
}

fn print_json(value: &impl serde::Serialize) -> ExitCode {
    match serde_json::to_string(value) {
        Ok(s) => {
            println!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// The header's warning for figures of an unoptimized build.
fn debug_notice(profile: &str) -> &'static str {
    if profile == "debug" {
        "\n  a debug build: figures are for comparison within this run, not absolute speed"
    } else {
        ""
    }
}

fn header(r: &BenchResult) -> String {
    format!(
        "dlink-rt bench (profile: {}; {} upstreams, {} pipelines ({} plugin, {} SQL), {} rows, {} commits per table, change fraction {}, seed {}, batch_size {}){}",
        r.profile,
        r.upstreams,
        r.pipelines,
        r.pipelines_plugin,
        r.pipelines_sql,
        r.rows,
        r.versions,
        r.change_fraction,
        r.seed,
        r.batch_size,
        debug_notice(&r.profile)
    )
}
