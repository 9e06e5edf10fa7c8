//! The references a catch-up is measured against, on the same data:
//! the raw-read limit (the change rows' parquet files read with the parquet reader
//! alone) and the same derivation as a Wasm plugin, native Rust and SQL.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deltalake::arrow::array::{Array, AsArray, Int64Array, RecordBatch, TimestampMicrosecondArray};
use deltalake::arrow::datatypes::{DataType, Field, Int64Type, Schema, TimestampMicrosecondType};
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use deltalake::parquet::arrow::ProjectionMask;
use dlink_rt::cdf::Changes;
use dlink_rt::config::{Limits, Pipeline, PluginSpec};
use dlink_rt::engine::{
    BatchInput, BatchReport, Derive, Derived, PluginDerive, PluginSlot, PluginTimings, SqlDerive,
    UpstreamBatch,
};
use dlink_rt::plugin::PluginHost;

/// The files holding the change rows of one table's versions `start..=end`, as the
/// commit JSON lists them: a commit's `cdc` files when it has any, else its `add`
/// (dataChange) and `remove` files.
pub fn change_files(table_dir: &Path, start: i64, end: i64) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for v in start..=end {
        let log = table_dir.join("_delta_log").join(format!("{v:020}.json"));
        let commit = std::fs::read(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        for path in dlink_rt::cdf::history::files_of(&commit) {
            let path = deltalake::Path::from_url_path(&path)
                .map_err(|e| format!("{}: {path}: {e}", log.display()))?;
            files.push(table_dir.join(path.as_ref()));
        }
    }
    Ok(files)
}

/// What the raw read did.
#[derive(Debug, Clone, Copy, Default)]
pub struct LimitRead {
    pub files: usize,
    pub bytes: u64,
    pub rows: u64,
    pub time: Duration,
}

/// Reads `columns` (those the file has) of every file with the parquet reader alone,
/// on `threads` threads.
pub fn read_files(
    files: &[PathBuf],
    columns: &[&str],
    threads: usize,
) -> Result<LimitRead, String> {
    let started = Instant::now();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<Result<(u64, u64), String>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                s.spawn(|| {
                    let (mut rows, mut bytes) = (0u64, 0u64);
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(f) = files.get(i) else {
                            return Ok((rows, bytes));
                        };
                        let (r, b) = read_file(f, columns)?;
                        rows += r;
                        bytes += b;
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err("a reader thread panicked".into()))
            })
            .collect()
    });
    let mut out = LimitRead {
        files: files.len(),
        ..Default::default()
    };
    for r in results {
        let (rows, bytes) = r?;
        out.rows += rows;
        out.bytes += bytes;
    }
    out.time = started.elapsed();
    Ok(out)
}

fn read_file(path: &Path, columns: &[&str]) -> Result<(u64, u64), String> {
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(|e| err(&e))?;
    let bytes = file.metadata().map_err(|e| err(&e))?.len();
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| err(&e))?;
    let schema = builder.parquet_schema();
    let leaves: Vec<usize> = (0..schema.num_columns())
        .filter(|i| columns.contains(&schema.column(*i).name()))
        .collect();
    let mask = ProjectionMask::leaves(schema, leaves);
    let reader = builder.with_projection(mask).build().map_err(|e| err(&e))?;
    let mut rows = 0u64;
    for b in reader {
        rows += b.map_err(|e| err(&e))?.num_rows() as u64;
    }
    Ok((rows, bytes))
}

/// every_upstream_key compiled into the host, as a [`Derive`]: what the plugin
/// returns through the SDK (per upstream, its change rows' key column and commit
/// timestamps, not de-duplicated), then the same host collection of that output that
/// the Wasm output goes through. Only the Wasm boundary (IPC in and out, the sandbox)
/// is left out.
pub(crate) struct NativeDerive;

impl Derive for NativeDerive {
    async fn derive(&mut self, input: BatchInput<'_>) -> dlink_rt::Result<Derived> {
        let parts = every_upstream_key(&input).map_err(dlink_rt::Error::Other)?;
        let names: Vec<&str> = input
            .upstreams
            .iter()
            .map(|u| u.upstream.name.as_str())
            .collect();
        let keys = dlink_rt::affected::collect_parts(&parts, &input.pipeline.keys, &names)
            .map_err(|e| dlink_rt::Error::Other(e.to_string()))?;
        Ok(Derived {
            keys: keys.into(),
            sha256: String::new(),
            active_since: 1,
            contract: None,
            timings: PluginTimings::default(),
        })
    }
}

