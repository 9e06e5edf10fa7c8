//! `dlink-bench --follow`: how long one small upstream commit takes to reach the
//! link table in `--follow` mode. The first plugin pipeline of a generated workload
//! is caught up, then followed; the bench commits a few rows to one of its upstreams
//! at a time and waits for the batch that covers that version. The latency of a
//! sample runs from the moment the upstream commit returned (it is in the log) to the
//! moment the batch holding it was committed to the link table.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dlink_rt::config::{Catalog, Pipeline};
use dlink_rt::demo::DemoTable;
use dlink_rt::engine::BatchReport;
use dlink_rt::service::{follow, FollowOptions};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::workload::{self, Rng, WorkloadSpec};
use super::{profile, workload_dir, Cleanup};

/// How to run the latency bench.
#[derive(Debug, Clone)]
pub struct LatencyOptions {
    pub spec: WorkloadSpec,
    pub dir: Option<PathBuf>,
    pub keep: bool,
    /// How plugin hosts are built (compiled-component cache, profiler).
    pub host: dlink_rt::plugin::HostBuilder,
    /// `--interval` of the follow loop.
    pub interval: Duration,
    /// Commits to measure.
    pub samples: usize,
    /// Rows per commit.
    pub rows_per_commit: usize,
    /// Follow every pipeline of the workload as the service (`run FOLDER --follow`).
    pub service: bool,
}

/// The figures of a latency run (the `--json` object of `bench --follow`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LatencyResult {
    pub profile: String,
    pub pipeline: String,
    pub upstreams: Vec<String>,
    pub interval_ms: f64,
    pub samples: usize,
    pub rows_per_commit: usize,
    /// Per sample: commit landed → its batch committed to the link table.
    pub latency_ms: Vec<f64>,
    pub min_ms: f64,
    pub median_ms: f64,
    pub p90_ms: f64,
    pub max_ms: f64,
    /// The batch's own time (plan to commit), median over the samples.
    pub batch_median_ms: f64,
    /// Ids the bench inserted, one list per sample, in order.
    pub inserted_ids: Vec<Vec<i64>>,
    pub link_uri: String,
    /// Pipelines followed (1, or every pipeline of the workload with `service`).
    pub pipelines_followed: usize,
    /// CPU the process used while no commit arrived, in % of one core (Linux).
    pub idle_cpu_percent: Option<f64>,
}

/// A sample waits this long for its batch before the bench fails.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Generates the workload, catches the first plugin pipeline up, follows it and
/// measures `samples` commits.
pub async fn run(opts: &LatencyOptions, progress: impl Fn(&str)) -> Result<LatencyResult, String> {
    let spec = &opts.spec;
    let dir = workload_dir(opts.dir.as_deref())?;
    let _cleanup = Cleanup {
        dir: dir.clone(),
        keep: opts.keep,
    };
    progress(&format!(
        "generating {} tables x {} rows in {}",
        spec.upstreams,
        spec.rows,
        dir.display()
    ));
    let w = workload::generate(spec, &dir, 4).await?;
    let def = w
        .pipelines
        .iter()
        .find(|p| !p.sql)
        .ok_or("the workload has no plugin pipeline; give --pipelines 1 or more")?
        .clone();
    let (pipeline, all) = load_pipelines(&dir, &w, &def, opts.service)?;
    let host = Arc::new(opts.host.build().map_err(|e| format!("{e:#}"))?);
    progress(&format!("catching up {} pipeline(s)", all.len()));
    catch_up(&all, &host).await?;

    let mut tables = open_tables(&dir, &w, &def).await?;

    let (task, stop_tx, mut rx) = spawn_follower(opts, &pipeline, &host, &dir);
    // Let the follower open its session before the first sample.
    tokio::time::sleep(opts.interval * 3).await;

    progress(&format!(
        "following {} with --interval {} ms; {} commits of {} rows",
        pipeline.name,
        opts.interval.as_millis(),
        opts.samples,
        opts.rows_per_commit
    ));
    let mut rng = Rng::new(spec.seed ^ 0x5EED);
    let mut next_id = 1_000_000_000_i64;
    let mut r = LatencyResult {
        upstreams: tables.iter().map(|(n, _)| n.clone()).collect(),
        pipelines_followed: all.len(),
        ..LatencyResult::of(opts, &pipeline)
    };
    let mut batch_ms = Vec::with_capacity(opts.samples);
    let outcome: Result<(), String> = async {
        for s in 0..opts.samples {
            let (name, table) = &mut tables[s % def.upstreams.len()];
            let sample = Sample {
                rng: &mut rng,
                next_id: &mut next_id,
                rows: opts.rows_per_commit,
                phase_of: opts.interval,
            };
            let (latency, batch, ids) = sample.take(name, table, &mut rx).await?;
            r.latency_ms.push(latency);
            batch_ms.push(batch);
            r.inserted_ids.push(ids);
        }
        r.idle_cpu_percent = idle_cpu(opts.interval).await;
        Ok(())
    }
    .await;
    let _ = stop_tx.send(());
    task.await
        .map_err(|e| format!("follow task: {e}"))?
        .map_err(|e| format!("follow failed: {e}"))?;
    outcome?;
    summarize(&mut r, batch_ms);
    if opts.keep {
        r.link_uri = dir.join(&r.link_uri).display().to_string();
    }
    Ok(r)
}

