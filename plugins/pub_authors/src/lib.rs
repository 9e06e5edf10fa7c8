//! `pub_authors`: the affected `pub_id`s of a publication/author-link pipeline.
//!
//! Upstreams `publications(pub_id, title, year)` and
//! `author_publication_link(pub_id, uid)`; key `pub_id` (int64).
//! Config (optional): `{"publications": "...", "author_publication_link": "..."}`
//! renames the upstreams.

use dlink_plugin_sdk::{export_pipeline, Batch, Config, KeyColumn, Keys, Pipeline};

struct PubAuthors;

impl Pipeline for PubAuthors {
    const KEYS: &'static [KeyColumn] = &[KeyColumn::i64("pub_id")];

    fn init(config: &Config) -> Result<(), String> {
        config.str("publications")?;
        config.str("author_publication_link")?;
        Ok(())
    }

    fn derive(batch: &Batch, keys: &mut Keys) -> Result<(), String> {
        let publications = batch.config().str_or("publications", "publications")?;
        let link = batch
            .config()
            .str_or("author_publication_link", "author_publication_link")?;

        // A changed publication is affected: insert, delete, both update images.
        let pubs = batch.changes(publications)?;
        keys.add_each(pubs, pubs.i64_values("pub_id")?)?;
        // An added, removed or re-pointed author link affects its publication(s).
        let links = batch.changes(link)?;
        keys.add_each(links, links.i64_values("pub_id")?)?;
        Ok(())
    }
}

export_pipeline!(PubAuthors);
