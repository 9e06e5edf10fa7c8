//! `dlink-bench --examples [--peer]`: the four example pipelines, in one process,
//! over the example tables at `--rows` rows ([`super::examples`]): a catch-up over the
//! load and its history, then an increment of small commits, each timed against the
//! limit (reading the window's change files and appending the keys, one commit per
//! batch) and, with `--peer`, against the Python peer on the same data in the same run
//! (with its keys compared to ours). Then a lookup of 100k keys through the index.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deltalake::arrow::array::{AsArray, Int64Array, RecordBatch};
use deltalake::arrow::datatypes::{DataType, Field, Int64Type, Schema};
use deltalake::datafusion::prelude::{col, lit};
use dlink_rt::config::{Catalog, LookupSettings, Pipeline, Upstream};
use dlink_rt::engine::BatchReport;
use dlink_rt::plugin::Lookup;
use serde::{Deserialize, Serialize};

use super::examples::{write_history, write_increment, TABLES};
use super::{peak_rss, peer, reference, reset_peak_rss, secs, Cleanup, StageSecs, Totals};

/// The example pipelines: name, upstreams, key column.
pub const PIPELINES: [(&str, [&str; 2], &str); 4] = [
    ("sp_affiliation", ["spmaster", "affiliation"], "diasng_id"),
    ("emp_dept", ["employee", "department"], "emp_id"),
    (
        "pub_authors",
        ["publications", "author_publication_link"],
        "pub_id",
    ),
    (
        "author_pubs",
        ["publications", "author_publication_link"],
        "uid",
    ),
];

/// How to run `bench --examples`.
#[derive(Debug, Clone)]
pub struct ExamplesOptions {
    pub rows: usize,
    /// Commits per table after the load, before the catch-up.
    pub history: usize,
    /// Commits per table of the increment.
    pub commits: usize,
    pub dir: Option<PathBuf>,
    pub keep: bool,
    /// How plugin hosts are built (compiled-component cache, profiler).
    pub host: dlink_rt::plugin::HostBuilder,
    /// Folder of the example plugins (`plugins/dist`).
    pub plugins: PathBuf,
    /// Run the Python peer with this interpreter (`None`: no peer).
    pub peer: Option<PathBuf>,
    /// The pipelines' `chunk_rows` (`None`: the default).
    pub chunk_rows: Option<u64>,
}

/// One timed run (catch-up or increment) of the four pipelines.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunFigures {
    pub wall_s: f64,
    pub batches: usize,
    pub change_rows: u64,
    pub keys: u64,
    pub stages: StageSecs,
    /// Reading the window's change files with the parquet reader alone.
    pub limit_read_s: f64,
    /// Appending each batch's keys (parquet file + one Delta commit per batch).
    pub limit_write_s: f64,
    /// `limit_read_s + limit_write_s`.
    pub limit_s: f64,
}

/// The figures of `bench --examples` (the `--json` object).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExamplesResult {
    pub profile: String,
    pub rows: usize,
    pub history_commits: usize,
    pub increment_commits: usize,
    pub dir: String,
    pub generation_s: f64,
    pub catch_up: RunFigures,
    pub increment: RunFigures,
    pub catch_up_s: f64,
    pub increment_s: f64,
    /// VmHWM of the runs: the larger of the catch-up's and the increment's, each
    /// measured from the RSS after the tables were written (and malloc trimmed).
    pub peak_rss_bytes: u64,
    pub peer_catch_up_s: Option<f64>,
    pub peer_increment_s: Option<f64>,
    /// Why the peer did not run.
    pub peer_skipped: Option<String>,
    /// Whether the peer found the same keys, pipeline by pipeline, in both runs.
    pub keys_agree_with_peer: Option<bool>,
    /// The lookup of `lookup_keys` pub_ids in author_publication_link at its latest
    /// version: the first call (building the index) and then the median probe.
    pub lookup_keys: usize,
    pub lookup_rows: usize,
    pub lookup_table_rows: usize,
    pub lookup_index_build_s: f64,
    pub lookup_index_bytes: usize,
    pub lookup_probe_s: f64,
}

