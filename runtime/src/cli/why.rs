//! `dlink-rt why <pipeline.toml> (KEY... | --key COLUMN=VALUE...) [--batches N] [--json]`

use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use dlink_rt::cdf::{CHANGE_TYPE, COMMIT_TIMESTAMP, COMMIT_VERSION};
use dlink_rt::config::Pipeline;
use dlink_rt::plugin::HostBuilder;
use dlink_rt::why::{self, BatchWhy, Explanation, Options, Rederivation, UpstreamWhy};
use dlink_rt::Error;
use serde_json::Value;

/// Explains a key: each batch that reported it, the upstream commits of the batch and
/// the change rows that caused it (derived again with the batch's plugin).
#[derive(clap::Args, Debug)]
pub struct WhyArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// The key: one value per key column, in the pipeline file's order
    /// (`why p.toml 42`, `why p.toml 7 MIT` for keys (id long, inst string)).
    #[arg(value_name = "KEY")]
    pub key: Vec<String>,
    /// The key by column instead, once per key column: `--key id=7 --key inst=MIT`.
    #[arg(long = "key", value_name = "COLUMN=VALUE")]
    pub named: Vec<String>,
    /// Explain the newest N batches that reported the key.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub batches: u64,
    /// Derivations per batch while narrowing down the causing change rows.
    #[arg(long, value_name = "N", default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_derive_calls: u64,
    /// One JSON object (the key and a list of batches) instead of the text report.
    #[arg(long)]
    pub json: bool,
}

pub async fn why(args: WhyArgs, host: HostBuilder) -> ExitCode {
    super::exit_code(why_inner(&args, host).await)
}

async fn why_inner(args: &WhyArgs, host: HostBuilder) -> Result<(), Error> {
    let pipeline = Pipeline::load(&args.pipeline)?;
    let key = why::parse_key(&pipeline.keys, &args.key, &args.named)?;
    let host = host
        .build()
        .map_err(|e| Error::Other(format!("cannot start the plugin host: {e:#}")))?;
    let opts = Options {
        batches: usize::try_from(args.batches).unwrap_or(usize::MAX),
        max_derive_calls: usize::try_from(args.max_derive_calls).unwrap_or(usize::MAX),
        ..Options::default()
    };
    let e = why::explain(&pipeline, &key, &opts, &host).await?;
    let text = if args.json {
        let mut t = serde_json::to_string_pretty(&e)
            .map_err(|e| Error::Other(format!("cannot write the report as JSON: {e}")))?;
        t.push('\n');
        t
    } else {
        render_text(&e)
    };
    match std::io::stdout().write_all(text.as_bytes()) {
        // A reader that stopped early (`| head`) is not a failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r.map_err(|e| Error::Other(format!("writing to stdout: {e}"))),
    }
}

// ---- the text report ---------------------------------------------------------------

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        v => v.to_string(),
    }
}

/// The report as text, for people.
fn render_text(e: &Explanation) -> String {
    let mut s = String::new();
    let key: Vec<String> = e
        .key
        .iter()
        .map(|(k, v)| format!("{k}={}", value_text(v)))
        .collect();
    let key = key.join(", ");
    if e.batches_reporting == 0 {
        let _ = writeln!(
            s,
            "{}: key {key} was never reported (no row of it in the link table {}).",
            e.pipeline, e.link_uri
        );
        for n in &e.notes {
            let _ = writeln!(s, "note: {n}");
        }
        return s;
    }
    let _ = writeln!(
        s,
        "{}: key {key} was reported by {} batch(es) (link table {}, {} mode)",
        e.pipeline, e.batches_reporting, e.link_uri, e.link_mode
    );
    for n in &e.notes {
        let _ = writeln!(s, "note: {n}");
    }
    for b in &e.batches {
        render_batch(&mut s, b);
    }
    s
}

