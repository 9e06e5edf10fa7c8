//! The `dlink` commit metadata, written and read here: what each batch read (ranges,
//! pins, row counts, table ids), the plugin it ran, and each reset's skip. `why` and
//! `status` read it back with [`batch_meta`].

use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};

use super::protocol::{Checkpoint, Commit, Reset};
use crate::cdf::history::commit_info;
use crate::config::LinkMode;

/// The `dlink` commit metadata of a batch.
pub(crate) fn batch_metadata(pipeline: &str, mode: LinkMode, c: &Commit<'_>) -> Value {
    let upstreams: Map<String, Value> = c
        .upstreams
        .iter()
        .map(|u| {
            let v = match u.range {
                Some((s, e)) => json!({"start_version": s, "end_version": e, "pinned_version": u.pinned, "change_rows": u.change_rows, "table_id": u.table_id}),
                None => json!({"start_version": null, "end_version": null, "pinned_version": u.pinned, "change_rows": 0, "table_id": u.table_id}),
            };
            (u.name.clone(), v)
        })
        .collect();
    let lookups: Map<String, Value> = c
        .lookups
        .iter()
        .map(|(n, v)| (n.clone(), json!(v)))
        .collect();
    json!({
        "pipeline": pipeline,
        "batch_id": c.batch_id,
        "keys": c.keys.len(),
        "elapsed_ms": c.elapsed_ms,
        "upstreams": upstreams,
        "lookups": lookups,
        "link_mode": mode.as_str(),
        "plugin": {"path": c.plugin_path, "sha256": c.plugin_sha256, "active_since_batch": c.plugin_active_since, "contract": c.plugin_contract.map(|k| k.to_string())},
        "host": HOST,
    })
}

/// What `dlink-rt` writes as `host` in commit metadata.
pub const HOST: &str = concat!("dlink-rt ", env!("CARGO_PKG_VERSION"));

impl Reset<'_> {
    /// The `dlink` commit metadata: what was skipped (or re-read), by whom, when, why.
    pub(crate) fn metadata(&self, pipeline: &str, cp: &Checkpoint, at: DateTime<Utc>) -> Value {
        let previous_next = cp.done.get(self.upstream).map(|d| d + 1);
        json!({
            "pipeline": pipeline,
            "batch_id": cp.batch_id,
            "reset": {
                "upstream": self.upstream,
                "from_next_version": previous_next,
                "to_next_version": self.next_version,
                "skipped_versions": match previous_next {
                    Some(p) if p < self.next_version => json!([p, self.next_version - 1]),
                    _ => Value::Null,
                },
                "by": self.by,
                "at": at.to_rfc3339(),
                "reason": self.reason,
            },
            "host": HOST,
        })
    }
}

/// One upstream's part of a batch as its commit metadata records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRange {
    pub name: String,
    pub range: Option<(i64, i64)>,
    pub pinned: i64,
    pub change_rows: u64,
}

/// A batch's commit metadata (`dlink`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchMeta {
    pub batch_id: i64,
    pub upstreams: Vec<RecordedRange>,
    pub lookups: Vec<(String, i64)>,
    pub plugin_path: Option<String>,
    pub plugin_sha256: Option<String>,
    pub plugin_active_since: Option<i64>,
    /// The plugin's contract, e.g. `dlink:pipeline@0.2.0` (absent before 0.2 hosts).
    pub plugin_contract: Option<String>,
    /// The link table's version of the commit (set by the reader).
    pub link_version: i64,
    /// The batch's distinct keys.
    pub keys: Option<u64>,
    /// The batch's time before its commit (absent before dlink-rt 0.1's history).
    pub elapsed_ms: Option<u64>,
}

