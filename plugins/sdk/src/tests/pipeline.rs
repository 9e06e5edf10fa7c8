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

/// What `init` checks is what it reads: the columns it required of a table are the
/// ones the component declares (contract 0.3, the host sends only those); a table it
/// never touched, or asked for whole, is left out (sent whole).
#[test]
fn init_declares_the_columns_it_checked() {
    let p = info(vec![KeyColumn::i64("diasng_id")]);
    assert!(p.reads().is_empty());
    let _ = EveryId::init(
        EveryId {
            upstream: "spmaster".into(),
        },
        &p,
    )
    .unwrap();
    assert_eq!(
        p.reads(),
        vec![("spmaster".to_string(), Some(vec!["diasng_id".to_string()]))]
    );
    let aff = p.upstream("affiliation").unwrap();
    aff.reads(&["sp_id", "rank"]).unwrap();
    aff.require_int("sp_id").unwrap();
    assert!(aff.reads(&["nope"]).is_err());
    assert_eq!(
        aff.read_columns(),
        Some(vec!["sp_id".to_string(), "rank".to_string()])
    );
    p.upstream("spmaster").unwrap().reads_all();
    assert_eq!(
        p.reads(),
        vec![(
            "affiliation".to_string(),
            Some(vec!["sp_id".to_string(), "rank".to_string()])
        )]
    );
}

/// Contract 0.3 sends `_change_type` as int8 codes: they read as the change types,
/// and a code that is none is an error naming the upstream and row.
#[test]
fn change_types_arrive_as_int8_codes() {
    let batch = |codes: Vec<i8>| {
        let n = codes.len();
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("_change_type", DataType::Int8, false),
                Field::new("_commit_version", DataType::Int64, false),
                Field::new("_commit_timestamp", ts_type(), true),
            ])),
            vec![
                Arc::new(Int64Array::from((0..n as i64).collect::<Vec<_>>())),
                Arc::new(arrow_array::Int8Array::from(codes)),
                Arc::new(Int64Array::from(vec![1; n])),
                Arc::new(TimestampMicrosecondArray::from(vec![T1; n]).with_timezone("UTC")),
            ],
        )
        .unwrap()
    };
    let changes = |codes| {
        let b: RecordBatch = batch(codes);
        let table = Table::from_batches("upstream 't'", None, vec![b]).unwrap();
        Changes::from_table("t", 1, 1, table)
    };
    let c = changes(vec![0, 1, 2, 3]).unwrap();
    let types: Vec<ChangeType> = c.rows().map(|r| r.change_type()).collect();
    assert_eq!(
        types,
        [
            ChangeType::Insert,
            ChangeType::UpdatePreimage,
            ChangeType::UpdatePostimage,
            ChangeType::Delete
        ]
    );
    assert_eq!(
        changes(vec![0, 7]).unwrap_err(),
        "upstream 't': row 1 has _change_type code 7 (0-3 are known)"
    );
}
