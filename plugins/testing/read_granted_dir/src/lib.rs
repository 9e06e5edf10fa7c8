//! Test plugin for granted folders (`[plugin.read_dirs]`). Config:
//! - `dir` (default `reference`) and `file`: `derive` reads `/<dir>/<file>`, one
//!   integer key per line, and records each key as caused by the first upstream.
//! - `outside` (optional, a list of paths): after the granted read, `derive` tries to
//!   read each of these paths and fails the batch with every outcome, `<path>: denied
//!   (<error>)` or `<path>: READ SUCCEEDED (<first line>)`.
//! - `write` (optional, a path): tries to create that file too and reports `write
//!   <path>: denied (<error>)` or `write <path>: SUCCEEDED`.

use dlink_plugin_sdk::{export_pipeline, Batch, Error, Keys, Pipeline, PipelineInfo};

#[derive(serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Config {
    dir: String,
    file: Option<String>,
    outside: Vec<String>,
    write: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            dir: "reference".into(),
            file: None,
            outside: Vec::new(),
            write: None,
        }
    }
}

struct ReadGrantedDir(Config);

impl Pipeline for ReadGrantedDir {
    type Config = Config;

    fn init(config: Config, _pipeline: &PipelineInfo) -> Result<Self, Error> {
        if config.file.is_none() {
            return Err("read_granted_dir: config 'file' is missing".into());
        }
        Ok(ReadGrantedDir(config))
    }

    fn derive(&mut self, batch: &Batch, keys: &mut Keys) -> Result<(), Error> {
        let config = &self.0;
        let file = config.file.as_deref().unwrap_or_default();
        let path = format!("/{}/{file}", config.dir);
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
        for p in &config.outside {
            outcomes.push(match std::fs::read_to_string(p) {
                Ok(t) => format!("{p}: READ SUCCEEDED ({})", t.lines().next().unwrap_or("")),
                Err(e) => format!("{p}: denied ({e})"),
            });
        }
        if let Some(target) = &config.write {
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
            )
            .into())
        }
    }
}

export_pipeline!(ReadGrantedDir);
