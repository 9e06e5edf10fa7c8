//! Reading upstream tables: latest versions, Change Data Feed ranges, and tables as of
//! a pinned version. Knows nothing of plugins or link tables.

use std::sync::Arc;

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use deltalake::arrow::error::ArrowError;
use deltalake::datafusion::error::DataFusionError;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::datafusion::prelude::{col, lit};
use deltalake::delta_datafusion::DeltaCdfTableProvider;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};

use crate::config::Upstream;
use crate::storage::{Cause, StoreError, StoreErrorKind};

mod direct;
mod error;
mod fanout;
pub mod history;
mod logcheck;

pub use error::ReadError;

/// What reading an upstream returns.
pub type Result<T, E = ReadError> = std::result::Result<T, E>;
pub use fanout::{FanOut, FanOutStats};
pub use logcheck::LogCheck;

use history::{TableState, Unreadable};

/// `_change_type`: insert, update_preimage, update_postimage or delete.
pub const CHANGE_TYPE: &str = "_change_type";
/// `_commit_version` (int64).
pub const COMMIT_VERSION: &str = "_commit_version";
/// `_commit_timestamp` (timestamp[us, UTC]).
pub const COMMIT_TIMESTAMP: &str = "_commit_timestamp";

/// The type of `_commit_timestamp` everywhere in dlink-rt.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// A DataFusion session set up for Delta tables.
pub fn session() -> SessionContext {
    deltalake::delta_datafusion::create_session().into_inner()
}

/// An error about upstream `u`'s table (storage option values hidden).
pub(crate) fn table_err(u: &Upstream, e: impl Into<Cause>) -> ReadError {
    ReadError::Table {
        table: u.name.clone(),
        uri: u.uri.clone(),
        source: StoreError::new(e, &u.storage),
    }
}

fn builder_of(u: &Upstream) -> Result<DeltaTableBuilder> {
    crate::storage::builder(&u.uri, &u.storage).map_err(|e| table_err(u, e))
}

/// Whether `table` has a commit `version` (its `_delta_log/<version>.json`). This is
/// the cheap question an idle poll asks before reloading the log: one `stat` of a
/// local file (no listing, no thread hop) or one `HEAD` on an object store.
pub async fn has_version(
    table: &DeltaTable,
    version: i64,
) -> std::result::Result<bool, DeltaTableError> {
    use object_store::ObjectStoreExt;
    let Ok(version) = u64::try_from(version) else {
        return Ok(false);
    };
    let commit = deltalake::logstore::commit_uri_from_version(Some(version));
    let url = table.table_url();
    if url.scheme() == "file" {
        if let Ok(root) = url.to_file_path() {
            return match std::fs::metadata(root.join(commit.as_ref())) {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(DeltaTableError::Io { source: e }),
            };
        }
    }
    match table.log_store().object_store(None).head(&commit).await {
        Ok(_) => Ok(true),
        Err(deltalake::ObjectStoreError::NotFound { .. }) => Ok(false),
        Err(e) => Err(DeltaTableError::ObjectStore { source: e }),
    }
}

fn not_a_table() -> Cause {
    Cause::new(
        StoreErrorKind::NotATable,
        "no Delta table here (no _delta_log); check the uri in the catalog",
    )
}

/// Opens an upstream table at its latest version.
pub async fn open_latest(u: &Upstream) -> Result<DeltaTable> {
    if !crate::storage::has_log(&u.uri, &u.storage)
        .await
        .map_err(|e| table_err(u, e))?
    {
        return Err(table_err(u, not_a_table()));
    }
    builder_of(u)?.load().await.map_err(|e| match e {
        DeltaTableError::NotATable(_) => table_err(u, not_a_table()),
        e => table_err(u, e),
    })
}

/// Opens an upstream table as of `version`.
pub async fn open_at(u: &Upstream, version: i64) -> Result<DeltaTable> {
    builder_of(u)?
        .with_version(
            u64::try_from(version).map_err(|_| table_err(u, format!("no version {version}")))?,
        )
        .load()
        .await
        .map_err(|e| {
            table_err(
                u,
                Cause::from(e).doing(format_args!("cannot load version {version}")),
            )
        })
}

pub(crate) fn unreadable(u: &Upstream, version: i64, reason: Unreadable) -> ReadError {
    ReadError::Unreadable {
        table: u.name.clone(),
        version,
        reason,
        pipeline_file: None,
    }
}

/// The metadata state of a loaded table.
pub fn state_of(u: &Upstream, t: &DeltaTable) -> Result<TableState> {
    let m = serde_json::to_value(t.snapshot().map_err(|e| table_err(u, e))?.metadata())
        .map_err(|e| table_err(u, e))?;
    Ok(TableState::from_json(&m))
}

