//! The lookup service's error: why a plugin's `lookup` call got no rows. The plugin
//! receives its text (the WIT contract's `result<_, string>`); the host keeps the type.

use deltalake::arrow::datatypes::DataType;
use deltalake::arrow::error::ArrowError;

use crate::storage::StoreError;

/// A failed `lookup`. `at` is where the rows were read, as the messages show it
/// (` at version 3`, ` (authors.json)`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LookupError {
    /// The plugin asked for a table the pipeline does not declare.
    #[error(
        "lookup of table '{table}': not an upstream or lookup table of pipeline '{pipeline}' (it may look up: {}); \
         declare it in the pipeline file's `lookups`",
        known.join(", ")
    )]
    UnknownTable {
        table: String,
        pipeline: String,
        known: Vec<String>,
    },

    /// `dlink-rt plugin test` was given no rows for the table.
    #[error(
        "lookup of table '{table}': no rows given for it (tables given: {}); pass its rows \
         as of the batch's version with --table {table}=FILE (JSON or CSV)",
        if known.is_empty() { "none".to_string() } else { known.join(", ") }
    )]
    NotGiven { table: String, known: Vec<String> },

    /// The lookup column or a requested column is not in the table.
    #[error("lookup of table '{table}'{at}: no column '{column}'")]
    NoColumn {
        table: String,
        at: String,
        column: String,
    },

    /// The keys are not an Arrow IPC stream of one column of a type the lookup column
    /// can be read as.
    #[error("lookup of table '{table}': {problem}")]
    BadKeys { table: String, problem: BadKeys },

    /// More rows matched than `[plugin.limits] max_lookup_rows` allows.
    #[error(
        "lookup of table '{table}'{at} returned more than {max_rows} rows ([plugin.limits] max_lookup_rows)"
    )]
    TooManyRows {
        table: String,
        at: String,
        max_rows: u64,
    },

    /// The table could not be opened at its pinned version.
    #[error(transparent)]
    Table(Box<crate::cdf::ReadError>),

    /// Reading the rows failed (the scan, its files, or converting its answer).
    #[error("lookup of table '{table}'{at}: {source}")]
    Read {
        table: String,
        at: String,
        #[source]
        source: StoreError,
    },

    /// The host's lookup task ended abnormally (a panic).
    #[error("the host's lookup task failed: {0}")]
    Task(String),
}

/// What is wrong with the keys a plugin sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BadKeys {
    #[error("keys are not an Arrow IPC stream: {0}")]
    NotIpc(#[source] ArrowError),
    #[error("keys must be one column, got {0}")]
    Columns(usize),
    #[error("keys cannot be read as {to}: {source}")]
    Type {
        to: DataType,
        #[source]
        source: ArrowError,
    },
}
