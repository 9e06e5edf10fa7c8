//! `author_pubs`: the affected author `uid`s of a publication/author-link pipeline.
//!
//! Upstreams, in the pipeline file's order: publications `(pub_id, title, year)` and
//! author links `(pub_id, uid)`, which is also the table looked up; key `uid` (int64).

use dlink_plugin_sdk::{export_pipeline, Batch, Error, KeyColumn, Keys, NoConfig, Pipeline};

/// The names of the two upstreams.
struct AuthorPubs(String, String);

impl Pipeline for AuthorPubs {
    type Config = NoConfig;

    fn init(_: NoConfig, pipeline: &dlink_plugin_sdk::PipelineInfo) -> Result<Self, Error> {
        pipeline.expect_keys(&[KeyColumn::i64("uid")])?;
        let [publications, links] = pipeline.upstreams_as(["publications", "author links"])?;
        publications.require_int("pub_id")?;
        links.require_int("pub_id")?.require_int("uid")?;
        Ok(AuthorPubs(publications.name().into(), links.name().into()))
    }

    fn derive(&mut self, batch: &Batch, out: &mut Keys) -> Result<(), Error> {
        // An added, removed or re-pointed link affects its author(s), pre-image and
        // post-image alike; a changed publication, every author linked to it.
        out.add_column(batch.changes(&self.1)?, "uid")?;
        out.add_through(batch.changes(&self.0)?, "pub_id", &self.1, "pub_id")?;
        Ok(())
    }
}

export_pipeline!(AuthorPubs);
