//! What an upstream's commit log says about whether a range of versions can be read
//! as a change feed. Pure protocol logic over commit JSON; the IO is in the parent.
//!
//! A version is unreadable when its log entry is gone (log cleanup), when the Change
//! Data Feed is off at that version, or when the table was replaced (a `metaData`
//! action with another table id: `CREATE OR REPLACE`, or a new table at the path).

use serde_json::Value;

/// The table property that turns the Change Data Feed on.
pub const CDF_PROPERTY: &str = "delta.enableChangeDataFeed";

/// What matters of a table's metadata at some version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableState {
    /// `metaData.id`: changes when the table is replaced.
    pub id: String,
    pub cdf_enabled: bool,
}

impl TableState {
    /// From a `metaData.configuration` map and id.
    pub fn new(id: &str, configuration: impl Fn(&str) -> Option<String>) -> Self {
        TableState {
            id: id.to_string(),
            cdf_enabled: configuration(CDF_PROPERTY)
                .is_some_and(|v| v.eq_ignore_ascii_case("true")),
        }
    }
}

impl TableState {
    /// From a `metaData` action's JSON (`id`, `configuration`).
    pub fn from_json(m: &Value) -> Self {
        let id = m.get("id").and_then(Value::as_str).unwrap_or_default();
        let conf = m.get("configuration");
        TableState::new(id, |k| {
            conf.and_then(|c| c.get(k))
                .and_then(Value::as_str)
                .map(String::from)
        })
    }
}

/// Why a version cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unreadable {
    /// The Change Data Feed is off at this version.
    CdfDisabled,
    /// The table was replaced at this version (new table id).
    Replaced { old_id: String, new_id: String },
    /// The log entry of this version was removed (log retention / cleanup).
    LogMissing,
    /// Data or change files of this version were removed (VACUUM).
    FilesMissing(String),
    /// The commit's JSON cannot be parsed.
    Corrupt(String),
    /// The log entry holds no Delta action: an empty file (a truncated or interrupted
    /// write) or lines that are not actions. Reading past it would skip the version's
    /// changes without a word.
    NoActions { bytes: usize },
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unreadable::CdfDisabled => write!(
                f,
                "the Change Data Feed is off at this version ({CDF_PROPERTY} is not true), so its updates and deletes cannot be read"
            ),
            Unreadable::Replaced { old_id, new_id } => write!(
                f,
                "the table was replaced at this version (table id {old_id} became {new_id}); its earlier changes no longer relate to the new table"
            ),
            Unreadable::LogMissing => write!(f, "its log entry was removed (log retention / cleanup)"),
            Unreadable::FilesMissing(m) => write!(f, "its data or change files were removed (VACUUM): {m}"),
            Unreadable::Corrupt(m) => write!(f, "its log entry cannot be parsed: {m}"),
            Unreadable::NoActions { bytes: 0 } => write!(
                f,
                "its log entry is empty (0 bytes: a truncated or interrupted write), so its changes cannot be known"
            ),
            Unreadable::NoActions { bytes } => write!(
                f,
                "its log entry ({bytes} bytes) holds no Delta action (add, remove, cdc, metaData, protocol, txn, commitInfo), so its changes cannot be known"
            ),
        }
    }
}

/// The actions of the Delta protocol a commit is made of.
const ACTIONS: [&str; 10] = [
    "add",
    "remove",
    "cdc",
    "metaData",
    "protocol",
    "txn",
    "commitInfo",
    "domainMetadata",
    "checkpointMetadata",
    "sidecar",
];

/// The `metaData` action of a commit, if any, as a state. A commit that cannot be
/// parsed, or holds no action at all (an empty file), is unreadable: every commit
/// of a Delta table holds at least one action.
pub fn metadata_of(commit: &[u8]) -> Result<Option<TableState>, Unreadable> {
    let mut found = None;
    let mut actions = 0;
    for (n, line) in commit.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let v: Value = serde_json::from_slice(line)
            .map_err(|e| Unreadable::Corrupt(format!("line {}: {e}", n + 1)))?;
        let Some(obj) = v.as_object() else {
            return Err(Unreadable::Corrupt(format!(
                "line {}: not a JSON object",
                n + 1
            )));
        };
        actions += ACTIONS.iter().filter(|a| obj.contains_key(**a)).count();
        if let Some(m) = obj.get("metaData") {
            found = Some(TableState::from_json(m));
        }
    }
    if actions == 0 {
        return Err(Unreadable::NoActions {
            bytes: commit.len(),
        });
    }
    Ok(found)
}

/// The paths (as the log writes them: relative to the table, percent-encoded) of the
/// files a commit's change feed is read from: its `cdc` files, else its `add` and
/// `remove` files that change data (not a compaction's). Absolute paths (shallow
/// clones) and unparsable lines are left out: this names files, the read itself
/// reports the rest.
pub fn files_of(commit: &[u8]) -> Vec<String> {
    let mut cdc = Vec::new();
    let mut data = Vec::new();
    for line in commit.split(|b| *b == b'\n') {
        let Ok(v) = serde_json::from_slice::<Value>(line) else {
            continue;
        };
        for action in ["cdc", "add", "remove"] {
            let Some(a) = v.get(action) else { continue };
            let Some(path) = a.get("path").and_then(Value::as_str) else {
                continue;
            };
            let changes_data = a.get("dataChange").and_then(Value::as_bool) != Some(false);
            if path.contains("://") || !(action == "cdc" || changes_data) {
                continue;
            }
            let into = if action == "cdc" { &mut cdc } else { &mut data };
            into.push(path.to_string());
        }
    }
    if cdc.is_empty() {
        data
    } else {
        cdc
    }
}

