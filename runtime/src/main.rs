//! The `dlink-rt` command line.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    let json = matches!(args.log_format(), cli::LogFormat::Json);
    dlink_rt::storage::init_logs(json, args.log_filter());
    cli::set_json_logs(json);
    cli::main(args)
}
