//! Where a plugin file comes from: a local path, or an object in a bucket
//! (`[plugin] path = "s3://bucket/plugins/x.wasm"`, with the catalog's `[storage]` and
//! `[plugin.storage]`). A team ships a new plugin by uploading it; `--follow` notices
//! the object's new ETag and swaps it in under the same rules as a local file.

use crate::config::PluginSpec;
use crate::storage::{self, StorageOptions};

/// The object store holding `path`'s object and the object's key in it.
fn object_of(
    path: &str,
    options: &StorageOptions,
) -> std::io::Result<(std::sync::Arc<dyn deltalake::ObjectStore>, deltalake::Path)> {
    let (parent, name) = path
        .rsplit_once('/')
        .filter(|(p, n)| !n.is_empty() && p.contains("://"))
        .ok_or_else(|| std::io::Error::other(format!("{path} does not name an object")))?;
    let store = storage::object_store(parent, options).map_err(std::io::Error::other)?;
    Ok((store, deltalake::Path::from(name)))
}

fn io_err(e: deltalake::ObjectStoreError, options: &StorageOptions) -> std::io::Error {
    let kind = match e {
        deltalake::ObjectStoreError::NotFound { .. } => std::io::ErrorKind::NotFound,
        _ => std::io::ErrorKind::Other,
    };
    std::io::Error::new(kind, storage::redact(&e.to_string(), options))
}

/// Whether the plugin's path names an object in a bucket.
pub fn is_remote(spec: &PluginSpec) -> bool {
    storage::is_remote(&spec.path.to_string_lossy())
}

/// The plugin file's bytes.
pub async fn read(spec: &PluginSpec) -> std::io::Result<Vec<u8>> {
    if !is_remote(spec) {
        return tokio::fs::read(&spec.path).await;
    }
    use object_store::ObjectStoreExt;
    let (store, key) = object_of(&spec.path.to_string_lossy(), &spec.storage)?;
    let got = store
        .get(&key)
        .await
        .map_err(|e| io_err(e, &spec.storage))?;
    got.bytes()
        .await
        .map(|b| b.to_vec())
        .map_err(|e| io_err(e, &spec.storage))
}

/// What tells a new version of the file cheaply: the size and modification time of a
/// local file, the ETag (else version, else size and time) of an object. An error when
/// it cannot be asked now (the file is missing, the store does not answer).
pub async fn stamp(spec: &PluginSpec) -> std::io::Result<String> {
    if !is_remote(spec) {
        let m = tokio::fs::metadata(&spec.path).await?;
        return Ok(format!("{} {:?}", m.len(), m.modified()?));
    }
    use object_store::ObjectStoreExt;
    let (store, key) = object_of(&spec.path.to_string_lossy(), &spec.storage)?;
    let meta = store
        .head(&key)
        .await
        .map_err(|e| io_err(e, &spec.storage))?;
    Ok(match (meta.e_tag, meta.version) {
        (Some(tag), _) => tag,
        (None, Some(version)) => version,
        (None, None) => format!("{} {}", meta.size, meta.last_modified),
    })
}
