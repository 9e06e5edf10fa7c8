//! The upstream catalog (`upstreams.toml`) and pipeline files, parsed with serde and
//! validated. Every problem names the file and line and says what to change; all
//! problems of a file are reported together, not only the first.

mod env;
mod error;
mod file;
mod load;
mod plugin;
mod unknown;

use file::{CatalogFile, PipelineFile};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

pub use env::{defaults_taken, substitute, substitute_values};
pub use error::ConfigError;

/// The default of a pipeline's `chunk_rows`.
pub const DEFAULT_CHUNK_ROWS: u64 = 65_536;

/// What loading configuration returns.
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;
pub use load::is_identifier;

/// Name of the catalog file looked up beside a pipeline file when it names none.
pub const DEFAULT_CATALOG: &str = "upstreams.toml";
/// Versions per upstream per batch when a pipeline file does not say.
pub const DEFAULT_BATCH_SIZE: i64 = 100;

/// A resolved upstream (or lookup) table of the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    /// Name in the catalog, e.g. `spmaster`.
    pub name: String,
    /// Table location: an absolute local path or a URL.
    pub uri: String,
    /// The table's key columns (documentation and validation only).
    pub keys: Vec<String>,
    /// First version a new pipeline reads. Default 0.
    pub start_version: i64,
    /// Columns to read; `None` reads all.
    pub columns: Option<Vec<String>>,
    /// An SQL predicate on the table's columns, applied inside the change-feed read.
    pub filter: Option<String>,
    /// The change types to keep; `None` keeps all four.
    pub change_types: Option<Vec<String>>,
    /// Object-store options (the catalog's `[storage]` and the table's own).
    pub storage: crate::storage::StorageOptions,
}

impl Upstream {
    /// An upstream with every option at its default (all columns, all change types,
    /// no filter, from version 0).
    pub fn new(name: impl Into<String>, uri: impl Into<String>) -> Self {
        Upstream {
            name: name.into(),
            uri: uri.into(),
            keys: Vec::new(),
            start_version: 0,
            columns: None,
            filter: None,
            change_types: None,
            storage: Default::default(),
        }
    }
}

/// The four change types of a Change Data Feed.
pub const CHANGE_TYPES: [&str; 4] = ["insert", "update_preimage", "update_postimage", "delete"];

/// The global catalog of upstream tables.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub path: PathBuf,
    pub upstreams: BTreeMap<String, Upstream>,
    pub lookups: LookupSettings,
    /// `[engine]`: the batch's key-set budget and spill folder.
    pub engine: EngineSettings,
    /// `[storage]`: object-store options of every table (link tables included).
    pub storage: crate::storage::StorageOptions,
}

/// How a plugin's lookups are answered (the catalog's `[lookups]` table).
///
/// Each looked-up (table, column) gets an index held in memory by the process, built
/// once the process asks for it again (`index_after`), kept across batches and advanced
/// along the table's change feed; a lookup is then a hash probe. An index that would
/// exceed `memory_mb` is dropped and that table's lookups are answered by scans (a
/// semi-join of the keys).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LookupSettings {
    /// Keep an index per looked-up table and column. Default true.
    pub index: bool,
    /// Memory budget of one index, in MiB. Default 512.
    pub memory_mb: u64,
    /// Lookups of a table and column the process answers by a scan before it builds
    /// their index. Default 1: a run that asks once (a catch-up or a daily increment
    /// of one batch) reads only the columns asked, instead of every row and column
    /// into an index it would not use again; from the second lookup on (more batches,
    /// `--follow`, another pipeline of the process), the index is built and kept.
    pub index_after: u32,
}

impl Default for LookupSettings {
    fn default() -> Self {
        LookupSettings {
            index: true,
            memory_mb: 512,
            index_after: 1,
        }
    }
}

