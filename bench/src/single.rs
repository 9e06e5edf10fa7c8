//! `dlink-bench --single --rows N`: a first run over ONE upstream of N rows (the
//! `every_upstream_key` plugin keyed by `id`, so N distinct keys), the case where a
//! batch is as big as a table gets: its time, change rows per second and peak RSS.
//!
//! The table is written in appends of at most [`WRITE_ROWS`] rows (Arrow batches, not
//! JSON), so the writer's memory does not grow with N either; the peak RSS is reset
//! after writing (see `reset_peak_rss`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use deltalake::arrow::array::{Int64Array, RecordBatch, StringArray};
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTableBuilder, TableProperty};
use dlink_rt::config::{Catalog, Pipeline};
use serde::Serialize;

use super::{peak_rss, reset_peak_rss, secs, Cleanup};

/// Rows per append while writing the table.
const WRITE_ROWS: usize = 1_000_000;

pub struct SingleOptions {
    pub rows: usize,
    pub dir: Option<PathBuf>,
    pub keep: bool,
    pub host: dlink_rt::plugin::HostBuilder,
    /// The `every_upstream_key` plugin.
    pub plugin: PathBuf,
    pub chunk_rows: Option<u64>,
    /// The catalog's `[engine] memory_mb` (default: the runtime's).
    pub memory_mb: Option<u64>,
    /// Derive with a SQL query (`SELECT id FROM events_changes`) instead of the plugin.
    pub sql: bool,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct SingleResult {
    pub profile: String,
    /// "plugin" or "sql".
    pub derivation: String,
    pub rows: usize,
    pub appends: usize,
    pub write_s: f64,
    pub run_s: f64,
    pub batches: usize,
    pub change_rows: u64,
    pub keys: u64,
    pub change_rows_per_s: f64,
    pub read_s: f64,
    pub derive_s: f64,
    pub commit_s: f64,
    pub memory_mb: u64,
    /// VmHWM of the run (reset after the table was written).
    pub peak_rss_bytes: u64,
}

fn batch(schema: &Arc<Schema>, from: i64, n: usize) -> Result<RecordBatch, String> {
    let ids: Vec<i64> = (from..from + n as i64).collect();
    let names = StringArray::from_iter_values(ids.iter().map(|i| format!("event {i}")));
    let amounts = Int64Array::from_iter_values(ids.iter().map(|i| i % 1000));
    RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(names),
            Arc::new(amounts),
        ],
    )
    .map_err(|e| e.to_string())
}

/// Writes `rows` rows into a new CDF table at `path`; returns the appends made.
async fn write_table(path: &Path, rows: usize, progress: &impl Fn(&str)) -> Result<usize, String> {
    std::fs::create_dir_all(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("amount", DataType::Int64, true),
    ]));
    let url = deltalake::ensure_table_uri(path.to_string_lossy()).map_err(|e| e.to_string())?;
    let mut table = DeltaTableBuilder::from_url(url)
        .and_then(|b| b.build())
        .map_err(|e| e.to_string())?;
    let mut written = 0usize;
    let mut appends = 0usize;
    while written < rows.max(1) {
        let n = WRITE_ROWS.min(rows - written).max(1);
        let b = batch(&schema, written as i64 + 1, n)?;
        let mode = if appends == 0 {
            SaveMode::ErrorIfExists
        } else {
            SaveMode::Append
        };
        table = table
            .write(vec![b])
            .with_save_mode(mode)
            .with_configuration([(TableProperty::EnableChangeDataFeed.as_ref(), Some("true"))])
            .await
            .map_err(|e| e.to_string())?;
        written += n;
        appends += 1;
        if appends.is_multiple_of(10) {
            progress(&format!("{written} of {rows} rows written"));
        }
    }
    Ok(appends)
}