/// What the `every_upstream_key` plugin returns, natively: per upstream, its change
/// rows' `id` and `_commit_timestamp` columns as they are.
fn every_upstream_key(input: &BatchInput<'_>) -> Result<Vec<dlink_rt::affected::KeysPart>, String> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new(
            dlink_rt::cdf::COMMIT_TIMESTAMP,
            dlink_rt::cdf::timestamp_type(),
            true,
        ),
    ]));
    let mut parts = Vec::new();
    for up in &input.upstreams {
        let ch = match &up.changes {
            Some(dlink_rt::cdf::Rows::Read(ch)) => ch,
            Some(dlink_rt::cdf::Rows::Stream(_)) => {
                return Err("the native reference takes rows read at once, not streamed".into())
            }
            None => continue,
        };
        let mut batches = Vec::with_capacity(ch.batches.len());
        for b in &ch.batches {
            let id = b
                .column_by_name("id")
                .filter(|c| c.data_type() == &DataType::Int64)
                .ok_or("the change rows have no long column 'id'")?;
            let ts = b
                .column_by_name(dlink_rt::cdf::COMMIT_TIMESTAMP)
                .ok_or("the change rows have no _commit_timestamp")?;
            let id = match id.null_count() {
                0 => id.clone(),
                _ => Arc::new(
                    id.as_primitive::<Int64Type>()
                        .iter()
                        .flatten()
                        .collect::<Int64Array>(),
                ),
            };
            let ts = if id.len() == ts.len() {
                ts.clone()
            } else {
                // Rows with a null id are left out; so are their timestamps.
                let ids = b.column(b.schema().index_of("id").map_err(|e| e.to_string())?);
                let keep: Vec<Option<i64>> = ts
                    .as_primitive::<TimestampMicrosecondType>()
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| ids.is_valid(*i))
                    .map(|(_, t)| t)
                    .collect();
                Arc::new(TimestampMicrosecondArray::from(keep).with_timezone("UTC"))
            };
            batches.push(
                RecordBatch::try_new(schema.clone(), vec![id, ts]).map_err(|e| e.to_string())?,
            );
        }
        parts.push(dlink_rt::affected::KeysPart {
            upstream: up.upstream.name.clone(),
            schema: schema.clone(),
            batches,
        });
    }
    Ok(parts)
}

/// Times the three derivations of every pipeline-batch of the catch-up on the same
/// change rows (read again with dlink-rt's reader, one batch id at a time), each
/// through the [`Derive`] the pipelines run with: the plugin's, the SQL one (the
/// bench's UNION ALL query) and the native one above.
pub async fn derivations(
    pipelines: &[Pipeline],
    host: &PluginHost,
    compiled: &dlink_rt::plugin::Compiled,
    reports: &[BatchReport],
    r: &mut super::BenchResult,
) -> Result<(), String> {
    let spec = bench_plugin(compiled);
    let mut slots: Vec<PluginSlot> = pipelines.iter().map(|_| PluginSlot::default()).collect();
    let queries: Vec<String> = pipelines
        .iter()
        .map(|p| {
            let names: Vec<String> = p.upstreams.iter().map(|u| u.name.clone()).collect();
            super::workload::union_query(&names)
        })
        .collect();
    let upstreams = open_upstreams(pipelines).await?;
    let index: HashMap<&str, usize> = pipelines
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.as_str(), i))
        .collect();
    let mut by_batch: BTreeMap<i64, Vec<&BatchReport>> = BTreeMap::new();
    for b in reports {
        by_batch.entry(b.batch_id).or_default().push(b);
    }
    let ctx = dlink_rt::cdf::session();
    let cache = dlink_rt::lookup::TableCache::default();
    let mut c = Clocks {
        agree: true,
        ..Clocks::default()
    };
    for (batch_id, group) in by_batch {
        let t = Instant::now();
        let changes = read_group(&ctx, &upstreams, &group).await?;
        c.read += t.elapsed();
        for b in group {
            let i = *index
                .get(b.pipeline.as_str())
                .ok_or_else(|| format!("unknown pipeline {}", b.pipeline))?;
            let input = || {
                batch_input(
                    &pipelines[i],
                    b,
                    batch_id,
                    &upstreams,
                    &changes,
                    &cache,
                    &ctx,
                )
            };
            let t = Instant::now();
            let n_native = NativeDerive
                .derive(input()?)
                .await
                .map_err(|e| e.to_string())?;
            c.native += t.elapsed();
            let mut plugin = PluginDerive {
                spec: &spec,
                host,
                slot: &mut slots[i],
            };
            let t = Instant::now();
            let n_wasm = plugin.derive(input()?).await.map_err(|e| e.to_string())?;
            c.add_wasm(t, &n_wasm.timings);
            let t = Instant::now();
            let n_sql = SqlDerive::new(&queries[i]).derive(input()?).await;
            let n_sql = n_sql.map_err(|e| e.to_string())?;
            c.sql += t.elapsed();
            let n = n_native.keys.len();
            c.agree &= n == n_wasm.keys.len() && n == n_sql.keys.len() && n == b.keys;
        }
    }
    c.store(r);
    Ok(())
}

