//! SQL pipelines: the keys of a batch derived by a DataFusion query over
//! `<upstream>_changes` (the batch's change rows of each upstream) and `<table>` (each
//! upstream and lookup table as of the batch's pinned version).
//!
//! Change rows read at once are a table in memory; streamed ones (a batch over
//! `chunk_rows`) are a streaming table that the query reads as they come, and the
//! query's rows are streamed out ([`stream`]), so that a SQL batch's memory does not
//! grow with its change rows (short of what the query itself holds: the build side of
//! a join, a sort, an aggregation).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::datafusion::catalog::streaming::StreamingTable;
use deltalake::datafusion::catalog::TableProvider;
use deltalake::datafusion::datasource::MemTable;
use deltalake::datafusion::error::DataFusionError;
use deltalake::datafusion::execution::TaskContext;
use deltalake::datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use deltalake::datafusion::physical_plan::streaming::PartitionStream;
use deltalake::datafusion::physical_plan::SendableRecordBatchStream;
use deltalake::datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};

use crate::cdf::{ChangeStream, ReadError, Rows};
use crate::config::Upstream;
use crate::lookup::TableCache;

/// Why a SQL derivation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SqlError {
    /// A table could not be registered for the query (`name` is the query's name
    /// for it: `<upstream>_changes` or the table).
    #[error("{name}: {source}")]
    Register {
        name: String,
        #[source]
        source: DataFusionError,
    },
    /// A table the query reads could not be opened at its pinned version.
    #[error(transparent)]
    Table(Box<crate::cdf::ReadError>),
    /// The query does not plan or failed while running.
    #[error("the query failed: {0}")]
    Query(#[source] DataFusionError),
}

/// One upstream's change rows of a batch.
pub struct ChangeTable<'a> {
    pub name: &'a str,
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

/// One upstream's change rows of a batch, read or streamed (see [`stream`]).
pub struct StreamedTable<'a> {
    pub name: &'a str,
    pub rows: Rows,
}

/// What the query saw of one upstream's change rows (for the causes of a query's keys
/// when it returns no `_upstream`), and the error that ended their read, if one did.
#[derive(Debug, Default)]
pub struct Seen {
    inner: Mutex<SeenRows>,
}

#[derive(Debug, Default)]
struct SeenRows {
    rows: usize,
    newest: Option<i64>,
    failed: Option<ReadError>,
}

impl Seen {
    fn saw(&self, batch: &RecordBatch) {
        let newest = crate::cdf::newest_commit_ts(std::slice::from_ref(batch));
        if let Ok(mut s) = self.inner.lock() {
            s.rows += batch.num_rows();
            s.newest = s.newest.max(newest);
        }
    }

    fn failed(&self, e: ReadError) {
        if let Ok(mut s) = self.inner.lock() {
            s.failed.get_or_insert(e);
        }
    }

    /// The change rows seen and their newest commit timestamp.
    pub fn rows(&self) -> (usize, Option<i64>) {
        self.inner.lock().map_or((0, None), |s| (s.rows, s.newest))
    }

    /// The read error that ended the rows' stream (the query then failed with it).
    pub fn take_error(&self) -> Option<ReadError> {
        self.inner.lock().ok().and_then(|mut s| s.failed.take())
    }
}

/// Streamed change rows as a table the query reads as they come: the first scan takes
/// the batch's stream, another scan (a query naming the table twice) reads the files
/// again.
struct StreamedChanges {
    schema: SchemaRef,
    first: Mutex<Option<ChangeStream>>,
    replay: crate::cdf::Replay,
    seen: Arc<Seen>,
}

impl std::fmt::Debug for StreamedChanges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamedChanges").finish_non_exhaustive()
    }
}

impl StreamedChanges {
    fn take(&self) -> ChangeStream {
        match self.first.lock().ok().and_then(|mut f| f.take()) {
            Some(s) => s,
            None => self.replay.stream(),
        }
    }
}

impl PartitionStream for StreamedChanges {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let seen = self.seen.clone();
        let rows = futures::stream::try_unfold(self.take(), |mut s| async move {
            Ok::<_, ReadError>(s.next().await?.map(|piece| (piece, s)))
        })
        .map_ok(|piece| futures::stream::iter(piece.batches.into_iter().map(Ok::<_, ReadError>)))
        .try_flatten()
        .map(move |b: Result<RecordBatch, ReadError>| match b {
            Ok(b) => {
                seen.saw(&b);
                Ok(b)
            }
            Err(e) => {
                let text = e.to_string();
                seen.failed(e);
                Err(DataFusionError::Execution(text))
            }
        });
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), rows))
    }
}

/// Registers the batch's tables in a fresh session: the change tables, and those
/// tables at their pinned versions that `query` names (opening a Delta table at a
/// version costs a log replay; most queries read only the changes).
async fn session(
    query: &str,
    changes: Vec<Named>,
    pinned: &[(Upstream, i64)],
    cache: &TableCache,
) -> Result<SessionContext, SqlError> {
    let ctx = crate::cdf::session();
    let named = referenced_tables(&ctx, query);
    for (name, table) in changes {
        if let Err(source) = ctx.register_table(name.as_str(), table) {
            return Err(SqlError::Register { name, source });
        }
    }
    for (u, version) in pinned {
        if named.as_ref().is_some_and(|n| !n.contains(&u.name)) {
            continue;
        }
        let table = {
            let mut cache = cache.lock().await;
            match cache.get(&(u.name.clone(), *version)) {
                Some(t) => t.clone(),
                None => {
                    let t = crate::cdf::open_at(u, *version)
                        .await
                        .map_err(|e| SqlError::Table(Box::new(e)))?;
                    cache.insert((u.name.clone(), *version), t.clone());
                    t
                }
            }
        };
        let provider = table
            .table_provider()
            .await
            .map_err(|e| SqlError::Register {
                name: u.name.clone(),
                source: DataFusionError::External(Box::new(e)),
            })?;
        ctx.register_table(u.name.as_str(), provider)
            .map_err(|source| SqlError::Register {
                name: u.name.clone(),
                source,
            })?;
    }
    Ok(ctx)
}

