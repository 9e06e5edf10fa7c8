//! The read stage: each upstream's log entries checked up to the end of its planned
//! range, then its change rows read (shared through the fan-out when several
//! pipelines of a run read the same range), and the lookup-only tables pinned.

use deltalake::datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use futures::future::try_join_all;

use super::plan::Ranges;
use crate::cdf::{self, Changes, FanOut, LogCheck};
use crate::config::Upstream;
use crate::engine::error::{Error, Result};

/// Where an upstream stands in a run.
pub(crate) struct Cursor {
    pub upstream: Upstream,
    pub table: DeltaTable,
    /// Next version to read.
    pub next: i64,
    pub latest: i64,
    pub log: Option<LogCheck>,
    /// The table's `metaData.id` as of the versions checked (recorded with each batch).
    pub table_id: String,
}

impl Cursor {
    pub(crate) fn pending(&self) -> bool {
        self.next <= self.latest
    }

    /// Reads the log entries committed since the table was loaded. A caught-up cursor
    /// keeps its log check, which stands at the next version; one that was caught up
    /// when opened starts it from the state of its last version (read once).
    pub(crate) async fn refresh(&mut self) -> Result<()> {
        if self.pending() {
            return Ok(());
        }
        let u = &self.upstream;
        if self.log.is_none() && self.next == self.latest + 1 {
            self.log = Some(LogCheck::at(cdf::state_of(u, &self.table)?, self.next));
        }
        // The idle case, every --interval: one stat of the next commit file instead of
        // a listing of the log.
        let next = cdf::has_version(&self.table, self.latest + 1).await;
        if !next.map_err(|e| cdf::table_err(u, e))? {
            // No new commit. Still there? The latest version's log entry is never
            // cleaned up, so its absence means the table was moved or deleted: a
            // failure to show now, not an idle table (one more stat per idle poll).
            let here = cdf::has_version(&self.table, self.latest).await;
            if !here.map_err(|e| cdf::table_err(u, e))? {
                return Err(cdf::table_err(u, gone(self.latest)).into());
            }
            return Ok(());
        }
        self.table
            .update_state()
            .await
            .map_err(|e| cdf::table_err(u, e))?;
        self.latest = cdf::version_of(u, &self.table)?;
        if self.pending() && self.log.is_none() {
            self.log = Some(LogCheck::start(u, &self.table, self.next).await?);
        }
        Ok(())
    }
}

/// Why a followed table is gone: the log entry of the version it was at is missing.
fn gone(latest: i64) -> crate::storage::Cause {
    crate::storage::Cause::new(
        crate::storage::StoreErrorKind::NotFound,
        format!(
            "the table is gone: the log entry of its latest version {latest} \
             (_delta_log/{latest:020}.json) is not there any more. Was the table moved or \
             deleted? Put it back (the pipeline goes on where it stood), or point the \
             catalog at its new place"
        ),
    )
}

/// Checks every upstream's log entries up to the end of its range in `wanted`: a
/// version that cannot be read as a change feed fails the batch before anything is
/// read.
pub(crate) async fn check_logs(cursors: &mut [Cursor], wanted: &Ranges) -> Result<()> {
    for (c, r) in cursors.iter_mut().zip(wanted) {
        if let (Some((_, e)), Some(log)) = (r, c.log.as_mut()) {
            log.check_to(&c.upstream, &c.table, *e).await?;
            if !log.state().id.is_empty() {
                c.table_id.clone_from(&log.state().id);
            }
        }
    }
    Ok(())
}

/// Reads the change rows of each upstream's range in `wanted` (all side by side).
pub(crate) async fn read_ranges(
    ctx: &SessionContext,
    cursors: &[Cursor],
    wanted: &Ranges,
    fanout: Option<&FanOut>,
) -> Result<Vec<Option<Changes>>> {
    try_join_all(cursors.iter().zip(wanted).map(|(c, r)| async move {
        match (r, fanout) {
            (Some((s, e)), Some(f)) => f
                .read(ctx, &c.upstream, &c.table, *s, *e)
                .await
                .map(|shared| Some(Changes::clone(&shared))),
            (Some((s, e)), None) => cdf::read_changes(ctx, &c.upstream, &c.table, *s, *e)
                .await
                .map(Some),
            (None, _) => Ok(None),
        }
        .map_err(Error::from)
    }))
    .await
}

/// Plans the ranges in `wanted` that stream: read directly, with more rows than
/// `over` (the pipeline's `chunk_rows`) as far as the log tells.
pub(crate) async fn plan_streams(
    cursors: &[Cursor],
    wanted: &Ranges,
    over: u64,
) -> Result<Vec<Option<cdf::ReadPlan>>> {
    try_join_all(cursors.iter().zip(wanted).map(|(c, r)| async move {
        let Some((s, e)) = r else {
            return Ok(None);
        };
        let plan = cdf::ReadPlan::new(&c.upstream, &c.table, *s, *e).await?;
        Ok(plan.filter(|p| p.over(over)))
    }))
    .await
}

/// Brings the lookup-only tables to their latest version as of the batch's start and
/// returns those versions (the batch reads them there).
pub(crate) async fn pin_lookups(
    lookups: &mut [(Upstream, DeltaTable)],
) -> Result<Vec<(Upstream, i64)>> {
    let mut pinned = Vec::with_capacity(lookups.len());
    for (u, t) in lookups.iter_mut() {
        t.update_state().await.map_err(|e| cdf::table_err(u, e))?;
        pinned.push((u.clone(), cdf::version_of(u, t)?));
    }
    Ok(pinned)
}
