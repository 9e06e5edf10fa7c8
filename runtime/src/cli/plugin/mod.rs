//! `dlink-rt plugin new NAME` and `dlink-rt plugin test PLUGIN.wasm --changes FILE...`:
//! tooling for plugin authors.

mod new;
mod output;
mod templates;
mod test;

use std::path::PathBuf;

use dlink_rt::plugin::HostBuilder;
use std::process::ExitCode;

use dlink_rt::config::{KeyColumn, KeyType};

use super::{EXIT_CONFIG, EXIT_FAILED};

/// Write a new plugin crate, or run a plugin on change rows from JSON or CSV files.
#[derive(clap::Args, Debug)]
pub struct PluginArgs {
    #[command(subcommand)]
    command: PluginCommand,
}

#[derive(clap::Subcommand, Debug)]
enum PluginCommand {
    /// Write a plugin crate that builds as is, its logic in a function named `derive`.
    ///
    /// Writes the folder NAME (in --dir) with Cargo.toml (a cdylib depending on the
    /// dlink-plugin-sdk by path, its own workspace and the release profile of
    /// dlink-rt's plugins), src/lib.rs, README.md and one sample changes file per
    /// upstream, sample/UPSTREAM.json. Refuses to touch an existing folder. Then
    /// `cargo build --release --target wasm32-wasip2` in it builds NAME.wasm and
    /// `dlink-rt plugin test` runs it on the samples. Exit codes: 0 success, 1 the folder
    /// exists or cannot be written, 2 bad usage (also: no SDK found).
    New(NewArgs),
    /// Run a plugin on change rows given as JSON or CSV files and print the affected keys.
    ///
    /// Runs PLUGIN.wasm in the host's sandbox on one batch made of the --changes files,
    /// answers its lookups from the --table files (rows whose column is one of the keys,
    /// as a pipeline run does at the batch's version), checks its output like a pipeline
    /// run and prints the affected keys, sorted, with the upstreams that caused them
    /// and the newest commit time among those changes.
    ///
    /// A file is JSON (an array of objects, or one object per line) or CSV (a header
    /// row). Column types are inferred: integers long, other numbers double, true/false
    /// boolean, the rest string. In CSV an empty field is null and "" the empty string;
    /// a header `name:type` fixes a type (long, int, string, double, boolean). Change
    /// rows may give `_change_type` (insert, update_preimage, update_postimage, delete;
    /// default insert), `_commit_version` (default 1) and `_commit_timestamp` (e.g.
    /// 2024-05-01T12:00:00Z; default null).
    ///
    /// Exit codes: 0 success, 1 bad input or a plugin failure, 2 bad usage. The plugin's
    /// log lines show with DLINK_LOG=debug.
    Test(TestArgs),
}

// Options of `plugin new`.
#[derive(clap::Args, Debug)]
pub struct NewArgs {
    /// The crate's name, also its folder's: lower-case letters, digits, `_` and `-`,
    /// starting with a letter. The component is built as NAME.wasm (`-` becomes `_`).
    pub name: String,
    /// Create the crate folder in DIR.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
    /// A key column of the pipeline's link table, as COLUMN:TYPE with TYPE long, int or
    /// string; repeat for a composite key (up to 4). Default: id:long.
    #[arg(long = "key", value_name = "COLUMN:TYPE")]
    pub keys: Vec<String>,
    /// An upstream of the pipeline (its name in the catalog); repeat in the pipeline
    /// file's order. Default: one upstream named `source`.
    #[arg(long = "upstream", value_name = "NAME")]
    pub upstreams: Vec<String>,
    /// The dlink-plugin-sdk crate folder (plugins/sdk of a dlink-rt checkout). Default:
    /// plugins/sdk in the current folder or above, else the one dlink-rt was built from.
    #[arg(long, value_name = "PATH")]
    pub sdk: Option<PathBuf>,
}

// Options of `plugin test`.
#[derive(clap::Args, Debug)]
pub struct TestArgs {
    /// The plugin component (.wasm, built for wasm32-wasip2).
    pub plugin: PathBuf,
    /// Change rows of one upstream; the upstream is named after the file (spmaster.json
    /// is `spmaster`) unless given as UPSTREAM=FILE. One file per upstream, in the
    /// pipeline file's order.
    #[arg(long = "changes", value_name = "[UPSTREAM=]FILE", num_args = 1.., required = true)]
    pub changes: Vec<String>,
    /// An upstream with no change rows in this batch (the plugin still sees it).
    #[arg(long = "upstream", value_name = "NAME")]
    pub empty_upstreams: Vec<String>,
    /// Rows of a table the plugin looks up (an upstream or a lookup table) as of the
    /// batch's version, JSON or CSV; named after the file unless given as NAME=FILE.
    #[arg(long = "table", value_name = "[NAME=]FILE")]
    pub tables: Vec<String>,
    /// A key column the output must have, as COLUMN:TYPE with TYPE long, int or string
    /// (as the pipeline file's [link] keys); repeat for a composite key. Default: every
    /// output column but `_upstream` and `_commit_timestamp`, with its type.
    #[arg(long = "key", value_name = "COLUMN:TYPE")]
    pub keys: Vec<String>,
    /// The plugin's configuration ([plugin.config] of a pipeline file) as a JSON object.
    #[arg(long, value_name = "JSON", default_value = "{}")]
    pub config: String,
    /// The batch id handed to the plugin.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub batch_id: i64,
    /// The pipeline name handed to the plugin. Default: the plugin file's name.
    #[arg(long, value_name = "NAME")]
    pub pipeline: Option<String>,
    /// Print the keys as a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Why a subcommand stopped: bad usage (exit 2) or a failure (exit 1).
pub(super) enum Fail {
    Usage(String),
    Failed(String),
}

impl Fail {
    fn exit(self) -> ExitCode {
        let (code, msg) = match self {
            Fail::Usage(m) => (EXIT_CONFIG, m),
            Fail::Failed(m) => (EXIT_FAILED, m),
        };
        say!("error: {msg}");
        ExitCode::from(code)
    }
}

pub async fn plugin(args: PluginArgs, host: HostBuilder) -> ExitCode {
    let result = match args.command {
        PluginCommand::New(a) => new::new(&a),
        PluginCommand::Test(a) => test::test(&a, host).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.exit(),
    }
}

// ---------------------------------------------------------------------------------
// Shared: key columns
// ---------------------------------------------------------------------------------

pub(super) use dlink_rt::config::is_identifier;

pub(super) fn key_type_name(t: KeyType) -> &'static str {
    match t {
        KeyType::Long => "long",
        KeyType::Int => "int",
        KeyType::String => "string",
    }
}

