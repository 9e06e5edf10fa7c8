//! What a run reports: each committed batch, its stages' times, and the run's outcome.

use crate::sink::UpstreamRange;

/// What one committed batch did.
#[derive(Debug, Clone)]
pub struct BatchReport {
    pub pipeline: String,
    pub batch_id: i64,
    pub upstreams: Vec<UpstreamRange>,
    pub change_rows: usize,
    pub keys: usize,
    pub link_version: i64,
    pub millis: u128,
    /// Where the batch's time went.
    pub stages: Stages,
    /// A dry run's batch (nothing committed): its first keys, as text (`link_version`
    /// is -1 then).
    pub dry_run_keys: Option<Vec<String>>,
}

/// Wall time of a batch's stages.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stages {
    /// Opening the link table, its checkpoint, the upstreams and lookup tables at the
    /// start of a run (counted in the run's first batch).
    pub open: std::time::Duration,
    /// Checking the upstreams' logs and planning ranges.
    pub plan: std::time::Duration,
    /// Reading the change feed.
    pub read: std::time::Duration,
    /// Plugin or SQL derivation, lookups and output validation included.
    pub derive: std::time::Duration,
    /// The link-table commit.
    pub commit: std::time::Duration,
}

impl BatchReport {
    /// Each upstream's versions: `employee v2..3, department -`.
    pub fn ranges(&self) -> String {
        self.upstreams
            .iter()
            .map(|u| match u.range {
                Some((s, e)) if s == e => format!("{} v{s}", u.name),
                Some((s, e)) => format!("{} v{s}..{e}", u.name),
                None => format!("{} -", u.name),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl std::fmt::Display for BatchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ranges = self.ranges();
        write!(
            f,
            "{} batch {}: {ranges} | {} change rows | {} keys | {} ms",
            self.pipeline, self.batch_id, self.change_rows, self.keys, self.millis
        )
    }
}

/// The outcome of a run.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    pub batches: Vec<BatchReport>,
    /// Set when the run stopped because another run was committing the same batches.
    pub yielded: Option<String>,
}
