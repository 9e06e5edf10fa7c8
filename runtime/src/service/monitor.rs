//! What a running service knows about its pipelines: Prometheus metrics (through the
//! `prometheus` crate) and each pipeline's health, fed by the followed pipelines'
//! [`FollowEvents`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use serde::Serialize;

use super::FollowEvents;
use crate::cdf::FanOut;
use crate::config::Pipeline;
use crate::engine::error::Error;
use crate::engine::BatchReport;
use crate::status::PipelineStatus;

/// A pipeline's state as `/healthz` reports it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Health {
    /// The last poll's error, while the pipeline has not recovered from it.
    pub failing: Option<String>,
    /// Failed polls in a row.
    pub failures: u32,
    /// The last plugin file that was rejected and why, while the file is not fixed
    /// (the running plugin goes on: degraded, not failing).
    pub rejected: Option<String>,
}

/// The service's metrics and health.
pub struct Monitor {
    registry: Registry,
    batches: IntCounterVec,
    keys: IntCounterVec,
    change_rows: IntCounterVec,
    failures: IntCounterVec,
    swaps: IntCounterVec,
    rejections: IntCounterVec,
    stage_seconds: HistogramVec,
    last_batch: IntGaugeVec,
    running: IntGaugeVec,
    lag_versions: IntGaugeVec,
    lag_seconds: GaugeVec,
    /// Change-feed reads the pipelines asked for, and the reads that ran (the rest
    /// were shared), from the service's fan-out.
    reads_requested: IntCounter,
    reads_performed: IntCounter,
    fanout: Mutex<Option<Arc<FanOut>>>,
    health: Mutex<BTreeMap<String, Health>>,
    /// Every pipeline of the folder as last loaded (disabled ones included).
    pipelines: Mutex<Vec<Pipeline>>,
    /// `status` of the pipelines, refreshed at most once a second.
    status: tokio::sync::Mutex<Option<(Instant, u64, Vec<PipelineStatus>)>>,
    /// Bumped by every `set_pipelines`: a status computed for another list of
    /// pipelines is not served again, however fresh.
    generation: AtomicU64,
}

/// How long a computed status (and the lag it gives) is served again.
const STATUS_TTL: Duration = Duration::from_secs(1);

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn total(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn int_gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone()))
        .expect("metric registered once");
    g
}

impl Default for Monitor {
    fn default() -> Self {
        Self::new()
    }
}

