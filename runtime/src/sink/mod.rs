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

mod cleanup;
mod create;
mod error;
mod merge;
pub mod meta;
mod protocol;
mod rows;

pub(crate) use cleanup::cleanup_at_checkpoints;
pub use error::CommitError;

/// What a link-table operation returns.
pub type Result<T, E = CommitError> = std::result::Result<T, E>;
pub use meta::HOST;
pub use protocol::*;

use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{ArrayType, DataType, StructField};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::{DeltaTable, DeltaTableBuilder, TableProperty};
use serde_json::json;

use crate::config::{KeyType, LinkMode, Pipeline};

/// Keys per record batch written to the link table.
const WRITE_CHUNK_ROWS: usize = 1 << 16;
/// Size of one link-table data file at most (parquet bytes): a big batch is written
/// as several files, each streamed to storage, in one commit.
const LINK_FILE_BYTES: u64 = 128 << 20;

/// Commits `props` (application transactions and metadata) with no data on `table`'s
/// snapshot; returns the table at the new version. Conflicts come back as Delta's own
/// errors (see [`crate::consumer`]'s retries).
pub(crate) async fn commit_without_actions(
    table: &DeltaTable,
    props: CommitProperties,
) -> deltalake::DeltaResult<DeltaTable> {
    let state = table.snapshot()?;
    let done = CommitBuilder::from(cleanup_at_checkpoints(table, props))
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
    /// Object-store options of the table (never printed).
    storage: crate::storage::StorageOptions,
}

impl LinkTable {
    fn err(&self, e: impl Into<crate::storage::Cause>) -> CommitError {
        CommitError::Link {
            pipeline: self.pipeline.clone(),
            uri: self.uri.clone(),
            source: crate::storage::StoreError::new(e, &self.storage),
        }
    }

    /// A builder of the link table, with its storage options.
    fn builder(&self) -> Result<DeltaTableBuilder> {
        crate::storage::builder(&self.uri, &self.storage).map_err(|e| self.err(e))
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
            storage: p.link_storage.clone(),
        };
        if !crate::storage::has_log(&link.uri, &link.storage)
            .await
            .map_err(|e| link.err(e))?
        {
            return Ok(link);
        }
        let mut t = link.builder()?.build().map_err(|e| link.err(e))?;
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

    /// The link table's mode.
    pub fn mode(&self) -> LinkMode {
        self.mode
    }

    /// The link table is gone ([`CommitError::Gone`]) after `batch_id`.
    pub fn gone(&self, batch_id: i64) -> CommitError {
        CommitError::Gone {
            pipeline: self.pipeline.clone(),
            uri: self.uri.clone(),
            batch_id,
        }
    }

    /// Whether the link table is still at the version held (lists the log for newer
    /// entries). A link table not created yet counts as unchanged: the first commit
    /// adopts one a concurrent run created. One that is gone is an error.
    pub async fn unchanged(&mut self) -> Result<bool> {
        let Some(t) = self.table.as_ref() else {
            return Ok(true);
        };
        // Nothing committed since: one stat of the next commit file, no log listing.
        if let Some(v) = t.version() {
            let next = i64::try_from(v + 1).unwrap_or(i64::MAX);
            if !crate::cdf::has_version(t, next)
                .await
                .map_err(|e| self.err(e))?
            {
                // Still there? The entry of the version held is never cleaned up.
                let held = i64::try_from(v).unwrap_or(i64::MAX);
                if !crate::cdf::has_version(t, held)
                    .await
                    .map_err(|e| self.err(e))?
                {
                    return Err(self.gone(self.known.as_ref().map_or(0, |c| c.batch_id)));
                }
                return Ok(true);
            }
        }
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
            .chain(
                self.upstreams
                    .iter()
                    .map(|u| protocol::table_id_app_id(&self.pipeline, u)),
            )
            .collect::<Vec<_>>();
        let versions = futures::future::try_join_all(
            ids.into_iter()
                .map(|id| state.transaction_version(log_store.as_ref(), id)),
        )
        .await
        .map_err(|e| self.err(e))?;
        let batch_id = versions.first().copied().flatten().unwrap_or(0);
        let n = self.upstreams.len();
        let per_upstream = |skip: usize| {
            self.upstreams
                .iter()
                .zip(versions.iter().skip(skip).take(n))
                .filter_map(|(u, v)| v.map(|v| (u.clone(), v)))
                .collect()
        };
        Ok(Checkpoint {
            batch_id,
            done: per_upstream(1),
            tables: per_upstream(1 + n),
        })
    }

