//! Retention and compaction of a link table (`dlink-rt compact`, `[link] retain`,
//! `[link] compact_every`).
//!
//! Three steps, each one Delta commit (or none), so a compaction killed at any point
//! leaves a table every reader reads and the next compaction finishes the work:
//!
//! 1. **Retention** (a change log with `[link] retain`): removes the batches past
//!    retention that every registered consumer (`[link] consumers`) has acknowledged,
//!    with a DELETE on `dlink_batch_id` (whole single-batch files go by their
//!    statistics, without being read). The commit carries the application transaction
//!    `dlink-retention:<pipeline>` = the last batch removed, which readers check so
//!    that a window starting before it fails ([`crate::CommitError::Expired`]) instead of
//!    silently missing batches, and metadata saying what was removed and which
//!    consumers held retention back.
//! 2. **OPTIMIZE**: bin-packs the small files (one per batch) into files of the table's
//!    `delta.targetFileSize`, keeping their order, so that a merged file still covers a
//!    contiguous range of batches and "batches after N" still prunes by statistics.
//! 3. **VACUUM**: deletes files removed longer ago than the table's
//!    `delta.deletedFileRetentionDuration` (Delta's default: 7 days); in `full` mode
//!    (files left by a killed writer too) when that retention is at least an hour,
//!    otherwise only files the log removed, so a concurrent writer's file is never
//!    taken.
//!
//! Every step runs beside the pipeline's own commits: a batch is a blind append (or a
//! MERGE on keys the DELETE does not touch), Delta's conflict check lets both through,
//! and a step that loses a race is decided again on a fresh snapshot.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use deltalake::datafusion::error::DataFusionError;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Transaction;
use deltalake::operations::vacuum::VacuumMode;
use deltalake::table::config::TablePropertiesExt;
use deltalake::DeltaTable;
use serde_json::json;

use crate::config::{LinkMode, Pipeline, Retain};
use crate::consumer::{consumer_app_id, is_conflict, open_link, txn_version};
use crate::engine::error::{CommitError, Error, Result};
use crate::sink::{app_id, retention_app_id, LinkTable, BATCH_ID, UPDATED_AT};

/// What one compaction of a link table did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    pub pipeline: String,
    pub link_uri: String,
    pub mode: String,
    /// The newest batch at the start.
    pub newest_batch: i64,
    /// Batches removed by this compaction, `[first, last]`.
    pub removed_batches: Option<(i64, i64)>,
    /// The last batch removed by retention so far (this and earlier compactions).
    pub removed_through: i64,
    /// Data files and rows the retention step removed.
    pub removed_files: usize,
    pub removed_rows: Option<usize>,
    /// Registered consumers whose position kept batches that retention would remove:
    /// (name, position).
    pub held_back_by: Vec<(String, i64)>,
    /// Data files before and after.
    pub files_before: usize,
    pub files_after: usize,
    /// Files OPTIMIZE merged, and the files it wrote.
    pub optimized_files_removed: u64,
    pub optimized_files_added: u64,
    /// Files VACUUM deleted from storage, and its mode.
    pub vacuumed_files: usize,
    pub vacuum_mode: String,
    /// Things said about this compaction (nothing to do, retention not applicable).
    pub notes: Vec<String>,
    pub seconds: f64,
}

/// Retries of a step that lost a race with a concurrent commit.
const ATTEMPTS: usize = 5;

fn link_err(p: &Pipeline, step: &str, e: impl Into<crate::storage::Cause>) -> Error {
    CommitError::link(p, e.into().doing(format_args!("compact, {step}"))).into()
}

fn props(step: serde_json::Value) -> CommitProperties {
    CommitProperties::default().with_metadata([(
        "dlink".to_string(),
        json!({"compact": step, "host": crate::sink::HOST}),
    )])
}