/// Writes the catalog and the four pipeline files into `dir` (tables in `dir/tables`,
/// link tables in `dir/links`).
fn write_configs(
    dir: &Path,
    plugins: &Path,
    chunk_rows: Option<u64>,
) -> Result<Vec<Pipeline>, String> {
    let err = |e: std::io::Error| format!("{}: {e}", dir.display());
    let mut catalog = String::new();
    for (t, _, _) in TABLES {
        catalog.push_str(&format!("[upstreams.{t}]\nuri = \"tables/{t}\"\n\n"));
    }
    std::fs::write(dir.join("upstreams.toml"), catalog).map_err(err)?;
    let catalog = Catalog::load(&dir.join("upstreams.toml")).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for (name, [a, b], key) in PIPELINES {
        let file = dir.join(format!("{name}.toml"));
        let chunk = chunk_rows.map_or(String::new(), |n| format!("chunk_rows = {n}\n"));
        let text = format!(
            "name = \"{name}\"\nupstreams = [\"{a}\", \"{b}\"]\n{chunk}\n[plugin]\npath = \"{}\"\n\n\
             [link]\nuri = \"links/{name}\"\nkeys = [{{ name = \"{key}\", type = \"long\" }}]\n",
            plugins.join(format!("{name}.wasm")).display()
        );
        std::fs::write(&file, text).map_err(err)?;
        out.push(Pipeline::load_with_catalog(&file, &catalog).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// The four pipelines in one process until caught up, as `dlink-rt run FOLDER` runs
/// them (one at a time per CPU), with a new plugin host (a new process's: compiled
/// plugins from the cache, no lookup index yet).
async fn run_in_new_host(
    pipelines: &[Pipeline],
    host: &dlink_rt::plugin::HostBuilder,
) -> Result<(Duration, Vec<BatchReport>), String> {
    let host = host.build().map_err(|e| format!("{e:#}"))?;
    let (reports, _, wall) =
        super::run_all(pipelines, &host, dlink_rt::engine::default_jobs()).await?;
    Ok((wall, reports))
}

/// Figures of one run from its batch reports, with its limit measured.
async fn figures(
    dir: &Path,
    wall: Duration,
    reports: &[BatchReport],
) -> Result<RunFigures, String> {
    let totals = Totals::of(reports);
    let mut f = RunFigures {
        wall_s: secs(wall),
        batches: reports.len(),
        keys: totals.keys,
        change_rows: totals.change_rows,
        stages: StageSecs::from(&totals.stages),
        ..Default::default()
    };
    let ranges = totals.ranges;
    let mut files = Vec::new();
    for (name, s, e) in &ranges {
        files.extend(reference::change_files(
            &dir.join("tables").join(name),
            *s,
            *e,
        )?);
    }
    let all: Vec<&str> = TABLES
        .iter()
        .flat_map(|(_, cols, _)| cols.iter().map(|(c, _)| *c))
        .chain([
            dlink_rt::cdf::CHANGE_TYPE,
            dlink_rt::cdf::COMMIT_VERSION,
            dlink_rt::cdf::COMMIT_TIMESTAMP,
        ])
        .collect();
    f.limit_read_s = secs(reference::read_files(&files, &all, 2)?.time);
    f.limit_write_s = secs(append_limit(&dir.join("limit-write"), reports).await?);
    f.limit_s = f.limit_read_s + f.limit_write_s;
    Ok(f)
}

/// Appends as many key rows as each batch committed to a scratch Delta table, one
/// commit per batch, with deltalake's writer alone.
async fn append_limit(dir: &Path, reports: &[BatchReport]) -> Result<Duration, String> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Int64, false),
        Field::new("dlink_batch_id", DataType::Int64, false),
    ]));
    let url = deltalake::ensure_table_uri(dir.display().to_string()).map_err(|e| e.to_string())?;
    let mut table = deltalake::DeltaTableBuilder::from_url(url)
        .and_then(|b| b.build())
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    for (i, b) in reports.iter().enumerate() {
        let n = b.keys as i64;
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(0..n)),
                Arc::new(Int64Array::from(vec![i as i64 + 1; b.keys])),
            ],
        )
        .map_err(|e| e.to_string())?;
        table = table
            .write(vec![batch])
            .with_save_mode(deltalake::protocol::SaveMode::Append)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(started.elapsed())
}

/// The distinct keys of each pipeline's batches after `after[name]`.
pub(super) async fn keys_after(
    pipelines: &[Pipeline],
    after: &BTreeMap<String, i64>,
) -> Result<BTreeMap<String, BTreeSet<i64>>, String> {
    let mut out = BTreeMap::new();
    let ctx = dlink_rt::cdf::session();
    for p in pipelines {
        let url = deltalake::ensure_table_uri(&p.link_uri).map_err(|e| e.to_string())?;
        let t = deltalake::open_table(url)
            .await
            .map_err(|e| e.to_string())?;
        let since = after.get(&p.name).copied().unwrap_or(0);
        let key = p.keys[0].name.as_str();
        let batches = ctx
            .read_table(t.table_provider().await.map_err(|e| e.to_string())?)
            .and_then(|df| df.filter(col(dlink_rt::sink::BATCH_ID).gt(lit(since))))
            .and_then(|df| df.select_columns(&[key]))
            .map_err(|e| e.to_string())?
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        let keys = batches
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect();
        out.insert(p.name.clone(), keys);
    }
    Ok(out)
}

