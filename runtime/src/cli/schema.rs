//! `dlink-rt schema [catalog|pipeline] [--out DIR]`: JSON Schemas of the two file
//! kinds, for editors (e.g. `#:schema ./schemas/pipeline.schema.json` on the first line
//! of a TOML file, understood by Taplo / Even Better TOML).

use std::path::PathBuf;
use std::process::ExitCode;

use super::EXIT_FAILED;

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Kind {
    /// The upstream catalog (`upstreams.toml`).
    Catalog,
    /// A pipeline file.
    Pipeline,
}

#[derive(clap::Args, Debug)]
pub struct SchemaArgs {
    /// Which file kind; both (as one JSON object) when left out.
    pub kind: Option<Kind>,
    /// Write `catalog.schema.json` and `pipeline.schema.json` into this folder instead.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

pub fn schema(args: SchemaArgs) -> ExitCode {
    let catalog = dlink_rt::config::catalog_schema();
    let pipeline = dlink_rt::config::pipeline_schema();
    if let Some(dir) = args.out {
        for (name, schema) in [("catalog", &catalog), ("pipeline", &pipeline)] {
            let path = dir.join(format!("{name}.schema.json"));
            let text = match serde_json::to_string_pretty(schema) {
                Ok(t) => t + "\n",
                Err(e) => {
                    say!("error: {e}");
                    return ExitCode::from(EXIT_FAILED);
                }
            };
            if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, text))
            {
                say!("error: cannot write {}: {e}", path.display());
                return ExitCode::from(EXIT_FAILED);
            }
            outln!("wrote {}", path.display());
        }
        return ExitCode::SUCCESS;
    }
    let value = match args.kind {
        Some(Kind::Catalog) => catalog,
        Some(Kind::Pipeline) => pipeline,
        None => serde_json::json!({ "catalog": catalog, "pipeline": pipeline }),
    };
    match serde_json::to_string_pretty(&value) {
        Ok(t) => {
            outln!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            say!("error: {e}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}