/// One batch of the report.
fn render_batch(s: &mut String, b: &BatchWhy) {
    let _ = writeln!(s);
    let mut head = format!("batch {}", b.batch_id);
    if let Some(v) = b.link_version {
        let _ = write!(head, " (link table version {v})");
    }
    if let Some(t) = &b.committed_at {
        let _ = write!(head, ", committed {t}");
    }
    let _ = writeln!(
        s,
        "{head}; caused by: {}",
        if b.upstreams_recorded.is_empty() {
            "-".to_string()
        } else {
            b.upstreams_recorded.join(", ")
        }
    );
    if let Some(path) = &b.deriver.path {
        let sha = b.deriver.sha256.as_deref().unwrap_or("?");
        let _ = writeln!(
            s,
            "  {} {path}, sha256 {}{}",
            b.deriver.kind,
            sha.get(..12).unwrap_or(sha),
            b.deriver
                .active_since_batch
                .map(|a| format!(", active since batch {a}"))
                .unwrap_or_default()
        );
    }
    match &b.rederivation {
        Rederivation::Done { derive_calls } => {
            let used = match (&b.deriver.used, &b.deriver.path) {
                (Some(u), Some(p)) if u != p => format!(" with {u} (same sha256)"),
                _ => String::new(),
            };
            let _ = writeln!(
                s,
                "  re-derived{used} from the recorded ranges ({derive_calls} derivations)"
            );
        }
        Rederivation::NotReproduced { reason, .. } => {
            let _ = writeln!(s, "  NOT REPRODUCED: {reason}");
        }
        Rederivation::Unavailable { reason } => {
            let _ = writeln!(s, "  cannot re-derive: {reason}");
        }
        Rederivation::Failed { error, .. } => {
            let _ = writeln!(s, "  re-derivation failed: {error}");
        }
    }
    for u in &b.upstreams {
        render_upstream(s, u);
    }
    for l in &b.lookups {
        let _ = writeln!(s, "  lookup {} at version {}", l.table, l.version);
    }
    for n in &b.notes {
        let _ = writeln!(s, "  note: {n}");
    }
}

/// One upstream of a batch: its range, commits and causing rows.
fn render_upstream(s: &mut String, u: &UpstreamWhy) {
    let range = match (u.start_version, u.end_version) {
        (Some(a), Some(z)) if a == z => format!("version {a}"),
        (Some(a), Some(z)) => format!("versions {a} to {z}"),
        _ => "no new version".to_string(),
    };
    let _ = writeln!(
        s,
        "  {}{}: {range}, pinned at {}, {} change rows",
        u.name,
        if u.caused { " (cause)" } else { "" },
        u.pinned_version,
        u.change_rows
    );
    for c in &u.commits {
        let mut line = format!("    v{}", c.version);
        if let Some(t) = &c.timestamp {
            let _ = write!(line, "  {t}");
        }
        let _ = write!(line, "  {}", c.operation.as_deref().unwrap_or("?"));
        if let Some(pred) = c
            .operation_parameters
            .as_ref()
            .and_then(|p| p.get("predicate"))
        {
            let _ = write!(line, " [{}]", value_text(pred).trim_matches('"'));
        }
        if c.causing_rows > 0 {
            let _ = write!(line, "  <- {} causing row(s)", c.causing_rows);
        }
        if let Some(n) = &c.note {
            let _ = write!(line, "  ({n})");
        }
        let _ = writeln!(s, "{line}");
    }
    if u.commits.len() < u.commits_total {
        let _ = writeln!(
            s,
            "    ... {} more commit(s) without causing rows",
            u.commits_total - u.commits.len()
        );
    }
    if !u.causing_rows.is_empty() {
        let _ = writeln!(s, "    change rows that cause the key:");
        let meta = [CHANGE_TYPE, COMMIT_VERSION, COMMIT_TIMESTAMP];
        for r in &u.causing_rows {
            let v = r.get(COMMIT_VERSION).map(value_text).unwrap_or_default();
            let t = r
                .get(CHANGE_TYPE)
                .and_then(Value::as_str)
                .unwrap_or_default();
            let cols: Vec<String> = u
                .columns
                .iter()
                .filter(|c| !meta.contains(&c.as_str()))
                .map(|c| format!("{c}={}", r.get(c).map(value_text).unwrap_or_default()))
                .collect();
            let _ = writeln!(s, "      v{v} {t:<16} {}", cols.join(" "));
        }
        if u.causing_rows.len() < u.causing_rows_total {
            let _ = writeln!(
                s,
                "      ... {} more",
                u.causing_rows_total - u.causing_rows.len()
            );
        }
    }
}
