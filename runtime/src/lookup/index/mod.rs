//! Indexes of looked-up tables by their lookup column, kept across batches and
//! maintained from each table's own change feed (the "arrangements" of Materialize,
//! DBSP's indexed traces), so a lookup is a hash probe instead of a scan.
//!
//! An index holds every row of the table as of one version, in Arrow's row format (the
//! lookup column first), chained per key value in a hash table. It answers exactly as
//! of that version. To answer at a later version it applies the change rows in between,
//! version by version (deletes and pre-images remove an equal row, inserts and
//! post-images add one); when that cannot be done (the feed is unreadable, the schema
//! changed, a removed row is not there) it is rebuilt from a snapshot read. An earlier
//! version, or an index that would outgrow its memory budget, is answered by a scan.

mod build;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deltalake::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::arrow::row::{RowConverter, Rows, SortField};
use deltalake::datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use futures::StreamExt;
use hashbrown::HashTable;

use super::error::LookupError;
use super::scan::Request;
use crate::config::{LookupSettings, Upstream};
use build::{advance, build};

/// End of a chain of rows.
const NONE: u32 = u32::MAX;

/// One row of the index.
#[derive(Clone, Copy)]
struct RowRef {
    /// Where its bytes start in the arena.
    start: usize,
    len: u32,
    /// Bytes of the lookup column's value at the start of the row.
    key_len: u32,
    /// The next row with the same key value, or [`NONE`].
    next: u32,
}

/// Why an index was not built or kept.
enum Refusal {
    /// It would use more than the budget.
    OverBudget,
    /// The table cannot be indexed (e.g. a column type the row format lacks).
    Unsupported(String),
    /// Reading failed; the next lookup may try again.
    Transient(String),
}

/// A table's rows by one column's value, as of `version`.
struct Index {
    version: i64,
    /// The table's columns, nullable, in table order.
    schema: SchemaRef,
    /// Position of the lookup column in `schema`.
    key_pos: usize,
    /// The table's columns with the lookup column first.
    order: Vec<usize>,
    rows_conv: RowConverter,
    key_conv: RowConverter,
    hasher: foldhash::fast::FixedState,
    arena: Vec<u8>,
    rows: Vec<RowRef>,
    /// Chain heads, one per distinct key value.
    heads: HashTable<u32>,
    live: usize,
    budget: usize,
    build_time: Duration,
}

impl Index {
    fn new(schema: SchemaRef, column: &str, version: i64, budget: usize) -> Result<Index, Refusal> {
        let key_pos = schema
            .index_of(column)
            .map_err(|e| Refusal::Unsupported(e.to_string()))?;
        let mut order = vec![key_pos];
        order.extend((0..schema.fields().len()).filter(|i| *i != key_pos));
        let fields = order
            .iter()
            .map(|i| SortField::new(schema.field(*i).data_type().clone()))
            .collect::<Vec<_>>();
        let rows_conv =
            RowConverter::new(fields).map_err(|e| Refusal::Unsupported(e.to_string()))?;
        let key_conv = RowConverter::new(vec![SortField::new(
            schema.field(key_pos).data_type().clone(),
        )])
        .map_err(|e| Refusal::Unsupported(e.to_string()))?;
        Ok(Index {
            version,
            schema,
            key_pos,
            order,
            rows_conv,
            key_conv,
            hasher: foldhash::fast::FixedState::with_seed(0x0064_6c69_6e6b),
            arena: Vec::new(),
            rows: Vec::new(),
            heads: HashTable::new(),
            live: 0,
            budget,
            build_time: Duration::ZERO,
        })
    }

    /// Bytes held.
    fn bytes(&self) -> usize {
        self.arena.capacity()
            + self.rows.capacity() * std::mem::size_of::<RowRef>()
            + self.heads.allocation_size()
            + self.rows_conv.size()
            + self.key_conv.size()
    }

    fn key_of(&self, id: u32) -> &[u8] {
        let r = self.rows[id as usize];
        &self.arena[r.start..r.start + r.key_len as usize]
    }

    fn row_of(&self, id: u32) -> &[u8] {
        let r = self.rows[id as usize];
        &self.arena[r.start..r.start + r.len as usize]
    }

