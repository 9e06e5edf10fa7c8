//! The references a catch-up is measured against, on the same data:
//! the raw-read limit (the change rows' parquet files read with the parquet reader
//! alone) and the same derivation as a Wasm plugin, native Rust and SQL.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deltalake::arrow::array::{
    AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use deltalake::arrow::datatypes::{
    DataType, Field, Int64Type, Schema, SchemaRef, TimestampMicrosecondType,
};
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use deltalake::parquet::arrow::ProjectionMask;
use futures::future::BoxFuture;

use crate::cdf::Changes;
use crate::config::{KeyColumn, KeyType, Limits, Pipeline, PluginSpec};
use crate::engine::BatchReport;
use crate::keys::DefaultCause;
use crate::plugin::{Lookup, Plugin, PluginHost, UpstreamInput};
use crate::sql_pipeline::ChangeTable;

/// The files holding the change rows of one table's versions `start..=end`, as the
/// commit JSON lists them: a commit's `cdc` files when it has any, else its `add`
/// (dataChange) and `remove` files.
pub fn change_files(table_dir: &Path, start: i64, end: i64) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    for v in start..=end {
        let log = table_dir.join("_delta_log").join(format!("{v:020}.json"));
        let text = std::fs::read_to_string(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let (mut cdc, mut data) = (Vec::new(), Vec::new());
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let a: serde_json::Value =
                serde_json::from_str(line).map_err(|e| format!("{}: {e}", log.display()))?;
            let path = |kind: &str| {
                a.get(kind)
                    .and_then(|x| x.get("path"))
                    .and_then(|p| p.as_str())
                    .map(|p| table_dir.join(percent_decode(p)))
            };
            if let Some(p) = path("cdc") {
                cdc.push(p);
            } else if let Some(p) = path("add") {
                let change = a["add"]["dataChange"].as_bool().unwrap_or(true);
                if change {
                    data.push(p);
                }
            } else if let Some(p) = path("remove") {
                if a["remove"]["dataChange"].as_bool().unwrap_or(true) {
                    data.push(p);
                }
            }
        }
        files.extend(if cdc.is_empty() { data } else { cdc });
    }
    Ok(files)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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

/// A lookup that always fails: the derivations measured here do no lookups.
pub struct NoLookup;

impl Lookup for NoLookup {
    fn lookup<'a>(
        &'a self,
        table: &'a str,
        _column: &'a str,
        _keys: &'a [u8],
        _columns: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<u8>, String>> {
        Box::pin(async move {
            Err(format!(
                "the benchmark answers no lookups (table '{table}')"
            ))
        })
    }
}

/// The key columns of every generated pipeline.
pub fn id_key() -> Vec<KeyColumn> {
    vec![KeyColumn {
        name: "id".into(),
        ty: KeyType::Long,
    }]
}

/// One pipeline's batch: its upstreams' names and change rows.
pub struct BatchInput<'a> {
    pub pipeline: &'a str,
    pub batch_id: i64,
    pub upstreams: Vec<(&'a str, (i64, i64), Arc<Changes>)>,
}