/// Compacts `p`'s link table as of `now` (retention, OPTIMIZE, VACUUM).
pub async fn compact(p: &Pipeline, now: DateTime<Utc>) -> Result<Report> {
    let started = Instant::now();
    let mut report = Report {
        pipeline: p.name.clone(),
        link_uri: p.link_uri.clone(),
        ..Report::default()
    };
    // The mode as the table records it (and checked against the file).
    let link = LinkTable::open(p).await?;
    let mode = link.mode();
    report.mode = mode.to_string();
    let Some(table) = link.table() else {
        report
            .notes
            .push("there is no link table yet: nothing to compact".into());
        return Ok(report);
    };
    report.files_before = num_files(p, table)?;
    report.newest_batch = txn_version(table, app_id(&p.name))
        .await
        .map_err(|e| link_err(p, "reading the checkpoint", e))?;

    match (p.retain, mode) {
        (None, _) => report
            .notes
            .push("no [link] retain: every batch is kept".into()),
        (Some(_), LinkMode::Latest) => report.notes.push(
            "[link] retain applies to a change log (mode = \"log\"); a \"latest\" table holds one row per key and keeps them"
                .into(),
        ),
        (Some(retain), LinkMode::Log) => expire(p, retain, now, &mut report).await?,
    }
    optimize(p, &mut report).await?;
    vacuum(p, &mut report).await?;
    let t = open_link(p).await?;
    report.files_after = num_files(p, &t)?;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn num_files(p: &Pipeline, t: &DeltaTable) -> Result<usize> {
    Ok(t.snapshot()
        .map_err(|e| link_err(p, "reading the snapshot", e))?
        .log_data()
        .num_files())
}

/// The last batch retention may remove under `retain` (0: none), from `table`.
async fn retention_limit(
    p: &Pipeline,
    table: &DeltaTable,
    retain: Retain,
    newest: i64,
    now: DateTime<Utc>,
) -> Result<i64> {
    match retain {
        Retain::Batches(n) => Ok((newest - n).max(0)),
        Retain::Age(age) => {
            let age = chrono::Duration::from_std(age)
                .map_err(|e| link_err(p, "reading [link] retain", e.to_string()))?;
            let before = (now - age).format("%Y-%m-%dT%H:%M:%S%.6fZ");
            let err = |e: DataFusionError| link_err(p, "reading the batch times", e);
            let ctx = crate::cdf::session();
            let provider = table
                .table_provider()
                .await
                .map_err(|e| link_err(p, "reading the batch times", e))?;
            ctx.register_table("link", provider).map_err(err)?;
            let out = ctx
                .sql(&format!(
                    "SELECT max({BATCH_ID}) FROM link WHERE {UPDATED_AT} < TIMESTAMP '{before}'"
                ))
                .await
                .map_err(err)?
                .collect()
                .await
                .map_err(err)?;
            use deltalake::arrow::array::{Array, Int64Array};
            Ok(out
                .first()
                .and_then(|b| b.column(0).as_any().downcast_ref::<Int64Array>().cloned())
                .filter(|a| !a.is_empty() && a.is_valid(0))
                .map(|a| a.value(0))
                .unwrap_or(0))
        }
    }
}

/// The last batch retention may remove: `by_rule`, held back to the oldest position
/// of a registered consumer (each one holding it back is listed in the report).
async fn consumers_cutoff(
    p: &Pipeline,
    table: &DeltaTable,
    by_rule: i64,
    r: &mut Report,
) -> Result<i64> {
    let mut cutoff = by_rule;
    r.held_back_by.clear();
    for name in &p.consumers {
        let position = txn_version(table, consumer_app_id(name))
            .await
            .map_err(|e| link_err(p, "retention", e))?;
        if position < by_rule {
            r.held_back_by.push((name.clone(), position));
        }
        cutoff = cutoff.min(position);
    }
    Ok(cutoff)
}

/// Step 1: removes the batches past retention that every registered consumer has
/// acknowledged.
async fn expire(p: &Pipeline, retain: Retain, now: DateTime<Utc>, r: &mut Report) -> Result<()> {
    let step = "retention";
    for attempt in 1..=ATTEMPTS {
        let table = open_link(p).await?;
        let newest = txn_version(&table, app_id(&p.name))
            .await
            .map_err(|e| link_err(p, step, e))?;
        let removed = txn_version(&table, retention_app_id(&p.name))
            .await
            .map_err(|e| link_err(p, step, e))?;
        r.removed_through = removed;
        let by_rule = retention_limit(p, &table, retain, newest, now).await?;
        let cutoff = consumers_cutoff(p, &table, by_rule, r).await?;
        if cutoff <= removed {
            let why = if by_rule <= removed {
                format!("retention ({retain}) removes nothing new")
            } else {
                format!(
                    "retention ({retain}) would remove batches through {by_rule}, but consumers have not acknowledged them: {}",
                    r.held_back_by
                        .iter()
                        .map(|(n, b)| format!("'{n}' at batch {b}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            r.notes.push(why);
            return Ok(());
        }
        let meta = json!({"retention": {
            "rule": retain.to_string(),
            "from_batch": removed + 1,
            "through_batch": cutoff,
            "newest_batch": newest,
            "held_back_by": r.held_back_by.iter().map(|(n, b)| json!({"consumer": n, "position": b})).collect::<Vec<_>>(),
            "at": now.to_rfc3339(),
        }});
        let props = props(meta).with_application_transactions(vec![Transaction::new(
            retention_app_id(&p.name),
            cutoff,
        )]);
        let before = table.version();
        let deleted = table
            .clone()
            .delete()
            .with_predicate(format!("{BATCH_ID} <= {cutoff}").as_str())
            .with_commit_properties(props.clone())
            .await;
        let outcome = match deleted {
            Ok((t, m)) if t.version() != before => Ok((m.num_removed_files, m.num_deleted_rows)),
            // Nothing to delete (batches without keys): record the mark alone.
            Ok(_) => crate::sink::commit_without_actions(&table, props)
                .await
                .map(|_| (0, Some(0))),
            Err(e) => Err(e),
        };
        match outcome {
            Ok((files, rows)) => {
                r.removed_batches = Some((removed + 1, cutoff));
                r.removed_through = cutoff;
                r.removed_files = files;
                r.removed_rows = rows;
                return Ok(());
            }
            Err(e) if attempt < ATTEMPTS && is_conflict(&e) => {
                tracing::debug!("{}: compact's retention lost a race, again: {e}", p.name);
            }
            Err(e) => return Err(link_err(p, step, e)),
        }
    }
    Ok(())
}

/// Step 2: OPTIMIZE (bin-packing in the files' order).
async fn optimize(p: &Pipeline, r: &mut Report) -> Result<()> {
    for attempt in 1..=ATTEMPTS {
        let table = open_link(p).await?;
        match table
            .optimize()
            .with_commit_properties(props(json!("optimize")))
            .await
        {
            Ok((_, m)) => {
                r.optimized_files_removed = m.num_files_removed;
                r.optimized_files_added = m.num_files_added;
                return Ok(());
            }
            Err(e) if attempt < ATTEMPTS && is_conflict(&e) => {
                tracing::debug!("{}: compact's OPTIMIZE lost a race, again: {e}", p.name);
            }
            Err(e) => return Err(link_err(p, "OPTIMIZE", e)),
        }
    }
    Ok(())
}

/// Files of a killed writer are only taken by a `full` VACUUM when the table's
/// retention is at least this long (a concurrent writer's new file is younger).
const FULL_VACUUM_MIN_RETENTION: Duration = Duration::from_secs(3600);

/// Step 3: VACUUM past the table's own retention.
async fn vacuum(p: &Pipeline, r: &mut Report) -> Result<()> {
    let table = open_link(p).await?;
    let retention = table
        .snapshot()
        .map_err(|e| link_err(p, "VACUUM", e))?
        .table_config()
        .deleted_file_retention_duration();
    let mode = if retention >= FULL_VACUUM_MIN_RETENTION {
        VacuumMode::Full
    } else {
        VacuumMode::Lite
    };
    r.vacuum_mode = format!("{mode:?}").to_lowercase();
    let (_, m) = table
        .vacuum()
        .with_mode(mode)
        .with_commit_properties(props(json!("vacuum")))
        .await
        .map_err(|e| link_err(p, "VACUUM", e))?;
    r.vacuumed_files = m.files_deleted.len();
    Ok(())
}
