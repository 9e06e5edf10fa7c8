//! The error a plugin returns: a message for the operator.

use std::fmt;

/// Why `init` rejected a pipeline or `derive` failed a batch: a complete message that
/// names the upstream, column or config field at fault. The host shows it with the
/// pipeline, batch and plugin.
///
/// Every `Result<_, String>` of the SDK converts with `?`, and so do `&str`, `String`
/// and the config's `serde_json::Error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Error {
        Error(message.into())
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<String> for Error {
    fn from(message: String) -> Error {
        Error(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Error {
        Error(message.to_string())
    }
}

impl From<Error> for String {
    fn from(e: Error) -> String {
        e.0
    }
}