/// every_upstream_key compiled into the host: what the plugin does with the SDK (one
/// output row per distinct (id, upstream) with the newest commit timestamp), then the
/// same collection of that output into the keys the commit needs that the Wasm output
/// goes through. Only the Wasm boundary (IPC in and out, the sandbox) is left out.
/// Returns the number of distinct keys.
pub fn derive_native(input: &BatchInput<'_>) -> Result<usize, String> {
    let mut index: HashMap<(i64, usize), usize, foldhash::fast::RandomState> = HashMap::default();
    let (mut ids, mut ups, mut newest) = (Vec::new(), Vec::new(), Vec::<Option<i64>>::new());
    for (u, (_, _, ch)) in input.upstreams.iter().enumerate() {
        for b in &ch.batches {
            let col = b
                .column_by_name("id")
                .and_then(|c| c.as_primitive_opt::<Int64Type>())
                .ok_or("the change rows have no long column 'id'")?;
            let ts = b
                .column_by_name(crate::cdf::COMMIT_TIMESTAMP)
                .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
                .ok_or("the change rows have no _commit_timestamp")?;
            for (id, t) in col.iter().zip(ts.iter()) {
                let Some(id) = id else { continue };
                let slot = *index.entry((id, u)).or_insert_with(|| {
                    ids.push(id);
                    ups.push(input.upstreams[u].0);
                    newest.push(None);
                    ids.len() - 1
                });
                newest[slot] = newest[slot].max(t);
            }
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new(crate::keys::UPSTREAM, DataType::Utf8, false),
        Field::new(
            crate::cdf::COMMIT_TIMESTAMP,
            crate::cdf::timestamp_type(),
            true,
        ),
    ]));
    let out = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(StringArray::from(ups)),
            Arc::new(TimestampMicrosecondArray::from(newest).with_timezone("UTC")),
        ],
    )
    .map_err(|e| e.to_string())?;
    let names: Vec<&str> = input.upstreams.iter().map(|u| u.0).collect();
    Ok(crate::keys::collect_batches(&schema, &[out], &id_key(), &names, None)?.len())
}

/// Where the time of the Wasm derivation goes.
#[derive(Debug, Clone, Copy, Default)]
pub struct WasmPhases {
    /// The host's IPC encoding of the change rows.
    pub encode: Duration,
    /// The call: copying the input in, the guest's decode, derive and encode, copying
    /// the output out.
    pub call: Duration,
    /// The host's decode, checks and deduplication of the output.
    pub collect: Duration,
}

/// The plugin's derive on the batch: IPC encoding, the call, and the host's checks
/// and deduplication of its output. Returns the number of distinct keys.
pub async fn derive_wasm(
    plugin: &mut Plugin,
    input: &BatchInput<'_>,
    phases: &mut WasmPhases,
) -> Result<usize, String> {
    let t = Instant::now();
    let mut inputs = Vec::with_capacity(input.upstreams.len());
    for (name, (start, end), ch) in &input.upstreams {
        let changes = if ch.rows() > 0 {
            crate::ipc::encode(&ch.schema, &ch.batches).map_err(|e| e.to_string())?
        } else {
            Vec::new()
        };
        inputs.push(UpstreamInput {
            name: name.to_string(),
            start_version: *start,
            end_version: *end,
            changes,
        });
    }
    phases.encode += t.elapsed();
    let t = Instant::now();
    let out = plugin
        .derive(input.pipeline, input.batch_id, inputs, Arc::new(NoLookup))
        .await
        .map_err(|e| e.to_string())?;
    phases.call += t.elapsed();
    let t = Instant::now();
    let names: Vec<&str> = input.upstreams.iter().map(|u| u.0).collect();
    let n = crate::keys::collect(&out, &id_key(), &names)?.len();
    phases.collect += t.elapsed();
    Ok(n)
}

/// The UNION ALL query over the batch with DataFusion, as a SQL pipeline runs it.
/// Returns the number of distinct keys.
pub async fn derive_sql(query: &str, input: &BatchInput<'_>) -> Result<usize, String> {
    let mut tables = Vec::with_capacity(input.upstreams.len());
    let mut default = DefaultCause::default();
    for (name, _, ch) in &input.upstreams {
        if ch.rows() > 0 {
            default.upstreams.push(name.to_string());
        }
        tables.push(ChangeTable {
            name,
            schema: ch.schema.clone(),
            batches: ch.batches.clone(),
        });
    }
    let (schema, rows): (SchemaRef, Vec<RecordBatch>) =
        crate::sql_pipeline::derive(query, tables, &[], &Arc::default()).await?;
    let names: Vec<&str> = input.upstreams.iter().map(|u| u.0).collect();
    Ok(crate::keys::collect_batches(&schema, &rows, &id_key(), &names, Some(&default))?.len())
}

