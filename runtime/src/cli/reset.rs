//! `dlink-rt reset <pipeline.toml> --upstream NAME (--to-version N | --to-latest)`

use std::path::PathBuf;
use std::process::ExitCode;

use dlink_rt::config::Pipeline;
use dlink_rt::sink::LinkTable;
use dlink_rt::{cdf, Error};

/// Moves one upstream's checkpoint: the way past versions that cannot be read
/// (vacuumed, log cleaned up, CDF off, table replaced). What was skipped, by whom and
/// when is recorded in the link table's commit metadata.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("to").required(true).args(["to_version", "to_latest"])))]
pub struct ResetArgs {
    /// The pipeline file.
    pub pipeline: PathBuf,
    /// The upstream whose checkpoint moves.
    #[arg(long)]
    pub upstream: String,
    /// The next run reads this upstream from version N on.
    #[arg(long, value_name = "N")]
    pub to_version: Option<i64>,
    /// The next run reads only versions committed after the current latest one.
    #[arg(long)]
    pub to_latest: bool,
    /// Why, recorded with the reset.
    #[arg(long)]
    pub reason: Option<String>,
    /// Who resets, recorded with the reset [default: $USER, else $LOGNAME, else the
    /// process's uid].
    #[arg(long, value_name = "NAME")]
    pub by: Option<String>,
}

pub async fn reset(args: ResetArgs) -> ExitCode {
    super::exit_code(reset_inner(&args).await)
}

async fn reset_inner(args: &ResetArgs) -> Result<(), Error> {
    let pipeline = Pipeline::load(&args.pipeline)?;
    let Some(u) = pipeline.upstreams.iter().find(|u| u.name == args.upstream) else {
        return Err(Error::config(format!(
            "{}: '{}' is not an upstream of pipeline '{}' (upstreams: {})",
            args.pipeline.display(),
            args.upstream,
            pipeline.name,
            pipeline
                .upstreams
                .iter()
                .map(|u| u.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    let next = match args.to_version {
        Some(n) if n < 0 => return Err(Error::config("--to-version must be 0 or more")),
        Some(n) => n,
        None => {
            let t = cdf::open_latest(u).await?;
            cdf::version_of(u, &t)? + 1
        }
    };
    let by = who(args.by.as_deref());
    let mut link = LinkTable::open(&pipeline).await?;
    let before = link.checkpoint().await?.done.get(&u.name).map(|d| d + 1);
    let version = link
        .reset(&u.name, next, &by, args.reason.as_deref())
        .await?;
    let from = before.map_or_else(
        || format!("start_version {}", u.start_version),
        |v| format!("version {v}"),
    );
    outln!(
        "{}: upstream '{}' will be read from version {next} (was {from}); recorded by {by} in link table version {version}",
        pipeline.name, u.name
    );
    Ok(())
}

/// Who a reset is recorded as: `--by`, else `$USER`, else `$LOGNAME`, else the uid
/// (a container often sets neither variable).
fn who(by: Option<&str>) -> String {
    use std::os::unix::fs::MetadataExt;
    let named = |v: &str| std::env::var(v).ok().filter(|s| !s.trim().is_empty());
    by.map(str::to_string)
        .filter(|s| !s.trim().is_empty())
        .or_else(|| named("USER"))
        .or_else(|| named("LOGNAME"))
        .unwrap_or_else(|| match std::fs::metadata("/proc/self") {
            Ok(m) => format!("uid {} (no --by, USER or LOGNAME)", m.uid()),
            Err(_) => "someone (no --by, USER or LOGNAME)".into(),
        })
}
