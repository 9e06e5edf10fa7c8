//! The read layer's error: an upstream or lookup table that cannot be opened, a
//! change feed that cannot be read, a checkpoint the table contradicts, a version
//! that cannot be read as a change feed.

use std::path::{Path, PathBuf};

use super::history::Unreadable;
use crate::storage::StoreError;

/// Why reading an upstream failed. Nothing was committed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// An upstream or lookup table could not be opened or read (retrying may help
    /// when `source.kind()` is `Io`).
    #[error("table '{table}' at {uri}: {source}")]
    Table {
        table: String,
        uri: String,
        #[source]
        source: StoreError,
    },

    /// The Change Data Feed of a version range cannot be read.
    #[error(
        "upstream '{table}': cannot read the change data feed of versions {start} to {end}: {source}"
    )]
    ChangeFeed {
        table: String,
        start: i64,
        end: i64,
        #[source]
        source: StoreError,
    },

    /// The pipeline's checkpoint says it has done a version the table does not have.
    #[error(
        "upstream '{table}': the checkpoint says version {done} is done but the table's latest version is {latest}; \
         the table was replaced by a new one or restored to an older version. Nothing was committed. \
         Check the table, then choose where to resume:\n{}",
        way_out(pipeline_file.as_deref(), table)
    )]
    CheckpointAhead {
        table: String,
        done: i64,
        latest: i64,
        pipeline_file: Option<PathBuf>,
    },

    /// The table at the upstream's path is not the one the checkpoint's versions were
    /// read from (its `metaData.id` differs): dropped and created again, or replaced.
    #[error(
        "upstream '{table}': the table was replaced: its table id (metaData.id) is now {table_id}, \
         not the one the checkpoint recorded when it read up to version {done}, so its versions \
         do not continue what was read. Nothing was committed. Check the table, then choose where \
         to resume (usually version 0 of the new table):\n{}",
        way_out(pipeline_file.as_deref(), table)
    )]
    Replaced {
        table: String,
        done: i64,
        table_id: String,
        pipeline_file: Option<PathBuf>,
    },

    /// A version of an upstream cannot be read as a change feed.
    #[error(
        "upstream '{table}': version {version} (_delta_log/{version:020}.json) cannot be read: {reason}. Nothing was committed. \
         Repair the table, or skip what cannot be read and resume:\n{}",
        way_out(pipeline_file.as_deref(), table)
    )]
    Unreadable {
        table: String,
        version: i64,
        reason: Unreadable,
        pipeline_file: Option<PathBuf>,
    },
}

impl ReadError {
    /// The upstream table (and version) the error is about.
    pub fn upstream(&self) -> (&str, Option<i64>) {
        match self {
            ReadError::Table { table, .. } => (table, None),
            ReadError::ChangeFeed { table, start, .. } => (table, Some(*start)),
            ReadError::CheckpointAhead { table, done, .. }
            | ReadError::Replaced { table, done, .. } => (table, Some(*done)),
            ReadError::Unreadable { table, version, .. } => (table, Some(*version)),
        }
    }

    /// Names the pipeline file in the way out.
    pub fn with_pipeline_file(mut self, file: &Path) -> Self {
        match &mut self {
            ReadError::Unreadable { pipeline_file, .. }
            | ReadError::CheckpointAhead { pipeline_file, .. }
            | ReadError::Replaced { pipeline_file, .. } => {
                *pipeline_file = Some(file.to_path_buf())
            }
            ReadError::Table { .. } | ReadError::ChangeFeed { .. } => {}
        }
        self
    }
}

fn way_out(file: Option<&Path>, table: &str) -> String {
    let file = file.map_or_else(
        || "<pipeline.toml>".to_string(),
        |f| f.display().to_string(),
    );
    format!(
        "  dlink-rt reset {file} --upstream {table} --to-version N   # resume reading at version N\n  \
         dlink-rt reset {file} --upstream {table} --to-latest      # skip to the latest version"
    )
}
