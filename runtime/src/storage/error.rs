//! [`StoreError`]: a failure of a table's storage (deltalake, the object store, the
//! parquet/Arrow/DataFusion read of its files) as the host keeps it: its kind read
//! from the error's type, its text with the storage options' values hidden.
//!
//! The original error is not kept as a `source`: a backend may quote what it was given
//! (an endpoint, a key) and an error chain is printed by whoever holds it. What the
//! caller needs to decide (is the file gone, is the store down, did a commit lose a
//! race) is the [`StoreErrorKind`], found by walking the chain with downcasts, never by
//! reading the message.

use std::error::Error as StdError;
use std::fmt;

use deltalake::datafusion::error::DataFusionError;
use deltalake::{DeltaTableError, ObjectStoreError};

use super::{redact, StorageOptions};

/// What went wrong, as far as a caller has to tell cases apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// A file or object is missing (a vacuumed data file, a removed log entry).
    NotFound,
    /// There is no Delta table at the location (no `_delta_log`).
    NotATable,
    /// The store could not be reached or answered with an error: retrying may succeed.
    Io,
    /// A write lost a race: the version or object already exists.
    Conflict,
    /// The table's files or log could not be decoded or converted (Arrow, Parquet,
    /// JSON, a DataFusion plan over them).
    Data,
    /// The table is not what the pipeline expects (a missing column, a missing
    /// version, a schema of other columns); the text says which.
    Invalid,
    /// Anything else.
    Other,
}

/// A storage failure: its kind and its redacted text.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{text}")]
pub struct StoreError {
    kind: StoreErrorKind,
    text: String,
}

impl StoreError {
    /// `e` (any of the storage errors, or a text saying what is wrong with the table),
    /// with the values of `options` hidden from its text.
    pub fn new(e: impl Into<Cause>, options: &StorageOptions) -> Self {
        let Cause { kind, text } = e.into();
        StoreError {
            kind,
            text: redact(&text, options),
        }
    }

    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// True when a file or object was missing.
    pub fn is_not_found(&self) -> bool {
        self.kind == StoreErrorKind::NotFound
    }
}

/// An error not yet redacted: its kind and full text. Made from the storage errors the
/// host meets and from a text (kind [`StoreErrorKind::Invalid`]).
pub struct Cause {
    kind: StoreErrorKind,
    text: String,
}

impl Cause {
    /// A failure of `kind` the host itself found, said in `text`.
    pub fn new(kind: StoreErrorKind, text: impl Into<String>) -> Self {
        Cause {
            kind,
            text: text.into(),
        }
    }

    /// The same cause, its text prefixed with what was being done
    /// (`cannot read the log entry of version 3: ...`).
    pub fn doing(self, what: impl fmt::Display) -> Self {
        Cause {
            kind: self.kind,
            text: format!("{what}: {}", self.text),
        }
    }
}

macro_rules! cause_of_errors {
    ($($t:ty),* $(,)?) => {$(
        impl From<$t> for Cause {
            fn from(e: $t) -> Self {
                Cause { kind: kind_of(&e), text: text_of(&e) }
            }
        }
        impl From<&$t> for Cause {
            fn from(e: &$t) -> Self {
                Cause { kind: kind_of(e), text: text_of(e) }
            }
        }
    )*};
}

cause_of_errors!(
    DeltaTableError,
    DataFusionError,
    ObjectStoreError,
    std::io::Error,
    deltalake::arrow::error::ArrowError,
    deltalake::parquet::errors::ParquetError,
    serde_json::Error,
);

impl From<StoreError> for Cause {
    fn from(e: StoreError) -> Self {
        Cause {
            kind: e.kind,
            text: e.text,
        }
    }
}

impl From<String> for Cause {
    fn from(text: String) -> Self {
        Cause {
            kind: StoreErrorKind::Invalid,
            text,
        }
    }
}

impl From<&str> for Cause {
    fn from(text: &str) -> Self {
        Cause::from(text.to_string())
    }
}

