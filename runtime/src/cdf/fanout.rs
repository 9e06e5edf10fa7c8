//! One change-feed read per upstream range, fanned out to every pipeline that needs it
//! (the seeds' "central Delta-Link generator").
//!
//! Pipelines of one process ask for `(upstream, start..=end)`. The first asker reads;
//! the others wait for that read and share its rows. An entry is dropped as soon as
//! every pipeline using the upstream has taken it, so memory stays bounded by the
//! batches in flight, not by the backlog. Pipelines whose checkpoints differ ask for
//! different ranges and read them separately; that is still correct, only not shared.
//!
//! Opening an upstream (a log replay) is shared the same way: the pipelines of a run
//! that read a table take one opened copy, dropped when the last of them has it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deltalake::datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use tokio::sync::OnceCell;

use super::Result;
use super::{open_latest, read_changes, Changes};
use crate::config::Upstream;

type Key = (String, i64, i64);

/// Ranges of one upstream kept at once. Pipelines at different positions ask for
/// ranges others never take; the oldest of those is dropped (and re-read if a slow
/// pipeline does come for it), so memory stays bounded by a few batches.
const KEEP_PER_UPSTREAM: usize = 4;

/// A value made once for several pipelines: a range's change rows, an opened table.
struct Shared<T> {
    cell: Arc<OnceCell<T>>,
    /// Pipelines that have not taken it yet.
    remaining: usize,
    created: Instant,
}

/// How long an opened table is handed to further pipelines. The pipelines of a run (or
/// of a service starting) open their tables together; a pipeline that opens a session
/// later (after a failure, in `--follow`) gets a table opened for it rather than one
/// that some pipeline never came for. A shared table older than the newest version is
/// still correct (a session reads the log entries after it), only slower.
const OPEN_SHARED_FOR: Duration = Duration::from_secs(2);

/// Takes `key`'s cell for one of its `consumers` (creating the entry for the first);
/// the last one removes the entry, and whoever holds the cell keeps the value alive.
fn take<K: std::hash::Hash + Eq + Clone, T>(
    map: &mut HashMap<K, Shared<T>>,
    key: &K,
    consumers: usize,
) -> Arc<OnceCell<T>> {
    let e = map.entry(key.clone()).or_insert_with(|| Shared {
        cell: Arc::new(OnceCell::new()),
        remaining: consumers,
        created: Instant::now(),
    });
    e.remaining = e.remaining.saturating_sub(1);
    let cell = e.cell.clone();
    if e.remaining == 0 {
        map.remove(key);
    }
    cell
}

/// Shared change-feed reads of one process.
#[derive(Default)]
pub struct FanOut {
    /// upstream table (its uri) -> number of pipelines reading it.
    consumers: Mutex<HashMap<String, usize>>,
    entries: Mutex<HashMap<Key, Shared<Arc<Changes>>>>,
    requested: AtomicU64,
    performed: AtomicU64,
    /// upstream uri -> the table opened for the run's pipelines.
    tables: Mutex<HashMap<String, Shared<DeltaTable>>>,
    opens_requested: AtomicU64,
    opens_performed: AtomicU64,
}

/// How many reads were asked for and how many ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FanOutStats {
    pub requested: u64,
    pub performed: u64,
    /// Upstream tables the pipelines asked to open, and the opens that ran.
    pub opens_requested: u64,
    pub opens_performed: u64,
}

impl FanOut {
    /// A fan-out for pipelines whose upstream tables are given by uri (one list per
    /// pipeline). Tables are told apart by uri, not by name: pipelines of different
    /// catalogs may give one name to different tables.
    pub fn new<'a>(pipelines: impl IntoIterator<Item = Vec<&'a str>>) -> Self {
        let f = FanOut::default();
        f.set_pipelines(pipelines);
        f
    }

    /// Who reads what now (the service calls it as pipelines start and stop). A range
    /// some pipeline then never takes is dropped with the oldest ranges of its upstream.
    pub fn set_pipelines<'a>(&self, pipelines: impl IntoIterator<Item = Vec<&'a str>>) {
        let mut consumers = HashMap::new();
        for ups in pipelines {
            for u in ups {
                *consumers.entry(u.to_string()).or_insert(0) += 1;
            }
        }
        *self.consumers.lock().unwrap_or_else(|p| p.into_inner()) = consumers;
    }

    /// The change rows of `u` for `start..=end`, read once for all pipelines.
    pub async fn read(
        &self,
        ctx: &SessionContext,
        u: &Upstream,
        table: &DeltaTable,
        start: i64,
        end: i64,
    ) -> Result<Arc<Changes>> {
        self.requested.fetch_add(1, Ordering::Relaxed);
        let key = (u.uri.clone(), start, end);
        let cell = {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            let cell = take(&mut entries, &key, self.consumers_of(u));
            let mut kept: Vec<&Key> = entries.keys().filter(|k| k.0 == u.uri).collect();
            if kept.len() > KEEP_PER_UPSTREAM {
                kept.sort_by_key(|k| k.1);
                let oldest = kept[0].clone();
                entries.remove(&oldest);
            }
            cell
        };
        let changes = cell
            .get_or_try_init(|| async {
                self.performed.fetch_add(1, Ordering::Relaxed);
                read_changes(ctx, u, table, start, end).await.map(Arc::new)
            })
            .await?;
        Ok(changes.clone())
    }

    /// `u` at its latest version, opened once for all the pipelines of the run that
    /// read it (the first asker opens it; a failed open is retried by the next asker).
    pub async fn open(&self, u: &Upstream) -> Result<DeltaTable> {
        self.opens_requested.fetch_add(1, Ordering::Relaxed);
        let cell = {
            let mut tables = self.tables.lock().unwrap_or_else(|p| p.into_inner());
            if tables
                .get(&u.uri)
                .is_some_and(|e| e.created.elapsed() > OPEN_SHARED_FOR)
            {
                tables.remove(&u.uri);
            }
            take(&mut tables, &u.uri, self.consumers_of(u))
        };
        let table = cell
            .get_or_try_init(|| async {
                self.opens_performed.fetch_add(1, Ordering::Relaxed);
                open_latest(u).await
            })
            .await?;
        Ok(table.clone())
    }

    fn consumers_of(&self, u: &Upstream) -> usize {
        let consumers = self.consumers.lock().unwrap_or_else(|p| p.into_inner());
        consumers.get(&u.uri).copied().unwrap_or(1)
    }

    pub fn stats(&self) -> FanOutStats {
        FanOutStats {
            requested: self.requested.load(Ordering::Relaxed),
            performed: self.performed.load(Ordering::Relaxed),
            opens_requested: self.opens_requested.load(Ordering::Relaxed),
            opens_performed: self.opens_performed.load(Ordering::Relaxed),
        }
    }
}