    /// The rows and key values of `b` (in the index's schema) in row format.
    fn encode(&self, b: &RecordBatch) -> Result<(Rows, Rows, ArrayRef), Refusal> {
        let cols: Vec<ArrayRef> = self.order.iter().map(|i| b.column(*i).clone()).collect();
        let key = b.column(self.key_pos).clone();
        let rows = self
            .rows_conv
            .convert_columns(&cols)
            .map_err(|e| Refusal::Unsupported(e.to_string()))?;
        let keys = self
            .key_conv
            .convert_columns(std::slice::from_ref(&key))
            .map_err(|e| Refusal::Unsupported(e.to_string()))?;
        Ok((rows, keys, key))
    }

    /// Adds every row of `b` (rows whose key is null never match and are not kept).
    fn add_batch(&mut self, b: &RecordBatch) -> Result<(), Refusal> {
        let (rows, keys, key) = self.encode(b)?;
        self.arena.reserve(rows.size());
        for i in 0..b.num_rows() {
            if key.is_valid(i) {
                self.add(keys.row(i).as_ref(), rows.row(i).as_ref())?;
            }
        }
        if self.bytes() > self.budget {
            return Err(Refusal::OverBudget);
        }
        Ok(())
    }

    fn add(&mut self, key: &[u8], row: &[u8]) -> Result<(), Refusal> {
        let id = u32::try_from(self.rows.len())
            .ok()
            .filter(|id| *id != NONE)
            .ok_or(Refusal::OverBudget)?;
        let hash = self.hasher.hash_one(key);
        let start = self.arena.len();
        self.arena.extend_from_slice(row);
        let (len, key_len) = (row.len() as u32, key.len() as u32);
        let (arena, rows) = (&self.arena, &self.rows);
        let eq = |h: &u32| {
            let r = rows[*h as usize];
            &arena[r.start..r.start + r.key_len as usize] == key
        };
        let next = match self.heads.find_mut(hash, eq) {
            Some(head) => std::mem::replace(head, id),
            None => {
                let (arena, rows, hasher) = (&self.arena, &self.rows, &self.hasher);
                self.heads.insert_unique(hash, id, |h| {
                    let r = rows[*h as usize];
                    hasher.hash_one(&arena[r.start..r.start + r.key_len as usize])
                });
                NONE
            }
        };
        self.rows.push(RowRef {
            start,
            len,
            key_len,
            next,
        });
        self.live += 1;
        Ok(())
    }

    /// Removes one row equal to `row`; false when there is none.
    fn remove(&mut self, key: &[u8], row: &[u8]) -> bool {
        let hash = self.hasher.hash_one(key);
        let Some(&head) = self.heads.find(hash, |h| self.key_of(*h) == key) else {
            return false;
        };
        let (mut prev, mut id) = (NONE, head);
        while id != NONE && self.row_of(id) != row {
            prev = id;
            id = self.rows[id as usize].next;
        }
        if id == NONE {
            return false;
        }
        let next = self.rows[id as usize].next;
        if prev != NONE {
            self.rows[prev as usize].next = next;
        } else if next != NONE {
            if let Some(h) = self.heads.find_mut(hash, |h| *h == head) {
                *h = next;
            }
        } else if let Ok(entry) = self.heads.find_entry(hash, |h| *h == head) {
            entry.remove();
        }
        self.rows[id as usize].len = 0;
        self.live -= 1;
        true
    }

