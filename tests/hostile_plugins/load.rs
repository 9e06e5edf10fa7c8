//! Loading failures (a missing file, not a component, a refused `init`, wrong keys or
//! upstreams) as typed values.

use super::*;

/// Loading failures are values too: a missing file, a file that is not a component and
/// a configuration `init` refuses each have their variant (and the text a user reads).
#[tokio::test]
async fn load_failures_are_typed() {
    let host = PluginHost::new(Some(common::cache_dir())).unwrap();
    let missing = host.compile(Path::new("/nonexistent/x.wasm"));
    assert!(
        matches!(&missing, Err(PluginError::Read(e)) if e.kind() == std::io::ErrorKind::NotFound),
        "{:?}",
        missing.err()
    );

    let ws = Workspace::new();
    let not_wasm = ws.path().join("not.wasm");
    std::fs::write(&not_wasm, b"this is not wasm").unwrap();
    let bad = host.compile(&not_wasm);
    let Err(e @ PluginError::NotAComponent(_)) = bad else {
        panic!("expected NotAComponent, got {:?}", bad.err());
    };
    assert!(
        e.to_string()
            .starts_with("not a valid WebAssembly component (build it for wasm32-wasip2"),
        "{e}"
    );

    // A contract 0.3 plugin's init sees the pipeline: a config, key or upstream it
    // cannot work with is refused there (and so at `validate`).
    let path = plugin("sp_affiliation");
    let compiled = host.compile(&path).unwrap();
    assert_eq!(compiled.contract, Contract::V0_3);
    assert_eq!(compiled.contract.to_string(), "dlink:pipeline@0.3.0");
    let spec = |config: &str| dlink_rt::config::PluginSpec {
        path: path.clone(),
        config_json: config.into(),
        limits: Default::default(),
        read_dirs: Vec::new(),
        storage: Default::default(),
    };
    let good = sp_info(KeyType::Long, 2);
    let refusal = |r: Result<dlink_rt::plugin::Plugin, PluginError>| match r {
        Err(PluginError::Rejected {
            call: Call::Init,
            message,
        }) => message,
        Err(other) => panic!("expected init's rejection, got {other:?}"),
        Ok(_) => panic!("init accepted it"),
    };
    let m = refusal(
        host.instantiate(&compiled, &good, &spec(r#"{"spmaster": 5}"#))
            .await,
    );
    assert!(m.contains("unknown field `spmaster`"), "{m}");
    let m = refusal(
        host.instantiate(&compiled, &sp_info(KeyType::String, 2), &spec("{}"))
            .await,
    );
    assert_eq!(
        m,
        "pipeline 'typed' declares the key (diasng_id utf8) in [link] keys, but this plugin \
         produces (diasng_id int64)"
    );
    let m = refusal(
        host.instantiate(&compiled, &sp_info(KeyType::Long, 1), &spec("{}"))
            .await,
    );
    assert_eq!(
        m,
        "this plugin reads 2 upstream(s), in this order: staff, affiliations; pipeline 'typed' \
         lists 1: spmaster"
    );
    let ok = host
        .instantiate(&compiled, &good, &spec("{}"))
        .await
        .unwrap();
    assert_eq!(ok.contract, Contract::V0_3);

    // A 0.2 plugin (Arrow IPC) is told the pipeline too, and may refuse it.
    let v02 = host.compile(&plugin("sp_affiliation_v0_2")).unwrap();
    assert_eq!(v02.contract, Contract::V0_2);
    assert_eq!(v02.contract.to_string(), "dlink:pipeline@0.2.0");
    host.check(&v02).unwrap();
    let m = refusal(host.instantiate(&v02, &good, &spec(r#"{"x": 1}"#)).await);
    assert_eq!(m, r#"sp_affiliation_v0_2 takes no config, got {"x": 1}"#);
    let m = refusal(
        host.instantiate(&v02, &sp_info(KeyType::Long, 1), &spec("{}"))
            .await,
    );
    assert_eq!(
        m,
        "sp_affiliation_v0_2 reads 2 upstreams, pipeline 'typed' lists 1"
    );

    // A 0.1 plugin gets the config alone, and is told so.
    let old = host.compile(&plugin("sp_affiliation_v0_1")).unwrap();
    assert_eq!(old.contract, Contract::V0_1);
    assert_eq!(old.contract.to_string(), "dlink:pipeline@0.1.0");
    host.check(&old).unwrap();
    let m = refusal(host.instantiate(&old, &good, &spec(r#"{"x": 1}"#)).await);
    assert_eq!(m, r#"sp_affiliation_v0_1 takes no config, got {"x": 1}"#);
}

/// The `typed` pipeline over `spmaster` (and `affiliation`) as init sees it.
fn sp_info(key: KeyType, upstreams: usize) -> PipelineInfo {
    use deltalake::arrow::datatypes::{DataType, Field, Schema};
    let change = |id: &str| {
        Arc::new(Schema::new(vec![
            Field::new(id, DataType::Int64, true),
            Field::new("_change_type", DataType::Utf8, false),
            Field::new("_commit_version", DataType::Int64, false),
            Field::new("_commit_timestamp", dlink_rt::cdf::timestamp_type(), true),
        ]))
    };
    PipelineInfo {
        name: "typed".into(),
        upstreams: [("spmaster", "diasng_id"), ("affiliation", "sp_id")]
            .into_iter()
            .take(upstreams)
            .map(|(t, id)| (t.to_string(), change(id)))
            .collect(),
        lookups: Vec::new(),
        keys: vec![KeyColumn {
            name: "diasng_id".into(),
            ty: key,
        }],
    }
}

/// A contract 0.3 plugin is sent only the columns its `init` read (and the change
/// columns), in the table's order; a 0.2 plugin gets every column as IPC. Over a wide
/// `spmaster` (a name, a country, a blob of text), `sp_affiliation` checks only
/// `diasng_id`: the text columns never cross the boundary.
#[tokio::test]
async fn a_contract_0_3_plugin_is_sent_only_the_columns_it_reads() {
    use deltalake::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    use deltalake::arrow::datatypes::{DataType, Field, Schema};
    use dlink_rt::plugin::Changes;
    let host = PluginHost::new(Some(common::cache_dir())).unwrap();
    let wide = Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, true),
        Field::new("diasng_id", DataType::Int64, true),
        Field::new("country", DataType::Utf8, true),
        Field::new("_change_type", DataType::Utf8, false),
        Field::new("_commit_version", DataType::Int64, false),
        Field::new("_commit_timestamp", dlink_rt::cdf::timestamp_type(), true),
    ]));
    let mut info = sp_info(KeyType::Long, 2);
    info.upstreams[0].1 = wide.clone();
    let rows = RecordBatch::try_new(
        wide.clone(),
        vec![
            Arc::new(StringArray::from(vec!["a", "b"])) as ArrayRef,
            Arc::new(Int64Array::from(vec![Some(1), None])),
            Arc::new(StringArray::from(vec!["DE".repeat(1000), "FR".into()])),
            Arc::new(StringArray::from(vec!["insert", "delete"])),
            Arc::new(Int64Array::from(vec![1, 2])),
            Arc::new(
                deltalake::arrow::array::TimestampMicrosecondArray::from(vec![Some(5), None])
                    .with_timezone("UTC"),
            ),
        ],
    )
    .unwrap();
    let spec = |path: PathBuf| dlink_rt::config::PluginSpec {
        path,
        config_json: "{}".into(),
        limits: Default::default(),
        read_dirs: Vec::new(),
        storage: Default::default(),
    };

    let path = plugin("sp_affiliation");
    let compiled = host.compile(&path).unwrap();
    let p = host
        .instantiate(&compiled, &info, &spec(path))
        .await
        .unwrap();
    let Changes::Columns(sent) = p
        .encode("spmaster", &wide, std::slice::from_ref(&rows))
        .unwrap()
    else {
        panic!("a 0.3 plugin is sent columns");
    };
    assert_eq!(
        sent.names(),
        [
            "diasng_id",
            "_change_type",
            "_commit_version",
            "_commit_timestamp"
        ]
    );
    assert_eq!(sent.num_rows(), 2);
    // Zero rows: the same columns, empty.
    let Changes::Columns(none) = p.encode("spmaster", &wide, &[]).unwrap() else {
        panic!("a 0.3 plugin is sent columns");
    };
    assert_eq!(none.names(), sent.names());
    assert_eq!(none.num_rows(), 0);

    let path = plugin("sp_affiliation_v0_2");
    let compiled = host.compile(&path).unwrap();
    let p = host
        .instantiate(&compiled, &info, &spec(path))
        .await
        .unwrap();
    let Changes::Ipc(bytes) = p.encode("spmaster", &wide, &[rows]).unwrap() else {
        panic!("a 0.2 plugin is sent IPC");
    };
    let (schema, _) = dlink_rt::ipc::decode(&bytes).unwrap();
    assert_eq!(schema.fields().len(), 6);
}