/// The text of `e`; a full disk said first (the libraries bury it: "Failed to parse
/// parquet: ... No space left on device").
fn text_of(e: &(dyn StdError + 'static)) -> String {
    let text = e.to_string();
    if let Some(gap) = log_gap(&text) {
        return gap;
    }
    if disk_full(e) || text.contains("No space left on device") {
        format!("the disk is full (no space left on the device; free some and run again): {text}")
    } else {
        text
    }
}

/// The Delta kernel's "found gap" error (two `ParsedLogPath` Debug dumps) said in
/// words: which log entries are missing.
fn log_gap(text: &str) -> Option<String> {
    let at = text.find("Expected contiguous commit files, but found gap")?;
    let versions: Vec<u64> = text[at..]
        .split("version: ")
        .skip(1)
        .filter_map(|s| s.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .collect();
    let (before, after) = (*versions.first()?, *versions.get(1)?);
    let missing = if after == before + 2 {
        format!(
            "the entry of version {} (_delta_log/{:020}.json) is missing",
            before + 1,
            before + 1
        )
    } else {
        format!(
            "the entries of versions {} to {} (_delta_log/{:020}.json to {:020}.json) are missing",
            before + 1,
            after.saturating_sub(1),
            before + 1,
            after.saturating_sub(1)
        )
    };
    Some(format!(
        "the table's log has a gap: version {before} is followed by version {after}, {missing}; \
         the table cannot be read until they are restored (or the table's writer checkpoints past them)"
    ))
}

/// Whether an IO error along `e`'s sources is a full disk (ENOSPC).
fn disk_full(e: &(dyn StdError + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::StorageFull {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

/// The kind of `e`, from the types along its chain of sources: the first one that says
/// something decides.
pub fn kind_of(e: &(dyn StdError + 'static)) -> StoreErrorKind {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(kind) = own_kind(err) {
            return kind;
        }
        cur = err.source();
    }
    StoreErrorKind::Other
}

/// The kind `err` itself tells, without its sources. (DataFusion's own variants for
/// object-store, IO, Arrow and external errors give them as their sources.)
fn own_kind(err: &(dyn StdError + 'static)) -> Option<StoreErrorKind> {
    use StoreErrorKind::*;
    if let Some(e) = err.downcast_ref::<ObjectStoreError>() {
        return Some(object_store_kind(e));
    }
    if let Some(e) = err.downcast_ref::<std::io::Error>() {
        return Some(io_kind(e));
    }
    if let Some(e) = err.downcast_ref::<DeltaTableError>() {
        return match e {
            DeltaTableError::NotATable(_) | DeltaTableError::InvalidTableLocation(_) => {
                Some(NotATable)
            }
            DeltaTableError::VersionAlreadyExists(_) => Some(Conflict),
            DeltaTableError::InvalidVersion(_) => Some(Invalid),
            DeltaTableError::InvalidJsonLog { .. }
            | DeltaTableError::InvalidStatsJson { .. }
            | DeltaTableError::InvalidData { .. } => Some(Data),
            _ => None,
        };
    }
    if err.is::<deltalake::arrow::error::ArrowError>()
        || err.is::<deltalake::parquet::errors::ParquetError>()
        || err.is::<serde_json::Error>()
    {
        // An IO error may sit under them; otherwise the data is at fault.
        return match err.source().map(kind_of) {
            Some(k) if k != Other => Some(k),
            _ => Some(Data),
        };
    }
    None
}

fn object_store_kind(e: &ObjectStoreError) -> StoreErrorKind {
    match e {
        ObjectStoreError::NotFound { .. } => StoreErrorKind::NotFound,
        ObjectStoreError::AlreadyExists { .. } | ObjectStoreError::Precondition { .. } => {
            StoreErrorKind::Conflict
        }
        _ => StoreErrorKind::Io,
    }
}

fn io_kind(e: &std::io::Error) -> StoreErrorKind {
    match e.kind() {
        std::io::ErrorKind::NotFound => StoreErrorKind::NotFound,
        std::io::ErrorKind::AlreadyExists => StoreErrorKind::Conflict,
        _ => StoreErrorKind::Io,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use super::*;

    fn opts() -> StorageOptions {
        StorageOptions::new(BTreeMap::from([(
            "aws_secret_access_key".to_string(),
            "s3cr3t-value".to_string(),
        )]))
    }

    fn not_found() -> ObjectStoreError {
        ObjectStoreError::NotFound {
            path: "part-0.parquet".into(),
            source: "gone s3cr3t-value".into(),
        }
    }

    #[test]
    fn a_missing_object_is_found_by_its_type_through_datafusion_and_deltalake() {
        let wrapped = [
            StoreError::new(not_found(), &opts()),
            StoreError::new(DataFusionError::ObjectStore(Box::new(not_found())), &opts()),
            StoreError::new(
                DataFusionError::Context(
                    "scan".into(),
                    Box::new(DataFusionError::External(Box::new(
                        DeltaTableError::ObjectStore {
                            source: not_found(),
                        },
                    ))),
                ),
                &opts(),
            ),
            StoreError::new(
                DataFusionError::Shared(Arc::new(DataFusionError::IoError(std::io::Error::from(
                    std::io::ErrorKind::NotFound,
                )))),
                &opts(),
            ),
        ];
        for e in wrapped {
            assert_eq!(e.kind(), StoreErrorKind::NotFound, "{e}");
            assert!(!e.to_string().contains("s3cr3t"), "{e}");
        }
    }

    #[test]
    fn kinds_come_from_types_not_words() {
        // A text that says "not found" is what the table is, not a missing file.
        let e = StoreError::new("column 'x' not found", &opts());
        assert_eq!(e.kind(), StoreErrorKind::Invalid);
        let e = StoreError::new(DeltaTableError::NotATable("here".into()), &opts());
        assert_eq!(e.kind(), StoreErrorKind::NotATable);
        let e = StoreError::new(DeltaTableError::VersionAlreadyExists(3), &opts());
        assert_eq!(e.kind(), StoreErrorKind::Conflict);
        let e = StoreError::new(
            std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            &opts(),
        );
        assert_eq!(e.kind(), StoreErrorKind::Io);
        let e = StoreError::new(
            deltalake::arrow::error::ArrowError::CastError("no".into()),
            &opts(),
        );
        assert_eq!(e.kind(), StoreErrorKind::Data);
        let e = StoreError::new(DeltaTableError::Generic("?".into()), &opts());
        assert_eq!(e.kind(), StoreErrorKind::Other);
    }

    #[test]
    fn context_keeps_the_kind() {
        let e = StoreError::new(
            Cause::from(not_found()).doing("cannot load version 3"),
            &opts(),
        );
        assert_eq!(e.kind(), StoreErrorKind::NotFound);
        assert!(e.to_string().starts_with("cannot load version 3: "), "{e}");
    }

    #[test]
    fn a_full_disk_is_said_first() {
        let io = std::io::Error::from(std::io::ErrorKind::StorageFull);
        let c = Cause::from(deltalake::parquet::errors::ParquetError::External(
            Box::new(io),
        ));
        assert!(c.text.starts_with("the disk is full"), "{}", c.text);
        let buried = deltalake::parquet::errors::ParquetError::General(
            "Failed to parse parquet: write failed: No space left on device (os error 28)".into(),
        );
        assert!(Cause::from(buried).text.starts_with("the disk is full"));
        let other = Cause::from(std::io::Error::from(std::io::ErrorKind::NotFound));
        assert!(!other.text.contains("disk is full"));
    }

    #[test]
    fn a_log_gap_is_said_in_words() {
        let kernel = "Kernel error: Generic delta kernel error: Expected contiguous commit files, but found gap: \
            ParsedLogPath { location: FileMeta { location: Url { path: \"/t/_delta_log/00000000000000000001.json\" }, size: 804 }, \
            filename: \"00000000000000000001.json\", extension: \"json\", version: 1, file_type: Commit } -> \
            ParsedLogPath { location: FileMeta { size: 1204 }, filename: \"00000000000000000003.json\", version: 3, file_type: Commit }";
        let t = log_gap(kernel).unwrap();
        assert!(t.starts_with("the table's log has a gap: version 1 is followed by version 3, the entry of version 2 (_delta_log/00000000000000000002.json) is missing"), "{t}");
        assert!(!t.contains("ParsedLogPath"));
        assert!(log_gap("something else").is_none());
    }
}
