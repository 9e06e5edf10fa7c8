//! `dlink-rt run <pipeline.toml>`

use std::path::PathBuf;
use std::process::ExitCode;

use dlink_rt::config::Pipeline;
use dlink_rt::engine::run_pipeline;
use dlink_rt::plugin::PluginHost;
use dlink_rt::Error;

use super::{EXIT_CONFIG, EXIT_FAILED};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The pipeline file (its catalog is `upstreams.toml` beside it unless it names one).
    pub pipeline: PathBuf,
    /// Stop after this many batches (overrides the file's `max_batches`).
    #[arg(long)]
    pub max_batches: Option<u64>,
}

pub async fn run(args: RunArgs, cache_dir: Option<PathBuf>) -> ExitCode {
    let mut pipeline = match Pipeline::load(&args.pipeline) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if args.max_batches.is_some() {
        pipeline.max_batches = args.max_batches;
    }
    if !pipeline.enabled {
        println!(
            "{}: disabled (enabled = false in {}); nothing to do",
            pipeline.name,
            pipeline.file.display()
        );
        return ExitCode::SUCCESS;
    }
    let host = match PluginHost::new(cache_dir) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: cannot start the plugin host: {e:#}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match run_once(&pipeline, &host).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(match e {
                Error::Config { .. } => EXIT_CONFIG,
                _ => EXIT_FAILED,
            })
        }
    }
}

/// Runs one pipeline to the end, printing a line per batch.
pub async fn run_once(pipeline: &Pipeline, host: &PluginHost) -> Result<(), Error> {
    let summary = run_pipeline(pipeline, host, |b| println!("{b}")).await?;
    if let Some(why) = &summary.yielded {
        println!("{}: {why}", pipeline.name);
    } else if summary.batches.is_empty() {
        println!("{}: up to date, nothing committed", pipeline.name);
    }
    Ok(())
}
