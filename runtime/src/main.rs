//! The `dlink-rt` command line.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    // deltalake's MERGE warns about a missing file metric on every commit, and its
    // commit loop logs a lost race (which dlink-rt handles and reports itself, with the
    // pipeline and batch) as an ERROR.
    let default = || {
        tracing_subscriber::EnvFilter::new(
            "warn,deltalake_core::operations::merge=error,deltalake_core::kernel::transaction=off",
        )
    };
    let filter = match args.log_filter() {
        Some(f) => tracing_subscriber::EnvFilter::try_new(f).unwrap_or_else(|e| {
            eprintln!(
                "warning: --log / DLINK_LOG '{f}' is not a log filter ({e}); showing warnings"
            );
            default()
        }),
        None => default(),
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(dlink_rt::storage::RedactingStderr);
    match args.log_format() {
        // One JSON object per event, its fields as keys, for log shippers.
        cli::LogFormat::Json => logs.json().flatten_event(true).init(),
        cli::LogFormat::Text => logs.init(),
    }
    cli::main(args)
}
