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
    /// Stop after this many batches per run (overrides the file's `max_batches`).
    #[arg(long)]
    pub max_batches: Option<u64>,
    /// Keep running: poll the upstreams every --interval, run batches as commits
    /// arrive, and hot-swap the plugin when its file changes. Stops on Ctrl-C/SIGTERM.
    #[arg(long)]
    pub follow: bool,
    /// Pause between polls with --follow (e.g. 500ms, 2s, 1m).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: std::time::Duration,
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
    if args.follow {
        let opts = dlink_rt::engine::FollowOptions {
            interval: args.interval,
            ..Default::default()
        };
        println!(
            "{}: following (polling every {}, watching {}); Ctrl-C to stop",
            pipeline.name,
            humantime::format_duration(args.interval),
            pipeline.deriver()
        );
        let r = dlink_rt::engine::follow(
            &pipeline,
            std::sync::Arc::new(host),
            opts,
            |b| println!("{b}"),
            shutdown(),
        )
        .await;
        return match r {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_FAILED)
            }
        };
    }
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