/// How a batch holds its keys (the catalog's `[engine]` table).
///
/// A batch folds the keys of its plugin calls into one set as they come. Past
/// `memory_mb`, the set is written to a file under `spill_dir` and the rest of the batch
/// goes on in memory; the files are merged (DataFusion's aggregation, within the same
/// budget) into the batch's distinct keys on local disk, which the commit streams into
/// the link table. The files are removed when the batch ends, committed or not.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSettings {
    /// Memory budget of one batch's key set, in MiB, before it spills to local disk.
    /// Default 256 (about 6 million keys of one `long` column).
    pub memory_mb: u64,
    /// Folder of the spill files; relative paths resolve against the catalog file's
    /// folder. Default the system's temporary folder (`TMPDIR`).
    pub spill_dir: Option<PathBuf>,
}

/// The default of `[engine] memory_mb`.
pub const DEFAULT_ENGINE_MEMORY_MB: u64 = 256;

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            memory_mb: DEFAULT_ENGINE_MEMORY_MB,
            spill_dir: None,
        }
    }
}

impl EngineSettings {
    /// The key set's budget in bytes.
    pub fn memory_bytes(&self) -> usize {
        usize::try_from(self.memory_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX)
    }

    /// Where spill files go.
    pub fn spill_dir(&self) -> PathBuf {
        self.spill_dir.clone().unwrap_or_else(std::env::temp_dir)
    }
}

/// How a link table holds its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LinkMode {
    /// An append-only change log: one row per (key, batch), each batch one append
    /// commit; the cost of a batch follows the batch, not the table.
    Log,
    /// One row per key, holding the last batch that reported it (a MERGE per batch,
    /// rewriting the files that hold one of the batch's keys).
    Latest,
}

impl LinkMode {
    /// The spelling of pipeline files and of the link table's `dlink.link.mode`.
    pub fn as_str(&self) -> &'static str {
        match self {
            LinkMode::Log => "log",
            LinkMode::Latest => "latest",
        }
    }
}

impl std::fmt::Display for LinkMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Small files of a change log that trigger their merge after a commit.
pub const DEFAULT_MERGE_SMALL_FILES: usize = 64;

/// How long a change log keeps its batches (`[link] retain`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retain {
    /// The newest N batches.
    Batches(i64),
    /// The batches committed within this long.
    Age(std::time::Duration),
}

impl std::fmt::Display for Retain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Retain::Batches(n) => write!(f, "the newest {n} batches"),
            Retain::Age(d) => write!(f, "{}", humantime::format_duration(*d)),
        }
    }
}

/// A key column of a link table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyColumn {
    pub name: String,
    pub ty: KeyType,
}

/// Types a key column may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    /// 64-bit integer (Delta `long`; Spark's and SQL's `bigint` too).
    #[serde(alias = "bigint")]
    Long,
    /// 32-bit integer (Delta `integer`; `integer` too).
    #[serde(alias = "integer")]
    Int,
    /// UTF-8 text (Delta `string`; SQL's `varchar` and `text` too).
    #[serde(alias = "varchar", alias = "text")]
    String,
}

impl std::fmt::Display for KeyType {
    /// The spelling of pipeline files: `long`, `int`, `string`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KeyType::Long => "long",
            KeyType::Int => "int",
            KeyType::String => "string",
        })
    }
}

/// Per-call limits of a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Wall-time budget of one `init` or `derive` call, in milliseconds. Default 60000.
    pub timeout_ms: u64,
    /// Linear memory cap of the plugin instance, in MiB. Default 1024.
    pub memory_mb: u64,
    /// Cap on the bytes one `derive` may return, in MiB. Default 256.
    pub max_output_mb: u64,
    /// Log bytes a plugin may emit per call, in KiB; further lines are dropped with a
    /// warning. Default 1024.
    pub max_log_kb: u64,
    /// Rows one `lookup` may return; more fails the batch. Default 10000000.
    pub max_lookup_rows: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout_ms: 60_000,
            memory_mb: 1024,
            max_output_mb: 256,
            max_log_kb: 1024,
            max_lookup_rows: 10_000_000,
        }
    }
}

/// The plugin of a pipeline.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    /// Absolute path of the `.wasm` component.
    pub path: PathBuf,
    /// The `[plugin.config]` table as JSON, handed to the plugin's `init`.
    pub config_json: String,
    pub limits: Limits,
    /// Folders the plugin may read: (name, absolute host path), seen by the plugin
    /// read-only at `/<name>`.
    pub read_dirs: Vec<(String, PathBuf)>,
    /// Object-store options when `path` is in a bucket (`s3://...`): the catalog's
    /// `[storage]` and `[plugin.storage]`.
    pub storage: crate::storage::StorageOptions,
}

