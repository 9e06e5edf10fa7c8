//! Checking an upstream's commit log, version by version, before its change feed is
//! read: a version that cannot be read as a change feed (CDF off, a replaced table, a
//! missing log entry) is found here, with its reason, before anything is read.

use deltalake::DeltaTable;
use futures::StreamExt;

use super::history::{self, TableState, Unreadable};
use super::Result;
use super::{open_at, state_of, table_err, unreadable, version_of};
use crate::config::Upstream;
use crate::storage::Cause;

/// A cursor over an upstream's commit log that checks, version by version, that each
/// version can be read as a change feed.
#[derive(Debug, Clone)]
pub struct LogCheck {
    state: TableState,
    /// Next version whose commit must be stepped through.
    next: i64,
}

/// Versions a log check reads ahead when it starts (see [`LogCheck::start`]).
const READ_AHEAD: i64 = 256;

impl LogCheck {
    /// Starts checking at version `start` of `u`, whose `table` is loaded at a later
    /// version.
    ///
    /// The check needs the table's state at `start - 1`. When the versions from `start`
    /// to the loaded one are few ([`READ_AHEAD`]) their commits are read at once: if none
    /// of them changes the metadata, the state before them is the loaded table's own
    /// and, the Change Data Feed being on, every one of them is readable, so the check
    /// is done without loading the table as of `start - 1` (a log replay that was most
    /// of opening an incremental run). Otherwise the table is loaded as of `start - 1`
    /// and the versions are checked as batches reach them.
    pub async fn start(u: &Upstream, table: &DeltaTable, start: i64) -> Result<LogCheck> {
        if start > 0 {
            if let Some(done) = Self::read_ahead(u, table, start).await? {
                return Ok(done);
            }
        }
        Self::start_before(u, table, start).await
    }

    /// The check of `start..=` the loaded version done at once, when those commits are
    /// few, all present and none changes the metadata; `None` otherwise (problems are
    /// then reported when a batch reaches their version).
    async fn read_ahead(u: &Upstream, table: &DeltaTable, start: i64) -> Result<Option<LogCheck>> {
        let latest = version_of(u, table)?;
        if latest < start || latest - start >= READ_AHEAD {
            return Ok(None);
        }
        let state = state_of(u, table)?;
        if !state.cdf_enabled {
            return Ok(None);
        }
        let log = table.log_store();
        let commits: Vec<_> = futures::stream::iter(start..=latest)
            .map(|v| {
                let log = log.clone();
                async move { log.read_commit_entry(v as u64).await }
            })
            .buffered(16)
            .collect()
            .await;
        for commit in commits {
            match commit {
                Ok(Some(bytes)) if matches!(history::metadata_of(&bytes), Ok(None)) => {}
                _ => return Ok(None),
            }
        }
        Ok(Some(LogCheck {
            state,
            next: latest + 1,
        }))
    }

    /// Starts checking at version `start` from the table loaded as of `start - 1`.
    async fn start_before(u: &Upstream, table: &DeltaTable, start: i64) -> Result<LogCheck> {
        if start > 0 {
            match open_at(u, start - 1).await {
                Ok(t) => {
                    return Ok(LogCheck {
                        state: state_of(u, &t)?,
                        next: start,
                    })
                }
                // Only a log that no longer reaches `start - 1` is worked around below;
                // a failure to read the log (IO, permissions, the network) is not, as
                // it would weaken the check of `start` without saying so.
                Err(open_err) => {
                    if let Err(e) = table.log_store().read_commit_entry(start as u64 - 1).await {
                        tracing::debug!(table = %u.name, error = %open_err, "loading the version before the start failed");
                        return Err(table_err(
                            u,
                            Cause::from(e).doing(format_args!(
                                "cannot read the log entry of version {}",
                                start - 1
                            )),
                        ));
                    }
                }
            }
        } else {
            return Ok(LogCheck {
                state: TableState {
                    id: String::new(),
                    cdf_enabled: false,
                },
                next: 0,
            });
        }
        // The version before `start` is gone (log cleanup below a checkpoint): take the
        // state at `start` itself, which includes its own metadata.
        let t = match open_at(u, start).await {
            Ok(t) => t,
            // Which failure it is, the log says: no entry for `start` is log cleanup;
            // anything else (an IO error, a corrupt checkpoint) is reported as it is.
            Err(open_err) => {
                return Err(
                    match table.log_store().read_commit_entry(start as u64).await {
                        Ok(None) => unreadable(u, start, Unreadable::LogMissing),
                        Ok(Some(_)) => open_err,
                        Err(e) => table_err(
                            u,
                            Cause::from(e).doing(format_args!(
                                "cannot read the log entry of version {start}"
                            )),
                        ),
                    },
                )
            }
        };
        let state = state_of(u, &t)?;
        if !state.cdf_enabled {
            return Err(unreadable(u, start, Unreadable::CdfDisabled));
        }
        Ok(LogCheck {
            state,
            next: start + 1,
        })
    }