/// The table's latest version.
pub fn version_of(u: &Upstream, t: &DeltaTable) -> Result<i64> {
    t.version()
        .map(|v| v as i64)
        .ok_or_else(|| table_err(u, "the table has no version; is it empty?"))
}

/// The Arrow schema of a loaded table.
pub fn arrow_schema(u: &Upstream, t: &DeltaTable) -> Result<SchemaRef> {
    Ok(t.snapshot()
        .map_err(|e| table_err(u, e))?
        .snapshot()
        .arrow_schema())
}

/// The change rows of one upstream over an inclusive version range.
#[derive(Debug, Clone)]
pub struct Changes {
    /// Columns: the table's (or the declared) columns, then `_change_type`,
    /// `_commit_version`, `_commit_timestamp`.
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

impl Changes {
    /// Number of change rows.
    pub fn rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }

    /// No change rows.
    pub fn empty(schema: SchemaRef) -> Self {
        Changes {
            schema,
            batches: Vec::new(),
        }
    }
}

/// An upstream's change rows in a batch: read at once, or streamed as they are read
/// (a range bigger than one plugin call), so that a batch's memory does not grow with
/// its rows.
pub enum Rows {
    Read(Changes),
    Stream(ChangeStream),
}

/// Change rows streamed from their files in commit order (see [`direct::Plan::stream`]):
/// a commit's update images always in one piece.
pub struct ChangeStream {
    pub schema: SchemaRef,
    upstream: Upstream,
    range: (i64, i64),
    rx: tokio::sync::mpsc::Receiver<std::result::Result<Changes, String>>,
    /// Rows delivered so far (shared with the batch's report).
    delivered: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// The read's plan, to read the range again from its files.
    replay: Box<direct::Plan>,
}

impl ChangeStream {
    /// The next piece of rows; `None` at the end. An unreadable file fails the batch,
    /// named.
    pub async fn next(&mut self) -> Result<Option<Changes>> {
        match self.rx.recv().await {
            None => Ok(None),
            Some(Ok(piece)) => {
                self.delivered
                    .fetch_add(piece.rows(), std::sync::atomic::Ordering::Relaxed);
                Ok(Some(piece))
            }
            Some(Err(why)) => {
                let (start, end) = self.range;
                Err(feed_err(&self.upstream, start, end, why))
            }
        }
    }

    /// The rows delivered so far, counted as they go.
    pub fn delivered(&self) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
        self.delivered.clone()
    }

    /// How to read the same rows again from their files (for a reader that needs them
    /// twice, such as a SQL query that scans a change table in two places).
    pub fn replay(&self) -> Replay {
        Replay {
            schema: self.schema.clone(),
            upstream: self.upstream.clone(),
            range: self.range,
            plan: (*self.replay).clone(),
        }
    }
}

/// The read of a streamed range, to be done again (see [`ChangeStream::replay`]).
pub struct Replay {
    schema: SchemaRef,
    upstream: Upstream,
    range: (i64, i64),
    plan: direct::Plan,
}

impl Replay {
    /// The rows again, as a new stream (its rows not counted as the batch's).
    pub fn stream(&self) -> ChangeStream {
        ChangeStream {
            schema: self.schema.clone(),
            upstream: self.upstream.clone(),
            range: self.range,
            rx: self.plan.clone().stream(),
            delivered: Default::default(),
            replay: Box::new(self.plan.clone()),
        }
    }
}

impl Rows {
    /// The schema of the rows.
    pub fn schema(&self) -> &SchemaRef {
        match self {
            Rows::Read(c) => &c.schema,
            Rows::Stream(s) => &s.schema,
        }
    }

    /// Every row at once (a SQL derivation, the bench's native reference).
    pub async fn collect(self) -> Result<Changes> {
        match self {
            Rows::Read(c) => Ok(c),
            Rows::Stream(mut s) => {
                let mut out = Changes::empty(s.schema.clone());
                while let Some(piece) = s.next().await? {
                    out.batches.extend(piece.batches);
                }
                Ok(out)
            }
        }
    }
}

/// The direct read of one upstream range, planned from its commits, to be streamed.
pub struct ReadPlan {
    upstream: Upstream,
    range: (i64, i64),
    direct: direct::Plan,
}

impl ReadPlan {
    /// Plans the direct read of `u`'s versions `start..=end` from `table`; `None` when
    /// the range is for deltalake's scan (see [`direct`]), which reads it whole.
    pub async fn new(
        u: &Upstream,
        table: &DeltaTable,
        start: i64,
        end: i64,
    ) -> Result<Option<ReadPlan>> {
        if start < 0 || end < start {
            return Ok(None);
        }
        let schema = change_schema(u, arrow_schema(u, table)?.as_ref())?;
        match direct::plan(u, table, start, end, &schema).await {
            Ok(direct) => Ok(Some(ReadPlan {
                upstream: u.clone(),
                range: (start, end),
                direct,
            })),
            Err(why) => {
                tracing::debug!(table = %u.name, start, end, why, "change feed read with deltalake's scan");
                Ok(None)
            }
        }
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.upstream.name
    }

