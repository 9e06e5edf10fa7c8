//! The serde shapes of the catalog and pipeline files (also their JSON Schemas).

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::{plugin, KeyType};

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct CatalogFile {
    /// `[upstreams.NAME]` tables.
    #[serde(default)]
    pub(super) upstreams: BTreeMap<String, UpstreamEntry>,
    /// How lookups of these tables are answered. Default: indexed, 512 MiB per index.
    #[serde(default)]
    pub(super) lookups: super::LookupSettings,
    /// How a batch holds its keys. Default: 256 MiB in memory, then spilled to the
    /// system's temporary folder.
    #[serde(default)]
    pub(super) engine: super::EngineSettings,
    /// Object-store options of every table of the catalog and of the link tables of
    /// its pipelines (`aws_endpoint_url`, `aws_region`, ...; `${VAR}` for credentials).
    /// Default none.
    #[serde(default)]
    pub(super) storage: BTreeMap<String, String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpstreamEntry {
    /// Table location; relative paths resolve against the catalog file's folder.
    #[schemars(with = "String")]
    pub(super) uri: Spanned<String>,
    /// Key columns of the table. Default none.
    #[serde(default)]
    pub(super) keys: Vec<String>,
    /// First version a new pipeline reads.
    #[serde(default = "defaults::start_version")]
    #[schemars(with = "i64")]
    pub(super) start_version: Spanned<i64>,
    /// Columns to read. Default all.
    pub(super) columns: Option<Vec<String>>,
    /// SQL predicate pushed into the change-feed read. Default none.
    #[schemars(with = "Option<String>")]
    pub(super) filter: Option<Spanned<String>>,
    /// Change types to keep. Default all four.
    #[schemars(with = "Option<Vec<String>>", extend("default" = super::CHANGE_TYPES))]
    pub(super) change_types: Option<Spanned<Vec<String>>>,
    /// Free text. Default none.
    #[allow(dead_code)]
    pub(super) description: Option<String>,
    /// Object-store options of this table, over the catalog's `[storage]`.
    #[serde(default)]
    pub(super) storage: BTreeMap<String, String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PipelineFile {
    #[schemars(with = "String")]
    pub(super) name: Spanned<String>,
    /// Whether `run FOLDER` and the service run this pipeline.
    #[serde(default = "defaults::enabled")]
    pub(super) enabled: bool,
    /// Catalog file, beside the pipeline file.
    #[serde(default = "defaults::catalog")]
    pub(super) catalog: String,
    #[schemars(with = "Vec<String>")]
    pub(super) upstreams: Spanned<Vec<Spanned<String>>>,
    /// Lookup-only tables. Default none.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub(super) lookups: Vec<Spanned<String>>,
    /// Versions per upstream per batch.
    #[serde(default = "defaults::batch_size")]
    #[schemars(with = "i64")]
    pub(super) batch_size: Spanned<i64>,
    /// Default unlimited.
    pub(super) max_batches: Option<u64>,
    /// Default unlimited.
    #[schemars(with = "Option<u64>")]
    pub(super) max_batch_rows: Option<Spanned<u64>>,
    /// Change rows per plugin call at most (a batch over it is derived in chunks, an
    /// update's pre- and post-image never split). Default 65536.
    #[schemars(with = "Option<u64>")]
    pub(super) chunk_rows: Option<Spanned<u64>>,
    /// The plugin deriving the keys; or `sql`.
    pub(super) plugin: Option<plugin::PluginSection>,
    /// The SQL query deriving the keys; or `plugin`.
    pub(super) sql: Option<SqlSection>,
    pub(super) link: LinkSection,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct SqlSection {
    /// Runs over `<upstream>_changes` and `<upstream>` (as of the pinned version).
    #[schemars(with = "String")]
    pub(super) query: Spanned<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LinkSection {
    #[schemars(with = "String")]
    pub(super) uri: Spanned<String>,
    #[schemars(with = "Vec<KeySpec>")]
    pub(super) keys: Spanned<Vec<KeySpec>>,
    /// `log` (one row per key and batch, appended) or `latest` (one row per key,
    /// merged). Default: the mode of the existing link table, `log` for a new one.
    #[schemars(with = "Option<super::LinkMode>")]
    pub(super) mode: Option<Spanned<super::LinkMode>>,
    /// The registered consumers of the link table (`keys --consumer`, `ack`): listed by
    /// `dlink-rt consumers`. Default none.
    #[serde(default)]
    pub(super) consumers: Vec<String>,
    /// How long `dlink-rt compact` keeps a change log's batches: a duration (`"30d"`,
    /// `"12h"`) or a number of batches (`500`). Batches a registered consumer has not
    /// acknowledged are kept whatever their age. Default: keep every batch.
    #[schemars(with = "Option<RetainSpec>")]
    pub(super) retain: Option<Spanned<RetainSpec>>,
    /// `run --follow` compacts the link table this often (`"1h"`). Default never.
    #[schemars(with = "Option<String>")]
    pub(super) compact_every: Option<Spanned<String>>,
    /// A change log with this many small files (under 4 MiB) has them merged after a
    /// commit, so that a commit's cost stays bounded as the log grows. 0: never.
    #[serde(default = "defaults::merge_small_files")]
    pub(super) merge_small_files: usize,
    /// Object-store options of the link table, over the catalog's `[storage]`.
    #[serde(default)]
    pub(super) storage: BTreeMap<String, String>,
}

/// `[link] retain`: a duration or a batch count.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub(super) enum RetainSpec {
    Batches(i64),
    Age(String),
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct KeySpec {
    #[schemars(with = "String")]
    pub(super) name: Spanned<String>,
    #[serde(rename = "type")]
    pub(super) ty: KeyType,
}

/// The defaults of the files' fields, in one place: serde fills them in and the JSON
/// Schema shows them.
mod defaults {
    use toml::Spanned;

    pub(super) fn start_version() -> Spanned<i64> {
        Spanned::new(0..0, 0)
    }

    pub(super) fn enabled() -> bool {
        true
    }

    pub(super) fn catalog() -> String {
        super::super::DEFAULT_CATALOG.to_string()
    }

    pub(super) fn batch_size() -> Spanned<i64> {
        Spanned::new(0..0, super::super::DEFAULT_BATCH_SIZE)
    }

    pub(super) fn merge_small_files() -> usize {
        super::super::DEFAULT_MERGE_SMALL_FILES
    }
}
