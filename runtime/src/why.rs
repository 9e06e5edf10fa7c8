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
use deltalake::{DeltaTable, DeltaTableBuilder};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::cdf::{self, CHANGE_TYPE, COMMIT_TIMESTAMP, COMMIT_VERSION};
use crate::config::{Derivation, KeyColumn, KeyType, Pipeline, PluginSpec, Upstream};
use crate::error::{Error, Result};
use crate::keys::{AffectedKeys, DefaultCause};
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

/// The value of one key column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum KeyValue {
    Long(i64),
    Int(i32),
    String(String),
}

impl KeyValue {
    /// Parses `text` as a value of key column `k`.
    pub fn parse(k: &KeyColumn, text: &str) -> std::result::Result<KeyValue, String> {
        let bad = |what: &str| {
            format!(
                "key column '{}' is {} ({what}): '{text}' is not one",
                k.name, k.ty
            )
        };
        match k.ty {
            KeyType::Long => text
                .trim()
                .parse()
                .map(KeyValue::Long)
                .map_err(|_| bad("a 64-bit integer")),
            KeyType::Int => text
                .trim()
                .parse()
                .map(KeyValue::Int)
                .map_err(|_| bad("a 32-bit integer")),
            KeyType::String => Ok(KeyValue::String(text.to_string())),
        }
    }

    fn lit(&self) -> Expr {
        match self {
            KeyValue::Long(v) => lit(*v),
            KeyValue::Int(v) => lit(*v),
            KeyValue::String(s) => lit(s.clone()),
        }
    }

    /// Whether row `row` of `col` holds this value.
    fn is_at(&self, col: &dyn Array, row: usize) -> bool {
        if col.is_null(row) {
            return false;
        }
        match self {
            KeyValue::Long(v) => col
                .as_primitive_opt::<Int64Type>()
                .is_some_and(|c| c.value(row) == *v),
            KeyValue::Int(v) => col
                .as_primitive_opt::<Int32Type>()
                .is_some_and(|c| c.value(row) == *v),
            KeyValue::String(v) => col
                .as_string_opt::<i32>()
                .is_some_and(|c| c.value(row) == v),
        }
    }
}

impl std::fmt::Display for KeyValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyValue::Long(v) => write!(f, "{v}"),
            KeyValue::Int(v) => write!(f, "{v}"),
            KeyValue::String(s) => write!(f, "{s:?}"),
        }
    }
}

/// A key of a pipeline: one value per key column, in the pipeline's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    pub columns: Vec<(String, KeyValue)>,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .columns
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect();
        f.write_str(&parts.join(", "))
    }
}

impl Key {
    /// The key as a JSON object.
    pub fn to_json(&self) -> Map<String, Value> {
        self.columns
            .iter()
            .map(|(n, v)| (n.clone(), serde_json::to_value(v).unwrap_or(Value::Null)))
            .collect()
    }

    /// The row of `keys` holding this key.
    fn position_in(&self, keys: &AffectedKeys) -> Option<usize> {
        (0..keys.len()).find(|row| {
            self.columns
                .iter()
                .zip(&keys.columns)
                .all(|((_, v), c)| v.is_at(c.as_ref(), *row))
        })
    }

    fn predicate(&self) -> Option<Expr> {
        self.columns
            .iter()
            .map(|(n, v)| ident(n.clone()).eq(v.lit()))
            .reduce(Expr::and)
    }
}

/// Parses a key given as one value per key column in the pipeline's order (`values`)
/// or as `COLUMN=VALUE` pairs (`named`), one of the two. Reports every problem.
pub fn parse_key(keys: &[KeyColumn], values: &[String], named: &[String]) -> Result<Key> {
    let columns = keys
        .iter()
        .map(|k| format!("{} {}", k.name, k.ty))
        .collect::<Vec<_>>()
        .join(", ");
    let mut problems = Vec::new();
    let mut found: Vec<Option<KeyValue>> = vec![None; keys.len()];
    match (values.is_empty(), named.is_empty()) {
        (true, true) => problems.push(format!(
            "give the key: one value per key column ({columns}), or --key COLUMN=VALUE for each"
        )),
        (false, false) => problems
            .push("give the key either as values or with --key COLUMN=VALUE, not both".to_string()),
        (false, true) if values.len() != keys.len() => problems.push(format!(
            "the pipeline's key has {} column(s) ({columns}) but {} value(s) were given; \
             give one value per column in that order, or --key COLUMN=VALUE for each",
            keys.len(),
            values.len()
        )),
        (false, true) => {
            for ((k, text), slot) in keys.iter().zip(values).zip(found.iter_mut()) {
                match KeyValue::parse(k, text) {
                    Ok(v) => *slot = Some(v),
                    Err(e) => problems.push(e),
                }
            }
        }
        (true, false) => {
            for pair in named {
                let Some((name, text)) = pair.split_once('=') else {
                    problems.push(format!(
                        "--key {pair}: give COLUMN=VALUE (key columns: {columns})"
                    ));
                    continue;
                };
                let name = name.trim();
                let Some(i) = keys.iter().position(|k| k.name == name) else {
                    problems.push(format!(
                        "--key {pair}: '{name}' is not a key column of the pipeline (key columns: {columns})"
                    ));
                    continue;
                };
                if found[i].is_some() {
                    problems.push(format!("--key {pair}: key column '{name}' is given twice"));
                    continue;
                }
                match KeyValue::parse(&keys[i], text) {
                    Ok(v) => found[i] = Some(v),
                    Err(e) => problems.push(e),
                }
            }
            let missing: Vec<&str> = keys
                .iter()
                .zip(&found)
                .filter(|(_, v)| v.is_none())
                .map(|(k, _)| k.name.as_str())
                .collect();
            if problems.is_empty() && !missing.is_empty() {
                problems.push(format!(
                    "the key has no value for column(s) {}: give --key COLUMN=VALUE for each of {columns}",
                    missing.join(", ")
                ));
            }
        }
    }
    if !problems.is_empty() {
        return Err(Error::Config { problems });
    }
    Ok(Key {
        columns: keys
            .iter()
            .zip(found)
            .filter_map(|(k, v)| v.map(|v| (k.name.clone(), v)))
            .collect(),
    })
}

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

// ---- commit logs (pure) ------------------------------------------------------------

