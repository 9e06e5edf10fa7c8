//! `sp_affiliation`: the affected `diasng_id`s of a staff-member/affiliation pipeline.
//!
//! Upstreams `spmaster(diasng_id, name, country)` and
//! `affiliation(sp_id, institution_key, rank)`; key `diasng_id` (int64).
//! Config (optional): `{"spmaster": "...", "affiliation": "..."}` renames the upstreams.

use dlink_plugin_sdk::{export_pipeline, Batch, Config, KeyColumn, Keys, Pipeline};

struct SpAffiliation;

impl Pipeline for SpAffiliation {
    const KEYS: &'static [KeyColumn] = &[KeyColumn::i64("diasng_id")];

    fn init(config: &Config) -> Result<(), String> {
        config.str("spmaster")?;
        config.str("affiliation")?;
        Ok(())
    }

    fn derive(batch: &Batch, keys: &mut Keys) -> Result<(), String> {
        let spmaster = batch.config().str_or("spmaster", "spmaster")?;
        let affiliation = batch.config().str_or("affiliation", "affiliation")?;

        // A changed staff member is affected: insert, delete, both update images.
        let staff = batch.changes(spmaster)?;
        keys.add_each(staff, staff.i64_values("diasng_id")?)?;
        // A changed affiliation affects its staff member; an update that moves the
        // affiliation to another sp_id affects the old (pre-image) and the new one.
        let affiliations = batch.changes(affiliation)?;
        keys.add_each(affiliations, affiliations.i64_values("sp_id")?)?;
        Ok(())
    }
}

export_pipeline!(SpAffiliation);
