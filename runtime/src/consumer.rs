//! The downstream side: reading the affected keys of a window of batches from a
//! pipeline's link table.
//!
//! A window is every batch after a given batch (or committed since a given time) up to
//! the link table's checkpointed batch, read from one snapshot of the link table. On a
//! change log each file holds one batch, so the filter on `dlink_batch_id` (or
//! `dlink_updated_at`) prunes every older file by its statistics: the read costs the
//! new batches, not the table. Each key comes once, with its causes: the upstreams
//! whose changes reported it, the newest change time and the batches.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use deltalake::arrow::array::{Array, RecordBatch};
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::datafusion::physical_plan::{collect, ExecutionPlan};
use deltalake::datafusion::prelude::SessionContext;
use deltalake::DeltaTable;

use crate::config::Pipeline;
use crate::engine::error::{CommitError, Error, Result};
use crate::sink::{app_id, retention_app_id, BATCH_ID, CHANGE_TS, UPDATED_AT, UPSTREAMS};
use crate::storage::{Cause, StoreErrorKind};

/// Where a window starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Since {
    /// The batches after this batch id (0: every batch).
    Batch(i64),
    /// The batches committed at or after this time.
    Time(DateTime<Utc>),
}

/// The affected keys of a window of batches.
#[derive(Debug, Clone)]
pub struct Window {
    /// The batch the window starts after (for a window by batch).
    pub after_batch: Option<i64>,
    /// The last batch of the window: the link table's checkpointed batch.
    pub through_batch: i64,
    /// The link table version the window was read at.
    pub link_version: i64,
    /// Data files of the link table at that version, and those the read opened.
    pub files_total: usize,
    pub files_scanned: usize,
    /// One row per distinct key: the key columns, `dlink_upstreams` (sorted, distinct),
    /// `dlink_change_ts` (newest), `dlink_batches` (sorted batch ids).
    pub schema: SchemaRef,
    pub keys: Vec<RecordBatch>,
}