/// The `commitInfo` action of a commit entry.
fn commit_info(commit: &[u8]) -> Option<Value> {
    commit
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .filter_map(|l| serde_json::from_slice::<Value>(l).ok())
        .find_map(|mut v| v.get_mut("commitInfo").map(Value::take))
}

fn millis_to_rfc3339(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339())
}

fn micros_to_rfc3339(us: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_micros(us).map(|t| t.to_rfc3339())
}

/// An upstream commit's version, time and operation from its log entry.
pub(crate) fn upstream_commit(version: i64, commit: &[u8]) -> UpstreamCommit {
    let info = commit_info(commit);
    let get = |k: &str| info.as_ref().and_then(|i| i.get(k));
    let ts = get("inCommitTimestamp")
        .and_then(Value::as_i64)
        .or_else(|| get("timestamp").and_then(Value::as_i64));
    UpstreamCommit {
        version,
        timestamp: ts.and_then(millis_to_rfc3339),
        operation: get("operation").and_then(Value::as_str).map(String::from),
        operation_parameters: get("operationParameters")
            .filter(|v| v.as_object().is_some_and(|o| !o.is_empty()))
            .cloned(),
        causing_rows: 0,
        note: info
            .is_none()
            .then(|| "the commit has no commitInfo".to_string()),
    }
}

/// One upstream's part of a batch as its commit metadata records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordedRange {
    pub name: String,
    pub range: Option<(i64, i64)>,
    pub pinned: i64,
    pub change_rows: u64,
}

/// A batch's commit metadata (`dlink`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct BatchMeta {
    pub batch_id: i64,
    pub upstreams: Vec<RecordedRange>,
    pub lookups: Vec<(String, i64)>,
    pub plugin_path: Option<String>,
    pub plugin_sha256: Option<String>,
    pub plugin_active_since: Option<i64>,
    /// The link table's version of the commit (set by the reader).
    pub link_version: i64,
}

/// The batch a link-table commit entry committed, if it is a batch commit (not a reset,
/// a compaction or a consumer's ack).
pub(crate) fn batch_meta(commit: &[u8]) -> Option<BatchMeta> {
    let info = commit_info(commit)?;
    let d = info.get("dlink")?;
    if d.get("reset").is_some() {
        return None;
    }
    let batch_id = d.get("batch_id")?.as_i64()?;
    let ups = d.get("upstreams")?.as_object()?;
    let mut upstreams: Vec<RecordedRange> = ups
        .iter()
        .map(|(name, u)| {
            let v = |k: &str| u.get(k).and_then(Value::as_i64);
            RecordedRange {
                name: name.clone(),
                range: v("start_version").zip(v("end_version")),
                pinned: v("pinned_version").unwrap_or(-1),
                change_rows: u.get("change_rows").and_then(Value::as_u64).unwrap_or(0),
            }
        })
        .collect();
    upstreams.sort_by(|a, b| a.name.cmp(&b.name));
    let mut lookups: Vec<(String, i64)> = d
        .get("lookups")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(n, v)| v.as_i64().map(|v| (n.clone(), v)))
                .collect()
        })
        .unwrap_or_default();
    lookups.sort();
    let plugin = d.get("plugin");
    let pget = |k: &str| plugin.and_then(|p| p.get(k));
    Some(BatchMeta {
        batch_id,
        upstreams,
        lookups,
        plugin_path: pget("path").and_then(Value::as_str).map(String::from),
        plugin_sha256: pget("sha256").and_then(Value::as_str).map(String::from),
        plugin_active_since: pget("active_since_batch").and_then(Value::as_i64),
        link_version: -1,
    })
}

// ---- narrowing (pure) --------------------------------------------------------------

/// Where to split `rows` (row numbers sorted by commit version, `versions` by row):
/// the commit boundary nearest the middle, else the middle.
fn split_point(rows: &[u32], versions: &[i64]) -> usize {
    let half = rows.len() / 2;
    let v = |i: usize| versions[rows[i] as usize];
    (1..rows.len())
        .filter(|i| v(*i) != v(*i - 1))
        .min_by_key(|i| i.abs_diff(half))
        .unwrap_or(half.max(1))
}

/// For each update image among `found`, its partner image of the same commit: the
/// opposite image that agrees with it on `keys` (all of them), or, without keys, on
/// the most columns. Returns `found` with the partners, sorted by version, then
/// pre-image before post-image, then row.
fn with_partners(
    found: &[u32],
    versions: &[i64],
    types: &[&str],
    columns: &[Rows],
    keys: &[usize],
) -> Vec<u32> {
    let mut out: BTreeSet<u32> = found.iter().copied().collect();
    let same = |c: usize, a: usize, b: usize| columns[c].row(a) == columns[c].row(b);
    for &r in found {
        let r = r as usize;
        let partner_type = match types[r] {
            "update_preimage" => "update_postimage",
            "update_postimage" => "update_preimage",
            _ => continue,
        };
        let candidates = (0..types.len())
            .filter(|j| *j != r && versions[*j] == versions[r] && types[*j] == partner_type);
        let best = if keys.is_empty() {
            candidates
                .map(|j| ((0..columns.len()).filter(|c| same(*c, r, j)).count(), j))
                .filter(|(score, _)| *score > 0)
                .max_by_key(|(score, j)| (*score, std::cmp::Reverse(j.abs_diff(r))))
                .map(|(_, j)| j)
        } else {
            candidates
                .filter(|j| keys.iter().all(|c| same(*c, r, *j)))
                .min_by_key(|j| j.abs_diff(r))
        };
        if let Some(j) = best {
            out.insert(j as u32);
        }
    }
    let rank = |t: &str| match t {
        "update_preimage" => 0,
        "update_postimage" => 1,
        _ => 2,
    };
    let mut out: Vec<u32> = out.into_iter().collect();
    out.sort_by_key(|r| (versions[*r as usize], rank(types[*r as usize]), *r));
    out
}

// ---- reading the link table --------------------------------------------------------

/// One row of the key in the link table.
#[derive(Debug, Clone)]
struct Reported {
    batch_id: i64,
    upstreams: Vec<String>,
    change_ts: Option<i64>,
    updated_at: Option<i64>,
}

fn link_err(p: &Pipeline, message: impl std::fmt::Display) -> Error {
    Error::Link {
        pipeline: p.name.clone(),
        uri: p.link_uri.clone(),
        message: message.to_string(),
    }
}

