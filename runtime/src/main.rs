//! The `dlink-rt` command line.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    dlink_rt::storage::init_logs(
        matches!(args.log_format(), cli::LogFormat::Json),
        args.log_filter(),
    );
    cli::main(args)
}