impl LatencyResult {
    /// The result of following `pipeline` with `opts`, before any sample.
    fn of(opts: &LatencyOptions, pipeline: &Pipeline) -> Self {
        LatencyResult {
            profile: profile().into(),
            pipeline: pipeline.name.clone(),
            interval_ms: opts.interval.as_secs_f64() * 1e3,
            samples: opts.samples,
            rows_per_commit: opts.rows_per_commit,
            link_uri: pipeline.link_uri.clone(),
            ..Default::default()
        }
    }
}

/// Runs every pipeline until caught up, as `run FOLDER` does.
async fn catch_up(all: &[Pipeline], host: &dlink_rt::plugin::PluginHost) -> Result<(), String> {
    for r in dlink_rt::engine::run_many(all, host, dlink_rt::engine::default_jobs(), |_| {})
        .await
        .results
    {
        r.1.map_err(|e| format!("{}: {e}", r.0))?;
    }
    Ok(())
}

/// The measured pipeline (the workload's first plugin pipeline) and every pipeline
/// followed (with `service`, all of the workload's).
fn load_pipelines(
    dir: &std::path::Path,
    w: &workload::Workload,
    def: &workload::PipelineDef,
    service: bool,
) -> Result<(Pipeline, Vec<Pipeline>), String> {
    let catalog =
        Catalog::load(&dir.join(dlink_rt::config::DEFAULT_CATALOG)).map_err(|e| e.to_string())?;
    let pipeline = Pipeline::load_with_catalog(&dir.join(format!("{}.toml", def.name)), &catalog)
        .map_err(|e| e.to_string())?;

    let all: Vec<Pipeline> = if service {
        w.pipelines
            .iter()
            .map(|d| {
                Pipeline::load_with_catalog(&dir.join(format!("{}.toml", d.name)), &catalog)
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?
    } else {
        vec![pipeline.clone()]
    };
    Ok((pipeline, all))
}

/// The measured pipeline's upstream tables, opened for commits.
async fn open_tables(
    dir: &std::path::Path,
    w: &workload::Workload,
    def: &workload::PipelineDef,
) -> Result<Vec<(String, DemoTable)>, String> {
    let mut tables = Vec::with_capacity(def.upstreams.len());
    for i in &def.upstreams {
        let name = w.tables[*i].name.clone();
        let t = DemoTable::open(&dir.join("tables").join(&name))
            .await
            .map_err(|e| format!("{name}: {e}"))?;
        tables.push((name, t));
    }
    Ok(tables)
}

type Follower = (
    tokio::task::JoinHandle<dlink_rt::Result<()>>,
    oneshot::Sender<()>,
    mpsc::UnboundedReceiver<(Instant, BatchReport)>,
);

/// Follows `pipeline` (or, with `service`, the workload's folder) on a task; each
/// batch of `pipeline` is sent with the time it was reported, until the sender is
/// used to stop.
fn spawn_follower(
    opts: &LatencyOptions,
    pipeline: &Pipeline,
    host: &Arc<dlink_rt::plugin::PluginHost>,
    dir: &std::path::Path,
) -> Follower {
    let (tx, rx) = mpsc::unbounded_channel::<(Instant, BatchReport)>();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let follow_opts = FollowOptions {
        interval: opts.interval,
        watch_interval: Duration::from_secs(3600),
    };
    let followed = pipeline.clone();
    let follow_host = host.clone();
    let measured = pipeline.name.clone();
    let service_dir = opts.service.then(|| dir.to_path_buf());
    let task = tokio::spawn(async move {
        let send = move |b: &BatchReport| {
            if b.pipeline == measured {
                let _ = tx.send((Instant::now(), b.clone()));
            }
        };
        match service_dir {
            Some(dir) => {
                // The whole folder, as `run FOLDER --follow` follows it.
                let stop = tokio_util::sync::CancellationToken::new();
                let on_stop = stop.clone();
                tokio::spawn(async move {
                    let _ = stop_rx.await;
                    on_stop.cancel();
                });
                let opts = dlink_rt::service::ServiceOptions {
                    follow: follow_opts,
                    ..Default::default()
                };
                let monitor = Arc::new(dlink_rt::service::Monitor::new());
                dlink_rt::service::follow_folder(
                    &dir,
                    follow_host,
                    opts,
                    monitor,
                    Arc::new(send),
                    stop,
                )
                .await;
                Ok(())
            }
            None => {
                follow(&followed, follow_host, follow_opts, send, async move {
                    let _ = stop_rx.await;
                })
                .await
            }
        }
    });
    (task, stop_tx, rx)
}

/// One measured commit: a commit of new rows to an upstream at a random point of the
/// poll cycle, and the time until the followed pipeline's batch covering it.
struct Sample<'a> {
    rng: &'a mut Rng,
    next_id: &'a mut i64,
    rows: usize,
    phase_of: Duration,
}

impl Sample<'_> {
    /// The commit's latency and its batch's time (ms) and the ids it inserted.
    async fn take(
        self,
        name: &str,
        table: &mut DemoTable,
        rx: &mut mpsc::UnboundedReceiver<(Instant, BatchReport)>,
    ) -> Result<(f64, f64, Vec<i64>), String> {
        let Sample {
            rng,
            next_id,
            rows,
            phase_of,
        } = self;
        // Land at a random point of the poll cycle.
        let phase = phase_of.mul_f64(rng.below(1000) as f64 / 1000.0);
        tokio::time::sleep(phase).await;
        let ids: Vec<i64> = (0..rows as i64).map(|k| *next_id + k).collect();
        *next_id += rows as i64;
        let rows = json!(ids
            .iter()
            .map(|id| json!([id, rng.below(1_000_000), format!("latency-{id}")]))
            .collect::<Vec<_>>());
        let version = table
            .insert(rows)
            .await
            .map_err(|e| format!("committing to {name}: {e}"))?;
        let landed = Instant::now();
        let deadline = landed + SAMPLE_TIMEOUT;
        loop {
            let (at, report) = tokio::time::timeout_at(deadline.into(), rx.recv())
                .await
                .map_err(|_| {
                    format!(
                        "version {version} of {name} did not reach the link table within {} s",
                        SAMPLE_TIMEOUT.as_secs()
                    )
                })?
                .ok_or("the follow loop stopped")?;
            let covers = report.upstreams.iter().any(|u| {
                u.name == name && u.range.is_some_and(|(a, b)| a <= version && version <= b)
            });
            if covers {
                let latency = at.saturating_duration_since(landed).as_secs_f64() * 1e3;
                return Ok((latency, report.millis as f64, ids));
            }
        }
    }
}

