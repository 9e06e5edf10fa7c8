//! Compiled components cached by content hash, so a plugin is compiled once per
//! machine, not once per start.
//!
//! An entry is `<dir>/<sha256 of the .wasm>-<engine compatibility hash>.cwasm`, written
//! to a temporary file and renamed into place, so a concurrent or killed writer never
//! leaves a half-written entry behind. An entry wasmtime refuses (another version or
//! configuration) is recompiled and replaced.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::Engine;

/// The default cache folder of a command line without `--cache-dir`:
/// `$XDG_CACHE_HOME/dlink-rt/components`, else `$HOME/.cache/dlink-rt/components`;
/// `None` when neither variable is set.
pub fn default_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("dlink-rt").join("components"))
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn engine_tag(engine: &Engine) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("{:016x}", h.finish())
}

/// How a component was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Compiled now (and stored, when a cache folder is set).
    Compiled,
    /// Loaded from the cache folder.
    Cached,
}

/// Compiles `wasm` or loads its compiled form from `dir`.
pub fn load(
    engine: &Engine,
    wasm: &[u8],
    sha256: &str,
    dir: Option<&Path>,
) -> wasmtime::Result<(Component, Origin)> {
    let Some(dir) = dir else {
        return Ok((Component::new(engine, wasm)?, Origin::Compiled));
    };
    let entry = dir.join(format!("{sha256}-{}.cwasm", engine_tag(engine)));
    if entry.is_file() {
        // SAFETY: the entry was written by `Component::serialize` of this same engine
        // configuration (its name carries the compatibility hash) into a folder owned
        // by the user running dlink-rt; wasmtime still checks the header and refuses
        // an artifact of another version or configuration.
        match unsafe { Component::deserialize_file(engine, &entry) } {
            Ok(c) => return Ok((c, Origin::Cached)),
            Err(e) => tracing::warn!(
                cache_entry = %entry.display(),
                "ignoring unusable cache entry {}: {e:#}",
                entry.display()
            ),
        }
    }
    let component = Component::new(engine, wasm)?;
    if let Err(e) = store(&component, dir, &entry) {
        tracing::warn!(
            cache_entry = %entry.display(),
            "cannot write component cache {}: {e:#}",
            entry.display()
        );
    }
    Ok((component, Origin::Compiled))
}

fn store(component: &Component, dir: &Path, entry: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let bytes = component.serialize()?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        entry
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("entry"),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, entry)?;
    Ok(())
}
