//! The wasmtime host for pipeline plugins: compile (with a cache), instantiate in a
//! sandbox, call `init` and `derive` under limits, and answer `lookup`.
//!
//! The sandbox: WASI p2 with no preopened directories, no environment, no arguments,
//! no network (TCP, UDP and name lookup off), stdout discarded and stderr captured (its
//! tail is shown when a call fails); a memory cap, a wall-time budget per call (epoch
//! interruption) and a cap on output size, all from [`Limits`].

mod builder;
mod cache;
mod columns;
mod contract;
mod error;
mod host;
mod limiter;
pub mod source;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::ResourceAny;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

pub use builder::{HostBuilder, Profiler};
pub use cache::{default_dir as default_cache_dir, sha256_hex, Origin};
pub use contract::{Columns, Contract, Output, PipelineInfo};
use error::describe_trap;
pub use error::{Call, PluginError, StderrTail};
use limiter::Limiter;

use crate::config::{Limits, PluginSpec};
pub use crate::lookup::Lookup;

use contract::{v0_1, v0_2, v0_3};

/// How often the epoch advances; the wall-time budget is counted in these ticks.
const TICK: Duration = Duration::from_millis(10);
/// Bytes of guest stderr kept for error messages.
const STDERR_CAPTURE: usize = 64 * 1024;

/// Per-instance state of the store.
pub struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: Limiter,
    lookup: Option<Arc<dyn Lookup>>,
    /// "pipeline 'p' batch N" for log lines.
    label: String,
    /// The pipeline and batch (none in `init`), as the fields of log events.
    pipeline: String,
    batch: Option<i64>,
    stderr: MemoryOutputPipe,
    log_bytes: usize,
    log_budget: usize,
    /// When the running call's wall-time budget ends.
    deadline: Option<Instant>,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The engine, linker and compiled-component cache shared by all plugins of a process.
/// Cloning is cheap: the clones share all of it (pipelines running on their own tasks
/// each hold one).
#[derive(Clone)]
pub struct PluginHost {
    engine: Engine,
    linker: Linker<State>,
    cache_dir: Option<PathBuf>,
    /// Stops the epoch ticker when the last clone is dropped.
    _ticker: Arc<Ticker>,
    /// The lookup indexes of the process, shared by every plugin instance.
    indexes: Arc<crate::lookup::Indexes>,
    /// One lock per plugin hash: pipelines that load the same new file at once (a
    /// plugin shared by many pipelines, replaced) wait for one compile and then load
    /// its cache entry, rather than each compiling it.
    compiling: Arc<Mutex<HashMap<String, Arc<Mutex<()>>>>>,
}

/// The epoch ticker thread's stop flag, set on drop.
struct Ticker(Arc<AtomicBool>);

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A compiled plugin, ready to instantiate.
#[derive(Clone)]
pub struct Compiled {
    pub path: PathBuf,
    /// Hex SHA-256 of the `.wasm` file.
    pub sha256: String,
    pub origin: Origin,
    /// The contract the component speaks.
    pub contract: Contract,
    component: Component,
}

/// One upstream's changes handed to `derive`, encoded for the plugin's contract by
/// [`Plugin::encode`].
pub struct UpstreamInput {
    pub name: String,
    pub start_version: i64,
    pub end_version: i64,
    pub changes: Changes,
}

/// One upstream's change rows in a contract's form.
pub enum Changes {
    /// Contracts 0.1 and 0.2: an Arrow IPC stream; empty when the upstream has no
    /// changes in the call.
    Ipc(Vec<u8>),
    /// Contract 0.3: the columns the plugin reads.
    Columns(Columns),
}

/// A live plugin instance's entry points.
enum Bindings {
    V0_1(v0_1::PipelinePlugin),
    /// The bindings and the `pipeline` resource `init` returned.
    V0_2(v0_2::PipelinePlugin, ResourceAny),
    /// The same, and the columns `init` said it reads, per table (tables it did not
    /// name are read whole).
    V0_3(
        v0_3::PipelinePlugin,
        ResourceAny,
        HashMap<String, Vec<String>>,
    ),
}

/// A live plugin instance.
pub struct Plugin {
    store: Store<State>,
    bindings: Bindings,
    /// The contract it speaks.
    pub contract: Contract,
    limits: Limits,
    pub path: PathBuf,
    pub sha256: String,
}