/// The rows of `key` in the link table, newest batch first.
async fn reported(p: &Pipeline, table: &DeltaTable, key: &Key) -> Result<Vec<Reported>> {
    let err = |m: String| link_err(p, m);
    let ctx = cdf::session();
    let provider = table
        .table_provider()
        .await
        .map_err(|e| err(e.to_string()))?;
    let mut df = ctx.read_table(provider).map_err(|e| err(e.to_string()))?;
    if let Some(pred) = key.predicate() {
        df = df.filter(pred).map_err(|e| err(e.to_string()))?;
    }
    let df = df
        .select_columns(&[BATCH_ID, UPSTREAMS, CHANGE_TS, UPDATED_AT])
        .map_err(|e| err(e.to_string()))?;
    let batches = df
        .collect()
        .await
        .map_err(|e| err(format!("reading the rows of key {key}: {e}")))?;
    let ts_type = DataType::Timestamp(TimeUnit::Microsecond, None);
    let mut out = Vec::new();
    for b in batches {
        let col = |name: &str| {
            b.column_by_name(name)
                .cloned()
                .ok_or_else(|| err(format!("the link table has no column {name}")))
        };
        let ids = cast(&col(BATCH_ID)?, &DataType::Int64).map_err(|e| err(e.to_string()))?;
        let ids = ids.as_primitive::<Int64Type>();
        let ts = |name: &str| -> Result<ArrayRef> {
            let c = cast(&col(name)?, &ts_type).map_err(|e| err(e.to_string()))?;
            cast(&c, &DataType::Int64).map_err(|e| err(e.to_string()))
        };
        let change_ts = ts(CHANGE_TS)?;
        let change_ts = change_ts.as_primitive::<Int64Type>();
        let updated = ts(UPDATED_AT)?;
        let updated = updated.as_primitive::<Int64Type>();
        let ups = col(UPSTREAMS)?;
        let ups = ups
            .as_list_opt::<i32>()
            .ok_or_else(|| err(format!("{UPSTREAMS} is not a list")))?;
        for i in 0..b.num_rows() {
            let names = if ups.is_null(i) {
                Vec::new()
            } else {
                let v = cast(&ups.value(i), &DataType::Utf8).map_err(|e| err(e.to_string()))?;
                let v = v.as_string::<i32>();
                (0..v.len()).map(|j| v.value(j).to_string()).collect()
            };
            out.push(Reported {
                batch_id: ids.value(i),
                upstreams: names,
                change_ts: change_ts.is_valid(i).then(|| change_ts.value(i)),
                updated_at: updated.is_valid(i).then(|| updated.value(i)),
            });
        }
    }
    out.sort_by_key(|r| std::cmp::Reverse(r.batch_id));
    out.dedup_by_key(|r| r.batch_id);
    Ok(out)
}

/// The commit metadata of the `wanted` batches, walking the link table's log back from
/// its latest version. Also says whether the walk ran into removed log entries.
async fn batch_metas(
    p: &Pipeline,
    table: &DeltaTable,
    wanted: &BTreeSet<i64>,
) -> Result<(HashMap<i64, BatchMeta>, bool)> {
    let mut found = HashMap::new();
    let Some(min) = wanted.first().copied() else {
        return Ok((found, false));
    };
    let latest = table
        .version()
        .map(|v| v as i64)
        .ok_or_else(|| link_err(p, "the link table has no version"))?;
    let log = table.log_store();
    const CHUNK: i64 = 32;
    let mut top = latest;
    while top >= 0 {
        let low = (top - CHUNK + 1).max(0);
        let entries = futures::future::join_all((low..=top).rev().map(|v| {
            let log = log.clone();
            async move { (v, read_entry(&log, v).await) }
        }))
        .await;
        for (v, entry) in entries {
            let bytes = match entry {
                Ok(Some(b)) => b,
                Ok(None) => return Ok((found, true)),
                Err(e) => {
                    return Err(link_err(
                        p,
                        format!("cannot read the log entry of link table version {v}: {e}"),
                    ))
                }
            };
            if let Some(mut m) = batch_meta(&bytes) {
                if m.batch_id < min {
                    return Ok((found, false));
                }
                if wanted.contains(&m.batch_id) {
                    m.link_version = v;
                    found.insert(m.batch_id, m);
                    if found.len() == wanted.len() {
                        return Ok((found, false));
                    }
                }
            }
        }
        top = low - 1;
    }
    Ok((found, false))
}

/// The log entry of `version`, `None` when it is gone.
async fn read_entry(
    log: &LogStoreRef,
    version: i64,
) -> std::result::Result<Option<Vec<u8>>, String> {
    let v = u64::try_from(version).map_err(|_| format!("no version {version}"))?;
    log.read_commit_entry(v)
        .await
        .map(|b| b.map(|b| b.to_vec()))
        .map_err(|e| e.to_string())
}

// ---- re-deriving a batch -----------------------------------------------------------

/// One upstream's change rows of the batch, read again.
struct Input {
    upstream: Upstream,
    range: Option<(i64, i64)>,
    pinned: i64,
    schema: SchemaRef,
    /// Every change row of the range (none without a range).
    rows: RecordBatch,
}

/// What derives the batch again.
enum Engine {
    Plugin {
        plugin: Box<Plugin>,
        lookup: Arc<TableLookup>,
    },
    Sql {
        query: String,
        pinned: Vec<(Upstream, i64)>,
        cache: TableCache,
    },
}

/// A batch being derived again, counting derivations.
struct Rederive<'a> {
    p: &'a Pipeline,
    key: &'a Key,
    batch_id: i64,
    inputs: Vec<Input>,
    engine: Engine,
    calls: usize,
    budget: usize,
}

/// What narrowing one upstream's rows found.
#[derive(Default)]
struct Narrowed {
    /// Rows that cause the key on their own.
    rows: Vec<u32>,
    /// Sets of rows that cause it together while no half of them does.
    joint: Vec<Vec<u32>>,
    /// Sets not narrowed further: the derivation budget ran out.
    cut: Vec<Vec<u32>>,
}