/// The pipeline files of a folder (every `.toml` but the catalog), sorted, and its
/// catalog.
pub fn folder_files(dir: &Path) -> Result<(Catalog, Vec<std::path::PathBuf>)> {
    let catalog = Catalog::load(&dir.join(DEFAULT_CATALOG))?;
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| ConfigError::one(format!("{}: cannot list the folder: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "toml")
                && p.file_name().is_some_and(|n| n != DEFAULT_CATALOG)
        })
        .collect();
    files.sort();
    Ok((catalog, files))
}

/// A resolved pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    /// The pipeline file.
    pub file: PathBuf,
    pub enabled: bool,
    /// Upstreams whose changes the pipeline reads, in file order.
    pub upstreams: Vec<Upstream>,
    /// Tables the plugin may only look up (pinned at the batch start, no CDF needed).
    pub lookups: Vec<Upstream>,
    /// Versions per upstream per batch. Default 100.
    pub batch_size: i64,
    /// Batches per run at most; `None` runs until caught up.
    pub max_batches: Option<u64>,
    /// Change rows per batch at most (a batch still takes at least one commit, and
    /// never splits one); `None` for no budget.
    pub max_batch_rows: Option<u64>,
    /// Change rows per plugin call at most: a batch over it calls the plugin once per
    /// chunk (an update's pre- and post-image never split), so what crosses the Wasm
    /// boundary at once, and the guest's memory, do not grow with the batch.
    pub chunk_rows: u64,
    /// How the keys are derived.
    pub derivation: Derivation,
    /// The line of the plugin path or SQL query in the pipeline file.
    pub derivation_line: usize,
    /// Link table location (absolute path or URL).
    pub link_uri: String,
    pub keys: Vec<KeyColumn>,
    /// The link table's mode as the file asks; `None` takes the existing table's (and
    /// [`LinkMode::Log`] for a new one).
    pub link_mode: Option<LinkMode>,
    /// `[link] consumers`: the registered consumers.
    pub consumers: Vec<String>,
    /// `[link] retain`: how long `compact` keeps a change log's batches.
    pub retain: Option<Retain>,
    /// `[link] compact_every`: how often `run --follow` compacts the link table.
    pub compact_every: Option<std::time::Duration>,
    /// `[link] merge_small_files`: a change log with this many small files has them
    /// merged after a commit (0: never; default [`DEFAULT_MERGE_SMALL_FILES`]).
    pub merge_small_files: usize,
    /// The catalog's `[lookups]` settings.
    pub lookup_settings: LookupSettings,
    /// The catalog's `[engine]` settings.
    pub engine: EngineSettings,
    /// Object-store options of the link table (the catalog's `[storage]` and
    /// `[link.storage]`).
    pub link_storage: crate::storage::StorageOptions,
}

/// How a pipeline derives its keys.
#[derive(Debug, Clone)]
pub enum Derivation {
    /// A WebAssembly component.
    Plugin(PluginSpec),
    /// A DataFusion SQL query over `<upstream>_changes` and `<upstream>`.
    Sql { query: String },
}

impl Pipeline {
    /// The plugin, for plugin pipelines.
    pub fn plugin(&self) -> Option<&PluginSpec> {
        match &self.derivation {
            Derivation::Plugin(p) => Some(p),
            Derivation::Sql { .. } => None,
        }
    }

    /// What derives the keys, for messages: the plugin path or `sql`.
    pub fn deriver(&self) -> String {
        match &self.derivation {
            Derivation::Plugin(p) => p.path.display().to_string(),
            Derivation::Sql { .. } => "[sql] query".to_string(),
        }
    }

    /// The upstream or lookup table called `name`.
    pub fn table(&self, name: &str) -> Option<&Upstream> {
        self.upstreams
            .iter()
            .chain(self.lookups.iter())
            .find(|u| u.name == name)
    }
}