impl Window {
    /// Number of distinct keys.
    pub fn len(&self) -> usize {
        self.keys.iter().map(|b| b.num_rows()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The column of a window's batch ids.
pub const BATCHES: &str = "dlink_batches";

/// Opens pipeline `p`'s link table at its latest version.
pub(crate) async fn open_link(p: &Pipeline) -> Result<DeltaTable> {
    let builder = crate::storage::builder(&p.link_uri, &p.link_storage)
        .map_err(|e| CommitError::link(p, e))?;
    match builder.load().await {
        Ok(t) => Ok(t),
        Err(deltalake::DeltaTableError::NotATable(_)) => Err(no_link_table(p)),
        Err(e) => Err(CommitError::link(p, Cause::from(e).doing("cannot open it")).into()),
    }
}

/// The error of reading pipeline `p`'s link table before its first run.
pub(crate) fn no_link_table(p: &Pipeline) -> Error {
    CommitError::link(
        p,
        Cause::new(
            StoreErrorKind::NotATable,
            "there is no link table yet: run the pipeline first (`dlink-rt run`)",
        ),
    )
    .into()
}

/// The version of application transaction `id` in `table` (0 when absent).
pub(crate) async fn txn_version(table: &DeltaTable, id: String) -> deltalake::DeltaResult<i64> {
    let s = table.snapshot()?;
    Ok(s.transaction_version(table.log_store().as_ref(), id)
        .await?
        .unwrap_or(0))
}

/// Reads the keys of the batches `since` of pipeline `p`'s link table.
///
/// A window by batch that starts before the oldest batch retention kept fails with
/// [`CommitError::Expired`]; a window by time holds what is left (see
/// [`removed_through`]).
pub async fn read_window(p: &Pipeline, since: &Since) -> Result<Window> {
    let reader = match since {
        Since::Batch(n) => format!("--since-batch {n}"),
        Since::Time(t) => format!("--since {}", t.to_rfc3339()),
    };
    let way_out = |removed: i64| match since {
        Since::Batch(_) => format!("read from there on: `--since-batch {removed}`"),
        Since::Time(_) => String::new(),
    };
    window_of(p, &open_link(p).await?, since, &reader, way_out).await
}

/// The last batch retention removed from `p`'s change log (0: none).
pub async fn removed_through(p: &Pipeline) -> Result<i64> {
    let t = open_link(p).await?;
    txn_version(&t, retention_app_id(&p.name))
        .await
        .map_err(|e| CommitError::link(p, e).into())
}

/// The query of a window: one row per key of the batches after `since` up to
/// `through_batch`, with its causes, newest change time and batches.
fn window_query(p: &Pipeline, since: &Since, through_batch: i64) -> String {
    let keys = p
        .keys
        .iter()
        .map(|k| format!("\"{}\"", k.name))
        .collect::<Vec<_>>()
        .join(", ");
    let from = match since {
        Since::Batch(n) => format!("{BATCH_ID} > {n}"),
        Since::Time(t) => format!(
            "{UPDATED_AT} >= TIMESTAMP '{}'",
            t.format("%Y-%m-%dT%H:%M:%S%.6fZ")
        ),
    };
    // Batches past the checkpoint cannot exist (they are one commit with it), but the
    // bound keeps a window what its `through_batch` says.
    format!(
        "SELECT {keys}, \
           array_sort(array_distinct(flatten(array_agg({UPSTREAMS})))) AS {UPSTREAMS}, \
           max({CHANGE_TS}) AS {CHANGE_TS}, \
           array_sort(array_agg(DISTINCT {BATCH_ID})) AS {BATCHES} \
         FROM link WHERE {from} AND {BATCH_ID} <= {through_batch} \
         GROUP BY {keys} ORDER BY {keys}"
    )
}

/// The window `since` of `table` (`p`'s link table), read from that snapshot, for
/// `reader` (who asks, for the error when it starts before what retention kept).
async fn window_of(
    p: &Pipeline,
    table: &DeltaTable,
    since: &Since,
    reader: &str,
    way_out: impl Fn(i64) -> String,
) -> Result<Window> {
    let snapshot = table.snapshot().map_err(|e| CommitError::link(p, e))?;
    let link_version = snapshot.version() as i64;
    let files_total = snapshot.log_data().num_files();
    let through_batch = txn_version(table, app_id(&p.name))
        .await
        .map_err(|e| CommitError::link(p, e))?;
    let removed = txn_version(table, retention_app_id(&p.name))
        .await
        .map_err(|e| CommitError::link(p, e))?;
    if let Since::Batch(after) = since {
        if *after < removed {
            return Err(Error::Commit(CommitError::Expired {
                pipeline: p.name.clone(),
                uri: p.link_uri.clone(),
                reader: reader.to_string(),
                first_missing: after + 1,
                through: removed,
                way_out: way_out(removed),
            }));
        }
    }

    let ctx = SessionContext::new();
    let provider = table
        .table_provider()
        .await
        .map_err(|e| CommitError::link(p, e))?;
    ctx.register_table("link", provider)
        .map_err(|e| CommitError::link(p, e))?;
    let sql = window_query(p, since, through_batch);
    let df = ctx.sql(&sql).await.map_err(|e| CommitError::link(p, e))?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let plan = df
        .create_physical_plan()
        .await
        .map_err(|e| CommitError::link(p, e))?;
    let keys = collect(plan.clone(), ctx.task_ctx())
        .await
        .map_err(|e| CommitError::link(p, Cause::from(e).doing("reading the window")))?;
    Ok(Window {
        after_batch: match since {
            Since::Batch(n) => Some(*n),
            Since::Time(_) => None,
        },
        through_batch,
        link_version,
        files_total,
        files_scanned: files_scanned(plan.as_ref()),
        schema,
        keys,
    })
}

/// The data files the Delta scans of an executed plan opened.
fn files_scanned(plan: &dyn ExecutionPlan) -> usize {
    let own = plan
        .metrics()
        .and_then(|m| m.sum_by_name("count_files_scanned"))
        .map(|v| v.as_usize())
        .unwrap_or(0);
    own + plan
        .children()
        .into_iter()
        .map(|c| files_scanned(c.as_ref()))
        .sum::<usize>()
}

/// The application id of a consumer's position in a link table.
pub fn consumer_app_id(name: &str) -> String {
    format!("dlink-consumer:{name}")
}

/// A downstream job reading a pipeline's affected keys exactly once: its position (the
/// last batch it acknowledged) is a Delta application transaction of the link table,
/// `dlink-consumer:<name>`, so an ack is one atomic Delta commit, two acks of one
/// consumer conflict in Delta's own conflict check, and the pipeline's commits and
/// other consumers' acks go through beside it.
pub struct Consumer {
    pipeline: Pipeline,
    name: String,
}

impl Consumer {
    pub fn new(pipeline: Pipeline, name: &str) -> Result<Consumer> {
        if name.is_empty() || name.contains(':') || name.chars().any(char::is_whitespace) {
            return Err(Error::config(format!(
                "consumer name '{name}': give a non-empty name without ':' or spaces"
            )));
        }
        Ok(Consumer {
            pipeline,
            name: name.to_string(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn err(&self, e: impl Into<Cause>) -> Error {
        CommitError::link(
            &self.pipeline,
            e.into().doing(format_args!("consumer '{}'", self.name)),
        )
        .into()
    }

    async fn table(&self) -> Result<DeltaTable> {
        open_link(&self.pipeline).await
    }

    /// The last batch this consumer acknowledged (0 when it never did).
    pub async fn position(&self) -> Result<i64> {
        let t = self.table().await?;
        txn_version(&t, consumer_app_id(&self.name))
            .await
            .map_err(|e| self.err(e))
    }

    /// The keys of the batches after this consumer's position, up to the newest
    /// committed batch (`through_batch`, the batch to acknowledge once they are done),
    /// both read from one snapshot of the link table.
    pub async fn next_keys(&self) -> Result<Window> {
        let t = self.table().await?;
        let after = txn_version(&t, consumer_app_id(&self.name))
            .await
            .map_err(|e| self.err(e))?;
        let file = self.pipeline.file.display();
        let way_out = format!(
            "skip this consumer to the oldest batch kept: `dlink-rt ack {file} --consumer {} --to-earliest`",
            self.name
        );
        window_of(
            &self.pipeline,
            &t,
            &Since::Batch(after),
            &format!("consumer '{}'", self.name),
            |_| way_out.clone(),
        )
        .await
    }

    /// Moves this consumer's position to the last batch retention removed, so that it
    /// reads on from the oldest batch kept (the removed batches' keys are skipped).
    /// Returns (previous position, new position); a consumer already past it stays.
    pub async fn ack_to_earliest(&self) -> Result<(i64, i64)> {
        let t = self.table().await?;
        let removed = txn_version(&t, retention_app_id(&self.pipeline.name))
            .await
            .map_err(|e| self.err(e))?;
        let current = txn_version(&t, consumer_app_id(&self.name))
            .await
            .map_err(|e| self.err(e))?;
        if current >= removed {
            return Ok((current, current));
        }
        let previous = self.ack(removed, false).await?;
        Ok((previous, removed))
    }

    /// Records that every batch up to `batch` is done: one Delta commit. An ack never
    /// moves the position backwards unless `force`, and never past the newest batch.
    /// Returns the previous position.
    pub async fn ack(&self, batch: i64, force: bool) -> Result<i64> {
        use deltalake::kernel::transaction::CommitProperties;
        use deltalake::kernel::Transaction;
        if batch < 0 {
            return Err(Error::config(format!(
                "--batch {batch}: give a batch id >= 0"
            )));
        }
        // A concurrent ack of the same consumer makes ours conflict: read again and
        // decide again (a few times), so that the rules hold whatever the interleaving.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let t = self.table().await?;
            let current = txn_version(&t, consumer_app_id(&self.name))
                .await
                .map_err(|e| self.err(e))?;
            let newest = txn_version(&t, app_id(&self.pipeline.name))
                .await
                .map_err(|e| self.err(e))?;
            if batch > newest {
                return Err(self.err(format!(
                    "cannot acknowledge batch {batch}: the newest batch is {newest}"
                )));
            }
            if batch < current && !force {
                return Err(self.err(format!(
                    "its position is batch {current}; acknowledging batch {batch} would move it back (--force to do so)"
                )));
            }
            if batch == current {
                return Ok(current);
            }
            let meta = serde_json::json!({
                "consumer": {"name": self.name, "from_batch": current, "to_batch": batch, "forced": force && batch < current,
                             "at": Utc::now().to_rfc3339()},
                "host": crate::sink::HOST,
            });
            let props = CommitProperties::default()
                .with_application_transactions(vec![Transaction::new(
                    consumer_app_id(&self.name),
                    batch,
                )])
                .with_metadata([("dlink".to_string(), meta)]);
            let done = crate::sink::commit_without_actions(&t, props).await;
            match done {
                Ok(_) => return Ok(current),
                Err(e) if attempt < 5 && is_conflict(&e) => {
                    tracing::debug!(
                        "ack of consumer '{}' lost a race, deciding again: {e}",
                        self.name
                    );
                }
                Err(e) => return Err(self.err(Cause::from(e).doing("the ack commit failed"))),
            }
        }
    }
}

/// Whether a commit lost to a concurrent one (and may be decided again on a fresh
/// snapshot).
pub(crate) fn is_conflict(e: &deltalake::DeltaTableError) -> bool {
    use deltalake::kernel::transaction::TransactionError;
    matches!(
        e,
        deltalake::DeltaTableError::VersionAlreadyExists(_)
            | deltalake::DeltaTableError::Transaction {
                source: TransactionError::CommitConflict(_)
                    | TransactionError::MaxCommitAttempts(_)
                    | TransactionError::VersionAlreadyExists(_)
            }
    )
}

/// Where a registered consumer stands.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConsumerStatus {
    pub name: String,
    /// The last batch it acknowledged (0: none).
    pub position: i64,
    /// The newest batch of the link table.
    pub newest_batch: i64,
    /// Batches it has not acknowledged.
    pub lag_batches: i64,
    /// Seconds since the oldest batch it has not acknowledged was committed (0 when
    /// it is up to date).
    pub lag_seconds: f64,
    /// Whether retention removed batches it has not read (its next read fails until
    /// `ack --to-earliest`).
    pub behind_retention: bool,
}

/// The position and lag of each registered consumer (`[link] consumers`) of `p`.
pub async fn statuses(p: &Pipeline) -> Result<Vec<ConsumerStatus>> {
    let mut out = Vec::new();
    if p.consumers.is_empty() {
        return Ok(out);
    }
    let t = open_link(p).await?;
    let newest = txn_version(&t, app_id(&p.name))
        .await
        .map_err(|e| CommitError::link(p, e))?;
    let removed = txn_version(&t, retention_app_id(&p.name))
        .await
        .map_err(|e| CommitError::link(p, e))?;
    for name in &p.consumers {
        let c = Consumer::new(p.clone(), name)?;
        let position = txn_version(&t, consumer_app_id(name))
            .await
            .map_err(|e| c.err(e))?;
        let lag_seconds = if newest > position {
            let ctx = SessionContext::new();
            let provider = t.table_provider().await.map_err(|e| c.err(e))?;
            ctx.register_table("link", provider).map_err(|e| c.err(e))?;
            let oldest = ctx
                .sql(&format!(
                    "SELECT CAST(min({UPDATED_AT}) AS BIGINT) AS t FROM link WHERE {BATCH_ID} > {position}"
                ))
                .await
                .map_err(|e| c.err(e))?
                .collect()
                .await
                .map_err(|e| c.err(e))?;
            let micros = oldest.first().and_then(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<deltalake::arrow::array::Int64Array>()
                    .filter(|a| !a.is_empty() && a.is_valid(0))
                    .map(|a| a.value(0))
            });
            micros
                .map(|m| ((Utc::now().timestamp_micros() - m) as f64 / 1e6).max(0.0))
                .unwrap_or(0.0)
        } else {
            0.0
        };
        out.push(ConsumerStatus {
            name: name.clone(),
            position,
            newest_batch: newest,
            lag_batches: (newest - position).max(0),
            lag_seconds,
            behind_retention: position < removed,
        });
    }
    Ok(out)
}

/// Parses `--since`: a duration back from `now` (`90s`, `15m`, `2h`, `7d`) or an RFC
/// 3339 time (`2026-12-01T00:00:00Z`).
pub fn parse_since(text: &str, now: DateTime<Utc>) -> std::result::Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let t = text.trim();
    let (n, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: i64 = n.parse().map_err(|_| bad_since(text))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(bad_since(text)),
    };
    Ok(now - chrono::Duration::seconds(secs))
}

fn bad_since(text: &str) -> String {
    format!(
        "--since '{text}': give a duration back from now (90s, 15m, 2h, 7d) or an RFC 3339 time (2026-12-01T00:00:00Z)"
    )
}

#[cfg(test)]
mod tests;