fn last_batches(reports: &[BatchReport], into: &mut BTreeMap<String, i64>) {
    for b in reports {
        let e = into.entry(b.pipeline.clone()).or_default();
        *e = (*e).max(b.batch_id);
    }
}

/// Compiles every pipeline's plugin into the cache: a user's runs after the first
/// load from it.
fn fill_plugin_cache(
    host: &dlink_rt::plugin::HostBuilder,
    pipelines: &[Pipeline],
) -> Result<(), String> {
    let host = host.build().map_err(|e| format!("{e:#}"))?;
    for p in pipelines {
        if let Some(spec) = p.plugin() {
            host.compile(&spec.path)
                .map_err(|e| format!("plugin {}: {e}", spec.path.display()))?;
        }
    }
    Ok(())
}

/// Each example pipeline's stage times of a run, as progress lines.
fn print_stages(reports: &[BatchReport], progress: &impl Fn(&str)) {
    for (name, _, _) in PIPELINES {
        let mine: Vec<BatchReport> = reports
            .iter()
            .filter(|b| b.pipeline == name)
            .cloned()
            .collect();
        let s = StageSecs::from(&Totals::of(&mine).stages);
        progress(&format!(
            "  {name}: open {:.3}  plan {:.3}  read {:.3}  derive {:.3}  commit {:.3} s",
            s.open_s, s.plan_s, s.read_s, s.derive_s, s.commit_s
        ));
    }
}

/// Runs the bench; `progress` gets a line per step.
pub async fn run(
    opts: &ExamplesOptions,
    progress: impl Fn(&str),
) -> Result<ExamplesResult, String> {
    let dir = super::workload_dir(opts.dir.as_deref())?;
    let _cleanup = Cleanup {
        dir: dir.clone(),
        keep: opts.keep,
    };
    let tables = dir.join("tables");
    let mut r = ExamplesResult {
        profile: super::profile().into(),
        rows: opts.rows,
        history_commits: opts.history,
        increment_commits: opts.commits,
        dir: dir.display().to_string(),
        ..Default::default()
    };
    progress(&format!(
        "writing the six example tables at {} rows with {} commits each in {}",
        opts.rows,
        opts.history,
        dir.display()
    ));
    let t = Instant::now();
    write_history(&tables, opts.rows, opts.history)
        .await
        .map_err(|e| e.to_string())?;
    r.generation_s = secs(t.elapsed());
    let pipelines = write_configs(&dir, &opts.plugins, opts.chunk_rows)?;
    fill_plugin_cache(&opts.host, &pipelines)?;
    let python = opts.peer.clone();
    reset_peak_rss();
    let mut peak = 0u64;
    let mut done = BTreeMap::new();
    let mut agree = true;
    for round in 0..2 {
        let what = if round == 0 { "catch-up" } else { "increment" };
        if round == 1 {
            progress(&format!(
                "writing the increment: {} commits per table",
                opts.commits
            ));
            write_increment(&tables, opts.rows, 0, opts.commits)
                .await
                .map_err(|e| e.to_string())?;
            // The writer's memory is not the runs'.
            reset_peak_rss();
        }
        progress(&format!("dlink-rt {what}"));
        let before = done.clone();
        let (wall, reports) = run_in_new_host(&pipelines, &opts.host).await?;
        peak = peak.max(peak_rss().unwrap_or(0));
        last_batches(&reports, &mut done);
        let f = figures(&dir, wall, &reports).await?;
        progress(&format!(
            "dlink-rt {what}: {:.3} s, {} batches, {} keys (limit {:.3} s)",
            f.wall_s, f.batches, f.keys, f.limit_s
        ));
        print_stages(&reports, &progress);
        if let Some(py) = &python {
            let (seconds, same) =
                peer::round(py, &dir, &pipelines, &before, what, &progress).await?;
            agree &= same;
            if round == 0 {
                r.peer_catch_up_s = Some(seconds)
            } else {
                r.peer_increment_s = Some(seconds)
            }
        }
        if round == 0 {
            r.catch_up = f
        } else {
            r.increment = f
        }
    }
    r.catch_up_s = r.catch_up.wall_s;
    r.increment_s = r.increment.wall_s;
    r.keys_agree_with_peer = python.as_ref().map(|_| agree);
    r.peak_rss_bytes = peak;
    lookup_figures(&tables, opts.rows, &mut r).await?;
    Ok(r)
}

