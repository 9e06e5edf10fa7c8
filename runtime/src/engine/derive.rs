//! The derive stage: a batch's change rows (and lookups at its pinned versions) in,
//! the affected keys out. One [`Derive`] trait, implemented by the plugin derivation
//! ([`PluginDerive`], which calls the plugin once per chunk of the batch's change rows,
//! see `chunk.rs`) and the SQL one ([`SqlDerive`]); a batch calls it once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use deltalake::arrow::datatypes::SchemaRef;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use futures::StreamExt;

use super::{load_plugin, PluginSlot};
use crate::affected::{KeySet, Keys, SpillError};
use crate::cdf::{self, Rows};
use crate::config::{Derivation, Pipeline, PluginSpec, Upstream};
use crate::engine::error::{BatchFailure, Error, Result};
use crate::lookup::{TableCache, TableLookup};
use crate::plugin::{PipelineInfo, PluginError, PluginHost, UpstreamInput};
use crate::sink::UpstreamRange;
use crate::sql_pipeline::StreamedTable;

/// One upstream's part of a batch.
/// Public for embedders and benchmarks, as the derive-stage contract.
pub struct UpstreamBatch<'a> {
    pub upstream: &'a Upstream,
    /// The range read (or none) and the version the batch pins the table at.
    pub range: &'a UpstreamRange,
    /// The change rows of `range` (read, or streamed as they are read); `None` when the
    /// upstream has no range in the batch.
    pub changes: Option<Rows>,
    /// The table, loaded at or after the range's end.
    pub table: &'a DeltaTable,
}

impl UpstreamBatch<'_> {
    /// The schema the change rows are delivered in (also when there are none).
    fn schema(&self) -> Result<SchemaRef> {
        match &self.changes {
            Some(ch) => Ok(ch.schema().clone()),
            None => Ok(cdf::change_schema(
                self.upstream,
                cdf::arrow_schema(self.upstream, self.table)?.as_ref(),
            )?),
        }
    }
}

/// Everything a derivation sees of a batch.
/// Public for embedders and benchmarks, as the derive-stage contract.
pub struct BatchInput<'a> {
    pub pipeline: &'a Pipeline,
    pub batch_id: i64,
    pub upstreams: Vec<UpstreamBatch<'a>>,
    /// Every table a lookup or a SQL join may read, at the batch's version.
    pub pinned: Vec<(Upstream, i64)>,
    /// The pipeline's lookup-only tables, as opened by the run (their schemas are
    /// part of what a plugin's `init` is told).
    pub lookup_tables: &'a [(Upstream, DeltaTable)],
    /// Tables already open at pinned versions, shared with lookups.
    pub cache: &'a TableCache,
    pub ctx: &'a SessionContext,
}

