//! `why`: for one key of a pipeline, each batch that reported it and what caused it.
//!
//! The batches come from the link table: the rows of the key (one per batch on a change
//! log; only the last batch on a `latest` table) and each batch's commit metadata
//! (`dlink`: every upstream's version range and pinned version, the lookup tables'
//! versions, the plugin's path and SHA-256). For each batch:
//!
//! - the upstream commits of its ranges: version, timestamp and operation from each
//!   commit's `commitInfo` in the upstream's log;
//! - the change rows that caused the key: the ranges' change feeds are read again and
//!   derived again with the plugin the batch ran (when the file at the recorded path, or
//!   the pipeline's plugin file, still has the recorded SHA-256; otherwise it says so),
//!   with lookups pinned at the batch's recorded versions, so the answer is as of that
//!   batch. For each upstream the key is attributed to, the rows are narrowed down by
//!   deriving halves of them (first along commit boundaries) until single rows are
//!   left; an update's pre- and post-image are shown together. A set of rows that
//!   causes the key while neither half does is reported as rows that cause it only
//!   together. The derivations per batch are bounded ([`Options::max_derive_calls`]),
//!   and the report says where the narrowing was cut.
//!
//! SQL pipelines are re-derived with their query when it is unchanged (same SHA-256).
//! The plugin runs with the pipeline file's current `[plugin.config]` and limits; the
//! change feeds are read with the catalog's current `columns`, `filter` and
//! `change_types`.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use deltalake::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use deltalake::arrow::compute::{cast, concat_batches, take_record_batch};
use deltalake::arrow::datatypes::{DataType, Int32Type, Int64Type, SchemaRef, TimeUnit};
use deltalake::arrow::row::{RowConverter, Rows, SortField};
use deltalake::datafusion::prelude::{ident, lit, Expr};
use deltalake::logstore::LogStoreRef;
use deltalake::DeltaTable;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::affected::{AffectedKeys, DefaultCause};
use crate::cdf::{self, CHANGE_TYPE, COMMIT_TIMESTAMP, COMMIT_VERSION};
use crate::config::{Derivation, KeyColumn, KeyType, Pipeline, PluginSpec, Upstream};
use crate::engine::error::{CommitError, Error, Result};
use crate::lookup::{TableCache, TableLookup};
use crate::plugin::{Plugin, PluginHost, UpstreamInput};
use crate::sink::{LinkTable, BATCH_ID, CHANGE_TS, UPDATED_AT, UPSTREAMS};
use crate::sql_pipeline::ChangeTable;

/// What `deriver()` records as the plugin path of a SQL pipeline's batches.
const SQL_DERIVER: &str = "[sql] query";

/// Limits of one `why`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// The newest batches that reported the key to explain. Default 10.
    pub batches: usize,
    /// Derivations per batch while narrowing down the change rows. Default 200.
    pub max_derive_calls: usize,
    /// Causing change rows listed per upstream and batch. Default 50.
    pub max_rows: usize,
    /// Upstream commits listed per upstream and batch (those with causing rows always
    /// are). Default 50.
    pub max_commits: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            batches: 10,
            max_derive_calls: 200,
            max_rows: 50,
            max_commits: 50,
        }
    }
}

// ---- the key -----------------------------------------------------------------------

mod key;
mod log;
mod narrow;
mod plugins;
#[cfg(test)]
mod tests;

use crate::cdf::history::{commit_info, commit_millis};
use crate::sink::meta::{batch_meta, BatchMeta, RecordedRange};
pub use key::{parse_key, Key, KeyValue};
use log::*;
use narrow::*;
use plugins::*;

// ---- the report --------------------------------------------------------------------

/// Everything `why` found about one key.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub pipeline: String,
    pub link_uri: String,
    /// `log` or `latest` (a `latest` table keeps only the last batch of each key).
    pub link_mode: String,
    pub key: Map<String, Value>,
    /// The batches of the link table that reported the key (not only those shown).
    pub batches_reporting: usize,
    /// The newest batches that reported the key, newest first.
    pub batches: Vec<BatchWhy>,
    pub notes: Vec<String>,
}

/// One batch that reported the key, and what caused it.
#[derive(Debug, Clone, Serialize)]
pub struct BatchWhy {
    pub batch_id: i64,
    /// The link table version of the batch's commit, when its log entry is still there.
    pub link_version: Option<i64>,
    /// `dlink_updated_at` of the key's row.
    pub committed_at: Option<String>,
    /// `dlink_change_ts`: the newest causing upstream commit, as the batch recorded it.
    pub change_ts: Option<String>,
    /// `dlink_upstreams`: the upstreams whose changes caused the key, as recorded.
    pub upstreams_recorded: Vec<String>,
    /// What derived the batch's keys.
    pub deriver: DeriverRef,
    pub rederivation: Rederivation,
    pub upstreams: Vec<UpstreamWhy>,
    /// Lookup-only tables and the versions the batch read them at.
    pub lookups: Vec<LookupVersion>,
    pub notes: Vec<String>,
}