/// Times the three derivations of every pipeline-batch of the catch-up on the same
/// change rows (read again with dlink-rt's reader, one batch id at a time).
pub async fn derivations(
    pipelines: &[Pipeline],
    host: &PluginHost,
    compiled: &crate::plugin::Compiled,
    reports: &[BatchReport],
    r: &mut super::BenchResult,
) -> Result<(), String> {
    let spec = PluginSpec {
        path: compiled.path.clone(),
        config_json: r#"{"key_column":"id"}"#.into(),
        limits: Limits::default(),
        read_dirs: Vec::new(),
    };
    let mut plugins = Vec::with_capacity(pipelines.len());
    let mut queries = Vec::with_capacity(pipelines.len());
    let mut upstreams = HashMap::new();
    for p in pipelines {
        plugins.push(
            host.instantiate(compiled, &p.name, &spec)
                .await
                .map_err(|e| e.to_string())?,
        );
        let names: Vec<String> = p.upstreams.iter().map(|u| u.name.clone()).collect();
        queries.push(super::workload::union_query(&names));
        for u in &p.upstreams {
            if !upstreams.contains_key(&u.name) {
                let t = crate::cdf::open_latest(u)
                    .await
                    .map_err(|e| e.to_string())?;
                upstreams.insert(u.name.clone(), (u.clone(), t));
            }
        }
    }
    let index: HashMap<&str, usize> = pipelines
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.as_str(), i))
        .collect();
    let mut by_batch: BTreeMap<i64, Vec<&BatchReport>> = BTreeMap::new();
    for b in reports {
        by_batch.entry(b.batch_id).or_default().push(b);
    }
    let ctx = crate::cdf::session();
    let (mut wasm, mut native, mut sql, mut read) = (
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
    );
    let mut phases = WasmPhases::default();
    let mut agree = true;
    for (batch_id, group) in by_batch {
        let mut changes: HashMap<(String, i64, i64), Arc<crate::cdf::Changes>> = HashMap::new();
        let t = Instant::now();
        for b in &group {
            for u in &b.upstreams {
                let Some((s, e)) = u.range else { continue };
                let key = (u.name.clone(), s, e);
                if changes.contains_key(&key) {
                    continue;
                }
                let (up, table) = upstreams
                    .get(&u.name)
                    .ok_or_else(|| format!("unknown upstream {}", u.name))?;
                let ch = crate::cdf::read_changes(&ctx, up, table, s, e)
                    .await
                    .map_err(|e| e.to_string())?;
                changes.insert(key, Arc::new(ch));
            }
        }
        read += t.elapsed();
        for b in group {
            let i = *index
                .get(b.pipeline.as_str())
                .ok_or_else(|| format!("unknown pipeline {}", b.pipeline))?;
            let input = BatchInput {
                pipeline: &b.pipeline,
                batch_id,
                upstreams: b
                    .upstreams
                    .iter()
                    .filter_map(|u| {
                        let (s, e) = u.range?;
                        let ch = changes.get(&(u.name.clone(), s, e))?.clone();
                        Some((u.name.as_str(), (s, e), ch))
                    })
                    .collect(),
            };
            let t = Instant::now();
            let n_native = derive_native(&input)?;
            native += t.elapsed();
            let t = Instant::now();
            let n_wasm = derive_wasm(&mut plugins[i], &input, &mut phases).await?;
            wasm += t.elapsed();
            let t = Instant::now();
            let n_sql = derive_sql(&queries[i], &input).await?;
            sql += t.elapsed();
            agree &= n_native == n_wasm && n_native == n_sql && n_native == b.keys;
        }
    }
    r.derive_native_s = native.as_secs_f64();
    r.derive_wasm_s = wasm.as_secs_f64();
    r.derive_sql_s = sql.as_secs_f64();
    r.derive_wasm_encode_s = phases.encode.as_secs_f64();
    r.derive_wasm_call_s = phases.call.as_secs_f64();
    r.derive_wasm_collect_s = phases.collect.as_secs_f64();
    r.reference_cdf_read_s = read.as_secs_f64();
    r.keys_agree = agree;
    Ok(())
}
