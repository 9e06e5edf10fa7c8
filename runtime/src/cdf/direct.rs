//! The change feed read straight from the files the commits name: each version's `cdc`
//! files, else its `add` (insert) and `remove` (delete) files, read with the parquet
//! reader, only the delivered columns, several files at a time; the three change
//! columns are filled in from the commit. This is what deltalake's change-feed scan
//! does, without building and planning a DataFusion query per read (most of a small
//! read's time) and with the column projection pushed into the parquet reader.
//!
//! It answers only what it reads exactly as deltalake does; anything else is left to
//! deltalake's scan ([`Direct::Unsupported`]), which also words the errors: a catalog
//! `filter`, column mapping, deletion vectors (an `add` and `remove` of one path, or a
//! `deletionVector` on either), paths outside the table, a partition value that does
//! not cast to its column's type, and any read error.

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, BooleanArray, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use deltalake::arrow::compute::{cast, filter_record_batch};
use deltalake::arrow::datatypes::{DataType, SchemaRef};
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use deltalake::parquet::arrow::ProjectionMask;
use deltalake::parquet::file::reader::ChunkReader;
use deltalake::DeltaTable;
use futures::{StreamExt, TryStreamExt};
use serde_json::Value;

use super::{Changes, CHANGE_TYPE, COMMIT_TIMESTAMP, COMMIT_VERSION};
use crate::config::Upstream;

/// Files read at once.
const PARALLEL_FILES: usize = 8;
/// Rows per record batch (DataFusion's default, what deltalake's scan gives).
const BATCH_ROWS: usize = 8192;

/// What the direct read gave.
pub(super) enum Direct {
    Read(Changes),
    /// Read this range with deltalake's scan (see the module's docs for when).
    Unsupported(&'static str),
}

/// How a file's rows are changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A `cdc` file: its `_change_type` column says.
    Cdc,
    /// An `add` file: every row inserted.
    Insert,
    /// A `remove` file: every row deleted.
    Delete,
}

/// One file of a version's change feed.
#[derive(Debug, Clone, PartialEq)]
struct ChangeFile {
    version: i64,
    /// `_commit_timestamp` in microseconds (the commit's in-commit timestamp, else its
    /// `commitInfo.timestamp`, else 0: as deltalake's scan).
    timestamp_us: i64,
    /// Relative to the table, percent-encoded as the log writes it.
    path: String,
    kind: Kind,
    partition_values: HashMap<String, Option<String>>,
    /// The file's size in bytes, as the action says (0 when it does not).
    size: u64,
    /// Its row count from the action's statistics (`numRecords`), when written.
    rows: Option<u64>,
}

/// The change files of one commit, or why it is left to deltalake's scan.
fn files_of_commit(version: i64, commit: &[u8]) -> Result<Vec<ChangeFile>, &'static str> {
    let mut timestamp_ms = 0i64;
    let (mut cdc, mut adds, mut removes) = (Vec::new(), Vec::new(), Vec::new());
    for line in commit.split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let v: Value = serde_json::from_slice(line).map_err(|_| "a commit line is not JSON")?;
        if let Some(ci) = v.get("commitInfo") {
            let ts = ci.get("inCommitTimestamp").or_else(|| ci.get("timestamp"));
            timestamp_ms = ts.and_then(Value::as_i64).unwrap_or(0);
        }
        for (action, kind) in [
            ("cdc", Kind::Cdc),
            ("add", Kind::Insert),
            ("remove", Kind::Delete),
        ] {
            let Some(a) = v.get(action) else { continue };
            if kind != Kind::Cdc && a.get("dataChange").and_then(Value::as_bool) != Some(true) {
                continue;
            }
            if a.get("deletionVector").is_some_and(|d| !d.is_null()) {
                return Err("deletion vectors");
            }
            let path = a
                .get("path")
                .and_then(Value::as_str)
                .ok_or("an action without a path")?;
            if path.contains("://") {
                return Err("a file outside the table");
            }
            let size = a.get("size").and_then(Value::as_u64).unwrap_or(0);
            let rows = a
                .get("stats")
                .and_then(Value::as_str)
                .and_then(|st| serde_json::from_str::<Value>(st).ok())
                .and_then(|st| st.get("numRecords").and_then(Value::as_u64));
            let partition_values = a
                .get("partitionValues")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().map(String::from)))
                        .collect()
                })
                .unwrap_or_default();
            let into = match kind {
                Kind::Cdc => &mut cdc,
                Kind::Insert => &mut adds,
                Kind::Delete => &mut removes,
            };
            into.push((path.to_string(), kind, partition_values, size, rows));
        }
    }
    let files = if cdc.is_empty() {
        if adds
            .iter()
            .any(|(p, ..)| removes.iter().any(|(r, ..)| r == p))
        {
            // An add and a remove of one path: a deletion vector's update.
            return Err("deletion vectors");
        }
        adds.into_iter().chain(removes).collect()
    } else {
        cdc
    };
    Ok(files
        .into_iter()
        .map(|(path, kind, partition_values, size, rows)| ChangeFile {
            version,
            timestamp_us: timestamp_ms.saturating_mul(1000),
            path,
            kind,
            partition_values,
            size,
            rows,
        })
        .collect())
}

