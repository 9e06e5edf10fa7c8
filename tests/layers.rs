//! The host crate's layers: each top-level module of `runtime/src` may import only the
//! modules of lower layers (a folder's own children aside). Read from the source, as a
//! newcomer would: every `crate::<module>` path outside comments and test modules.
//! A new module must be given its layer here; an import against the arrows fails with
//! the file that has it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Lowest first. Modules of one layer do not import each other.
const LAYERS: &[&[&str]] = &[
    &["storage", "ipc"],
    &["config"],
    &["cdf"],
    &["lookup"],
    &["affected"],
    &["plugin"],
    &["sql_pipeline"],
    &["sink"],
    &["engine"],
    &["consumer", "demo", "fixtures", "shard"],
    &["compact", "why"],
    &["status"],
    &["graph"],
    &["service"],
    &["cli"],
];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The text of a Rust file without comments and without a trailing `#[cfg(test)]`
/// module (tests may reach anywhere).
fn code_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("/*") {
            rest = r.find("*/").map_or("", |i| &r[i + 2..]);
        } else if let Some(r) = rest.strip_prefix("//") {
            rest = r.find('\n').map_or("", |i| &r[i..]);
        } else if rest.starts_with('"') {
            // A string literal (paths in messages are not imports).
            let end = rest[1..]
                .char_indices()
                .scan(false, |esc, (i, c)| {
                    let stop = c == '"' && !*esc;
                    *esc = c == '\\' && !*esc;
                    Some((i, stop))
                })
                .find(|(_, stop)| *stop)
                .map_or(rest.len(), |(i, _)| i + 2);
            out.push_str("\"\"");
            rest = &rest[end..];
        } else {
            let c = rest.chars().next().unwrap_or(' ');
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    match out.find("#[cfg(test)]\nmod ") {
        Some(i) => out[..i].to_string(),
        None => out,
    }
}

/// The top-level modules `code` names: `crate::m` and `use crate::{m, ...}`.
fn imports(code: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let after = &code[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let group = &group[..group.find(';').unwrap_or(group.len())];
            // Each top-level item of the group: what follows `{` or a `,` at depth 0.
            let mut depth = 0;
            let mut start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && !c.is_whitespace() => {
                        start = false;
                        found.push(ident(&group[j..]));
                    }
                    _ => {}
                }
            }
        } else {
            found.push(ident(after));
        }
    }
    found.retain(|m| m.chars().next().is_some_and(|c| c.is_ascii_lowercase()));
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("list the source folder") {
        let p = e.expect("a folder entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn the_host_modules_import_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut against = BTreeMap::new();
    let mut unplaced = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).expect("under src");
        let first = rel.components().next().expect("a path").as_os_str();
        let module = first.to_string_lossy().trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(from) = rank(&module) else {
            unplaced.push(module);
            continue;
        };
        let text = std::fs::read_to_string(f).expect("read a source file");
        for m in imports(&code_of(&text)) {
            if m == module {
                continue;
            }
            match rank(&m) {
                Some(to) if to < from => {}
                _ => {
                    against
                        .entry(format!("{module} -> {m}"))
                        .or_insert_with(|| rel.display().to_string());
                }
            }
        }
    }
    unplaced.sort();
    unplaced.dedup();
    assert!(
        unplaced.is_empty(),
        "modules without a layer in tests/layers.rs: {unplaced:?}"
    );
    assert!(
        against.is_empty(),
        "imports against the layers (lowest first: {LAYERS:?}):\n{}",
        against
            .iter()
            .map(|(edge, file)| format!("  {edge} ({file})"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The reader above finds what it must: a group import, a path in code, and neither a
/// comment, a string nor a test module.
#[test]
fn the_import_reader_sees_paths_not_comments_or_strings() {
    let text = "use crate::{cdf::{self, X}, config};\n// crate::engine\n\
                fn f() { crate::sink::g(); let s = \"crate::why\"; }\n\
                #[cfg(test)]\nmod tests { use crate::service; }\n";
    let mut got = imports(&code_of(text));
    got.sort();
    assert_eq!(got, vec!["cdf", "config", "sink"]);
}
