//! The link table: one Delta table per pipeline holding its affected keys, and the
//! exactly-once commit that also carries the pipeline's checkpoint.
//!
//! A link table is, by default, an append-only **change log** ([`LinkMode::Log`]): one
//! row per (key, batch), each batch one append commit whose files hold only that batch
//! (so their statistics on `dlink_batch_id` let a reader of "batches after N" skip the
//! rest). In [`LinkMode::Latest`] it holds one row per key, the last batch that
//! reported it, and each batch is a MERGE (which rewrites only the files that hold one
//! of the batch's keys). The mode is recorded in the table property
//! table's description ([`MODE_PROPERTY`]); a table without it was created by dlink-rt
//! 0.1 and is `latest`.
//!
//! Every batch is ONE Delta commit (an append or a MERGE, or an empty commit when the
//! batch yields no key) with these application transactions (`txn` actions):
//! - `dlink-rt:<pipeline>` = the batch id;
//! - `dlink-rt:<pipeline>:<upstream>` = the last version of that upstream done.
//!
//! and the commit metadata `dlink` (batch id, each upstream's version range, lookup
//! versions, the plugin's path and SHA-256). The checkpoint is read back from the
//! `txn` actions, which Delta keeps across checkpoints and log cleanup, unlike
//! commit metadata. There is no separate state to disagree with the output: a crash
//! before the commit leaves nothing, after it the batch is done.

use std::collections::BTreeMap;
use std::sync::Arc;

use deltalake::arrow::array::{
    ArrayRef, Int64Array, ListBuilder, RecordBatch, StringBuilder, TimestampMicrosecondArray,
};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{ArrayType, DataType, StructField, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableBuilder, TableProperty};
use serde_json::json;

use crate::config::{KeyType, LinkMode, Pipeline};
use crate::error::{Error, Result};
use crate::keys::AffectedKeys;

/// `dlink_batch_id`: the batch that last reported the key.
pub const BATCH_ID: &str = "dlink_batch_id";
/// `dlink_upstreams`: names of the upstreams whose changes caused the key.
pub const UPSTREAMS: &str = "dlink_upstreams";
/// `dlink_change_ts`: newest upstream commit timestamp among the causes.
pub const CHANGE_TS: &str = "dlink_change_ts";
/// `dlink_updated_at`: when the batch was committed.
pub const UPDATED_AT: &str = "dlink_updated_at";

/// The size the change log's small files are merged up to after a commit (8 MiB).
pub const SMALL_FILE: u64 = 8 << 20;

/// How a link table's description records its [`LinkMode`] (`dlink.link.mode=log`).
pub const MODE_PROPERTY: &str = "dlink.link.mode";

/// The application id of a pipeline's batches.
pub fn app_id(pipeline: &str) -> String {
    format!("dlink-rt:{pipeline}")
}

/// The application id of a change log's retention mark: every batch up to its version
/// was removed by `dlink-rt compact`.
pub fn retention_app_id(pipeline: &str) -> String {
    format!("dlink-retention:{pipeline}")
}

/// Commits `props` (application transactions and metadata) with no data on `table`'s
/// snapshot; returns the table at the new version. Conflicts come back as Delta's own
/// errors (see [`crate::consumer`]'s retries).
pub(crate) async fn commit_without_actions(
    table: &DeltaTable,
    props: CommitProperties,
) -> deltalake::DeltaResult<DeltaTable> {
    let state = table.snapshot()?;
    let done = CommitBuilder::from(props)
        .with_actions(vec![])
        .build(
            Some(state),
            table.log_store(),
            DeltaOperation::Write {
                mode: SaveMode::Append,
                partition_by: None,
                predicate: None,
            },
        )
        .await?;
    let mut t = table.clone();
    t.state = Some(done.snapshot);
    Ok(t)
}

/// The application id of a pipeline's progress on one upstream.
pub fn upstream_app_id(pipeline: &str, upstream: &str) -> String {
    format!("dlink-rt:{pipeline}:{upstream}")
}

