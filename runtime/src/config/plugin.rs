//! The `[plugin]` section of a pipeline file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::load::{is_identifier, resolve_location};
use super::{Limits, PluginSpec, Source};
use crate::config::{ConfigError, Result};
use crate::storage::StorageOptions;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct PluginSection {
    #[schemars(with = "String")]
    pub(super) path: Spanned<String>,
    #[serde(default)]
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    config: toml::Table,
    #[serde(default)]
    limits: Limits,
    /// `name = "path"`: folders the plugin may read at `/<name>`. Default none.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    read_dirs: BTreeMap<String, Spanned<String>>,
    /// Object-store options of a plugin in a bucket, over the catalog's `[storage]`.
    #[serde(default)]
    storage: BTreeMap<String, String>,
}

/// Resolves the section's paths against the pipeline file and checks them.
pub(super) fn resolve(
    src: &Source,
    section: &PluginSection,
    catalog_storage: &StorageOptions,
    problems: &mut Vec<String>,
) -> Result<PluginSpec> {
    let location = resolve_location(&src.dir(), section.path.get_ref());
    let remote = crate::storage::is_remote(&location);
    let path = PathBuf::from(location);
    // A plugin in a bucket is fetched when a run (or `validate`) loads it.
    if !remote && !path.is_file() {
        problems.push(src.at(
            &section.path,
            format!(
                "plugin file {} does not exist; build the plugins (`make build`) or fix the path",
                path.display()
            ),
        ));
    }
    let config_json = serde_json::to_string(&section.config)
        .map_err(|e| ConfigError::one(format!("{}: [plugin.config]: {e}", src.path.display())))?;
    let limits = section.limits;
    let mut read_dirs = Vec::new();
    for (name, dir) in &section.read_dirs {
        let abs = PathBuf::from(resolve_location(&src.dir(), dir.get_ref()));
        if !is_identifier(name) {
            problems.push(src.at(
                dir,
                format!("read_dirs name '{name}' must be lower-case letters, digits and `_`"),
            ));
        } else if !abs.is_dir() {
            problems.push(src.at(
                dir,
                format!("read_dirs '{name}': {} is not a folder", abs.display()),
            ));
        }
        read_dirs.push((name.clone(), abs));
    }
    if limits.timeout_ms == 0
        || limits.memory_mb == 0
        || limits.max_output_mb == 0
        || limits.max_lookup_rows == 0
    {
        problems.push(format!(
            "{}: [plugin.limits] values must be more than 0",
            src.path.display()
        ));
    }
    Ok(PluginSpec {
        path,
        config_json,
        limits,
        read_dirs,
        storage: catalog_storage.merged(&StorageOptions::new(section.storage.clone())),
    })
}