impl BatchInput<'_> {
    /// What a plugin's `init` is told about the pipeline, from the batch's tables.
    fn pipeline_info(&self) -> Result<PipelineInfo> {
        let upstreams = self
            .upstreams
            .iter()
            .map(|u| Ok((u.upstream.name.clone(), u.schema()?)))
            .collect::<Result<Vec<_>>>()?;
        let lookups = self
            .lookup_tables
            .iter()
            .map(|(u, t)| Ok((u.name.clone(), cdf::arrow_schema(u, t)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(PipelineInfo {
            name: self.pipeline.name.clone(),
            upstreams,
            lookups,
            keys: self.pipeline.keys.clone(),
        })
    }
}

/// What a derivation produced.
/// Public for embedders and benchmarks, as the derive-stage contract.
pub struct Derived {
    /// The batch's distinct keys (in memory, or spilled past `[engine] memory_mb`).
    pub keys: Keys,
    /// SHA-256 of the plugin file or of the SQL text.
    pub sha256: String,
    /// The batch from which this plugin (or query) has been in effect.
    pub active_since: i64,
    /// The contract of the plugin (none for SQL).
    pub contract: Option<crate::plugin::Contract>,
    /// Where a plugin derivation's time went (zero for the others).
    pub timings: PluginTimings,
}

/// The steps of a plugin derivation.
#[derive(Debug, Clone, Copy, Default)]
pub struct PluginTimings {
    /// Compiling or loading and instantiating the plugin (first batch, swaps).
    pub load: Duration,
    /// Waiting for streamed change rows (a batch over one call reads as it derives).
    pub read: Duration,
    /// The host's encoding of the change rows (IPC, or contract 0.3's columns).
    pub encode: Duration,
    /// The call: input copied in, the guest's work and lookups, output copied out.
    pub call: Duration,
    /// The host's checks and de-duplication of the output.
    pub collect: Duration,
}

/// A derivation of affected keys from a batch.
/// Public for embedders and benchmarks, as the derive-stage contract (its futures are
/// run on the caller's task, so no `Send` bound is promised).
#[allow(async_fn_in_trait)]
pub trait Derive {
    /// Derives the batch's keys. An error fails the batch; nothing is committed.
    async fn derive(&mut self, input: BatchInput<'_>) -> Result<Derived>;
}

/// The derivation a pipeline file declares.
pub(crate) enum Deriver<'a> {
    Plugin(PluginDerive<'a>),
    Sql(SqlDerive<'a>),
}

impl<'a> Deriver<'a> {
    /// The derivation of `pipeline`: its plugin (instance kept in `slot`) or its query
    /// (in effect since `first_batch`, the session's first).
    pub(crate) fn of(
        pipeline: &'a Pipeline,
        host: &'a PluginHost,
        slot: &'a mut PluginSlot,
        first_batch: i64,
    ) -> Self {
        match &pipeline.derivation {
            Derivation::Plugin(spec) => Deriver::Plugin(PluginDerive { spec, host, slot }),
            Derivation::Sql { query } => Deriver::Sql(SqlDerive { query, first_batch }),
        }
    }
}

impl Derive for Deriver<'_> {
    async fn derive(&mut self, input: BatchInput<'_>) -> Result<Derived> {
        match self {
            Deriver::Plugin(p) => p.derive(input).await,
            Deriver::Sql(s) => s.derive(input).await,
        }
    }
}

fn batch_err(input: &BatchInput<'_>, cause: BatchFailure) -> Error {
    Error::Batch {
        pipeline: input.pipeline.name.clone(),
        batch_id: input.batch_id,
        plugin: input.pipeline.deriver(),
        cause,
    }
}

/// A Wasm plugin: the changes as Arrow IPC in, the keys as Arrow IPC out, lookups
/// answered from the pinned tables.
/// Public for embedders and benchmarks, as the derive-stage contract.
pub struct PluginDerive<'a> {
    pub spec: &'a PluginSpec,
    pub host: &'a PluginHost,
    pub slot: &'a mut PluginSlot,
}

impl Derive for PluginDerive<'_> {
    async fn derive(&mut self, mut input: BatchInput<'_>) -> Result<Derived> {
        let (pipeline, batch_id) = (input.pipeline, input.batch_id);
        self.slot.swap_in(&pipeline.name, batch_id);
        let mut lap = Lap::start();
        let (spec, host) = (self.spec, self.host);
        let load = async {
            let info = input.pipeline_info()?;
            load_plugin(pipeline, spec, host, &info).await
        };
        let (plugin, active_since) = self.slot.instance(batch_id, load).await?;
        let (sha256, contract) = (plugin.sha256.clone(), Some(plugin.contract));
        let load_time = lap.next();
        let lookup = Arc::new(TableLookup::new(
            &pipeline.name,
            spec.limits.max_lookup_rows,
            input.pinned.clone(),
            input.cache.clone(),
            input.ctx.clone(),
            host.indexes().clone(),
            pipeline.lookup_settings,
        ));
        let names: Vec<&str> = input
            .upstreams
            .iter()
            .map(|u| u.upstream.name.as_str())
            .collect();
        // The schema each upstream's rows come in, for calls where it has none.
        let schemas = input
            .upstreams
            .iter()
            .map(|u| u.schema())
            .collect::<Result<Vec<_>>>()?;
        let rows: Vec<Option<Rows>> = input
            .upstreams
            .iter_mut()
            .map(|u| u.changes.take())
            .collect();
        let chunk_rows = usize::try_from(pipeline.chunk_rows).unwrap_or(usize::MAX);
        let mut timings = PluginTimings {
            load: load_time,
            ..PluginTimings::default()
        };
        let mut set = KeySet::new(
            &pipeline.keys,
            &names,
            pipeline.engine.memory_bytes(),
            &pipeline.engine.spill_dir(),
        )
        .map_err(|e| spill_err(&input, e))?;
        let mut call = Caller {
            input: &input,
            plugin,
            lookup: &lookup,
            names: &names,
            schemas: &schemas,
            set: &mut set,
            timings: &mut timings,
            lap: &mut lap,
            calls: 0,
            output_bytes: 0,
            trapped: false,
        };
        let ran = async {
            // Rows read at once: cut as before (one call when the batch fits in one).
            // Streamed rows: packed into calls as they arrive, after the read ones.
            let (mut read, mut streams) = (Vec::with_capacity(rows.len()), Vec::new());
            for (i, r) in rows.into_iter().enumerate() {
                match r {
                    Some(Rows::Read(ch)) => read.push(Some(ch)),
                    Some(Rows::Stream(s)) => {
                        read.push(None);
                        streams.push((i, s));
                    }
                    None => read.push(None),
                }
            }
            if streams.is_empty() {
                for c in super::chunk::calls(read, chunk_rows) {
                    call.run(c).await?;
                }
                return Ok(());
            }
            let mut packer = super::chunk::Packer::new(read.len(), chunk_rows);
            for (i, ch) in read.into_iter().enumerate() {
                if let Some(ch) = ch {
                    for c in packer.push(i, ch) {
                        call.run(c).await?;
                    }
                }
            }
            for (i, mut s) in streams {
                while let Some(piece) = s.next().await? {
                    call.timings.read += call.lap.next();
                    for c in packer.push(i, piece) {
                        call.run(c).await?;
                    }
                }
            }
            if let Some(c) = packer.finish() {
                call.run(c).await?;
            }
            Ok::<(), Error>(())
        };
        let ran = ran.await;
        let (n_calls, output_bytes, trapped) = (call.calls, call.output_bytes, call.trapped);
        if let Err(e) = ran {
            if trapped {
                // A trapped instance must not run again.
                self.slot.drop_current();
            }
            return Err(e);
        }
        let keys = finish(set, &input).await?;
        timings.collect += lap.next();
        timings.log(&pipeline.name, batch_id, n_calls, output_bytes);
        Ok(Derived {
            keys,
            sha256,
            active_since,
            contract,
            timings,
        })
    }
}

/// Runs a batch's plugin calls one after the other, folding their keys into the set.
struct Caller<'a, 'b> {
    input: &'a BatchInput<'b>,
    plugin: &'a mut crate::plugin::Plugin,
    lookup: &'a Arc<TableLookup>,
    names: &'a [&'a str],
    /// Each upstream's change-row schema.
    schemas: &'a [SchemaRef],
    set: &'a mut KeySet,
    timings: &'a mut PluginTimings,
    lap: &'a mut Lap,
    calls: usize,
    output_bytes: usize,
    /// A call failed in the plugin: its instance must not run again.
    trapped: bool,
}

