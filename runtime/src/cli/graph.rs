//! `dlink-rt graph [PATH] [--format dot|mermaid]`

use std::path::PathBuf;
use std::process::ExitCode;

/// Print the graph of a folder's pipelines: upstream tables → pipelines → link tables.
#[derive(clap::Args, Debug)]
pub struct GraphArgs {
    /// A folder of pipeline files with its upstreams.toml, or one pipeline file.
    #[arg(default_value = "configs")]
    pub path: PathBuf,
    /// `dot` (Graphviz: `dlink-rt graph configs/ | dot -Tsvg > graph.svg`) or `mermaid`.
    #[arg(long, value_enum, default_value_t = Format::Dot)]
    pub format: Format,
    /// Colour each pipeline by its health and lag (green up to date, amber lagging,
    /// red when a table cannot be read), from the link tables and upstream logs as
    /// `status` reads them.
    #[arg(long)]
    pub status: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Dot,
    Mermaid,
}

pub async fn graph(args: GraphArgs) -> ExitCode {
    let pipelines = match super::status::load(&args.path) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let statuses = if args.status {
        futures::future::join_all(pipelines.iter().map(dlink_rt::status::of)).await
    } else {
        Vec::new()
    };
    out!(
        "{}",
        match args.format {
            Format::Dot => dlink_rt::graph::dot_with_status(&pipelines, &statuses),
            Format::Mermaid => dlink_rt::graph::mermaid_with_status(&pipelines, &statuses),
        }
    );
    ExitCode::SUCCESS
}