impl Rederive<'_> {
    /// Derives the batch with every upstream's rows (`only` = None), or with `rows` as
    /// upstream `i`'s change rows and none for the others. Returns the upstreams the
    /// key is attributed to, or `None` when it is not among the keys derived.
    async fn derive(
        &mut self,
        only: Option<(usize, &RecordBatch)>,
    ) -> std::result::Result<Option<Vec<String>>, String> {
        self.calls += 1;
        let Rederive {
            p,
            key,
            batch_id,
            inputs,
            engine,
            ..
        } = self;
        let names: Vec<&str> = p.upstreams.iter().map(|u| u.name.as_str()).collect();
        let rows_of = |i: usize, input: &'_ Input| -> Option<RecordBatch> {
            let r = match only {
                None => Some(&input.rows),
                Some((j, r)) if j == i => Some(r),
                Some(_) => None,
            };
            r.filter(|r| r.num_rows() > 0).cloned()
        };
        let keys: AffectedKeys = match engine {
            Engine::Plugin { plugin, lookup } => {
                let mut ups = Vec::with_capacity(inputs.len());
                for (i, input) in inputs.iter().enumerate() {
                    let changes = match rows_of(i, input) {
                        Some(r) => crate::ipc::encode(&input.schema, &[r]).map_err(|e| {
                            format!(
                                "cannot encode the changes of '{}': {e}",
                                input.upstream.name
                            )
                        })?,
                        None => Vec::new(),
                    };
                    let (start, end) = input.range.unwrap_or((input.pinned + 1, input.pinned));
                    ups.push(UpstreamInput {
                        name: input.upstream.name.clone(),
                        start_version: start,
                        end_version: end,
                        changes,
                    });
                }
                let lookup: Arc<dyn crate::plugin::Lookup> = lookup.clone();
                let out = plugin
                    .derive(&p.name, *batch_id, ups, lookup)
                    .await
                    .map_err(|e| e.to_string())?;
                crate::keys::collect(&out, &p.keys, &names)?
            }
            Engine::Sql {
                query,
                pinned,
                cache,
            } => {
                let mut tables = Vec::with_capacity(inputs.len());
                let mut default = DefaultCause::default();
                for (i, input) in inputs.iter().enumerate() {
                    let batches: Vec<RecordBatch> = rows_of(i, input).into_iter().collect();
                    if !batches.is_empty() {
                        default.upstreams.push(input.upstream.name.clone());
                        default.change_ts = default.change_ts.max(cdf::newest_commit_ts(&batches));
                    }
                    tables.push(ChangeTable {
                        name: &input.upstream.name,
                        schema: input.schema.clone(),
                        batches,
                    });
                }
                let (schema, rows) =
                    crate::sql_pipeline::derive(query, tables, pinned, cache).await?;
                crate::keys::collect_batches(&schema, &rows, &p.keys, &names, Some(&default))?
            }
        };
        Ok(key.position_in(&keys).map(|i| keys.upstreams[i].to_vec()))
    }

    /// Narrows down the rows of upstream `i` that cause the key (given that all of
    /// them, alone, do): halves along commit boundaries first, then rows.
    async fn narrow(
        &mut self,
        i: usize,
        versions: &[i64],
    ) -> std::result::Result<Narrowed, String> {
        let all = self.inputs[i].rows.clone();
        let mut order: Vec<u32> = (0..all.num_rows() as u32).collect();
        order.sort_by_key(|r| (versions[*r as usize], *r));
        let mut out = Narrowed::default();
        let mut stack = vec![(0usize, order.len())];
        let take = |rows: &[u32]| {
            take_record_batch(&all, &UInt32Array::from(rows.to_vec())).map_err(|e| e.to_string())
        };
        while let Some((lo, hi)) = stack.pop() {
            if hi - lo <= 1 {
                out.rows.extend_from_slice(&order[lo..hi]);
                continue;
            }
            if self.calls + 2 > self.budget {
                out.cut.push(order[lo..hi].to_vec());
                continue;
            }
            let mid = lo + split_point(&order[lo..hi], versions);
            let left = take(&order[lo..mid])?;
            let right = take(&order[mid..hi])?;
            let l = self.derive(Some((i, &left))).await?.is_some();
            let r = self.derive(Some((i, &right))).await?.is_some();
            if !l && !r {
                out.joint.push(order[lo..hi].to_vec());
            }
            if r {
                stack.push((mid, hi));
            }
            if l {
                stack.push((lo, mid));
            }
        }
        Ok(out)
    }
}

/// The `_commit_version` of each row.
fn commit_versions(rows: &RecordBatch) -> std::result::Result<Vec<i64>, String> {
    let c = rows
        .column_by_name(COMMIT_VERSION)
        .ok_or_else(|| format!("the change rows have no {COMMIT_VERSION}"))?;
    let c = cast(c, &DataType::Int64).map_err(|e| e.to_string())?;
    let c = c.as_primitive::<Int64Type>();
    Ok((0..c.len())
        .map(|i| if c.is_valid(i) { c.value(i) } else { -1 })
        .collect())
}

/// The `_change_type` of each row.
fn change_types(rows: &RecordBatch) -> std::result::Result<Vec<String>, String> {
    let c = rows
        .column_by_name(CHANGE_TYPE)
        .ok_or_else(|| format!("the change rows have no {CHANGE_TYPE}"))?;
    let c = cast(c, &DataType::Utf8).map_err(|e| e.to_string())?;
    let c = c.as_string::<i32>();
    Ok((0..c.len()).map(|i| c.value(i).to_string()).collect())
}

/// `found` with the partner image of each update among them (see [`with_partners`]),
/// matched on the upstream's declared key columns when it has them.
fn add_partners(
    u: &Upstream,
    rows: &RecordBatch,
    found: &[u32],
    versions: &[i64],
) -> std::result::Result<Vec<u32>, String> {
    let types = change_types(rows)?;
    let types: Vec<&str> = types.iter().map(String::as_str).collect();
    let meta = [CHANGE_TYPE, COMMIT_VERSION, COMMIT_TIMESTAMP];
    let data: Vec<(String, ArrayRef)> = rows
        .schema()
        .fields()
        .iter()
        .zip(rows.columns())
        .filter(|(f, _)| !meta.contains(&f.name().as_str()))
        .map(|(f, c)| (f.name().clone(), c.clone()))
        .collect();
    let mut columns = Vec::with_capacity(data.len());
    for (name, c) in &data {
        let conv = RowConverter::new(vec![SortField::new(c.data_type().clone())])
            .map_err(|e| format!("column {name}: {e}"))?;
        columns.push(
            conv.convert_columns(std::slice::from_ref(c))
                .map_err(|e| format!("column {name}: {e}"))?,
        );
    }
    let keys: Vec<usize> = u
        .keys
        .iter()
        .filter_map(|k| data.iter().position(|(n, _)| n == k))
        .collect();
    let keys = if keys.len() == u.keys.len() {
        keys
    } else {
        Vec::new()
    };
    Ok(with_partners(found, versions, &types, &columns, &keys))
}

