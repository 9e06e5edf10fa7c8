use super::*;

const CATALOG: &str = r#"
[upstreams.spmaster]
uri = "data/spmaster"
keys = ["diasng_id"]

[upstreams.affiliation]
uri = "/abs/affiliation"
start_version = 3
"#;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn pipeline_text(upstreams: &str, extra: &str) -> String {
    format!(
        r#"
name = "sp_affiliation"
upstreams = [{upstreams}]
batch_size = 5
{extra}
[plugin]
path = "p.wasm"
[plugin.config]
threshold = 3

[link]
uri = "links/sp"
keys = [{{ name = "diasng_id", type = "long" }}]
"#
    )
}

fn problems(err: ConfigError) -> Vec<String> {
    err.problems
}

#[test]
fn example_pipeline_resolves_paths_against_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "upstreams.toml", CATALOG);
    write(dir.path(), "p.wasm", "");
    let p = write(
        dir.path(),
        "sp.toml",
        &pipeline_text("\"spmaster\", \"affiliation\"", ""),
    );
    let pipe = Pipeline::load(&p).unwrap();
    assert_eq!(pipe.name, "sp_affiliation");
    assert_eq!(pipe.batch_size, 5);
    assert_eq!(
        pipe.upstreams[0].uri,
        dir.path().join("data/spmaster").display().to_string()
    );
    assert_eq!(pipe.upstreams[1].uri, "/abs/affiliation");
    assert_eq!(pipe.upstreams[1].start_version, 3);
    assert_eq!(
        pipe.link_uri,
        dir.path().join("links/sp").display().to_string()
    );
    assert_eq!(pipe.plugin().unwrap().config_json, r#"{"threshold":3}"#);
    assert_eq!(
        pipe.keys,
        vec![KeyColumn {
            name: "diasng_id".into(),
            ty: KeyType::Long
        }]
    );
    assert_eq!(pipe.plugin().unwrap().limits, Limits::default());
}

#[test]
fn unknown_upstream_names_file_line_and_choices() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "upstreams.toml", CATALOG);
    write(dir.path(), "p.wasm", "");
    let p = write(
        dir.path(),
        "sp.toml",
        &pipeline_text("\"spmaster\", \"nope\"", ""),
    );
    let probs = problems(Pipeline::load(&p).unwrap_err());
    assert_eq!(probs.len(), 1, "{probs:?}");
    let want = format!("{}:3: upstream 'nope' is not in the catalog", p.display());
    assert!(probs[0].starts_with(&want), "{}", probs[0]);
    assert!(probs[0].contains("affiliation, spmaster"), "{}", probs[0]);
}

#[test]
fn all_problems_are_reported_not_only_the_first() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "upstreams.toml", CATALOG);
    // no p.wasm: missing plugin; bad upstream; batch_size 0
    let text = pipeline_text("\"nope\"", "").replace("batch_size = 5", "batch_size = 0");
    let p = write(dir.path(), "sp.toml", &text);
    let probs = problems(Pipeline::load(&p).unwrap_err());
    assert_eq!(probs.len(), 3, "{probs:?}");
    assert!(probs.iter().any(|m| m.contains(":3: upstream 'nope'")));
    assert!(probs
        .iter()
        .any(|m| m.contains(":4: batch_size must be 1 or more")));
    assert!(probs
        .iter()
        .any(|m| m.contains(":7: plugin file") && m.contains("does not exist")));
}

#[test]
fn unknown_key_is_rejected_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "upstreams.toml", CATALOG);
    write(dir.path(), "p.wasm", "");
    let p = write(
        dir.path(),
        "sp.toml",
        &pipeline_text("\"spmaster\"", "batch_sise = 3"),
    );
    let probs = problems(Pipeline::load(&p).unwrap_err());
    assert!(
        probs[0].starts_with(&format!("{}:5:", p.display())),
        "{}",
        probs[0]
    );
    assert!(
        probs[0].contains("unknown key `batch_sise` (did you mean `batch_size`?)"),
        "{}",
        probs[0]
    );
}

#[test]
fn bad_type_is_rejected_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "upstreams.toml", CATALOG);
    write(dir.path(), "p.wasm", "");
    let text = pipeline_text("\"spmaster\"", "").replace("type = \"long\"", "type = \"float\"");
    let p = write(dir.path(), "sp.toml", &text);
    let probs = problems(Pipeline::load(&p).unwrap_err());
    assert!(
        probs[0].starts_with(&format!("{}:13:", p.display())),
        "{}",
        probs[0]
    );
    assert!(probs[0].contains("float"), "{}", probs[0]);
}

