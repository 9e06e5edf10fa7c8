//! Where each pipeline stands, from its link table and its upstreams' logs alone (no
//! running process needed): the last batch and when it was committed, each
//! upstream's checkpoint against its latest version with the lag in versions and
//! seconds, the plugin in effect and since which batch, and the last reset.
//!
//! A table that cannot be read is reported as such in its place; the rest is still
//! shown.

use serde::Serialize;
use serde_json::Value;

use crate::cdf::history::{commit_info, commit_millis};
use crate::config::{Pipeline, Upstream};
use crate::sink::meta::batch_meta;
use crate::sink::LinkTable;

/// How many of the link table's newest commits are searched for the last batch's
/// metadata and the last reset (a reset older than that is not shown).
pub const SEARCHED_COMMITS: i64 = 200;

/// One pipeline's status.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineStatus {
    pub pipeline: String,
    pub file: String,
    pub enabled: bool,
    /// `None`: the link table does not exist yet (no batch committed).
    pub link_version: Option<i64>,
    /// 0 when no batch was committed.
    pub last_batch: i64,
    /// When the link-table commit of the last batch was made (RFC 3339).
    pub last_batch_at: Option<String>,
    /// The deriver of the last batch.
    pub plugin: Option<PluginInEffect>,
    /// The newest reset (`dlink-rt reset`) among the searched commits.
    pub last_reset: Option<Value>,
    pub upstreams: Vec<UpstreamStatus>,
    /// Why the link table could not be read, if it could not.
    pub error: Option<String>,
}

/// The plugin (or SQL query) that derived the last batch.
#[derive(Debug, Clone, Serialize)]
pub struct PluginInEffect {
    pub path: Option<String>,
    pub sha256: Option<String>,
    pub active_since_batch: Option<i64>,
    /// The plugin contract it speaks (none for SQL, or a batch of an older host).
    pub contract: Option<String>,
}

/// One upstream of a pipeline.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamStatus {
    pub name: String,
    /// The last version done; `None` when never read.
    pub checkpoint: Option<i64>,
    pub latest: Option<i64>,
    /// Versions committed upstream and not done yet.
    pub lag_versions: Option<i64>,
    /// The latest version's commit time minus the checkpointed version's (0 when
    /// caught up; from the first version's time when never read).
    pub lag_seconds: Option<f64>,
    /// Why the upstream could not be read, if it could not.
    pub error: Option<String>,
}

/// The status of `p` (never an error: what cannot be read is said in its place).
pub async fn of(p: &Pipeline) -> PipelineStatus {
    let mut s = PipelineStatus {
        pipeline: p.name.clone(),
        file: p.file.display().to_string(),
        enabled: p.enabled,
        link_version: None,
        last_batch: 0,
        last_batch_at: None,
        plugin: None,
        last_reset: None,
        upstreams: Vec::new(),
        error: None,
    };
    let mut done = std::collections::BTreeMap::new();
    match link_part(p, &mut s).await {
        Ok(d) => done = d,
        Err(e) => s.error = Some(e),
    }
    s.upstreams = futures::future::join_all(
        p.upstreams
            .iter()
            .map(|u| upstream_part(u, done.get(&u.name).copied())),
    )
    .await;
    s
}

/// Fills in the link table's part; returns the checkpoint per upstream.
async fn link_part(
    p: &Pipeline,
    s: &mut PipelineStatus,
) -> Result<std::collections::BTreeMap<String, i64>, String> {
    let mut link = LinkTable::open(p).await.map_err(|e| e.to_string())?;
    let cp = link.checkpoint().await.map_err(|e| e.to_string())?;
    s.last_batch = cp.batch_id;
    let Some(t) = link.table() else {
        return Ok(cp.done);
    };
    let latest = t.version().map(|v| v as i64).unwrap_or(0);
    s.link_version = Some(latest);
    let log = t.log_store();
    let mut v = latest;
    while v >= 0 && v > latest - SEARCHED_COMMITS {
        if s.plugin.is_some() && s.last_reset.is_some() {
            break;
        }
        let Ok(Some(bytes)) = log.read_commit_entry(v as u64).await else {
            break;
        };
        let info = commit_info(&bytes);
        if s.last_reset.is_none() {
            s.last_reset = info
                .as_ref()
                .and_then(|i| i.pointer("/dlink/reset"))
                .cloned();
        }
        if s.plugin.is_none() {
            if let Some(m) = batch_meta(&bytes).filter(|m| m.batch_id == cp.batch_id) {
                s.plugin = Some(PluginInEffect {
                    path: m.plugin_path,
                    sha256: m.plugin_sha256,
                    active_since_batch: m.plugin_active_since,
                    contract: m.plugin_contract,
                });
                s.last_batch_at = info
                    .as_ref()
                    .and_then(commit_millis)
                    .and_then(chrono::DateTime::from_timestamp_millis)
                    .map(|t| t.to_rfc3339());
            }
        }
        v -= 1;
    }
    Ok(cp.done)
}

