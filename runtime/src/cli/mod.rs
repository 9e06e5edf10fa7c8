//! One module per verb, each with its options struct and one function returning an
//! exit code.

/// `println!` to stdout that does not panic when stdout is closed (`dlink-rt schema |
/// head -1`): what is left to print is dropped and the verb ends as it would.
macro_rules! outln {
    () => {
        $crate::cli::write_out(format_args!("\n"))
    };
    ($($t:tt)*) => {
        $crate::cli::write_out(format_args!("{}\n", format_args!($($t)*)))
    };
}

/// `eprintln!` for the verbs' own lines on stderr: as they are with text logs; with
/// `--log-format json`, one JSON event each (`error: …` an ERROR, `warning: …` and
/// `note: …` a WARN, the rest INFO), so that every line on stderr is JSON.
macro_rules! say {
    ($($t:tt)*) => {
        $crate::cli::say_line(&format!($($t)*))
    };
}

/// `print!` to stdout, as [`outln!`].
macro_rules! out {
    ($($t:tt)*) => {
        $crate::cli::write_out(format_args!($($t)*))
    };
}

mod ack;
mod compact;
mod consumers;
mod demo;
mod graph;
mod history;
mod keys;
mod plugin;
mod progress;
mod reset;
mod run;
mod schema;
mod status;
mod validate;
mod why;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};
use dlink_rt::plugin::{PluginHost, Profiler};

/// Affected-key pipelines over Delta Lake's Change Data Feed, with Wasm plugins.
#[derive(Parser, Debug)]
#[command(name = "dlink-rt", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Folder for compiled plugin components (default: $XDG_CACHE_HOME/dlink-rt/components,
    /// else ~/.cache/dlink-rt/components).
    #[arg(long, global = true, value_name = "DIR", env = "DLINK_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Name compiled plugin functions for a profiler (`perf`); build the plugin without
    /// `strip` to keep the names.
    #[arg(long, global = true, value_enum, default_value_t = Profiler::None, env = "DLINK_WASM_PROFILER")]
    wasm_profiler: Profiler,
    /// Logs on stderr as text lines or one JSON object per event (for log shippers).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "DLINK_LOG_FORMAT")]
    log_format: LogFormat,
    /// Which log events are shown: a tracing filter such as `debug` or
    /// `warn,dlink_rt=debug` (default: warnings, and the quiet parts of deltalake quieter).
    #[arg(long, global = true, value_name = "FILTER", env = "DLINK_LOG")]
    log: Option<String>,
    /// Test hook (see `dlink_rt::engine::pause_at`).
    #[arg(long, global = true, hide = true, env = "DLINK_TEST_PAUSE_AT")]
    test_pause_at: Option<String>,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl Cli {
    /// The `--log-format` asked for.
    pub fn log_format(&self) -> LogFormat {
        self.log_format
    }

    /// The `--log` filter asked for, if any.
    pub fn log_filter(&self) -> Option<&str> {
        self.log.as_deref()
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Catch a pipeline up with its upstreams, committing one batch at a time, and exit.
    Run(run::RunArgs),
    /// Write the example upstream tables, run the four example pipelines, print their link tables.
    Demo(demo::DemoArgs),
    /// Print the distinct affected keys of the batches since a batch or a time, with their causes.
    Keys(keys::KeysArgs),
    /// Record that a consumer is done with the batches up to N (its position, for `keys --consumer`).
    Ack(ack::AckArgs),
    /// List a pipeline's registered consumers with their positions and lag.
    Consumers(consumers::ConsumersArgs),
    /// Apply retention ([link] retain, never past a registered consumer), OPTIMIZE and VACUUM link tables.
    Compact(compact::CompactArgs),
    /// Move an upstream's checkpoint past versions that cannot be read (or back, to re-read).
    Reset(reset::ResetArgs),
    /// Explain a key: the batches that reported it, their upstream commits and the change rows that caused it.
    Why(why::WhyArgs),
    /// Check the catalog, pipelines, upstream tables, plugins and SQL; print every problem.
    Validate(validate::ValidateArgs),
    /// Where each pipeline stands: last batch, upstream lag in versions and seconds, plugin, last reset.
    Status(status::StatusArgs),
    /// The committed batches of a pipeline, newest first: ranges, change rows, keys, time, plugin.
    History(history::HistoryArgs),
    /// Print the graph of the pipelines (upstreams -> pipelines -> link tables) as Graphviz DOT or Mermaid.
    Graph(graph::GraphArgs),
    /// Print the JSON Schema of the catalog and pipeline files (for editors).
    Schema(schema::SchemaArgs),
    /// For plugin authors: write a new plugin crate, or run a plugin on hand-written change rows.
    Plugin(plugin::PluginArgs),
}

/// Exit code of a run where a pipeline failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code of bad usage or configuration.
pub const EXIT_CONFIG: u8 = 2;

/// The exit code of a verb's outcome, printing its error: [`EXIT_CONFIG`] for bad
/// usage or configuration, [`EXIT_FAILED`] for the rest.
fn exit_code(outcome: Result<(), dlink_rt::Error>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say_error(None, &e);
            ExitCode::from(match e {
                dlink_rt::Error::Config(_) => EXIT_CONFIG,
                _ => EXIT_FAILED,
            })
        }
    }
}

