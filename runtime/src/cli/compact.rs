//! `dlink-rt compact <pipeline.toml | folder> [--json]`

use std::path::PathBuf;
use std::process::ExitCode;

use dlink_rt::compact::{compact as compact_link, Report};

use super::EXIT_CONFIG;

/// Applies retention (`[link] retain`, never past a registered consumer's position),
/// OPTIMIZEs and VACUUMs the link tables.
#[derive(clap::Args, Debug)]
pub struct CompactArgs {
    /// A pipeline file, or a folder of them (every enabled pipeline).
    pub path: PathBuf,
    /// One JSON object per pipeline, one per line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub select: super::Select,
}

pub async fn compact(args: CompactArgs) -> ExitCode {
    let (mut pipelines, problems) = match super::run::load_path(&args.path) {
        Ok(found) => found,
        Err(e) => {
            say!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Err(e) = args.select.apply(&mut pipelines) {
        say!("error: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    for p in &problems {
        say!("error: {p}");
    }
    let mut failed = 0;
    for p in &pipelines {
        match compact_link(p, chrono::Utc::now()).await {
            Ok(r) if args.json => match serde_json::to_string(&r) {
                Ok(line) => outln!("{line}"),
                Err(e) => {
                    say!("error: {}: {e}", p.name);
                    failed += 1;
                }
            },
            Ok(r) => print_report(&r),
            Err(e) => {
                say!("error: {e}");
                failed += 1;
            }
        }
    }
    super::outcome_code(&problems, failed)
}

fn print_report(r: &Report) {
    let removed = match r.removed_batches {
        Some((a, b)) => format!(
            "removed batches {a} to {b} ({} files, {} rows)",
            r.removed_files,
            r.removed_rows
                .map_or_else(|| "?".to_string(), |n| n.to_string())
        ),
        None => "removed no batch".to_string(),
    };
    outln!(
        "{}: {removed}; optimize merged {} files into {}; vacuum ({}) deleted {} files; {} -> {} files in {:.2}s",
        r.pipeline,
        r.optimized_files_removed,
        r.optimized_files_added,
        r.vacuum_mode,
        r.vacuumed_files,
        r.files_before,
        r.files_after,
        r.seconds
    );
    for n in &r.notes {
        outln!("  {n}");
    }
}