impl PluginHost {
    /// A builder of hosts.
    pub fn builder() -> HostBuilder {
        HostBuilder::default()
    }

    /// A host caching compiled components in `cache_dir` (none: compile every time),
    /// without a profiler.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Self, PluginError> {
        Self::builder().cache_dir(cache_dir).build()
    }

    fn start(b: &HostBuilder) -> Result<Self, PluginError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        match b.profiler {
            Profiler::None => {}
            Profiler::Perfmap => {
                config.profiler(wasmtime::ProfilingStrategy::PerfMap);
            }
            Profiler::Jitdump => {
                config.profiler(wasmtime::ProfilingStrategy::JitDump);
            }
        }
        let engine = Engine::new(&config).map_err(PluginError::HostStart)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(PluginError::HostStart)?;
        v0_1::PipelinePlugin::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
            .map_err(PluginError::HostStart)?;
        v0_2::PipelinePlugin::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
            .map_err(PluginError::HostStart)?;
        v0_3::PipelinePlugin::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
            .map_err(PluginError::HostStart)?;
        let stop_ticker = Arc::new(AtomicBool::new(false));
        let (e, stop) = (engine.clone(), stop_ticker.clone());
        std::thread::Builder::new()
            .name("dlink-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    e.increment_epoch();
                }
            })
            .map_err(|e| PluginError::HostStart(e.into()))?;
        Ok(PluginHost {
            engine,
            linker,
            cache_dir: b.cache_dir.clone(),
            _ticker: Arc::new(Ticker(stop_ticker)),
            indexes: Arc::default(),
            compiling: Arc::default(),
        })
    }

    /// The lookup indexes shared by the pipelines of this host.
    pub fn indexes(&self) -> &Arc<crate::lookup::Indexes> {
        &self.indexes
    }

    /// Reads and compiles (or loads from the cache) the plugin at `path`.
    pub fn compile(&self, path: &Path) -> Result<Compiled, PluginError> {
        let wasm = std::fs::read(path).map_err(PluginError::Read)?;
        self.compile_bytes(path, wasm)
    }

    /// Compiles (or loads from the cache) the plugin file `path` whose bytes are `wasm`
    /// (read by [`source::read`] from a local path or a bucket).
    pub fn compile_bytes(&self, path: &Path, wasm: Vec<u8>) -> Result<Compiled, PluginError> {
        let started = std::time::Instant::now();
        let sha256 = sha256_hex(&wasm);
        let once = self
            .compiling
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(sha256.clone())
            .or_default()
            .clone();
        let (component, origin) = {
            let _one_at_a_time = once.lock().unwrap_or_else(|p| p.into_inner());
            cache::load(&self.engine, &wasm, &sha256, self.cache_dir.as_deref())
                .map_err(PluginError::NotAComponent)?
        };
        let contract = Contract::of(&component, &self.engine).ok_or(PluginError::NoContract)?;
        tracing::info!(
            plugin = %path.display(),
            bytes = wasm.len(),
            sha256 = %sha256,
            contract = %contract,
            origin = match origin {
                Origin::Compiled => "compiled",
                Origin::Cached => "cache",
            },
            ms = started.elapsed().as_millis() as u64,
            "plugin {} ({} bytes, sha256 {}, {contract}): {}",
            path.display(),
            wasm.len(),
            &sha256[..12],
            match origin {
                Origin::Compiled => "compiled",
                Origin::Cached => "loaded from the cache",
            },
        );
        Ok(Compiled {
            path: path.to_path_buf(),
            sha256,
            origin,
            contract,
            component,
        })
    }

    /// Checks, without running it, that `compiled` imports nothing but what the host
    /// provides (WASI p2 and `dlink:pipeline/host`) and exports its contract's entry
    /// points with their types.
    pub fn check(&self, compiled: &Compiled) -> Result<(), PluginError> {
        let pre = self
            .linker
            .instantiate_pre(&compiled.component)
            .map_err(PluginError::Imports)?;
        let exports = |source| PluginError::Exports {
            contract: compiled.contract,
            source,
        };
        match compiled.contract {
            Contract::V0_1 => v0_1::PipelinePluginPre::new(pre).map(drop).map_err(exports),
            Contract::V0_2 => v0_2::PipelinePluginPre::new(pre).map(drop).map_err(exports),
            Contract::V0_3 => v0_3::PipelinePluginPre::new(pre).map(drop).map_err(exports),
        }
    }

    /// Instantiates `compiled` in a fresh sandbox and calls its `init`: with the
    /// pipeline `info` and `[plugin.config]` (contracts 0.2 and 0.3) or the config alone
    /// (0.1).
    pub async fn instantiate(
        &self,
        compiled: &Compiled,
        info: &PipelineInfo,
        spec: &PluginSpec,
    ) -> Result<Plugin, PluginError> {
        let mut store = self.store(&info.name, spec)?;
        let component = &compiled.component;
        let limits = spec.limits;
        let refused = |message| PluginError::Rejected {
            call: Call::Init,
            message,
        };
        let bindings = match compiled.contract {
            Contract::V0_1 => {
                let b =
                    v0_1::PipelinePlugin::instantiate_async(&mut store, component, &self.linker)
                        .await
                        .map_err(PluginError::Instantiate)?;
                let wall = wall_deadline(&store);
                let call = bounded(wall, b.call_init(&mut store, &spec.config_json)).await;
                match call {
                    Some(Ok(Ok(()))) => Bindings::V0_1(b),
                    Some(Ok(Err(message))) => return Err(refused(message)),
                    Some(Err(e)) => return Err(describe_trap(&store, &limits, Call::Init, e)),
                    None => return Err(timed_out(&store, &limits, Call::Init)),
                }
            }
            Contract::V0_2 => {
                let b =
                    v0_2::PipelinePlugin::instantiate_async(&mut store, component, &self.linker)
                        .await
                        .map_err(PluginError::Instantiate)?;
                let wit = info.to_wit(&spec.config_json).map_err(PluginError::Info)?;
                let guest = b.dlink_pipeline_plugin().pipeline();
                let wall = wall_deadline(&store);
                let call = bounded(wall, guest.call_init(&mut store, &wit)).await;
                match call {
                    Some(Ok(Ok(resource))) => Bindings::V0_2(b, resource),
                    Some(Ok(Err(message))) => return Err(refused(message)),
                    Some(Err(e)) => return Err(describe_trap(&store, &limits, Call::Init, e)),
                    None => return Err(timed_out(&store, &limits, Call::Init)),
                }
            }
            Contract::V0_3 => {
                let b =
                    v0_3::PipelinePlugin::instantiate_async(&mut store, component, &self.linker)
                        .await
                        .map_err(PluginError::Instantiate)?;
                let wit = info
                    .to_wit_v0_3(&spec.config_json)
                    .map_err(PluginError::Info)?;
                let guest = b.dlink_pipeline_plugin().pipeline();
                let wall = wall_deadline(&store);
                let call = bounded(wall, guest.call_init(&mut store, &wit)).await;
                match call {
                    Some(Ok(Ok((resource, reads)))) => {
                        let reads = checked_reads(info, reads).map_err(refused)?;
                        Bindings::V0_3(b, resource, reads)
                    }
                    Some(Ok(Err(message))) => return Err(refused(message)),
                    Some(Err(e)) => return Err(describe_trap(&store, &limits, Call::Init, e)),
                    None => return Err(timed_out(&store, &limits, Call::Init)),
                }
            }
        };
        Ok(Plugin {
            store,
            bindings,
            contract: compiled.contract,
            limits,
            path: compiled.path.clone(),
            sha256: compiled.sha256.clone(),
        })
    }

    /// A store for one plugin instance: its sandbox (WASI without files, environment
    /// or network; the granted folders), limits and stderr capture.
    fn store(&self, pipeline: &str, spec: &PluginSpec) -> Result<Store<State>, PluginError> {
        let limits = spec.limits;
        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE);
        let mut wasi = WasiCtx::builder();
        wasi.stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        for (name, dir) in &spec.read_dirs {
            wasi.preopened_dir(dir, format!("/{name}"), FsPerms::ReadOnly)
                .map_err(|source| PluginError::ReadDir {
                    name: name.clone(),
                    dir: dir.clone(),
                    source,
                })?;
        }
        let wasi = wasi.build();
        let state = State {
            wasi,
            table: ResourceTable::new(),
            limits: Limiter {
                inner: StoreLimitsBuilder::new()
                    .memory_size(
                        usize::try_from(limits.memory_mb.saturating_mul(1 << 20))
                            .unwrap_or(usize::MAX),
                    )
                    .trap_on_grow_failure(true)
                    .build(),
                memory_peak: 0,
                refused: false,
            },
            lookup: None,
            label: format!("pipeline '{pipeline}' init"),
            pipeline: pipeline.to_string(),
            batch: None,
            stderr,
            log_bytes: 0,
            deadline: None,
            log_budget: usize::try_from(limits.max_log_kb.saturating_mul(1024))
                .unwrap_or(usize::MAX),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        // What the guest may hand the host in one call (its output, a lookup's
        // arguments): the output cap and some room for the lists' framing, so that the
        // cap that applies is `max_output_mb`, checked with its own error, rather than
        // wasmtime's fixed 128 MiB.
        store.set_hostcall_fuel(hostcall_fuel(&limits));
        // Every epoch tick, a running call yields to the async executor, so a plugin
        // spinning in Wasm never holds up other pipelines of the process; past its
        // wall-time budget it is interrupted (a `Trap::Interrupt`).
        store.epoch_deadline_callback(|ctx| {
            Ok(match ctx.data().deadline {
                Some(d) if Instant::now() >= d => UpdateDeadline::Interrupt,
                _ => UpdateDeadline::Yield(1),
            })
        });
        store.set_epoch_deadline(1);
        store.data_mut().deadline = Some(Instant::now() + Duration::from_millis(limits.timeout_ms));
        Ok(store)
    }
}

