//! A batch's key set: the keys of its derivation's calls folded into one set as they
//! come, held in memory up to a budget (`[engine] memory_mb`) and spilled to local disk
//! past it, so that a batch's memory does not grow with its row count.
//!
//! In memory each key is held once as the parts come, with its causes (a bit per
//! upstream) and newest commit timestamp: one integer key column by value in a hash
//! map, other keys as arrow row-format bytes in one arena (no copy of the parts is
//! kept). When the set is over the budget it is written to a spill file (Arrow IPC: the key columns, the causes as bit words,
//! the timestamp) and memory starts empty again. At the end, a batch that spilled has
//! its files merged by DataFusion's aggregation (grouped by the key columns, `bit_or` of
//! the causes, `max` of the timestamps), itself within the budget and spilling through
//! DataFusion's disk manager, into one file of distinct keys that the commit streams
//! into the link table ([`Keys::chunks`]). Spill files are removed when dropped.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, TimestampMicrosecondArray, UInt64Array,
};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit, UInt64Type};
use deltalake::arrow::error::ArrowError;
use deltalake::arrow::ipc::reader::FileReader;
use deltalake::arrow::ipc::writer::FileWriter;
use deltalake::datafusion::catalog::streaming::StreamingTable;
use deltalake::datafusion::common::Column;
use deltalake::datafusion::error::DataFusionError;
use deltalake::datafusion::execution::runtime_env::RuntimeEnvBuilder;
use deltalake::datafusion::execution::TaskContext;
use deltalake::datafusion::functions_aggregate::expr_fn::{bit_or, max};
use deltalake::datafusion::logical_expr::Expr;
use deltalake::datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use deltalake::datafusion::physical_plan::streaming::PartitionStream;
use deltalake::datafusion::physical_plan::SendableRecordBatchStream;
use deltalake::datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;

use deltalake::arrow::array::Int64Array;
use deltalake::arrow::datatypes::{Int32Type, Int64Type};
use deltalake::arrow::row::{RowConverter, SortField};

use super::{arrow_type, AffectedKeys, InvalidKeys};
use crate::config::{KeyColumn, KeyType};

/// The least memory the merge of spill files is given, whatever the budget: DataFusion's
/// aggregation needs a few record batches to work with (it fails below, not spills).
const MIN_MERGE_BYTES: usize = 8 << 20;
/// Rows per record batch of a spill file (DataFusion's default batch size).
const SPILL_BATCH_ROWS: usize = 8192;
/// The timestamp column of spill files.
const TS: &str = "_commit_timestamp";