/// Writes the table, then runs the pipeline over it until caught up.
pub async fn run(opts: &SingleOptions, progress: impl Fn(&str)) -> Result<SingleResult, String> {
    let dir = super::workload_dir(opts.dir.as_deref())?;
    let _cleanup = Cleanup {
        dir: dir.clone(),
        keep: opts.keep,
    };
    let mut r = SingleResult {
        profile: super::profile().to_string(),
        rows: opts.rows,
        ..Default::default()
    };
    progress(&format!(
        "writing one table of {} rows in {}",
        opts.rows,
        dir.display()
    ));
    let t = Instant::now();
    r.appends = write_table(&dir.join("tables/events"), opts.rows, &progress).await?;
    r.write_s = secs(t.elapsed());
    let err = |e: std::io::Error| format!("{}: {e}", dir.display());
    let engine = opts
        .memory_mb
        .map_or(String::new(), |mb| format!("[engine]\nmemory_mb = {mb}\n"));
    std::fs::write(
        dir.join("upstreams.toml"),
        format!("[upstreams.events]\nuri = \"tables/events\"\n\n{engine}"),
    )
    .map_err(err)?;
    let catalog = Catalog::load(&dir.join("upstreams.toml")).map_err(|e| e.to_string())?;
    r.memory_mb = catalog.engine.memory_mb;
    let chunk = opts
        .chunk_rows
        .map_or(String::new(), |n| format!("chunk_rows = {n}\n"));
    let file = dir.join("single.toml");
    let derive = if opts.sql {
        "[sql]\nquery = \"SELECT id FROM events_changes\"\n".to_string()
    } else {
        format!(
            "[plugin]\npath = \"{}\"\n[plugin.config]\nkey_column = \"id\"\n",
            opts.plugin.display()
        )
    };
    r.derivation = if opts.sql { "sql" } else { "plugin" }.into();
    std::fs::write(
        &file,
        format!(
            "name = \"single\"\nupstreams = [\"events\"]\nbatch_size = {}\n{chunk}\n{derive}\n\
             [link]\nuri = \"links/single\"\nkeys = [{{ name = \"id\", type = \"long\" }}]\n",
            r.appends + 1,
        ),
    )
    .map_err(err)?;
    let pipeline = Pipeline::load_with_catalog(&file, &catalog).map_err(|e| e.to_string())?;
    let host = opts.host.build().map_err(|e| format!("{e:#}"))?;
    reset_peak_rss();
    progress("dlink-rt first run");
    let (reports, _, wall) = super::run_all(std::slice::from_ref(&pipeline), &host, 1).await?;
    r.peak_rss_bytes = peak_rss().unwrap_or(0);
    r.run_s = secs(wall);
    r.batches = reports.len();
    for b in &reports {
        r.change_rows += b.change_rows as u64;
        r.keys += b.keys as u64;
        r.read_s += secs(b.stages.read);
        r.derive_s += secs(b.stages.derive);
        r.commit_s += secs(b.stages.commit);
    }
    r.change_rows_per_s = r.change_rows as f64 / r.run_s.max(1e-9);
    Ok(r)
}

pub fn table(r: &SingleResult) -> String {
    format!(
        "dlink-bench --single (profile: {}; derived by the {}; one upstream of {} rows in {} appends, written in {:.1} s)\n  \
         first run   {:.3} s   {} batches   {} change rows   {} keys   {:.0} change rows/s\n  \
         stages: read {:.3}  derive {:.3}  commit {:.3} s (a streamed read is inside derive)\n  \
         peak RSS {:.1} MiB   ([engine] memory_mb {})\n",
        r.profile,
        if r.derivation == "sql" { "SQL query" } else { "plugin" },
        r.rows,
        r.appends,
        r.write_s,
        r.run_s,
        r.batches,
        r.change_rows,
        r.keys,
        r.change_rows_per_s,
        r.read_s,
        r.derive_s,
        r.commit_s,
        r.peak_rss_bytes as f64 / (1 << 20) as f64,
        r.memory_mb
    )
}
