//! The config layer's error: every problem found in the files, each with its place.

/// A configuration file could not be read or is invalid. `problems` holds every
/// problem found (not only the first), each already prefixed with `file:line`.
#[derive(Debug, thiserror::Error)]
#[error("{}", problems.join("\n"))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl ConfigError {
    /// An error with a single problem.
    pub fn one(problem: impl Into<String>) -> Self {
        ConfigError {
            problems: vec![problem.into()],
        }
    }
}