/// Rows `idx` of `rows` as JSON objects.
fn rows_json(
    rows: &RecordBatch,
    idx: &[u32],
) -> std::result::Result<Vec<Map<String, Value>>, String> {
    if idx.is_empty() {
        return Ok(Vec::new());
    }
    let picked =
        take_record_batch(rows, &UInt32Array::from(idx.to_vec())).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    {
        let mut w = deltalake::arrow::json::ArrayWriter::new(&mut buf);
        w.write(&picked).map_err(|e| e.to_string())?;
        w.finish().map_err(|e| e.to_string())?;
    }
    let v: Vec<Map<String, Value>> = serde_json::from_slice(&buf).map_err(|e| e.to_string())?;
    // The writer leaves out nulls: put them back so every row has every column.
    Ok(v.into_iter()
        .map(|mut m| {
            for f in rows.schema().fields() {
                m.entry(f.name().clone()).or_insert(Value::Null);
            }
            m
        })
        .collect())
}

// ---- explaining --------------------------------------------------------------------

/// Per run: compiled plugins and file hashes, shared by the batches.
#[derive(Default)]
struct Plugins {
    hashes: HashMap<PathBuf, Option<String>>,
    compiled: HashMap<String, crate::plugin::Compiled>,
}

impl Plugins {
    /// The SHA-256 of the file at `path`, `None` when it cannot be read.
    fn sha256(&mut self, path: &Path) -> Option<String> {
        self.hashes
            .entry(path.to_path_buf())
            .or_insert_with(|| {
                std::fs::read(path)
                    .ok()
                    .map(|b| crate::plugin::sha256_hex(&b))
            })
            .clone()
    }
}

/// What derives a batch again, or why nothing can.
enum Available {
    Plugin { path: PathBuf, spec: PluginSpec },
    Sql { query: String },
    No(String),
}

/// Finds the plugin (or query) a batch ran: the file at the recorded path, or the
/// pipeline's plugin file, with the recorded SHA-256.
fn available(p: &Pipeline, meta: &BatchMeta, plugins: &mut Plugins) -> Available {
    let (Some(path), Some(sha)) = (&meta.plugin_path, &meta.plugin_sha256) else {
        return Available::No(format!(
            "the commit of batch {} records no plugin",
            meta.batch_id
        ));
    };
    let short = sha.get(..12).unwrap_or(sha);
    if path == SQL_DERIVER {
        return match &p.derivation {
            Derivation::Sql { query } if crate::plugin::sha256_hex(query.as_bytes()) == *sha => {
                Available::Sql {
                    query: query.clone(),
                }
            }
            Derivation::Sql { .. } => Available::No(format!(
                "the SQL query of {} changed since batch {} (the batch ran a query with sha256 {short}); \
                 the change rows cannot be re-derived",
                p.file.display(),
                meta.batch_id
            )),
            Derivation::Plugin(_) => Available::No(format!(
                "batch {} ran a SQL query (sha256 {short}) and the pipeline now runs a plugin; \
                 the change rows cannot be re-derived",
                meta.batch_id
            )),
        };
    }
    let Some(spec) = p.plugin() else {
        return Available::No(format!(
            "batch {} ran plugin {path} and the pipeline now runs a SQL query; \
             the change rows cannot be re-derived",
            meta.batch_id
        ));
    };
    let recorded = PathBuf::from(path);
    let found = plugins.sha256(&recorded);
    if found.as_deref() == Some(sha.as_str()) {
        return Available::Plugin {
            path: recorded,
            spec: spec.clone(),
        };
    }
    if spec.path != recorded && plugins.sha256(&spec.path).as_deref() == Some(sha.as_str()) {
        return Available::Plugin {
            path: spec.path.clone(),
            spec: spec.clone(),
        };
    }
    let what = match found {
        None => "the file is missing".to_string(),
        Some(now) => format!("the file now has sha256 {}", now.get(..12).unwrap_or(&now)),
    };
    Available::No(format!(
        "plugin {path} with sha256 {sha} is not available ({what}); \
         the change rows cannot be re-derived"
    ))
}

