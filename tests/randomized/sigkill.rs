//! SIGKILL at random moments: the real binary is killed 1..3 times while it catches a
//! pipeline up with a case's final history, then run to completion; its link table
//! must equal an uninterrupted run's (batch ids are deterministic for the same history
//! and batch size).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::common::{dlink, link_rows, link_state, plugin, Workspace};
use super::gen::Rng;
use super::{replay, Pipe};

/// One run of the binary meant to be SIGKILLed.
pub struct Kill {
    pub pipeline: &'static str,
    pub after_ms: u64,
    /// False when the run ended before the kill.
    pub killed: bool,
}

impl std::fmt::Display for Kill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = if self.killed { "" } else { " (ended first)" };
        write!(f, "{} at {} ms{how}", self.pipeline, self.after_ms)
    }
}

/// Starts `dlink-rt run FILE` and SIGKILLs it after `wait`; false if it ended before.
fn kill_after(file: &Path, wait: Duration) -> bool {
    let mut child = dlink()
        .arg("run")
        .arg(file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dlink-rt");
    let t = Instant::now();
    while t.elapsed() < wait {
        if child.try_wait().expect("poll dlink-rt").is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill(); // SIGKILL
    child.wait().expect("reap dlink-rt");
    true
}

/// For one or two of the case's pipelines: an uninterrupted run of the binary into
/// one link table, and into another a run SIGKILLed 1..3 times at random moments
/// within the uninterrupted run's duration (at most 1.5 s), then run to completion.
/// Link rows and checkpoints must be equal. Returns the runs meant to be killed.
pub async fn sigkill_runs_match_uninterrupted_runs(
    seed: u64,
    rng: &mut Rng,
    ws: &Workspace,
    pipes: &[Pipe],
) -> Vec<Kill> {
    let mut chosen: Vec<usize> = (0..rng.range(1, 2))
        .map(|_| rng.range(0, pipes.len() as i64 - 1) as usize)
        .collect();
    chosen.dedup();
    let mut kills = Vec::new();
    for i in chosen {
        let p = &pipes[i];
        let d = p.def;
        let file = |suffix: &str| {
            ws.pipeline(
                &format!("{}_{suffix}", d.file),
                d.name,
                &d.upstreams,
                &plugin(d.name),
                d.key,
                p.batch_size,
            )
        };
        let (reference, killed) = (file("reference"), file("killed"));
        let t = Instant::now();
        ws.run_ok(&reference);
        let span = (t.elapsed().as_millis() as i64).clamp(1, 1500);
        let first = kills.len();
        for _ in 0..rng.range(1, 3) {
            let after_ms = rng.range(0, span) as u64;
            kills.push(Kill {
                pipeline: d.name,
                after_ms,
                killed: kill_after(&killed, Duration::from_millis(after_ms)),
            });
        }
        ws.run_ok(&killed);
        let runs: Vec<String> = kills[first..].iter().map(Kill::to_string).collect();
        let context = format!(
            "seed {seed}: batch_size {}, runs SIGKILLed: {}; {}",
            p.batch_size,
            runs.join(", "),
            replay(seed)
        );
        assert_eq!(
            link_rows(&killed).await,
            link_rows(&reference).await,
            "link rows (left: killed, right: uninterrupted); {context}"
        );
        let checkpoint = |f: PathBuf| async move { link_state(&f).await.map(|(_, cp)| cp) };
        assert_eq!(
            checkpoint(killed).await,
            checkpoint(reference).await,
            "checkpoint (left: killed, right: uninterrupted); {context}"
        );
    }
    kills
}