/// Why a batch's key set could not be held or spilled.
#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    /// The plugin's (or query's) keys did not fold.
    #[error(transparent)]
    Keys(#[from] InvalidKeys),
    #[error("cannot write the batch's key set to the spill folder {dir}: {source}. Free space there or point [engine] spill_dir at a folder with room (or raise [engine] memory_mb)")]
    Io {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot spill the batch's key set: {0}")]
    Arrow(#[from] ArrowError),
    #[error("cannot merge the batch's spilled keys (within a quarter of [engine] memory_mb): {0}")]
    Merge(#[from] DataFusionError),
}

/// The keys of a batch while its calls run.
pub struct KeySet {
    keys: Vec<KeyColumn>,
    names: Vec<String>,
    budget: usize,
    dir: PathBuf,
    /// The distinct keys folded since the last spill.
    folded: Folded,
    spill: Option<Spill>,
}

/// The spill file being written.
struct Spill {
    file: tempfile::NamedTempFile,
    writer: FileWriter<BufWriter<File>>,
    schema: SchemaRef,
    /// Times the set was spilled.
    times: usize,
}

/// "No timestamp" among the newest timestamps (a microsecond count no commit has).
const NO_TS: i64 = i64::MIN;

/// Distinct keys, each once, with its causes (a bit per upstream) and newest commit
/// timestamp: folded row by row as parts come, no copy of the parts kept.
struct Folded {
    index: Index,
    /// `words` cause words per key.
    causes: Vec<u64>,
    newest: Vec<i64>,
    words: usize,
}

enum Index {
    /// One integer key column (the usual case): the keys, and their slot by value.
    Int {
        keys: Vec<i64>,
        slots: super::FastMap<i64, u32>,
        int32: bool,
    },
    /// Any other key: each key's bytes in arrow's row format, in one arena.
    Rows {
        converter: RowConverter,
        arena: Vec<u8>,
        ends: Vec<usize>,
        table: hashbrown::HashTable<u32>,
        hasher: foldhash::fast::RandomState,
    },
}

impl Folded {
    fn new(keys: &[KeyColumn], upstreams: usize) -> Result<Folded, SpillError> {
        let index = match keys {
            [k] if k.ty != KeyType::String => Index::Int {
                keys: Vec::new(),
                slots: Default::default(),
                int32: k.ty == KeyType::Int,
            },
            _ => Index::Rows {
                converter: RowConverter::new(
                    keys.iter()
                        .map(|k| SortField::new(arrow_type(k.ty)))
                        .collect(),
                )?,
                arena: Vec::new(),
                ends: Vec::new(),
                table: hashbrown::HashTable::new(),
                hasher: Default::default(),
            },
        };
        Ok(Folded {
            index,
            causes: Vec::new(),
            newest: Vec::new(),
            words: words(upstreams),
        })
    }

    fn len(&self) -> usize {
        self.newest.len()
    }

    /// The bytes held.
    fn memory_size(&self) -> usize {
        let index = match &self.index {
            Index::Int { keys, slots, .. } => keys.capacity() * 8 + slots.capacity() * 17,
            Index::Rows {
                arena, ends, table, ..
            } => arena.capacity() + ends.capacity() * 8 + table.capacity() * 5,
        };
        index + self.causes.capacity() * 8 + self.newest.capacity() * 8
    }

    /// The slot of each row's key (new keys added).
    fn slots(&mut self, columns: &[ArrayRef]) -> Result<Vec<u32>, SpillError> {
        let n = columns.first().map_or(0, |c| c.len());
        let mut out = Vec::with_capacity(n);
        let mut added = 0usize;
        match &mut self.index {
            Index::Int { keys, slots, .. } => {
                let c = &columns[0];
                let values: Vec<i64> = if let Some(a) = c.as_primitive_opt::<Int64Type>() {
                    a.values().to_vec()
                } else if let Some(a) = c.as_primitive_opt::<Int32Type>() {
                    a.values().iter().map(|v| i64::from(*v)).collect()
                } else {
                    return Err(ArrowError::SchemaError(format!(
                        "a key column of type {} where an integer was declared",
                        c.data_type()
                    ))
                    .into());
                };
                for v in values {
                    let slot = *slots.entry(v).or_insert_with(|| {
                        keys.push(v);
                        added += 1;
                        (keys.len() - 1) as u32
                    });
                    out.push(slot);
                }
            }
            Index::Rows {
                converter,
                arena,
                ends,
                table,
                hasher,
            } => {
                use std::hash::BuildHasher;
                let rows = converter.convert_columns(columns)?;
                for r in 0..n {
                    let bytes = rows.row(r);
                    let bytes = bytes.as_ref();
                    let hash = hasher.hash_one(bytes);
                    let at = |s: u32| {
                        let s = s as usize;
                        let start = if s == 0 { 0 } else { ends[s - 1] };
                        &arena[start..ends[s]]
                    };
                    let found = table.find(hash, |s| at(*s) == bytes).copied();
                    let slot = match found {
                        Some(s) => s,
                        None => {
                            let s = ends.len() as u32;
                            arena.extend_from_slice(bytes);
                            ends.push(arena.len());
                            let (arena, ends) = (&*arena, &*ends);
                            table.insert_unique(hash, s, |t| {
                                let t = *t as usize;
                                let start = if t == 0 { 0 } else { ends[t - 1] };
                                hasher.hash_one(&arena[start..ends[t]])
                            });
                            added += 1;
                            s
                        }
                    };
                    out.push(slot);
                }
            }
        }
        self.causes
            .resize(self.causes.len() + added * self.words, 0);
        self.newest.resize(self.newest.len() + added, NO_TS);
        Ok(out)
    }

    /// Folds in one part of keys.
    fn add(&mut self, part: &AffectedKeys, names: &[String]) -> Result<(), SpillError> {
        let slots = self.slots(&part.columns)?;
        // The cause bits of each distinct list of the part (lists are shared).
        let mut bits_of: HashMap<*const [String], Vec<u64>> = HashMap::new();
        for (row, slot) in slots.iter().enumerate() {
            let list = &part.upstreams[row];
            let bits = match bits_of.get(&Arc::as_ptr(list)) {
                Some(b) => b,
                None => {
                    let mut b = vec![0u64; self.words];
                    for name in list.iter() {
                        let u = names.iter().position(|n| n == name).ok_or_else(|| {
                            InvalidKeys::UnknownUpstream {
                                name: name.clone(),
                                part: false,
                                upstreams: names.to_vec(),
                            }
                        })?;
                        b[u / 64] |= 1 << (u % 64);
                    }
                    bits_of.entry(Arc::as_ptr(list)).or_insert(b)
                }
            };
            let s = *slot as usize;
            for (w, b) in bits.iter().enumerate() {
                self.causes[s * self.words + w] |= b;
            }
            if let Some(t) = part.change_ts[row] {
                self.newest[s] = self.newest[s].max(t);
            }
        }
        Ok(())
    }

    /// Folds in rows of keys all caused by upstream `u` (an index into the names),
    /// with their commit timestamps: no distinct step before, no copy kept.
    fn add_rows(
        &mut self,
        columns: &[ArrayRef],
        u: usize,
        ts: Option<&TimestampMicrosecondArray>,
    ) -> Result<(), SpillError> {
        let slots = self.slots(columns)?;
        let (word, bit) = (u / 64, 1u64 << (u % 64));
        for (row, slot) in slots.iter().enumerate() {
            let s = *slot as usize;
            self.causes[s * self.words + word] |= bit;
            if let Some(t) = ts.filter(|t| t.is_valid(row)).map(|t| t.value(row)) {
                self.newest[s] = self.newest[s].max(t);
            }
        }
        Ok(())
    }

    /// The keys folded in the spill schema: their columns, cause words and newest
    /// timestamps as they are held (no names involved).
    fn to_spill(&self, schema: &SchemaRef) -> Result<RecordBatch, SpillError> {
        let mut cols = self.key_columns()?;
        for w in 0..self.words {
            let word: UInt64Array = self.causes.chunks(self.words).map(|set| set[w]).collect();
            cols.push(Arc::new(word));
        }
        let ts: TimestampMicrosecondArray = self
            .newest
            .iter()
            .map(|t| (*t != NO_TS).then_some(*t))
            .collect();
        cols.push(Arc::new(ts));
        Ok(RecordBatch::try_new(schema.clone(), cols)?)
    }

    /// The key columns of the keys folded.
    fn key_columns(&self) -> Result<Vec<ArrayRef>, SpillError> {
        Ok(match &self.index {
            Index::Int { keys, int32, .. } => {
                let a: ArrayRef = Arc::new(Int64Array::from(keys.clone()));
                if *int32 {
                    vec![deltalake::arrow::compute::cast(&a, &DataType::Int32)?]
                } else {
                    vec![a]
                }
            }
            Index::Rows {
                converter,
                arena,
                ends,
                ..
            } => {
                let parser = converter.parser();
                let rows = (0..ends.len()).map(|s| {
                    let start = if s == 0 { 0 } else { ends[s - 1] };
                    parser.parse(&arena[start..ends[s]])
                });
                converter.convert_rows(rows)?
            }
        })
    }

    /// The keys folded, as [`AffectedKeys`] (causes named, sorted, shared per set).
    fn to_keys(&self, names: &[String]) -> Result<AffectedKeys, SpillError> {
        let columns = self.key_columns()?;
        let upstreams = super::cause_lists(&self.causes, self.words, names);
        let change_ts = self
            .newest
            .iter()
            .map(|t| (*t != NO_TS).then_some(*t))
            .collect();
        Ok(AffectedKeys {
            columns,
            upstreams,
            change_ts,
        })
    }
}

impl KeySet {
    /// An empty set for keys of `keys` caused by `upstream_names`, held in memory up to
    /// `budget` bytes, spilled under `dir` past it.
    pub fn new(
        keys: &[KeyColumn],
        upstream_names: &[&str],
        budget: usize,
        dir: &Path,
    ) -> Result<Self, SpillError> {
        Ok(KeySet {
            keys: keys.to_vec(),
            names: upstream_names.iter().map(|n| n.to_string()).collect(),
            budget: budget.max(1),
            dir: dir.to_path_buf(),
            folded: Folded::new(keys, upstream_names.len())?,
            spill: None,
        })
    }

    /// Folds in one call's keys (already validated).
    pub fn add(&mut self, part: AffectedKeys) -> Result<(), SpillError> {
        if part.is_empty() {
            return Ok(());
        }
        self.folded.add(&part, &self.names)?;
        drop(part);
        if self.folded.memory_size() > self.budget {
            self.spill_folded()?;
        }
        Ok(())
    }

    /// Folds in rows of keys (already validated: the key columns, non-null, of the
    /// declared types) that the changes of upstream `u` (an index into the names the
    /// set was made with) caused, with their commit timestamps.
    pub fn add_rows(
        &mut self,
        columns: &[ArrayRef],
        u: usize,
        ts: Option<&TimestampMicrosecondArray>,
    ) -> Result<(), SpillError> {
        if columns.first().is_none_or(|c| c.is_empty()) {
            return Ok(());
        }
        self.folded.add_rows(columns, u, ts)?;
        if self.folded.memory_size() > self.budget {
            self.spill_folded()?;
        }
        Ok(())
    }

    /// The keys of a set that never went to disk (one made with a budget it cannot
    /// pass), without the async merge [`KeySet::finish`] does.
    pub fn into_memory(self) -> Result<AffectedKeys, SpillError> {
        match self.spill {
            None => self.folded.to_keys(&self.names),
            Some(_) => Err(SpillError::Arrow(ArrowError::InvalidArgumentError(
                "the key set went to disk: finish it instead".into(),
            ))),
        }
    }

    /// How many times the set went to disk (0: it stayed in memory).
    pub fn spills(&self) -> usize {
        self.spill.as_ref().map_or(0, |s| s.times)
    }

    /// How many times the set will have gone to disk once [`KeySet::finish`]ed (a set
    /// that spilled writes what it still holds too).
    pub fn spills_at_finish(&self) -> usize {
        match self.spills() {
            0 => 0,
            n if self.folded.len() > 0 => n + 1,
            n => n,
        }
    }

    /// Writes the folded keys to the spill file and starts again from none.
    fn spill_folded(&mut self) -> Result<(), SpillError> {
        let schema = spill_schema(&self.keys, self.names.len());
        let batch = self.folded.to_spill(&schema)?;
        self.folded = Folded::new(&self.keys, self.names.len())?;
        self.write_spill(&batch)
    }

    fn io(&self, source: std::io::Error) -> SpillError {
        SpillError::Io {
            dir: self.dir.clone(),
            source,
        }
    }

    fn write_spill(&mut self, batch: &RecordBatch) -> Result<(), SpillError> {
        if self.spill.is_none() {
            let file = tempfile::Builder::new()
                .prefix("dlink-keys-")
                .suffix(".arrow")
                .tempfile_in(&self.dir)
                .map_err(|e| self.io(e))?;
            let schema = spill_schema(&self.keys, self.names.len());
            let out = file.reopen().map_err(|e| self.io(e))?;
            let writer = FileWriter::try_new_buffered(out, &schema)?;
            self.spill = Some(Spill {
                file,
                writer,
                schema,
                times: 0,
            });
        }
        let Some(spill) = self.spill.as_mut() else {
            return Ok(());
        };
        // In record batches of SPILL_BATCH_ROWS: what the merge reads at once.
        let mut at = 0;
        while at < batch.num_rows() {
            let n = SPILL_BATCH_ROWS.min(batch.num_rows() - at);
            spill.writer.write(&batch.slice(at, n))?;
            at += n;
        }
        spill.times += 1;
        tracing::debug!(
            keys = batch.num_rows(),
            times = spill.times,
            path = %spill.file.path().display(),
            "key set spilled to disk"
        );
        Ok(())
    }

    /// The batch's distinct keys: in memory when they stayed within the budget, else
    /// merged from the spill file into a file of distinct keys.
    pub async fn finish(mut self) -> Result<Keys, SpillError> {
        if self.spill.is_none() {
            return Ok(Keys::Memory(self.folded.to_keys(&self.names)?));
        }
        if self.folded.len() > 0 {
            self.spill_folded()?;
        }
        let Some(mut spill) = self.spill.take() else {
            return Ok(Keys::Memory(AffectedKeys::empty(&self.keys)));
        };
        spill.writer.finish()?;
        let merged = merge_spilled(spill.file.path(), &spill.schema, self.budget, &self.dir)
            .await
            .map_err(|e| match e {
                SpillError::Io { source, .. } => self.io(source),
                e => e,
            })?;
        Ok(Keys::Spilled(SpilledKeys {
            file: merged.0,
            len: merged.1,
            keys: self.keys,
            names: self.names,
            uniform: None,
        }))
    }
}

/// The spill files' schema: the key columns, one `UInt64` word of cause bits per 64
/// upstreams, and the newest commit timestamp.
fn spill_schema(keys: &[KeyColumn], upstreams: usize) -> SchemaRef {
    let mut fields: Vec<Field> = keys
        .iter()
        .map(|k| Field::new(&k.name, arrow_type(k.ty), false))
        .collect();
    for w in 0..words(upstreams) {
        fields.push(Field::new(format!("_causes_{w}"), DataType::UInt64, false));
    }
    fields.push(Field::new(
        TS,
        DataType::Timestamp(TimeUnit::Microsecond, None),
        true,
    ));
    Arc::new(Schema::new(fields))
}

fn words(upstreams: usize) -> usize {
    upstreams.div_ceil(64).max(1)
}

/// Merges the spill file at `path` into a new file of distinct keys; returns it and
/// the number of keys.
async fn merge_spilled(
    path: &Path,
    schema: &SchemaRef,
    budget: usize,
    dir: &Path,
) -> Result<(tempfile::NamedTempFile, usize), SpillError> {
    // DataFusion's pool counts its aggregation state, not the batches around it nor
    // the sort buffers of its own spills: a quarter of the budget, so that the whole
    // merge stays within it.
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_limit((budget / 4).max(MIN_MERGE_BYTES), 1.0)
        .with_temp_file_path(dir)
        .build_arc()?;
    // One partition: the whole budget for one aggregation, which spills sorted runs
    // through the disk manager when the budget is reached.
    let config = SessionConfig::new().with_target_partitions(1);
    let ctx = SessionContext::new_with_config_rt(config, runtime);
    // The spill file read a record batch at a time (DataFusion's own Arrow source
    // fetches a local file whole: 720 MB at 30M keys).
    let source = SpillSource {
        schema: schema.clone(),
        path: path.to_path_buf(),
    };
    let table = StreamingTable::try_new(schema.clone(), vec![Arc::new(source)])?;
    let df = ctx.read_table(Arc::new(table))?;
    let col = |n: &str| Expr::Column(Column::new_unqualified(n));
    let fields = schema.fields();
    let group: Vec<Expr> = fields
        .iter()
        .filter(|f| f.name() != TS && !f.name().starts_with("_causes_"))
        .map(|f| col(f.name()))
        .collect();
    let mut aggs: Vec<Expr> = fields
        .iter()
        .filter(|f| f.name().starts_with("_causes_"))
        .map(|f| bit_or(col(f.name())).alias(f.name()))
        .collect();
    aggs.push(max(col(TS)).alias(TS));
    let mut stream = df.aggregate(group, aggs)?.execute_stream().await?;
    let io = |source| SpillError::Io {
        dir: dir.to_path_buf(),
        source,
    };
    let file = tempfile::Builder::new()
        .prefix("dlink-keys-merged-")
        .suffix(".arrow")
        .tempfile_in(dir)
        .map_err(io)?;
    let mut writer = FileWriter::try_new_buffered(file.reopen().map_err(io)?, schema)?;
    let mut len = 0;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        // The aggregate's output, in the spill schema's order and types.
        let cols = schema
            .fields()
            .iter()
            .map(|f| {
                let c = batch.column_by_name(f.name()).ok_or_else(|| {
                    ArrowError::SchemaError(format!("the merge lost column {}", f.name()))
                })?;
                if c.data_type() == f.data_type() {
                    Ok(c.clone())
                } else {
                    deltalake::arrow::compute::cast(c, f.data_type())
                }
            })
            .collect::<Result<Vec<_>, ArrowError>>()?;
        let out = RecordBatch::try_new(schema.clone(), cols)?;
        len += out.num_rows();
        writer.write(&out)?;
    }
    writer.finish()?;
    Ok((file, len))
}

/// A spill file as DataFusion's input, a record batch at a time.
#[derive(Debug)]
struct SpillSource {
    schema: SchemaRef,
    path: PathBuf,
}

impl PartitionStream for SpillSource {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let batches: Box<dyn Iterator<Item = Result<RecordBatch, DataFusionError>> + Send> =
            match File::open(&self.path)
                .map_err(|e| DataFusionError::External(Box::new(e)))
                .and_then(|f| FileReader::try_new_buffered(f, None).map_err(Into::into))
            {
                Ok(reader) => Box::new(reader.map(|b| b.map_err(Into::into))),
                Err(e) => Box::new(std::iter::once(Err(e))),
            };
        Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures::stream::iter(batches),
        ))
    }
}

