//! Test plugin for granted folders (`[plugin.read_dirs]`). Config:
//! - `dir` (default `reference`) and `file`: `derive` reads `/<dir>/<file>`, one
//!   integer key per line, and records each key as caused by the first upstream.
//! - `outside` (optional, a list of paths): after the granted read, `derive` tries to
//!   read each of these paths and fails the batch with every outcome, `<path>: denied
//!   (<error>)` or `<path>: READ SUCCEEDED (<first line>)`.
//! - `write` (optional, a path): tries to create that file too and reports `write
//!   <path>: denied (<error>)` or `write <path>: SUCCEEDED`.

use dlink_plugin_sdk::serde_json::Value;
use dlink_plugin_sdk::{export_pipeline, Batch, KeyColumn, Keys, Pipeline};

struct ReadGrantedDir;

impl Pipeline for ReadGrantedDir {
    const KEYS: &'static [KeyColumn] = &[KeyColumn::i64("diasng_id")];

    fn derive(batch: &Batch, keys: &mut Keys) -> Result<(), String> {
        let config = batch.config();
        let dir = config.str_or("dir", "reference")?;
        let file = config
            .str("file")?
            .ok_or("read_granted_dir: config 'file' is missing")?;
        let path = format!("/{dir}/{file}");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("read_granted_dir: could not read {path}: {e}"))?;
        let upstream = batch
            .upstream_names()
            .next()
            .ok_or("read_granted_dir: the batch has no upstream")?
            .to_string();
        let mut count = 0;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let key: i64 = line
                .parse()
                .map_err(|e| format!("read_granted_dir: {path}: '{line}' is not a key: {e}"))?;
            keys.add(&upstream, None, key)?;
            count += 1;
        }

        let mut outcomes = Vec::new();
        if let Some(outside) = config.get("outside") {
            let Value::Array(paths) = outside else {
                return Err(format!(
                    "read_granted_dir: config 'outside' must be a list, got {outside}"
                ));
            };
            for p in paths {
                let p = p
                    .as_str()
                    .ok_or("read_granted_dir: 'outside' holds a non-string")?;
                outcomes.push(match std::fs::read_to_string(p) {
                    Ok(t) => format!("{p}: READ SUCCEEDED ({})", t.lines().next().unwrap_or("")),
                    Err(e) => format!("{p}: denied ({e})"),
                });
            }
        }
        if let Some(target) = config.str("write")? {
            outcomes.push(
                match std::fs::write(target, b"written by read_granted_dir\n") {
                    Ok(()) => format!("write {target}: SUCCEEDED"),
                    Err(e) => format!("write {target}: denied ({e})"),
                },
            );
        }
        if outcomes.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "read_granted_dir: read {count} key(s) from {path}; outside the grant: {}",
                outcomes.join("; ")
            ))
        }
    }
}

export_pipeline!(ReadGrantedDir);