// ---- loading -----------------------------------------------------------------------

/// The candidate closest to `given`, when one is close enough to be a typo of it
/// (for "did you mean" hints).
pub fn did_you_mean<'a, S: AsRef<str> + 'a>(
    given: &str,
    candidates: impl IntoIterator<Item = &'a S>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(given, c.as_ref()), c.as_ref()))
        .filter(|(score, c)| *score > 0.8 && *c != given)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// A file beside `path` whose name is close to its name: the file meant by a mistyped
/// path (`configs/emp_dpt.toml` -> `configs/emp_dept.toml`).
fn similar_file(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    let m = did_you_mean(name, &names)?;
    Some(path.with_file_name(m))
}

/// A configuration file's text, for line numbers.
struct Source {
    path: PathBuf,
    text: String,
}

impl Source {
    fn read(path: &Path) -> Result<Source> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let hint = match e.kind() {
                std::io::ErrorKind::NotFound => similar_file(path)
                    .map_or_else(String::new, |f| format!(" (did you mean {}?)", f.display())),
                _ => String::new(),
            };
            ConfigError::one(format!(
                "{}: cannot read the file: {e}{hint}",
                path.display()
            ))
        })?;
        Ok(Source {
            path: path.to_path_buf(),
            text,
        })
    }

    /// Parses the file, substitutes `${VAR}` in its string values (see [`env`]) and
    /// reads it as `T` (of JSON Schema `schema`). Every substitution problem is
    /// reported, each with its line; unknown keys are all reported too, but taken out
    /// so that the rest is read: they come back beside the value, for the caller to
    /// report with the problems it finds.
    fn parse<T: serde::de::DeserializeOwned>(
        &self,
        schema: &serde_json::Value,
    ) -> Result<(T, Vec<String>)> {
        let toml_err = |e: toml::de::Error| {
            let line = e.span().map(|s| self.line(s.start)).unwrap_or(1);
            ConfigError::one(format!(
                "{}:{line}: {}",
                self.path.display(),
                e.message().trim_end()
            ))
        };
        let mut document = toml::de::DeTable::parse(&self.text).map_err(toml_err)?;
        let mut problems = substitute_values(document.get_mut(), &|k| std::env::var(k).ok());
        // Every unknown key at once (and taken out, so that the rest is still read).
        problems.extend(unknown::take_unknown_keys(document.get_mut(), schema));
        problems.sort_by_key(|(offset, _)| *offset);
        let at = |(offset, msg): (usize, String)| {
            format!("{}:{}: {msg}", self.path.display(), self.line(offset))
        };
        if problems.iter().any(|(_, m)| !m.starts_with("unknown key")) {
            return Err(ConfigError {
                problems: problems.into_iter().map(at).collect(),
            });
        }
        let read = T::deserialize(toml::de::Deserializer::from(document)).map_err(toml_err);
        let unknown: Vec<String> = problems.into_iter().map(at).collect();
        match read {
            Ok(v) => Ok((v, unknown)),
            Err(mut e) => {
                e.problems.splice(0..0, unknown);
                Err(e)
            }
        }
    }

    fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|b| *b == b'\n')
            .count()
            + 1
    }

    fn at<T>(&self, s: &Spanned<T>, msg: impl std::fmt::Display) -> String {
        format!(
            "{}:{}: {msg}",
            self.path.display(),
            self.line(s.span().start)
        )
    }

    fn dir(&self) -> PathBuf {
        self.path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    }
}

/// JSON Schema of the catalog file (`upstreams.toml`).
pub fn catalog_schema() -> serde_json::Value {
    schemars::schema_for!(CatalogFile).to_value()
}

/// JSON Schema of a pipeline file.
pub fn pipeline_schema() -> serde_json::Value {
    schemars::schema_for!(PipelineFile).to_value()
}

/// [`catalog_schema`], made once.
fn catalog_schema_once() -> &'static serde_json::Value {
    static S: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    S.get_or_init(catalog_schema)
}

/// [`pipeline_schema`], made once.
fn pipeline_schema_once() -> &'static serde_json::Value {
    static S: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    S.get_or_init(pipeline_schema)
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