/// A contract's `upstream-changes` records (module `$w` of its bindings) from
/// [`UpstreamInput`]s, their changes taken by `$changes`.
macro_rules! upstream_records {
    ($w:ident, $upstreams:expr, $changes:ident) => {
        $upstreams
            .into_iter()
            .map(|u| $w::UpstreamChanges {
                name: u.name,
                start_version: u.start_version,
                end_version: u.end_version,
                changes: u.changes.$changes(),
            })
            .collect()
    };
}

impl Changes {
    /// The IPC bytes (a contract 0.1 or 0.2 plugin is only ever given these).
    fn into_ipc(self) -> Vec<u8> {
        match self {
            Changes::Ipc(b) => b,
            Changes::Columns(_) => Vec::new(),
        }
    }

    /// The columns (a contract 0.3 plugin is only ever given these).
    fn into_columns(self) -> v0_3::dlink::pipeline::types::RecordBatch {
        match self {
            Changes::Columns(c) => c.0,
            Changes::Ipc(_) => v0_3::dlink::pipeline::types::RecordBatch {
                num_rows: 0,
                columns: Vec::new(),
            },
        }
    }
}

/// Room beyond `max_output_mb` in what a guest may copy to the host in one call.
const HOSTCALL_SLACK: usize = 16 << 20;

