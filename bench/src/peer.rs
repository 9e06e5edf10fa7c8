//! The Python peer (`bench/peer/peer.py`): the job a team writes without dlink-rt
//! (delta-rs Python + polars, progress in a Delta table), run on the same tables.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// What one run of the peer reported.
#[derive(Debug, Clone)]
pub struct PeerRun {
    /// The peer's own wall time of the pipeline work (after its imports).
    pub seconds: f64,
    /// The distinct keys it wrote, per pipeline.
    pub keys: BTreeMap<String, BTreeSet<i64>>,
}

#[derive(Deserialize)]
struct Report {
    seconds: f64,
}

/// The peer script of this repository: `bench/peer/peer.py` from the working folder,
/// else next to this crate's manifest (`bench/`).
pub fn script() -> PathBuf {
    let rel = PathBuf::from("bench/peer/peer.py");
    if rel.is_file() {
        return rel;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peer/peer.py")
}

/// The Python of the peer's venv: `python` if given (the command line's `--python`,
/// or `$DLINK_PEER_PYTHON` through it), else the one `make peer-venv` makes
/// (`~/.cache/dlink-rt/peer-venv/bin/python`). `Err` says why there is none and how
/// to get it.
pub fn python(python: Option<&Path>) -> Result<PathBuf, String> {
    let p = match python {
        Some(p) => p.to_path_buf(),
        None => {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            home.join(".cache/dlink-rt/peer-venv/bin/python")
        }
    };
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "no Python for the peer at {}; `make peer-venv` makes one (deltalake + polars from PyPI), \
             or give --python / DLINK_PEER_PYTHON",
            p.display()
        ))
    }
}

/// Runs the peer once over the tables in `data`, its state (progress table, link
/// tables) in `state`.
pub fn run(python: &Path, data: &Path, state: &Path) -> Result<PeerRun, String> {
    let dump = state.join("keys.json");
    let out = std::process::Command::new(python)
        .arg(script())
        .arg("--data")
        .arg(data)
        .arg("--state")
        .arg(state)
        .arg("--dump-keys")
        .arg(&dump)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!(
            "the peer failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Report = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| format!("the peer printed no JSON report: {stdout}"))?;
    let text = std::fs::read_to_string(&dump).map_err(|e| format!("{}: {e}", dump.display()))?;
    let keys: BTreeMap<String, BTreeSet<i64>> =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", dump.display()))?;
    Ok(PeerRun {
        seconds: report.seconds,
        keys,
    })
}

/// Runs the Python peer on the same tables; returns its time and whether it found the
/// same keys as dlink-rt's batches after `before`, pipeline by pipeline (each
/// difference is reported through `progress`).
pub(super) async fn round(
    py: &Path,
    dir: &Path,
    pipelines: &[dlink_rt::config::Pipeline],
    before: &BTreeMap<String, i64>,
    what: &str,
    progress: &impl Fn(&str),
) -> Result<(f64, bool), String> {
    let tables = dir.join("tables");
    progress(&format!("peer {what}"));
    let run = run(py, &tables, &dir.join("peer"))?;
    progress(&format!("peer {what}: {:.3} s", run.seconds));
    let ours = super::compare::keys_after(pipelines, before).await?;
    let mut agree = true;
    for (name, keys) in &ours {
        let theirs = run.keys.get(name).cloned().unwrap_or_default();
        if *keys != theirs {
            agree = false;
            progress(&format!(
                "keys differ from the peer's in {name} ({what}): {} only ours, {} only the peer's",
                keys.difference(&theirs).count(),
                theirs.difference(keys).count()
            ));
        }
    }
    Ok((run.seconds, agree))
}
