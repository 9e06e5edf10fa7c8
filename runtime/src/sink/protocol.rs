//! The link-table protocol, without IO: the application ids a batch's commit
//! carries and how the checkpoint moves (the commit metadata is `meta.rs`).
//! [`super::LinkTable`] does the IO.

use std::collections::BTreeMap;

use deltalake::kernel::Transaction;

/// `dlink_batch_id`: the batch that last reported the key.
pub const BATCH_ID: &str = "dlink_batch_id";
/// `dlink_upstreams`: names of the upstreams whose changes caused the key.
pub const UPSTREAMS: &str = "dlink_upstreams";
/// `dlink_change_ts`: newest upstream commit timestamp among the causes.
pub const CHANGE_TS: &str = "dlink_change_ts";
/// `dlink_updated_at`: when the batch was committed.
pub const UPDATED_AT: &str = "dlink_updated_at";

/// The size the change log's small files are merged up to after a commit (8 MiB).
pub const SMALL_FILE: u64 = 8 << 20;

/// How a link table's description records its [`LinkMode`] (`dlink.link.mode=log`).
pub const MODE_PROPERTY: &str = "dlink.link.mode";

/// The application id of a pipeline's batches.
pub fn app_id(pipeline: &str) -> String {
    format!("dlink-rt:{pipeline}")
}

/// The application id of a change log's retention mark: every batch up to its version
/// was removed by `dlink-rt compact`.
pub fn retention_app_id(pipeline: &str) -> String {
    format!("dlink-retention:{pipeline}")
}

/// The application id of a pipeline's progress on one upstream.
pub fn upstream_app_id(pipeline: &str, upstream: &str) -> String {
    format!("dlink-rt:{pipeline}:{upstream}")
}

/// The application id that records which table an upstream was when its versions
/// were read: its version is [`table_identity`] of the table's `metaData.id`.
pub fn table_id_app_id(pipeline: &str, upstream: &str) -> String {
    format!("dlink-table-id:{pipeline}:{upstream}")
}

/// A table id (`metaData.id`) as a transaction version: 63 bits of its SHA-256, at
/// least 1 ([`UNKNOWN_TABLE`] means none recorded: a reset, or a link table written
/// before identities were recorded).
pub fn table_identity(table_id: &str) -> i64 {
    use sha2::Digest;
    let d = sha2::Sha256::digest(table_id.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    ((u64::from_be_bytes(b) >> 1) as i64).max(1)
}

/// The recorded identity that checks nothing (see [`table_identity`]).
pub const UNKNOWN_TABLE: i64 = 0;

/// Where a pipeline stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// Last committed batch id; 0 when none.
    pub batch_id: i64,
    /// Last version done per upstream; absent when never read.
    pub done: BTreeMap<String, i64>,
    /// The [`table_identity`] of each upstream as it was read; absent or
    /// [`UNKNOWN_TABLE`] when none is recorded (checked from the next batch on).
    pub tables: BTreeMap<String, i64>,
}

impl Checkpoint {
    /// Whether the table `table_id` can be the one `upstream` was read from: the same
    /// identity, or none recorded.
    pub fn same_table(&self, upstream: &str, table_id: &str) -> bool {
        match self.tables.get(upstream) {
            None | Some(&UNKNOWN_TABLE) => true,
            Some(recorded) => table_id.is_empty() || *recorded == table_identity(table_id),
        }
    }
}

/// One upstream's part of a batch, for the commit metadata.
#[derive(Debug, Clone)]
pub struct UpstreamRange {
    pub name: String,
    /// `None` when the upstream had no new version in the batch.
    pub range: Option<(i64, i64)>,
    /// The version lookups read (the batch's pinned version).
    pub pinned: i64,
    pub change_rows: usize,
    /// The table's `metaData.id` at the batch's end (empty when unknown).
    pub table_id: String,
}

/// Everything one batch commits.
pub struct Commit<'a> {
    pub batch_id: i64,
    /// The batch's distinct keys (in memory or spilled to local disk).
    pub keys: &'a crate::affected::Keys,
    pub upstreams: &'a [UpstreamRange],
    /// Lookup-only tables and the versions they were read at.
    pub lookups: &'a [(String, i64)],
    pub plugin_path: String,
    pub plugin_sha256: String,
    /// The batch at which this plugin file took effect in the running process.
    pub plugin_active_since: i64,
    /// The contract the plugin speaks (none for a SQL derivation).
    pub plugin_contract: Option<crate::plugin::Contract>,
    /// The batch's time before its commit (plan, read, derive), in milliseconds.
    pub elapsed_ms: u64,
}

/// The checkpoint after committing `c` on `held`: the batch id moves to `c`'s, each
/// upstream with a range to the range's end. `Err(found)` when `held` is not the batch
/// before (another run committed `found`).
pub(crate) fn after_batch(held: &Checkpoint, c: &Commit<'_>) -> Result<Checkpoint, i64> {
    if held.batch_id != c.batch_id - 1 {
        return Err(held.batch_id);
    }
    let mut next = held.clone();
    next.batch_id = c.batch_id;
    for u in c.upstreams {
        if let Some((_, end)) = u.range {
            next.done.insert(u.name.clone(), end);
        }
        if !u.table_id.is_empty() {
            next.tables
                .insert(u.name.clone(), table_identity(&u.table_id));
        }
    }
    Ok(next)
}