/// A batch's distinct keys, as the commit writes them.
pub enum Keys {
    /// Within the budget: in memory.
    Memory(AffectedKeys),
    /// Over it: in a file of distinct keys on local disk.
    Spilled(SpilledKeys),
}

/// Distinct keys in a local file (removed when dropped).
pub struct SpilledKeys {
    file: tempfile::NamedTempFile,
    len: usize,
    keys: Vec<KeyColumn>,
    names: Vec<String>,
    /// The causes and least newest timestamp of every key, when they were given for
    /// all at once (see [`Keys::with_causes`]) rather than as the file holds them.
    uniform: Option<Uniform>,
}

/// The same causes for every key, and a timestamp each key's newest is at least.
#[derive(Clone)]
struct Uniform {
    causes: Arc<[String]>,
    newest: Option<i64>,
}

impl Uniform {
    fn apply(&self, k: &mut AffectedKeys) {
        for (causes, ts) in k.upstreams.iter_mut().zip(k.change_ts.iter_mut()) {
            causes.clone_from(&self.causes);
            *ts = (*ts).max(self.newest);
        }
    }
}

impl From<AffectedKeys> for Keys {
    fn from(k: AffectedKeys) -> Self {
        Keys::Memory(k)
    }
}

impl Keys {
    /// The number of distinct keys.
    pub fn len(&self) -> usize {
        match self {
            Keys::Memory(k) => k.len(),
            Keys::Spilled(s) => s.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the keys went to disk.
    pub fn spilled(&self) -> bool {
        matches!(self, Keys::Spilled(_))
    }

    /// Gives every key the same causes (sorted here) and a newest commit timestamp of
    /// at least `newest`: a SQL query's keys when it returns no `_upstream` (known once
    /// its change rows have all been read).
    pub fn with_causes(self, mut causes: Vec<String>, newest: Option<i64>) -> Keys {
        causes.sort();
        let u = Uniform {
            causes: causes.into(),
            newest,
        };
        match self {
            Keys::Memory(mut k) => {
                u.apply(&mut k);
                Keys::Memory(k)
            }
            Keys::Spilled(mut s) => {
                s.uniform = Some(u);
                Keys::Spilled(s)
            }
        }
    }

    /// The keys in parts of at most `rows` (about, for spilled keys: as the file holds
    /// them), each read when asked for; may be called again (a commit's retry).
    pub fn chunks(
        &self,
        rows: usize,
    ) -> Result<Box<dyn Iterator<Item = Result<AffectedKeys, SpillError>> + Send + '_>, SpillError>
    {
        let rows = rows.max(1);
        match self {
            Keys::Memory(k) => {
                let n = k.len();
                Ok(Box::new(
                    (0..n)
                        .step_by(rows)
                        .map(move |s| Ok(k.slice(s, rows.min(n - s)))),
                ))
            }
            Keys::Spilled(s) => {
                let io = |source| SpillError::Io {
                    dir: s
                        .file
                        .path()
                        .parent()
                        .map(Path::to_path_buf)
                        .unwrap_or_default(),
                    source,
                };
                let f = s.file.reopen().map_err(io)?;
                let reader = FileReader::try_new_buffered(f, None)?;
                Ok(Box::new(reader.map(move |b| {
                    let mut k = decode(&b?, &s.keys, &s.names)?;
                    if let Some(u) = &s.uniform {
                        u.apply(&mut k);
                    }
                    Ok(k)
                })))
            }
        }
    }

    /// Every key in memory at once (tests, `why`, the bench's comparisons).
    pub fn into_memory(self) -> Result<AffectedKeys, SpillError> {
        match self {
            Keys::Memory(k) => Ok(k),
            Keys::Spilled(_) => {
                let parts = self.chunks(usize::MAX)?.collect::<Result<Vec<_>, _>>()?;
                let keys = match &self {
                    Keys::Spilled(s) => s.keys.clone(),
                    Keys::Memory(_) => Vec::new(),
                };
                if parts.is_empty() {
                    return Ok(AffectedKeys::empty(&keys));
                }
                Ok(AffectedKeys::concat(parts)?)
            }
        }
    }
}

/// A spill file's batch back as keys (the causes' names shared per set of bits).
fn decode(
    b: &RecordBatch,
    keys: &[KeyColumn],
    names: &[String],
) -> Result<AffectedKeys, SpillError> {
    let w = words(names.len());
    let columns: Vec<ArrayRef> = b.columns()[..keys.len()].to_vec();
    let bits: Vec<&UInt64Array> = (0..w)
        .map(|i| b.column(keys.len() + i).as_primitive::<UInt64Type>())
        .collect();
    let ts = b
        .column(keys.len() + w)
        .as_primitive::<deltalake::arrow::datatypes::TimestampMicrosecondType>();
    let causes: Vec<u64> = (0..b.num_rows())
        .flat_map(|r| bits.iter().map(move |col| col.value(r)))
        .collect();
    let upstreams = super::cause_lists(&causes, w, names);
    let change_ts = (0..ts.len())
        .map(|r| ts.is_valid(r).then(|| ts.value(r)))
        .collect();
    Ok(AffectedKeys {
        columns,
        upstreams,
        change_ts,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use deltalake::arrow::array::{Int64Array, StringArray};
    use deltalake::arrow::datatypes::Int64Type;

    use super::*;
    use crate::config::KeyType;

    type Want = BTreeMap<(i64, String), (Vec<String>, Option<i64>)>;
    /// A key row of a part: (id, region, causing upstream, commit timestamp).
    type Row = (i64, &'static str, &'static str, Option<i64>);

    fn key_cols() -> Vec<KeyColumn> {
        vec![
            KeyColumn {
                name: "id".into(),
                ty: KeyType::Long,
            },
            KeyColumn {
                name: "region".into(),
                ty: KeyType::String,
            },
        ]
    }

    /// A part: rows (id, region, upstream, timestamp), distinct (id, region) each.
    fn part(rows: &[Row]) -> AffectedKeys {
        AffectedKeys {
            columns: vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            ],
            upstreams: rows
                .iter()
                .map(|r| Arc::from(vec![r.2.to_string()]))
                .collect(),
            change_ts: rows.iter().map(|r| r.3).collect(),
        }
    }

    /// What the parts must give, worked out row by row.
    fn expected(parts: &[Vec<Row>]) -> Want {
        let mut want: Want = BTreeMap::new();
        for rows in parts {
            for (id, region, up, ts) in rows {
                let e = want.entry((*id, region.to_string())).or_default();
                if !e.0.contains(&up.to_string()) {
                    e.0.push(up.to_string());
                    e.0.sort();
                }
                e.1 = e.1.max(*ts);
            }
        }
        want
    }

    fn got(keys: &Keys) -> Want {
        let mut out: Want = BTreeMap::new();
        for k in keys.chunks(7).unwrap() {
            let k = k.unwrap();
            let ids = k.columns[0].as_primitive::<Int64Type>();
            let regions = k.columns[1].as_string::<i32>();
            for r in 0..k.len() {
                let was = out.insert(
                    (ids.value(r), regions.value(r).to_string()),
                    (k.upstreams[r].to_vec(), k.change_ts[r]),
                );
                assert!(was.is_none(), "key {} twice", ids.value(r));
            }
        }
        out
    }

    /// Parts with keys reported again and again across parts, by both upstreams.
    fn parts() -> Vec<Vec<Row>> {
        (0..40)
            .map(|p: i64| {
                (0..500)
                    .map(|i| {
                        let id = (p * 37 + i * 11) % 3000;
                        let region = if id % 3 == 0 { "eu" } else { "us" };
                        let up = if (p + i) % 4 == 0 { "b" } else { "a" };
                        let ts = (i % 5 != 0).then_some(p * 1000 + i);
                        ((id, region), (up, ts))
                    })
                    .collect::<BTreeMap<_, _>>()
                    .into_iter()
                    .map(|((id, region), (up, ts))| (id, region, up, ts))
                    .collect()
            })
            .collect()
    }

    async fn fold_all(budget: usize, dir: &Path) -> (Keys, usize) {
        let mut set = KeySet::new(&key_cols(), &["a", "b"], budget, dir).unwrap();
        for rows in parts() {
            set.add(part(&rows)).unwrap();
        }
        let spills = set.spills();
        (set.finish().await.unwrap(), spills)
    }

    #[tokio::test]
    async fn a_set_within_its_budget_stays_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let (keys, spills) = fold_all(64 << 20, dir.path()).await;
        assert_eq!(spills, 0);
        assert!(!keys.spilled());
        assert_eq!(got(&keys), expected(&parts()));
    }

    #[tokio::test]
    async fn a_set_over_its_budget_spills_and_merges_back_to_the_same_keys() {
        let dir = tempfile::tempdir().unwrap();
        // 1 KiB: every fold spills; the merge runs within 1 KiB too (DataFusion's
        // aggregation spilling in turn).
        for budget in [1 << 10, 64 << 10] {
            let (keys, spills) = fold_all(budget, dir.path()).await;
            assert!(spills > 0, "budget {budget}: nothing spilled");
            assert!(keys.spilled());
            let want = expected(&parts());
            assert_eq!(keys.len(), want.len());
            assert_eq!(got(&keys), want, "budget {budget}");
            // The commit may read them twice (a retry on a fresh snapshot).
            assert_eq!(got(&keys), want);
            drop(keys);
        }
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "spill files left: {left:?}");
    }

    /// Causes given to every key at once (a SQL query without `_upstream`) hold in
    /// memory and when the keys went to disk, read twice; each key's newest timestamp
    /// is raised to the given one where it was older.
    #[tokio::test]
    async fn causes_given_for_every_key_hold_in_memory_and_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        for budget in [64 << 20, 1 << 10] {
            let (keys, _) = fold_all(budget, dir.path()).await;
            let floor = 20_000;
            let keys = keys.with_causes(vec!["b".into(), "a".into()], Some(floor));
            let want: Want = expected(&parts())
                .into_iter()
                .map(|(k, (_, ts))| (k, (vec!["a".into(), "b".into()], ts.max(Some(floor)))))
                .collect();
            assert!(want.values().any(|(_, ts)| *ts > Some(floor)));
            assert_eq!(got(&keys), want, "budget {budget}");
            assert_eq!(got(&keys), want, "budget {budget}, read again");
        }
    }