impl Caller<'_, '_> {
    async fn run(&mut self, call: super::chunk::Call) -> Result<()> {
        let (input, pipeline) = (self.input, self.input.pipeline);
        let inputs = encode_call(input, self.plugin, self.schemas, call)?;
        self.timings.encode += self.lap.next();
        let output = match self
            .plugin
            .derive(&pipeline.name, input.batch_id, inputs, self.lookup.clone())
            .await
        {
            Ok(o) => o,
            Err(e) => {
                self.trapped = true;
                return Err(batch_err(input, e.into()));
            }
        };
        self.timings.call += self.lap.next();
        self.calls += 1;
        self.output_bytes += output.len();
        output
            .fold_into(&pipeline.keys, self.names, self.set)
            .map_err(|e| spill_err(input, e))?;
        self.timings.collect += self.lap.next();
        Ok(())
    }
}

/// A key-set failure: the plugin's output refused, or the spill.
/// The batch's keys from its set, saying at INFO when they went to disk.
async fn finish(set: KeySet, input: &BatchInput<'_>) -> Result<Keys> {
    let spills = set.spills_at_finish();
    let keys = set.finish().await.map_err(|e| spill_err(input, e))?;
    if spills > 0 {
        tracing::info!(
            pipeline = %input.pipeline.name,
            batch_id = input.batch_id,
            keys = keys.len(),
            spills,
            memory_mb = input.pipeline.engine.memory_mb,
            "the batch's key set was over [engine] memory_mb and went to disk"
        );
    }
    Ok(keys)
}

fn spill_err(input: &BatchInput<'_>, e: SpillError) -> Error {
    match e {
        SpillError::Keys(e) => {
            let reason = Box::new(e);
            batch_err(input, PluginError::InvalidOutput { reason }.into())
        }
        e => batch_err(input, BatchFailure::Spill(Box::new(e))),
    }
}

/// One call's change rows in the form of the plugin's contract, per upstream of the
/// batch (no rows for an upstream without rows in this call). Each piece is freed
/// once encoded: the plugin's copy is the one that counts during the call.
fn encode_call(
    input: &BatchInput<'_>,
    plugin: &crate::plugin::Plugin,
    schemas: &[SchemaRef],
    call: super::chunk::Call,
) -> Result<Vec<UpstreamInput>> {
    let pipeline = input.pipeline;
    let mut inputs = Vec::with_capacity(input.upstreams.len());
    for ((u, piece), schema) in input.upstreams.iter().zip(call).zip(schemas) {
        let encoded = match piece {
            Some(ch) => plugin.encode(&u.upstream.name, &ch.schema, &ch.batches),
            None => plugin.encode(&u.upstream.name, schema, &[]),
        };
        let changes = encoded.map_err(|source| Error::Batch {
            pipeline: pipeline.name.clone(),
            batch_id: input.batch_id,
            plugin: pipeline.deriver(),
            cause: BatchFailure::Encode {
                upstream: u.range.name.clone(),
                source,
            },
        })?;
        let (start, end) = u
            .range
            .range
            .unwrap_or((u.range.pinned + 1, u.range.pinned));
        inputs.push(UpstreamInput {
            name: u.upstream.name.clone(),
            start_version: start,
            end_version: end,
            changes,
        });
    }
    Ok(inputs)
}

