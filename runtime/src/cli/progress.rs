//! What `run` shows while it catches up. On a terminal: a bar per pipeline (upstream
//! versions done of those to do, change rows per second, ETA), with each batch's line
//! printed above the bars. Otherwise (a pipe, a file, a log collector): the batch
//! lines alone, as always.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

use dlink_rt::config::Pipeline;
use dlink_rt::engine::BatchReport;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bars: Option<Bars>,
}

struct Bars {
    multi: MultiProgress,
    /// Per pipeline: its bar and the change rows it has read.
    pipelines: HashMap<String, (ProgressBar, u64)>,
}

const TEMPLATE: &str = "{prefix:>16.bold} [{wide_bar}] {pos}/{len} versions, {msg}, ETA {eta}";

impl Progress {
    /// Bars for `pipelines` when stdout is a terminal; their lengths are the upstream
    /// versions each has to do (from the link tables and upstream logs, as `status`).
    pub async fn new(pipelines: &[Pipeline]) -> Progress {
        if !std::io::stdout().is_terminal() {
            return Progress { bars: None };
        }
        let style = ProgressStyle::with_template(TEMPLATE)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let statuses = futures::future::join_all(pipelines.iter().map(dlink_rt::status::of)).await;
        let mut bars = HashMap::new();
        for s in statuses {
            let to_do: i64 = s.upstreams.iter().filter_map(|u| u.lag_versions).sum();
            // Styled and named before it is added: its first frame is complete.
            let bar = ProgressBar::new(u64::try_from(to_do).unwrap_or(0))
                .with_style(style.clone())
                .with_prefix(s.pipeline.clone())
                .with_message("waiting");
            let bar = multi.add(bar);
            bar.enable_steady_tick(Duration::from_millis(200));
            bars.insert(s.pipeline, (bar, 0));
        }
        Progress {
            bars: Some(Bars {
                multi,
                pipelines: bars,
            }),
        }
    }

    /// One committed batch: its line, and on a terminal its pipeline's bar moved on.
    pub fn batch(&mut self, b: &BatchReport) {
        let Some(bars) = self.bars.as_mut() else {
            outln!("{b}");
            return;
        };
        // Printed above the bars: the bars are cleared, the line written whole with its
        // newline (however long, wrapped or not), and the bars drawn again below it.
        // (`MultiProgress::println` pads the line to the width it assumes instead of
        // ending it, which a pseudo-terminal of unknown width shows as one long line.)
        bars.multi.suspend(|| outln!("{b}"));
        let Some((bar, rows)) = bars.pipelines.get_mut(&b.pipeline) else {
            return;
        };
        let versions: i64 = b
            .upstreams
            .iter()
            .filter_map(|u| u.range.map(|(s, e)| e - s + 1))
            .sum();
        let versions = u64::try_from(versions).unwrap_or(0);
        // Upstreams that moved since the start make more to do than first counted.
        if bar.position() + versions > bar.length().unwrap_or(0) {
            bar.set_length(bar.position() + versions);
        }
        bar.inc(versions);
        *rows += b.change_rows as u64;
        let secs = bar.elapsed().as_secs_f64().max(1e-3);
        bar.set_message(format!("{:.0} change rows/s", *rows as f64 / secs));
    }

    /// The bars left as they ended (a pipeline that failed keeps its position).
    pub fn finish(&self) {
        if let Some(bars) = &self.bars {
            for (bar, _) in bars.pipelines.values() {
                bar.abandon();
            }
        }
    }
}