/// The direct read of a range, planned: the change files its commits name, in commit
/// order, and where to read them. Cloned to read the range again (a SQL query that
/// scans a change table twice).
#[derive(Clone)]
pub(crate) struct Plan {
    files: Vec<ChangeFile>,
    partition_columns: Vec<String>,
    change_types: Option<Vec<String>>,
    /// The table's folder when it is local (files read on blocking threads).
    local_root: Option<std::path::PathBuf>,
    store: Arc<dyn deltalake::ObjectStore>,
    schema: SchemaRef,
}

/// Plans the direct read of `u`'s versions `start..=end` from `table` in `schema` (see
/// [`super::change_schema`]), or says why it is left to deltalake's scan.
pub(super) async fn plan(
    u: &Upstream,
    table: &DeltaTable,
    start: i64,
    end: i64,
    schema: &SchemaRef,
) -> Result<Plan, &'static str> {
    if u.filter.is_some() {
        return Err("a catalog filter");
    }
    let Ok(state) = table.snapshot() else {
        return Err("no snapshot");
    };
    let mapping = state
        .metadata()
        .configuration()
        .get("delta.columnMapping.mode");
    if mapping.is_some_and(|m| !m.eq_ignore_ascii_case("none")) {
        return Err("column mapping");
    }
    let partition_columns: Vec<String> = state.metadata().partition_columns().to_vec();
    let files = change_files(u, table, start, end).await?;
    let local_root = table
        .table_url()
        .to_file_path()
        .ok()
        .filter(|_| table.table_url().scheme() == "file");
    Ok(Plan {
        files,
        partition_columns,
        change_types: u.change_types.clone(),
        local_root,
        store: table.log_store().object_store(None),
        schema: schema.clone(),
    })
}

/// Reads the change feed of `u`'s versions `start..=end` from `table` in `schema` (see
/// [`super::change_schema`]), or says it is left to deltalake's scan.
pub(super) async fn read(
    u: &Upstream,
    table: &DeltaTable,
    start: i64,
    end: i64,
    schema: &SchemaRef,
) -> Direct {
    let plan = match plan(u, table, start, end, schema).await {
        Ok(p) => p,
        Err(why) => return Direct::Unsupported(why),
    };
    match plan.read_all().await {
        Ok(changes) => Direct::Read(changes),
        Err(why) => Direct::Unsupported(why),
    }
}

impl Plan {
    pub(crate) fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// The rows the files hold, as far as the log says without reading them: the
    /// statistics' `numRecords`, else a file's bytes / 4 (no column is smaller).
    pub(crate) fn estimated_rows(&self) -> u64 {
        self.files
            .iter()
            .map(|f| f.rows.unwrap_or(f.size / 4))
            .sum()
    }

    /// Rows per version: the statistics' counts, else each file's parquet footer (read
    /// for the files without; `_change_type` filters of the catalog not applied).
    pub(crate) async fn rows_per_version(
        &self,
    ) -> Result<std::collections::BTreeMap<i64, u64>, String> {
        let counted: Vec<(i64, u64)> = futures::stream::iter(self.files.iter().cloned())
            .map(|f| {
                let (root, store) = (self.local_root.clone(), self.store.clone());
                async move {
                    let n = match f.rows {
                        Some(n) => n,
                        None => footer_rows(root, store, &f)
                            .await
                            .map_err(|why| file_err(&f, why))?,
                    };
                    Ok::<_, String>((f.version, n))
                }
            })
            .buffered(PARALLEL_FILES)
            .try_collect()
            .await?;
        let mut out = std::collections::BTreeMap::new();
        for (v, n) in counted {
            *out.entry(v).or_default() += n;
        }
        Ok(out)
    }

