//! The commit layer's error: the link table (the change log) that cannot be written or
//! read, a batch another run committed first, a window retention removed.

use crate::config::Pipeline;
use crate::storage::{Cause, StoreError};

/// Why a link-table operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// Writing or reading the link table failed (retrying may help when
    /// `source.kind()` is `Io`).
    #[error("link table {uri} of pipeline '{pipeline}': {source}")]
    Link {
        pipeline: String,
        uri: String,
        #[source]
        source: StoreError,
    },

    /// The link table disappeared after it held batches (removed or moved while a
    /// pipeline followed it). It is not created again: its batch ids would restart
    /// under every consumer's position.
    #[error(
        "link table {uri} of pipeline '{pipeline}' is gone: it held batch {batch_id} and its log is not there any more. \
         It is not created again while the pipeline runs, as batch ids would restart under every consumer's position. \
         Put it back (the pipeline goes on from its checkpoint), or, to start over from batch 1, stop the pipeline \
         and start it again"
    )]
    Gone {
        pipeline: String,
        uri: String,
        batch_id: i64,
    },

    /// Another run committed the same batch first.
    #[error(
        "pipeline '{pipeline}': batch {batch_id} was committed by another run while this one worked on it \
         (link table now at batch {found}); nothing was written by this run"
    )]
    Concurrent {
        pipeline: String,
        batch_id: i64,
        found: i64,
    },

    /// A window starts before the oldest batch the change log still holds: retention
    /// (`dlink-rt compact`) removed the batches in between.
    #[error(
        "link table {uri} of pipeline '{pipeline}': {reader} reads the batches after batch {}, but batches {first_missing} to {through} \
         were removed by retention (`[link] retain`, `dlink-rt compact`); the oldest batch kept is {}. \
         Their keys cannot be read any more: reprocess the keys from the source if you need them, then {way_out}",
        first_missing - 1, through + 1
    )]
    Expired {
        pipeline: String,
        uri: String,
        /// `consumer 'a'` or `--since-batch 3`.
        reader: String,
        /// The first batch the reader needs that is gone.
        first_missing: i64,
        /// The last batch removed (the oldest kept is the next).
        through: i64,
        way_out: String,
    },
}

impl CommitError {
    /// A failure of `pipeline`'s link table.
    pub fn link(pipeline: &Pipeline, e: impl Into<Cause>) -> CommitError {
        CommitError::Link {
            pipeline: pipeline.name.clone(),
            uri: pipeline.link_uri.clone(),
            source: StoreError::new(e, &pipeline.link_storage),
        }
    }
}