impl PluginTimings {
    /// The debug event with a plugin derivation's steps.
    fn log(&self, pipeline: &str, batch_id: i64, calls: usize, output_bytes: usize) {
        tracing::debug!(
            pipeline,
            batch_id,
            calls,
            load_ms = self.load.as_millis(),
            read_ms = self.read.as_millis(),
            encode_ms = self.encode.as_millis(),
            call_ms = self.call.as_millis(),
            collect_ms = self.collect.as_millis(),
            output_bytes,
            "derive stages"
        );
    }
}

/// A SQL query over the change tables (and the pinned tables it joins).
/// Public for embedders and benchmarks, as the derive-stage contract.
pub struct SqlDerive<'a> {
    pub query: &'a str,
    pub first_batch: i64,
}

impl<'a> SqlDerive<'a> {
    /// The query, in effect since the first batch.
    /// Public for embedders and benchmarks, as the derive-stage contract.
    pub fn new(query: &'a str) -> Self {
        SqlDerive {
            query,
            first_batch: 1,
        }
    }
}

impl Derive for SqlDerive<'_> {
    async fn derive(&mut self, mut input: BatchInput<'_>) -> Result<Derived> {
        let pipeline = input.pipeline;
        let mut tables = Vec::with_capacity(input.upstreams.len());
        for u in &mut input.upstreams {
            let rows = match u.changes.take() {
                Some(rows) => rows,
                None => Rows::Read(cdf::Changes::empty(u.schema()?)),
            };
            tables.push(StreamedTable {
                name: &u.upstream.name,
                rows,
            });
        }
        let names: Vec<&str> = input
            .upstreams
            .iter()
            .map(|u| u.upstream.name.as_str())
            .collect();
        // The query reads streamed change rows as they come and its rows are folded
        // into the key set as they come: neither is held whole.
        let mut query = crate::sql_pipeline::stream(self.query, tables, &input.pinned, input.cache)
            .await
            .map_err(|e| batch_err(&input, BatchFailure::Sql(e)))?;
        let mut set = KeySet::new(
            &pipeline.keys,
            &names,
            pipeline.engine.memory_bytes(),
            &pipeline.engine.spill_dir(),
        )
        .map_err(|e| spill_err(&input, e))?;
        let read_error =
            |query: &crate::sql_pipeline::QueryRows| query.seen.iter().find_map(|s| s.take_error());
        while let Some(rows) = query.rows.next().await {
            let rows = match rows {
                Ok(rows) => rows,
                // A change file that could not be read is named as in a plugin's batch.
                Err(e) => match read_error(&query) {
                    Some(read) => return Err(read.into()),
                    None => {
                        let e = crate::sql_pipeline::SqlError::Query(e);
                        return Err(batch_err(&input, BatchFailure::Sql(e)));
                    }
                },
            };
            let part = crate::affected::query_keys(&query.schema, &[rows], &pipeline.keys, &names)
                .map_err(|e| batch_err(&input, BatchFailure::QueryOutput(Box::new(e))))?;
            set.add(part).map_err(|e| spill_err(&input, e))?;
        }
        let keys = finish(set, &input).await?;
        let keys = if query
            .schema
            .column_with_name(crate::affected::UPSTREAM)
            .is_some()
        {
            keys
        } else {
            // Without `_upstream`, a key's causes are the upstreams with change rows in
            // the batch (rows the query did not read are counted now).
            let seen = query.read_the_rest().await?;
            let (mut causes, mut newest) = (Vec::new(), None);
            for (name, seen) in names.iter().zip(&seen) {
                let (rows, ts) = seen.rows();
                if rows > 0 {
                    causes.push(name.to_string());
                    newest = newest.max(ts);
                }
            }
            keys.with_causes(causes, newest)
        };
        Ok(Derived {
            keys,
            sha256: crate::plugin::sha256_hex(self.query.as_bytes()),
            active_since: self.first_batch,
            contract: None,
            timings: PluginTimings::default(),
        })
    }
}

/// Times consecutive steps.
pub(crate) struct Lap(Instant);

impl Lap {
    pub(crate) fn start() -> Self {
        Lap(Instant::now())
    }

    /// The time since the last lap (or the start).
    pub(crate) fn next(&mut self) -> Duration {
        let now = Instant::now();
        let lap = now - self.0;
        self.0 = now;
        lap
    }
}
