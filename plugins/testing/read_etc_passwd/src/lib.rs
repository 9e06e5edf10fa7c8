//! Hostile test plugin: `init` succeeds, `derive` tries to read the host's
//! `/etc/passwd` and to list `/`. It always fails the batch, with an error that makes
//! the outcome visible: `READ /etc/passwd: <first line>` if the sandbox let it read the
//! file, `could not read /etc/passwd: <error>` if not (and likewise for listing `/`).

use dlink_plugin_sdk::{export_pipeline, Batch, KeyColumn, Keys, Pipeline};

struct ReadEtcPasswd;

impl Pipeline for ReadEtcPasswd {
    const KEYS: &'static [KeyColumn] = &[KeyColumn::i64("diasng_id")];

    fn derive(_batch: &Batch, _keys: &mut Keys) -> Result<(), String> {
        let passwd = match std::fs::read_to_string("/etc/passwd") {
            Ok(text) => format!("READ /etc/passwd: {}", text.lines().next().unwrap_or("")),
            Err(e) => format!("could not read /etc/passwd: {e}"),
        };
        let root = match std::fs::read_dir("/") {
            Ok(entries) => format!("LISTED / ({} entries)", entries.count()),
            Err(e) => format!("could not list /: {e}"),
        };
        Err(format!("{passwd}; {root}"))
    }
}

export_pipeline!(ReadEtcPasswd);
