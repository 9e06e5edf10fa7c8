//! `author_pubs`: the affected author `uid`s of a publication/author-link pipeline.
//!
//! Upstreams `publications(pub_id, title, year)` and
//! `author_publication_link(pub_id, uid)`; key `uid` (int64).
//! Config (optional): `{"publications": "...", "author_publication_link": "..."}`
//! renames the upstreams (the link upstream is also the table looked up).

use dlink_plugin_sdk::{export_pipeline, lookup_i64, Batch, Config, KeyColumn, Keys, Pipeline};

struct AuthorPubs;

impl Pipeline for AuthorPubs {
    const KEYS: &'static [KeyColumn] = &[KeyColumn::i64("uid")];

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

        // An added, removed or re-pointed link affects its author(s): pre-image and
        // post-image alike.
        let links = batch.changes(link)?;
        keys.add_each(links, links.i64_values("uid")?)?;

        // A changed publication affects every author linked to it.
        let changed = batch
            .changes(publications)?
            .newest_commit_by_i64("pub_id")?;
        let pub_ids: Vec<i64> = changed.keys().copied().collect();
        let authors = lookup_i64(link, "pub_id", &pub_ids, &["uid", "pub_id"])?;
        let pub_ids = authors.i64_values("pub_id")?;
        for (uid, pub_id) in authors.i64_values("uid")?.zip(pub_ids) {
            let committed = pub_id.and_then(|v| changed.get(&v).copied().flatten());
            keys.add(publications, committed, uid)?;
        }
        Ok(())
    }
}

export_pipeline!(AuthorPubs);
