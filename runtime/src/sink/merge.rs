//! Merging the change log's small files after a commit.

use super::*;

impl LinkTable {
    /// After a committed batch: when the change log holds `merge_small_files` files
    /// smaller than [`SMALL_FILE`], an OPTIMIZE merges them into files of about
    /// [`SMALL_FILE`] (larger files are left alone), in batch order. deltalake re-derives
    /// the table's list of active files after every commit, so a commit costs what the
    /// number of files costs; merging keeps that number, and the commit, bounded as the
    /// log grows. The OPTIMIZE is its own commit with no `txn`, so the checkpoint held
    /// stays valid; a failure is logged and changes nothing (the batch is committed, and
    /// `dlink-rt compact` merges the files later).
    pub(super) async fn merge_small_files(&mut self) {
        if self.mode != LinkMode::Log || self.merge_small_files == 0 {
            return;
        }
        let Some(t) = self.table.as_ref() else {
            return;
        };
        let small = match t.snapshot() {
            Ok(s) => s
                .log_data()
                .iter()
                .filter(|f| f.size() < (SMALL_FILE / 2) as i64)
                .count(),
            Err(_) => return,
        };
        if small < self.merge_small_files {
            return;
        }
        let started = std::time::Instant::now();
        let props = cleanup_at_checkpoints(
            t,
            CommitProperties::default().with_metadata([(
                "dlink".to_string(),
                json!({"compact": "merge_small_files", "host": HOST}),
            )]),
        );
        let target = std::num::NonZeroU64::new(SMALL_FILE).unwrap_or(std::num::NonZeroU64::MIN);
        match t
            .clone()
            .optimize()
            .with_target_size(target)
            .with_commit_properties(props)
            .await
        {
            Ok((merged, m)) => {
                tracing::info!(
                    pipeline = %self.pipeline,
                    files_removed = m.num_files_removed,
                    files_added = m.num_files_added,
                    "{}: merged {} small files of the change log into {} in {} ms",
                    self.pipeline,
                    m.num_files_removed,
                    m.num_files_added,
                    started.elapsed().as_millis()
                );
                self.table = Some(merged);
            }
            Err(e) => tracing::warn!(
                pipeline = %self.pipeline,
                "{}: merging the change log's {small} small files failed (the batch is committed; `dlink-rt compact` merges them): {e}",
                self.pipeline
            ),
        }
    }
}