    /// Keeps the files of versions up to `last`.
    pub(crate) fn up_to(&mut self, last: i64) {
        self.files.retain(|f| f.version <= last);
    }

    /// Every change row at once.
    pub(crate) async fn read_all(self) -> Result<Changes, &'static str> {
        let schema = self.schema.clone();
        let batches = read_files(
            self.files,
            &schema,
            &self.partition_columns,
            self.change_types.as_deref(),
            self.local_root,
            self.store,
        )
        .await?;
        Ok(Changes { schema, batches })
    }

    /// The change rows as they are read, in commit order, a little ahead of the
    /// reader: a commit with `cdc` files (which may hold update images) comes whole; an
    /// insert or delete file comes one record batch at a time. Memory: the pieces in
    /// the channel and the files being decoded, whatever the range's size. The stream
    /// ends early with the error of a file that cannot be read, naming it.
    pub(crate) fn stream(mut self) -> tokio::sync::mpsc::Receiver<Result<Changes, String>> {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tokio::spawn(async move {
            let mut files = std::mem::take(&mut self.files).into_iter().peekable();
            while let Some(f) = files.next() {
                let sent = if f.kind == Kind::Cdc {
                    // The commit's cdc files together: its update pairs stay together.
                    let mut whole = vec![f];
                    while let Some(next) = files.next_if(|n| n.version == whole[0].version) {
                        whole.push(next);
                    }
                    let first = whole[0].clone();
                    let read = read_files(
                        whole,
                        &self.schema,
                        &self.partition_columns,
                        self.change_types.as_deref(),
                        self.local_root.clone(),
                        self.store.clone(),
                    )
                    .await
                    .map_err(|why| file_err(&first, why))
                    .map(|batches| Changes {
                        schema: self.schema.clone(),
                        batches,
                    });
                    let failed = read.is_err();
                    tx.send(read).await.is_ok() && !failed
                } else {
                    stream_file(&self, f, &tx).await
                };
                if !sent {
                    return;
                }
            }
        });
        rx
    }
}

/// Sends the change rows of one insert or delete file, a record batch at a time;
/// `false` when the stream is over (the reader gone, or the file failed).
async fn stream_file(
    plan: &Plan,
    f: ChangeFile,
    tx: &tokio::sync::mpsc::Sender<Result<Changes, String>>,
) -> bool {
    let (btx, mut brx) = tokio::sync::mpsc::channel::<Result<RecordBatch, &'static str>>(2);
    let schema = plan.schema.clone();
    let (partition_columns, types) = (plan.partition_columns.clone(), plan.change_types.clone());
    let source = match Source::open(plan.local_root.as_deref(), plan.store.clone(), &f).await {
        Ok(s) => s,
        Err(why) => {
            let _ = tx.send(Err(file_err(&f, why))).await;
            return false;
        }
    };
    let file = f.clone();
    let reader = tokio::task::spawn_blocking(move || {
        let each = |b: Result<RecordBatch, &'static str>| {
            let b = b
                .and_then(|b| changes_of(&b, &file, &schema, &partition_columns, types.as_deref()));
            btx.blocking_send(b).is_ok()
        };
        match source {
            Source::Local(r) => decode_each(r, &file, &schema, each),
            Source::Remote(r) => decode_each(r, &file, &schema, each),
        }
    });
    while let Some(b) = brx.recv().await {
        let piece = b.map_err(|why| file_err(&f, why)).map(|b| Changes {
            schema: plan.schema.clone(),
            batches: vec![b],
        });
        let failed = piece.is_err();
        if tx.send(piece).await.is_err() || failed {
            return false;
        }
    }
    match reader.await {
        Ok(Ok(())) => true,
        Ok(Err(why)) => {
            let _ = tx.send(Err(file_err(&f, why))).await;
            false
        }
        Err(_) => {
            let _ = tx.send(Err(file_err(&f, "a reader task failed"))).await;
            false
        }
    }
}

/// A file to decode: open locally, or fetched.
enum Source {
    Local(std::fs::File),
    Remote(bytes::Bytes),
}