/// The hostcall fuel of a store: `max_output_mb` plus [`HOSTCALL_SLACK`].
fn hostcall_fuel(limits: &Limits) -> usize {
    usize::try_from(limits.max_output_mb.saturating_mul(1 << 20))
        .unwrap_or(usize::MAX)
        .saturating_add(HOSTCALL_SLACK)
}

/// Extra time a call gets past its budget before the wall-clock bound drops it: a
/// call running Wasm is interrupted at the budget by the epoch (with its stderr); only
/// a call blocked in a host or WASI function (a sleep, a poll, a long lookup) waits for
/// the wall-clock bound.
const WALL_SLACK: Duration = Duration::from_millis(50);

/// When the running call of `store` is dropped if it has not returned: its budget's
/// end plus [`WALL_SLACK`].
fn wall_deadline(store: &Store<State>) -> tokio::time::Instant {
    let now = Instant::now();
    let left = store
        .data()
        .deadline
        .map_or(Duration::ZERO, |d| d.saturating_duration_since(now));
    tokio::time::Instant::now() + left + WALL_SLACK
}

/// Runs `call` (a call into a guest) until `wall` (its [`wall_deadline`]): `None` when
/// it was dropped there. The epoch deadline only interrupts Wasm
/// code; a guest blocked in a host call would otherwise wait forever. After `None`
/// the instance must be discarded.
async fn bounded<T>(
    wall: tokio::time::Instant,
    call: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::time::timeout_at(wall, call).await.ok()
}

/// The timeout of a call dropped by the wall-clock bound.
fn timed_out(store: &Store<State>, limits: &Limits, call: Call) -> PluginError {
    tracing::debug!(%call, "plugin call dropped at its wall-time bound (blocked in a host call)");
    PluginError::Timeout {
        call,
        timeout_ms: limits.timeout_ms,
        stderr: error::stderr_tail(store),
    }
}

