//! `dlink-bench --commit`: the link-table commit of a small batch (2,000 keys spread
//! over the key space) as the table grows, through [`dlink_rt::sink::LinkTable::commit`]
//! itself: in the change log (`log`, the default) from 100k to 10M rows, and as the
//! one-row-per-key MERGE (`latest`) for contrast.
//!
//! The change log grows as a pipeline grows it, by batches ([`GROW_KEYS`] keys each,
//! so 1,000 commits to 10M rows): a commit's cost follows the table's history (log
//! entries to list and replay) as much as its rows, and one commit of 1M rows would
//! hide that. The `latest` table grows by 1M-row MERGEs (each rewrites the table).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deltalake::arrow::array::Int64Array;
use dlink_rt::affected::AffectedKeys;
use dlink_rt::config::{LinkMode, Pipeline};
use dlink_rt::consumer::{read_window, Since};
use dlink_rt::sink::{Commit, LinkTable, UpstreamRange};
use serde::{Deserialize, Serialize};

/// Keys of each batch that grows the change log to a measured size.
const GROW_KEYS: u64 = 10_000;
/// Measured 2,000-key commits at each size (their median is reported).
const MEASURED: i64 = 21;

/// One measured table size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommitPoint {
    pub mode: String,
    /// Rows of the link table before the measured commits.
    pub table_rows: u64,
    /// Data files of the link table then.
    pub files: usize,
    /// The link table's version then (its history's length in commits).
    pub version: i64,
    /// Median of the measured commits.
    pub commit_s: f64,
    /// Change log only: reading the keys of one new 1,000-key batch
    /// ([`dlink_rt::consumer::read_window`], what `keys --consumer` does), and the files
    /// that read opened.
    pub window_s: Option<f64>,
    pub window_files: Option<usize>,
}

/// Keys `base + i * stride` for `i < n`, caused by upstream `u`.
pub(crate) fn keys(n: usize, base: i64, stride: i64) -> AffectedKeys {
    let cause: Arc<[String]> = Arc::from(vec!["u".to_string()]);
    AffectedKeys {
        columns: vec![Arc::new(Int64Array::from_iter_values(
            (0..n as i64).map(|i| base + i * stride),
        ))],
        upstreams: vec![cause; n],
        change_ts: vec![Some(0); n],
    }
}

pub(crate) async fn commit(
    link: &mut LinkTable,
    batch_id: i64,
    k: &AffectedKeys,
) -> Result<Duration, String> {
    let ranges = [UpstreamRange {
        name: "u".into(),
        range: Some((batch_id - 1, batch_id - 1)),
        pinned: batch_id - 1,
        change_rows: k.len(),
        table_id: String::new(),
    }];
    let keys = dlink_rt::affected::Keys::Memory(k.clone());
    let t = Instant::now();
    link.commit(Commit {
        batch_id,
        keys: &keys,
        upstreams: &ranges,
        lookups: &[],
        plugin_path: "bench".into(),
        plugin_sha256: String::new(),
        plugin_active_since: 1,
        plugin_contract: None,
        elapsed_ms: 0,
    })
    .await
    .map_err(|e| e.to_string())?;
    Ok(t.elapsed())
}

fn pipeline(dir: &Path, mode: LinkMode) -> Result<Pipeline, String> {
    pipeline_with(dir, mode, "")
}

