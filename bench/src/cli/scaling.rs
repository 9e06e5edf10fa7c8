//! `bench --scaling`: the catch-up at 1x, 3x and 10x the backlog, each in a child
//! process (its own peak memory).

use std::path::Path;
use std::process::ExitCode;

use super::*;

/// Runs the bench at 1x, 3x and 10x the backlog, each in a child process.
pub(super) fn scaling(args: &BenchArgs, cache_dir: Option<&Path>) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: cannot find this program's path: {e}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let mut rows: Vec<(usize, BenchResult)> = Vec::new();
    for k in [1, 3, 10] {
        let scale = args.scale.max(1) * k;
        let mut cmd = scale_command(&exe, args, cache_dir, scale);
        eprintln!("bench: scale {scale}x ...");
        let out = match cmd.stderr(std::process::Stdio::inherit()).output() {
            Ok(o) => o,
            Err(e) => {
                eprintln!("error: cannot run {}: {e}", exe.display());
                return ExitCode::from(EXIT_FAILED);
            }
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        let parsed = stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str::<BenchResult>(l).ok());
        match (out.status.success(), parsed) {
            (true, Some(r)) => rows.push((scale, r)),
            _ => {
                eprintln!("error: the run at scale {scale} failed ({})", out.status);
                return ExitCode::from(EXIT_FAILED);
            }
        }
    }
    let Some((_, first)) = rows.first() else {
        return ExitCode::from(EXIT_FAILED);
    };
    if args.json {
        let all: Vec<&BenchResult> = rows.iter().map(|(_, r)| r).collect();
        return print_json(&serde_json::json!({ "scaling": all }));
    }
    print_scaling(first, &rows);
    ExitCode::SUCCESS
}

/// The `dlink-bench --json` run at `scale` (this program again, `current_exe`), with
/// the other options of this one.
fn scale_command(
    exe: &Path,
    args: &BenchArgs,
    cache_dir: Option<&Path>,
    scale: usize,
) -> std::process::Command {
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--json");
    for (flag, value) in [
        ("--upstreams", args.upstreams().to_string()),
        ("--pipelines", args.pipelines().to_string()),
        ("--rows", args.rows().to_string()),
        ("--versions", args.versions.to_string()),
        ("--change-fraction", args.change_fraction.to_string()),
        ("--seed", args.seed.to_string()),
        ("--batch-size", args.batch_size.to_string()),
        ("--jobs", args.jobs.to_string()),
        ("--scale", scale.to_string()),
    ] {
        cmd.arg(flag).arg(value);
    }
    if let Some(p) = &args.plugin {
        cmd.arg("--plugin").arg(p);
    }
    if let Some(c) = cache_dir {
        cmd.arg("--cache-dir").arg(c);
    }
    if let Some(d) = &args.dir {
        cmd.arg("--dir").arg(d.join(format!("scale-{scale}")));
    }
    if args.keep {
        cmd.arg("--keep");
    }
    cmd
}

/// The scaling table: one line per scale, then 1x against 10x.
fn print_scaling(first: &BenchResult, rows: &[(usize, BenchResult)]) {
    println!("{}", header(first));
    println!(
        "  {:>5}  {:>8}  {:>11}  {:>9}  {:>12}  {:>14}  {:>9}",
        "scale", "versions", "change rows", "wall_s", "peak RSS", "ms / 1k rows", "batches"
    );
    for (scale, r) in rows {
        println!(
            "  {:>4}x  {:>8}  {:>11}  {:>9.3}  {:>12}  {:>14.2}  {:>9}",
            scale,
            r.versions,
            r.change_rows,
            r.wall_s,
            bench::mib(r.peak_rss_bytes),
            r.wall_s * 1e6 / r.change_rows.max(1) as f64,
            r.batches
        );
    }
    if let (Some((_, a)), Some((_, b))) = (rows.first(), rows.last()) {
        println!(
            "  1x -> 10x: wall x{:.2} for change rows x{:.2}; peak RSS x{:.2}",
            b.wall_s / a.wall_s.max(1e-9),
            b.change_rows as f64 / a.change_rows.max(1) as f64,
            b.peak_rss_bytes as f64 / a.peak_rss_bytes.max(1) as f64
        );
    }
}