    /// More distinct keys than the merge's least memory holds (8 MiB; 300k keys of two
    /// columns take several times that as aggregation state): DataFusion's aggregation
    /// spills in turn, and the keys still come back once each with their causes.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_merge_over_its_own_memory_spills_too() {
        let dir = tempfile::tempdir().unwrap();
        let mut set = KeySet::new(&key_cols(), &["a", "b"], 1 << 20, dir.path()).unwrap();
        let n = 300_000i64;
        for (p, up) in [(0, "a"), (1, "b")] {
            for start in (0..n).step_by(50_000) {
                let rows: Vec<Row> = (start..start + 50_000)
                    .map(|i| (i, "eu", up, Some(i * 2 + p)))
                    .collect();
                set.add(part(&rows)).unwrap();
            }
        }
        assert!(set.spills() > 0);
        let keys = set.finish().await.unwrap();
        assert_eq!(keys.len(), n as usize);
        let mut seen = 0;
        for k in keys.chunks(usize::MAX).unwrap() {
            let k = k.unwrap();
            let ids = k.columns[0].as_primitive::<Int64Type>();
            for r in 0..k.len() {
                assert_eq!(
                    k.upstreams[r].to_vec(),
                    vec!["a".to_string(), "b".to_string()]
                );
                assert_eq!(k.change_ts[r], Some(ids.value(r) * 2 + 1));
                seen += 1;
            }
        }
        assert_eq!(seen, n);
    }

    #[tokio::test]
    async fn causes_past_64_upstreams_survive_a_spill() {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..70).map(|i| format!("u{i:02}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let keys = vec![KeyColumn {
            name: "id".into(),
            ty: KeyType::Long,
        }];
        let mut set = KeySet::new(&keys, &refs, 1, dir.path()).unwrap();
        for (u, id) in [(3, 1), (66, 1), (69, 2), (0, 2), (66, 3)] {
            set.add(AffectedKeys {
                columns: vec![Arc::new(Int64Array::from(vec![id]))],
                upstreams: vec![Arc::from(vec![names[u].clone()])],
                change_ts: vec![Some(id * 10 + u as i64)],
            })
            .unwrap();
        }
        let k = set.finish().await.unwrap().into_memory().unwrap();
        let ids = k.columns[0].as_primitive::<Int64Type>();
        let mut rows: Vec<(i64, Vec<String>, Option<i64>)> = (0..k.len())
            .map(|r| (ids.value(r), k.upstreams[r].to_vec(), k.change_ts[r]))
            .collect();
        rows.sort();
        assert_eq!(
            rows,
            vec![
                (1, vec!["u03".into(), "u66".into()], Some(76)),
                (2, vec!["u00".into(), "u69".into()], Some(89)),
                (3, vec!["u66".into()], Some(96)),
            ]
        );
    }

    #[tokio::test]
    async fn a_spill_folder_that_cannot_be_written_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("not-there");
        let mut set = KeySet::new(&key_cols(), &["a", "b"], 1, &missing).unwrap();
        // A budget of 1 byte: the first key spills.
        let e = set.add(part(&[(1, "eu", "a", None)])).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("not-there") && text.contains("spill_dir"),
            "{text}"
        );
    }

    /// An `int` key column comes back as Int32, in memory and spilled.
    #[tokio::test]
    async fn int_keys_keep_their_type() {
        use deltalake::arrow::array::Int32Array;
        use deltalake::arrow::datatypes::Int32Type;
        let dir = tempfile::tempdir().unwrap();
        let keys = vec![KeyColumn {
            name: "n".into(),
            ty: KeyType::Int,
        }];
        for budget in [64 << 20, 1] {
            let mut set = KeySet::new(&keys, &["a"], budget, dir.path()).unwrap();
            for ids in [vec![3, 1], vec![1, 2]] {
                let n = ids.len();
                set.add(AffectedKeys {
                    columns: vec![Arc::new(Int32Array::from(ids))],
                    upstreams: vec![Arc::from(vec!["a".to_string()]); n],
                    change_ts: vec![None; n],
                })
                .unwrap();
            }
            let k = set.finish().await.unwrap().into_memory().unwrap();
            let mut got: Vec<i32> = k.columns[0].as_primitive::<Int32Type>().values().to_vec();
            got.sort();
            assert_eq!(got, vec![1, 2, 3], "budget {budget}");
        }
    }

    #[test]
    fn chunks_of_keys_in_memory_cover_every_key_once() {
        let k = part(&[
            (1, "eu", "a", None),
            (2, "us", "b", Some(3)),
            (3, "eu", "a", None),
        ]);
        let keys = Keys::Memory(k);
        let sizes: Vec<usize> = keys.chunks(2).unwrap().map(|c| c.unwrap().len()).collect();
        assert_eq!(sizes, vec![2, 1]);
    }
}
