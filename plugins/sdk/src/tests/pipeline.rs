//! A whole pipeline run natively: `init` with a typed config, then `derive`.

use super::output::info;
use super::*;

/// A test pipeline with a typed config.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EveryId {
    upstream: String,
}

impl Pipeline for EveryId {
    type Config = EveryId;

    fn init(config: EveryId, pipeline: &PipelineInfo) -> Result<Self, Error> {
        pipeline
            .upstream(&config.upstream)?
            .require_int("diasng_id")?;
        Ok(config)
    }

    fn derive(&mut self, batch: &Batch, keys: &mut Keys) -> Result<(), Error> {
        for row in batch.changes(&self.upstream)?.rows() {
            keys.add_from(&row, row.i64("diasng_id")?)?;
        }
        Ok(())
    }
}

#[test]
fn run_derive_runs_init_and_derive_natively() {
    let p = info(vec![KeyColumn::i64("diasng_id")]);
    let batch = Batch::new("sp", 1, vec![spmaster_changes()]);
    let keys = run_derive::<EveryId>(r#"{"upstream": "spmaster"}"#, &p, &batch).unwrap();
    assert_eq!(keys.len(), 4);
    let err = |json: &str| {
        run_derive::<EveryId>(json, &p, &batch)
            .unwrap_err()
            .to_string()
    };
    assert!(
        err(r#"{"upstream": "spmaster", "extra": 1}"#)
            .starts_with("[plugin.config]: unknown field `extra`, expected `upstream`"),
        "{}",
        err(r#"{"upstream": "spmaster", "extra": 1}"#)
    );
    assert!(
        err("").starts_with("[plugin.config]: missing field `upstream`"),
        "{}",
        err("")
    );
    assert!(err(r#"{"upstream": "affiliation"}"#).contains("has no column 'diasng_id'"));
    assert!(parse_config::<NoConfig>("{}").is_ok());
    assert!(parse_config::<NoConfig>(r#"{"a": 1}"#).is_err());
}
