//! The seed-scale workload of `dlink-bench`: U CDF-enabled upstream tables with a
//! random history (append, update, delete, merge), P pipelines over 2-8 of them (plugin
//! and SQL alternating), a catalog and pipeline files. Deterministic by seed. The
//! generator counts the change rows it writes itself, from the ids it touched, not by
//! reading the change feed back.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dlink_rt::demo::{Col, DemoTable};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde_json::{json, Value};

const COLS: [(&str, Col); 3] = [("id", Col::Long), ("ref_id", Col::Long), ("val", Col::Str)];

/// The size of a workload.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    pub upstreams: usize,
    pub pipelines: usize,
    /// Rows of each table at version 0.
    pub rows: usize,
    /// Commits after version 0, before `scale`.
    pub versions: usize,
    /// Fraction of `rows` one commit touches.
    pub change_fraction: f64,
    pub seed: u64,
    /// Multiplies `versions` (the backlog).
    pub scale: usize,
    /// Versions per upstream per batch in the pipeline files.
    pub batch_size: i64,
    /// The plugin of the plugin pipelines (`every_upstream_key.wasm`).
    pub plugin: PathBuf,
}

impl WorkloadSpec {
    /// Commits after version 0 of every table.
    pub fn commits(&self) -> usize {
        self.versions * self.scale.max(1)
    }

    /// Rows one commit touches.
    pub fn rows_per_commit(&self) -> usize {
        ((self.rows as f64 * self.change_fraction).round() as usize).max(1)
    }
}

/// A generated pipeline.
#[derive(Debug, Clone)]
pub struct PipelineDef {
    pub name: String,
    /// Indexes into [`Workload::tables`].
    pub upstreams: Vec<usize>,
    /// SQL (else the plugin).
    pub sql: bool,
}

/// What the generator wrote into one table.
#[derive(Debug, Clone, Default)]
pub struct TableStats {
    pub name: String,
    /// Latest version.
    pub latest: i64,
    /// Rows of its change feed over versions 0..=latest, counted by the generator.
    pub change_rows: u64,
    /// Commits by kind: append, update, delete, merge.
    pub ops: [usize; 4],
}

/// A generated workload in a folder: `upstreams.toml`, `pNN.toml`, `tables/`, `links/`.
#[derive(Debug, Clone)]
pub struct Workload {
    pub dir: PathBuf,
    pub tables: Vec<TableStats>,
    pub pipelines: Vec<PipelineDef>,
    pub generation: Duration,
}

impl Workload {
    /// Indexes of the tables at least one pipeline reads.
    pub fn used_tables(&self) -> Vec<usize> {
        let mut used: Vec<usize> = self
            .pipelines
            .iter()
            .flat_map(|p| p.upstreams.iter().copied())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        used.sort_unstable();
        used
    }

    /// Change rows written into the tables the pipelines read, each table once.
    pub fn change_rows_read(&self) -> u64 {
        self.used_tables()
            .iter()
            .map(|i| self.tables[*i].change_rows)
            .sum()
    }
}

/// SplitMix64: small, fast, and the same on every platform and version.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// Picks each pipeline's upstreams: 2-8 (at most U) distinct tables at random, so
/// some tables are shared by several pipelines and some are read by none, as in the
/// seeds' catalog.
fn plan_pipelines(spec: &WorkloadSpec, rng: &mut Rng) -> Vec<PipelineDef> {
    let u = spec.upstreams;
    (0..spec.pipelines)
        .map(|p| {
            let k = (2 + rng.below(7)).min(u);
            let mut ups: Vec<usize> = Vec::with_capacity(k);
            while ups.len() < k {
                let t = rng.below(u);
                if !ups.contains(&t) {
                    ups.push(t);
                }
            }
            ups.sort_unstable();
            PipelineDef {
                name: format!("p{p:03}"),
                upstreams: ups,
                sql: p % 2 == 1,
            }
        })
        .collect()
}

fn table_name(i: usize) -> String {
    format!("t{i:03}")
}

type DynError = Box<dyn std::error::Error + Send + Sync>;

fn row(rng: &mut Rng, id: i64, tag: &str) -> Value {
    json!([
        id,
        rng.below(1_000_000),
        format!("{tag}-{id}-{}", rng.below(1000))
    ])
}

fn in_list(ids: &[i64]) -> String {
    let list = ids
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    format!("id IN ({list})")
}

