//! One error enum for the whole host. Each variant says what happened, where, and what
//! to do about it; the `Display` text is what a user sees.

use std::path::PathBuf;

use crate::cdf::history::Unreadable;
use crate::plugin::PluginError;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can stop a pipeline.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration file could not be read or is invalid. `problems` holds every
    /// problem found, each already prefixed with `file:line`.
    #[error("{}", problems.join("\n"))]
    Config { problems: Vec<String> },

    /// An upstream or lookup table could not be opened or read.
    #[error("table '{table}' at {uri}: {message}")]
    Table {
        table: String,
        uri: String,
        message: String,
    },

    /// The Change Data Feed of a version range cannot be read.
    #[error(
        "upstream '{table}': cannot read the change data feed of versions {start}..={end}: {message}"
    )]
    ChangeFeed {
        table: String,
        start: i64,
        end: i64,
        message: String,
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

    /// A version of an upstream cannot be read as a change feed.
    #[error(
        "upstream '{table}': version {version} cannot be read: {reason}. Nothing was committed. \
         Repair the table, or skip what cannot be read and resume:\n{}",
        way_out(pipeline_file.as_deref(), table)
    )]
    Unreadable {
        table: String,
        version: i64,
        reason: Unreadable,
        pipeline_file: Option<PathBuf>,
    },

    /// A plugin could not be loaded, compiled or initialized.
    #[error("plugin {}: pipeline '{pipeline}': {source}", path.display())]
    PluginLoad {
        path: PathBuf,
        pipeline: String,
        #[source]
        source: PluginError,
    },

    /// A batch failed; nothing was committed and the checkpoint did not move.
    #[error(
        "pipeline '{pipeline}', batch {batch_id}, plugin {plugin}: {cause}\n\
         nothing was committed for this batch; the pipeline resumes at batch {batch_id} on the next run"
    )]
    Batch {
        pipeline: String,
        batch_id: i64,
        plugin: String,
        #[source]
        cause: BatchFailure,
    },

    /// Writing or reading the link table failed.
    #[error("link table {uri} of pipeline '{pipeline}': {message}")]
    Link {
        pipeline: String,
        uri: String,
        message: String,
    },

    /// Another run committed the same batch first.
    #[error(
        "pipeline '{pipeline}': batch {batch_id} was committed by another run while this one worked on it \
         (link table now at batch {found}); nothing was written by this run"
    )]
    Concurrent {
        pipeline: String,
        batch_id: i64,
        found: i64,
    },

    /// A window starts before the oldest batch the change log still holds: retention
    /// (`dlink-rt compact`) removed the batches in between.
    #[error(
        "link table {uri} of pipeline '{pipeline}': {reader} reads the batches after batch {}, but batches {first_missing}..={through} \
         were removed by retention (`[link] retain`, `dlink-rt compact`); the oldest batch kept is {}. \
         Their keys cannot be read any more: reprocess the keys from the source if you need them, then {way_out}",
        first_missing - 1, through + 1
    )]
    Expired {
        pipeline: String,
        uri: String,
        /// `consumer 'a'` or `--since-batch 3`.
        reader: String,
        /// The first batch the reader needs that is gone.
        first_missing: i64,
        /// The last batch removed (the oldest kept is the next).
        through: i64,
        way_out: String,
    },

    /// Anything else, with context.
    #[error("{0}")]
    Other(String),
}

/// Why a batch's derivation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BatchFailure {
    /// The plugin failed, or its output was refused.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The SQL derivation failed.
    #[error("{0}")]
    Sql(String),
    /// The SQL query's result has the wrong columns or values.
    #[error(transparent)]
    QueryOutput(Box<crate::keys::InvalidKeys>),
    /// The change rows read could not be cut to `max_batch_rows` at a whole commit.
    #[error("cannot cut the batch to max_batch_rows: {source}")]
    Budget {
        #[source]
        source: deltalake::arrow::error::ArrowError,
    },
    /// An upstream's changes could not be encoded for the plugin.
    #[error("cannot encode the changes of '{upstream}': {source}")]
    Encode {
        upstream: String,
        #[source]
        source: deltalake::arrow::error::ArrowError,
    },
}