impl Source {
    /// `f` opened under the table's local folder `root`, else fetched from `store`.
    async fn open(
        root: Option<&std::path::Path>,
        store: Arc<dyn deltalake::ObjectStore>,
        f: &ChangeFile,
    ) -> Result<Source, &'static str> {
        match root {
            Some(root) => local_file(root, f).map(Source::Local),
            None => fetch(store, f).await.map(Source::Remote),
        }
    }
}

/// What a failed file read says: the file, its version, why.
fn file_err(f: &ChangeFile, why: &str) -> String {
    format!("{} (version {}): {why}", f.path, f.version)
}

/// The row count of a file's parquet footer.
async fn footer_rows(
    root: Option<std::path::PathBuf>,
    store: Arc<dyn deltalake::ObjectStore>,
    f: &ChangeFile,
) -> Result<u64, &'static str> {
    // Files without statistics are `cdc` files: fetched whole from a store, small
    // next to what a request costs.
    let source = Source::open(root.as_deref(), store, f).await?;
    tokio::task::spawn_blocking(move || {
        let meta = match source {
            Source::Local(r) => {
                ParquetRecordBatchReaderBuilder::try_new(r).map(|b| b.metadata().clone())
            }
            Source::Remote(r) => {
                ParquetRecordBatchReaderBuilder::try_new(r).map(|b| b.metadata().clone())
            }
        };
        meta.map(|m| u64::try_from(m.file_metadata().num_rows()).unwrap_or(0))
            .map_err(|_| "a file that is not parquet")
    })
    .await
    .map_err(|_| "a reader task failed")?
}

/// The change files of `start..=end` whose rows `u` keeps (an add or remove file of an
/// unwanted change type is not read at all), from the commits.
async fn change_files(
    u: &Upstream,
    table: &DeltaTable,
    start: i64,
    end: i64,
) -> Result<Vec<ChangeFile>, &'static str> {
    let log = table.log_store();
    let commits: Vec<_> = futures::stream::iter(start..=end)
        .map(|v| {
            let log = log.clone();
            async move { (v, log.read_commit_entry(v as u64).await) }
        })
        .buffered(PARALLEL_FILES)
        .collect()
        .await;
    let wanted = |k: Kind| match (&u.change_types, k) {
        (None, _) | (_, Kind::Cdc) => true,
        (Some(t), Kind::Insert) => t.iter().any(|t| t == "insert"),
        (Some(t), Kind::Delete) => t.iter().any(|t| t == "delete"),
    };
    let mut files = Vec::new();
    for (v, commit) in commits {
        let Ok(Some(commit)) = commit else {
            return Err("a commit that cannot be read");
        };
        files.extend(
            files_of_commit(v, &commit)?
                .into_iter()
                .filter(|f| wanted(f.kind)),
        );
    }
    Ok(files)
}

/// Reads `files` (8 at a time; local ones on blocking threads) into change rows in
/// `schema`, in the files' order.
async fn read_files(
    files: Vec<ChangeFile>,
    schema: &SchemaRef,
    partition_columns: &[String],
    change_types: Option<&[String]>,
    local_root: Option<std::path::PathBuf>,
    store: Arc<dyn deltalake::ObjectStore>,
) -> Result<Vec<RecordBatch>, &'static str> {
    let reads = futures::stream::iter(files)
        .map(|f| {
            let (schema, store, root) = (schema.clone(), store.clone(), local_root.clone());
            let partition_columns = partition_columns.to_vec();
            let types = change_types.map(<[String]>::to_vec);
            tokio::spawn(async move {
                let batches = match root {
                    Some(root) => {
                        let f = f.clone();
                        let schema = schema.clone();
                        tokio::task::spawn_blocking(move || read_local(&root, &f, &schema))
                            .await
                            .map_err(|_| "a reader task failed")?
                    }
                    None => read_remote(store, &f, &schema).await,
                }?;
                batches
                    .iter()
                    .map(|b| changes_of(b, &f, &schema, &partition_columns, types.as_deref()))
                    .collect::<Result<Vec<_>, &'static str>>()
            })
        })
        .buffered(PARALLEL_FILES)
        .map(|joined| joined.unwrap_or(Err("a reader task failed")))
        .try_collect::<Vec<Vec<RecordBatch>>>()
        .await?;
    Ok(reads
        .into_iter()
        .flatten()
        .filter(|b| b.num_rows() > 0)
        .collect())
}