impl Monitor {
    /// A monitor with every metric registered and no pipeline yet.
    pub fn new() -> Self {
        let r = Registry::new();
        let p = &["pipeline"];
        let stage_seconds = HistogramVec::new(
            HistogramOpts::new(
                "dlink_stage_seconds",
                "Wall time of a batch's stages (open, plan, read, derive, commit)",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["pipeline", "stage"],
        )
        .expect("valid metric");
        r.register(Box::new(stage_seconds.clone()))
            .expect("metric registered once");
        let lag_seconds = GaugeVec::new(
            Opts::new(
                "dlink_lag_seconds",
                "Latest upstream commit time minus the checkpointed commit time",
            ),
            &["pipeline", "upstream"],
        )
        .expect("valid metric");
        r.register(Box::new(lag_seconds.clone()))
            .expect("metric registered once");
        let reads_requested = total(
            &r,
            "dlink_change_feed_reads_requested_total",
            "Change-feed reads (upstream, version range) the pipelines asked for",
        );
        let reads_performed = total(
            &r,
            "dlink_change_feed_reads_performed_total",
            "Change-feed reads that ran; the others were shared with a pipeline that read the same range",
        );
        Monitor {
            batches: counter(&r, "dlink_batches_total", "Batches committed", p),
            keys: counter(&r, "dlink_keys_total", "Affected keys committed", p),
            change_rows: counter(&r, "dlink_change_rows_total", "Change rows read", p),
            failures: counter(
                &r,
                "dlink_failures_total",
                "Failed polls by kind (plugin, sql, read, concurrent, plugin_load, link, other)",
                &["pipeline", "kind"],
            ),
            swaps: counter(&r, "dlink_plugin_swaps_total", "New plugin files loaded", p),
            rejections: counter(
                &r,
                "dlink_plugin_rejections_total",
                "New plugin files rejected (the running plugin stayed)",
                p,
            ),
            last_batch: int_gauge(&r, "dlink_last_batch", "The last batch committed", p),
            running: int_gauge(
                &r,
                "dlink_pipeline_running",
                "1 while the pipeline is followed",
                p,
            ),
            lag_versions: int_gauge(
                &r,
                "dlink_lag_versions",
                "Upstream versions not done yet (latest minus checkpoint)",
                &["pipeline", "upstream"],
            ),
            stage_seconds,
            lag_seconds,
            reads_requested,
            reads_performed,
            fanout: Mutex::default(),
            registry: r,
            health: Mutex::default(),
            pipelines: Mutex::default(),
            status: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
        }
    }

    /// The pipelines the service knows (enabled or not), for `/status` and the lag.
    pub fn set_pipelines(&self, pipelines: Vec<Pipeline>) {
        *self.pipelines.lock().unwrap_or_else(|e| e.into_inner()) = pipelines;
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The fan-out whose shared reads the metrics count.
    pub fn set_fanout(&self, fanout: Arc<FanOut>) {
        *self.fanout.lock().unwrap_or_else(|e| e.into_inner()) = Some(fanout);
    }

    /// Marks `pipeline` as followed (or no longer).
    pub fn set_running(&self, pipeline: &str, running: bool) {
        self.running
            .with_label_values(&[pipeline])
            .set(i64::from(running));
        if running {
            // Scrapers see every counter of a pipeline from the start, at 0.
            for c in [
                &self.batches,
                &self.keys,
                &self.change_rows,
                &self.swaps,
                &self.rejections,
            ] {
                c.with_label_values(&[pipeline]);
            }
        }
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        if running {
            h.entry(pipeline.to_string()).or_insert(Health {
                failing: None,
                failures: 0,
                rejected: None,
            });
        } else {
            h.remove(pipeline);
        }
    }

    /// Each followed pipeline's health.
    pub fn health(&self) -> BTreeMap<String, Health> {
        self.health
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The status of every known pipeline (as `dlink-rt status --json`), at most a
    /// second old; also sets the lag gauges from it.
    pub async fn status(&self) -> Vec<PipelineStatus> {
        let mut cached = self.status.lock().await;
        // Read before the list: a list set meanwhile makes this status stale at once.
        let generation = self.generation.load(Ordering::SeqCst);
        if let Some((at, made_for, s)) = cached.as_ref() {
            if at.elapsed() < STATUS_TTL && *made_for == generation {
                return s.clone();
            }
        }
        let pipelines = self
            .pipelines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let list = futures::future::join_all(pipelines.iter().map(crate::status::of)).await;
        for p in &list {
            for u in &p.upstreams {
                let labels = [p.pipeline.as_str(), u.name.as_str()];
                if let Some(v) = u.lag_versions {
                    self.lag_versions.with_label_values(&labels).set(v);
                }
                if let Some(s) = u.lag_seconds {
                    self.lag_seconds.with_label_values(&labels).set(s);
                }
            }
        }
        *cached = Some((Instant::now(), generation, list.clone()));
        list
    }

    /// The metrics in the Prometheus text format (the lag refreshed first).
    pub async fn metrics_text(&self) -> String {
        self.status().await;
        let fanout = self
            .fanout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(stats) = fanout.map(|f| f.stats()) {
            for (c, now) in [
                (&self.reads_requested, stats.requested),
                (&self.reads_performed, stats.performed),
            ] {
                c.inc_by(now.saturating_sub(c.get()));
            }
        }
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for want of space; a metric family the text
        // format cannot express would be a bug of this module.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!("cannot encode the metrics: {e}");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl FollowEvents for Monitor {
    fn batch(&self, r: &BatchReport) {
        let p = [r.pipeline.as_str()];
        self.batches.with_label_values(&p).inc();
        self.keys.with_label_values(&p).inc_by(r.keys as u64);
        self.change_rows
            .with_label_values(&p)
            .inc_by(r.change_rows as u64);
        self.last_batch.with_label_values(&p).set(r.batch_id);
        for (stage, d) in [
            ("open", r.stages.open),
            ("plan", r.stages.plan),
            ("read", r.stages.read),
            ("derive", r.stages.derive),
            ("commit", r.stages.commit),
        ] {
            self.stage_seconds
                .with_label_values(&[r.pipeline.as_str(), stage])
                .observe(d.as_secs_f64());
        }
    }

    fn polled(&self, pipeline: &str) {
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = h.get_mut(pipeline) {
            h.failing = None;
            h.failures = 0;
        }
    }

    fn failed(&self, pipeline: &str, error: &Error) {
        self.failures
            .with_label_values(&[pipeline, error.kind()])
            .inc();
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        let h = h.entry(pipeline.to_string()).or_insert(Health {
            failing: None,
            failures: 0,
            rejected: None,
        });
        h.failing = Some(error.to_string());
        h.failures += 1;
    }

    fn swapped(&self, pipeline: &str, _sha256: &str) {
        self.swaps.with_label_values(&[pipeline]).inc();
    }

    fn rejected(&self, pipeline: &str, reason: &str) {
        self.rejections.with_label_values(&[pipeline]).inc();
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        h.entry(pipeline.to_string())
            .or_insert(Health {
                failing: None,
                failures: 0,
                rejected: None,
            })
            .rejected = Some(reason.to_string());
    }

    fn plugin_file_ok(&self, pipeline: &str) {
        let mut h = self.health.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(h) = h.get_mut(pipeline) {
            h.rejected = None;
        }
    }
}