    /// Applies the change rows of versions `self.version + 1 ..= to`, given as batches
    /// in the change-feed schema (the table's columns then `_change_type`,
    /// `_commit_version`, `_commit_timestamp`).
    fn apply(&mut self, changes: &[RecordBatch], to: i64) -> Result<(), Refusal> {
        // (version, removal first, batch, row)
        let mut steps: Vec<(i64, bool, usize, usize)> = Vec::new();
        let mut encoded = Vec::with_capacity(changes.len());
        let n = self.schema.fields().len();
        for (bi, b) in changes.iter().enumerate() {
            let types = b.column(n).as_string::<i32>();
            let versions = b
                .column(n + 1)
                .as_primitive::<deltalake::arrow::datatypes::Int64Type>();
            for i in 0..b.num_rows() {
                let removal = matches!(types.value(i), "delete" | "update_preimage");
                steps.push((versions.value(i), !removal, bi, i));
            }
            let data = RecordBatch::try_new(self.schema.clone(), b.columns()[..n].to_vec())
                .map_err(|e| Refusal::Transient(e.to_string()))?;
            encoded.push(self.encode(&data)?);
        }
        steps.sort_unstable();
        for (_, addition, bi, i) in steps {
            let (rows, keys, key) = &encoded[bi];
            if !key.is_valid(i) {
                continue;
            }
            let (k, r) = (keys.row(i), rows.row(i));
            if addition {
                self.add(k.as_ref(), r.as_ref())?;
            } else if !self.remove(k.as_ref(), r.as_ref()) {
                return Err(Refusal::Transient(format!(
                    "a row removed at version {} is not in the index",
                    self.version + 1
                )));
            }
        }
        self.version = to;
        if self.bytes() > self.budget {
            return Err(Refusal::OverBudget);
        }
        Ok(())
    }