/// The exit code of a verb over many pipelines: [`EXIT_CONFIG`] when a file did not
/// load, else [`EXIT_FAILED`] when a pipeline failed.
fn outcome_code(problems: &[String], failed: usize) -> ExitCode {
    if !problems.is_empty() {
        ExitCode::from(EXIT_CONFIG)
    } else if failed > 0 {
        ExitCode::from(EXIT_FAILED)
    } else {
        ExitCode::SUCCESS
    }
}

pub fn main(cli: Cli) -> ExitCode {
    // The demo points the example configs at its folder through DLINK_DATA; set it
    // before any thread starts.
    if let Command::Demo(args) = &cli.command {
        demo::export_data_dir(args);
    }
    if let Some(point) = cli.test_pause_at.clone() {
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
            cli.cache_dir
                .clone()
                .or_else(dlink_rt::plugin::default_cache_dir),
        )
        .profiler(cli.wasm_profiler);
    let code = rt.block_on(async move {
        match cli.command {
            Command::Run(args) => run::run(args, host).await,
            Command::Demo(args) => demo::demo(args, host).await,
            Command::Reset(args) => reset::reset(args).await,
            Command::Keys(args) => keys::keys(args).await,
            Command::Ack(args) => ack::ack(args).await,
            Command::Consumers(args) => consumers::consumers(args).await,
            Command::Compact(args) => compact::compact(args).await,
            Command::Why(args) => why::why(args, host).await,
            Command::Validate(args) => validate::validate(args, host).await,
            Command::Status(args) => status::status(args).await,
            Command::History(args) => history::history(args).await,
            Command::Graph(args) => graph::graph(args).await,
            Command::Schema(args) => schema::schema(args),
            Command::Plugin(args) => plugin::plugin(args, host).await,
        }
    });
    // The command's outcome is decided. Work still in flight on other threads (a
    // table open that lost a race with the error that ended the run, the Delta kernel's
    // reads on the runtime's blocking threads) is abandoned: the kernel's executor
    // panics when the runtime that ran its task goes away, which is noise after the
    // real error, so panics from here on are not printed.
    quiet_from_here();
    // Dropping the runtime would wait without a bound for blocking tasks (a file read
    // stuck on a dead mount, an abandoned batch's work): they get a bounded time.
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

/// How long the end of a command waits for the runtime's blocking tasks.
const SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(2);

/// Set once stdout is found closed: nothing more is written to it.
static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);

/// Writes to stdout (see [`outln!`]): a closed stdout (broken pipe) ends the verb's
/// output, not the verb; another write error is said once on stderr.
pub(crate) fn write_out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("warning: cannot write to stdout ({e}); the rest of the output is dropped");
        }
    }
}