#[test]
fn missing_catalog_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "sp.toml", &pipeline_text("\"spmaster\"", ""));
    let probs = problems(Pipeline::load(&p).unwrap_err());
    assert!(
        probs[0].contains("upstreams.toml: cannot read the file"),
        "{}",
        probs[0]
    );
}

#[test]
fn environment_defaults_apply_in_uris() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "upstreams.toml",
        "[upstreams.spmaster]\nuri = \"${DLINK_TEST_SURELY_UNSET_VAR:-fallback}/spmaster\"\n",
    );
    let cat = Catalog::load(&dir.path().join("upstreams.toml")).unwrap();
    assert_eq!(
        cat.upstreams["spmaster"].uri,
        dir.path().join("fallback/spmaster").display().to_string()
    );
}

/// The pipeline text with `lines` appended to its `[link]` section (its last).
fn with_link_lines(lines: &str) -> String {
    pipeline_text("\"spmaster\"", "") + lines
}

#[test]
fn retention_settings_parse_and_bad_ones_name_their_line() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "upstreams.toml", CATALOG);
    write(dir.path(), "p.wasm", "");
    let load = |lines: &str| {
        let p = write(dir.path(), "sp.toml", &with_link_lines(lines));
        Pipeline::load(&p)
    };
    let p = load("retain = \"30d\"\ncompact_every = \"1h\"\nmerge_small_files = 0\n").unwrap();
    assert_eq!(
        p.retain,
        Some(Retain::Age(std::time::Duration::from_secs(30 * 86_400)))
    );
    assert_eq!(p.compact_every, Some(std::time::Duration::from_secs(3600)));
    assert_eq!(p.merge_small_files, 0);
    let p = load("retain = 500\n").unwrap();
    assert_eq!(p.retain, Some(Retain::Batches(500)));
    assert_eq!(p.compact_every, None);
    assert_eq!(p.merge_small_files, DEFAULT_MERGE_SMALL_FILES);

    let ps = problems(load("retain = \"a month\"\ncompact_every = \"0s\"\n").unwrap_err());
    assert_eq!(ps.len(), 2, "{ps:?}");
    assert!(
        ps[0].contains("sp.toml:14") && ps[0].contains("retain = \"a month\""),
        "{ps:?}"
    );
    assert!(
        ps[1].contains("sp.toml:15") && ps[1].contains("compact_every"),
        "{ps:?}"
    );
    let ps = problems(load("retain = 0\n").unwrap_err());
    assert!(ps[0].contains("keep at least 1 batch"), "{ps:?}");
}

/// `${VAR}` is replaced in parsed string values: an unset one is reported with its
/// file and line, and a value is data (a quote in it neither ends the string nor
/// needs escaping).
#[test]
fn environment_variables_are_substituted_in_values_with_their_lines() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "upstreams.toml",
        "# ${NOT_A_VALUE}\n[upstreams.spmaster]\nuri = \"${DLINK_TEST_SURELY_UNSET_VAR}/x\"\n",
    );
    let e = Catalog::load(&dir.path().join("upstreams.toml")).unwrap_err();
    let problems = e.problems;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].ends_with(
            "upstreams.toml:3: environment variable DLINK_TEST_SURELY_UNSET_VAR is not set: \
             set it, or give a default with `${DLINK_TEST_SURELY_UNSET_VAR:-value}`"
        ),
        "{}",
        problems[0]
    );
    write(
        dir.path(),
        "upstreams.toml",
        "[upstreams.spmaster]\nuri = 'https://h/${DLINK_TEST_SURELY_UNSET_VAR:-a\"b}'\n",
    );
    let cat = Catalog::load(&dir.path().join("upstreams.toml")).unwrap();
    assert_eq!(cat.upstreams["spmaster"].uri, "https://h/a\"b");
}

