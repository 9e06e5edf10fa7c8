//! `dlink-rt run <pipeline.toml>`

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use dlink_rt::config::Pipeline;
use dlink_rt::engine::run_pipeline;
use dlink_rt::plugin::{HostBuilder, PluginHost};
use dlink_rt::service::{Monitor, ServiceOptions};
use dlink_rt::Error;
use tokio_util::sync::CancellationToken;

use super::progress::Progress;
use super::{EXIT_CONFIG, EXIT_FAILED};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// A pipeline file (its catalog is `upstreams.toml` beside it unless it names one),
    /// or a folder: every enabled pipeline file in it, with its `upstreams.toml`.
    pub pipeline: PathBuf,
    /// Pipelines run at once when given a folder (default: the number of CPUs).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Stop after this many batches per run (overrides the file's `max_batches`).
    #[arg(long)]
    pub max_batches: Option<u64>,
    /// Keep running: poll the upstreams every --interval, run batches as commits
    /// arrive, and hot-swap each plugin when its file changes; with a folder, also
    /// start, stop and reload pipelines as their files come, go and change. Stops on
    /// Ctrl-C/SIGTERM after each pipeline's current batch.
    #[arg(long)]
    pub follow: bool,
    /// Derive the pending batches of one pipeline file and print what each would
    /// commit (ranges, change rows, key count, its first keys); commit nothing.
    #[arg(long, conflicts_with_all = ["follow", "listen", "shard"])]
    pub dry_run: bool,
    /// Pause between polls with --follow (e.g. 500ms, 2s, 1m).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: std::time::Duration,
    /// With --follow: serve /metrics (Prometheus), /healthz and /status over HTTP on
    /// this address (e.g. 127.0.0.1:9464; port 0 picks one, printed on stdout).
    #[arg(long, requires = "follow")]
    pub listen: Option<std::net::SocketAddr>,
    /// With a folder: run only the pipelines of shard I of N (0-based), those whose
    /// name's FNV-1a hash modulo N is I, so N processes split a folder without
    /// coordination (see docs/deploy.md).
    #[arg(long, value_name = "I/N")]
    pub shard: Option<dlink_rt::shard::Shard>,
    #[command(flatten)]
    pub select: super::Select,
    /// A pipeline that makes no progress (no step of a batch, no poll) for this long
    /// ends the process with exit 1, naming the pipeline, batch and stage, instead of
    /// hanging (a supervisor then restarts it). `0s` turns the watchdog off. Each
    /// plugin call is bounded by its own `timeout_ms` well before this.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration, env = "DLINK_STALL_TIMEOUT")]
    pub stall_timeout: std::time::Duration,
}

/// Starts the watchdog of `--stall-timeout` (none at 0): a stall is an ERROR event
/// and a line on stderr, then exit 1.
fn start_watchdog(limit: std::time::Duration) {
    if limit.is_zero() {
        return;
    }
    let started = dlink_rt::engine::watchdog::start(limit, |text| {
        tracing::error!(kind = "stall", "{text}");
        say!("error: {text}");
        std::process::exit(i32::from(EXIT_FAILED));
    });
    if let Err(e) = started {
        tracing::warn!("cannot start the stall watchdog: {e}");
    }
}