/// Change rows in memory as the query's `<upstream>_changes`.
fn in_memory(c: ChangeTable<'_>) -> Result<Named, SqlError> {
    let name = format!("{}_changes", c.name);
    match MemTable::try_new(c.schema, vec![c.batches]) {
        Ok(t) => Ok((name, Arc::new(t))),
        Err(source) => Err(SqlError::Register { name, source }),
    }
}

/// A table registered for a query, by the query's name for it.
type Named = (String, Arc<dyn TableProvider>);

/// Every upstream's change rows in memory (see [`in_memory`]).
fn all_in_memory(changes: Vec<ChangeTable<'_>>) -> Result<Vec<Named>, SqlError> {
    changes.into_iter().map(in_memory).collect()
}

/// Runs `query` for one batch; returns its rows.
pub async fn derive(
    query: &str,
    changes: Vec<ChangeTable<'_>>,
    pinned: &[(Upstream, i64)],
    cache: &TableCache,
) -> Result<(SchemaRef, Vec<RecordBatch>), SqlError> {
    let changes = all_in_memory(changes)?;
    let ctx = session(query, changes, pinned, cache).await?;
    let df = ctx.sql(query).await.map_err(SqlError::Query)?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await.map_err(SqlError::Query)?;
    Ok((schema, batches))
}

/// A batch's query, running: its rows as they come.
pub struct QueryRows {
    pub schema: SchemaRef,
    pub rows: SendableRecordBatchStream,
    /// What the query has read of each upstream's change rows (in the order given).
    pub seen: Vec<Arc<Seen>>,
    streamed: Vec<Arc<StreamedChanges>>,
}

impl QueryRows {
    /// Reads the streamed change rows the query did not read (a query that names no
    /// `<upstream>_changes` of some upstream), so that [`QueryRows::seen`] counts every
    /// upstream's rows; a file that cannot be read fails, named.
    /// Returns what was seen of each upstream's rows.
    pub async fn read_the_rest(self) -> Result<Vec<Arc<Seen>>, ReadError> {
        drop(self.rows);
        for t in &self.streamed {
            let rest = t.first.lock().ok().and_then(|mut f| f.take());
            if let Some(mut s) = rest {
                while let Some(piece) = s.next().await? {
                    piece.batches.iter().for_each(|b| t.seen.saw(b));
                }
            }
        }
        Ok(self.seen)
    }
}

/// Runs `query` for one batch over change rows read or streamed; returns its rows as
/// the query produces them.
pub async fn stream(
    query: &str,
    changes: Vec<StreamedTable<'_>>,
    pinned: &[(Upstream, i64)],
    cache: &TableCache,
) -> Result<QueryRows, SqlError> {
    let mut tables = Vec::with_capacity(changes.len());
    let mut seen = Vec::with_capacity(changes.len());
    let mut streamed = Vec::new();
    for c in changes {
        let s = Arc::new(Seen::default());
        seen.push(s.clone());
        match c.rows {
            Rows::Read(ch) => {
                ch.batches.iter().for_each(|b| s.saw(b));
                tables.push(in_memory(ChangeTable {
                    name: c.name,
                    schema: ch.schema,
                    batches: ch.batches,
                })?);
            }
            Rows::Stream(st) => {
                let name = format!("{}_changes", c.name);
                let part = Arc::new(StreamedChanges {
                    schema: st.schema.clone(),
                    replay: st.replay(),
                    first: Mutex::new(Some(st)),
                    seen: s,
                });
                streamed.push(part.clone());
                let table =
                    StreamingTable::try_new(part.schema.clone(), vec![part]).map_err(|source| {
                        SqlError::Register {
                            name: name.clone(),
                            source,
                        }
                    })?;
                tables.push((name, Arc::new(table) as Arc<dyn TableProvider>));
            }
        }
    }
    let ctx = session(query, tables, pinned, cache).await?;
    let df = ctx.sql(query).await.map_err(SqlError::Query)?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let rows = df.execute_stream().await.map_err(SqlError::Query)?;
    Ok(QueryRows {
        schema,
        rows,
        seen,
        streamed,
    })
}

/// Plans `query` against empty change tables of the given schemas and the tables at
/// the given versions, without running it; returns the output schema.
pub async fn plan(
    query: &str,
    changes: Vec<ChangeTable<'_>>,
    pinned: &[(Upstream, i64)],
    cache: &TableCache,
) -> Result<SchemaRef, SqlError> {
    let changes = all_in_memory(changes)?;
    let ctx = session(query, changes, pinned, cache).await?;
    let df = ctx.sql(query).await.map_err(SqlError::Query)?;
    Ok(Arc::new(df.schema().as_arrow().clone()))
}

/// The table names `query` refers to, as DataFusion resolves them; `None` when the
/// query does not parse (then every table is registered and the query's own error is
/// reported).
fn referenced_tables(ctx: &SessionContext, query: &str) -> Option<HashSet<String>> {
    let state = ctx.state();
    let dialect = state.config().options().sql_parser.dialect;
    let statement = state.sql_to_statement(query, &dialect).ok()?;
    let refs = state.resolve_table_references(&statement).ok()?;
    Some(refs.iter().map(|r| r.table().to_string()).collect())
}
