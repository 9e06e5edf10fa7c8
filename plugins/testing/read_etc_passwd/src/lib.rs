//! Hostile test plugin: `init` succeeds, `derive` tries to read the host's
//! `/etc/passwd` and to list `/`. It always fails the batch, with an error that makes
//! the outcome visible: `READ /etc/passwd: <first line>` if the sandbox let it read the
//! file, `could not read /etc/passwd: <error>` if not (and likewise for listing `/`).

use dlink_plugin_sdk::{export_pipeline, Batch, Error, Keys, NoConfig, Pipeline, PipelineInfo};

struct ReadEtcPasswd;

impl Pipeline for ReadEtcPasswd {
    type Config = NoConfig;

    fn init(_config: NoConfig, _pipeline: &PipelineInfo) -> Result<Self, Error> {
        Ok(ReadEtcPasswd)
    }

    fn derive(&mut self, _batch: &Batch, _keys: &mut Keys) -> Result<(), Error> {
        let passwd = match std::fs::read_to_string("/etc/passwd") {
            Ok(text) => format!("READ /etc/passwd: {}", text.lines().next().unwrap_or("")),
            Err(e) => format!("could not read /etc/passwd: {e}"),
        };
        let root = match std::fs::read_dir("/") {
            Ok(entries) => format!("LISTED / ({} entries)", entries.count()),
            Err(e) => format!("could not list /: {e}"),
        };
        Err(format!("{passwd}; {root}").into())
    }
}

export_pipeline!(ReadEtcPasswd);