/// Takes `n` distinct ids of `live` at random (they stay in `live`).
fn sample(rng: &mut Rng, live: &[i64], n: usize) -> Vec<i64> {
    let n = n.min(live.len());
    let mut picked = HashSet::with_capacity(n);
    while picked.len() < n {
        picked.insert(rng.below(live.len()));
    }
    let mut ids: Vec<i64> = picked.into_iter().map(|i| live[i]).collect();
    ids.sort_unstable();
    ids
}

/// Writes one table's history; counts its change rows from the ids it touched.
async fn write_table(dir: &Path, i: usize, spec: &WorkloadSpec) -> Result<TableStats, DynError> {
    let mut rng = Rng::new(spec.seed ^ (i as u64 + 1).wrapping_mul(0xA24B_AED4_963E_E407));
    let name = table_name(i);
    let n = spec.rows_per_commit();
    let mut live: Vec<i64> = (0..spec.rows as i64).collect();
    let mut next_id = spec.rows as i64;
    let rows: Vec<Value> = live.iter().map(|id| row(&mut rng, *id, "v0")).collect();
    let mut t = DemoTable::create(&dir.join(&name), &COLS, Value::Array(rows)).await?;
    let mut stats = TableStats {
        name,
        change_rows: spec.rows as u64,
        ..Default::default()
    };
    for v in 1..=spec.commits() {
        let tag = format!("v{v}");
        let mut kind = rng.below(4);
        // Keep enough rows to update and delete.
        if live.len() <= n {
            kind = 0;
        }
        match kind {
            0 => {
                let rows: Vec<Value> = (0..n)
                    .map(|k| row(&mut rng, next_id + k as i64, &tag))
                    .collect();
                next_id += n as i64;
                live.extend(next_id - n as i64..next_id);
                t.insert(Value::Array(rows)).await?;
                stats.change_rows += n as u64;
            }
            1 => {
                let ids = sample(&mut rng, &live, n);
                t.update(&in_list(&ids), &[("val", &format!("'{tag}'"))])
                    .await?;
                stats.change_rows += 2 * ids.len() as u64;
            }
            2 => {
                let ids = sample(&mut rng, &live, n);
                t.delete(&in_list(&ids)).await?;
                let gone: HashSet<i64> = ids.iter().copied().collect();
                live.retain(|id| !gone.contains(id));
                stats.change_rows += ids.len() as u64;
            }
            _ => {
                let matched = sample(&mut rng, &live, n / 2);
                let new = n - matched.len();
                let mut rows: Vec<Value> =
                    matched.iter().map(|id| row(&mut rng, *id, &tag)).collect();
                rows.extend((0..new).map(|k| row(&mut rng, next_id + k as i64, &tag)));
                next_id += new as i64;
                live.extend(next_id - new as i64..next_id);
                t.upsert(&["id"], Value::Array(rows)).await?;
                stats.change_rows += 2 * matched.len() as u64 + new as u64;
            }
        }
        stats.ops[kind] += 1;
    }
    stats.latest = t.version();
    Ok(stats)
}

/// Stack of the threads that write the tables. deltalake turns the `id IN (...)`
/// predicate of an UPDATE or DELETE into a chain of ORs that it walks recursively, a
/// few hundred bytes of stack per id: a commit touching 50,000 ids overflows the main
/// thread's 8 MiB. 1 GiB holds a million ids; only the pages used are committed.
const WRITER_STACK: usize = 1 << 30;

/// Writes the workload into `dir` (which must not hold one yet), `writers` tables at
/// a time, on a runtime of its own whose threads have a [`WRITER_STACK`].
pub async fn generate(spec: &WorkloadSpec, dir: &Path, writers: usize) -> Result<Workload, String> {
    let (spec, dir) = (spec.clone(), dir.to_path_buf());
    let writer = std::thread::Builder::new()
        .name("dlink-bench-generator".into())
        .stack_size(WRITER_STACK)
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(writers.clamp(1, 4))
                .thread_stack_size(WRITER_STACK)
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the generator's runtime: {e}"))?;
            runtime.block_on(async {
                // Spawned, so that the writes run on the runtime's large-stack workers.
                tokio::spawn(async move { write_workload(&spec, &dir, writers).await })
                    .await
                    .map_err(|e| format!("the workload generator failed: {e}"))?
            })
        })
        .map_err(|e| format!("cannot start the workload generator: {e}"))?;
    tokio::task::spawn_blocking(move || writer.join())
        .await
        .map_err(|e| format!("the workload generator failed: {e}"))?
        .map_err(|_| "the workload generator panicked".to_string())?
}