/// The plugin (or SQL query) a batch ran, as its commit metadata records it.
#[derive(Debug, Clone, Serialize)]
pub struct DeriverRef {
    /// `plugin` or `sql`.
    pub kind: String,
    pub path: Option<String>,
    pub sha256: Option<String>,
    pub active_since_batch: Option<i64>,
    /// The file used to re-derive the batch (the recorded path, or the pipeline's
    /// plugin file when that has the recorded SHA-256).
    pub used: Option<String>,
}

/// Whether the batch could be derived again.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Rederivation {
    /// Derived again; the causing rows are those listed.
    Done { derive_calls: usize },
    /// Derived again, but the key is not among the keys derived.
    NotReproduced { derive_calls: usize, reason: String },
    /// Cannot be derived again (plugin not available, metadata or change files gone).
    Unavailable { reason: String },
    /// A derivation failed.
    Failed { derive_calls: usize, error: String },
}

/// A lookup-only table's version in a batch.
#[derive(Debug, Clone, Serialize)]
pub struct LookupVersion {
    pub table: String,
    pub version: i64,
}

/// One upstream's part of a batch.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamWhy {
    pub name: String,
    /// The batch's version range (none: no new version in the batch).
    pub start_version: Option<i64>,
    pub end_version: Option<i64>,
    /// The version lookups read.
    pub pinned_version: i64,
    /// Change rows the batch read.
    pub change_rows: u64,
    /// Whether the re-derivation attributes the key to this upstream (or, without
    /// one, whether the batch recorded it as a cause).
    pub caused: bool,
    /// The commits of the range (those with causing rows first; at most
    /// [`Options::max_commits`]).
    pub commits: Vec<UpstreamCommit>,
    /// Commits in the range.
    pub commits_total: usize,
    /// The columns of the change rows, in order.
    pub columns: Vec<String>,
    /// The change rows that cause the key (with the partner image of an update), at
    /// most [`Options::max_rows`].
    pub causing_rows: Vec<Map<String, Value>>,
    pub causing_rows_total: usize,
}

/// One upstream commit, from its `commitInfo`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UpstreamCommit {
    pub version: i64,
    /// RFC 3339, from `inCommitTimestamp` or `timestamp`.
    pub timestamp: Option<String>,
    pub operation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation_parameters: Option<Value>,
    /// Causing change rows of this commit.
    pub causing_rows: usize,
    /// Set when the log entry cannot be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl BatchWhy {
    /// A reporting batch before it is explained: what its row of the link table says.
    fn of(r: &Reported) -> BatchWhy {
        BatchWhy {
            batch_id: r.batch_id,
            link_version: None,
            committed_at: r.updated_at.and_then(micros_to_rfc3339),
            change_ts: r.change_ts.and_then(micros_to_rfc3339),
            upstreams_recorded: r.upstreams.clone(),
            deriver: DeriverRef {
                kind: "plugin".into(),
                path: None,
                sha256: None,
                active_since_batch: None,
                used: None,
            },
            rederivation: Rederivation::Unavailable {
                reason: String::new(),
            },
            upstreams: Vec::new(),
            lookups: Vec::new(),
            notes: Vec::new(),
        }
    }
}

