//! A run that makes no progress for a bounded time is a named failure, not a hang.
//!
//! Each pipeline at work says where it is ([`at`]: its batch and stage) as it goes;
//! one that rests (caught up, between polls, waiting for a new plugin file) says so
//! ([`rest`]) and is not watched. A watchdog thread of its own (not a task of the
//! async runtime, which may be what is stuck) looks every second: a pipeline whose last
//! step is older than the limit is reported, naming the pipeline, batch and stage, and
//! the caller's `on_stall` decides what follows (the command line exits 1: nothing of
//! the stuck batch was committed, the next run does it again).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where each working pipeline is, and since when.
static AT: Mutex<BTreeMap<String, (String, Instant)>> = Mutex::new(BTreeMap::new());

/// Records that `pipeline` has reached `step` (e.g. `batch 3: derive`) now.
pub fn at(pipeline: &str, step: impl std::fmt::Display) {
    let mut at = AT.lock().unwrap_or_else(|p| p.into_inner());
    at.insert(pipeline.to_string(), (step.to_string(), Instant::now()));
}

/// Records that `pipeline` rests (nothing to do, or waiting for its next poll): not
/// watched until its next [`at`].
pub fn rest(pipeline: &str) {
    AT.lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(pipeline);
}

/// The pipelines whose last step is older than `limit` at `now`: (pipeline, step,
/// how long ago).
pub fn stalled(limit: Duration, now: Instant) -> Vec<(String, String, Duration)> {
    AT.lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter_map(|(p, (step, since))| {
            let idle = now.saturating_duration_since(*since);
            (idle > limit).then(|| (p.clone(), step.clone(), idle))
        })
        .collect()
}

/// The text of a stall: which pipelines, where, for how long.
pub fn describe(limit: Duration, stalled: &[(String, String, Duration)]) -> String {
    let each: Vec<String> = stalled
        .iter()
        .map(|(p, step, idle)| {
            format!(
                "pipeline '{p}' has been at {step} for {}",
                humantime::format_duration(Duration::from_secs(idle.as_secs()))
            )
        })
        .collect();
    format!(
        "no progress within the stall limit of {} (--stall-timeout): {}. Nothing of the stuck batch was \
         committed; the next run does it again",
        humantime::format_duration(limit),
        each.join("; ")
    )
}

/// Starts the watchdog thread: once some pipeline makes no progress for `limit`,
/// `on_stall` is called (once) with the text of [`describe`].
pub fn start(
    limit: Duration,
    on_stall: impl FnOnce(String) + Send + 'static,
) -> std::io::Result<()> {
    let every = (limit / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    std::thread::Builder::new()
        .name("dlink-watchdog".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            let stuck = stalled(limit, Instant::now());
            if !stuck.is_empty() {
                on_stall(describe(limit, &stuck));
                return;
            }
        })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipeline_is_stalled_only_past_the_limit_and_while_working() {
        let limit = Duration::from_secs(10);
        at("wd_a", "batch 3: derive");
        let now = Instant::now();
        let names = |v: Vec<(String, String, Duration)>| -> Vec<String> {
            v.into_iter()
                .map(|(p, _, _)| p)
                .filter(|p| p.starts_with("wd_"))
                .collect()
        };
        assert!(names(stalled(limit, now)).is_empty());
        let later = now + Duration::from_secs(11);
        assert_eq!(names(stalled(limit, later)), vec!["wd_a"]);
        let text = describe(limit, &stalled(limit, later));
        assert!(
            text.contains("pipeline 'wd_a' has been at batch 3: derive for 11s"),
            "{text}"
        );
        assert!(text.contains("stall limit of 10s"), "{text}");
        rest("wd_a");
        assert!(
            names(stalled(limit, later)).is_empty(),
            "resting is not stalling"
        );
    }
}