async fn upstream_part(u: &Upstream, done: Option<i64>) -> UpstreamStatus {
    let mut s = UpstreamStatus {
        name: u.name.clone(),
        checkpoint: done,
        latest: None,
        lag_versions: None,
        lag_seconds: None,
        error: None,
    };
    let t = match crate::cdf::open_latest(u).await {
        Ok(t) => t,
        Err(e) => {
            s.error = Some(e.to_string());
            return s;
        }
    };
    let Some(latest) = t.version().map(|v| v as i64) else {
        s.error = Some("the table has no version".into());
        return s;
    };
    s.latest = Some(latest);
    let next = done.map_or(u.start_version, |d| d + 1);
    s.lag_versions = Some((latest - next + 1).max(0));
    if next > latest {
        s.lag_seconds = Some(0.0);
        return s;
    }
    // From the last version done (else the first one to read) to the latest one.
    let log = t.log_store();
    let ts = |v: i64| {
        let log = log.clone();
        async move {
            let bytes = log.read_commit_entry(v.max(0) as u64).await.ok()??;
            commit_millis(&commit_info(&bytes)?)
        }
    };
    let from = done.unwrap_or(u.start_version);
    if let (Some(a), Some(b)) = (ts(from).await, ts(latest).await) {
        s.lag_seconds = Some((b - a).max(0) as f64 / 1000.0);
    }
    s
}

/// One committed batch as `dlink-rt history` shows it, from its commit's metadata.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryEntry {
    pub batch: i64,
    pub link_version: i64,
    /// When it was committed (RFC 3339), from the commit's timestamp.
    pub committed_at: Option<String>,
    /// Each upstream's versions (`null` when it had none in the batch) and change rows.
    pub upstreams: Vec<HistoryRange>,
    pub change_rows: u64,
    /// Distinct keys (absent in commits of hosts before it was recorded).
    pub keys: Option<u64>,
    /// The batch's time before its commit, in milliseconds (absent before it was
    /// recorded).
    pub elapsed_ms: Option<u64>,
    pub plugin: Option<String>,
    pub plugin_sha256: Option<String>,
    pub plugin_active_since: Option<i64>,
    pub contract: Option<String>,
}

/// One upstream's part of a batch in [`HistoryEntry`].
#[derive(Debug, Clone, Serialize)]
pub struct HistoryRange {
    pub upstream: String,
    pub start_version: Option<i64>,
    pub end_version: Option<i64>,
    pub change_rows: u64,
}

/// The newest `last` batches of `p`'s link table, newest first (no link table yet: none).
/// Commits that are not batches (resets, acks, compactions) are skipped.
pub async fn history(p: &Pipeline, last: usize) -> Result<Vec<HistoryEntry>, crate::Error> {
    let mut link = LinkTable::open(p).await?;
    link.checkpoint().await?;
    let Some(t) = link.table() else {
        return Ok(Vec::new());
    };
    let Some(latest) = t.version() else {
        return Ok(Vec::new());
    };
    let log = t.log_store();
    let mut out = Vec::new();
    let mut v = latest as i64;
    while v >= 0 && out.len() < last {
        let bytes = match log.read_commit_entry(v as u64).await {
            Ok(Some(b)) => b,
            // Cleaned up by the log retention: older batches are not listed.
            Ok(None) => break,
            Err(e) => {
                return Err(crate::Error::Other(format!(
                    "link table {} of pipeline '{}': cannot read version {v} of its log: {e}",
                    p.link_uri, p.name
                )))
            }
        };
        if let Some(m) = batch_meta(&bytes) {
            let committed_at = commit_info(&bytes)
                .as_ref()
                .and_then(commit_millis)
                .and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_millis)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
            out.push(HistoryEntry {
                batch: m.batch_id,
                link_version: v,
                committed_at,
                change_rows: m.upstreams.iter().map(|u| u.change_rows).sum(),
                upstreams: m
                    .upstreams
                    .iter()
                    .map(|u| HistoryRange {
                        upstream: u.name.clone(),
                        start_version: u.range.map(|r| r.0),
                        end_version: u.range.map(|r| r.1),
                        change_rows: u.change_rows,
                    })
                    .collect(),
                keys: m.keys,
                elapsed_ms: m.elapsed_ms,
                plugin: m.plugin_path,
                plugin_sha256: m.plugin_sha256,
                plugin_active_since: m.plugin_active_since,
                contract: m.plugin_contract,
            });
        }
        v -= 1;
    }
    Ok(out)
}