/// Explains why pipeline `p` reported `key`: the newest `opts.batches` batches that
/// did, each with its upstream commits and the change rows that caused the key.
pub async fn explain(
    p: &Pipeline,
    key: &Key,
    opts: &Options,
    host: &PluginHost,
) -> Result<Explanation> {
    let link = LinkTable::open(p).await?;
    let mode = link.mode();
    let table = link
        .table()
        .cloned()
        .ok_or_else(|| crate::consumer::no_link_table(p))?;
    let rows = reported(p, &table, key).await?;
    let mut out = Explanation {
        pipeline: p.name.clone(),
        link_uri: p.link_uri.clone(),
        link_mode: mode.to_string(),
        key: key.to_json(),
        batches_reporting: rows.len(),
        batches: Vec::new(),
        notes: Vec::new(),
    };
    if mode == crate::config::LinkMode::Latest {
        out.notes.push(
            "the link table is in `latest` mode: it keeps only the last batch that reported each key"
                .into(),
        );
    }
    let shown: Vec<Reported> = rows.into_iter().take(opts.batches.max(1)).collect();
    if out.batches_reporting > shown.len() {
        out.notes.push(format!(
            "{} batches reported the key; the newest {} are shown (--batches N for more)",
            out.batches_reporting,
            shown.len()
        ));
    }
    let wanted: BTreeSet<i64> = shown.iter().map(|r| r.batch_id).collect();
    let (metas, log_gone) = batch_metas(p, &table, &wanted).await?;
    let mut run = Run {
        p,
        key,
        opts,
        host,
        plugins: Plugins::default(),
        cache: Arc::default(),
    };
    for r in &shown {
        let mut b = BatchWhy::of(r);
        match metas.get(&r.batch_id) {
            Some(meta) => explain_batch(&mut run, meta, &mut b).await?,
            None => {
                b.rederivation = Rederivation::Unavailable {
                    reason: if log_gone {
                        format!(
                            "the commit of batch {} is no longer in the link table's log (log retention / cleanup): \
                             its upstream ranges are unknown",
                            r.batch_id
                        )
                    } else {
                        format!(
                            "no commit of the link table records batch {}: its upstream ranges are unknown",
                            r.batch_id
                        )
                    },
                };
            }
        }
        out.batches.push(b);
    }
    Ok(out)
}

/// What the batches of one `why` share.
struct Run<'a> {
    p: &'a Pipeline,
    key: &'a Key,
    opts: &'a Options,
    host: &'a PluginHost,
    plugins: Plugins,
    /// Upstream and lookup tables opened at pinned versions.
    cache: TableCache,
}

/// Fills in `b` from the batch's metadata: its ranges, commits and, when it can be
/// derived again, the causing change rows.
async fn explain_batch(run: &mut Run<'_>, meta: &BatchMeta, b: &mut BatchWhy) -> Result<()> {
    let (recorded, unusable) = describe(run.p, meta, b).await?;
    b.rederivation = match rederive(run, meta, &recorded, unusable, b).await {
        Ok(r) | Err(r) => r,
    };
    trim_commits(b, run.opts);
    Ok(())
}

/// The batch as recorded: plugin, lookups, each upstream's range and its commits.
/// Returns the recorded ranges (in the pipeline's order, then those of upstreams the
/// pipeline no longer has) and what keeps the batch from being derived again.
async fn describe<'m>(
    p: &Pipeline,
    meta: &'m BatchMeta,
    b: &mut BatchWhy,
) -> Result<(Vec<&'m RecordedRange>, Vec<String>)> {
    b.link_version = Some(meta.link_version);
    b.deriver = DeriverRef {
        kind: if meta.plugin_path.as_deref() == Some(SQL_DERIVER) {
            "sql".into()
        } else {
            "plugin".into()
        },
        path: meta.plugin_path.clone(),
        sha256: meta.plugin_sha256.clone(),
        active_since_batch: meta.plugin_active_since,
        used: None,
    };
    b.lookups = meta
        .lookups
        .iter()
        .map(|(t, v)| LookupVersion {
            table: t.clone(),
            version: *v,
        })
        .collect();
    let mut recorded: Vec<&RecordedRange> = p
        .upstreams
        .iter()
        .filter_map(|u| meta.upstreams.iter().find(|r| r.name == u.name))
        .collect();
    let mut unusable = Vec::new();
    for r in &meta.upstreams {
        if !p.upstreams.iter().any(|u| u.name == r.name) {
            recorded.push(r);
            unusable.push(format!(
                "'{}' is no longer an upstream of the pipeline: its commits cannot be read",
                r.name
            ));
        }
    }
    for u in &p.upstreams {
        if !meta.upstreams.iter().any(|r| r.name == u.name) {
            unusable.push(format!(
                "'{}' was not an upstream of the pipeline at batch {}",
                u.name, meta.batch_id
            ));
        }
    }
    for r in &recorded {
        let commits = match (p.table(&r.name), r.range) {
            (Some(u), Some((s, e))) => upstream_commits(u, s, e).await?,
            _ => Vec::new(),
        };
        b.upstreams.push(UpstreamWhy {
            name: r.name.clone(),
            start_version: r.range.map(|(s, _)| s),
            end_version: r.range.map(|(_, e)| e),
            pinned_version: r.pinned,
            change_rows: r.change_rows,
            caused: b.upstreams_recorded.contains(&r.name),
            commits,
            commits_total: r.range.map_or(0, |(s, e)| (e - s + 1).max(0) as usize),
            columns: Vec::new(),
            causing_rows: Vec::new(),
            causing_rows_total: 0,
        });
    }
    b.notes.extend(unusable.iter().cloned());
    Ok((recorded, unusable))
}