/// The batch a link-table commit entry committed, if it is a batch commit (not a reset,
/// a compaction or a consumer's ack).
pub fn batch_meta(commit: &[u8]) -> Option<BatchMeta> {
    let info = commit_info(commit)?;
    let d = info.get("dlink")?;
    if d.get("reset").is_some() {
        return None;
    }
    let batch_id = d.get("batch_id")?.as_i64()?;
    let ups = d.get("upstreams")?.as_object()?;
    let mut upstreams: Vec<RecordedRange> = ups
        .iter()
        .map(|(name, u)| {
            let v = |k: &str| u.get(k).and_then(Value::as_i64);
            RecordedRange {
                name: name.clone(),
                range: v("start_version").zip(v("end_version")),
                pinned: v("pinned_version").unwrap_or(-1),
                change_rows: u.get("change_rows").and_then(Value::as_u64).unwrap_or(0),
            }
        })
        .collect();
    upstreams.sort_by(|a, b| a.name.cmp(&b.name));
    let mut lookups: Vec<(String, i64)> = d
        .get("lookups")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(n, v)| v.as_i64().map(|v| (n.clone(), v)))
                .collect()
        })
        .unwrap_or_default();
    lookups.sort();
    let plugin = d.get("plugin");
    let pget = |k: &str| plugin.and_then(|p| p.get(k));
    Some(BatchMeta {
        batch_id,
        upstreams,
        lookups,
        plugin_path: pget("path").and_then(Value::as_str).map(String::from),
        plugin_sha256: pget("sha256").and_then(Value::as_str).map(String::from),
        plugin_active_since: pget("active_since_batch").and_then(Value::as_i64),
        plugin_contract: pget("contract").and_then(Value::as_str).map(String::from),
        link_version: -1,
        keys: d.get("keys").and_then(Value::as_u64),
        elapsed_ms: d.get("elapsed_ms").and_then(Value::as_u64),
    })
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn why_reads_batch_metadata_and_skips_other_commits() {
        // One action per line, as sink.rs commits a batch.
        let info = serde_json::json!({"commitInfo": {"timestamp": 1, "operation": "WRITE", "dlink": {
            "pipeline": "p", "batch_id": 3, "keys": 2,
            "upstreams": {
                "b": {"start_version": 4, "end_version": 6, "pinned_version": 6, "change_rows": 10},
                "a": {"start_version": null, "end_version": null, "pinned_version": 2, "change_rows": 0},
            },
            "lookups": {"dim": 9}, "link_mode": "log",
            "plugin": {"path": "/p.wasm", "sha256": "abc", "active_since_batch": 1},
            "host": "dlink-rt 0.1.0",
        }}});
        let entry = format!("{{\"txn\":{{\"appId\":\"dlink-rt:p\",\"version\":3}}}}\n{info}\n");
        let m = batch_meta(entry.as_bytes()).unwrap();
        assert_eq!(m.batch_id, 3);
        assert_eq!(
            m.upstreams,
            vec![
                RecordedRange {
                    name: "a".into(),
                    range: None,
                    pinned: 2,
                    change_rows: 0
                },
                RecordedRange {
                    name: "b".into(),
                    range: Some((4, 6)),
                    pinned: 6,
                    change_rows: 10
                },
            ]
        );
        assert_eq!(m.lookups, vec![("dim".to_string(), 9)]);
        assert_eq!(m.plugin_path.as_deref(), Some("/p.wasm"));
        assert_eq!(m.plugin_sha256.as_deref(), Some("abc"));
        assert_eq!(m.plugin_active_since, Some(1));

        let reset =
            br#"{"commitInfo":{"dlink":{"pipeline":"p","batch_id":3,"reset":{"upstream":"a"}}}}"#;
        assert!(batch_meta(reset).is_none());
        let compact = br#"{"commitInfo":{"operation":"OPTIMIZE","dlink":{"compact":"optimize"}}}"#;
        assert!(batch_meta(compact).is_none());
        let ack = br#"{"commitInfo":{"dlink":{"consumer":{"name":"c","to_batch":3}}}}"#;
        assert!(batch_meta(ack).is_none());
        assert!(batch_meta(b"{\"add\":{}}\n").is_none());
        assert!(batch_meta(b"not json").is_none());
    }
}
