//! The `dlink-rt` command line.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DLINK_LOG")
                // deltalake's MERGE warns about a missing file metric on every commit,
                // and its commit loop logs a lost race (which dlink-rt handles and
                // reports itself, with the pipeline and batch) as an ERROR.
                .unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new(
                        "warn,deltalake_core::operations::merge=error,deltalake_core::kernel::transaction=off",
                    )
                }),
        )
        .with_writer(std::io::stderr);
    match args.log_format() {
        // One JSON object per event, its fields as keys, for log shippers.
        cli::LogFormat::Json => logs.json().flatten_event(true).init(),
        cli::LogFormat::Text => logs.init(),
    }
    cli::main(args)
}