/// `n` and the noun in the number it takes: `1 batch`, `0 batches`, `2 batches`.
pub(crate) fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// Set when the logs are JSON (`--log-format json`): errors are then log events too.
static JSON_LOGS: AtomicBool = AtomicBool::new(false);

/// Says whether the logs are JSON (from `main`, before any verb runs).
pub fn set_json_logs(on: bool) {
    JSON_LOGS.store(on, Ordering::Relaxed);
}

/// Says a verb's error (of `pipeline`, when it is about one): `error: …` on stderr,
/// or, with `--log-format json`, one ERROR event with `pipeline`, `batch`, `upstream`,
/// `version` and `kind`, so that every line on stderr is JSON.
pub(crate) fn say_error(pipeline: Option<&str>, e: &dlink_rt::Error) {
    let mut text = e.to_string();
    // A path that is not there often came from a `${VAR:-default}`: say which.
    if !matches!(e, dlink_rt::Error::Batch { .. }) {
        for note in dlink_rt::config::defaults_taken() {
            text.push_str(&format!("\nnote: {note}"));
        }
    }
    if JSON_LOGS.load(Ordering::Relaxed) {
        let (upstream, version) = e.upstream().map_or((None, None), |(u, v)| (Some(u), v));
        tracing::error!(
            pipeline = pipeline.or(e.pipeline()),
            batch = e.batch_id(),
            upstream,
            version,
            kind = e.kind(),
            "{text}"
        );
        return;
    }
    match pipeline {
        // Most errors name their pipeline already; the others are prefixed.
        Some(name) if !text.contains(&format!("pipeline '{name}'")) => {
            eprintln!("error: pipeline '{name}': {text}")
        }
        _ => eprintln!("error: {text}"),
    }
}

/// [`say_error`] for an error that is only text, of the given `kind`.
pub(crate) fn say_error_text(kind: &str, text: &dyn std::fmt::Display) {
    if JSON_LOGS.load(Ordering::Relaxed) {
        tracing::error!(kind, "{text}");
    } else {
        eprintln!("error: {text}");
    }
}

/// `--select NAME[,NAME]`: only the named pipelines of a folder.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Select {
    /// Only the pipelines of these names (comma-separated or repeated), as their files'
    /// `name` says.
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    pub select: Vec<String>,
}

impl Select {
    /// Keeps the selected pipelines (all when none is selected); a name that no
    /// pipeline has is an error naming the ones there are.
    pub fn apply(&self, pipelines: &mut Vec<dlink_rt::config::Pipeline>) -> Result<(), String> {
        if self.select.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = pipelines.iter().map(|p| p.name.clone()).collect();
        let unknown: Vec<String> = self
            .select
            .iter()
            .filter(|s| !names.contains(s))
            .map(|s| match dlink_rt::config::did_you_mean(s, &names) {
                Some(m) => format!("'{s}' (did you mean '{m}'?)"),
                None => format!("'{s}'"),
            })
            .collect();
        if !unknown.is_empty() {
            return Err(format!(
                "--select: no pipeline named {} here (pipelines: {})",
                unknown.join(", "),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ));
        }
        pipelines.retain(|p| self.select.contains(&p.name));
        Ok(())
    }
}

/// See [`say!`].
pub(crate) fn say_line(text: &str) {
    if !JSON_LOGS.load(Ordering::Relaxed) {
        eprintln!("{text}");
        return;
    }
    if let Some(rest) = text.strip_prefix("error: ") {
        tracing::error!(kind = "cli", "{rest}");
    } else if let Some(rest) = text
        .strip_prefix("warning: ")
        .or_else(|| text.strip_prefix("note: "))
    {
        tracing::warn!("{rest}");
    } else {
        tracing::info!("{text}");
    }
}

/// A configuration problem as `validate` and `status` list them (`file:line: …`): as
/// it is with text logs, an ERROR event (`kind` "config") with JSON logs.
pub(crate) fn say_problem(text: &str) {
    if JSON_LOGS.load(Ordering::Relaxed) {
        tracing::error!(kind = "config", "{text}");
    } else {
        eprintln!("{text}");
    }
}