    /// Whether the range holds more rows than `rows`, as far as the log tells without
    /// reading them.
    pub fn over(&self, rows: u64) -> bool {
        self.direct.estimated_rows() > rows
    }

    /// Rows per version (statistics, else footers).
    pub async fn rows_per_version(&self) -> Result<std::collections::BTreeMap<i64, u64>> {
        let (start, end) = self.range;
        self.direct
            .rows_per_version()
            .await
            .map_err(|why| feed_err(&self.upstream, start, end, why))
    }

    /// Narrows the plan to the versions up to `last`.
    pub fn up_to(&mut self, last: i64) {
        self.range.1 = self.range.1.min(last);
        self.direct.up_to(last);
    }

    /// The range's rows as a stream.
    pub fn stream(self) -> ChangeStream {
        ChangeStream {
            schema: self.direct.schema().clone(),
            upstream: self.upstream,
            range: self.range,
            rx: self.direct.clone().stream(),
            delivered: Default::default(),
            replay: Box::new(self.direct),
        }
    }
}

/// The newest `_commit_timestamp` (microseconds) among change rows.
pub fn newest_commit_ts(batches: &[RecordBatch]) -> Option<i64> {
    use deltalake::arrow::array::AsArray;
    use deltalake::arrow::datatypes::TimestampMicrosecondType;
    batches
        .iter()
        .filter_map(|b| b.column_by_name(COMMIT_TIMESTAMP))
        .filter_map(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
        .filter_map(|c| c.iter().flatten().max())
        .max()
}

/// The schema change rows of `table_schema` are delivered in.
pub fn change_schema(u: &Upstream, table_schema: &Schema) -> Result<SchemaRef> {
    let mut fields: Vec<Field> = match &u.columns {
        None => table_schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect(),
        Some(cols) => cols
            .iter()
            .map(|c| {
                table_schema
                    .field_with_name(c)
                    .cloned()
                    .map_err(|_| {
                        table_err(
                            u,
                            format!(
                                "column '{c}' is listed in the catalog's `columns` but the table has no such column \
                                 (dropped or renamed?); it has: {}. Fix `columns` in the catalog or the table",
                                table_schema
                                    .fields()
                                    .iter()
                                    .map(|f| f.name().as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        )
                    })
            })
            .collect::<Result<_>>()?,
    };
    for f in &mut fields {
        // Partition values and change rows may carry nulls for any column.
        *f = f.clone().with_nullable(true);
    }
    fields.push(Field::new(CHANGE_TYPE, DataType::Utf8, false));
    fields.push(Field::new(COMMIT_VERSION, DataType::Int64, false));
    fields.push(Field::new(COMMIT_TIMESTAMP, timestamp_type(), true));
    Ok(Arc::new(Schema::new(fields)))
}

/// How a change feed is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reader {
    /// Straight from the files the commits name when the table allows it (no column
    /// mapping, no deletion vectors, no catalog `filter`), else deltalake's scan.
    Auto,
    /// Always deltalake's change-feed scan (a DataFusion query).
    Deltalake,
}

/// Reads the change feed of `u` for versions `start..=end` from `table` (loaded at
/// `end` or later), in the schema of [`change_schema`], keeping the catalog's change
/// types and filter.
pub async fn read_changes(
    ctx: &SessionContext,
    u: &Upstream,
    table: &DeltaTable,
    start: i64,
    end: i64,
) -> Result<Changes> {
    read_changes_with(ctx, u, table, start, end, Reader::Auto).await
}

/// A failed change-feed read of `u`'s versions `start..=end`.
fn feed_err(u: &Upstream, start: i64, end: i64, e: impl Into<Cause>) -> ReadError {
    ReadError::ChangeFeed {
        table: u.name.clone(),
        start,
        end,
        source: StoreError::new(e, &u.storage),
    }
}

/// [`read_changes`] with a choice of reader (the two give the same rows; tests
/// compare them).
pub async fn read_changes_with(
    ctx: &SessionContext,
    u: &Upstream,
    table: &DeltaTable,
    start: i64,
    end: i64,
    reader: Reader,
) -> Result<Changes> {
    let schema = change_schema(u, arrow_schema(u, table)?.as_ref())?;
    if start < 0 || end < start {
        return Err(feed_err(
            u,
            start,
            end,
            format!("{start}..={end} is not a version range"),
        ));
    }
    if reader == Reader::Auto {
        match direct::read(u, table, start, end, &schema).await {
            direct::Direct::Read(changes) => return Ok(changes),
            direct::Direct::Unsupported(why) => tracing::debug!(
                table = %u.name,
                start,
                end,
                why,
                "change feed read with deltalake's scan"
            ),
        }
    }
    scan(ctx, u, table, start, end, schema).await
}

/// The change rows of `start..=end` through deltalake's change-feed scan (a DataFusion
/// plan), with the catalog's filter and change types, projected to `schema`.
async fn scan(
    ctx: &SessionContext,
    u: &Upstream,
    table: &DeltaTable,
    start: i64,
    end: i64,
    schema: SchemaRef,
) -> Result<Changes> {
    let raw = match scan_frame(ctx, u, table, start, end, &schema)?
        .collect()
        .await
    {
        Ok(raw) => raw,
        Err(e) => {
            let e = StoreError::new(e, &u.storage);
            // DataFusion words a missing parquet file as a string; ask the store which
            // file of the range is gone (its NotFound is a type, not a message).
            let missing = match first_missing_file(table, start, end).await {
                Some((v, path)) => Some(format!("version {v} needs {path}, which is gone")),
                None => e.is_not_found().then(String::new),
            };
            return Err(match missing {
                Some(what) => unreadable(
                    u,
                    start,
                    Unreadable::FilesMissing(format!("versions {start} to {end}: {what} ({e})")),
                ),
                None => feed_err(u, start, end, e),
            });
        }
    };
    let mut batches = Vec::with_capacity(raw.len());
    for b in raw {
        if b.num_rows() == 0 {
            continue;
        }
        batches.push(conform(&b, &schema).map_err(|e| feed_err(u, start, end, e))?);
    }
    Ok(Changes { schema, batches })
}

/// The DataFrame of deltalake's change-feed scan of `start..=end`, filtered by the
/// catalog's predicate and change types and projected to `schema`'s columns.
fn scan_frame(
    ctx: &SessionContext,
    u: &Upstream,
    table: &DeltaTable,
    start: i64,
    end: i64,
    schema: &SchemaRef,
) -> Result<deltalake::datafusion::prelude::DataFrame> {
    let fail = |e: DataFusionError| feed_err(u, start, end, e);
    let builder = table
        .clone()
        .scan_cdf()
        .with_starting_version(start as u64)
        .with_ending_version(end as u64);
    let provider =
        DeltaCdfTableProvider::try_new(builder).map_err(|e| feed_err(u, start, end, e))?;
    let mut df = ctx.read_table(Arc::new(provider)).map_err(fail)?;
    if let Some(predicate) = &u.filter {
        let expr = df.parse_sql_expr(predicate).map_err(|e| {
            table_err(
                u,
                format!(
                    "the catalog's filter `{predicate}` is not a valid predicate on the table: {e}"
                ),
            )
        })?;
        df = df.filter(expr).map_err(fail)?;
    }
    if let Some(types) = &u.change_types {
        let types = types.iter().map(|t| lit(t.as_str())).collect();
        df = df
            .filter(col(CHANGE_TYPE).in_list(types, false))
            .map_err(fail)?;
    }
    // Read only the columns delivered.
    let wanted: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    df.select_columns(&wanted).map_err(fail)
}

/// The first file (version, relative path) the change feed of `start..=end` is read
/// from that the table's object store does not have (`NotFound` on `head`).
async fn first_missing_file(table: &DeltaTable, start: i64, end: i64) -> Option<(i64, String)> {
    use object_store::ObjectStoreExt;
    let log = table.log_store();
    let store = log.object_store(None);
    for v in start..=end {
        let Ok(Some(bytes)) = log.read_commit_entry(v as u64).await else {
            continue;
        };
        for path in history::files_of(&bytes) {
            let Ok(p) = deltalake::Path::from_url_path(&path) else {
                continue;
            };
            if let Err(deltalake::ObjectStoreError::NotFound { .. }) = store.head(&p).await {
                return Some((v, path));
            }
        }
    }
    None
}

/// Casts and orders the columns of `b` into `schema`. A missing column is a schema
/// error, a column that cannot be cast a cast error (both name the column).
pub fn conform(
    b: &RecordBatch,
    schema: &SchemaRef,
) -> std::result::Result<RecordBatch, ArrowError> {
    let mut cols = Vec::with_capacity(schema.fields().len());
    for f in schema.fields() {
        let col = b.column_by_name(f.name()).ok_or_else(|| {
            ArrowError::SchemaError(format!("the rows have no column '{}'", f.name()))
        })?;
        let col = if col.data_type() == f.data_type() {
            col.clone()
        } else {
            cast(col, f.data_type()).map_err(|e| {
                ArrowError::CastError(format!(
                    "column '{}': cannot read {} as {}: {e}",
                    f.name(),
                    col.data_type(),
                    f.data_type()
                ))
            })?
        };
        cols.push(col);
    }
    RecordBatch::try_new(schema.clone(), cols)
}