/// The application transactions of a batch's commit: the pipeline's batch id, the
/// last version done of each upstream read in the batch, and each upstream's table
/// identity.
pub(crate) fn batch_transactions(pipeline: &str, c: &Commit<'_>) -> Vec<Transaction> {
    std::iter::once(Transaction::new(app_id(pipeline), c.batch_id))
        .chain(c.upstreams.iter().filter_map(|u| {
            u.range
                .map(|(_, end)| Transaction::new(upstream_app_id(pipeline, &u.name), end))
        }))
        .chain(
            c.upstreams
                .iter()
                .filter(|u| !u.table_id.is_empty())
                .map(|u| {
                    Transaction::new(
                        table_id_app_id(pipeline, &u.name),
                        table_identity(&u.table_id),
                    )
                }),
        )
        .collect()
}

/// A move of one upstream's checkpoint (`dlink-rt reset`).
pub(crate) struct Reset<'a> {
    pub upstream: &'a str,
    /// The version the next run reads first.
    pub next_version: i64,
    pub by: &'a str,
    pub reason: Option<&'a str>,
}

impl Reset<'_> {
    /// The pipeline's own txn is repeated (unchanged) so that a batch committed
    /// concurrently conflicts with the reset instead of silently overwriting it. The
    /// upstream's recorded table identity is cleared: a reset is the way past a
    /// replaced table, and the next batch records the table it reads.
    pub(crate) fn transactions(&self, pipeline: &str, cp: &Checkpoint) -> Vec<Transaction> {
        vec![
            Transaction::new(app_id(pipeline), cp.batch_id),
            Transaction::new(
                upstream_app_id(pipeline, self.upstream),
                self.next_version - 1,
            ),
            Transaction::new(table_id_app_id(pipeline, self.upstream), UNKNOWN_TABLE),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LinkMode;
    use crate::sink::meta::batch_metadata;
    use chrono::DateTime;
    use serde_json::{json, Value};

    fn keys() -> crate::affected::Keys {
        crate::affected::AffectedKeys {
            columns: Vec::new(),
            upstreams: Vec::new(),
            change_ts: Vec::new(),
        }
        .into()
    }

    fn ranges() -> Vec<UpstreamRange> {
        vec![
            UpstreamRange {
                name: "a".into(),
                range: Some((3, 5)),
                pinned: 5,
                change_rows: 7,
                table_id: "id-a".into(),
            },
            UpstreamRange {
                name: "b".into(),
                range: None,
                pinned: 2,
                change_rows: 0,
                table_id: String::new(),
            },
        ]
    }

    fn commit<'a>(
        k: &'a crate::affected::Keys,
        ups: &'a [UpstreamRange],
        batch_id: i64,
    ) -> Commit<'a> {
        Commit {
            batch_id,
            keys: k,
            upstreams: ups,
            lookups: &[],
            plugin_path: "p.wasm".into(),
            plugin_sha256: "ab".into(),
            plugin_active_since: 1,
            plugin_contract: Some(crate::plugin::Contract::V0_2),
            elapsed_ms: 0,
        }
    }

    #[test]
    fn a_batch_moves_the_checkpoint_of_the_upstreams_it_read() {
        let (k, ups) = (keys(), ranges());
        let held = Checkpoint {
            batch_id: 4,
            done: BTreeMap::from([("a".to_string(), 2), ("b".to_string(), 2)]),
            tables: BTreeMap::new(),
        };
        let next = after_batch(&held, &commit(&k, &ups, 5)).unwrap();
        assert_eq!(next.batch_id, 5);
        assert_eq!(next.done["a"], 5);
        assert_eq!(next.done["b"], 2, "no range: unchanged");
        assert!(next.same_table("a", "id-a"));
        assert!(!next.same_table("a", "id-other"), "a replaced table");
        assert!(
            next.same_table("b", "anything"),
            "none recorded: not checked"
        );
        // Not the next batch: another run's commit is what the link table holds.
        assert_eq!(after_batch(&held, &commit(&k, &ups, 7)), Err(4));
    }

    #[test]
    fn a_batch_carries_its_id_and_each_read_upstreams_end() {
        let (k, ups) = (keys(), ranges());
        let t = batch_transactions("p", &commit(&k, &ups, 5));
        let got: Vec<(String, i64)> = t.iter().map(|t| (t.app_id.clone(), t.version)).collect();
        assert_eq!(
            got,
            vec![
                ("dlink-rt:p".to_string(), 5),
                ("dlink-rt:p:a".to_string(), 5),
                ("dlink-table-id:p:a".to_string(), table_identity("id-a")),
            ]
        );
        let m = batch_metadata("p", LinkMode::Log, &commit(&k, &ups, 5));
        assert_eq!(m["upstreams"]["a"]["start_version"], 3);
        assert_eq!(m["upstreams"]["b"]["start_version"], Value::Null);
        assert_eq!(m["upstreams"]["b"]["pinned_version"], 2);
        assert_eq!(m["link_mode"], "log");
    }

    #[test]
    fn a_reset_names_what_it_skips() {
        let cp = Checkpoint {
            batch_id: 9,
            done: BTreeMap::from([("a".to_string(), 4)]),
            tables: BTreeMap::from([("a".to_string(), table_identity("old"))]),
        };
        let r = Reset {
            upstream: "a",
            next_version: 8,
            by: "ops",
            reason: Some("vacuumed"),
        };
        let m = r.metadata("p", &cp, DateTime::UNIX_EPOCH);
        assert_eq!(m["reset"]["skipped_versions"], json!([5, 7]));
        assert_eq!(m["batch_id"], 9);
        let t = r.transactions("p", &cp);
        assert_eq!((t[0].version, t[1].version), (9, 7));
        assert_eq!(t[2].app_id, "dlink-table-id:p:a");
        assert_eq!(
            t[2].version, UNKNOWN_TABLE,
            "a reset clears the table identity"
        );
    }
}
