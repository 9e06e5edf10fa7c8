//! The run's error, where the layers are composed: [`Error`] has one variant per layer,
//! each holding that layer's own enum ([`ConfigError`], [`ReadError`], [`PluginError`] inside a load or a batch,
//! [`CommitError`]). Each variant says what happened, where, and what to do about it;
//! the `Display` text is what a user sees. Storage failures are kept as a
//! [`StoreError`](crate::storage::StoreError): their kind typed, their text redacted.

use std::path::PathBuf;

pub use crate::cdf::ReadError;
pub use crate::config::ConfigError;
use crate::plugin::PluginError;
pub use crate::sink::CommitError;

/// What the engine and the commands above it return.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can stop a pipeline: one variant per layer (config, read, plugin,
/// commit), each holding that layer's own typed error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration file could not be read or is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),

    /// An upstream or lookup table could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),

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

    /// The link table could not be written or read.
    #[error(transparent)]
    Commit(#[from] CommitError),

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
    #[error(transparent)]
    Sql(#[from] crate::sql_pipeline::SqlError),
    /// The SQL query's result has the wrong columns or values.
    #[error(transparent)]
    QueryOutput(Box<crate::affected::InvalidKeys>),
    /// The change rows read could not be cut to `max_batch_rows` at a whole commit.
    #[error("cannot cut the batch to max_batch_rows: {source}")]
    Budget {
        #[source]
        source: deltalake::arrow::error::ArrowError,
    },
    /// The batch's key set could not be spilled to disk or merged back.
    #[error(transparent)]
    Spill(Box<crate::affected::SpillError>),
    /// An upstream's changes could not be encoded for the plugin.
    #[error("cannot encode the changes of '{upstream}': {source}")]
    Encode {
        upstream: String,
        #[source]
        source: deltalake::arrow::error::ArrowError,
    },
}

impl Error {
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
                BatchFailure::Spill(_) => "spill",
                BatchFailure::Budget { .. } => "read",
            },
            Error::PluginLoad { .. } => "plugin_load",
            Error::Read(ReadError::CheckpointAhead { .. } | ReadError::Replaced { .. }) => "link",
            Error::Read(_) | Error::Commit(CommitError::Expired { .. }) => "read",
            Error::Commit(CommitError::Concurrent { .. }) => "concurrent",
            Error::Commit(_) => "link",
            Error::Config(_) => "config",
            Error::Other(_) => "other",
        }
    }

    /// The pipeline the error names, if it names one.
    pub fn pipeline(&self) -> Option<&str> {
        match self {
            Error::Batch { pipeline, .. } | Error::PluginLoad { pipeline, .. } => Some(pipeline),
            _ => None,
        }
    }

    /// The batch the error is about, if any.
    pub fn batch_id(&self) -> Option<i64> {
        match self {
            Error::Batch { batch_id, .. }
            | Error::Commit(CommitError::Concurrent { batch_id, .. }) => Some(*batch_id),
            _ => None,
        }
    }

    /// The upstream table (and version) the error is about, if any.
    pub fn upstream(&self) -> Option<(&str, Option<i64>)> {
        match self {
            Error::Read(e) => Some(e.upstream()),
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
        Error::Config(ConfigError::one(problem))
    }

    /// Names the pipeline file in the way out of read errors.
    pub fn with_pipeline_file(self, file: &std::path::Path) -> Self {
        match self {
            Error::Read(e) => Error::Read(e.with_pipeline_file(file)),
            e => e,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Other(e.to_string())
    }
}
