//! `dlink-rt history FILE [--last N] [--json]`

use std::path::PathBuf;
use std::process::ExitCode;

use dlink_rt::config::Pipeline;
use dlink_rt::status::HistoryEntry;

use super::EXIT_CONFIG;

/// The committed batches of a pipeline, newest first, from its link table's commit
/// metadata: each upstream's versions, change rows, keys, time, the plugin (hash,
/// since which batch, contract). Like `DESCRIBE HISTORY` or DLT's event log.
#[derive(clap::Args, Debug)]
pub struct HistoryArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// How many of the newest batches.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub last: usize,
    /// One JSON object: {"pipeline": ..., "batches": [...]}.
    #[arg(long)]
    pub json: bool,
}

pub async fn history(args: HistoryArgs) -> ExitCode {
    let p = match Pipeline::load(&args.pipeline) {
        Ok(p) => p,
        Err(e) => {
            super::say_error_text("config", &e);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let batches = match dlink_rt::status::history(&p, args.last).await {
        Ok(b) => b,
        Err(e) => return super::exit_code(Err(e)),
    };
    if args.json {
        outln!(
            "{}",
            serde_json::json!({ "pipeline": p.name, "batches": batches })
        );
    } else if batches.is_empty() {
        outln!("{}: no batch committed yet", p.name);
    } else {
        out!("{}", render(&p.name, &batches));
    }
    ExitCode::SUCCESS
}

fn render(pipeline: &str, batches: &[HistoryEntry]) -> String {
    let mut s = format!(
        "{pipeline}: the newest {}\n",
        super::plural(batches.len(), "batch", "batches")
    );
    for b in batches {
        let ranges = b
            .upstreams
            .iter()
            .map(|u| match (u.start_version, u.end_version) {
                (Some(a), Some(z)) if a == z => format!("{} v{a}", u.upstream),
                (Some(a), Some(z)) => format!("{} v{a}..{z}", u.upstream),
                _ => format!("{} -", u.upstream),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let opt = |v: Option<u64>| v.map_or("?".to_string(), |v| v.to_string());
        let plugin = match (&b.plugin_sha256, &b.contract) {
            (Some(sha), Some(c)) => format!("{} ({c})", &sha[..sha.len().min(12)]),
            (Some(sha), None) => format!("{} (SQL)", &sha[..sha.len().min(12)]),
            _ => "?".to_string(),
        };
        s.push_str(&format!(
            "batch {:<6} {}  {ranges} | {} change rows | {} keys | {} ms | plugin {plugin}, since batch {}  (link v{})\n",
            b.batch,
            b.committed_at.as_deref().unwrap_or("?"),
            b.change_rows,
            opt(b.keys),
            opt(b.elapsed_ms),
            b.plugin_active_since.map_or("?".to_string(), |v| v.to_string()),
            b.link_version
        ));
    }
    s
}