/// Minimum, maximum, median and p90 of the latencies, and the median batch time.
fn summarize(r: &mut LatencyResult, mut batch_ms: Vec<f64>) {
    let mut sorted = r.latency_ms.clone();
    sorted.sort_by(f64::total_cmp);
    r.min_ms = sorted.first().copied().unwrap_or(0.0);
    r.max_ms = sorted.last().copied().unwrap_or(0.0);
    r.median_ms = percentile(&sorted, 0.5);
    r.p90_ms = percentile(&sorted, 0.9);
    batch_ms.sort_by(f64::total_cmp);
    r.batch_median_ms = percentile(&batch_ms, 0.5);
}

/// The CPU the process uses while no commit arrives and every followed pipeline keeps
/// polling, in % of one core (Linux).
async fn idle_cpu(interval: Duration) -> Option<f64> {
    tokio::time::sleep(interval * 5).await;
    let before = cpu_seconds();
    let idle = Duration::from_secs(3);
    tokio::time::sleep(idle).await;
    before
        .zip(cpu_seconds())
        .map(|(a, b)| (b - a) / idle.as_secs_f64() * 100.0)
}

/// CPU time (user + system) of this process so far, from `/proc/self/stat` (Linux).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name (which may hold spaces) start past its ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // The clock tick of Linux on every architecture it runs on is 100 Hz.
    Some(ticks / 100.0)
}

/// The `q` quantile of sorted values (nearest rank).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The human-readable table of a latency run.
pub fn table(r: &LatencyResult) -> String {
    format!(
        "  {:<38} {}\n  {:<38} {}\n  {:<38} {:.0} ms\n  {:<38} {} of {} rows\n  {:<38} min {:.1} / median {:.1} / p90 {:.1} / max {:.1} ms\n  {:<38} {:.1} ms\n  {:<38} {}\n",
        "pipeline (upstreams)",
        format_args!("{} ({})", r.pipeline, r.upstreams.join(", ")),
        "pipelines followed",
        r.pipelines_followed,
        "follow --interval",
        r.interval_ms,
        "commits measured",
        r.samples,
        r.rows_per_commit,
        "commit landed -> link table",
        r.min_ms,
        r.median_ms,
        r.p90_ms,
        r.max_ms,
        "the batch itself (median)",
        r.batch_median_ms,
        "idle CPU between commits",
        r.idle_cpu_percent
            .map_or("unknown".to_string(), |c| format!("{c:.1}% of one core")),
    )
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        assert_eq!(percentile(&v, 0.5), 5.0);
        assert_eq!(percentile(&v, 0.9), 9.0);
        assert_eq!(percentile(&v[..1], 0.9), 1.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