fn way_out(file: Option<&std::path::Path>, table: &str) -> String {
    let file = file.map_or_else(
        || "<pipeline.toml>".to_string(),
        |f| f.display().to_string(),
    );
    format!(
        "  dlink-rt reset {file} --upstream {table} --to-version N   # resume reading at version N\n  \
         dlink-rt reset {file} --upstream {table} --to-latest      # skip to the latest version"
    )
}

impl Error {
    /// A failure of `pipeline`'s link table.
    pub(crate) fn link(
        pipeline: &crate::config::Pipeline,
        message: impl std::fmt::Display,
    ) -> Error {
        Error::Link {
            pipeline: pipeline.name.clone(),
            uri: pipeline.link_uri.clone(),
            message: message.to_string(),
        }
    }

    /// The kind of failure, as the `kind` label of `dlink_failures_total` and the
    /// `kind` field of its log event.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Batch { cause, .. } => match cause {
                BatchFailure::Plugin(PluginError::Timeout { .. }) => "plugin_timeout",
                BatchFailure::Plugin(PluginError::MemoryCap { .. }) => "plugin_memory",
                BatchFailure::Plugin(_) => "plugin",
                BatchFailure::Sql(_) | BatchFailure::QueryOutput(_) => "sql",
                BatchFailure::Encode { .. } => "encode",
                BatchFailure::Budget { .. } => "read",
            },
            Error::PluginLoad { .. } => "plugin_load",
            Error::Table { .. }
            | Error::ChangeFeed { .. }
            | Error::Unreadable { .. }
            | Error::Expired { .. } => "read",
            Error::Concurrent { .. } => "concurrent",
            Error::Link { .. } | Error::CheckpointAhead { .. } => "link",
            Error::Config { .. } => "config",
            Error::Other(_) => "other",
        }
    }

    /// The batch the error is about, if any.
    pub fn batch_id(&self) -> Option<i64> {
        match self {
            Error::Batch { batch_id, .. } | Error::Concurrent { batch_id, .. } => Some(*batch_id),
            _ => None,
        }
    }

    /// The upstream table (and version) the error is about, if any.
    pub fn upstream(&self) -> Option<(&str, Option<i64>)> {
        match self {
            Error::Table { table, .. } => Some((table, None)),
            Error::ChangeFeed { table, start, .. } => Some((table, Some(*start))),
            Error::CheckpointAhead { table, done, .. } => Some((table, Some(*done))),
            Error::Unreadable { table, version, .. } => Some((table, Some(*version))),
            _ => None,
        }
    }

    /// Logs the error of `pipeline` as an ERROR event whose fields say which batch,
    /// upstream and version it is about and its kind (the text is the message).
    pub fn log(&self, pipeline: &str) {
        let (upstream, version) = self.upstream().map_or((None, None), |(t, v)| (Some(t), v));
        tracing::error!(
            pipeline,
            batch = self.batch_id(),
            upstream,
            version,
            kind = self.kind(),
            "{self}"
        );
    }

    /// A configuration error with a single problem.
    pub fn config(problem: impl Into<String>) -> Self {
        Error::Config {
            problems: vec![problem.into()],
        }
    }

    /// Names the pipeline file in the way out of table errors.
    pub fn with_pipeline_file(self, file: &std::path::Path) -> Self {
        match self {
            Error::Unreadable {
                table,
                version,
                reason,
                ..
            } => Error::Unreadable {
                table,
                version,
                reason,
                pipeline_file: Some(file.to_path_buf()),
            },
            Error::CheckpointAhead {
                table,
                done,
                latest,
                ..
            } => Error::CheckpointAhead {
                table,
                done,
                latest,
                pipeline_file: Some(file.to_path_buf()),
            },
            e => e,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Other(e.to_string())
    }
}
