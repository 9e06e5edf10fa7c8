//! `sp_affiliation`: the affected `diasng_id`s of a staff-member/affiliation pipeline.
//!
//! Upstreams, in the pipeline file's order: staff members `(diasng_id, name, country)`
//! and affiliations `(sp_id, institution_key, rank)`; key `diasng_id` (int64).

use dlink_plugin_sdk::{export_pipeline, Batch, Error, KeyColumn, Keys, NoConfig, Pipeline};

/// The names of the two upstreams.
struct SpAffiliation(String, String);

impl Pipeline for SpAffiliation {
    type Config = NoConfig;

    fn init(_: NoConfig, pipeline: &dlink_plugin_sdk::PipelineInfo) -> Result<Self, Error> {
        pipeline.expect_keys(&[KeyColumn::i64("diasng_id")])?;
        let [staff, affiliations] = pipeline.upstreams_as(["staff", "affiliations"])?;
        staff.require_int("diasng_id")?;
        affiliations.require_int("sp_id")?;
        Ok(SpAffiliation(
            staff.name().into(),
            affiliations.name().into(),
        ))
    }

    fn derive(&mut self, batch: &Batch, out: &mut Keys) -> Result<(), Error> {
        // Every change row counts: insert, delete and both images of an update, so an
        // affiliation moved to another sp_id affects the old and the new one.
        out.add_column(batch.changes(&self.0)?, "diasng_id")?;
        out.add_column(batch.changes(&self.1)?, "sp_id")?;
        Ok(())
    }
}

export_pipeline!(SpAffiliation);