/// deltalake decodes a local table path's `%XX` (twice): such a path is refused with
/// its file and line instead of reading another folder.
#[test]
fn a_local_path_with_a_percent_escape_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "upstreams.toml",
        "[upstreams.spmaster]\nuri = \"data/t_p%41\"\n\n[upstreams.affiliation]\nuri = \"data/100%\"\n",
    );
    write(dir.path(), "p.wasm", "");
    let p = write(
        dir.path(),
        "sp.toml",
        &pipeline_text("\"spmaster\", \"affiliation\"", ""),
    );
    let found = problems(Pipeline::load(&p).unwrap_err());
    assert!(
        found.iter().any(|m| m.contains("upstreams.toml:2")
            && m.contains("upstream 'spmaster'")
            && m.contains("holds `%41`")),
        "{found:?}"
    );
    assert!(
        !found.iter().any(|m| m.contains("affiliation")),
        "a % that is no escape is a path like any other: {found:?}"
    );
    // The link table's path too.
    write(dir.path(), "upstreams.toml", CATALOG);
    let p = write(
        dir.path(),
        "sp.toml",
        &pipeline_text("\"spmaster\", \"affiliation\"", "").replace("links/sp", "links/a%2Fb"),
    );
    let found = problems(Pipeline::load(&p).unwrap_err());
    assert!(
        found
            .iter()
            .any(|m| m.contains("[link] uri") && m.contains("`%2F`")),
        "{found:?}"
    );
}

#[test]
fn spark_and_sql_type_names_are_key_types_too() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "upstreams.toml", CATALOG);
    write(dir.path(), "p.wasm", "");
    for (given, want) in [
        ("bigint", KeyType::Long),
        ("integer", KeyType::Int),
        ("varchar", KeyType::String),
        ("text", KeyType::String),
    ] {
        let text = pipeline_text("\"spmaster\"", "")
            .replace("type = \"long\"", &format!("type = \"{given}\""));
        let p = write(dir.path(), "sp.toml", &text);
        let pipe = Pipeline::load(&p).unwrap_or_else(|e| panic!("{given}: {e}"));
        assert_eq!(pipe.keys[0].ty, want, "{given}");
    }
}

#[test]
fn a_mistyped_file_or_upstream_gets_a_did_you_mean() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "upstreams.toml", CATALOG);
    write(dir.path(), "p.wasm", "");
    write(
        dir.path(),
        "emp_dept.toml",
        &pipeline_text("\"spmaster\"", ""),
    );
    let err = Pipeline::load(&dir.path().join("emp_dpt.toml")).unwrap_err();
    let text = problems(err).join("\n");
    assert!(text.contains("did you mean"), "{text}");
    assert!(text.contains("emp_dept.toml?"), "{text}");
    let p = write(dir.path(), "sp.toml", &pipeline_text("\"spmastr\"", ""));
    let text = problems(Pipeline::load(&p).unwrap_err()).join("\n");
    assert!(text.contains("(did you mean 'spmaster'?)"), "{text}");
    // Nothing close: no guess.
    let p = write(dir.path(), "sp.toml", &pipeline_text("\"zzz\"", ""));
    let text = problems(Pipeline::load(&p).unwrap_err()).join("\n");
    assert!(!text.contains("did you mean"), "{text}");
}

/// Unknown keys (top level and in a table, in line order) and an unknown upstream are
/// all reported in one pass, each with a did-you-mean; so is an unknown key of the
/// catalog (in a map's entry).
#[test]
fn every_problem_of_a_file_is_reported_in_one_pass() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "upstreams.toml",
        &format!("{CATALOG}\n[upstreams.other]\nuri = \"x\"\nstart_versoin = 2\n"),
    );
    write(dir.path(), "p.wasm", "");
    let text = pipeline_text("\"spmastr\"", "batchsize = 3\n")
        .replace("[link]\n", "[link]\nmod = \"log\"\n");
    let p = write(dir.path(), "sp.toml", &text);
    let err = Pipeline::load(&p).unwrap_err();
    let text = problems(err).join("\n");
    // The catalog is read first: its problem alone stops the load.
    assert!(
        text.contains(
            "unknown key `start_versoin` in [upstreams.other] (did you mean `start_version`?)"
        ),
        "{text}"
    );
    write(dir.path(), "upstreams.toml", CATALOG);
    let all = problems(Pipeline::load(&p).unwrap_err());
    assert_eq!(all.len(), 3, "{all:#?}");
    assert!(
        all.iter()
            .any(|m| m.contains("unknown key `batchsize` (did you mean `batch_size`?)")),
        "{all:#?}"
    );
    assert!(
        all.iter()
            .any(|m| m.contains("unknown key `mod` in [link] (did you mean `mode`?)")),
        "{all:#?}"
    );
    assert!(
        all.iter().any(|m| m.contains("(did you mean 'spmaster'?)")),
        "{all:#?}"
    );
    // Free-form tables keep any key.
    let free = pipeline_text("\"spmaster\"", "").replace("threshold = 3", "anything_at_all = 3");
    let p = write(dir.path(), "sp.toml", &free);
    Pipeline::load(&p).unwrap();
}
