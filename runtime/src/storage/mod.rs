//! Where tables live: local paths and object stores through deltalake's own backends
//! (`s3://` and S3-compatible endpoints; `az://`/`abfss://` and `gs://` with the cargo
//! features `azure` and `gcs`), with the storage options of the catalog's
//! `[storage]`, an upstream's `[upstreams.NAME.storage]` and a pipeline's
//! `[link.storage]`.
//!
//! Storage options hold credentials: their values never reach a log line, an error,
//! commit metadata or `status`/`validate` output. [`StorageOptions`]'s `Debug` shows
//! the keys only, and nothing else prints it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Once;

use deltalake::{DeltaResult, DeltaTableBuilder};

mod error;
mod redact;

pub use error::{Cause, StoreError, StoreErrorKind};
pub use redact::{init_logs, redact_line, RedactingStderr};

/// Options of an object store (`aws_endpoint_url`, `aws_region`, `aws_allow_http`,
/// credentials, ...), as deltalake's backends take them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StorageOptions(BTreeMap<String, String>);

impl std::fmt::Debug for StorageOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

impl StorageOptions {
    /// The options `options`; their values are hidden from every log line from now on
    /// (see [`RedactingStderr`]).
    pub fn new(options: BTreeMap<String, String>) -> Self {
        redact::register(options.values().map(String::as_str));
        StorageOptions(options)
    }

    /// `self`, with `over`'s keys replacing its own.
    pub fn merged(&self, over: &StorageOptions) -> StorageOptions {
        let mut out = self.0.clone();
        out.extend(over.0.iter().map(|(k, v)| (k.clone(), v.clone())));
        StorageOptions(out)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The option names (for messages: never the values).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// The values, to hide them from a text that is about to be printed.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.0.values().map(String::as_str)
    }

    fn as_map(&self) -> HashMap<String, String> {
        self.0.clone().into_iter().collect()
    }
}

/// Registers deltalake's object-store backends (once per process).
pub fn register_backends() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        deltalake::aws::register_handlers(None);
        #[cfg(feature = "azure")]
        deltalake::azure::register_handlers(None);
        #[cfg(feature = "gcs")]
        deltalake::gcp::register_handlers(None);
    });
}

/// A builder of the table at `uri` (a local path or a URL) with `options`.
pub fn builder(uri: &str, options: &StorageOptions) -> DeltaResult<DeltaTableBuilder> {
    register_backends();
    let url = deltalake::ensure_table_uri(uri)?;
    let b = DeltaTableBuilder::from_url(url)?;
    Ok(if options.is_empty() {
        b
    } else {
        b.with_storage_options(options.as_map())
    })
}

/// The object store at `uri` (rooted there), with `options`; errors redacted.
pub fn object_store(
    uri: &str,
    options: &StorageOptions,
) -> Result<std::sync::Arc<dyn deltalake::ObjectStore>, StoreError> {
    builder(uri, options)
        .and_then(|b| b.build_storage())
        .map(|log| log.object_store(None))
        .map_err(|e| StoreError::new(e, options))
}

/// Whether `uri` names an object store (not a local path).
pub fn is_remote(uri: &str) -> bool {
    uri.contains("://") && !uri.starts_with("file://")
}

/// `text` with every value of `options` (longer than 3 characters) replaced by `***`:
/// for an error of a backend that might quote what it was given.
pub fn redact(text: &str, options: &StorageOptions) -> String {
    let mut out = text.to_string();
    for v in options.values().filter(|v| redact::is_secret(v)) {
        out = out.replace(v, "***");
    }
    out
}

/// Checks that the object store at `uri` refuses to overwrite an object written with
/// "create only" (`If-None-Match: *`), the conditional put deltalake's commits rely on
/// to keep two writers from committing the same version. Writes and removes one small
/// object under `_dlink_probe/`. Local paths are not checked (the file system's
/// atomic create-new serves).
pub async fn check_conditional_put(uri: &str, options: &StorageOptions) -> Result<(), StoreError> {
    use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
    if !is_remote(uri) {
        return Ok(());
    }
    let store = object_store(uri, options)?;
    let path = deltalake::Path::from(format!(
        "_dlink_probe/{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
    ));
    let create = || PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    let first = store
        .put_opts(&path, PutPayload::from_static(b"1"), create())
        .await;
    let second = match first {
        Ok(_) => {
            store
                .put_opts(&path, PutPayload::from_static(b"2"), create())
                .await
        }
        Err(e) => {
            return Err(StoreError::new(
                Cause::from(e).doing("cannot write to the store"),
                options,
            ))
        }
    };
    let _ = store.delete(&path).await;
    match second {
        Err(deltalake::ObjectStoreError::AlreadyExists { .. })
        | Err(deltalake::ObjectStoreError::Precondition { .. }) => Ok(()),
        Ok(_) => Err(StoreError::new(
            Cause::new(
                StoreErrorKind::Invalid,
                "the store overwrote an object written with If-None-Match: * (no conditional put), so two runs \
                 could commit the same link-table version; use a store with conditional writes (AWS S3, MinIO, \
                 Ceph RGW, R2 all have them)",
            ),
            options,
        )),
        Err(e) => Err(StoreError::new(
            Cause::from(e).doing("the store's answer to a conditional put was unexpected"),
            options,
        )),
    }
}

/// True when `uri` is a local path with no `_delta_log` folder (no table yet). URLs
/// of object stores are never judged here.
pub fn local_path_without_log(uri: &str) -> bool {
    let path = match uri.strip_prefix("file://") {
        Some(p) => p,
        None if uri.contains("://") => return false,
        None => uri,
    };
    !std::path::Path::new(path).join("_delta_log").is_dir()
}

/// Whether the table at `uri` has a log (`_delta_log/` holds an object): one listing
/// request on an object store, one `stat` for a local path. Asked before loading a
/// table that may not exist yet, so that its absence is an answer, not an error
/// deltalake's kernel logs.
pub async fn has_log(uri: &str, options: &StorageOptions) -> Result<bool, StoreError> {
    use futures::StreamExt;
    if !is_remote(uri) {
        return Ok(!local_path_without_log(uri));
    }
    let store = object_store(uri, options)?;
    let prefix = deltalake::Path::from("_delta_log");
    match store.list(Some(&prefix)).next().await {
        None => Ok(false),
        Some(Ok(_)) => Ok(true),
        Some(Err(e)) => Err(StoreError::new(e, options)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_the_keys_and_never_the_values() {
        let o = StorageOptions::new(BTreeMap::from([
            (
                "aws_secret_access_key".to_string(),
                "s3cr3t-value".to_string(),
            ),
            ("aws_region".to_string(), "eu-west-1".to_string()),
        ]));
        let shown = format!("{o:?} {:?}", Some(&o));
        assert!(shown.contains("aws_secret_access_key") && shown.contains("aws_region"));
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("eu-west"),
            "{shown}"
        );
        assert_eq!(
            redact("denied for s3cr3t-value in eu-west-1", &o),
            "denied for *** in ***"
        );
    }

    #[test]
    fn merged_options_take_the_more_specific_value() {
        let base = StorageOptions::new(BTreeMap::from([
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "2".to_string()),
        ]));
        let over = StorageOptions::new(BTreeMap::from([("b".to_string(), "3".to_string())]));
        let m = base.merged(&over);
        assert_eq!(m.0["a"], "1");
        assert_eq!(m.0["b"], "3");
    }
}
