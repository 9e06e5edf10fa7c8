//! `dlink-rt status [PATH] [--json]`

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use dlink_rt::config::Pipeline;
use dlink_rt::status::{self, PipelineStatus};

use super::EXIT_CONFIG;

/// Where each pipeline stands: last batch, per upstream checkpoint vs latest version
/// and the lag, the plugin in effect, the last reset. Reads the tables only; exits 0
/// (a table that cannot be read is shown as such).
#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// A folder of pipeline files with its upstreams.toml, or one pipeline file.
    #[arg(default_value = "configs")]
    pub path: PathBuf,
    /// One JSON object: {"pipelines": [...]}.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub select: super::Select,
}

pub async fn status(args: StatusArgs) -> ExitCode {
    let mut pipelines = match load(&args.path) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if let Err(e) = args.select.apply(&mut pipelines) {
        say!("error: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let list: Vec<PipelineStatus> =
        futures::future::join_all(pipelines.iter().map(status::of)).await;
    if args.json {
        outln!("{}", serde_json::json!({ "pipelines": list }));
    } else {
        out!("{}", render(&list));
    }
    ExitCode::SUCCESS
}

/// Every pipeline file of a folder (disabled ones too), or the one file given; the
/// files that do not load are reported on stderr. `Err`: the exit code when nothing
/// can be loaded (no catalog, no such file).
pub(super) fn load(path: &Path) -> Result<Vec<Pipeline>, ExitCode> {
    let loaded = if path.is_dir() {
        super::run::folder_files(path).map(|(catalog, files)| {
            let mut problems = Vec::new();
            let pipelines = files
                .iter()
                .filter_map(|f| {
                    Pipeline::load_with_catalog(f, &catalog)
                        .map_err(|e| problems.push(e.to_string()))
                        .ok()
                })
                .collect();
            (pipelines, problems)
        })
    } else {
        Pipeline::load(path).map(|p| (vec![p], Vec::new()))
    };
    match loaded {
        Ok((pipelines, problems)) => {
            for p in &problems {
                super::say_problem(p);
            }
            Ok(pipelines)
        }
        Err(e) => {
            super::say_problem(&e.to_string());
            Err(ExitCode::from(EXIT_CONFIG))
        }
    }
}

fn render(list: &[PipelineStatus]) -> String {
    let mut out = String::new();
    for p in list {
        let state = if p.enabled { "" } else { " (disabled)" };
        out.push_str(&format!("{}{state}  {}\n", p.pipeline, p.file));
        match &p.error {
            Some(e) => out.push_str(&format!("  link table: cannot be read: {e}\n")),
            None if p.link_version.is_none() => {
                out.push_str("  link table: not created yet (no batch committed)\n")
            }
            None => out.push_str(&format!(
                "  last batch {} at {}{}\n",
                p.last_batch,
                p.last_batch_at.as_deref().unwrap_or("?"),
                p.plugin
                    .as_ref()
                    .map(|d| format!(
                        ", {} (sha256 {}{}) since batch {}",
                        d.path.as_deref().unwrap_or("?"),
                        d.sha256.as_deref().map_or("?", |s| &s[..s.len().min(12)]),
                        d.contract
                            .as_deref()
                            .map(|c| format!(", {c}"))
                            .unwrap_or_default(),
                        d.active_since_batch
                            .map_or("?".to_string(), |b| b.to_string())
                    ))
                    .unwrap_or_default()
            )),
        }
        if let Some(r) = &p.last_reset {
            out.push_str(&format!("  last reset: {}\n", describe_reset(r)));
        }
        for u in &p.upstreams {
            match &u.error {
                Some(e) => out.push_str(&format!("  {:<28} cannot be read: {e}\n", u.name)),
                None => out.push_str(&format!(
                    "  {:<28} done {:>8}  latest {:>8}  lag {:>6} versions {:>10}\n",
                    u.name,
                    u.checkpoint.map_or("-".to_string(), |v| v.to_string()),
                    u.latest.map_or("?".to_string(), |v| v.to_string()),
                    u.lag_versions.map_or("?".to_string(), |v| v.to_string()),
                    u.lag_seconds
                        .map_or("?".to_string(), |s| format!("{s:.1} s")),
                )),
            }
        }
    }
    out
}

/// A reset as its commit metadata records it, in words: `spmaster from version 42
/// (was 37; versions 37 to 41 skipped) by ana at 2026-12-07T10:00:00+00:00: CDF was off`.
fn describe_reset(r: &serde_json::Value) -> String {
    let text = |k: &str| r.get(k).and_then(|v| v.as_str());
    let int = |k: &str| r.get(k).and_then(|v| v.as_i64());
    let mut s = format!(
        "{} from version {}",
        text("upstream").unwrap_or("?"),
        int("to_next_version").map_or("?".into(), |v| v.to_string())
    );
    match (int("from_next_version"), r.get("skipped_versions")) {
        (Some(was), Some(serde_json::Value::Array(v))) if v.len() == 2 => s.push_str(&format!(
            " (was {was}; versions {} to {} skipped)",
            v[0], v[1]
        )),
        (Some(was), _) => s.push_str(&format!(" (was {was})")),
        (None, _) => s.push_str(" (before its first batch)"),
    }
    if let Some(by) = text("by") {
        s.push_str(&format!(" by {by}"));
    }
    if let Some(at) = text("at") {
        s.push_str(&format!(" at {at}"));
    }
    if let Some(why) = text("reason") {
        s.push_str(&format!(": {why}"));
    }
    s
}