/// A pipeline file with `extra` lines in its `[link]` section.
pub(crate) fn pipeline_with(dir: &Path, mode: LinkMode, extra: &str) -> Result<Pipeline, String> {
    let err = |e: std::io::Error| format!("{}: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(err)?;
    std::fs::write(dir.join("upstreams.toml"), "[upstreams.u]\nuri = \"u\"\n").map_err(err)?;
    let file = dir.join("p.toml");
    std::fs::write(
        &file,
        format!(
            "name = \"p\"\nupstreams = [\"u\"]\n\n[sql]\nquery = \"SELECT 1 AS k\"\n\n\
             [link]\nuri = \"link\"\nmode = \"{mode}\"\nkeys = [{{ name = \"k\", type = \"long\" }}]\n{extra}"
        ),
    )
    .map_err(err)?;
    Pipeline::load(&file).map_err(|e| e.to_string())
}

/// Grows a link table of `mode` through `sizes` (rows, ascending), measuring five
/// 2,000-key commits at each size.
pub async fn run(
    dir: &Path,
    mode: LinkMode,
    sizes: &[u64],
    progress: impl Fn(&str),
) -> Result<Vec<CommitPoint>, String> {
    let p = pipeline(&dir.join(mode.as_str()), mode)?;
    let mut link = LinkTable::open(&p).await.map_err(|e| e.to_string())?;
    link.checkpoint().await.map_err(|e| e.to_string())?;
    let (mut rows, mut batch, mut out) = (0u64, 0i64, Vec::new());
    // Key space of the largest size: the small batches' keys are spread over it.
    let space = sizes.iter().copied().max().unwrap_or(0) as i64;
    let chunk = if mode == LinkMode::Log {
        GROW_KEYS
    } else {
        1_000_000
    };
    for &size in sizes {
        while rows < size {
            let n = (size - rows).min(chunk) as usize;
            batch += 1;
            commit(&mut link, batch, &keys(n, rows as i64, 1)).await?;
            rows += n as u64;
        }
        let files = link
            .table()
            .and_then(|t| t.snapshot().ok().map(|s| s.log_data().num_files()))
            .unwrap_or(0);
        let version = link.table().and_then(|t| t.version()).unwrap_or(0) as i64;
        let mut times = Vec::new();
        for i in 0..MEASURED {
            batch += 1;
            let k = keys(2000, i, (space / 2000).max(1));
            times.push(commit(&mut link, batch, &k).await?.as_secs_f64());
            if mode == LinkMode::Log {
                rows += 2000;
            }
        }
        times.sort_by(f64::total_cmp);
        let (mut window_s, mut window_files) = (None, None);
        if mode == LinkMode::Log {
            batch += 1;
            commit(&mut link, batch, &keys(1000, 7, (space / 1000).max(1))).await?;
            rows += 1000;
            let t = Instant::now();
            let w = read_window(&p, &Since::Batch(batch - 1))
                .await
                .map_err(|e| e.to_string())?;
            window_s = Some(t.elapsed().as_secs_f64());
            window_files = Some(w.files_scanned);
            if w.len() != 1000 {
                return Err(format!(
                    "the window of one 1,000-key batch held {} keys",
                    w.len()
                ));
            }
        }
        let point = CommitPoint {
            mode: mode.as_str().into(),
            table_rows: size,
            files,
            version,
            commit_s: times[times.len() / 2],
            window_s,
            window_files,
        };
        progress(&format!(
            "{mode}: 2,000-key commit on a {size}-row link table ({files} files, version {version}): {:.1} ms",
            point.commit_s * 1e3
        ));
        out.push(point);
    }
    Ok(out)
}

/// `bench --compact`: a change log of `batches` single-batch files (1,000 keys each)
/// compacted by [`dlink_rt::compact::compact`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompactPoint {
    pub batches: i64,
    pub rows: u64,
    /// Writing the batches (one commit each), in seconds.
    pub write_s: f64,
    /// Median commit of one 1,000-key batch: of the first ten batches, of the last ten
    /// before compaction, and of five after it (each commit's cost follows the table's
    /// file count: deltalake replays the active-file list after every commit).
    pub commit_first_s: f64,
    pub commit_last_s: f64,
    pub commit_after_s: f64,
    /// The same log written with the default `merge_small_files`: the median commit of
    /// the last ten batches (merges included), the whole write, and its files at the end.
    pub merged_commit_last_s: f64,
    pub merged_write_s: f64,
    pub merged_files: usize,
    pub files_before: usize,
    pub files_after: usize,
    pub compact_s: f64,
    /// Reading the keys of the newest batch after compaction, and the files it opened.
    pub window_s: f64,
    pub window_files: usize,
}

/// Commits batches `ids` of 1,000 keys each to `p`'s link table (opened afresh);
/// returns each commit's time in seconds.
async fn commit_batches(
    p: &Pipeline,
    ids: std::ops::RangeInclusive<i64>,
    progress: &impl Fn(&str),
) -> Result<Vec<f64>, String> {
    let mut link = LinkTable::open(p).await.map_err(|e| e.to_string())?;
    link.checkpoint().await.map_err(|e| e.to_string())?;
    let last = *ids.end();
    let mut times = Vec::new();
    for b in ids {
        let k = keys(1000, b * 1000, 1);
        times.push(commit(&mut link, b, &k).await?.as_secs_f64());
        if b % 250 == 0 {
            progress(&format!("compact: {b} of {last} batches written"));
        }
    }
    Ok(times)
}

pub async fn compaction(
    dir: &Path,
    batches: i64,
    progress: impl Fn(&str),
) -> Result<CompactPoint, String> {
    // Without the merge of small files after commits, which would keep the file count
    // low by itself.
    let p = pipeline_with(
        &dir.join("compact"),
        LinkMode::Log,
        "merge_small_files = 0\n",
    )?;
    let started = Instant::now();
    let times = commit_batches(&p, 1..=batches, &progress).await?;
    let write_s = started.elapsed().as_secs_f64();
    let r = dlink_rt::compact::compact(&p, chrono::Utc::now())
        .await
        .map_err(|e| e.to_string())?;
    let t = Instant::now();
    let w = read_window(&p, &Since::Batch(batches - 1))
        .await
        .map_err(|e| e.to_string())?;
    let window_s = t.elapsed().as_secs_f64();
    let after = commit_batches(&p, batches + 1..=batches + 5, &progress).await?;
    // The same batches with the default merge of small files after commits.
    let q = pipeline_with(&dir.join("merged"), LinkMode::Log, "")?;
    let started = Instant::now();
    let merged = commit_batches(&q, 1..=batches, &progress).await?;
    let merged_write_s = started.elapsed().as_secs_f64();
    let merged_files = LinkTable::open(&q)
        .await
        .ok()
        .and_then(|l| {
            l.table()
                .and_then(|t| t.snapshot().ok().map(|s| s.log_data().num_files()))
        })
        .unwrap_or(0);
    progress(&format!(
        "compact: the same {batches} batches with merge_small_files: {merged_files} files"
    ));
    let n = times.len().min(10);
    let first = median(times[..n].to_vec());
    let last = median(times[times.len() - n..].to_vec());
    if w.len() != 1000 {
        return Err(format!(
            "after compaction the newest batch held {} keys, not 1,000",
            w.len()
        ));
    }
    Ok(CompactPoint {
        batches,
        rows: batches as u64 * 1000,
        write_s,
        commit_first_s: first,
        commit_last_s: last,
        commit_after_s: median(after),
        merged_commit_last_s: median(merged[merged.len() - n..].to_vec()),
        merged_write_s,
        merged_files,
        files_before: r.files_before,
        files_after: r.files_after,
        compact_s: r.seconds,
        window_s,
        window_files: w.files_scanned,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}