async fn write_workload(
    spec: &WorkloadSpec,
    dir: &Path,
    writers: usize,
) -> Result<Workload, String> {
    let started = Instant::now();
    if spec.upstreams < 2 || spec.pipelines == 0 || spec.rows < 2 {
        return Err("the workload needs at least 2 upstreams, 1 pipeline and 2 rows".into());
    }
    if !(spec.change_fraction > 0.0 && spec.change_fraction <= 1.0) {
        return Err("--change-fraction must be in (0, 1]".into());
    }
    let tables_dir = dir.join("tables");
    std::fs::create_dir_all(&tables_dir)
        .map_err(|e| format!("cannot create {}: {e}", tables_dir.display()))?;
    let mut rng = Rng::new(spec.seed);
    let pipelines = plan_pipelines(spec, &mut rng);
    let tables: Vec<TableStats> = stream::iter(0..spec.upstreams)
        .map(|i| {
            let tables_dir = &tables_dir;
            async move {
                write_table(tables_dir, i, spec)
                    .await
                    .map_err(|e| format!("writing table {}: {e}", table_name(i)))
            }
        })
        .buffered(writers.max(1))
        .try_collect()
        .await?;
    write_configs(spec, dir, &pipelines)?;
    Ok(Workload {
        dir: dir.to_path_buf(),
        tables,
        pipelines,
        generation: started.elapsed(),
    })
}

/// The UNION ALL query of a SQL pipeline (and of the SQL reference).
pub fn union_query(upstreams: &[String]) -> String {
    upstreams
        .iter()
        .map(|n| format!("SELECT id FROM {n}_changes"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ")
}

fn write_configs(spec: &WorkloadSpec, dir: &Path, pipelines: &[PipelineDef]) -> Result<(), String> {
    let write = |name: &str, text: String| {
        std::fs::write(dir.join(name), text).map_err(|e| format!("cannot write {name}: {e}"))
    };
    let mut catalog = String::new();
    for i in 0..spec.upstreams {
        let n = table_name(i);
        catalog.push_str(&format!(
            "[upstreams.{n}]\nuri = \"tables/{n}\"\nkeys = [\"id\"]\ncolumns = [\"id\"]\n\n"
        ));
    }
    write(dlink_rt::config::DEFAULT_CATALOG, catalog)?;
    let plugin = spec.plugin.display().to_string().replace('\\', "\\\\");
    for p in pipelines {
        let names: Vec<String> = p.upstreams.iter().map(|i| table_name(*i)).collect();
        let list = names
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let derive = if p.sql {
            format!("[sql]\nquery = \"{}\"\n", union_query(&names))
        } else {
            format!("[plugin]\npath = \"{plugin}\"\n[plugin.config]\nkey_column = \"id\"\n")
        };
        write(
            &format!("{}.toml", p.name),
            format!(
                "name = \"{}\"\nupstreams = [{list}]\nbatch_size = {}\n\n{derive}\n[link]\nuri = \"links/{}\"\nkeys = [{{ name = \"id\", type = \"long\" }}]\n",
                p.name, spec.batch_size, p.name
            ),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An UPDATE or DELETE of thousands of ids at once: deltalake walks its `id IN (...)`
    /// predicate recursively, which overflowed the caller's stack (a test thread has
    /// 2 MiB, `dlink-rt bench` overflowed its 8 MiB main thread from about 20,000 ids).
    #[tokio::test]
    async fn large_updates_and_deletes_do_not_overflow_the_stack() {
        let dir = tempfile::tempdir().unwrap();
        let spec = WorkloadSpec {
            upstreams: 2,
            pipelines: 1,
            rows: 16_000,
            versions: 3,
            change_fraction: 0.5,
            seed: 42,
            scale: 1,
            batch_size: 5,
            plugin: PathBuf::from("every_upstream_key.wasm"),
        };
        let w = generate(&spec, dir.path(), 2).await.unwrap();
        // The seed gives at least one UPDATE or DELETE of 8,000 ids (else this test
        // would test nothing).
        let big = w.tables.iter().map(|t| t.ops[1] + t.ops[2]).sum::<usize>();
        assert!(big > 0, "no update or delete in {:?}", w.tables);
        assert_eq!(spec.rows_per_commit(), 8_000);
        assert!(w.tables.iter().all(|t| t.latest == 3));
    }
}