/// The columns of `schema` a file holds (all but the change columns; `_change_type`
/// too for a `cdc` file).
fn file_columns(schema: &SchemaRef, kind: Kind) -> impl Iterator<Item = &str> {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .filter(move |n| {
            (*n == CHANGE_TYPE && kind == Kind::Cdc)
                || ![CHANGE_TYPE, COMMIT_VERSION, COMMIT_TIMESTAMP].contains(n)
        })
}

/// The root columns of a file's Arrow schema among `columns`.
fn projection(
    file: &deltalake::arrow::datatypes::Schema,
    parquet: &deltalake::parquet::schema::types::SchemaDescriptor,
    columns: impl Iterator<Item = impl AsRef<str>>,
) -> ProjectionMask {
    let roots: Vec<usize> = columns
        .filter_map(|c| file.index_of(c.as_ref()).ok())
        .collect();
    ProjectionMask::roots(parquet, roots)
}

fn local_file(root: &std::path::Path, f: &ChangeFile) -> Result<std::fs::File, &'static str> {
    let path =
        deltalake::Path::from_url_path(&f.path).map_err(|_| "a path that cannot be decoded")?;
    std::fs::File::open(root.join(path.as_ref())).map_err(|_| "a file that cannot be opened")
}

fn read_local(
    root: &std::path::Path,
    f: &ChangeFile,
    schema: &SchemaRef,
) -> Result<Vec<RecordBatch>, &'static str> {
    read_parquet(local_file(root, f)?, f, schema)
}

/// A file of an object store, fetched whole (change files are written one per task
/// of a commit: small next to what a request costs).
async fn fetch(
    store: Arc<dyn deltalake::ObjectStore>,
    f: &ChangeFile,
) -> Result<bytes::Bytes, &'static str> {
    use object_store::ObjectStoreExt;
    let path =
        deltalake::Path::from_url_path(&f.path).map_err(|_| "a path that cannot be decoded")?;
    let bytes = store
        .get(&path)
        .await
        .map_err(|_| "a file that cannot be fetched")?
        .bytes()
        .await
        .map_err(|_| "a file that cannot be fetched")?;
    Ok(bytes)
}

async fn read_remote(
    store: Arc<dyn deltalake::ObjectStore>,
    f: &ChangeFile,
    schema: &SchemaRef,
) -> Result<Vec<RecordBatch>, &'static str> {
    let bytes = fetch(store, f).await?;
    let (f, schema) = (f.clone(), schema.clone());
    tokio::task::spawn_blocking(move || read_parquet(bytes, &f, &schema))
        .await
        .map_err(|_| "a reader task failed")?
}

/// The delivered columns of a parquet file.
fn read_parquet<R: ChunkReader + 'static>(
    reader: R,
    f: &ChangeFile,
    schema: &SchemaRef,
) -> Result<Vec<RecordBatch>, &'static str> {
    let mut out = Vec::new();
    decode_each(reader, f, schema, |b| {
        out.push(b);
        true
    })?;
    out.into_iter().collect()
}

/// Decodes the delivered columns of a parquet file, handing each record batch to
/// `each` until it returns `false`.
fn decode_each<R: ChunkReader + 'static>(
    reader: R,
    f: &ChangeFile,
    schema: &SchemaRef,
    mut each: impl FnMut(Result<RecordBatch, &'static str>) -> bool,
) -> Result<(), &'static str> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(reader)
        .map_err(|_| "a file that is not parquet")?;
    let mask = projection(
        builder.schema(),
        builder.parquet_schema(),
        file_columns(schema, f.kind),
    );
    let batches = builder
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()
        .map_err(|_| "a file that is not parquet")?;
    for b in batches {
        let failed = b.is_err();
        if !each(b.map_err(|_| "a file that cannot be decoded")) || failed {
            break;
        }
    }
    Ok(())
}