/// The upstream commits `start..=end` of `u`, from its log.
async fn upstream_commits(u: &Upstream, start: i64, end: i64) -> Result<Vec<UpstreamCommit>> {
    let url = deltalake::ensure_table_uri(&u.uri).map_err(|e| cdf::table_err(u, e))?;
    let table = DeltaTableBuilder::from_url(url)
        .map_err(|e| cdf::table_err(u, e))?
        .build()
        .map_err(|e| cdf::table_err(u, e))?;
    let log = table.log_store();
    let entries = futures::future::join_all((start..=end).map(|v| {
        let log = log.clone();
        async move { (v, read_entry(&log, v).await) }
    }))
    .await;
    Ok(entries
        .into_iter()
        .map(|(v, e)| match e {
            Ok(Some(bytes)) => upstream_commit(v, &bytes),
            Ok(None) => UpstreamCommit {
                version: v,
                timestamp: None,
                operation: None,
                operation_parameters: None,
                causing_rows: 0,
                note: Some("its log entry was removed (log retention / cleanup)".into()),
            },
            Err(e) => UpstreamCommit {
                version: v,
                timestamp: None,
                operation: None,
                operation_parameters: None,
                causing_rows: 0,
                note: Some(format!("its log entry cannot be read: {e}")),
            },
        })
        .collect())
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
    let table = link.table().cloned().ok_or_else(|| {
        link_err(
            p,
            "there is no link table yet: run the pipeline first (`dlink-rt run`)",
        )
    })?;
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
        let mut b = BatchWhy {
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
        };
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

/// Derives the batch again, if it can be, and narrows down the causing rows.
async fn rederive(
    run: &mut Run<'_>,
    meta: &BatchMeta,
    recorded: &[&RecordedRange],
    unusable: Vec<String>,
    b: &mut BatchWhy,
) -> std::result::Result<Rederivation, Rederivation> {
    let p = run.p;
    let unavailable = |reason: String| Rederivation::Unavailable { reason };
    let chosen = match available(p, meta, &mut run.plugins) {
        Available::No(reason) => return Err(unavailable(reason)),
        _ if !unusable.is_empty() => {
            return Err(unavailable(format!(
            "the pipeline's upstreams changed since batch {}: the change rows cannot be re-derived",
            meta.batch_id
        )))
        }
        chosen => chosen,
    };
    let ctx = cdf::session();
    let (inputs, mut pinned) = read_inputs(run, &ctx, recorded, b)
        .await
        .map_err(|e| unavailable(format!("the change rows cannot be read again: {e}")))?;
    for (t, v) in &meta.lookups {
        match p.table(t) {
            Some(u) => pinned.push((u.clone(), *v)),
            None => b.notes.push(format!(
                "lookup table '{t}' (version {v} in the batch) is no longer a lookup of the pipeline"
            )),
        }
    }
    let engine = match chosen {
        Available::Plugin { path, spec } => {
            b.deriver.used = Some(path.display().to_string());
            let failed = |e: crate::plugin::PluginError| Rederivation::Failed {
                derive_calls: 0,
                error: format!("plugin {}: {e}", path.display()),
            };
            let sha = meta.plugin_sha256.clone().unwrap_or_default();
            let compiled = match run.plugins.compiled.get(&sha) {
                Some(c) => c.clone(),
                None => {
                    let c = run.host.compile(&path).map_err(failed)?;
                    run.plugins.compiled.insert(sha, c.clone());
                    c
                }
            };
            let plugin = run
                .host
                .instantiate(&compiled, &p.name, &spec)
                .await
                .map_err(failed)?;
            Engine::Plugin {
                plugin: Box::new(plugin),
                lookup: Arc::new(TableLookup::new(
                    &p.name,
                    spec.limits.max_lookup_rows,
                    pinned,
                    run.cache.clone(),
                    ctx,
                    run.host.indexes().clone(),
                    p.lookup_settings,
                )),
            }
        }
        Available::Sql { query } => Engine::Sql {
            query,
            pinned,
            cache: run.cache.clone(),
        },
        Available::No(reason) => return Err(unavailable(reason)),
    };
    let mut rd = Rederive {
        p,
        key: run.key,
        batch_id: meta.batch_id,
        inputs,
        engine,
        calls: 0,
        budget: run.opts.max_derive_calls.max(1),
    };
    narrow_batch(&mut rd, run.opts, b)
        .await
        .map_err(|error| Rederivation::Failed {
            derive_calls: rd.calls,
            error,
        })
}

/// Reads the recorded ranges again, each upstream as of its pinned version (kept in
/// the run's table cache for the lookups). Returns the inputs and the pinned tables.
async fn read_inputs(
    run: &Run<'_>,
    ctx: &deltalake::datafusion::prelude::SessionContext,
    recorded: &[&RecordedRange],
    b: &mut BatchWhy,
) -> Result<(Vec<Input>, Vec<(Upstream, i64)>)> {
    let mut inputs = Vec::with_capacity(recorded.len());
    let mut pinned = Vec::new();
    for r in recorded {
        let Some(u) = run.p.table(&r.name) else {
            continue;
        };
        let t = cdf::open_at(u, r.pinned).await?;
        run.cache
            .lock()
            .await
            .insert((u.name.clone(), r.pinned), t.clone());
        let schema = cdf::change_schema(u, cdf::arrow_schema(u, &t)?.as_ref())?;
        let rows = match r.range {
            Some((s, e)) => {
                let ch = cdf::read_changes(ctx, u, &t, s, e).await?;
                concat_batches(&ch.schema, &ch.batches).map_err(|e| cdf::table_err(u, e))?
            }
            None => RecordBatch::new_empty(schema.clone()),
        };
        if rows.num_rows() as u64 != r.change_rows {
            b.notes.push(format!(
                "'{}': {} change rows read again, the batch read {} (the catalog's columns, filter or \
                 change_types may have changed since)",
                r.name,
                rows.num_rows(),
                r.change_rows
            ));
        }
        pinned.push((u.clone(), r.pinned));
        inputs.push(Input {
            upstream: u.clone(),
            range: r.range,
            pinned: r.pinned,
            schema,
            rows,
        });
    }
    Ok((inputs, pinned))
}

/// Derives the batch again and narrows down the causing rows of each upstream the key
/// is attributed to, filling in `b`'s upstreams.
async fn narrow_batch(
    rd: &mut Rederive<'_>,
    opts: &Options,
    b: &mut BatchWhy,
) -> std::result::Result<Rederivation, String> {
    let Some(attributed) = rd.derive(None).await? else {
        return Ok(Rederivation::NotReproduced {
            derive_calls: rd.calls,
            reason: format!(
                "deriving batch {} again does not report key {}: the upstreams' change files or the looked-up \
                 tables may have changed since (a VACUUM, a restore), the catalog's columns or filter changed, \
                 or the plugin depends on something else",
                rd.batch_id, rd.key
            ),
        });
    };
    let with_rows = rd.inputs.iter().filter(|i| i.rows.num_rows() > 0).count();
    for w in b.upstreams.iter_mut() {
        w.caused = attributed.contains(&w.name);
    }
    for i in 0..rd.inputs.len() {
        let name = rd.inputs[i].upstream.name.clone();
        if rd.inputs[i].rows.num_rows() == 0 || !attributed.contains(&name) {
            continue;
        }
        let Some(w) = b.upstreams.iter_mut().find(|w| w.name == name) else {
            continue;
        };
        let rows = rd.inputs[i].rows.clone();
        w.columns = rows
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        if rd.calls >= rd.budget {
            b.notes.push(format!(
                "'{name}': its change rows are not narrowed down: the limit of {} derivations per batch \
                 was reached (--max-derive-calls)",
                rd.budget
            ));
            continue;
        }
        if with_rows > 1 {
            let all = rows.clone();
            if rd.derive(Some((i, &all))).await?.is_none() {
                b.notes.push(format!(
                    "'{name}': its change rows alone do not yield the key (it comes from another upstream's \
                     rows, or only from rows of several upstreams together); they are not narrowed down"
                ));
                continue;
            }
        }
        let versions = commit_versions(&rows)?;
        let narrowed = rd.narrow(i, &versions).await?;
        let mut found = narrowed.rows.clone();
        for set in &narrowed.joint {
            let vs: BTreeSet<i64> = set.iter().map(|r| versions[*r as usize]).collect();
            b.notes.push(format!(
                "'{name}': {} change rows of version(s) {} cause the key only together (no half of them does)",
                set.len(),
                list_versions(&vs)
            ));
            found.extend_from_slice(set);
        }
        for set in &narrowed.cut {
            let vs: BTreeSet<i64> = set.iter().map(|r| versions[*r as usize]).collect();
            b.notes.push(format!(
                "'{name}': narrowing stopped at the limit of {} derivations per batch (--max-derive-calls): \
                 a cause is among {} change rows of version(s) {}, not listed",
                rd.budget,
                set.len(),
                list_versions(&vs)
            ));
            for c in w.commits.iter_mut() {
                if vs.contains(&c.version) && c.note.is_none() {
                    c.note = Some("may hold causing rows (not narrowed down)".into());
                }
            }
        }
        let found = add_partners(&rd.inputs[i].upstream, &rows, &found, &versions)?;
        for c in w.commits.iter_mut() {
            c.causing_rows = found
                .iter()
                .filter(|r| versions[**r as usize] == c.version)
                .count();
        }
        w.causing_rows_total = found.len();
        if found.len() > opts.max_rows {
            b.notes.push(format!(
                "'{name}': {} causing change rows, the first {} are listed",
                found.len(),
                opts.max_rows
            ));
        }
        let shown = &found[..found.len().min(opts.max_rows)];
        w.causing_rows = rows_json(&rows, shown)?;
    }
    Ok(Rederivation::Done {
        derive_calls: rd.calls,
    })
}

/// Versions as `a..=b` runs.
fn list_versions(vs: &BTreeSet<i64>) -> String {
    let mut runs: Vec<(i64, i64)> = Vec::new();
    for v in vs {
        match runs.last_mut() {
            Some((_, e)) if *e + 1 == *v => *e = *v,
            _ => runs.push((*v, *v)),
        }
    }
    runs.iter()
        .map(|(s, e)| {
            if s == e {
                s.to_string()
            } else {
                format!("{s}..={e}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Keeps at most `opts.max_commits` commits per upstream: those with causing rows (or
/// a note) first, then the others in version order.
fn trim_commits(b: &mut BatchWhy, opts: &Options) {
    for w in b.upstreams.iter_mut() {
        if w.commits.len() <= opts.max_commits {
            continue;
        }
        let mut keep: Vec<UpstreamCommit> = Vec::new();
        let (first, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut w.commits)
            .into_iter()
            .partition(|c| c.causing_rows > 0);
        keep.extend(first);
        for c in rest {
            if keep.len() >= opts.max_commits {
                break;
            }
            keep.push(c);
        }
        keep.sort_by_key(|c| c.version);
        w.commits = keep;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Int64Array, StringArray};

    fn cols() -> Vec<KeyColumn> {
        vec![
            KeyColumn {
                name: "id".into(),
                ty: KeyType::Long,
            },
            KeyColumn {
                name: "inst".into(),
                ty: KeyType::String,
            },
            KeyColumn {
                name: "rank".into(),
                ty: KeyType::Int,
            },
        ]
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn problems(r: Result<Key>) -> String {
        match r {
            Err(Error::Config { problems }) => problems.join("\n"),
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    #[test]
    fn why_key_by_position_or_by_column() {
        let by_pos = parse_key(&cols(), &strings(&["7", "MIT", "2"]), &[]).unwrap();
        let by_name = parse_key(&cols(), &[], &strings(&["rank=2", "inst=MIT", "id=7"])).unwrap();
        assert_eq!(by_pos, by_name);
        assert_eq!(
            by_pos.columns,
            vec![
                ("id".to_string(), KeyValue::Long(7)),
                ("inst".to_string(), KeyValue::String("MIT".into())),
                ("rank".to_string(), KeyValue::Int(2)),
            ]
        );
        assert_eq!(by_pos.to_string(), "id=7, inst=\"MIT\", rank=2");
        // A string value may hold '='.
        let k = parse_key(&cols(), &[], &strings(&["id=1", "inst=a=b", "rank=0"])).unwrap();
        assert_eq!(k.columns[1].1, KeyValue::String("a=b".into()));
    }

    #[test]
    fn why_key_errors_name_the_column_and_its_type() {
        let e = problems(parse_key(
            &cols(),
            &strings(&["x", "MIT", "99999999999"]),
            &[],
        ));
        assert!(e.contains("key column 'id' is long"), "{e}");
        assert!(e.contains("key column 'rank' is int"), "{e}");
        assert!(e.contains("'99999999999' is not one"), "{e}");
        let e = problems(parse_key(&cols(), &strings(&["7"]), &[]));
        assert!(
            e.contains("3 column(s) (id long, inst string, rank int) but 1 value(s)"),
            "{e}"
        );
        let e = problems(parse_key(
            &cols(),
            &[],
            &strings(&["id=7", "id=8", "name=x", "rank"]),
        ));
        assert!(e.contains("'id' is given twice"), "{e}");
        assert!(e.contains("'name' is not a key column"), "{e}");
        assert!(e.contains("--key rank: give COLUMN=VALUE"), "{e}");
        let e = problems(parse_key(&cols(), &[], &strings(&["id=7"])));
        assert!(e.contains("no value for column(s) inst, rank"), "{e}");
        let e = problems(parse_key(&cols(), &strings(&["7"]), &strings(&["id=7"])));
        assert!(e.contains("not both"), "{e}");
        let e = problems(parse_key(&cols(), &[], &[]));
        assert!(e.contains("give the key"), "{e}");
    }

    #[test]
    fn why_key_is_found_among_derived_keys() {
        let keys = AffectedKeys {
            columns: vec![
                Arc::new(Int64Array::from(vec![1, 7, 7])),
                Arc::new(StringArray::from(vec!["MIT", "ETH", "MIT"])),
                Arc::new(deltalake::arrow::array::Int32Array::from(vec![2, 2, 2])),
            ],
            upstreams: vec![
                Arc::from(vec!["a".to_string()]),
                Arc::from(vec!["a".to_string()]),
                Arc::from(vec!["b".to_string()]),
            ],
            change_ts: vec![None; 3],
        };
        let k = parse_key(&cols(), &strings(&["7", "MIT", "2"]), &[]).unwrap();
        assert_eq!(k.position_in(&keys), Some(2));
        let k = parse_key(&cols(), &strings(&["7", "MIT", "3"]), &[]).unwrap();
        assert_eq!(k.position_in(&keys), None);
    }

    #[test]
    fn why_reads_batch_metadata_and_skips_other_commits() {
        // One action per line, as sink.rs commits a batch.
        let info = serde_json::json!({"commitInfo": {"timestamp": 1, "operation": "WRITE", "dlink": {
            "pipeline": "p", "batch_id": 3, "keys": 2,
            "upstreams": {
                "b": {"start_version": 4, "end_version": 6, "pinned_version": 6, "change_rows": 10},
                "a": {"start_version": null, "end_version": null, "pinned_version": 2, "change_rows": 0},
            },
            "lookups": {"dim": 9}, "link_mode": "log",
            "plugin": {"path": "/p.wasm", "sha256": "abc", "active_since_batch": 1},
            "host": "dlink-rt 0.1.0",
        }}});
        let entry = format!("{{\"txn\":{{\"appId\":\"dlink-rt:p\",\"version\":3}}}}\n{info}\n");
        let m = batch_meta(entry.as_bytes()).unwrap();
        assert_eq!(m.batch_id, 3);
        assert_eq!(
            m.upstreams,
            vec![
                RecordedRange {
                    name: "a".into(),
                    range: None,
                    pinned: 2,
                    change_rows: 0
                },
                RecordedRange {
                    name: "b".into(),
                    range: Some((4, 6)),
                    pinned: 6,
                    change_rows: 10
                },
            ]
        );
        assert_eq!(m.lookups, vec![("dim".to_string(), 9)]);
        assert_eq!(m.plugin_path.as_deref(), Some("/p.wasm"));
        assert_eq!(m.plugin_sha256.as_deref(), Some("abc"));
        assert_eq!(m.plugin_active_since, Some(1));

        let reset =
            br#"{"commitInfo":{"dlink":{"pipeline":"p","batch_id":3,"reset":{"upstream":"a"}}}}"#;
        assert!(batch_meta(reset).is_none());
        let compact = br#"{"commitInfo":{"operation":"OPTIMIZE","dlink":{"compact":"optimize"}}}"#;
        assert!(batch_meta(compact).is_none());
        let ack = br#"{"commitInfo":{"dlink":{"consumer":{"name":"c","to_batch":3}}}}"#;
        assert!(batch_meta(ack).is_none());
        assert!(batch_meta(b"{\"add\":{}}\n").is_none());
        assert!(batch_meta(b"not json").is_none());
    }

    #[test]
    fn why_reads_an_upstream_commits_time_and_operation() {
        let entry = br#"{"commitInfo":{"timestamp":1767225600000,"operation":"UPDATE","operationParameters":{"predicate":"id = 1"}}}
{"add":{"path":"x.parquet"}}"#;
        let c = upstream_commit(5, entry);
        assert_eq!(c.version, 5);
        assert_eq!(c.operation.as_deref(), Some("UPDATE"));
        assert_eq!(c.timestamp.as_deref(), Some("2026-01-01T00:00:00+00:00"));
        assert_eq!(c.operation_parameters.unwrap()["predicate"], "id = 1");
        assert!(c.note.is_none());
        // In-commit timestamps win over file times.
        let entry = br#"{"commitInfo":{"timestamp":1,"inCommitTimestamp":1767225600000,"operation":"MERGE","operationParameters":{}}}"#;
        let c = upstream_commit(6, entry);
        assert_eq!(c.timestamp.as_deref(), Some("2026-01-01T00:00:00+00:00"));
        assert!(
            c.operation_parameters.is_none(),
            "empty parameters are left out"
        );
        let c = upstream_commit(7, br#"{"add":{"path":"x.parquet"}}"#);
        assert!(c.operation.is_none() && c.note.is_some());
    }

    #[test]
    fn why_splits_at_the_commit_boundary_nearest_the_middle() {
        // Row r has version versions[r]; rows sorted by version.
        let versions = [3, 3, 3, 3, 3, 4, 5, 5];
        let rows: Vec<u32> = (0..8).collect();
        assert_eq!(split_point(&rows, &versions), 5);
        assert_eq!(split_point(&rows[5..], &versions), 1);
        let one = [9, 9, 9, 9, 9];
        assert_eq!(split_point(&[0, 1, 2, 3, 4], &one), 2);
        assert_eq!(split_point(&[0, 1], &one), 1);
    }

    fn rows_of(cols: &[ArrayRef]) -> Vec<Rows> {
        cols.iter()
            .map(|c| {
                RowConverter::new(vec![SortField::new(c.data_type().clone())])
                    .unwrap()
                    .convert_columns(std::slice::from_ref(c))
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn why_keeps_an_updates_images_together() {
        // Commit 5 updates departments 1 and 2 (images not adjacent), commit 6 inserts 1.
        let ids: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 2, 1, 1]));
        let names: ArrayRef = Arc::new(StringArray::from(vec!["a", "b", "b2", "a2", "a3"]));
        let types = [
            "update_preimage",
            "update_preimage",
            "update_postimage",
            "update_postimage",
            "insert",
        ];
        let versions = [5, 5, 5, 5, 6];
        let columns = rows_of(&[ids, names]);
        // By the declared key column (id, column 0).
        assert_eq!(
            with_partners(&[3], &versions, &types, &columns, &[0]),
            vec![0, 3]
        );
        assert_eq!(
            with_partners(&[1], &versions, &types, &columns, &[0]),
            vec![1, 2]
        );
        // Without keys: the opposite image agreeing on the most columns.
        assert_eq!(
            with_partners(&[0], &versions, &types, &columns, &[]),
            vec![0, 3]
        );
        assert_eq!(
            with_partners(&[2], &versions, &types, &columns, &[]),
            vec![1, 2]
        );
        // Inserts have no partner; rows come sorted by version, then pre before post.
        assert_eq!(
            with_partners(&[4, 2], &versions, &types, &columns, &[0]),
            vec![1, 2, 4]
        );
    }

    #[test]
    fn why_lists_versions_as_runs() {
        let vs: BTreeSet<i64> = [1, 2, 3, 5, 7, 8].into_iter().collect();
        assert_eq!(list_versions(&vs), "1..=3, 5, 7..=8");
    }
}
