//! When a link-table commit cleans the table's expired log entries.

use deltalake::kernel::transaction::CommitProperties;
use deltalake::table::config::TablePropertiesExt;
use deltalake::DeltaTable;

/// `props` with the cleanup of expired log entries only on the commit that writes a
/// Delta checkpoint (every `delta.checkpointInterval` commits), as Delta's own writers
/// do. deltalake's default cleans at every commit, and its cleanup lists the whole
/// `_delta_log` (every entry within `delta.logRetentionDuration`, 30 days by default),
/// so a link table committing a batch every few seconds paid, at every batch, a listing
/// of every batch it had committed in a month: a commit whose cost grew with the
/// table's history (`dlink-bench --commit`: 12 ms of a 27 ms commit after 1,000 batches).
///
/// Only the commit's expected version decides: a commit that lands later than
/// expected (a retry after a conflict) leaves the cleanup to the next checkpoint, and
/// `dlink-rt compact`'s commits clean as deltalake does.
pub(crate) fn cleanup_at_checkpoints(
    table: &DeltaTable,
    props: CommitProperties,
) -> CommitProperties {
    let Ok(state) = table.snapshot() else {
        return props;
    };
    let config = state.table_config();
    let next = table.version().map_or(0, |v| v + 1);
    let checkpoint = (next + 1).is_multiple_of(config.checkpoint_interval().get());
    props.with_cleanup_expired_logs(Some(checkpoint && config.enable_expired_log_cleanup()))
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use deltalake::arrow::array::Int64Array;

    use crate::affected::AffectedKeys;
    use crate::config::{LinkMode, Pipeline};
    use crate::sink::{Commit, LinkTable, UpstreamRange};

    /// Keys `base + i * stride` for `i < n`, caused by upstream `u` (the batches of
    /// dlink-bench's `commit` module, which the host's unit tests cannot use).
    fn keys(n: usize, base: i64, stride: i64) -> AffectedKeys {
        let cause: Arc<[String]> = Arc::from(vec!["u".to_string()]);
        AffectedKeys {
            columns: vec![Arc::new(Int64Array::from_iter_values(
                (0..n as i64).map(|i| base + i * stride),
            ))],
            upstreams: vec![cause; n],
            change_ts: vec![Some(0); n],
        }
    }

    /// Commits `k` as batch `batch_id`, which read version `batch_id - 1` of `u`.
    async fn commit_keys(
        link: &mut LinkTable,
        batch_id: i64,
        k: &AffectedKeys,
    ) -> Result<i64, String> {
        let ranges = [UpstreamRange {
            name: "u".into(),
            range: Some((batch_id - 1, batch_id - 1)),
            pinned: batch_id - 1,
            change_rows: k.len(),
            table_id: String::new(),
        }];
        let keys = crate::affected::Keys::Memory(k.clone());
        link.commit(Commit {
            batch_id,
            keys: &keys,
            upstreams: &ranges,
            lookups: &[],
            plugin_path: "bench".into(),
            plugin_sha256: String::new(),
            plugin_active_since: 1,
            plugin_contract: None,
            elapsed_ms: 0,
        })
        .await
        .map_err(|e| e.to_string())
    }

    /// A pipeline file in `dir` over upstream `u`, with `extra` lines in its `[link]`
    /// section.
    fn pipeline_with(dir: &Path, mode: LinkMode, extra: &str) -> Result<Pipeline, String> {
        let err = |e: std::io::Error| format!("{}: {e}", dir.display());
        std::fs::create_dir_all(dir).map_err(err)?;
        std::fs::write(dir.join("upstreams.toml"), "[upstreams.u]\nuri = \"u\"\n").map_err(err)?;
        let file = dir.join("p.toml");
        std::fs::write(
            &file,
            format!(
                "name = \"p\"\nupstreams = [\"u\"]\n\n[sql]\nquery = \"SELECT 1 AS k\"\n\n\
                 [link]\nuri = \"link\"\nmode = \"{mode}\"\nkeys = [{{ name = \"k\", type = \"long\" }}]\n{extra}"
            ),
        )
        .map_err(err)?;
        Pipeline::load(&file).map_err(|e| e.to_string())
    }

    /// Commits batch `batch_id` (one key); returns the link table's version after it.
    async fn commit(link: &mut LinkTable, batch_id: i64) -> i64 {
        commit_keys(link, batch_id, &keys(1, batch_id, 1))
            .await
            .unwrap();
        link.table().and_then(|t| t.version()).unwrap() as i64
    }

    /// A change-log pipeline in `dir` (no merge of small files), its link table's
    /// path, and the link table opened with its checkpoint read.
    async fn new_link(dir: &Path) -> (crate::config::Pipeline, std::path::PathBuf, LinkTable) {
        let p = pipeline_with(dir, LinkMode::Log, "merge_small_files = 0\n").unwrap();
        let mut link = LinkTable::open(&p).await.unwrap();
        link.checkpoint().await.unwrap();
        (p, dir.join("link"), link)
    }

    fn first_entry_exists(link: &Path) -> bool {
        link.join("_delta_log/00000000000000000000.json").exists()
    }

    /// Expired entries are removed by the next checkpoint's commit, not by the first
    /// commit after they expire (deltalake's default, which lists the log every time).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn expired_log_entries_are_cleaned_at_the_next_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (p, path, mut link) = new_link(dir.path()).await;
        assert_eq!(commit(&mut link, 1).await, 1);
        let url = deltalake::ensure_table_uri(path.to_str().unwrap()).unwrap();
        deltalake::open_table(url)
            .await
            .unwrap()
            .set_tbl_properties()
            .with_properties(
                [
                    ("delta.checkpointInterval", "4"),
                    ("delta.logRetentionDuration", "interval 2 seconds"),
                ]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
            )
            .await
            .unwrap();
        let mut link = LinkTable::open(&p).await.unwrap();
        link.checkpoint().await.unwrap();
        // Version 3 is a checkpoint; nothing has expired yet.
        assert_eq!(commit(&mut link, 2).await, 3);
        assert!(path
            .join("_delta_log/00000000000000000003.checkpoint.parquet")
            .exists());
        assert!(first_entry_exists(&path));
        std::thread::sleep(std::time::Duration::from_millis(2500));
        // Versions 0-2 have expired; version 4 is no checkpoint, so it lists nothing.
        assert_eq!(commit(&mut link, 3).await, 4);
        assert!(
            first_entry_exists(&path),
            "a commit without a checkpoint cleaned the log"
        );
        for b in 4..=6 {
            commit(&mut link, b).await;
        }
        // Version 7 wrote the next checkpoint and cleaned what expired before it.
        assert!(path
            .join("_delta_log/00000000000000000007.checkpoint.parquet")
            .exists());
        assert!(
            !first_entry_exists(&path),
            "the checkpoint's commit left the expired entries"
        );
        // The checkpoint the table is read from survives, and so does the batch.
        let mut link = LinkTable::open(&p).await.unwrap();
        assert_eq!(link.checkpoint().await.unwrap().batch_id, 6);
    }

    /// The parquet files in a table's folder.
    fn data_files(table: &Path) -> usize {
        std::fs::read_dir(table)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "parquet"))
            })
            .count()
    }

    /// A commit that fails after its data file is written (here another writer's
    /// entry, unreadable, holds the version) removes that file: retries must not leave
    /// one file each for a VACUUM that only takes them past the retention.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_append_leaves_no_data_file() {
        let dir = tempfile::tempdir().unwrap();
        let (_, path, mut link) = new_link(dir.path()).await;
        let v = commit(&mut link, 1).await;
        let before = data_files(&path);
        assert_eq!(before, 1);
        std::fs::write(
            path.join(format!("_delta_log/{:020}.json", v + 1)),
            b"not json\n",
        )
        .unwrap();
        let r = commit_keys(&mut link, 2, &keys(1, 2, 1)).await;
        assert!(r.is_err(), "the commit failed");
        assert_eq!(data_files(&path), before, "its data file was removed");
    }
}