/// The bench plugin as the derivations run it (keys from its `id` column).
fn bench_plugin(compiled: &dlink_rt::plugin::Compiled) -> PluginSpec {
    PluginSpec {
        path: compiled.path.clone(),
        config_json: r#"{"key_column":"id"}"#.into(),
        limits: Limits::default(),
        read_dirs: Vec::new(),
        storage: Default::default(),
    }
}

/// What the reference derivations took, summed over batches.
#[derive(Default)]
struct Clocks {
    wasm: Duration,
    native: Duration,
    sql: Duration,
    read: Duration,
    phases: PluginTimings,
    /// Whether the three found the same number of keys as the catch-up, every batch.
    agree: bool,
}

impl Clocks {
    /// A Wasm derivation that started at `t`: the first batch of each pipeline also
    /// loads the plugin, which is not derive time.
    fn add_wasm(&mut self, t: Instant, timings: &PluginTimings) {
        self.wasm += t.elapsed().saturating_sub(timings.load);
        self.phases.encode += timings.encode;
        self.phases.call += timings.call;
        self.phases.collect += timings.collect;
    }

    fn store(self, r: &mut super::BenchResult) {
        r.derive_native_s = self.native.as_secs_f64();
        r.derive_wasm_s = self.wasm.as_secs_f64();
        r.derive_sql_s = self.sql.as_secs_f64();
        r.derive_wasm_encode_s = self.phases.encode.as_secs_f64();
        r.derive_wasm_call_s = self.phases.call.as_secs_f64();
        r.derive_wasm_collect_s = self.phases.collect.as_secs_f64();
        r.reference_cdf_read_s = self.read.as_secs_f64();
        r.keys_agree = self.agree;
    }
}

/// Every upstream of the pipelines, opened once at its latest version.
async fn open_upstreams(
    pipelines: &[Pipeline],
) -> Result<HashMap<String, (dlink_rt::config::Upstream, deltalake::DeltaTable)>, String> {
    let mut upstreams = HashMap::new();
    for u in pipelines.iter().flat_map(|p| &p.upstreams) {
        if !upstreams.contains_key(&u.name) {
            let t = dlink_rt::cdf::open_latest(u)
                .await
                .map_err(|e| e.to_string())?;
            upstreams.insert(u.name.clone(), (u.clone(), t));
        }
    }
    Ok(upstreams)
}

/// The change rows of every upstream range the reports of one batch id read, each
/// range once.
async fn read_group(
    ctx: &deltalake::datafusion::prelude::SessionContext,
    upstreams: &HashMap<String, (dlink_rt::config::Upstream, deltalake::DeltaTable)>,
    group: &[&BatchReport],
) -> Result<HashMap<(String, i64, i64), Arc<Changes>>, String> {
    let mut changes: HashMap<(String, i64, i64), Arc<Changes>> = HashMap::new();
    for b in group {
        for u in &b.upstreams {
            let Some((s, e)) = u.range else { continue };
            let key = (u.name.clone(), s, e);
            if changes.contains_key(&key) {
                continue;
            }
            let (up, table) = upstreams
                .get(&u.name)
                .ok_or_else(|| format!("unknown upstream {}", u.name))?;
            let ch = dlink_rt::cdf::read_changes(ctx, up, table, s, e)
                .await
                .map_err(|e| e.to_string())?;
            changes.insert(key, Arc::new(ch));
        }
    }
    Ok(changes)
}

/// What a derivation of report `b`'s batch sees: its upstreams' ranges with the change
/// rows read for them.
fn batch_input<'a>(
    pipeline: &'a Pipeline,
    b: &'a BatchReport,
    batch_id: i64,
    upstreams: &'a HashMap<String, (dlink_rt::config::Upstream, deltalake::DeltaTable)>,
    changes: &HashMap<(String, i64, i64), Arc<Changes>>,
    cache: &'a dlink_rt::lookup::TableCache,
    ctx: &'a deltalake::datafusion::prelude::SessionContext,
) -> Result<BatchInput<'a>, String> {
    let mut ups = Vec::with_capacity(b.upstreams.len());
    for range in &b.upstreams {
        let (upstream, table) = upstreams
            .get(&range.name)
            .ok_or_else(|| format!("unknown upstream {}", range.name))?;
        let changes = range.range.and_then(|(s, e)| {
            changes
                .get(&(range.name.clone(), s, e))
                .map(|c| dlink_rt::cdf::Rows::Read(Changes::clone(c)))
        });
        ups.push(UpstreamBatch {
            upstream,
            range,
            changes,
            table,
        });
    }
    Ok(BatchInput {
        lookup_tables: &[],
        pipeline,
        batch_id,
        upstreams: ups,
        pinned: Vec::new(),
        cache,
        ctx,
    })
}
