//! Property tests of the config loader: whatever a pipeline file or catalog holds
//! (damaged TOML, wrong types, odd values), loading gives a pipeline or a typed
//! configuration error, never a panic.

use std::path::Path;

use proptest::prelude::*;

use crate::config::ConfigError;
use crate::config::Pipeline;

const CATALOG: &str = "[upstreams.spmaster]\nuri = \"data/spmaster\"\nkeys = [\"diasng_id\"]\n\n[upstreams.affiliation]\nuri = \"data/affiliation\"\nstart_version = 3\n";

const PIPELINE: &str = "name = \"sp_affiliation\"\nupstreams = [\"spmaster\", \"affiliation\"]\nbatch_size = 5\nmax_batch_rows = 1000\n\n[plugin]\npath = \"p.wasm\"\n[plugin.config]\nthreshold = 3\n[plugin.limits]\ntimeout_ms = 100\n\n[link]\nuri = \"links/sp\"\nkeys = [{ name = \"diasng_id\", type = \"long\" }]\n";

/// Values worth trying in place of a value of the files.
const ODD: [&str; 12] = [
    "\"\"",
    "-1",
    "0",
    "9223372036854775807",
    "-9223372036854775808",
    "1e400",
    "true",
    "[]",
    "{}",
    "\"${DLINK_NO_SUCH_VAR}\"",
    "\"../../..\"",
    "\"\\u0000\"",
];

/// `text` edited: characters replaced or removed at some places, a value swapped for
/// an odd one.
fn edited(text: &str, edits: &[(usize, Option<char>)], odd: Option<(usize, usize)>) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for (at, c) in edits {
        if chars.is_empty() {
            break;
        }
        let i = at % chars.len();
        match c {
            Some(c) => chars[i] = *c,
            None => {
                chars.remove(i);
            }
        }
    }
    let mut s: String = chars.into_iter().collect();
    if let Some((which, value)) = odd {
        let lines: Vec<&str> = s.lines().collect();
        let with_values: Vec<usize> = (0..lines.len())
            .filter(|i| lines[*i].contains(" = "))
            .collect();
        if !with_values.is_empty() {
            let l = with_values[which % with_values.len()];
            let key = lines[l].split(" = ").next().unwrap_or("x");
            let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
            out[l] = format!("{key} = {}", ODD[value % ODD.len()]);
            s = out.join("\n");
        }
    }
    s
}

fn load(dir: &Path, catalog: &str, pipeline: &str) -> Result<Pipeline, ConfigError> {
    std::fs::write(dir.join("upstreams.toml"), catalog).expect("write the catalog");
    std::fs::write(dir.join("p.wasm"), "").expect("write the plugin");
    let file = dir.join("sp.toml");
    std::fs::write(&file, pipeline).expect("write the pipeline");
    Pipeline::load(&file)
}

fn edit() -> impl Strategy<Value = (usize, Option<char>)> {
    (
        any::<usize>(),
        proptest::option::of(prop_oneof![
            Just('"'),
            Just('['),
            Just(']'),
            Just('{'),
            Just('='),
            Just('\n'),
            Just('#'),
            Just('$'),
            Just('\\'),
            Just('.'),
            any::<char>(),
        ]),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn damaged_files_load_or_give_a_config_error(
        pipeline_edits in proptest::collection::vec(edit(), 0..4),
        catalog_edits in proptest::collection::vec(edit(), 0..2),
        odd in proptest::option::of((any::<usize>(), any::<usize>())),
        odd_in_catalog in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().expect("a temp dir");
        let (p_odd, c_odd) = if odd_in_catalog { (None, odd) } else { (odd, None) };
        let catalog = edited(CATALOG, &catalog_edits, c_odd);
        let pipeline = edited(PIPELINE, &pipeline_edits, p_odd);
        // Loading returns a `ConfigError` or a pipeline (the type says so); the
        // property is that it returns at all, with problems that name the file.
        if let Err(e) = load(dir.path(), &catalog, &pipeline) {
            prop_assert!(!e.problems.is_empty(), "a config error without a problem");
        }
    }

    #[test]
    fn arbitrary_text_is_a_config_error(text in "\\PC{0,300}") {
        let dir = tempfile::tempdir().expect("a temp dir");
        if let Err(e) = load(dir.path(), CATALOG, &text) {
            prop_assert!(!e.problems.is_empty(), "a config error without a problem");
        }
    }
}