/// The columns a 0.3 plugin's `init` said it reads, checked against the pipeline: each
/// table one of its upstreams or lookup tables, each column one of the table's.
fn checked_reads(
    info: &PipelineInfo,
    reads: Vec<v0_3::dlink::pipeline::types::Reads>,
) -> Result<HashMap<String, Vec<String>>, String> {
    let mut out = HashMap::new();
    for r in reads {
        let Some(schema) = info
            .upstreams
            .iter()
            .chain(&info.lookups)
            .find(|(n, _)| *n == r.table)
            .map(|(_, s)| s)
        else {
            let names: Vec<&str> = info
                .upstreams
                .iter()
                .chain(&info.lookups)
                .map(|(n, _)| n.as_str())
                .collect();
            return Err(format!(
                "init declared columns of table '{}', which is neither an upstream nor a lookup table of pipeline '{}' (its tables: {})",
                r.table,
                info.name,
                names.join(", ")
            ));
        };
        let Some(columns) = r.columns else { continue };
        for c in &columns {
            if schema.field_with_name(c).is_err() {
                let have: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                return Err(format!(
                    "init declared column '{c}' of table '{}', which has no such column (its columns: {})",
                    r.table,
                    have.join(", ")
                ));
            }
        }
        out.insert(r.table, columns);
    }
    Ok(out)
}

/// The change columns every 0.3 plugin receives of an upstream.
const SYSTEM_COLUMNS: [&str; 3] = [
    crate::cdf::CHANGE_TYPE,
    crate::cdf::COMMIT_VERSION,
    crate::cdf::COMMIT_TIMESTAMP,
];

impl Plugin {
    /// One upstream's change rows (`batches`, all of `schema`; none when it has no rows
    /// in the call) in the form the plugin's contract takes: an IPC stream, or for
    /// 0.3 the columns its `init` declared (and the change columns) in the table's
    /// order, each buffer copied once.
    pub fn encode(
        &self,
        upstream: &str,
        schema: &deltalake::arrow::datatypes::SchemaRef,
        batches: &[deltalake::arrow::array::RecordBatch],
    ) -> Result<Changes, deltalake::arrow::error::ArrowError> {
        match &self.bindings {
            Bindings::V0_1(_) | Bindings::V0_2(..) => {
                if batches.iter().all(|b| b.num_rows() == 0) {
                    Ok(Changes::Ipc(Vec::new()))
                } else {
                    Ok(Changes::Ipc(crate::ipc::encode(schema, batches)?))
                }
            }
            Bindings::V0_3(_, _, reads) => {
                let keep: Option<Vec<usize>> = reads.get(upstream).map(|cols| {
                    schema
                        .fields()
                        .iter()
                        .enumerate()
                        .filter(|(_, f)| {
                            cols.iter().any(|c| c == f.name())
                                || SYSTEM_COLUMNS.contains(&f.name().as_str())
                        })
                        .map(|(i, _)| i)
                        .collect()
                });
                let code = schema.index_of(crate::cdf::CHANGE_TYPE).ok();
                let b = columns::to_wit_coded(schema, batches, keep.as_deref(), code)?;
                Ok(Changes::Columns(Columns(b)))
            }
        }
    }

    /// Calls `derive` on one batch. Errors are complete sentences about the plugin's
    /// failure; after an error the instance must not be used again.
    pub async fn derive(
        &mut self,
        pipeline: &str,
        batch_id: i64,
        upstreams: Vec<UpstreamInput>,
        lookup: Arc<dyn Lookup>,
    ) -> Result<Output, PluginError> {
        {
            let data = self.store.data_mut();
            data.lookup = Some(lookup);
            data.label = format!("pipeline '{pipeline}' batch {batch_id}");
            data.batch = Some(batch_id);
            data.log_bytes = 0;
            data.limits.refused = false;
            data.deadline = Some(Instant::now() + Duration::from_millis(self.limits.timeout_ms));
        }
        self.store.set_epoch_deadline(1);
        let wall = wall_deadline(&self.store);
        let result = bounded(wall, self.call_derive(pipeline, batch_id, upstreams)).await;
        self.store.data_mut().lookup = None;
        let Some(result) = result else {
            return Err(timed_out(&self.store, &self.limits, Call::Derive));
        };
        tracing::debug!(
            pipeline,
            batch_id,
            guest_memory_mib = self.store.data().limits.memory_peak >> 20,
            "derive returned"
        );
        let out = match result {
            Ok(Ok(out)) => out,
            Ok(Err(message)) => {
                return Err(PluginError::Rejected {
                    call: Call::Derive,
                    message,
                })
            }
            Err(e) => return Err(describe_trap(&self.store, &self.limits, Call::Derive, e)),
        };
        let cap = self.limits.max_output_mb.saturating_mul(1 << 20);
        if out.len() as u64 > cap {
            return Err(PluginError::OutputTooLarge {
                bytes: out.len(),
                cap_mb: self.limits.max_output_mb,
            });
        }
        Ok(out)
    }

