//! The `dlink-rt` command line.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DLINK_LOG")
                // deltalake's MERGE warns about a missing file metric on every commit.
                .unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new(
                        "warn,deltalake_core::operations::merge=error",
                    )
                }),
        )
        .with_writer(std::io::stderr)
        .init();
    cli::main(args)
}