    /// The table's state at the version before the next one to check (its id is the
    /// table the versions checked so far belong to).
    pub fn state(&self) -> &TableState {
        &self.state
    }

    /// Starts checking at version `next`, given the table's state at `next - 1`.
    pub fn at(state: TableState, next: i64) -> LogCheck {
        LogCheck { state, next }
    }

    /// Checks every version up to `end` (inclusive) that has not been checked yet.
    pub async fn check_to(&mut self, u: &Upstream, table: &DeltaTable, end: i64) -> Result<()> {
        let log = table.log_store();
        while self.next <= end {
            let v = self.next;
            // A failed read (IO, the network) is the store's, not the table's: reported
            // as it is, to be retried, not as an unreadable version to reset past.
            let bytes = log
                .read_commit_entry(v as u64)
                .await
                .map_err(|e| {
                    table_err(
                        u,
                        Cause::from(e)
                            .doing(format_args!("cannot read the log entry of version {v}")),
                    )
                })?
                .ok_or_else(|| unreadable(u, v, Unreadable::LogMissing))?;
            history::step(&mut self.state, &bytes).map_err(|r| unreadable(u, v, r))?;
            self.next += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdf::ReadError;
    use crate::demo::{Col, DemoTable};
    use crate::storage::StoreErrorKind;
    use serde_json::json;

    /// A log entry that cannot be read (here a symbolic link to itself where the JSON
    /// file was; on a bucket, a network failure) is a table error to retry, not an unreadable version
    /// that `dlink-rt reset` would skip; a removed entry is `LogMissing`.
    #[tokio::test]
    async fn a_log_entry_that_cannot_be_read_is_not_an_unreadable_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        let mut t = DemoTable::create(&path, &[("id", Col::Long)], json!([[1]]))
            .await
            .unwrap();
        for i in 2..=4 {
            t.insert(json!([[i]])).await.unwrap();
        }
        let u = Upstream::new("t", path.to_string_lossy());
        let table = crate::cdf::open_latest(&u).await.unwrap();
        let log = path.join("_delta_log");
        let entry = |v: i64| log.join(format!("{v:020}.json"));

        std::fs::remove_file(entry(2)).unwrap();
        std::os::unix::fs::symlink(entry(2), entry(2)).unwrap();
        let mut check = LogCheck::at(state_of(&u, &table).unwrap(), 1);
        let e = check.check_to(&u, &table, 3).await.unwrap_err();
        let is_io = |e: &ReadError| matches!(e, ReadError::Table { source, .. } if source.kind() == StoreErrorKind::Io);
        assert!(is_io(&e), "{e:?}");
        assert!(e.to_string().contains("version 2"), "{e}");
        // The version before a start is not read around either.
        let e = LogCheck::start_before(&u, &table, 3).await.unwrap_err();
        assert!(is_io(&e), "{e:?}");

        std::fs::remove_file(entry(2)).unwrap();
        let mut check = LogCheck::at(state_of(&u, &table).unwrap(), 1);
        let e = check.check_to(&u, &table, 3).await.unwrap_err();
        assert!(
            matches!(
                e,
                ReadError::Unreadable {
                    version: 2,
                    reason: Unreadable::LogMissing,
                    ..
                }
            ),
            "{e:?}"
        );
    }
}