/// Where a pipeline stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// Last committed batch id; 0 when none.
    pub batch_id: i64,
    /// Last version done per upstream; absent when never read.
    pub done: BTreeMap<String, i64>,
}

/// One upstream's part of a batch, for the commit metadata.
#[derive(Debug, Clone)]
pub struct UpstreamRange {
    pub name: String,
    /// `None` when the upstream had no new version in the batch.
    pub range: Option<(i64, i64)>,
    /// The version lookups read (the batch's pinned version).
    pub pinned: i64,
    pub change_rows: usize,
}

/// Everything one batch commits.
pub struct Commit<'a> {
    pub batch_id: i64,
    pub keys: &'a AffectedKeys,
    pub upstreams: &'a [UpstreamRange],
    /// Lookup-only tables and the versions they were read at.
    pub lookups: &'a [(String, i64)],
    pub plugin_path: String,
    pub plugin_sha256: String,
    /// The batch at which this plugin file took effect in the running process.
    pub plugin_active_since: i64,
}

/// A pipeline's link table.
pub struct LinkTable {
    pipeline: String,
    uri: String,
    keys: Vec<(String, KeyType)>,
    upstreams: Vec<String>,
    /// The mode the pipeline file asks for, if any.
    asked: Option<LinkMode>,
    /// The table's mode (what the file asks, or the existing table's).
    mode: LinkMode,
    table: Option<DeltaTable>,
    /// `[link] merge_small_files`: a change log with this many small files has them
    /// merged after a commit (0: never).
    merge_small_files: usize,
    /// The checkpoint as of `table`'s version, when this process read or wrote it.
    /// While it is known, a batch commits on the held snapshot without reading the log
    /// again: a commit another run made since carries this pipeline's app id, and
    /// Delta's conflict check rejects ours then.
    known: Option<Checkpoint>,
}