    /// The rows whose key is one of `keys` (deduplicated), projected to the request's
    /// columns.
    fn probe(&self, req: &Request, max_rows: u64) -> Result<Vec<u8>, LookupError> {
        // The index is in memory: no storage options to hide.
        let err = |e: deltalake::arrow::error::ArrowError| req.read_err(e, &Default::default());
        let probes = self
            .key_conv
            .convert_columns(std::slice::from_ref(&req.keys))
            .map_err(err)?;
        let mut seen = HashTable::<usize>::new();
        let mut found: Vec<u32> = Vec::new();
        for i in 0..probes.num_rows() {
            let k = probes.row(i);
            let k = k.as_ref();
            let hash = self.hasher.hash_one(k);
            if seen.find(hash, |j| probes.row(*j).as_ref() == k).is_some() {
                continue;
            }
            seen.insert_unique(hash, i, |j| self.hasher.hash_one(probes.row(*j).as_ref()));
            let Some(&head) = self.heads.find(hash, |h| self.key_of(*h) == k) else {
                continue;
            };
            let mut id = head;
            while id != NONE {
                found.push(id);
                id = self.rows[id as usize].next;
            }
            if found.len() as u64 > max_rows {
                return Err(req.too_many(max_rows));
            }
        }
        let parser = self.rows_conv.parser();
        let cols = self
            .rows_conv
            .convert_rows(found.iter().map(|id| parser.parse(self.row_of(*id))))
            .map_err(err)?;
        let mut in_table_order: Vec<Option<ArrayRef>> = vec![None; cols.len()];
        for (c, i) in cols.into_iter().zip(&self.order) {
            in_table_order[*i] = Some(c);
        }
        let projected = req
            .out_schema
            .fields()
            .iter()
            .map(|f| {
                self.schema
                    .index_of(f.name())
                    .ok()
                    .and_then(|i| in_table_order[i].clone())
                    .ok_or_else(|| LookupError::NoColumn {
                        table: req.table.clone(),
                        at: req.at.clone(),
                        column: f.name().clone(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let batch = RecordBatch::try_new(req.out_schema.clone(), projected).map_err(err)?;
        req.finish(&[batch], max_rows)
    }
}

/// What an index holds, for benchmarks and logs.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexStats {
    pub table: String,
    pub column: String,
    pub version: i64,
    pub rows: usize,
    pub bytes: usize,
    pub build_time: Duration,
}

enum Slot {
    /// No index yet; the process asked this many lookups of the table and column.
    Empty(u32),
    Ready(Box<Index>),
    /// Lookups of this table and column are answered by scans for the rest of the
    /// process.
    Refused,
}

/// The indexes of a process, one per (table uri, lookup column), shared by every
/// pipeline and batch.
#[derive(Default)]
pub struct Indexes {
    slots: Mutex<HashMap<(String, String), SharedSlot>>,
}

type SharedSlot = Arc<tokio::sync::Mutex<Slot>>;

/// An upstream's table as of the batch's pinned version, and the session reading it.
pub(crate) struct Pinned<'a> {
    pub ctx: &'a SessionContext,
    pub upstream: &'a Upstream,
    pub table: &'a DeltaTable,
    pub version: i64,
}

impl Indexes {
    fn slot(&self, uri: &str, column: &str) -> SharedSlot {
        let mut slots = match self.slots.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        slots
            .entry((uri.to_string(), column.to_string()))
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(Slot::Empty(0))))
            .clone()
    }

    /// What each index holds.
    pub async fn stats(&self) -> Vec<IndexStats> {
        let slots: Vec<_> = match self.slots.lock() {
            Ok(s) => s.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Err(poisoned) => poisoned
                .into_inner()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        let mut out = Vec::new();
        for ((uri, column), slot) in slots {
            if let Slot::Ready(ix) = &*slot.lock().await {
                out.push(IndexStats {
                    table: uri,
                    column,
                    version: ix.version,
                    rows: ix.live,
                    bytes: ix.bytes(),
                    build_time: ix.build_time,
                });
            }
        }
        out.sort_by(|a, b| (&a.table, &a.column).cmp(&(&b.table, &b.column)));
        out
    }

    /// Answers `req` against the pinned table from the index of its lookup column,
    /// building or advancing the index first. `None` when the index cannot answer:
    /// the caller scans.
    pub(crate) async fn answer(
        &self,
        at: &Pinned<'_>,
        req: &Request,
        max_rows: u64,
        settings: &LookupSettings,
    ) -> Option<Result<Vec<u8>, LookupError>> {
        if !settings.index {
            return None;
        }
        let (u, version) = (at.upstream, at.version);
        let slot = self.slot(&u.uri, &req.column);
        let mut slot = slot.lock().await;
        let budget =
            usize::try_from(settings.memory_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        let outcome = match std::mem::replace(&mut *slot, Slot::Empty(0)) {
            Slot::Refused => {
                *slot = Slot::Refused;
                return None;
            }
            Slot::Ready(ix) if ix.version > version => {
                // Asked for an older version than the index holds (another pipeline is
                // ahead): scan, and keep the index for the pipelines that are not.
                *slot = Slot::Ready(ix);
                return None;
            }
            Slot::Ready(ix) if ix.version == version => Ok(ix),
            Slot::Ready(ix) => match advance(ix, at).await {
                Ok(ix) => Ok(ix),
                Err(Refusal::Transient(why)) => {
                    tracing::debug!(
                        "index of {}.{}: rebuilding at version {version} ({why})",
                        u.name,
                        req.column
                    );
                    build(at, &req.column, budget).await
                }
                Err(e) => Err(e),
            },
            Slot::Empty(asked) if asked < settings.index_after => {
                // Not asked often enough yet to pay for an index: scan.
                *slot = Slot::Empty(asked + 1);
                return None;
            }
            Slot::Empty(_) => build(at, &req.column, budget).await,
        };
        match outcome {
            Ok(ix) => {
                let answer = ix.probe(req, max_rows);
                *slot = Slot::Ready(ix);
                Some(answer)
            }
            Err(refusal) => {
                if refused(refusal, &u.name, &req.column, settings.memory_mb) {
                    *slot = Slot::Refused;
                }
                None
            }
        }
    }
}

/// Logs why an index was not built; true when lookups of that column are answered by
/// scans from now on (over the memory budget, or a column an index cannot hold), false
/// when the next lookup may try again.
fn refused(refusal: Refusal, table: &str, column: &str, memory_mb: u64) -> bool {
    match refusal {
        Refusal::OverBudget => {
            tracing::info!(
                upstream = %table,
                column = %column,
                "lookups of {table}.{column} are answered by scans: its index would exceed [lookups] memory_mb = {memory_mb}",
            );
            true
        }
        Refusal::Unsupported(why) => {
            tracing::info!(
                upstream = %table,
                column = %column,
                "lookups of {table}.{column} are answered by scans: {why}",
            );
            true
        }
        Refusal::Transient(why) => {
            tracing::debug!("index of {table}.{column} not built: {why}");
            false
        }
    }
}