/// Applies the commit of `version` to `state` (the state before it) and says whether
/// the version can be read as a change feed.
pub fn step(state: &mut TableState, commit: &[u8]) -> Result<(), Unreadable> {
    if let Some(next) = metadata_of(commit)? {
        if !state.id.is_empty() && !next.id.is_empty() && next.id != state.id {
            return Err(Unreadable::Replaced {
                old_id: state.id.clone(),
                new_id: next.id,
            });
        }
        *state = next;
    }
    if state.cdf_enabled {
        Ok(())
    } else {
        Err(Unreadable::CdfDisabled)
    }
}

/// The `commitInfo` action of a commit entry.
pub fn commit_info(commit: &[u8]) -> Option<Value> {
    commit
        .split(|b| *b == b'\n')
        .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        .filter_map(|l| serde_json::from_slice::<Value>(l).ok())
        .find_map(|mut v| v.get_mut("commitInfo").map(Value::take))
}

/// A commit's time in milliseconds from its `commitInfo`: the in-commit timestamp
/// when the table has them, else the writer's `timestamp`.
pub fn commit_millis(info: &Value) -> Option<i64> {
    info.get("inCommitTimestamp")
        .and_then(Value::as_i64)
        .or_else(|| info.get("timestamp").and_then(Value::as_i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: &str, cdf: Option<&str>) -> String {
        let conf = match cdf {
            Some(v) => format!(r#"{{"{CDF_PROPERTY}":"{v}"}}"#),
            None => "{}".into(),
        };
        format!(
            "{{\"commitInfo\":{{\"operation\":\"SET TBLPROPERTIES\"}}}}\n{{\"metaData\":{{\"id\":\"{id}\",\"format\":{{\"provider\":\"parquet\"}},\"schemaString\":\"{{}}\",\"partitionColumns\":[],\"configuration\":{conf}}}}}\n"
        )
    }

    const ADD: &str = "{\"add\":{\"path\":\"a.parquet\",\"size\":1,\"dataChange\":true}}\n";

    fn enabled(id: &str) -> TableState {
        TableState {
            id: id.into(),
            cdf_enabled: true,
        }
    }

    #[test]
    fn plain_commit_keeps_an_enabled_feed_readable() {
        let mut s = enabled("a");
        assert_eq!(step(&mut s, ADD.as_bytes()), Ok(()));
        assert_eq!(s, enabled("a"));
    }

    #[test]
    fn cdf_disabled_midstream_is_unreadable_from_that_version_on() {
        let mut s = enabled("a");
        assert_eq!(
            step(&mut s, meta("a", Some("false")).as_bytes()),
            Err(Unreadable::CdfDisabled)
        );
        assert_eq!(
            step(&mut s, ADD.as_bytes()),
            Err(Unreadable::CdfDisabled),
            "stays off"
        );
        assert_eq!(
            step(&mut s, meta("a", Some("TRUE")).as_bytes()),
            Ok(()),
            "back on"
        );
    }

    #[test]
    fn property_removed_means_off() {
        let mut s = enabled("a");
        assert_eq!(
            step(&mut s, meta("a", None).as_bytes()),
            Err(Unreadable::CdfDisabled)
        );
    }

    #[test]
    fn new_table_id_is_a_replacement() {
        let mut s = enabled("a");
        let e = step(&mut s, meta("b", Some("true")).as_bytes()).unwrap_err();
        assert_eq!(
            e,
            Unreadable::Replaced {
                old_id: "a".into(),
                new_id: "b".into()
            }
        );
    }

    #[test]
    fn files_of_a_commit_are_its_cdc_files_else_its_data_files() {
        let cdc =
            "{\"add\":{\"path\":\"a.parquet\"}}\n{\"cdc\":{\"path\":\"_change_data/c.parquet\"}}\n";
        assert_eq!(files_of(cdc.as_bytes()), vec!["_change_data/c.parquet"]);
        let plain = format!("{ADD}{{\"remove\":{{\"path\":\"b%20c.parquet\"}}}}\n{{\"add\":{{\"path\":\"s3://x/y.parquet\"}}}}\n");
        assert_eq!(
            files_of(plain.as_bytes()),
            vec!["a.parquet", "b%20c.parquet"]
        );
        let compaction = "{\"add\":{\"path\":\"big.parquet\",\"dataChange\":false}}\n{\"remove\":{\"path\":\"small.parquet\",\"dataChange\":false}}\n";
        assert!(files_of(compaction.as_bytes()).is_empty());
        assert!(files_of(b"{not json").is_empty());
    }

    #[test]
    fn an_empty_log_entry_is_unreadable_not_a_version_without_changes() {
        let mut s = enabled("a");
        assert_eq!(step(&mut s, b""), Err(Unreadable::NoActions { bytes: 0 }));
        assert_eq!(
            step(&mut s, b"\n  \n"),
            Err(Unreadable::NoActions { bytes: 4 })
        );
        assert_eq!(
            step(&mut s, b"{\"foo\":1}\n"),
            Err(Unreadable::NoActions { bytes: 10 })
        );
        assert!(matches!(
            step(&mut s, b"[1]\n"),
            Err(Unreadable::Corrupt(_))
        ));
        // A commit of only commitInfo (a writer's empty commit) is a version without
        // changes, and readable.
        assert_eq!(
            step(&mut s, b"{\"commitInfo\":{\"operation\":\"WRITE\"}}\n"),
            Ok(())
        );
    }

    #[test]
    fn garbage_is_corrupt_not_a_panic() {
        let mut s = enabled("a");
        assert!(matches!(
            step(&mut s, b"{not json"),
            Err(Unreadable::Corrupt(_))
        ));
    }
}