/// `COLUMN:TYPE` as the pipeline file's `[link] keys` allow it.
pub(super) fn parse_key(s: &str) -> Result<KeyColumn, String> {
    let Some((name, ty)) = s.rsplit_once(':') else {
        return Err(format!(
            "--key '{s}': write COLUMN:TYPE with TYPE long, int or string, e.g. --key {s}:long"
        ));
    };
    let ty = match ty.trim().to_ascii_lowercase().as_str() {
        "long" | "bigint" => KeyType::Long,
        "int" | "integer" => KeyType::Int,
        "string" | "varchar" | "text" => KeyType::String,
        other => {
            return Err(format!(
                "--key '{s}': unknown type '{other}'; a key column is long, int or string"
            ))
        }
    };
    let name = name.trim();
    if !is_identifier(name) || name.starts_with("dlink_") {
        return Err(format!(
            "--key '{s}': key column '{name}' must be lower-case letters, digits and `_`, not starting with `dlink_`"
        ));
    }
    Ok(KeyColumn {
        name: name.to_string(),
        ty,
    })
}

pub(super) fn parse_keys(specs: &[String]) -> Result<Vec<KeyColumn>, String> {
    let mut keys: Vec<KeyColumn> = Vec::new();
    for s in specs {
        let k = parse_key(s)?;
        if keys.iter().any(|o| o.name == k.name) {
            return Err(format!("--key: column '{}' is given twice", k.name));
        }
        keys.push(k);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::new::{check_crate_name, sdk_dependency_path, type_name};
    use super::output::{render_json, render_table, KeyRow, KeyValue};
    use super::*;
    use std::path::Path;

    #[test]
    fn keys_parse_like_the_pipeline_file() {
        let k = parse_key("emp_id:long").unwrap();
        assert_eq!((k.name.as_str(), k.ty), ("emp_id", KeyType::Long));
        assert!(parse_key("emp_id").unwrap_err().contains("COLUMN:TYPE"));
        // Spark's and SQL's names, as the pipeline file takes them.
        assert_eq!(parse_key("emp_id:bigint").unwrap().ty, KeyType::Long);
        assert_eq!(parse_key("emp_id:INTEGER").unwrap().ty, KeyType::Int);
        assert!(parse_key("emp_id:bigin")
            .unwrap_err()
            .contains("long, int or string"));
        assert!(parse_key("Emp:int").unwrap_err().contains("lower-case"));
        assert!(parse_keys(&["a:int".into(), "a:long".into()])
            .unwrap_err()
            .contains("twice"));
    }

    #[test]
    fn crate_names() {
        assert!(check_crate_name("orders_by-customer").is_ok());
        for bad in ["", "1abc", "Abc", "a b", "fn", "test", "a.b"] {
            assert!(check_crate_name(bad).is_err(), "{bad}");
        }
        assert_eq!(type_name("orders_by-customer"), "OrdersByCustomer");
        assert_eq!(type_name("pipeline"), "PipelinePlugin");
    }

    #[test]
    fn sdk_path_is_relative_inside_the_checkout() {
        let sdk = Path::new("/repo/plugins/sdk");
        assert_eq!(
            sdk_dependency_path(Path::new("/repo/plugins/mine"), sdk),
            "../../plugins/sdk"
        );
        assert_eq!(
            sdk_dependency_path(Path::new("/elsewhere/mine"), sdk),
            "/repo/plugins/sdk"
        );
    }

    #[test]
    fn table_is_aligned_and_sorted_by_key() {
        let mut rows = vec![
            KeyRow {
                key: vec![KeyValue::Int(10)],
                upstreams: vec!["b".into()],
                change_ts: None,
            },
            KeyRow {
                key: vec![KeyValue::Int(9)],
                upstreams: vec!["a".into(), "b".into()],
                change_ts: Some(1_714_564_800_000_000),
            },
        ];
        rows.sort();
        let t = render_table(&["id".into()], &rows);
        assert_eq!(
            t,
            "id  dlink_upstreams  dlink_change_ts\n\
             9   a,b              2024-05-01T12:00:00Z\n\
             10  b                -\n"
        );
        let j = render_json(&["id".into()], &rows);
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v[0]["id"], 9);
        assert_eq!(v[1]["dlink_change_ts"], serde_json::Value::Null);
    }
}
