//! `pub_authors`: the affected `pub_id`s of a publication/author-link pipeline.
//!
//! Upstreams, in the pipeline file's order: publications `(pub_id, title, year)` and
//! author links `(pub_id, uid)`; key `pub_id` (int64).

use dlink_plugin_sdk::{export_pipeline, Batch, Error, KeyColumn, Keys, NoConfig, Pipeline};

/// The names of the two upstreams.
struct PubAuthors(String, String);

impl Pipeline for PubAuthors {
    type Config = NoConfig;

    fn init(_: NoConfig, pipeline: &dlink_plugin_sdk::PipelineInfo) -> Result<Self, Error> {
        pipeline.expect_keys(&[KeyColumn::i64("pub_id")])?;
        let [publications, links] = pipeline.upstreams_as(["publications", "author links"])?;
        publications.require_int("pub_id")?;
        links.require_int("pub_id")?;
        Ok(PubAuthors(publications.name().into(), links.name().into()))
    }

    fn derive(&mut self, batch: &Batch, out: &mut Keys) -> Result<(), Error> {
        // A changed publication is affected (insert, delete, both update images), and
        // so is the publication of an added, removed or re-pointed author link.
        out.add_column(batch.changes(&self.0)?, "pub_id")?;
        out.add_column(batch.changes(&self.1)?, "pub_id")?;
        Ok(())
    }
}

export_pipeline!(PubAuthors);