impl LinkTable {
    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::Link {
            pipeline: self.pipeline.clone(),
            uri: self.uri.clone(),
            message: e.to_string(),
        }
    }

    /// Opens the pipeline's link table if it exists (it is created by the first commit).
    pub async fn open(p: &Pipeline) -> Result<LinkTable> {
        let mut link = LinkTable {
            pipeline: p.name.clone(),
            uri: p.link_uri.clone(),
            keys: p.keys.iter().map(|k| (k.name.clone(), k.ty)).collect(),
            upstreams: p.upstreams.iter().map(|u| u.name.clone()).collect(),
            asked: p.link_mode,
            mode: p.link_mode.unwrap_or(LinkMode::Log),
            table: None,
            known: None,
            merge_small_files: p.merge_small_files,
        };
        if crate::cdf::local_path_without_log(&link.uri) {
            return Ok(link);
        }
        let url = deltalake::ensure_table_uri(&link.uri).map_err(|e| link.err(e))?;
        let mut t = DeltaTableBuilder::from_url(url)
            .map_err(|e| link.err(e))?
            .build()
            .map_err(|e| link.err(e))?;
        match t.load().await {
            Ok(()) => {
                link.check_schema(&t)?;
                link.mode = link.mode_of(&t)?;
                link.table = Some(t);
            }
            Err(deltalake::DeltaTableError::NotATable(_)) => {}
            Err(e) => return Err(link.err(e)),
        }
        Ok(link)
    }

    fn check_schema(&self, t: &DeltaTable) -> Result<()> {
        let schema = t
            .snapshot()
            .map_err(|e| self.err(e))?
            .snapshot()
            .arrow_schema();
        for (name, ty) in &self.keys {
            match schema.field_with_name(name) {
                Ok(f) if f.data_type() == &crate::keys::arrow_type(*ty) => {}
                Ok(f) => {
                    return Err(self.err(format!(
                    "key column '{name}' is {} in the link table but the pipeline declares {ty}; \
                         point [link] uri at a new table or fix the key type",
                    f.data_type()
                )))
                }
                Err(_) => {
                    return Err(self.err(format!(
                        "the link table has no key column '{name}'; it belongs to another pipeline \
                         or the keys changed: point [link] uri at a new table"
                    )))
                }
            }
        }
        Ok(())
    }

    /// The mode recorded in `t`, which must be the one the pipeline file asks for.
    fn mode_of(&self, t: &DeltaTable) -> Result<LinkMode> {
        let snapshot = t.snapshot().map_err(|e| self.err(e))?;
        // Recorded at the end of the table's description: the Delta kernel refuses
        // table properties it does not know.
        let meta = serde_json::to_value(snapshot.metadata()).map_err(|e| self.err(e))?;
        let recorded = meta["description"]
            .as_str()
            .and_then(|d| d.rsplit_once(&format!("{MODE_PROPERTY}=")))
            .map(|(_, m)| m.trim().to_string());
        let found = match recorded.as_deref() {
            None => LinkMode::Latest,
            Some("latest") => LinkMode::Latest,
            Some("log") => LinkMode::Log,
            Some(m) => {
                return Err(self.err(format!(
                    "the link table's {MODE_PROPERTY} is '{m}', which this dlink-rt does not know; \
                     upgrade dlink-rt or point [link] uri at a new table"
                )))
            }
        };
        match self.asked {
            Some(asked) if asked != found => Err(self.err(format!(
                "the pipeline file asks for [link] mode = \"{asked}\" but the link table is a \"{found}\" table; \
                 remove `mode` to keep the table's, or point [link] uri at a new table"
            ))),
            _ => Ok(found),
        }
    }

    /// The link table's mode.
    pub fn mode(&self) -> LinkMode {
        self.mode
    }

    /// Whether the link table is still at the version held (lists the log for newer
    /// entries). A link table not created yet counts as unchanged: the first commit
    /// adopts one a concurrent run created.
    pub async fn unchanged(&mut self) -> Result<bool> {
        let Some(t) = self.table.as_mut() else {
            return Ok(true);
        };
        let held = t.version();
        let updated = t.update_state().await;
        let now = t.version();
        updated.map_err(|e| self.err(e))?;
        Ok(now == held)
    }

    /// The link table at its newest version, created first if it does not exist (or
    /// adopted from a concurrent creator).
    async fn refreshed(&mut self) -> Result<DeltaTable> {
        match self.table.as_mut() {
            Some(t) => {
                let updated = t.update_state().await;
                updated.map_err(|e| self.err(e))?;
            }
            None => self.table = Some(self.create().await?),
        }
        self.table
            .clone()
            .ok_or_else(|| self.err("the link table is not open"))
    }

    /// The Delta table, if created.
    pub fn table(&self) -> Option<&DeltaTable> {
        self.table.as_ref()
    }

    /// The checkpoint, from the link table's `txn` actions as of the held version (and
    /// remembered, so that the batches of this run commit without reading it again).
    pub async fn checkpoint(&mut self) -> Result<Checkpoint> {
        let cp = self.read_checkpoint().await?;
        self.known = Some(cp.clone());
        Ok(cp)
    }

    /// Reads the checkpoint from the held snapshot: one log replay per app id, run
    /// side by side.
    async fn read_checkpoint(&self) -> Result<Checkpoint> {
        let Some(t) = &self.table else {
            return Ok(Checkpoint::default());
        };
        let state = t.snapshot().map_err(|e| self.err(e))?;
        let log_store = t.log_store();
        let ids = std::iter::once(app_id(&self.pipeline))
            .chain(
                self.upstreams
                    .iter()
                    .map(|u| upstream_app_id(&self.pipeline, u)),
            )
            .collect::<Vec<_>>();
        let versions = futures::future::try_join_all(
            ids.into_iter()
                .map(|id| state.transaction_version(log_store.as_ref(), id)),
        )
        .await
        .map_err(|e| self.err(e))?;
        let batch_id = versions.first().copied().flatten().unwrap_or(0);
        let done = self
            .upstreams
            .iter()
            .zip(versions.into_iter().skip(1))
            .filter_map(|(u, v)| v.map(|v| (u.clone(), v)))
            .collect();
        Ok(Checkpoint { batch_id, done })
    }

    /// Creates the link table, or adopts the one a concurrent run just created.
    async fn create(&self) -> Result<DeltaTable> {
        match self.try_create().await {
            Ok(t) => Ok(t),
            Err(create_err) => {
                let url = deltalake::ensure_table_uri(&self.uri).map_err(|e| self.err(e))?;
                match deltalake::open_table(url).await {
                    Ok(t) => {
                        self.check_schema(&t)?;
                        if self.mode_of(&t)? != self.mode {
                            return Err(
                                self.err("a concurrent run created the link table in another mode")
                            );
                        }
                        Ok(t)
                    }
                    Err(_) => Err(create_err),
                }
            }
        }
    }

    async fn try_create(&self) -> Result<DeltaTable> {
        let mut fields: Vec<StructField> = self
            .keys
            .iter()
            .map(|(n, t)| {
                let dt = match t {
                    KeyType::Long => DataType::LONG,
                    KeyType::Int => DataType::INTEGER,
                    KeyType::String => DataType::STRING,
                };
                StructField::new(n.clone(), dt, false)
            })
            .collect();
        fields.push(StructField::new(BATCH_ID, DataType::LONG, false));
        fields.push(StructField::new(
            UPSTREAMS,
            DataType::Array(Box::new(ArrayType::new(DataType::STRING, false))),
            true,
        ));
        fields.push(StructField::new(CHANGE_TS, DataType::TIMESTAMP, true));
        fields.push(StructField::new(UPDATED_AT, DataType::TIMESTAMP, false));
        let url = deltalake::ensure_table_uri(&self.uri).map_err(|e| self.err(e))?;
        DeltaTableBuilder::from_url(url)
            .map_err(|e| self.err(e))?
            .build()
            .map_err(|e| self.err(e))?
            .create()
            .with_table_name(format!("dlink_{}", self.pipeline))
            .with_comment(format!(
                "Affected keys of dlink-rt pipeline '{}'. Written only by dlink-rt. {MODE_PROPERTY}={}",
                self.pipeline,
                self.mode.as_str()
            ))
            .with_columns(fields)
            .with_configuration_property(TableProperty::EnableChangeDataFeed, Some("true"))
            .with_save_mode(SaveMode::ErrorIfExists)
            // A concurrent creator must fail, not commit a second CREATE after it.
            .with_commit_properties(CommitProperties::default().with_max_retries(0))
            .await
            .map_err(|e| self.err(format!("cannot create the link table: {e}")))
    }

    /// Commits one batch exactly once: the keys (appended to the change log, or merged
    /// on the key columns) and the checkpoint in one Delta commit. Fails with [`Error::Concurrent`] without writing
    /// when another run committed this batch first (seen before the commit, or as the
    /// Delta conflict on the pipeline's application transaction).
    pub async fn commit(&mut self, c: Commit<'_>) -> Result<i64> {
        let batch_id = c.batch_id;
        let expected = self.known.take();
        let err = match self.write_batch(&c, expected.as_ref()).await {
            Ok((v, cp)) => {
                self.known = Some(cp);
                self.merge_small_files().await;
                return Ok(v);
            }
            Err(e @ Error::Concurrent { .. }) => return Err(e),
            Err(e) => e,
        };
        // Did we lose a race (another run's batch, or a reset)? Then say so, and the run
        // starts over from the checkpoint it finds. If the checkpoint is as expected,
        // something else committed to the link table since the held snapshot (such as
        // an OPTIMIZE): write the batch once more on the fresh snapshot.
        let Ok(found) = self.reload_checkpoint().await else {
            return Err(err);
        };
        let moved = expected.as_ref().is_some_and(|cp| *cp != found);
        if found.batch_id >= batch_id || moved {
            return Err(Error::Concurrent {
                pipeline: self.pipeline.clone(),
                batch_id,
                found: found.batch_id,
            });
        }
        if expected.is_none() {
            return Err(err);
        }
        tracing::debug!(
            "{}: batch {batch_id} failed on the held snapshot ({err}); writing it on a fresh one",
            self.pipeline
        );
        let (v, cp) = self.write_batch(&c, None).await?;
        self.known = Some(cp);
        self.merge_small_files().await;
        Ok(v)
    }

    /// After a committed batch: when the change log holds `merge_small_files` files
    /// smaller than [`SMALL_FILE`], an OPTIMIZE merges them into files of about
    /// [`SMALL_FILE`] (larger files are left alone), in batch order. deltalake re-derives
    /// the table's list of active files after every commit, so a commit costs what the
    /// number of files costs; merging keeps that number, and the commit, bounded as the
    /// log grows. The OPTIMIZE is its own commit with no `txn`, so the checkpoint held
    /// stays valid; a failure is logged and changes nothing (the batch is committed, and
    /// `dlink-rt compact` merges the files later).
    async fn merge_small_files(&mut self) {
        if self.mode != LinkMode::Log || self.merge_small_files == 0 {
            return;
        }
        let Some(t) = self.table.as_ref() else {
            return;
        };
        let small = match t.snapshot() {
            Ok(s) => s
                .log_data()
                .iter()
                .filter(|f| f.size() < (SMALL_FILE / 2) as i64)
                .count(),
            Err(_) => return,
        };
        if small < self.merge_small_files {
            return;
        }
        let started = std::time::Instant::now();
        let props = CommitProperties::default().with_metadata([(
            "dlink".to_string(),
            json!({"compact": "merge_small_files", "host": concat!("dlink-rt ", env!("CARGO_PKG_VERSION"))}),
        )]);
        let target = std::num::NonZeroU64::new(SMALL_FILE).unwrap_or(std::num::NonZeroU64::MIN);
        match t
            .clone()
            .optimize()
            .with_target_size(target)
            .with_commit_properties(props)
            .await
        {
            Ok((merged, m)) => {
                tracing::info!(
                    "{}: merged {} small files of the change log into {} in {} ms",
                    self.pipeline,
                    m.num_files_removed,
                    m.num_files_added,
                    started.elapsed().as_millis()
                );
                self.table = Some(merged);
            }
            Err(e) => tracing::warn!(
                "{}: merging the change log's {small} small files failed (the batch is committed; `dlink-rt compact` merges them): {e}",
                self.pipeline
            ),
        }
    }

    async fn reload_checkpoint(&mut self) -> Result<Checkpoint> {
        if let Some(t) = self.table.as_mut() {
            t.update_state()
                .await
                .map_err(|e| Error::Other(e.to_string()))?;
        }
        self.read_checkpoint().await
    }

    /// Writes the batch; returns the link table's version and the checkpoint it holds.
    /// With the checkpoint `expected` at the held version, and that checkpoint one batch
    /// behind, it commits on the held snapshot; otherwise it reads the log first.
    async fn write_batch(
        &mut self,
        c: &Commit<'_>,
        expected: Option<&Checkpoint>,
    ) -> Result<(i64, Checkpoint)> {
        let held = match expected {
            Some(cp) if cp.batch_id == c.batch_id - 1 => self.table.clone(),
            _ => None,
        };
        let (mut table, mut checkpoint) = match (held, expected) {
            (Some(t), Some(cp)) => (t, cp.clone()),
            _ => {
                let t = self.refreshed().await?;
                (t, self.read_checkpoint().await?)
            }
        };
        if checkpoint.batch_id != c.batch_id - 1 {
            return Err(Error::Concurrent {
                pipeline: self.pipeline.clone(),
                batch_id: c.batch_id,
                found: checkpoint.batch_id,
            });
        }
        checkpoint.batch_id = c.batch_id;
        for u in c.upstreams {
            if let Some((_, end)) = u.range {
                checkpoint.done.insert(u.name.clone(), end);
            }
        }
        let mut txns = vec![Transaction::new(app_id(&self.pipeline), c.batch_id)];
        for u in c.upstreams {
            if let Some((_, end)) = u.range {
                txns.push(Transaction::new(
                    upstream_app_id(&self.pipeline, &u.name),
                    end,
                ));
            }
        }
        let upstreams: serde_json::Map<String, serde_json::Value> = c
            .upstreams
            .iter()
            .map(|u| {
                let v = match u.range {
                    Some((s, e)) => json!({"start_version": s, "end_version": e, "pinned_version": u.pinned, "change_rows": u.change_rows}),
                    None => json!({"start_version": null, "end_version": null, "pinned_version": u.pinned, "change_rows": 0}),
                };
                (u.name.clone(), v)
            })
            .collect();
        let lookups: serde_json::Map<String, serde_json::Value> = c
            .lookups
            .iter()
            .map(|(n, v)| (n.clone(), json!(v)))
            .collect();
        let meta = json!({
            "pipeline": self.pipeline,
            "batch_id": c.batch_id,
            "keys": c.keys.len(),
            "upstreams": upstreams,
            "lookups": lookups,
            "link_mode": self.mode.as_str(),
            "plugin": {"path": c.plugin_path, "sha256": c.plugin_sha256, "active_since_batch": c.plugin_active_since},
            "host": concat!("dlink-rt ", env!("CARGO_PKG_VERSION")),
        });
        let props = CommitProperties::default()
            .with_application_transactions(txns)
            .with_metadata([("dlink".to_string(), meta)]);
        let before = table.version();
        let empty = table
            .snapshot()
            .map_err(|e| self.err(e))?
            .log_data()
            .num_files()
            == 0;
        let append = self.mode == LinkMode::Log || empty;
        if !c.keys.is_empty() && append {
            // The change log, or a `latest` table with nothing to match against (the
            // first batch): an append writes the same rows as the MERGE would, without
            // planning a join or writing change files.
            // deltalake's record-batch writer: one parquet file with its statistics
            // and one commit, without planning a DataFusion write (whose per-row
            // checks of the non-null list elements cost more than the file itself).
            let rows = self.rows(&table, c.batch_id, c.keys, false)?;
            let failed = |e: deltalake::DeltaTableError| {
                self.err(format!("append of batch {} failed: {e}", c.batch_id))
            };
            let mut writer = RecordBatchWriter::for_table(&table)
                .map_err(failed)?
                .with_commit_properties(props.clone());
            writer.write(rows).await.map_err(failed)?;
            writer.flush_and_commit(&mut table).await.map_err(failed)?;
        } else if !c.keys.is_empty() {
            let source = self.rows(&table, c.batch_id, c.keys, true)?;
            let ctx = crate::cdf::session();
            let df = ctx.read_batch(source).map_err(|e| self.err(e))?;
            let on = self
                .keys
                .iter()
                .map(|(k, _)| format!("t.{k} = s.{k}"))
                .collect::<Vec<_>>()
                .join(" AND ");
            let all_cols: Vec<String> = self
                .keys
                .iter()
                .map(|(k, _)| k.clone())
                .chain([BATCH_ID, UPSTREAMS, CHANGE_TS, UPDATED_AT].map(String::from))
                .collect();
            let (t, _metrics) = table
                .clone()
                .merge(df, on)
                .with_source_alias("s")
                .with_target_alias("t")
                .with_commit_properties(props.clone())
                .when_matched_update(|u| {
                    [BATCH_ID, UPSTREAMS, CHANGE_TS, UPDATED_AT]
                        .into_iter()
                        .fold(u, |u, c| u.update(c, format!("s.{c}")))
                })
                .and_then(|m| {
                    m.when_not_matched_insert(|i| {
                        all_cols
                            .iter()
                            .fold(i, |i, c| i.set(c.as_str(), format!("s.{c}")))
                    })
                })
                .map_err(|e| self.err(e))?
                .await
                .map_err(|e| self.err(format!("MERGE of batch {} failed: {e}", c.batch_id)))?;
            table = t;
        }
        if table.version() == before {
            // No key, or a MERGE that changed nothing: commit the checkpoint alone.
            self.commit_without_data(&mut table, props)
                .await
                .map_err(|e| self.err(format!("commit of batch {} failed: {e}", c.batch_id)))?;
        }
        let version = table
            .version()
            .map(|v| v as i64)
            .ok_or_else(|| self.err("the link table has no version after the commit"))?;
        self.table = Some(table);
        Ok((version, checkpoint))
    }

    /// Moves an upstream's checkpoint so that the next run reads from `next_version`
    /// (skipping or re-reading versions), recording in the commit metadata what was
    /// skipped, by whom and when. The batch id does not change. Returns the link
    /// table's new version.
    pub async fn reset(
        &mut self,
        upstream: &str,
        next_version: i64,
        by: &str,
        reason: Option<&str>,
    ) -> Result<i64> {
        if !self.upstreams.iter().any(|u| u == upstream) {
            return Err(self.err(format!(
                "'{upstream}' is not an upstream of the pipeline (upstreams: {})",
                self.upstreams.join(", ")
            )));
        }
        let mut table = self.refreshed().await?;
        self.known = None;
        let cp = self.read_checkpoint().await?;
        let previous_next = cp.done.get(upstream).map(|d| d + 1);
        let meta = json!({
            "pipeline": self.pipeline,
            "batch_id": cp.batch_id,
            "reset": {
                "upstream": upstream,
                "from_next_version": previous_next,
                "to_next_version": next_version,
                "skipped_versions": match previous_next {
                    Some(p) if p < next_version => json!([p, next_version - 1]),
                    _ => serde_json::Value::Null,
                },
                "by": by,
                "at": chrono::Utc::now().to_rfc3339(),
                "reason": reason,
            },
            "host": concat!("dlink-rt ", env!("CARGO_PKG_VERSION")),
        });
        // The pipeline's own txn is repeated so that a batch committed concurrently
        // conflicts with this reset instead of silently overwriting it.
        let txns = vec![
            Transaction::new(app_id(&self.pipeline), cp.batch_id),
            Transaction::new(upstream_app_id(&self.pipeline, upstream), next_version - 1),
        ];
        let props = CommitProperties::default()
            .with_application_transactions(txns)
            .with_metadata([("dlink".to_string(), meta)]);
        self.commit_without_data(&mut table, props)
            .await
            .map_err(|e| self.err(format!("reset commit failed: {e}")))?;
        let version = table
            .version()
            .map(|v| v as i64)
            .ok_or_else(|| self.err("the link table has no version after the reset"))?;
        self.table = Some(table);
        Ok(version)
    }

    /// A commit with no data: only `props`' transactions and metadata.
    async fn commit_without_data(
        &self,
        table: &mut DeltaTable,
        props: CommitProperties,
    ) -> Result<()> {
        *table = commit_without_actions(table, props)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// One row per key, in the link table's own Arrow schema (every column nullable for
    /// a MERGE source).
    fn rows(
        &self,
        t: &DeltaTable,
        batch_id: i64,
        k: &AffectedKeys,
        nullable: bool,
    ) -> Result<RecordBatch> {
        let schema: SchemaRef = t
            .snapshot()
            .map_err(|e| self.err(e))?
            .snapshot()
            .arrow_schema();
        let n = k.len();
        let now = chrono::Utc::now().timestamp_micros();
        let mut ups = ListBuilder::new(StringBuilder::new());
        for names in &k.upstreams {
            for name in names.iter() {
                ups.values().append_value(name);
            }
            ups.append(true);
        }
        let mut cols: Vec<ArrayRef> = k.columns.clone();
        cols.push(Arc::new(Int64Array::from(vec![batch_id; n])));
        cols.push(Arc::new(ups.finish()));
        cols.push(Arc::new(
            TimestampMicrosecondArray::from(k.change_ts.clone()).with_timezone("UTC"),
        ));
        cols.push(Arc::new(
            TimestampMicrosecondArray::from(vec![now; n]).with_timezone("UTC"),
        ));
        // Cast each column to the table's exact type (list field names, tz spelling).
        let cols = cols
            .into_iter()
            .zip(schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c)
                } else {
                    cast(&c, f.data_type())
                        .map_err(|e| self.err(format!("column {}: {e}", f.name())))
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let schema = if nullable {
            Arc::new(deltalake::arrow::datatypes::Schema::new(
                schema
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone().with_nullable(true))
                    .collect::<Vec<_>>(),
            ))
        } else {
            schema
        };
        RecordBatch::try_new(schema, cols).map_err(|e| self.err(e))
    }
}