    /// Commits one batch exactly once: the keys (appended to the change log, or merged
    /// on the key columns) and the checkpoint in one Delta commit. Fails with [`CommitError::Concurrent`] without writing
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
            Err(e @ CommitError::Concurrent { .. }) => return Err(e),
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
            return Err(CommitError::Concurrent {
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

    async fn reload_checkpoint(&mut self) -> Result<Checkpoint> {
        if let Some(t) = self.table.as_mut() {
            if let Err(e) = t.update_state().await {
                return Err(self.err(e));
            }
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
        let (mut table, checkpoint) = match (held, expected) {
            (Some(t), Some(cp)) => (t, cp.clone()),
            _ => {
                let t = self.refreshed().await?;
                (t, self.read_checkpoint().await?)
            }
        };
        let checkpoint =
            protocol::after_batch(&checkpoint, c).map_err(|found| CommitError::Concurrent {
                pipeline: self.pipeline.clone(),
                batch_id: c.batch_id,
                found,
            })?;
        let props = CommitProperties::default()
            .with_application_transactions(protocol::batch_transactions(&self.pipeline, c))
            .with_metadata([(
                "dlink".to_string(),
                meta::batch_metadata(&self.pipeline, self.mode, c),
            )]);
        let props = cleanup_at_checkpoints(&table, props);
        let before = table.version();
        let empty = table
            .snapshot()
            .map_err(|e| self.err(e))?
            .log_data()
            .num_files()
            == 0;
        let append = self.mode == LinkMode::Log || empty;
        if !c.keys.is_empty() && append {
            self.append_keys(&mut table, c, props.clone()).await?;
        } else if !c.keys.is_empty() {
            table = self.merge_keys(table, c, props.clone()).await?;
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

    /// Appends the batch's key rows: the change log, or a `latest` table with nothing
    /// to match against (the first batch), where an append writes the same rows as the
    /// MERGE would without planning a join or writing change files. deltalake's
    /// record-batch writer: one parquet file with its statistics and one commit, without
    /// planning a DataFusion write (whose per-row checks of the non-null list elements
    /// cost more than the file itself).
    async fn append_keys(
        &self,
        table: &mut DeltaTable,
        c: &Commit<'_>,
        props: CommitProperties,
    ) -> Result<()> {
        let failed = |e: deltalake::DeltaTableError| {
            self.err(
                crate::storage::Cause::from(e)
                    .doing(format_args!("append of batch {} failed", c.batch_id)),
            )
        };
        // The keys streamed into files of at most LINK_FILE_BYTES: a chunk of keys and
        // the writer's open file in memory, whatever the batch's size.
        let mut writer = RecordBatchWriter::for_table(table)
            .map_err(failed)?
            .with_target_file_size(LINK_FILE_BYTES);
        let spill = |e: crate::affected::SpillError| {
            self.err(format!("cannot read the batch's spilled keys: {e}"))
        };
        let mut wrote = Ok(());
        for part in c.keys.chunks(WRITE_CHUNK_ROWS).map_err(spill)? {
            let rows = part
                .map_err(spill)
                .and_then(|k| self.rows(table, c.batch_id, &k, false));
            wrote = match rows {
                Ok(rows) => writer.write(rows).await.map_err(failed),
                Err(e) => Err(e),
            };
            if wrote.is_err() {
                break;
            }
        }
        if let Err(e) = wrote {
            writer.reset();
            return Err(e);
        }
        let adds = writer.flush().await.map_err(failed)?;
        let written: Vec<String> = adds.iter().map(|a| a.path.clone()).collect();
        let snapshot = table.snapshot().map_err(failed)?.clone();
        let committed = CommitBuilder::from(props)
            .with_actions(
                adds.into_iter()
                    .map(deltalake::kernel::Action::Add)
                    .collect(),
            )
            .build(
                Some(&snapshot),
                table.log_store(),
                DeltaOperation::Write {
                    mode: SaveMode::Append,
                    partition_by: None,
                    predicate: None,
                },
            )
            .await;
        match committed {
            Ok(done) => {
                table.state = Some(done.snapshot());
                Ok(())
            }
            Err(e) => {
                // The data files of a commit that did not happen are nobody's: remove
                // them now (a retry writes its own), rather than leaving one per failed
                // attempt for a VACUUM that only takes them once past the retention.
                remove_files(table, &written).await;
                Err(failed(e))
            }
        }
    }

    /// MERGEs the batch's keys into a `latest` table: a key's row is updated (batch,
    /// upstreams, change time) or inserted. Returns the table after the commit.
    async fn merge_keys(
        &self,
        table: DeltaTable,
        c: &Commit<'_>,
        props: CommitProperties,
    ) -> Result<DeltaTable> {
        // A MERGE source is one table: the keys in memory (a spilled batch's read back).
        let spill = |e: crate::affected::SpillError| {
            self.err(format!("cannot read the batch's spilled keys: {e}"))
        };
        let parts = c
            .keys
            .chunks(usize::MAX)
            .map_err(spill)?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(spill)?;
        let keys =
            crate::affected::AffectedKeys::concat(parts).map_err(|e| self.err(e.to_string()))?;
        let source = self.rows(&table, c.batch_id, &keys, true)?;
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
            .merge(df, on)
            .with_source_alias("s")
            .with_target_alias("t")
            .with_commit_properties(props)
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
            .map_err(|e| {
                self.err(
                    crate::storage::Cause::from(e)
                        .doing(format_args!("MERGE of batch {} failed", c.batch_id)),
                )
            })?;
        Ok(t)
    }

    /// Moves an upstream's checkpoint so that the next run reads from `next_version`
    /// (skipping or re-reading versions), recording in the commit metadata what was
    /// skipped, by whom and when. The batch id does not change. Returns the link
    /// table's new version.
    /// The commit metadata of batch `batch_id`, looked for among the newest commits
    /// (it is usually the newest; acks, resets and compactions may follow it); `None`
    /// when it is not found there or the log cannot be read.
    pub async fn batch_record(&self, batch_id: i64) -> Option<meta::BatchMeta> {
        const SEARCHED: u64 = 50;
        let table = self.table.as_ref()?;
        let latest = table.version()?;
        let log = table.log_store();
        for v in (latest.saturating_sub(SEARCHED)..=latest).rev() {
            let bytes = log.read_commit_entry(v).await.ok()??;
            if let Some(m) = meta::batch_meta(&bytes).filter(|m| m.batch_id == batch_id) {
                return Some(m);
            }
        }
        None
    }

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
        let reset = protocol::Reset {
            upstream,
            next_version,
            by,
            reason,
        };
        let props = CommitProperties::default()
            .with_application_transactions(reset.transactions(&self.pipeline, &cp))
            .with_metadata([(
                "dlink".to_string(),
                reset.metadata(&self.pipeline, &cp, chrono::Utc::now()),
            )]);
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
}

/// Deletes `paths` (relative to the table) from its store, logging what cannot be.
async fn remove_files(table: &DeltaTable, paths: &[String]) {
    use object_store::ObjectStoreExt;
    let store = table.log_store().object_store(None);
    for p in paths {
        let Ok(path) = deltalake::Path::from_url_path(p) else {
            continue;
        };
        match store.delete(&path).await {
            Ok(()) => tracing::debug!(file = %p, "removed the data file of a failed commit"),
            Err(e) => {
                tracing::warn!(file = %p, error = %e, "cannot remove the data file of a failed commit (VACUUM removes it once past the retention)")
            }
        }
    }
}
