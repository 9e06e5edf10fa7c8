//! `${VAR}` and `${VAR:-default}` substitution in configuration values.
//!
//! Substitution runs on the parsed document's string values, before they are read into
//! the configuration types: a value is never TOML text, so it needs no escaping and
//! cannot change the document's structure, and a TOML syntax error never shows a
//! substituted secret. Keys and comments are left alone; `$$` stands for a literal `$`.
//! Each problem is reported with the byte offset of its value, for its line number.

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Substitutes environment variables in every string value of `document` (in tables,
/// arrays and inline tables). `lookup` answers a variable's value. Returns every
/// problem as `(offset of the value in the text, message)`.
pub fn substitute_values(
    document: &mut DeTable<'_>,
    lookup: &impl Fn(&str) -> Option<String>,
) -> Vec<(usize, String)> {
    let mut problems = Vec::new();
    for (_, value) in document.iter_mut() {
        substitute_value(value, lookup, &mut problems);
    }
    problems
}

fn substitute_value(
    value: &mut Spanned<DeValue<'_>>,
    lookup: &impl Fn(&str) -> Option<String>,
    problems: &mut Vec<(usize, String)>,
) {
    let offset = value.span().start;
    match value.get_mut() {
        DeValue::String(s) if s.contains('$') => match substitute(s, lookup) {
            Ok(v) => *s = v.into(),
            Err(msg) => problems.push((offset, msg)),
        },
        DeValue::Array(items) => {
            for item in items.iter_mut() {
                substitute_value(item, lookup, problems);
            }
        }
        DeValue::Table(table) => {
            for (_, v) in table.iter_mut() {
                substitute_value(v, lookup, problems);
            }
        }
        _ => {}
    }
}

/// The `${VAR:-default}` defaults this process took because VAR was not set (or
/// empty), each once: named when a command fails, since a path that is not there is
/// often one that came from a default.
static DEFAULTS_TAKEN: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

fn note_default(name: &str, default: &str) {
    if let Ok(mut taken) = DEFAULTS_TAKEN.lock() {
        let entry = (name.to_string(), default.to_string());
        if !taken.contains(&entry) {
            taken.push(entry);
        }
    }
}

/// The defaults taken so far, as notes: "DLINK_DATA is not set: `${DLINK_DATA:-../demo-data}`
/// took its default, ../demo-data".
pub fn defaults_taken() -> Vec<String> {
    DEFAULTS_TAKEN
        .lock()
        .map(|t| {
            t.iter()
                .map(|(n, d)| {
                    format!("{n} is not set: `${{{n}:-{d}}}` took its default, {d} (set {n} to use another)")
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Substitutes the variables of one value.
pub fn substitute(value: &str, lookup: &impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
            continue;
        }
        let Some(body_and_rest) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let Some(end) = body_and_rest.find('}') else {
            return Err(
                "unclosed `${`: write `${VAR}` or `${VAR:-default}` (or `$$` for a literal `$`)"
                    .into(),
            );
        };
        let body = &body_and_rest[..end];
        let (name, default) = match body.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (body, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "`${{{body}}}` is not a variable reference: names are letters, digits and `_`"
            ));
        }
        let value = match (lookup(name), default) {
            (Some(v), _) if !v.is_empty() => v,
            (_, Some(d)) => {
                note_default(name, d);
                d.to_string()
            }
            (Some(v), None) => v,
            (None, None) => {
                return Err(format!(
                    "environment variable {name} is not set: set it, or give a default with `${{{name}:-value}}`"
                ))
            }
        };
        out.push_str(&value);
        rest = &body_and_rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "DATA" => Some("/data".into()),
            "EMPTY" => Some(String::new()),
            "QUOTE" => Some("a\"b\\c\nd = 1".into()),
            _ => None,
        }
    }

    /// The document's string values after substitution, as `key = value` lines (or
    /// the problems, each with its line).
    fn run(text: &str) -> Result<Vec<String>, Vec<(usize, String)>> {
        let mut doc = DeTable::parse(text).unwrap();
        let problems = substitute_values(doc.get_mut(), &env);
        if !problems.is_empty() {
            let line = |o: usize| text[..o].matches('\n').count() + 1;
            return Err(problems.into_iter().map(|(o, m)| (line(o), m)).collect());
        }
        let mut out = Vec::new();
        fn flat(prefix: &str, v: &DeValue<'_>, out: &mut Vec<String>) {
            match v {
                DeValue::String(s) => out.push(format!("{prefix} = {s}")),
                DeValue::Array(a) => a.iter().for_each(|i| flat(prefix, i.get_ref(), out)),
                DeValue::Table(t) => t.iter().for_each(|(k, v)| {
                    flat(&format!("{prefix}.{}", k.get_ref()), v.get_ref(), out)
                }),
                _ => out.push(format!("{prefix} = (not a string)")),
            }
        }
        for (k, v) in doc.get_ref().iter() {
            flat(k.get_ref(), v.get_ref(), &mut out);
        }
        Ok(out)
    }

    #[test]
    fn set_variable_is_replaced_in_tables_arrays_and_inline_tables() {
        assert_eq!(
            run("[t]\nuri = \"${DATA}/t\"\nlist = [\"${DATA}\", { p = '${DATA}/x' }]\n").unwrap(),
            // (keys in lexicographic order)
            ["t.list = /data", "t.list.p = /data/x", "t.uri = /data/t"]
        );
    }

    #[test]
    fn default_used_when_unset_or_empty() {
        assert_eq!(run("a = \"${NOPE:-x/y}\"").unwrap(), ["a = x/y"]);
        assert_eq!(run("a = \"${EMPTY:-d}\"").unwrap(), ["a = d"]);
        assert_eq!(run("a = \"${DATA:-d}\"").unwrap(), ["a = /data"]);
    }

    #[test]
    fn unset_without_default_names_the_line() {
        let err = run("a = 1\nb = \"${NOPE}\"\n").unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].0, 2);
        assert!(err[0].1.contains("NOPE is not set"), "{}", err[0].1);
    }

    /// A value is taken as it is: quotes, backslashes and newlines in it cannot end the
    /// string or add a key.
    #[test]
    fn values_are_data_not_toml_and_dollar_dollar_is_literal() {
        assert_eq!(run("a = \"${QUOTE}\"").unwrap(), ["a = a\"b\\c\nd = 1"]);
        assert_eq!(run("a = \"$$5 $x\"").unwrap(), ["a = $5 $x"]);
    }

    #[test]
    fn comments_keys_and_other_values_are_left_alone() {
        assert_eq!(
            run("# ${NOPE}\n\"${NOPE}\" = 1\n").unwrap(),
            ["${NOPE} = (not a string)"]
        );
    }
}
