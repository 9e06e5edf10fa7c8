//! The `dlink-bench` command line: the benchmarks of dlink-rt (`dlink-bench ARGS` takes
//! what `dlink-rt bench ARGS` took, and prints the same).

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use dlink_rt::plugin::{PluginHost, Profiler};

/// Generate a workload, catch it up, and time it against the raw-read and native
/// references (the benchmarks of dlink-rt).
#[derive(Parser, Debug)]
#[command(name = "dlink-bench", version, about)]
struct Cli {
    #[command(flatten)]
    bench: cli::BenchArgs,
    /// Folder for compiled plugin components (default: $XDG_CACHE_HOME/dlink-rt/components,
    /// else ~/.cache/dlink-rt/components).
    #[arg(long, value_name = "DIR", env = "DLINK_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Name compiled plugin functions for a profiler (`perf`); build the plugin without
    /// `strip` to keep the names.
    #[arg(long, value_enum, default_value_t = Profiler::None, env = "DLINK_WASM_PROFILER")]
    wasm_profiler: Profiler,
    /// Logs on stderr as text lines or one JSON object per event (for log shippers).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "DLINK_LOG_FORMAT")]
    log_format: LogFormat,
    /// Which log events are shown: a tracing filter such as `debug` or
    /// `warn,dlink_rt=debug` (default: warnings, and the quiet parts of deltalake quieter).
    #[arg(long, value_name = "FILTER", env = "DLINK_LOG")]
    log: Option<String>,
    /// Test hook (see `dlink_rt::engine::pause_at`).
    #[arg(long, hide = true, env = "DLINK_TEST_PAUSE_AT")]
    test_pause_at: Option<String>,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Exit code of a run that failed.
const EXIT_FAILED: u8 = 1;
/// Exit code of bad usage or configuration.
const EXIT_CONFIG: u8 = 2;

/// How long the end of a run waits for the runtime's blocking tasks.
const SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(2);

fn main() -> ExitCode {
    let args = Cli::parse();
    dlink_rt::storage::init_logs(
        matches!(args.log_format, LogFormat::Json),
        args.log.as_deref(),
    );
    if let Some(point) = args.test_pause_at.clone() {
        dlink_rt::engine::pause_at(point);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let host = PluginHost::builder()
        .cache_dir(
            args.cache_dir
                .clone()
                .or_else(dlink_rt::plugin::default_cache_dir),
        )
        .profiler(args.wasm_profiler);
    let code = rt.block_on(cli::bench(args.bench, host));
    // As `dlink-rt` ends a command: work still in flight on other threads is abandoned
    // and its panics are not printed; blocking tasks get a bounded time.
    quiet_from_here();
    rt.shutdown_timeout(SHUTDOWN);
    code
}

/// From now on, a panic of any thread is not printed (see the end of [`main`]).
fn quiet_from_here() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::debug!("a panic while the process shuts down: {info}");
        let _ = &previous;
    }));
}
