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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Dot,
    Mermaid,
}

pub fn graph(args: GraphArgs) -> ExitCode {
    let pipelines = match super::status::load(&args.path) {
        Ok(p) => p,
        Err(code) => return code,
    };
    out!(
        "{}",
        match args.format {
            Format::Dot => dlink_rt::graph::dot(&pipelines),
            Format::Mermaid => dlink_rt::graph::mermaid(&pipelines),
        }
    );
    ExitCode::SUCCESS
}