pub async fn run(args: RunArgs, host: HostBuilder) -> ExitCode {
    start_watchdog(args.stall_timeout);
    if args.pipeline.is_dir() {
        return run_folder(args, host).await;
    }
    if let Some(shard) = args.shard {
        say!(
            "error: --shard {shard} splits the pipelines of a folder; {} is one pipeline file (run its folder, or drop --shard)",
            args.pipeline.display()
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    if !args.select.select.is_empty() {
        say!(
            "error: --select picks pipelines of a folder; {} is one pipeline file (run its folder, or drop --select)",
            args.pipeline.display()
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    let mut pipeline = match Pipeline::load(&args.pipeline) {
        Ok(p) => p,
        Err(e) => {
            super::say_error_text("config", &e);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if args.max_batches.is_some() {
        pipeline.max_batches = args.max_batches;
    }
    if !pipeline.enabled {
        outln!(
            "{}: disabled (enabled = false in {}); nothing to do",
            pipeline.name,
            pipeline.file.display()
        );
        return ExitCode::SUCCESS;
    }
    let host = match host.build() {
        Ok(h) => h,
        Err(e) => {
            say!("error: cannot start the plugin host: {e:#}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    if args.follow {
        outln!(
            "{}: following (polling every {}, watching {}); Ctrl-C to stop",
            pipeline.name,
            humantime::format_duration(args.interval),
            pipeline.deriver()
        );
        let monitor = Arc::new(Monitor::new());
        monitor.set_pipelines(vec![pipeline.clone()]);
        monitor.set_running(&pipeline.name, true);
        let Some(stop) = listen(&args, &monitor).await else {
            return ExitCode::from(EXIT_FAILED);
        };
        let follow = dlink_rt::service::follow_until(
            &pipeline,
            Arc::new(host),
            follow_options(&args),
            monitor,
            |b| outln!("{b}"),
            stop.clone(),
            None,
        );
        return match within_grace(&stop, follow).await {
            None => abandoned(),
            Some(Ok(())) => ExitCode::SUCCESS,
            Some(Err(e)) => {
                super::say_error(Some(&pipeline.name), &e);
                ExitCode::from(EXIT_FAILED)
            }
        };
    }
    if args.dry_run {
        return super::exit_code(dry_run(&pipeline, &host).await);
    }
    super::exit_code(run_to_end(&pipeline, &host).await)
}

fn follow_options(args: &RunArgs) -> dlink_rt::service::FollowOptions {
    dlink_rt::service::FollowOptions {
        interval: args.interval,
        ..Default::default()
    }
}

/// The token cancelled on Ctrl-C or SIGTERM; with --listen, the HTTP endpoints are
/// up (their address printed) before it is returned. `None` (after saying why) when
/// the address cannot be bound.
async fn listen(args: &RunArgs, monitor: &Arc<Monitor>) -> Option<CancellationToken> {
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        shutdown().await;
        on_signal.cancel();
    });
    if let Some(addr) = args.listen {
        match dlink_rt::service::http::serve(addr, monitor.clone(), stop.clone()).await {
            Ok((bound, _task)) => {
                outln!("listening on http://{bound} (/metrics, /healthz, /status)")
            }
            Err(e) => {
                say!("error: cannot listen on {addr}: {e}");
                return None;
            }
        }
    }
    Some(stop)
}

/// `run FOLDER --follow`: the service (see `dlink_rt::service`).
async fn follow_folder(args: RunArgs, host: HostBuilder) -> ExitCode {
    // The folder must load once at the start; later problems are logged and the
    // running pipelines keep going.
    match load_folder(&args.pipeline) {
        Err(e) => {
            say!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
        Ok((mut pipelines, _)) => {
            if let Err(e) = args.select.apply(&mut pipelines) {
                super::say_error_text("config", &e);
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    }
    let host = match host.build() {
        Ok(h) => Arc::new(h),
        Err(e) => {
            say!("error: cannot start the plugin host: {e:#}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let monitor = Arc::new(Monitor::new());
    let Some(stop) = listen(&args, &monitor).await else {
        return ExitCode::from(EXIT_FAILED);
    };
    outln!(
        "following the pipelines of {} (polling every {}, rescanning the folder every {}); Ctrl-C to stop",
        args.pipeline.display(),
        humantime::format_duration(args.interval),
        humantime::format_duration(ServiceOptions::default().rescan),
    );
    let opts = ServiceOptions {
        follow: follow_options(&args),
        shard: args.shard,
        select: args.select.select.clone(),
        ..Default::default()
    };
    let service = dlink_rt::service::follow_folder(
        &args.pipeline,
        host,
        opts,
        monitor,
        Arc::new(|b| outln!("{b}")),
        stop.clone(),
    );
    if within_grace(&stop, service).await.is_none() {
        return abandoned();
    }
    outln!("stopped: every pipeline finished its current batch");
    ExitCode::SUCCESS
}

/// How long a stop (Ctrl-C, SIGTERM) waits for the pipelines' current batches before
/// abandoning them: well inside the usual 10 s between SIGTERM and SIGKILL
/// (Kubernetes gives 30 s, systemd 90 s, `docker stop` 10 s).
pub const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Runs `work` to its end, or, once `stop` is cancelled, for at most [`STOP_GRACE`]
/// more: `None` when it was abandoned then (dropped: a batch that had not committed
/// commits nothing, and the next run does it again).
async fn within_grace<T>(
    stop: &CancellationToken,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        r = work => Some(r),
        _ = async {
            stop.cancelled().await;
            tokio::time::sleep(STOP_GRACE).await;
        } => None,
    }
}

/// Says that a stop abandoned running batches; exit code 1.
fn abandoned() -> ExitCode {
    super::say_error_text(
        "stop",
        &format!(
            "stopped after waiting {} for the current batches to finish: they were abandoned \
             without committing (the next run does them again)",
            humantime::format_duration(STOP_GRACE)
        ),
    );
    ExitCode::from(EXIT_FAILED)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

/// Runs one pipeline to the end, printing a line per batch (and on a terminal, its
/// progress bar).
pub async fn run_to_end(pipeline: &Pipeline, host: &PluginHost) -> Result<(), Error> {
    let mut progress = Progress::new(std::slice::from_ref(pipeline)).await;
    let summary = run_pipeline(pipeline, host, |b| progress.batch(b)).await;
    progress.finish();
    let summary = summary?;
    if let Some(why) = &summary.yielded {
        outln!("{}: {why}", pipeline.name);
    } else if summary.batches.is_empty() {
        outln!("{}: up to date, nothing committed", pipeline.name);
    }
    Ok(())
}

/// `run FILE --dry-run`: the pending batches derived and shown, nothing committed.
async fn dry_run(pipeline: &Pipeline, host: &PluginHost) -> Result<(), Error> {
    let summary = dlink_rt::engine::dry_run(pipeline, host, |b| {
        outln!("{b}  (dry run: not committed)");
        if let Some(keys) = &b.dry_run_keys {
            if !keys.is_empty() {
                let more = if b.keys > keys.len() { ", ..." } else { "" };
                outln!("  first keys: {}{more}", keys.join(", "));
            }
        }
    })
    .await?;
    let keys: usize = summary.batches.iter().map(|b| b.keys).sum();
    outln!(
        "{}: dry run: {} derived ({} keys in all); nothing committed",
        pipeline.name,
        super::plural(summary.batches.len(), "batch", "batches"),
        keys
    );
    Ok(())
}

/// `run <folder>`: every enabled pipeline of the folder in one process.
async fn run_folder(args: RunArgs, host: HostBuilder) -> ExitCode {
    if args.dry_run {
        say!(
            "error: --dry-run takes one pipeline file; {} is a folder (give one of its files)",
            args.pipeline.display()
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    if args.follow {
        return follow_folder(args, host).await;
    }
    let (mut pipelines, problems) = match load_folder(&args.pipeline) {
        Ok(loaded) => loaded,
        Err(e) => {
            say!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for p in &problems {
        super::say_error_text("config", p);
    }
    if let Err(e) = args.select.apply(&mut pipelines) {
        super::say_error_text("config", &e);
        return ExitCode::from(EXIT_CONFIG);
    }
    if let Some(shard) = args.shard {
        let all = pipelines.len();
        pipelines.retain(|p| shard.has(&p.name));
        outln!(
            "shard {shard}: {} of the folder's {all} enabled pipelines",
            pipelines.len()
        );
    }
    if let Some(m) = args.max_batches {
        for p in &mut pipelines {
            p.max_batches = Some(m);
        }
    }
    let host = match host.build() {
        Ok(h) => h,
        Err(e) => {
            say!("error: cannot start the plugin host: {e:#}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let jobs = args.jobs.unwrap_or_else(dlink_rt::engine::default_jobs);
    let started = std::time::Instant::now();
    let progress = std::sync::Mutex::new(Progress::new(&pipelines).await);
    let outcome = dlink_rt::engine::run_many(&pipelines, &host, jobs, |b| {
        progress.lock().unwrap_or_else(|p| p.into_inner()).batch(b)
    })
    .await;
    progress.lock().unwrap_or_else(|p| p.into_inner()).finish();
    let (mut failed, mut batches) = (0, 0);
    for (name, r) in &outcome.results {
        match r {
            Ok(s) => batches += s.batches.len(),
            Err(e) => {
                failed += 1;
                super::say_error(Some(name), e);
            }
        }
    }
    let reads = outcome.reads;
    outln!(
        "{}: {} committed, {failed} failed, {} not loaded; change-feed reads: {} for {} requested ({} shared); table opens: {} for {} in {} ms",
        super::plural(pipelines.len(), "pipeline", "pipelines"),
        super::plural(batches, "batch", "batches"),
        problems.len(),
        reads.performed,
        reads.requested,
        reads.requested - reads.performed,
        reads.opens_performed,
        reads.opens_requested,
        started.elapsed().as_millis()
    );
    super::outcome_code(&problems, failed)
}

/// A pipeline file or a folder of them: the enabled pipelines and the problems of the
/// files that did not load (a file's configuration problems are its problems; a
/// folder whose catalog does not load is the error).
pub fn load_path(path: &std::path::Path) -> Result<(Vec<Pipeline>, Vec<String>), Error> {
    if path.is_dir() {
        return load_folder(path);
    }
    Ok(match Pipeline::load(path) {
        Ok(p) => (vec![p], Vec::new()),
        Err(e) => (Vec::new(), e.problems),
    })
}

/// The pipeline files of a folder (every `.toml` but the catalog), sorted, and its
/// catalog.
pub fn folder_files(
    dir: &std::path::Path,
) -> Result<(dlink_rt::config::Catalog, Vec<PathBuf>), dlink_rt::ConfigError> {
    dlink_rt::config::folder_files(dir)
}

/// The enabled pipelines of a folder and the problems of the files that did not load.
pub fn load_folder(dir: &std::path::Path) -> Result<(Vec<Pipeline>, Vec<String>), Error> {
    let (catalog, files) = folder_files(dir)?;
    let mut pipelines: Vec<Pipeline> = Vec::new();
    let mut problems = Vec::new();
    for f in files {
        match Pipeline::load_with_catalog(&f, &catalog) {
            Ok(p) if !p.enabled => outln!("{}: disabled ({})", p.name, f.display()),
            Ok(p) => {
                if let Some(other) = pipelines
                    .iter()
                    .find(|o| o.name == p.name || o.link_uri == p.link_uri)
                {
                    problems.push(format!(
                        "{}: pipeline '{}' has the same name or link table as {}; each pipeline needs its own",
                        f.display(),
                        p.name,
                        other.file.display()
                    ));
                } else {
                    pipelines.push(p);
                }
            }
            Err(e) => problems.extend(e.problems),
        }
    }
    Ok((pipelines, problems))
}