/// A lookup of 100k (at most `rows`) pub_ids in author_publication_link: the first
/// call builds the index; the median of five more is the probe.
async fn lookup_figures(tables: &Path, rows: usize, r: &mut ExamplesResult) -> Result<(), String> {
    let name = "author_publication_link";
    let u = Upstream::new(name, tables.join(name).display().to_string());
    let t = dlink_rt::cdf::open_latest(&u)
        .await
        .map_err(|e| e.to_string())?;
    let version = dlink_rt::cdf::version_of(&u, &t).map_err(|e| e.to_string())?;
    let indexes = Arc::new(dlink_rt::lookup::Indexes::default());
    let lookup = dlink_rt::lookup::TableLookup::new(
        "bench",
        u64::MAX,
        [(u, version)],
        Arc::default(),
        dlink_rt::cdf::session(),
        indexes.clone(),
        // The index from the first lookup on: its build is what is measured here.
        LookupSettings {
            index_after: 0,
            ..LookupSettings::default()
        },
    );
    let n = rows.min(100_000) as i64;
    let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
    let keys = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(Int64Array::from_iter_values(
            (0..n).map(|i| 1 + i * (rows as i64 / n.max(1))),
        ))],
    )
    .map_err(|e| e.to_string())?;
    let ipc = dlink_rt::ipc::encode(&schema, &[keys]).map_err(|e| e.to_string())?;
    let cols = ["uid".to_string(), "pub_id".to_string()];
    let t = Instant::now();
    let first = lookup
        .lookup(name, "pub_id", &ipc, &cols)
        .await
        .map_err(|e| e.to_string())?;
    let first_s = secs(t.elapsed());
    let mut probes = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        lookup
            .lookup(name, "pub_id", &ipc, &cols)
            .await
            .map_err(|e| e.to_string())?;
        probes.push(secs(t.elapsed()));
    }
    probes.sort_by(f64::total_cmp);
    let (_, answer) = dlink_rt::ipc::decode(&first).map_err(|e| e.to_string())?;
    let stats = indexes.stats().await;
    let ix = stats.first().ok_or("the lookup built no index")?;
    r.lookup_keys = n as usize;
    r.lookup_rows = answer.iter().map(|b| b.num_rows()).sum();
    r.lookup_table_rows = ix.rows;
    r.lookup_index_build_s = secs(ix.build_time).max(first_s - probes[2]);
    r.lookup_index_bytes = ix.bytes;
    r.lookup_probe_s = probes[2];
    Ok(())
}

fn ratio(peer: Option<f64>, ours: f64) -> String {
    match peer {
        Some(p) if ours > 0.0 => format!("{:.1}x faster than the peer ({p:.3} s)", p / ours),
        _ => "peer not run".into(),
    }
}

/// The text report.
pub fn table(r: &ExamplesResult) -> String {
    let mib = |b: u64| super::mib(b);
    let run = |name: &str, f: &RunFigures, peer: Option<f64>| {
        format!(
            "  {name:<10} {:>8.3} s  {:>3} batches  {:>9} change rows  {:>8} keys  {}\n\
             \x20            stages: open {:.3}  plan {:.3}  read {:.3}  derive {:.3}  commit {:.3} s\n\
             \x20            limit {:.3} s (read {:.3} + append {:.3}): {:.2}x the limit\n",
            f.wall_s, f.batches, f.change_rows, f.keys, ratio(peer, f.wall_s),
            f.stages.open_s, f.stages.plan_s, f.stages.read_s, f.stages.derive_s, f.stages.commit_s,
            f.limit_s, f.limit_read_s, f.limit_write_s, f.wall_s / f.limit_s.max(1e-9)
        )
    };
    let mut s = format!(
        "dlink-rt bench --examples (profile: {}; 4 pipelines in one process, 6 tables x {} rows, {} history + {} increment commits per table)\n",
        r.profile, r.rows, r.history_commits, r.increment_commits
    );
    s.push_str(&run("catch-up", &r.catch_up, r.peer_catch_up_s));
    s.push_str(&run("increment", &r.increment, r.peer_increment_s));
    match (&r.keys_agree_with_peer, &r.peer_skipped) {
        (Some(a), _) => s.push_str(&format!("  keys agree with the peer's: {a}\n")),
        (None, Some(why)) => s.push_str(&format!("  peer skipped: {why}\n")),
        (None, None) => {}
    }
    s.push_str(&format!(
        "  lookup of {} keys in a {}-row table: index built in {:.3} s ({}), then {:.1} ms per lookup ({} rows)\n  peak RSS {}\n",
        r.lookup_keys, r.lookup_table_rows, r.lookup_index_build_s, mib(r.lookup_index_bytes as u64),
        r.lookup_probe_s * 1e3, r.lookup_rows, mib(r.peak_rss_bytes)
    ));
    s
}
