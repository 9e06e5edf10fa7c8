//! One micro-batch: the change rows of each upstream.

use super::*;

/// One micro-batch of a pipeline: the change rows of each of its upstreams.
#[derive(Debug, Clone)]
pub struct Batch {
    pipeline: String,
    id: i64,
    upstreams: Vec<Changes>,
}

impl Batch {
    /// A batch from already decoded upstreams. Useful to unit-test a plugin's `derive`
    /// natively.
    pub fn new(pipeline: impl Into<String>, id: i64, upstreams: Vec<Changes>) -> Batch {
        Batch {
            pipeline: pipeline.into(),
            id,
            upstreams,
        }
    }

    /// The batch record of the raw bindings (every upstream's columns, taken as they
    /// are: no copy) for pipeline `pipeline`.
    pub fn from_wit(
        pipeline: &str,
        batch: crate::bindings::dlink::pipeline::types::Batch,
    ) -> Result<Batch, String> {
        let upstreams = batch
            .upstreams
            .into_iter()
            .map(|u| {
                let source = format!("upstream '{}'", u.name);
                let table = if u.changes.columns.is_empty() {
                    Table::empty(source)
                } else {
                    let rows = crate::columns::from_wit(&source, u.changes)?;
                    Table::from_batches(source, Some(rows.schema()), vec![rows])?
                };
                Changes::from_table(u.name, u.start_version, u.end_version, table)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Batch::new(pipeline, batch.batch_id, upstreams))
    }

    /// The batch id (1, 2, ...).
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The pipeline's name.
    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }

    /// The change rows of one upstream; an error names the pipeline's upstreams when
    /// it has no upstream of that name.
    pub fn changes(&self, upstream: &str) -> Result<&Changes, String> {
        self.upstreams
            .iter()
            .find(|c| c.name == upstream)
            .ok_or_else(|| {
                let names: Vec<&str> = self.upstream_names().collect();
                let names = if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                };
                format!(
                    "pipeline '{}' has no upstream '{upstream}' (its upstreams: {names})",
                    self.pipeline
                )
            })
    }

    /// Every upstream, in the order the pipeline file lists them.
    pub fn upstreams(&self) -> &[Changes] {
        &self.upstreams
    }

    /// The upstreams' names, in the order the pipeline file lists them.
    pub fn upstream_names(&self) -> impl Iterator<Item = &str> + '_ {
        self.upstreams.iter().map(|c| c.name.as_str())
    }
}
