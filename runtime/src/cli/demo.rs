//! `dlink-rt demo [DIR]`

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use deltalake::datafusion::prelude::col;
use dlink_rt::config::Pipeline;
use dlink_rt::plugin::HostBuilder;

use super::EXIT_FAILED;

/// Versions per upstream per batch in the demo (the example files use the default).
const DEMO_BATCH_SIZE: i64 = 2;

/// The example pipelines, in the order the demo runs them.
const PIPELINES: [&str; 4] = ["sp_affiliation", "emp_dept", "pub_authors", "author_pubs"];

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Folder for the upstream and link tables (default: ./demo-data). Replaced if it
    /// holds an earlier demo.
    #[arg(env = "DLINK_DATA")]
    pub dir: Option<PathBuf>,
    /// Folder holding the example pipeline files.
    #[arg(long, default_value = "configs")]
    pub configs: PathBuf,
    /// Rows of each link table to print.
    #[arg(long, default_value_t = 12)]
    pub rows: usize,
}

fn data_dir(args: &DemoArgs) -> PathBuf {
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("demo-data"));
    std::path::absolute(&dir).unwrap_or(dir)
}

/// Sets DLINK_DATA to the demo folder so the example configs find it. Called before
/// any thread starts.
pub fn export_data_dir(args: &DemoArgs) {
    let dir = data_dir(args);
    // SAFETY of set_var: called from main before the async runtime or any other
    // thread exists.
    std::env::set_var("DLINK_DATA", &dir);
}

pub async fn demo(args: DemoArgs, host: HostBuilder) -> ExitCode {
    match demo_inner(&args, host).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say!("error: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

async fn demo_inner(
    args: &DemoArgs,
    host: HostBuilder,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let dir = data_dir(args);
    outln!("writing the example upstream tables to {}", dir.display());
    for w in dlink_rt::demo::write_upstreams(&dir).await? {
        outln!("  {:<26} {} versions", w.table, w.versions);
    }
    let host = host
        .build()
        .map_err(|e| format!("cannot start the plugin host: {e:#}"))?;
    for name in PIPELINES {
        let file = args.configs.join(format!("{name}.toml"));
        let mut pipeline = Pipeline::load(&file)?;
        // The demo's history is a few versions long: small batches show how a backlog
        // is cut into several batches, each its own commit.
        pipeline.batch_size = DEMO_BATCH_SIZE;
        outln!(
            "\n$ dlink-rt run {} (batch_size {DEMO_BATCH_SIZE} for the demo)",
            file.display()
        );
        super::run::run_to_end(&pipeline, &host).await?;
        print_link_table(&pipeline, args.rows).await?;
    }
    Ok(())
}

async fn print_link_table(
    p: &Pipeline,
    rows: usize,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let url = deltalake::ensure_table_uri(&p.link_uri)?;
    let table = deltalake::open_table(url).await?;
    let ctx = dlink_rt::cdf::session();
    let df = ctx.read_table(table.table_provider().await?)?;
    let total = df.clone().count().await?;
    let key_cols: Vec<_> = p.keys.iter().map(|k| col(k.name.as_str())).collect();
    let distinct = df.clone().select(key_cols)?.distinct()?.count().await?;
    let sort: Vec<_> = p
        .keys
        .iter()
        .map(|k| col(k.name.as_str()).sort(true, true))
        .chain([col(dlink_rt::sink::BATCH_ID).sort(true, true)])
        .collect();
    let batches = df.sort(sort)?.limit(0, Some(rows))?.collect().await?;
    outln!(
        "link table {} (version {}, {total} rows: {distinct} keys by batch{}):",
        short(Path::new(&p.link_uri)),
        table.version().unwrap_or(0),
        if total > rows {
            format!(", first {rows}")
        } else {
            String::new()
        }
    );
    outln!(
        "{}",
        deltalake::arrow::util::pretty::pretty_format_batches(&batches)?
    );
    Ok(())
}

fn short(p: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| p.strip_prefix(cwd).ok().map(|r| r.display().to_string()))
        .unwrap_or_else(|| p.display().to_string())
}
