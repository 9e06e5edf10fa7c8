//! Why a derivation's output was refused: one variant per kind of problem, each with
//! what it is about, worded for the user as the host reports it.

use std::fmt;

use deltalake::arrow::datatypes::DataType;
use deltalake::arrow::error::ArrowError;

/// What is wrong with a plugin's (or a query's) output.
#[derive(Debug)]
#[non_exhaustive]
pub enum InvalidKeys {
    /// The bytes are not an Arrow IPC stream. `part` names the upstream of a contract
    /// 0.2 part.
    NotArrow {
        part: Option<String>,
        source: ArrowError,
    },
    /// A column the output must not have.
    UnexpectedColumn {
        column: String,
        /// The part's upstream (contract 0.2).
        part: Option<String>,
        /// The columns the output may have.
        expected: String,
    },
    /// A key column (or `_upstream`) is missing.
    MissingColumn {
        /// `key column 'id'` or `'_upstream' column`.
        column: String,
        part: Option<String>,
        /// The columns the output may have, when known.
        expected: Option<String>,
    },
    /// A column of the wrong type.
    WrongType {
        /// `key column 'id'`, `'_upstream'` or `'_commit_timestamp'`.
        column: String,
        part: Option<String>,
        found: DataType,
        /// What it must be, e.g. `not a timestamp` or `but the pipeline declares it
        /// long (Int64)`.
        wanted: String,
    },
    /// Null values in a key column.
    NullKeys { column: String, count: usize },
    /// Null values in `_upstream`.
    NullUpstream { count: usize },
    /// Keys attributed to a table that is not an upstream of the pipeline.
    UnknownUpstream {
        name: String,
        /// True for a contract 0.2 part, false for an `_upstream` value.
        part: bool,
        upstreams: Vec<String>,
    },
    /// Output that does not hold together: a dictionary-encoded `_upstream` whose keys
    /// point outside its values, more rows than its parts.
    Malformed { detail: String },
    /// The SQL query does not return a declared key column.
    QueryMissingKey {
        column: String,
        returned: Vec<String>,
    },
    /// The SQL query returns a key column that cannot be cast to the declared type.
    QueryKeyType {
        column: String,
        found: DataType,
        wanted: DataType,
        source: ArrowError,
    },
    /// Arrow refused an operation on the output (concatenating, casting, taking rows).
    Arrow(ArrowError),
}

impl From<ArrowError> for InvalidKeys {
    fn from(e: ArrowError) -> Self {
        InvalidKeys::Arrow(e)
    }
}

/// ` for 'upstream'` after a column, for a contract 0.2 part.
fn of_part(part: &Option<String>) -> String {
    part.as_ref()
        .map(|u| format!(" for '{u}'"))
        .unwrap_or_default()
}

impl fmt::Display for InvalidKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use InvalidKeys::*;
        match self {
            NotArrow { part: None, source } => write!(
                f,
                "derive returned bytes that are not an Arrow IPC stream: {source}"
            ),
            NotArrow {
                part: Some(u),
                source,
            } => write!(
                f,
                "derive returned keys for '{u}' that are not an Arrow IPC stream: {source}"
            ),
            UnexpectedColumn {
                column,
                part,
                expected,
            } => write!(
                f,
                "derive returned an unexpected column '{column}'{}; the output columns are: {expected}",
                of_part(part)
            ),
            MissingColumn {
                column,
                part,
                expected,
            } => {
                write!(f, "derive returned no {column}{}", of_part(part))?;
                match expected {
                    Some(e) => write!(f, "; the output columns are: {e}"),
                    None => Ok(()),
                }
            }
            WrongType {
                column,
                part,
                found,
                wanted,
            } => write!(
                f,
                "derive returned {column}{} as {found}{wanted}",
                of_part(part)
            ),
            NullKeys { column, count } => write!(
                f,
                "derive returned {count} null value(s) in key column '{column}'; keys must not be null"
            ),
            NullUpstream { count } => {
                write!(f, "derive returned {count} null value(s) in '_upstream'")
            }
            UnknownUpstream {
                name,
                part,
                upstreams,
            } => {
                if *part {
                    write!(f, "derive returned keys caused by '{name}'")?;
                } else {
                    write!(f, "derive returned '_upstream' = '{name}'")?;
                }
                write!(
                    f,
                    ", which is not an upstream of the pipeline (upstreams: {})",
                    upstreams.join(", ")
                )
            }
            Malformed { detail } => write!(f, "derive returned {detail}"),
            QueryMissingKey { column, returned } => write!(
                f,
                "the query returns no key column '{column}' (it returns: {})",
                returned.join(", ")
            ),
            QueryKeyType {
                column,
                found,
                wanted,
                source,
            } => write!(
                f,
                "the query returns key column '{column}' as {found}, which cannot be read as {wanted}: {source}"
            ),
            Arrow(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for InvalidKeys {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            InvalidKeys::NotArrow { source, .. } | InvalidKeys::QueryKeyType { source, .. } => {
                Some(source)
            }
            InvalidKeys::Arrow(e) => Some(e),
            _ => None,
        }
    }
}