    /// The `derive` export of the plugin's contract, called with the batch.
    async fn call_derive(
        &mut self,
        pipeline: &str,
        batch_id: i64,
        upstreams: Vec<UpstreamInput>,
    ) -> wasmtime::Result<Result<Output, String>> {
        match &self.bindings {
            Bindings::V0_1(b) => {
                use v0_1::dlink::pipeline::types as w;
                let batch = w::Batch {
                    pipeline: pipeline.to_string(),
                    batch_id,
                    upstreams: upstream_records!(w, upstreams, into_ipc),
                };
                let r = b.call_derive(&mut self.store, &batch).await?;
                Ok(r.map(Output::Combined))
            }
            Bindings::V0_2(b, resource) => {
                use v0_2::dlink::pipeline::types as w;
                let batch = w::Batch {
                    batch_id,
                    upstreams: upstream_records!(w, upstreams, into_ipc),
                };
                let guest = b.dlink_pipeline_plugin().pipeline();
                let r = guest
                    .call_derive(&mut self.store, *resource, &batch)
                    .await?;
                Ok(r.map(|parts| {
                    Output::PerUpstream(parts.into_iter().map(|p| (p.upstream, p.keys)).collect())
                }))
            }
            Bindings::V0_3(b, resource, _) => {
                use v0_3::dlink::pipeline::types as w;
                let batch = w::Batch {
                    batch_id,
                    upstreams: upstream_records!(w, upstreams, into_columns),
                };
                let guest = b.dlink_pipeline_plugin().pipeline();
                let r = guest
                    .call_derive(&mut self.store, *resource, &batch)
                    .await?;
                Ok(r.map(|parts| {
                    Output::Columns(
                        parts
                            .into_iter()
                            .map(|p| (p.upstream, Columns(p.keys)))
                            .collect(),
                    )
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use deltalake::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn reads(table: &str, columns: Option<&[&str]>) -> v0_3::dlink::pipeline::types::Reads {
        v0_3::dlink::pipeline::types::Reads {
            table: table.into(),
            columns: columns.map(|c| c.iter().map(|s| s.to_string()).collect()),
        }
    }

    /// What a 0.3 plugin's `init` says it reads is checked against the pipeline: a
    /// table that is none of its upstreams or lookup tables, or a column the table
    /// lacks, refuses the plugin with the names to use; a table read whole is left out.
    #[test]
    fn declared_reads_are_checked_against_the_tables() {
        let schema = |cols: &[&str]| {
            Arc::new(Schema::new(
                cols.iter()
                    .map(|c| Field::new(*c, DataType::Int64, true))
                    .collect::<Vec<_>>(),
            ))
        };
        let info = PipelineInfo {
            name: "p".into(),
            upstreams: vec![("employee".into(), schema(&["emp_id", "dept_id"]))],
            lookups: vec![("office".into(), schema(&["office_id"]))],
            keys: Vec::new(),
        };
        let ok = checked_reads(
            &info,
            vec![reads("employee", Some(&["dept_id"])), reads("office", None)],
        )
        .unwrap();
        assert_eq!(ok.len(), 1);
        assert_eq!(ok["employee"], ["dept_id"]);
        let e = checked_reads(&info, vec![reads("employe", Some(&["emp_id"]))]).unwrap_err();
        assert_eq!(
            e,
            "init declared columns of table 'employe', which is neither an upstream nor a \
             lookup table of pipeline 'p' (its tables: employee, office)"
        );
        let e = checked_reads(&info, vec![reads("office", Some(&["desk"]))]).unwrap_err();
        assert_eq!(
            e,
            "init declared column 'desk' of table 'office', which has no such column (its \
             columns: office_id)"
        );
    }
}