/// The change rows of `b`, read from `f`, in `schema`: file columns cast to the
/// table's types, partition columns from the action's values, columns the file lacks
/// (added later) null, the change columns from the commit; filtered to the wanted
/// change types.
fn changes_of(
    b: &RecordBatch,
    f: &ChangeFile,
    schema: &SchemaRef,
    partition_columns: &[String],
    change_types: Option<&[String]>,
) -> Result<RecordBatch, &'static str> {
    let n = b.num_rows();
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let name = field.name().as_str();
        let col: ArrayRef = match name {
            CHANGE_TYPE if f.kind != Kind::Cdc => {
                let t = if f.kind == Kind::Insert {
                    "insert"
                } else {
                    "delete"
                };
                Arc::new(StringArray::from_iter_values(std::iter::repeat_n(t, n)))
            }
            COMMIT_VERSION => Arc::new(Int64Array::from_value(f.version, n)),
            COMMIT_TIMESTAMP => Arc::new(
                TimestampMicrosecondArray::from_value(f.timestamp_us, n)
                    .with_timezone_opt(timezone(field.data_type())),
            ),
            _ if partition_columns.iter().any(|p| p == name) => {
                let value = f.partition_values.get(name).cloned().flatten();
                let strings: ArrayRef = Arc::new(StringArray::from(vec![value; n]));
                cast(&strings, field.data_type())
                    .map_err(|_| "a partition value of another type")?
            }
            _ => match b.column_by_name(name) {
                Some(c) => c.clone(),
                None => new_null_array(field.data_type(), n),
            },
        };
        let col = if col.data_type() == field.data_type() {
            col
        } else {
            cast(&col, field.data_type()).map_err(|_| "a column of another type")?
        };
        cols.push(col);
    }
    let out = RecordBatch::try_new(schema.clone(), cols)
        .map_err(|_| "rows that do not fit the schema")?;
    match (change_types, f.kind) {
        (Some(types), Kind::Cdc) => {
            let idx = schema
                .index_of(CHANGE_TYPE)
                .map_err(|_| "no _change_type")?;
            let keep: BooleanArray = out
                .column(idx)
                .as_string::<i32>()
                .iter()
                .map(|t| Some(t.is_some_and(|t| types.iter().any(|w| w == t))))
                .collect();
            filter_record_batch(&out, &keep).map_err(|_| "a filter failed")
        }
        _ => Ok(out),
    }
}

fn timezone(t: &DataType) -> Option<Arc<str>> {
    match t {
        DataType::Timestamp(_, tz) => tz.clone(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_with_cdc_files_is_read_from_them_alone() {
        let commit = br#"{"commitInfo":{"timestamp":1700000000123,"operation":"UPDATE"}}
{"remove":{"path":"a.parquet","dataChange":true}}
{"add":{"path":"b.parquet","dataChange":true,"partitionValues":{}}}
{"cdc":{"path":"_change_data/c%20d.parquet","partitionValues":{"p":"1","q":null},"dataChange":false}}
"#;
        let files = files_of_commit(7, commit).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].path, "_change_data/c%20d.parquet");
        assert_eq!(files[0].kind, Kind::Cdc);
        assert_eq!(files[0].version, 7);
        assert_eq!(files[0].timestamp_us, 1_700_000_000_123_000);
        assert_eq!(files[0].partition_values["p"].as_deref(), Some("1"));
        assert_eq!(files[0].partition_values["q"], None);
    }

    #[test]
    fn without_cdc_files_adds_insert_and_removes_delete_and_compactions_are_skipped() {
        let commit = br#"{"add":{"path":"new.parquet","dataChange":true,"partitionValues":{}}}
{"remove":{"path":"old.parquet","dataChange":true}}
{"add":{"path":"compacted.parquet","dataChange":false,"partitionValues":{}}}
{"commitInfo":{"timestamp":5,"inCommitTimestamp":9}}
"#;
        let files = files_of_commit(3, commit).unwrap();
        let got: Vec<_> = files.iter().map(|f| (f.path.as_str(), f.kind)).collect();
        assert_eq!(
            got,
            [("new.parquet", Kind::Insert), ("old.parquet", Kind::Delete)]
        );
        // The in-commit timestamp wins, as in deltalake's scan.
        assert!(files.iter().all(|f| f.timestamp_us == 9_000));
    }

    #[test]
    fn deletion_vectors_and_outside_paths_are_left_to_deltalake() {
        let dv = br#"{"remove":{"path":"a.parquet","dataChange":true}}
{"add":{"path":"a.parquet","dataChange":true,"partitionValues":{}}}
"#;
        assert_eq!(files_of_commit(1, dv), Err("deletion vectors"));
        let dv = br#"{"add":{"path":"a.parquet","dataChange":true,"deletionVector":{"storageType":"u"}}}"#;
        assert_eq!(files_of_commit(1, dv), Err("deletion vectors"));
        let shallow = br#"{"add":{"path":"s3://b/x.parquet","dataChange":true}}"#;
        assert_eq!(files_of_commit(1, shallow), Err("a file outside the table"));
    }
}
